"""Hold the triggers of a tick on which many streams trigger at once: a **common shock**.

A holiday, a storm over a city or a feed that delivered a bad hour to every stream makes many streams' losses
jump on the same tick, and the tests rightly find it. Re-training on that tick is mostly waste: a challenger
fitted on the shock loses its check on the next, ordinary tick (on the tuning seeds 58 % of the re-trainings of
ticks with five or more re-trainings lost, against 20 % on other ticks; on seed 1, 50 of one such tick's 59
challengers). So when at least ``share`` of the streams tested in a tick (and at least :data:`MIN_COUNT`)
trigger, their triggers are *held*, and a held stream is re-trained only once the evidence **after** the shock's
tick confirms it: each tick the policy tests the held streams' ticks since the shock (the degradation and bias
tests on those window ticks alone, against the reference), and the streams whose p-values the policy's
multiplicity control rejects at :data:`CONFIRM_LEVEL` within the family of the held streams are re-trained. A stream without such
evidence after ``hold_ticks`` ticks of its own since the shock is released, and the policy drops the shock's
tick from its window (:attr:`CommonShockHold.released`), so that the shock never enters its reference: a
reference raised by it would hide a later change (a lasting doubling nine ticks after a 4x shock went unseen in
all 180 hit streams of the test loop while the tick was kept). A stream that triggers alone is never held, and a
held stream's new triggers do not confirm it (their window still holds the shock's tick: a large shock would
confirm itself). The hold covers the tests' triggers only: the opt-in CUSUM and Page-Hinkley triggers, whose
statistics include the shock's tick, are not held.

The cost is a delay of one to ``hold_ticks`` ticks for a change that arrives together with many others. What it
does not catch: a shock that lasts longer than one tick (a two-day holiday) shows in the ticks after its first
and is confirmed on its second (tests/test_common_shock.py: of 60 streams under a two-tick shock, 158
re-trainings over three seeds against 333 without the hold, which re-trains on both ticks).
"""

from __future__ import annotations

import numbers

import numpy as np

from mlma.monitor.multiplicity import fdr_control

#: A tick needs at least this many triggers to be a common shock, whatever the share: on a small fleet a few
#: triggers at once are no evidence of a shared cause.
MIN_COUNT = 5

#: No hold (the tick of a stream's hold when there is none).
NO_HOLD = -1

#: The level of the confirmation, within the family of the held streams. The held streams were already found
#: by the fleet's tests at the policy's ``alpha``; the question now is whether the change outlasts the shock, on
#: the one to three ticks since it, where the policy's strict level (0.01) lost a third of the streams of a
#: lasting change shared by many (49 of 142, tests/test_common_shock.py), 0.05 lost 17 and 0.1 lost 2, while no
#: one-tick shock of 4, 8 or 16 times the usual error was confirmed at any of them.
CONFIRM_LEVEL = 0.1


class CommonShockHold:
    """Per-stream holds of the triggers of a common-shock tick, confirmed or released by the ticks after it.

    Parameters
    ----------
    share
        Share of the streams tested in a tick that must trigger together (and at least :data:`MIN_COUNT`) for
        their triggers to be held, in (0, 1].
    hold_ticks
        How many of its own ticks after the shock a held stream waits for confirmation (at least 1).

    Examples
    --------
    Ten streams, all tested. On tick 5 six trigger at once (at least five and at least half of the ten): all
    are held, none re-trained.

    >>> hold = CommonShockHold(share=0.5, hold_ticks=2)
    >>> hold.reset(10)
    >>> shock = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    >>> hold.act(shock, n_tested=10, tick=5).tolist()
    [False, False, False, False, False, False, False, False, False, False]

    On tick 6 each held stream has one tick since the shock, and the policy's tests of those ticks give their
    p-values: two are strong within the family of the six held and are re-trained, with stream 9, which
    triggers alone. The others wait:

    >>> hold.seen(np.ones(10, dtype=bool))
    >>> after = np.array([0.0001, 0.0004, 0.3, 0.5, 0.7, 0.2] + [np.nan] * 4)
    >>> alone = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1], dtype=bool)
    >>> hold.act(alone, n_tested=10, tick=6, after_p=after).tolist()
    [True, True, False, False, False, False, False, False, False, True]
    >>> hold.describe(0)
    'held on tick 5, when 6 of 10 tested streams triggered at once; confirmed by the 1 tick after it (p=0.0001, among 6 held)'

    On tick 7, their second tick since the shock, the four left show nothing and are released:

    >>> hold.seen(np.ones(10, dtype=bool))
    >>> quiet = np.array([np.nan, np.nan, 0.4, 0.6, 0.5, 0.3] + [np.nan] * 4)
    >>> bool(hold.act(np.zeros(10, dtype=bool), n_tested=10, tick=7, after_p=quiet).any())
    False
    >>> bool(hold.held.any())
    False

    >>> hold.released.tolist()[:6]
    [False, False, True, True, True, True]
    """

    #: Per-stream arrays that make up the state (saved with the policy's).
    STATE = ("shock_tick", "shock_seen", "shock_count", "shock_tested")

    def __init__(self, share: float = 0.02, hold_ticks: int = 3) -> None:
        if isinstance(share, bool) or not isinstance(share, numbers.Real) or not 0 < share <= 1:
            raise ValueError(f"common_shock (the share of the tested streams that, triggering in one tick, have "
                             f"their triggers held until the ticks after it confirm them) must be in (0, 1], "
                             f"or 0 / None for no hold, got {share!r}")
        if isinstance(hold_ticks, bool) or not isinstance(hold_ticks, numbers.Integral) or hold_ticks < 1:
            raise ValueError(f"hold_ticks (how many ticks a held trigger waits for confirmation) must be a whole "
                             f"number >= 1, got {hold_ticks!r}")
        self.share = float(share)
        self.hold_ticks = int(hold_ticks)
        self.reset(0)

    def reset(self, n_streams: int) -> None:
        # The tick a stream's trigger was held on (NO_HOLD: none), how many of its ticks entered its window
        # since, and how many of how many tested streams triggered on the shock's tick (for the explanation).
        self.shock_tick = np.full(n_streams, NO_HOLD, dtype=np.int32)
        self.shock_seen = np.zeros(n_streams, dtype=np.int32)
        self.shock_count = np.zeros(n_streams, dtype=np.int32)
        self.shock_tested = np.zeros(n_streams, dtype=np.int32)
        # This tick's confirmations and what confirmed them (not state: read within the tick).
        self.confirmed = np.zeros(n_streams, dtype=bool)
        self.released = np.zeros(n_streams, dtype=bool)
        self._confirmed_by = {}
        self._held_on = self.shock_tick.copy()

    @property
    def held(self) -> np.ndarray:
        """Streams whose trigger is held now."""
        return self.shock_tick != NO_HOLD

    def is_shock(self, count: int, n_tested: int) -> bool:
        """Whether ``count`` triggers among ``n_tested`` tested streams make a common-shock tick.

        >>> hold = CommonShockHold(share=0.02)
        >>> hold.is_shock(4, 100), hold.is_shock(5, 100), hold.is_shock(5, 1000), hold.is_shock(20, 1000)
        (False, True, False, True)
        """
        return count >= max(MIN_COUNT, self.share * n_tested)

    def seen(self, pushed: np.ndarray) -> None:
        """The streams in ``pushed`` (a mask) had a tick enter their window of recent ticks: for the held ones,
        one more tick since the shock."""
        self.shock_seen[self.held & np.asarray(pushed, dtype=bool)] += 1

    def ticks_since(self) -> np.ndarray:
        """Per stream, how many of its ticks since the shock its window holds (0 for streams not held)."""
        return np.where(self.held, self.shock_seen, 0)

    def release(self, streams: np.ndarray) -> None:
        """End the holds of ``streams`` without re-training (a new model serves, the reference starts afresh)."""
        self.shock_tick[np.asarray(streams, dtype=np.int64)] = NO_HOLD

    def act(self, triggered: np.ndarray, n_tested: int, tick: int, after_p: np.ndarray | None = None,
            alpha: float = CONFIRM_LEVEL, method: str = "bh") -> np.ndarray:
        """The triggers to act on this tick.

        ``triggered``: the tests' triggers (per stream); ``after_p``: the held streams' p-values of their
        ticks since the shock (NaN for the others, or for a held stream without such a tick yet). Returns the
        confirmed holds (:attr:`confirmed`: ``after_p`` rejected by ``method`` at ``alpha`` within the family of
        the held streams that have one) and the tick's triggers of streams not held, unless those make a
        common shock, in which case they are held instead. Holds without confirmation after ``hold_ticks``
        ticks since the shock are released (:attr:`released`; their ``shock_seen`` says how many of their ticks
        ago the shock was).
        """
        triggered = np.asarray(triggered, dtype=bool)
        held = self.held
        self.confirmed = np.zeros(len(triggered), dtype=bool)
        self._confirmed_by = {}
        if after_p is not None and held.any():
            after_p = np.asarray(after_p, dtype=np.float64)
            family = np.flatnonzero(held & np.isfinite(after_p))
            if len(family):
                self.confirmed[family], _ = fdr_control(after_p[family], alpha=alpha, method=method)
                self._confirmed_by = {int(s): (float(after_p[s]), len(family))
                                      for s in family[self.confirmed[family]]}
        self._held_on = self.shock_tick.copy()
        self.released = held & ~self.confirmed & (self.shock_seen >= self.hold_ticks)
        self.shock_tick[self.confirmed | self.released] = NO_HOLD
        # Streams released on this tick count like any other: their window holds only ticks after the shock.
        fresh = triggered & ~self.confirmed & ~self.held
        if self.is_shock(int(fresh.sum()), n_tested):
            self.shock_tick[fresh] = tick
            self.shock_seen[fresh] = 0
            self.shock_count[fresh] = int(fresh.sum())
            self.shock_tested[fresh] = n_tested
            return self.confirmed.copy()
        return self.confirmed | fresh

    def describe(self, s: int) -> str:
        """Why stream ``s`` is held, or, confirmed in the last :meth:`act`, what confirmed it."""
        held_on = int(self._held_on[s]) if s in self._confirmed_by else int(self.shock_tick[s])
        text = (f"held on tick {held_on}, when {int(self.shock_count[s])} of {int(self.shock_tested[s])} tested "
                f"streams triggered at once")
        if s in self._confirmed_by:
            p, family = self._confirmed_by[s]
            seen = int(self.shock_seen[s])
            text += (f"; confirmed by the {seen} tick{'s' if seen != 1 else ''} after it (p={p:.2g}, among "
                     f"{family} held)")
        return text
