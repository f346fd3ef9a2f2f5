"""A skill test over many streams at once: is a stream's serving model worse than the seasonal-naive forecast,
whatever its own past?

The degradation test compares a model with *itself* (its reference is its own first ticks), so a model that
was mediocre from day one is never seen by it. This test compares it with a fixed benchmark instead: each
tick's mean **scaled loss** (the absolute errors divided by the stream's in-sample seasonal-naive mean
absolute error, i.e. MASE per step; :func:`mlma.monitor.losses.scaled_loss`) is kept for the serving
version's last ``window`` clean ticks, and the one-sided t-test of those tick means asks

    H0: mean scaled loss <= 1 + margin      against      H1: mean scaled loss > 1 + margin.

A scaled loss of 1 is the in-sample seasonal naive's own error; ``margin`` is how much worse than that is
still accepted (out of sample the naive itself is somewhat worse than in sample, and a re-training is not
worth a trigger for a model that is merely as good as the naive). Tick means, not single steps, are the
units of the test: the steps of one tick share the tick's conditions (weather, a holiday) and are strongly
correlated, the tick means much less so.

State is a ring of ``window`` tick means per stream and its length, updated with array operations only, so a
tick costs a few microseconds per thousand streams whatever the fleet's size; a stream that gets a new model
starts afresh (:meth:`SkillTest.restart`); one whose re-training lost to its serving model is not tested
again until its next model (:meth:`SkillTest.silence`).
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import special


class SkillTest:
    """One-sided t-test of each stream's recent mean scaled loss against ``1 + margin`` (module docstring).

    Parameters
    ----------
    margin
        Accepted excess (>= 0) of the mean scaled loss over 1, the in-sample seasonal naive's.
    window
        Tick means kept per stream (>= 2): the test reads the last ``window`` clean ticks of the serving model.
    min_ticks
        Tick means needed before a stream is tested (2 <= ``min_ticks`` <= ``window``).

    Examples
    --------
    Two streams: the first's model errs 1.6 times as much as the seasonal naive, the second's 0.7 times.

    >>> rng = np.random.default_rng(0)
    >>> test = SkillTest(margin=0.1, window=14, min_ticks=7)
    >>> test.reset(2)
    >>> for _ in range(10):
    ...     tick_means = np.array([1.6, 0.7]) + 0.1 * rng.standard_normal(2)
    ...     p, mean, n = test.update(np.arange(2), tick_means)
    >>> (p < 1e-6).tolist(), mean.round(1).tolist(), n.tolist()
    ([True, False], [1.6, 0.7], [10, 10])

    Before ``min_ticks`` tick means a stream has no p-value (NaN); a new model starts afresh:

    >>> test.restart(np.array([0]))
    >>> p, mean, n = test.update(np.arange(2), np.array([2.0, 0.7]))
    >>> p.round(3).tolist()[0], n.tolist()
    (nan, [1, 11])

    A stream whose re-training did not beat its model is not tested again until its next model:

    >>> test.silence(np.array([0]))
    >>> for _ in range(10):
    ...     p, mean, n = test.update(np.arange(2), np.array([2.0, 0.7]))
    >>> p.tolist()[0], n.tolist()
    (nan, [0, 14])
    >>> test.restart(np.array([0]))
    >>> bool(test.skill_silent[0])
    False
    """

    #: Per-stream arrays that make up the state (saved with the policy's).
    STATE = ("skill_ring", "skill_len", "skill_silent")

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
        # Newest tick mean last; float32 as the policy's loss rings (the test's precision does not need more).
        self.skill_ring = np.full((n_streams, self.window), np.nan, dtype=np.float32)
        self.skill_len = np.zeros(n_streams, dtype=np.int16)
        # Streams not to test until their next model (see silence).
        self.skill_silent = np.zeros(n_streams, dtype=bool)

    def restart(self, streams: np.ndarray) -> None:
        """Forget the streams' tick means (a new model, or a new normal after a lost challenger)."""
        self.skill_ring[streams] = np.nan
        self.skill_len[streams] = 0
        self.skill_silent[streams] = False

    def silence(self, streams: np.ndarray) -> None:
        """Stop testing the streams until they :meth:`restart` (their next model): a re-training that did not
        beat the serving model says its poor skill is the stream's (its data are hard to forecast better than
        the naive), not the model's, and another fit on the same data would not do better."""
        self.restart(streams)
        self.skill_silent[streams] = True

    def update(self, streams: np.ndarray, tick_means: np.ndarray):
        """Add one tick's mean scaled loss of ``streams`` (NaN: no value, nothing is added) and test them.

        Returns, for ``streams``: the one-sided p-value (NaN with fewer than ``min_ticks`` tick means or no
        spread), the mean scaled loss over the ring and the number of tick means in it.
        """
        streams = np.asarray(streams, dtype=np.int64)
        values = np.asarray(tick_means, dtype=np.float64)
        known = np.isfinite(values) & ~self.skill_silent[streams]
        add = streams[known]
        if len(add):
            # Shift left by one and write the newest at the end (only the rows that have a value).
            self.skill_ring[add, :-1] = self.skill_ring[add, 1:]
            self.skill_ring[add, -1] = values[known]
            self.skill_len[add] = np.minimum(self.skill_len[add] + 1, self.window)
        return self.test(streams)

    def test(self, streams: np.ndarray):
        """p-value, mean and count of the streams' current rings (see :meth:`update`)."""
        ring = self.skill_ring[streams].astype(np.float64)
        finite = np.isfinite(ring)
        n = finite.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(finite, ring, 0.0).sum(axis=1) / np.maximum(n, 1)
            dev = np.where(finite, ring - mean[:, None], 0.0)
            sd = np.sqrt((dev * dev).sum(axis=1) / np.maximum(n - 1, 1))
            t = (mean - (1.0 + self.margin)) / (sd / np.sqrt(np.maximum(n, 1)))
            p = special.stdtr(np.maximum(n - 1, 1), -t)
        ok = (n >= self.min_ticks) & (sd > 0) & np.isfinite(t) & ~self.skill_silent[streams]
        return np.where(ok, p, np.nan), np.where(n > 0, mean, np.nan), n
