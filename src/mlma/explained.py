"""The level change a model itself attributes to the events it was told about, to discount in the monitor's loss.

On count data the absolute error of even a perfect forecast grows with the volume: a campaign the model knows
about, lifting demand by 30 %, raises a perfect forecast's mean absolute error by about as much, beyond the
degradation test's 5 % margin (docs/results-drivers.md). The relative loss removes that by dividing every
error by the forecast's level, but it also discounts the level shifts a model tracks by itself, and was worse
on data without drivers. :class:`ExplainedScale` discounts only what the declared *event drivers*
(:attr:`mlma.models.Drivers.events`: campaigns, promotions, closures; 0 when none runs) explain: for a stream
whose event drivers are not all 0 in the tick being forecast, the serving model forecasts the tick a second
time with them at 0 (the counterfactual, :meth:`mlma.training.ModelService.predict_at_baseline`), and each
step's *explained ratio* is ``served / counterfactual``. The MLMA policy divides the tick's absolute (and
signed) errors by ``ratio ** power`` (its ``absolute`` and ``squared`` losses; the relative loss already
divides by the forecast's level). Where no event runs the scale is exactly 1 and nothing changes, bit for bit.

The method is model-agnostic: it asks the model, not its coefficients, how much of its forecast the events
explain. A change the model did not forecast is not discounted: its counterfactual equals the served forecast
(ratio 1), and the error grows as before.
"""

from __future__ import annotations

import numbers

import numpy as np

#: The default exponent: errors are divided by the explained ratio itself (not its square root). Chosen by
#: measurement on seeds 7-9 of bench_campaign_retrains.py (docs/results-drivers.md, "Discounting the level
#: the events explain"): the simulator's counts are over-dispersed, their noise grows nearly in proportion to
#: the mean, so a perfect forecast's absolute error scales with the level, not with its square root.
DEFAULT_POWER = 1.0

#: The counterfactual's floor, as a share of its mean over the tick (as the relative loss's floor): a step
#: forecast at (nearly) nothing without the event would make the ratio explode.
DEFAULT_FLOOR = 0.1


class ExplainedScale:
    """Per-step divisors of a tick's errors: the explained ratio ``served / counterfactual`` to ``power``.

    Parameters
    ----------
    power
        Exponent of the ratio, in ``[0, 1]``: 1 when the noise's scale grows in proportion to the level
        (over-dispersed counts, the default), 0.5 for Poisson noise (whose standard deviation grows with the
        square root of the mean), 0 to switch the discount off.
    floor
        Both forecasts are raised to ``floor`` times the counterfactual's mean absolute value over the tick
        before the ratio is taken, in ``[0, 1)``.

    Examples
    --------
    >>> scale = ExplainedScale()
    >>> served = np.array([[13.0, 26.0, 5.0], [1.0, 2.0, 3.0]])
    >>> counterfactual = np.array([[10.0, 20.0, 5.0], [np.nan, np.nan, np.nan]])  # no event in row 2
    >>> scale.of(served, counterfactual).tolist()
    [[1.3, 1.3, 1.0], [1.0, 1.0, 1.0]]
    >>> ExplainedScale(power=0.5).of(np.array([[4.0]]), np.array([[1.0]])).tolist()
    [[2.0]]
    >>> ExplainedScale(power=2)
    Traceback (most recent call last):
    ...
    ValueError: power (the exponent of the explained ratio) must be a number in [0, 1], got 2
    """

    def __init__(self, power: float = DEFAULT_POWER, floor: float = DEFAULT_FLOOR) -> None:
        if isinstance(power, bool) or not isinstance(power, numbers.Real) or not 0 <= power <= 1:
            raise ValueError(f"power (the exponent of the explained ratio) must be a number in [0, 1], got {power!r}")
        if isinstance(floor, bool) or not isinstance(floor, numbers.Real) or not 0 <= floor < 1:
            raise ValueError(f"floor (a share of the counterfactual's level) must be a number in [0, 1), "
                             f"got {floor!r}")
        self.power = float(power)
        self.floor = float(floor)

    @property
    def active(self) -> bool:
        """Whether the scale can differ from 1 (``power > 0``)."""
        return self.power > 0

    def of(self, served: np.ndarray, counterfactual: np.ndarray) -> np.ndarray:
        """The ``(n_streams, steps)`` divisors from the served forecasts and the counterfactual ones (NaN rows:
        no counterfactual, divisor 1). A step where either forecast is not positive or missing gets 1: no
        discount where the model's explanation is unclear (a level of counts is positive)."""
        served = np.asarray(served, dtype=np.float64)
        counterfactual = np.asarray(counterfactual, dtype=np.float64)
        if served.shape != counterfactual.shape:
            raise ValueError(f"served forecasts {served.shape} and counterfactual ones {counterfactual.shape} "
                             "must have the same shape")
        out = np.ones(served.shape)
        rows = np.isfinite(counterfactual).any(axis=1)
        if not rows.any() or not self.active:
            return out
        s, c = served[rows], counterfactual[rows]
        finite = np.isfinite(c)
        with np.errstate(invalid="ignore", divide="ignore"):
            level = np.where(finite, np.abs(c), 0.0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
            floor = (self.floor * level)[:, None]
            ratio = np.maximum(s, floor) / np.maximum(c, floor)
            ok = np.isfinite(ratio) & (s > 0) & (c > 0)
            out[rows] = np.where(ok, ratio ** self.power if self.power != 1 else ratio, 1.0)
        return out

    def __repr__(self) -> str:
        return f"ExplainedScale(power={self.power:g}, floor={self.floor:g})"
