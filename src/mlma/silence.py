"""How long each stream has been silent beyond what its own rhythm explains.

A stream without actuals for a few ticks in a row is escalated as ``silent`` and gets no forecasts until data
returns (:class:`mlma.agent.AgentSettings` ``silence_ticks``, :class:`mlma.mlma_policy.MLMAPolicy`
``silent_ticks``). Many real streams are silent on a rhythm: a bank's call centre or a shop closed at weekends
reports nothing on Saturday and Sunday, every week. Counted plainly, a long weekend (a Monday holiday) is three
ticks in a row without actuals: the stream was escalated and its Tuesday went without a forecast. Here a tick
without actuals counts only when the stream had actuals at the same place one season of ticks earlier (a week of
daily ticks, :func:`mlma.calendar.season_length` of the tick) or two seasons earlier; a tick the stream was
silent at in both of the last two seasons is its rhythm, and neither counts nor ends the run. (One season would
let a single holiday make the same day of the next week look usual.) A stream silent for two whole seasons (an
outage) is past the limit long before, and stays there until data returns.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Silence"]

#: The longest season in ticks whose rhythm is kept: two seasons of bits in one integer per stream.
MAX_PERIOD = 31


class Silence:
    """Per stream, the ticks without actuals since its last actuals that its rhythm does not explain.

    Parameters
    ----------
    period
        Ticks in one season of the tick clock (7 for daily ticks): a tick without actuals is the stream's
        rhythm when it had none ``period`` and ``2 * period`` ticks earlier either. 1 (or more than
        :data:`MAX_PERIOD`): no rhythm, every tick without actuals counts.

    Examples
    --------
    A stream silent at weekends, on daily ticks from a Monday: weekends do not count; a Monday holiday after
    one is one tick, not three.

    >>> silence = Silence(period=7)
    >>> silence.reset(1)
    >>> week = [True] * 5 + [False] * 2
    >>> runs = [int(silence.update(np.array([seen]))[0]) for seen in week * 3 + [False, True]]
    >>> runs[:7], runs[7:14], runs[14:21], runs[21:]
    ([0, 0, 0, 0, 0, 1, 2], [0, 0, 0, 0, 0, 1, 2], [0, 0, 0, 0, 0, 0, 0], [1, 0])

    The first two weekends count (the rhythm is not known yet). An outage from Wednesday counts the days the
    stream would have reported; the weekend holds the run where it is, and the Monday after counts although
    the Monday before was a holiday:

    >>> [int(silence.update(np.array([False]))[0]) for _ in range(6)]
    [1, 2, 3, 3, 3, 4]
    """

    #: Per-stream arrays to save and restore: the run, and the last ticks' actuals as bits (bit i: i + 1 ticks
    #: ago; a tick before the stream's first counts as one with actuals).
    STATE = ("run", "recent")

    def __init__(self, period: int = 1) -> None:
        if isinstance(period, bool) or not isinstance(period, (int, np.integer)) or period < 1:
            raise ValueError(f"period (ticks in one season of the tick clock) must be a whole number >= 1, "
                             f"got {period!r}")
        self.period = int(period)
        self.reset(0)

    def reset(self, n_streams: int) -> None:
        self.run = np.zeros(n_streams, dtype=np.int64)
        self.recent = np.full(n_streams, -1, dtype=np.int64)  # all bits set: no tick known to be silent

    def update(self, observed: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
        """Take one tick: ``observed`` says which streams had actuals; returns the runs (also :attr:`run`).

        ``known``: the streams whose silence means something this tick (default: all); for the others (not
        launched yet) the tick counts as one with actuals, so that the days before a launch are no rhythm.
        """
        seen = np.asarray(observed, dtype=bool)
        if known is not None:
            seen = seen | ~np.asarray(known, dtype=bool)
        if 1 < self.period <= MAX_PERIOD:
            # Silent one season ago and two seasons ago.
            rhythm = ((self.recent >> (self.period - 1)) | (self.recent >> (2 * self.period - 1))) & 1 == 0
        else:
            rhythm = np.zeros(len(seen), dtype=bool)
        self.run = np.where(seen, 0, np.where(rhythm, self.run, self.run + 1))
        # Shift in this tick's bit; the bits beyond the kept past drop off the top.
        self.recent = (self.recent << 1) | seen.astype(np.int64)
        return self.run
