"""A skill test over many streams at once: is a stream's serving model worse than the seasonal-naive forecast
on the same ticks, whatever its own past?

The degradation test compares a model with *itself* (its reference is its own first ticks), so a model that
was mediocre from day one is never seen by it. This test compares it with a fixed benchmark instead, the
seasonal naive (the value one season earlier), **paired** on the same timestamps: for each of the serving
version's last ``window`` clean ticks it keeps the model's mean absolute error ``m`` and the naive's ``b``
over the steps both have, and the one-sided t-test of the differences ``d = m - (1 + margin) b`` asks

    H0: mean m <= (1 + margin) mean b      against      H1: mean m > (1 + margin) mean b.

Pairing removes what the tick's conditions (a hot day, a holiday, a level shift) do to both forecasts, so far
fewer ticks are needed than for a test of the model's errors alone against a fixed scale; and the benchmark
is the naive's *out-of-sample* error, not its in-sample one (a ratio to the in-sample naive error, MASE,
rises with any volatile stretch and was also computed differently by the backtest and a live project).
``margin`` is how much worse than the naive is still accepted. Tick means, not single steps, are the units of
the test: the steps of one tick share its conditions and are strongly correlated, the tick means much less so;
the naive's errors of consecutive ticks share a season of actuals, a lag-1 correlation the variance counts.

:class:`SeasonalNaive` keeps each stream's last season of actuals to give the naive's errors;
:class:`SkillTest` keeps the rings of tick means and tests them. Both are arrays over the streams updated with
array operations only, so a tick costs a few microseconds per thousand streams whatever the fleet's size.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import special


class SeasonalNaive:
    """The seasonal-naive forecast's absolute errors, tick by tick, from each stream's last season of actuals.

    Parameters
    ----------
    season_length
        Steps in a season (>= 1): the naive forecast of a step is the actual ``season_length`` steps earlier.

    Examples
    --------
    Two streams, ticks of 3 steps, a season of 2 steps: the first tick has no earlier season for its first two
    steps (nor does the second stream's last step of tick 1: its lag is tick 1's missing first step); after a
    skipped tick (tick 3 follows tick 1) nothing is paired with the season before the gap.

    >>> naive = SeasonalNaive(season_length=2)
    >>> naive.reset(2)
    >>> naive.errors(0, np.array([[1.0, 2.0, 4.0], [5.0, 5.0, 5.0]])).tolist()
    [[nan, nan, 3.0], [nan, nan, 0.0]]
    >>> naive.errors(1, np.array([[3.0, 3.0, 3.0], [np.nan, 6.0, 7.0]])).tolist()
    [[1.0, 1.0, 0.0], [nan, 1.0, nan]]
    >>> naive.errors(3, np.array([[3.0, 3.0, 3.0], [6.0, 6.0, 6.0]])).tolist()
    [[nan, nan, 0.0], [nan, nan, 0.0]]
    """

    #: Per-stream arrays that make up the state (saved with the policy's).
    STATE = ("naive_last", "naive_tick")

    def __init__(self, season_length: int) -> None:
        if isinstance(season_length, bool) or not isinstance(season_length, numbers.Integral) or season_length < 1:
            raise ValueError(f"season_length must be a whole number >= 1, got {season_length!r}")
        self.season = int(season_length)
        self.reset(0)

    def reset(self, n_streams: int) -> None:
        # The last season of actuals, oldest first (float32, as the policy's loss rings); the tick it ended.
        self.naive_last = np.full((n_streams, self.season), np.nan, dtype=np.float32)
        self.naive_tick = np.full(n_streams, np.iinfo(np.int32).min // 2, dtype=np.int32)

    def errors(self, tick: int, actuals: np.ndarray) -> np.ndarray:
        """The naive's absolute errors of tick ``tick``'s ``actuals`` (all streams, ``(n, steps)`` on the grid,
        NaN where missing or not to be learnt from), then keep the newest season. NaN where the actual a
        season earlier is unknown, or fell in a tick this object did not see."""
        actuals = np.asarray(actuals, dtype=np.float64)
        n, steps = actuals.shape
        m = self.season
        last = np.where((self.naive_tick == tick - 1)[:, None], self.naive_last, np.nan).astype(np.float64)
        lag = last[:, :steps] if steps <= m else np.concatenate([last, actuals[:, :steps - m]], axis=1)
        self.naive_last = (actuals[:, -m:] if steps >= m
                           else np.concatenate([last[:, steps:], actuals], axis=1)).astype(np.float32)
        self.naive_tick[:] = tick
        return np.abs(actuals - lag)


class SkillTest:
    """Paired one-sided t-test of each stream's recent model error against ``1 + margin`` times the seasonal
    naive's on the same ticks (module docstring).

    Parameters
    ----------
    margin
        Accepted excess (>= 0) of the model's mean absolute error over the naive's, as a share of the naive's.
    window
        Ticks kept per stream (>= 2): the test reads the last ``window`` clean ticks of the serving model.
    min_ticks
        Ticks needed before a stream is tested (2 <= ``min_ticks`` <= ``window``).

    Examples
    --------
    Two streams: the first's model errs 1.6 times as much as the naive on the same ticks, the second's 0.7
    times; the tick's conditions move both errors together.

    >>> rng = np.random.default_rng(0)
    >>> test = SkillTest(margin=0.1, window=14, min_ticks=7)
    >>> test.reset(2)
    >>> for _ in range(10):
    ...     naive = np.exp(0.5 * rng.standard_normal(2))
    ...     model = np.array([1.6, 0.7]) * naive * (1 + 0.05 * rng.standard_normal(2))
    ...     p, ratio, n = test.update(np.arange(2), model, naive)
    >>> (p < 0.001).tolist(), ratio.round(1).tolist(), n.tolist()
    ([True, False], [1.6, 0.7], [10, 10])

    Before ``min_ticks`` ticks a stream has no p-value (NaN); a new model starts afresh:

    >>> test.restart(np.array([0]))
    >>> p, ratio, n = test.update(np.arange(2), np.array([2.0, 0.7]), np.array([1.0, 1.0]))
    >>> p.round(3).tolist()[0], n.tolist()
    (nan, [1, 11])

    A stream whose re-training did not beat its model is not tested again until its next model:

    >>> test.silence(np.array([0]))
    >>> for _ in range(10):
    ...     p, ratio, n = test.update(np.arange(2), np.array([2.0, 0.7]), np.array([1.0, 1.0]))
    >>> p.tolist()[0], n.tolist()
    (nan, [0, 14])
    >>> test.restart(np.array([0]))
    >>> bool(test.skill_silent[0])
    False
    """

    #: Per-stream arrays that make up the state (saved with the policy's).
    STATE = ("skill_model", "skill_naive", "skill_len", "skill_silent")

    def __init__(self, margin: float, window: int = 14, min_ticks: int = 7) -> None:
        if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0 <= margin < np.inf:
            raise ValueError(f"the skill test's margin must be a finite number >= 0, got {margin!r}")
        if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 2:
            raise ValueError(f"the skill test's window must be a whole number >= 2, got {window!r}")
        if (isinstance(min_ticks, bool) or not isinstance(min_ticks, numbers.Integral)
                or not 2 <= min_ticks <= window):
            raise ValueError(f"the skill test's min_ticks must be a whole number in [2, window={window}], "
                             f"got {min_ticks!r}")
        self.margin, self.window, self.min_ticks = float(margin), int(window), int(min_ticks)
        self.reset(0)

    def reset(self, n_streams: int) -> None:
        # Newest tick last; float32 as the policy's loss rings (the test's precision does not need more).
        self.skill_model = np.full((n_streams, self.window), np.nan, dtype=np.float32)
        self.skill_naive = np.full((n_streams, self.window), np.nan, dtype=np.float32)
        self.skill_len = np.zeros(n_streams, dtype=np.int16)
        # Streams not to test until their next model (see silence).
        self.skill_silent = np.zeros(n_streams, dtype=bool)

    def restart(self, streams: np.ndarray) -> None:
        """Forget the streams' ticks (a new model, or a new normal after a lost challenger)."""
        self.skill_model[streams] = np.nan
        self.skill_naive[streams] = np.nan
        self.skill_len[streams] = 0
        self.skill_silent[streams] = False

    def silence(self, streams: np.ndarray) -> None:
        """Stop testing the streams until they :meth:`restart` (their next model): a re-training that did not
        beat the serving model says its poor skill is the stream's (its data are hard to forecast better than
        the naive), not the model's, and another fit on the same data would not do better."""
        self.restart(streams)
        self.skill_silent[streams] = True

    def update(self, streams: np.ndarray, model: np.ndarray, naive: np.ndarray):
        """Add one tick's mean absolute errors of the model and of the naive (over the same steps) of
        ``streams`` (NaN in either: nothing is added), and test them.

        Returns, for ``streams``: the one-sided p-value (NaN with fewer than ``min_ticks`` ticks or no spread),
        the ratio of the model's mean error to the naive's over the ring and the number of ticks in it.
        """
        streams = np.asarray(streams, dtype=np.int64)
        model = np.asarray(model, dtype=np.float64)
        naive = np.asarray(naive, dtype=np.float64)
        known = np.isfinite(model) & np.isfinite(naive) & ~self.skill_silent[streams]
        add = streams[known]
        if len(add):
            # Shift left by one and write the newest at the end (only the rows that have a value).
            for ring, value in ((self.skill_model, model), (self.skill_naive, naive)):
                ring[add, :-1] = ring[add, 1:]
                ring[add, -1] = value[known]
            self.skill_len[add] = np.minimum(self.skill_len[add] + 1, self.window)
        return self.test(streams)

    def test(self, streams: np.ndarray):
        """p-value, error ratio and count of the streams' current rings (see :meth:`update`)."""
        model = self.skill_model[streams].astype(np.float64)
        naive = self.skill_naive[streams].astype(np.float64)
        diff = model - (1.0 + self.margin) * naive
        finite = np.isfinite(diff)
        n = finite.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(finite, diff, 0.0).sum(axis=1) / np.maximum(n, 1)
            dev = np.where(finite, diff - mean[:, None], 0.0)
            var = (dev * dev).sum(axis=1) / np.maximum(n - 1, 1)
            # Consecutive ticks' naive errors share a season of actuals (tick k's forecast of tick k + 1), so
            # the differences are correlated at lag 1: the variance of their mean counts that covariance
            # (kept only when positive; a negative estimate would make the test bolder than the iid one).
            # Gaps in the ring (ticks not added) pair unrelated ticks; they are rare and only add noise.
            lag1 = (dev[:, 1:] * dev[:, :-1]).sum(axis=1) / np.maximum(n - 1, 1)
            sd = np.sqrt(var + 2.0 * np.maximum(lag1, 0.0))
            t = mean / (sd / np.sqrt(np.maximum(n, 1)))
            p = special.stdtr(np.maximum(n - 1, 1), -t)
            ratio = np.where(finite, model, 0.0).sum(axis=1) / np.where(finite, naive, 0.0).sum(axis=1)
        ok = (n >= self.min_ticks) & (sd > 0) & np.isfinite(t) & ~self.skill_silent[streams]
        return np.where(ok, p, np.nan), np.where(n > 0, ratio, np.nan), n
