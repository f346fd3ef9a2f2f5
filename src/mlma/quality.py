"""Data-quality checks on one tick's actuals for the whole fleet.

A re-training on broken data makes a model worse, so the agent looks at each stream's new actuals before it
lets their losses trigger anything. A batch is *suspect* when, compared with what the stream normally
reports (its recent typical values, kept by the caller):

- **missing**: fewer than ``min_coverage`` of the timestamps the stream normally reports arrived;
- **sudden zeros**: all arrived values are zero while the stream's recent typical level is clearly positive;
- **flat line**: the values do not change at all across the tick while the stream normally varies.

Each check is a boolean array over streams, so a fleet of 100,000 streams costs a few array passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
                typical_spread: np.ndarray, *, min_coverage: float = 0.5) -> QualityFlags:
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

    Examples
    --------
    >>> actuals = np.array([[0.0, 0.0, 0.0, 0.0], [5.0, np.nan, np.nan, np.nan], [3.0, 3.0, 3.0, 3.0],
    ...                     [4.0, 6.0, 5.0, 7.0]])
    >>> flags = check_batch(actuals, np.full(4, 4.0), np.full(4, 5.0), np.full(4, 1.5))
    >>> flags.zeros.tolist(), flags.missing.tolist(), flags.flat.tolist()
    ([True, False, False, False], [False, True, False, False], [True, False, True, False])
    """
    arrived = np.isfinite(actuals)
    count = arrived.sum(axis=1)
    known_count = np.isfinite(typical_count) & (typical_count > 0)
    missing = known_count & (count > 0) & (count < min_coverage * np.where(known_count, typical_count, 0))
    filled = np.where(arrived, actuals, 0.0)
    all_zero = (count > 0) & (np.abs(filled).sum(axis=1) == 0)
    zeros = all_zero & np.isfinite(typical_level) & (typical_level > 0.5)
    # A flat line needs a few values to be meaningful; NaN-aware max minus min.
    hi = np.where(arrived, actuals, -np.inf).max(axis=1)
    lo = np.where(arrived, actuals, np.inf).min(axis=1)
    flat = (count >= 4) & (hi == lo) & np.isfinite(typical_spread) & (typical_spread > 0)
    return QualityFlags(missing=missing, zeros=zeros, flat=flat)
