"""Hold the triggers of a tick on which many streams trigger at once: a **common shock**.

A holiday, a storm over a city or a feed that delivered a bad hour to every stream makes many streams' losses
jump on the same tick, and the tests rightly find it. Re-training on that tick is mostly waste: a challenger
fitted on the shock loses its check on the next, ordinary tick (on the tuning seeds 58 % of the re-trainings of
ticks with five or more re-trainings lost, against 20 % on other ticks; on seed 1, 50 of one such tick's 59
challengers). So when at least ``share`` of the streams tested in a tick (and at least :data:`MIN_COUNT`)
trigger, their triggers are *held* for ``hold_ticks`` ticks (the policy's window of recent ticks), and a held
stream is re-trained only once the evidence is confirmed:

- it triggers again (the fleet's usual Benjamini-Hochberg rejection, on any tick of the hold, a common-shock
  tick included: it triggered twice), or
- at the hold's last tick its window test, whose window now holds only ticks after the shock, rejects within
  the family of the streams still held (Benjamini-Hochberg at the policy's ``alpha``): a lasting change shows
  in every tick after the shock, a passing shock in none.

The rest are released. A stream that triggers alone is never held. The cost is a delay of one to ``hold_ticks``
ticks for a change that arrives together with many others. (Confirming by a second trigger alone lost
8-22 % of the streams of a lasting shift shared by a third of the fleet, marginal detections that did not
trigger twice; the last check finds nearly all of them, tests/test_common_shock.py.)

The tests see every tick as before (the held tick enters the stream's window and, after probation, its
reference, like any other).
"""

from __future__ import annotations

import numbers

import numpy as np

from mlma.monitor.multiplicity import fdr_control

#: A tick needs at least this many triggers to be a common shock, whatever the share: on a small fleet a few
#: triggers at once are no evidence of a shared cause.
MIN_COUNT = 5

#: No hold (the tick of a stream's hold when there is none).
_NO_TICK = -1


class CommonShockHold:
    """Per-stream holds of the triggers of a common-shock tick, confirmed or released by the next ticks' tests.

    Parameters
    ----------
    share
        Share of the streams tested in a tick that must trigger together (and at least :data:`MIN_COUNT`) for
        their triggers to be held, in (0, 1].
    hold_ticks
        How many ticks a hold lasts (at least 1); the last is its final check.

    Examples
    --------
    Ten streams, all tested. On tick 5 six trigger at once (at least five and at least half of the ten): all
    are held, none re-trained. On tick 6 two of them trigger again and are re-trained, with a third stream that
    triggers alone:

    >>> hold = CommonShockHold(share=0.5, hold_ticks=2)
    >>> hold.reset(10)
    >>> shock = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    >>> hold.act(shock, n_tested=10, tick=5).tolist()
    [False, False, False, False, False, False, False, False, False, False]
    >>> again = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 1], dtype=bool)
    >>> hold.act(again, n_tested=10, tick=6).tolist()
    [True, True, False, False, False, False, False, False, False, True]
    >>> hold.confirmed.tolist()[:3], hold.describe(0)
    ([True, True, False], 'held on tick 5, when 6 of 10 tested streams triggered at once')

    Tick 7 is the hold's last: none of the four still held triggers, but the window tests of streams 2 and 3
    (the ticks after the shock) are strong within the family of the four, so they are re-trained; the others
    are released:

    >>> quiet = np.zeros(10, dtype=bool)
    >>> recent = np.array([np.nan, np.nan, 0.001, 0.004, 0.6, 0.3] + [0.5] * 4)
    >>> hold.act(quiet, n_tested=10, tick=7, recent_p=recent, alpha=0.01).tolist()[:6]
    [False, False, True, True, False, False]
    >>> bool(hold.held.any())
    False
    """

    #: Per-stream arrays that make up the state (saved with the policy's).
    STATE = ("shock_tick", "shock_count", "shock_tested")

    def __init__(self, share: float = 0.02, hold_ticks: int = 3) -> None:
        if isinstance(share, bool) or not isinstance(share, numbers.Real) or not 0 < share <= 1:
            raise ValueError(f"the common-shock share (the share of the tested streams that, triggering in one "
                             f"tick, have their triggers held until confirmed) must be in (0, 1], got {share!r}")
        if isinstance(hold_ticks, bool) or not isinstance(hold_ticks, numbers.Integral) or hold_ticks < 1:
            raise ValueError(f"hold_ticks (how long a held trigger waits for confirmation) must be a whole number "
                             f">= 1, got {hold_ticks!r}")
        self.share = float(share)
        self.hold_ticks = int(hold_ticks)
        self.reset(0)

    def reset(self, n_streams: int) -> None:
        # The tick a stream's trigger was held on (_NO_TICK: none), and how many of how many tested streams
        # triggered then (for the explanation of a confirmed re-training).
        self.shock_tick = np.full(n_streams, _NO_TICK, dtype=np.int32)
        self.shock_count = np.zeros(n_streams, dtype=np.int32)
        self.shock_tested = np.zeros(n_streams, dtype=np.int32)
        self.confirmed = np.zeros(n_streams, dtype=bool)
        self._held_on = np.full(n_streams, _NO_TICK, dtype=np.int32)

    @property
    def held(self) -> np.ndarray:
        """Streams whose trigger is held now."""
        return self.shock_tick != _NO_TICK

    def is_shock(self, count: int, n_tested: int) -> bool:
        """Whether ``count`` triggers among ``n_tested`` tested streams make a common-shock tick.

        >>> hold = CommonShockHold(share=0.02)
        >>> hold.is_shock(4, 100), hold.is_shock(5, 100), hold.is_shock(5, 1000), hold.is_shock(20, 1000)
        (False, True, False, True)
        """
        return count >= max(MIN_COUNT, self.share * n_tested)

    def act(self, triggered: np.ndarray, n_tested: int, tick: int, recent_p: np.ndarray | None = None,
            alpha: float = 0.01) -> np.ndarray:
        """The triggers to act on this tick.

        ``triggered``: the tests' triggers (per stream); ``recent_p``: each stream's p-value of its window test
        (NaN where untested), read for the holds at their last tick. Returns the confirmed holds
        (:attr:`confirmed`) and the tick's other triggers, unless those make a common shock, in which case they
        are held instead.
        """
        triggered = np.asarray(triggered, dtype=bool)
        held = self.held
        self.confirmed = held & triggered
        last = held & (tick - self.shock_tick >= self.hold_ticks) & ~self.confirmed
        if recent_p is not None and last.any():
            recent_p = np.asarray(recent_p, dtype=np.float64)
            family = np.flatnonzero(last & np.isfinite(recent_p))
            if len(family):
                self.confirmed[family], _ = fdr_control(recent_p[family], alpha=alpha, method="bh")
        # The tick each confirmed stream was held on, for its explanation (this call's only).
        self._held_on = np.where(self.confirmed, self.shock_tick, _NO_TICK)
        self.shock_tick[self.confirmed | last] = _NO_TICK
        fresh = triggered & ~self.confirmed
        if self.is_shock(int(fresh.sum()), n_tested):
            self.shock_tick[fresh] = tick
            self.shock_count[fresh] = int(fresh.sum())
            self.shock_tested[fresh] = n_tested
            return self.confirmed.copy()
        return self.confirmed | fresh

    def describe(self, s: int) -> str:
        """Why stream ``s``'s trigger was held (for one confirmed in the last :meth:`act`)."""
        return (f"held on tick {int(self._held_on[s])}, when {int(self.shock_count[s])} of "
                f"{int(self.shock_tested[s])} tested streams triggered at once")
