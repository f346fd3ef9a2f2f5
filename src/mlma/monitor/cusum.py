"""A one-sided CUSUM (Page, 1954) over many streams at once: a trigger that reacts to the *size* of a
sustained rise, where the degradation test reacts to its *significance*.

Each stream ``s`` keeps the statistic ``S[s] >= 0``. A tick's value ``x`` (for the MLMA policy: the tick's
mean loss relative to the stream's reference mean, minus 1) updates it as

    S <- max(0, S + x - drift)

and the stream **alarms** when ``S > threshold``; its statistic then restarts at 0 (a renewal CUSUM, as
River's detectors restart after a detection), so an alarm that nobody acts on is not repeated every tick
and the alarm rate under no change is one per run length. ``drift`` (the allowance) is the rise per tick that
is *not* worth accumulating: values up to it pull the statistic back towards 0. A sustained excess ``d``
above the allowance alarms after about ``threshold / d`` ticks; a short spike alarms only when it alone is
larger than the threshold.

The run length (``ticks``) counts the ticks since the statistic last stood at 0, Page's estimate of when
the rise began; ``S / ticks + drift`` is the mean excess over that run, which the policy's explanation
shows. State is two arrays over the streams, updated with array operations only, so a tick costs the same
few microseconds per thousand streams whatever the fleet's size.

References
----------
.. [1] Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2), 100-115.
.. [2] Montgomery, D. C. (2009). Introduction to Statistical Quality Control, 6th ed., ch. 9.1 (the tabular
   CUSUM: allowance ``K``, decision interval ``H``).
"""

from __future__ import annotations

import numbers

import numpy as np


class CUSUM:
    """Upper one-sided CUSUM of many streams (see the module docstring).

    Parameters
    ----------
    threshold
        Decision interval ``H`` (> 0), in the units of the values: a stream alarms when its cumulative
        excess over the allowance exceeds it.
    drift
        Allowance ``K`` (>= 0) subtracted from every value; a per-stream array can be given to
        :meth:`update` instead.

    Examples
    --------
    Three streams; the first rises by 0.5 a tick, the second stays at its reference, the third has one spike.

    >>> cusum = CUSUM(threshold=1.2, drift=0.05)
    >>> cusum.reset(3)
    >>> for x in ([0.5, 0.0, 0.0], [0.5, 0.0, 1.0], [0.5, 0.0, 0.0]):
    ...     alarm, level, run = cusum.update(np.arange(3), np.array(x))
    ...     print(alarm.tolist(), level.round(2).tolist(), run.tolist())
    [False, False, False] [0.45, 0.0, 0.0] [1, 0, 0]
    [False, False, False] [0.9, 0.0, 0.95] [2, 0, 1]
    [True, False, False] [1.35, 0.0, 0.9] [3, 0, 2]

    The alarmed stream restarts at 0; the others keep their statistic:

    >>> cusum.statistic.round(2).tolist(), cusum.ticks.tolist()
    ([0.0, 0.0, 0.9], [0, 0, 2])

    A stream that gets a new model starts afresh:

    >>> cusum.restart(np.array([2]))
    >>> cusum.statistic.tolist()
    [0.0, 0.0, 0.0]
    """

    #: Per-stream arrays that make up the state (saved with the policy's).
    STATE = ("cusum_statistic", "cusum_ticks")

    def __init__(self, threshold: float, drift: float = 0.0) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not threshold > 0:
            raise ValueError(f"the CUSUM threshold must be a number > 0, got {threshold!r}")
        if isinstance(drift, bool) or not isinstance(drift, numbers.Real) or not drift >= 0:
            raise ValueError(f"the CUSUM drift (allowance) must be a number >= 0, got {drift!r}")
        self.threshold = float(threshold)
        self.drift = float(drift)
        self.reset(0)

    def reset(self, n_streams: int) -> None:
        self.cusum_statistic = np.zeros(n_streams)
        self.cusum_ticks = np.zeros(n_streams, dtype=np.int32)

    def grow(self, n_streams: int) -> None:
        old = len(self.cusum_statistic)
        if n_streams > old:
            self.cusum_statistic = np.concatenate([self.cusum_statistic, np.zeros(n_streams - old)])
            self.cusum_ticks = np.concatenate([self.cusum_ticks, np.zeros(n_streams - old, dtype=np.int32)])

    @property
    def statistic(self) -> np.ndarray:
        return self.cusum_statistic

    @property
    def ticks(self) -> np.ndarray:
        return self.cusum_ticks

    def restart(self, streams: np.ndarray) -> None:
        """Start the streams' statistics afresh (a new model, a new reference)."""
        self.cusum_statistic[streams] = 0.0
        self.cusum_ticks[streams] = 0

    def update(self, streams: np.ndarray, values: np.ndarray, drift: np.ndarray | float | None = None):
        """Add one tick's ``values`` of ``streams`` (NaN: no value, the statistic stays).

        Returns, for ``streams``: the alarms, the statistic and the run length each alarm was raised at (the
        statistic and run length after the update for the others); alarmed streams restart at 0.
        """
        streams = np.asarray(streams, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        allowance = self.drift if drift is None else np.asarray(drift, dtype=np.float64)
        old = self.cusum_statistic[streams]
        run = self.cusum_ticks[streams]
        known = np.isfinite(values)
        new = np.where(known, np.maximum(0.0, old + np.where(known, values, 0.0) - allowance), old)
        run = np.where(known, np.where(new > 0, run + 1, 0), run).astype(np.int32)
        alarm = new > self.threshold
        self.cusum_statistic[streams] = np.where(alarm, 0.0, new)
        self.cusum_ticks[streams] = np.where(alarm, 0, run)
        return alarm, new, run
