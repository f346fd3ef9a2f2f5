"""The statistical core of the monitor: losses, the degradation and bias tests, multiplicity control, the
challenger check and the expected gain of a re-training.

Everything here is a pure, vectorised function over arrays that hold the whole fleet, one row per stream,
padded with NaN where a stream has fewer values. No I/O, no state: the agent keeps reference buffers,
warm-up, cool-down and budgets and calls these functions once per tick. See ``docs/statistics.md``.
"""

from mlma.monitor.bias import bias_shift_test
from mlma.monitor.challenger import ChallengerResult, paired_noninferiority_test
from mlma.monitor.degradation import DegradationResult, TestResult, TestStatus, degradation_test
from mlma.monitor.gain import GainModel, decision_features, realised_gain
from mlma.monitor.losses import (absolute_loss, forecast_level, pinball_loss, relative_loss, scaled_loss,
                                 seasonal_naive_scale, squared_loss)
from mlma.monitor.multiplicity import FDRResult, fdr_control

__all__ = [
    "ChallengerResult",
    "DegradationResult",
    "FDRResult",
    "GainModel",
    "TestResult",
    "TestStatus",
    "absolute_loss",
    "bias_shift_test",
    "decision_features",
    "degradation_test",
    "fdr_control",
    "forecast_level",
    "paired_noninferiority_test",
    "pinball_loss",
    "realised_gain",
    "relative_loss",
    "scaled_loss",
    "seasonal_naive_scale",
    "squared_loss",
]
