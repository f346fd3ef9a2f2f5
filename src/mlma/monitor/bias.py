"""The bias test: did a stream's mean signed error move away from its reference?

Absolute losses hide a level drop on count data: when a zone's orders fall, their noise falls too, so the
absolute error of a model that now over-forecasts may not rise at all. Its signed error (actual minus
forecast) does move, and in either direction. Per stream, each tick's mean signed error is one block (the
method of batch means, as in the degradation test: the autocorrelation inside a tick and the daily pattern
are averaged in); the newest ``w`` blocks are compared with the ``m`` reference blocks by a two-sided
two-sample t statistic with the reference's block variance and ``m - 1`` degrees of freedom (a prediction
interval for a new block). The mean of the ``w`` newest blocks is treated as one block, not ``w`` independent
ones: consecutive ticks' errors persist (weather, a promotion) and the narrower interval over-rejected when
they did (8 % instead of 5 % for hourly AR(1) 0.95 errors). Fully vectorised over the fleet.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def bias_shift_test(current: np.ndarray, reference: np.ndarray, *, margin=0.0, min_reference: int = 4) -> np.ndarray:
    """Two-sided p-values, per row, for "the mean of ``current`` blocks is within ``margin`` of the reference
    blocks' mean" (``margin`` 0: equals it).

    Parameters
    ----------
    current
        ``(n, w)`` per-tick mean signed errors of the newest ticks, NaN where a tick had none.
    reference
        ``(n, m)`` per-tick mean signed errors of the reference ticks, NaN-padded.
    margin
        Relevance margin (scalar or per row, in the errors' units): shifts up to it are no reason to act. The
        p-value is that of the boundary ``|shift| = margin``, conservative inside it.
    min_reference
        Rows with fewer finite reference blocks (or no current block, or a reference without spread) get
        NaN: not tested.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(0, 1, (2, 14))
    >>> p = bias_shift_test(np.array([[0.1, -0.2, 0.0], [6.0, 5.5, 6.5]]), ref)
    >>> bool(p[0] > 0.5), bool(p[1] < 0.001)
    (True, True)
    """
    cur = np.asarray(current, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    c_ok, r_ok = np.isfinite(cur), np.isfinite(ref)
    w, m = c_ok.sum(axis=1), r_ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c_mean = np.where(c_ok, cur, 0.0).sum(axis=1) / w
        r_mean = np.where(r_ok, ref, 0.0).sum(axis=1) / m
        r_var = np.where(r_ok, (ref - r_mean[:, None]) ** 2, 0.0).sum(axis=1) / (m - 1)
        # The newest blocks are consecutive ticks, whose errors may persist from one to the next: their
        # mean is treated as one block (no 1/w), which stays calibrated when the errors persist for days.
        excess = np.maximum(np.abs(c_mean - r_mean) - np.asarray(margin, dtype=np.float64), 0.0)
        t = excess / np.sqrt(r_var * (1.0 + 1.0 / m))
        p = np.minimum(1.0, 2.0 * special.stdtr(np.maximum(m - 1, 1), -t))
    testable = (w > 0) & (m >= max(min_reference, 2)) & (r_var > 0) & np.isfinite(t)
    return np.where(testable, p, np.nan)
