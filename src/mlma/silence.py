"""How long each stream has been silent beyond what its own rhythm explains.

A stream without actuals for a few ticks in a row is escalated as ``silent`` and gets no forecasts until data
returns (:class:`mlma.agent.AgentSettings` ``silence_ticks``, :class:`mlma.mlma_policy.MLMAPolicy`
``silent_ticks``). Many real streams are silent on a rhythm: a bank's call centre or a shop closed at weekends
reports nothing on Saturday and Sunday, every week. Counted plainly, a long weekend (a Monday holiday) is three
ticks in a row without actuals: the stream was escalated and its Tuesday went without a forecast.

Here a tick without actuals is the stream's **rhythm** when the stream was silent at the same place in each of
the last :data:`SEASONS` (three) seasons of ticks (a week of daily ticks:
:attr:`mlma.calendar.TickClock.tick_season`) *and* reported at some tick of each of those seasons; such a tick
neither counts nor ends the run. Three seasons, so that one holiday, or two on the same weekday a week apart
(Christmas and New Year's Day), do not make that day of the next week look usual; seasons with actuals, so that an
outage or a closure of weeks is not taken for a habit when the stream comes back and breaks again. A stream
launched lately has no rhythm before its launch: its ticks before that, and ticks before the agent began to keep
the rhythm, count as ticks with actuals, so the rhythm is known three seasons after either.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_PERIOD", "SEASONS", "Silence", "usual_silence"]

#: Seasons of ticks a stream must have been silent at a place (and reported in) for a silence there to be its
#: rhythm.
SEASONS = 3

#: The longest season in ticks whose rhythm is kept: three seasons of bits in one 64-bit integer per stream.
#: Longer seasons (hourly ticks, 24 a day; weekly ticks, 52 a year) keep no rhythm: every tick without actuals
#: counts.
MAX_PERIOD = 21


class Silence:
    """Per stream, the ticks without actuals since its last actuals that its rhythm does not explain.

    Parameters
    ----------
    period
        Ticks in one season of the tick clock (7 for daily ticks): a tick without actuals is the stream's
        rhythm when it had none ``period``, ``2 * period`` and ``3 * period`` ticks earlier either, and had
        actuals in each of those seasons. 1 (or more than :data:`MAX_PERIOD`): no rhythm, every tick without
        actuals counts.

    Examples
    --------
    A stream silent at weekends, on daily ticks from a Monday: once three weeks are known, weekends do not
    count and a Monday holiday after one is one tick, not three.

    >>> silence = Silence(period=7)
    >>> silence.reset(1)
    >>> week = [True] * 5 + [False] * 2
    >>> runs = [int(silence.update(np.array([seen]))[0]) for seen in week * 4 + [False, True]]
    >>> runs[5:7], runs[12:14], runs[19:21], runs[21:28], runs[28:]
    ([1, 2], [1, 2], [1, 2], [0, 0, 0, 0, 0, 0, 0], [1, 0])

    An outage from Wednesday counts the days the stream would have reported; the weekend holds the run where it
    is, and the Monday after counts although the Monday before was a holiday:

    >>> [int(silence.update(np.array([False]))[0]) for _ in range(6)]
    [1, 2, 3, 3, 3, 4]
    """

    def __init__(self, period: int = 1) -> None:
        if isinstance(period, bool) or not isinstance(period, (int, np.integer)) or period < 1:
            raise ValueError(f"period (ticks in one season of the tick clock) must be a whole number >= 1, "
                             f"got {period!r}")
        self.period = int(period)
        self.reset(0)

    @property
    def memory(self) -> int:
        """Ticks of the past the rhythm is read from (three seasons; 0 without a rhythm)."""
        return SEASONS * self.period if 1 < self.period <= MAX_PERIOD else 0

    def reset(self, n_streams: int) -> None:
        # Per stream (the arrays the agent saves): the run; the last ticks' actuals as bits (bit i: i + 1 ticks
        # ago; a tick before the stream's launch counts as one with actuals); whether the stream has launched.
        self.run = np.zeros(n_streams, dtype=np.int64)
        self.recent = np.full(n_streams, -1, dtype=np.int64)  # all bits set: no tick known to be silent
        self.launched = np.zeros(n_streams, dtype=bool)

    def usual(self) -> np.ndarray:
        """Per stream, whether a next tick without actuals would be its rhythm (it would not count)."""
        return usual_silence(self.period, self.recent, self.launched)

    def update(self, observed: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
        """Take one tick: ``observed`` says which streams had actuals; returns the runs (also :attr:`run`).

        A stream has launched with its first actuals, or when ``known`` says so (the agent's streams with a
        model); before that its ticks count as ticks with actuals and its run stays 0.
        """
        seen = np.asarray(observed, dtype=bool)
        if known is not None:
            self.launched |= np.asarray(known, dtype=bool)
        self.launched |= seen
        usual = self.usual()
        self.run = np.where(seen | ~self.launched, 0, np.where(usual, self.run, self.run + 1))
        # Shift in this tick's bit; the bits beyond the kept past drop off the top.
        self.recent = (self.recent << 1) | (seen | ~self.launched).astype(np.int64)
        return self.run


def usual_silence(period: int, recent: np.ndarray, launched: np.ndarray) -> np.ndarray:
    """Per stream, whether no actuals in the coming tick would be its rhythm, from :class:`Silence`'s arrays
    after the tick before (also as saved in the live agent's state: the hold of a tick without data reads them).

    >>> weekdays = np.int64(int("0011111" * 3, 2))  # three weeks, newest tick in bit 0: Mon-Fri reported
    >>> usual_silence(7, np.array([weekdays, -1]), np.array([True, True])).tolist()  # a Saturday is next
    [True, False]
    """
    p = int(period)
    recent = np.asarray(recent, dtype=np.int64)
    if not 1 < p <= MAX_PERIOD:
        return np.zeros(len(recent), dtype=bool)
    usual = np.asarray(launched, dtype=bool).copy()
    mask = (1 << p) - 1
    for i in range(SEASONS):  # each season back: silent at this place, and some actuals in it
        season = (recent >> (i * p)) & mask
        usual &= ((season >> (p - 1)) & 1 == 0) & (season != 0)
    return usual
