"""Fleet-wide multiplicity control: which of this tick's per-stream p-values are discoveries?

Testing 100,000 streams at 5 % each flags 5,000 healthy streams every tick. Controlling the false
discovery rate (the expected share of false alarms among the streams flagged) instead keeps the engineer's
queue and the re-training budget for real degradations:

* ``"bh"``: Benjamini & Hochberg (1995) [1]_, FDR control for independent or positively dependent
  p-values (Benjamini & Yekutieli 2001 [2]_ show it holds under positive regression dependence, the kind
  a shared event across streams creates). Under the global null (no stream degraded) it also controls the
  probability of any false alarm at ``alpha``.
* ``"by"``: Benjamini & Yekutieli (2001) [2]_, valid under any dependence, at the price of dividing
  ``alpha`` by about ``log(n_tests) + 0.58``.
* ``"bonferroni"``: family-wise error control, the most conservative.
* ``"none"``: each stream at level ``alpha`` on its own.

NaN p-values (streams not tested this tick) are never rejected and do not count among the tests.

References
----------
.. [1] Benjamini, Y., & Hochberg, Y. (1995). Controlling the false discovery rate: a practical and powerful
   approach to multiple testing. Journal of the Royal Statistical Society B, 57(1), 289-300.
.. [2] Benjamini, Y., & Yekutieli, D. (2001). The control of the false discovery rate in multiple testing
   under dependency. The Annals of Statistics, 29(4), 1165-1188.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["FDRResult", "fdr_control", "METHODS"]

METHODS = ("bh", "by", "bonferroni", "none")


class FDRResult(NamedTuple):
    """``reject``: boolean mask of discoveries; ``adjusted``: adjusted p-values (q-values for BH/BY),
    NaN where the input was NaN. ``reject == (adjusted <= alpha)``."""

    reject: np.ndarray
    adjusted: np.ndarray


def fdr_control(p_values: np.ndarray, alpha: float = 0.05, method: str = "bh") -> FDRResult:
    """Decide which streams are discoveries, controlling the false discovery rate across the fleet.

    Parameters
    ----------
    p_values
        1-D array of per-stream p-values, NaN for streams not tested.
    alpha
        The target FDR (``"bh"``, ``"by"``), family-wise error (``"bonferroni"``) or per-test level
        (``"none"``).
    method
        ``"bh"``, ``"by"``, ``"bonferroni"`` or ``"none"``.

    Returns
    -------
    FDRResult
        ``(reject, adjusted)``; unpack it or use the attributes.

    Examples
    --------
    >>> p = np.array([0.001, 0.04, np.nan, 0.03, 0.5])
    >>> reject, q = fdr_control(p, alpha=0.05)
    >>> reject
    array([ True, False, False, False, False])
    >>> q
    array([0.004     , 0.05333333,        nan, 0.05333333, 0.5       ])
    >>> fdr_control(p, alpha=0.05, method="none").reject
    array([ True,  True, False,  True, False])
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be a 1-D array (one p-value per stream), got shape {p.shape}")
    tested = ~np.isnan(p)
    if np.any((p[tested] < 0) | (p[tested] > 1)):
        raise ValueError("p_values must lie in [0, 1] (or be NaN for untested streams)")

    adjusted = np.full(p.shape, np.nan)
    values = p[tested]
    n_tests = values.size
    if n_tests:
        if method == "none":
            adj = values
        elif method == "bonferroni":
            adj = np.minimum(values * n_tests, 1.0)
        else:
            order = np.argsort(values, kind="stable")
            ranked = values[order] * n_tests / np.arange(1, n_tests + 1)
            if method == "by":
                ranked *= np.sum(1.0 / np.arange(1, n_tests + 1))
            # Step-up: each q-value is the smallest adjusted value at its rank or above.
            ranked = np.minimum.accumulate(ranked[::-1])[::-1]
            adj = np.empty(n_tests)
            adj[order] = np.minimum(ranked, 1.0)
        adjusted[tested] = adj
    reject = np.zeros(p.shape, dtype=bool)
    reject[tested] = adjusted[tested] <= alpha
    return FDRResult(reject, adjusted)
