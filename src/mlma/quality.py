"""Data-quality checks on one tick's actuals for the whole fleet.

A re-training on broken data makes a model worse, so the agent looks at each stream's new actuals before it
lets their losses trigger anything. A batch is *suspect* when, compared with what the stream normally
reports (its recent typical values, kept by the caller):

- **missing**: fewer than ``min_coverage`` of the timestamps the stream normally reports arrived;
- **sudden zeros**: all arrived values are zero, where counts at the stream's typical level would almost never
  give a tick of zeros;
- **flat line**: the values do not change at all across the tick, at a value other than zero (a tick of
  zeros is judged by the rule above), where the stream normally varies and counts at its typical level would
  almost never repeat one value that often.

"Almost never" is measured against Poisson counts at the typical level (per value): a tick is suspect when
such counts would give it with a chance of at most ``max_chance``. Intermittent demand (a product that sells
a few units a week) has weeks without a sale and runs of equal values as its normal, and those are not
suspect; an hourly zone with five orders an hour that reports a day of zeros is. For data that are not
counts the rule is conservative only for values below about 20 (whose Poisson spread is wide); larger levels
are flagged after a few equal values.

Each check is a boolean array over streams, so a fleet of 100,000 streams costs a few array passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass
class QualityFlags:
    missing: np.ndarray
    zeros: np.ndarray
    flat: np.ndarray

    @property
    def any(self) -> np.ndarray:
        return self.missing | self.zeros | self.flat

    def describe(self, s: int) -> str:
        parts = [name.replace("_", " ") for name in ("missing", "zeros", "flat") if getattr(self, name)[s]]
        return ", ".join(parts)


def check_batch(actuals: np.ndarray, typical_count: np.ndarray, typical_level: np.ndarray,
                typical_spread: np.ndarray, *, min_coverage: float = 0.5, max_chance: float = 1e-6) -> QualityFlags:
    """Flag streams whose tick of actuals looks broken.

    Parameters
    ----------
    actuals
        ``(n_streams, steps)`` with NaN where nothing arrived.
    typical_count
        How many values each stream normally reports per tick (NaN when unknown).
    typical_level
        Each stream's normal mean level (NaN when unknown).
    typical_spread
        Each stream's normal within-tick standard deviation (NaN when unknown).
    min_coverage
        A tick with fewer than this share of the stream's typical number of values is *missing*.
    max_chance
        Zeros or a flat line are suspect only when Poisson counts at the typical level would produce them with
        at most this chance.

    Examples
    --------
    >>> actuals = np.array([[0.0, 0.0, 0.0, 0.0], [5.0, np.nan, np.nan, np.nan], [3.0, 3.0, 3.0, 3.0],
    ...                     [4.0, 6.0, 5.0, 7.0]])
    >>> flags = check_batch(actuals, np.full(4, 4.0), np.full(4, 5.0), np.full(4, 1.5))
    >>> flags.zeros.tolist(), flags.missing.tolist(), flags.flat.tolist()
    ([True, False, False, False], [False, True, False, False], [False, False, False, False])

    Four zeros are implausible at a level of 5, four equal values not yet; a day of hourly values is:

    >>> day = np.vstack([np.zeros(24), np.full(24, 3.0)])
    >>> flags = check_batch(day, np.full(2, 24.0), np.full(2, 5.0), np.full(2, 1.5))
    >>> flags.zeros.tolist(), flags.flat.tolist()
    ([True, False], [False, True])

    An intermittent product (0.3 sales a day) with a week without sales, or with one sale each day, is fine:

    >>> week = np.vstack([np.zeros(7), np.ones(7)])
    >>> check_batch(week, np.full(2, 7.0), np.full(2, 0.3), np.full(2, 0.5)).any.tolist()
    [False, False]
    """
    arrived = np.isfinite(actuals)
    count = arrived.sum(axis=1)
    known_count = np.isfinite(typical_count) & (typical_count > 0)
    missing = known_count & (count > 0) & (count < min_coverage * np.where(known_count, typical_count, 0))
    filled = np.where(arrived, actuals, 0.0)
    all_zero = (count > 0) & (np.abs(filled).sum(axis=1) == 0)
    level = np.where(np.isfinite(typical_level), np.abs(typical_level), 0.0)
    log_max_chance = np.log(max_chance)
    # log P(all `count` Poisson(level) values are 0) = -level x count.
    zeros = all_zero & (-level * count <= log_max_chance)
    # A flat line needs a few values to be meaningful; NaN-aware max minus min. The likeliest single value of
    # Poisson(level) bounds the chance of any run of equal values.
    hi = np.where(arrived, actuals, -np.inf).max(axis=1)
    lo = np.where(arrived, actuals, np.inf).min(axis=1)
    log_mode = stats.poisson.logpmf(np.floor(level), level)
    flat = ((count >= 4) & (hi == lo) & (hi != 0) & np.isfinite(typical_spread) & (typical_spread > 0)
            & (log_mode * count <= log_max_chance))
    return QualityFlags(missing=missing, zeros=zeros, flat=flat)
