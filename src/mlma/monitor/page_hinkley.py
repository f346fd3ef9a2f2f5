"""Page-Hinkley (Page, 1954; Hinkley, 1971) over many streams at once, on each tick's mean scaled loss: the
MLMA policy's trigger for a rise that is large against the model's own past, however it came.

Each stream keeps the mean ``m`` of every scaled loss its serving model has had (weighted by the number of
losses in each tick) and the statistic ``S >= 0``. A tick with mean scaled loss ``x`` over ``k`` losses
updates them as

    m <- m + k (x - m) / n                               (n: the losses so far, this tick's included)
    S <- max(0, S + k (x - (1 + margin) m - allowance))

and the stream **alarms** when ``S > threshold`` after at least ``min_values`` losses; the caller then starts
it afresh (:meth:`PageHinkley.restart`), as River's ``PageHinkley`` resets after a detection. With ``margin =
0`` this is the detector River runs loss by loss with no forgetting (``alpha=1``; its ``S - min S`` of the
cumulative deviations is the reflected sum above), at the granularity of a tick: with one loss a tick it is
River's statistic exactly, and with 24 at the same threshold it alarms about as often on the same losses
(tests/test_page_hinkley.py). River's default forgets a little (``alpha = 0.9999`` per loss; the
``page-hinkley`` baseline policy uses it), which this one does not.

How it differs from the reference-relative :class:`mlma.monitor.cusum.CUSUM`:

- the baseline is the mean over the model's whole life, which becomes more exact the longer the model
  serves, so a stream without change does not wander off with an unlucky reference (persistent,
  heavy-tailed losses made the reference CUSUM fire 0.0144 times per stream-tick under no change);
- the values are scaled losses (errors over the seasonal naive's in-sample error), so a stream whose model
  is poor against the naive accumulates faster than one whose model is good, at the same relative rise;
- the mean follows a sustained rise, so a change must be large against the model's past to reach the
  threshold before the mean absorbs it;
- the relative ``margin`` (the policy's relevance margin) makes a stream at its usual loss pay back towards
  0, which keeps the no-change alarm rate of persistent losses at about 0.0015 per stream-tick at the
  threshold 200 (tests/test_page_hinkley.py, docs/results.md).

State is four arrays over the streams, updated with array operations only.

References
----------
.. [1] Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2), 100-115.
.. [2] Hinkley, D. V. (1971). Inference about the change-point from cumulative sum tests. Biometrika 58(3),
   509-523.
"""

from __future__ import annotations

import numbers

import numpy as np


def _check(name: str, value, *, low: float, strict: bool) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and np.isfinite(value)
          and (value > low if strict else value >= low))
    if not ok:
        raise ValueError(f"the Page-Hinkley {name} must be a finite number {'>' if strict else '>='} {low:g}, "
                         f"got {value!r}")
    return float(value)


class PageHinkley:
    """Upward Page-Hinkley test of many streams' scaled losses (see the module docstring).

    Parameters
    ----------
    threshold
        ``H`` (> 0), in scaled loss times losses: a stream alarms once its losses have exceeded their running
        mean (plus the allowances) by this much in all since the statistic last stood at 0. River's
        detector at the same threshold, fed the same losses one by one, alarms about as often.
    margin
        Relative allowance (>= 0): an excess up to ``margin`` times the running mean does not accumulate.
        The MLMA policy passes its relevance margin ``delta``: a rise it would not re-train for must not add
        up to an alarm either, and it keeps the no-change alarm rate of persistent losses low.
    allowance
        Absolute allowance per loss (>= 0), River's ``delta`` (0.005).
    min_values
        Losses a model must have had before it can alarm (River's ``min_instances``, 30).

    Examples
    --------
    Two streams of 10 losses a tick; the first doubles its loss from the third tick on.

    >>> ph = PageHinkley(threshold=5.0, allowance=0.0, min_values=10)
    >>> ph.reset(2)
    >>> for x in ([0.5, 0.5], [0.5, 0.5], [1.0, 0.5], [1.0, 0.5]):
    ...     alarm, level, mean, run = ph.update(np.arange(2), np.array(x), np.array([10, 10]))
    ...     print(alarm.tolist(), level.round(2).tolist(), mean.round(3).tolist(), run.tolist())
    [False, False] [0.0, 0.0] [0.5, 0.5] [0, 0]
    [False, False] [0.0, 0.0] [0.5, 0.5] [0, 0]
    [False, False] [3.33, 0.0] [0.667, 0.5] [1, 0]
    [True, False] [5.83, 0.0] [0.75, 0.5] [2, 0]

    The mean follows the rise (0.5, then 0.667 and 0.75), so a rise counts less the longer it lasts. The
    caller starts a stream it acted on afresh, its mean too (as River's detector resets after a detection);
    a new model does the same:

    >>> ph.restart(np.flatnonzero(alarm))
    >>> ph.ph_count.tolist(), ph.ph_statistic.tolist()
    ([0.0, 40.0], [0.0, 0.0])

    With a margin of 10 % a stream at its usual loss pays 10 % of its mean per loss back to 0:

    >>> ph = PageHinkley(threshold=5.0, margin=0.1, allowance=0.0)
    >>> ph.reset(1)
    >>> _ = ph.update(np.arange(1), np.array([1.0]), np.array([10]))
    >>> ph.update(np.arange(1), np.array([1.5]), np.array([10]))[1].round(2).tolist()
    [1.25]
    """

    #: Per-stream arrays that make up the state (saved with the policy's).
    STATE = ("ph_count", "ph_mean", "ph_statistic", "ph_run")

    def __init__(self, threshold: float, margin: float = 0.0, allowance: float = 0.005,
                 min_values: int = 30) -> None:
        self.threshold = _check("threshold", threshold, low=0.0, strict=True)
        self.margin = _check("margin", margin, low=0.0, strict=False)
        self.allowance = _check("allowance", allowance, low=0.0, strict=False)
        if isinstance(min_values, bool) or not isinstance(min_values, numbers.Integral) or min_values < 0:
            raise ValueError(f"the Page-Hinkley min_values must be a whole number >= 0, got {min_values!r}")
        self.min_values = int(min_values)
        self.reset(0)

    def reset(self, n_streams: int) -> None:
        self.ph_count = np.zeros(n_streams)
        self.ph_mean = np.zeros(n_streams)
        self.ph_statistic = np.zeros(n_streams)
        self.ph_run = np.zeros(n_streams, dtype=np.int32)

    def restart(self, streams: np.ndarray) -> None:
        """Start the streams afresh (a new model: a new loss distribution)."""
        for name in self.STATE:
            getattr(self, name)[streams] = 0

    def update(self, streams: np.ndarray, tick_mean: np.ndarray, count: np.ndarray,
               margin: np.ndarray | float | None = None):
        """Add one tick of ``streams``: the mean scaled loss ``tick_mean`` over ``count`` losses (NaN or no
        losses: nothing changes); ``margin``, when given, replaces :attr:`margin` (per stream, e.g. a
        person's own relevance margin for a stream).

        Returns, for ``streams``: the alarms, the statistic, the running mean and the run length (ticks since
        the statistic last stood at 0) after the update. An alarm does not start the stream afresh: the
        caller :meth:`restart` s the streams it acts on, so that an alarm it cannot act on yet (a stream
        cooling down) stands until it can.
        """
        streams = np.asarray(streams, dtype=np.int64)
        x = np.asarray(tick_mean, dtype=np.float64)
        k = np.where(np.isfinite(x), np.asarray(count, dtype=np.float64), 0.0)
        x = np.where(k > 0, x, 0.0)
        relative = self.margin if margin is None else np.asarray(margin, dtype=np.float64)
        old_mean = self.ph_mean[streams]
        n = self.ph_count[streams] + k
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(k > 0, old_mean + k * (x - old_mean) / np.maximum(n, 1.0), old_mean)
        step = k * (x - mean * (1.0 + relative) - self.allowance)
        level = np.where(k > 0, np.maximum(0.0, self.ph_statistic[streams] + step), self.ph_statistic[streams])
        run = np.where(k > 0, np.where(level > 0, self.ph_run[streams] + 1, 0), self.ph_run[streams]).astype(np.int32)
        self.ph_count[streams] = n
        self.ph_mean[streams] = mean
        self.ph_statistic[streams] = level
        self.ph_run[streams] = run
        alarm = (level > self.threshold) & (n >= self.min_values)
        return alarm, level, mean, run
