"""The challenger check: may a re-trained model replace the serving one?

Both models forecast the same recent data that neither was fitted on; each stream then has a row of paired
losses ``challenger[t]``, ``champion[t]``. Per stream, the test is a Diebold-Mariano-type test [1]_ of the
loss differential

    d[t] = challenger[t] - (1 + margin) * champion[t],

with null and alternative

    H0: E[challenger loss] >= (1 + margin) * E[champion loss]   (the challenger is worse by more than the
                                                                  margin: keep the champion)
    H1: E[challenger loss] <  (1 + margin) * E[champion loss]   (promote).

The burden of proof is on the challenger: a challenger is promoted only when the data show it is not worse
than the champion by more than ``margin``, so a re-training that broke something is not promoted by chance.

The margin
----------
``margin`` is relative to the champion's mean loss:

* ``margin=0``: promote only when the challenger is shown to be *better* (superiority). Two equally good
  models are promoted in at most ``alpha`` of the checks.
* ``margin=0.05``: promote when the challenger is shown to be at most 5 % worse (non-inferiority). Use it
  when a re-trained model has value of its own (fresher data, a newer recipe) and you accept a small loss.
* ``margin=-0.05``: promote only when the challenger is shown to be at least 5 % better.

Autocorrelation
---------------
Loss differentials of hourly forecasts are autocorrelated, and a tick brings only about 24 of them. The
classical Diebold-Mariano test with a Newey-West variance [2]_ and the Harvey-Leybourne-Newbold correction
[3]_ then promotes equal models far more often than ``alpha`` (12 % instead of 5 % for AR(1) errors with
coefficient 0.8; see ``docs/statistics.md``). The long-run variance is therefore estimated with the
equal-weighted cosine (EWC) estimator from ``nu`` low-frequency cosine projections of the differential, and
the statistic is compared with Student's t with ``nu`` degrees of freedom, which is exact for Gaussian
differentials and robust to autocorrelation under fixed-smoothing asymptotics (Lazarus, Lewis, Stock &
Watson 2018 [4]_; for the Diebold-Mariano test in small samples: Coroneo & Iacone 2020 [5]_). The default
``nu = floor(0.4 * n ** (2/3))`` (3 for 24 pairs) is the rule recommended in [4]_.

References
----------
.. [1] Diebold, F. X., & Mariano, R. S. (1995). Comparing predictive accuracy. Journal of Business &
   Economic Statistics, 13(3), 253-263.
.. [2] Newey, W. K., & West, K. D. (1987). A simple, positive semi-definite, heteroskedasticity and
   autocorrelation consistent covariance matrix. Econometrica, 55(3), 703-708.
.. [3] Harvey, D., Leybourne, S., & Newbold, P. (1997). Testing the equality of prediction mean squared
   errors. International Journal of Forecasting, 13(2), 281-291.
.. [4] Lazarus, E., Lewis, D. J., Stock, J. H., & Watson, M. W. (2018). HAR inference: recommendations for
   practice. Journal of Business & Economic Statistics, 36(4), 541-559.
.. [5] Coroneo, L., & Iacone, F. (2020). Comparing predictive accuracy in small samples using
   fixed-smoothing asymptotics. Journal of Applied Econometrics, 35(4), 391-409.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import special

__all__ = ["ChallengerResult", "paired_noninferiority_test", "default_cosines"]


@dataclass(frozen=True)
class ChallengerResult:
    """Per-stream outcome of :func:`paired_noninferiority_test`; every field is an array.

    Attributes
    ----------
    statistic
        The t statistic of the mean differential; negative values favour the challenger. NaN where not
        testable.
    p_value
        One-sided p-value of H0 "the challenger is worse by more than the margin"; NaN where not testable.
    challenger_mean, champion_mean
        Mean losses over the pairs where both are finite.
    ratio
        ``challenger_mean / champion_mean``.
    n_pairs
        Number of pairs where both losses are finite.
    df
        Degrees of freedom (the number of cosine terms).
    testable
        Whether the stream had at least ``min_pairs`` pairs.
    promote
        ``testable & (p_value <= alpha)``: the challenger may replace the champion.
    """

    __test__: ClassVar[bool] = False

    statistic: np.ndarray
    p_value: np.ndarray
    challenger_mean: np.ndarray
    champion_mean: np.ndarray
    ratio: np.ndarray
    n_pairs: np.ndarray
    df: np.ndarray
    testable: np.ndarray
    promote: np.ndarray


def default_cosines(n_pairs: int) -> int:
    """The number of cosine terms for ``n_pairs`` differentials: ``floor(0.4 * n ** (2/3))``, at least 1.

    >>> default_cosines(24), default_cosines(168)
    (3, 12)
    """
    return max(1, int(np.floor(0.4 * n_pairs ** (2.0 / 3.0))))


def paired_noninferiority_test(
    challenger_losses: np.ndarray,
    champion_losses: np.ndarray,
    *,
    margin: float = 0.0,
    alpha: float = 0.05,
    n_cosines: int | None = None,
    min_pairs: int = 4,
) -> ChallengerResult:
    """Per stream: is the challenger not worse than the champion by more than ``margin``?

    Parameters
    ----------
    challenger_losses, champion_losses
        ``(n_streams, n_values)`` losses of the two models on the same timestamps (aligned columns, in
        time order), NaN where there is no value. Only pairs where both are finite are used. A 1-D array is
        one stream.
    margin
        Relative non-inferiority margin on the mean loss (see the module docstring); must be > -1.
    alpha
        Significance level of the promotion decision.
    n_cosines
        Number of cosine terms of the EWC long-run variance (the test's degrees of freedom). Default:
        :func:`default_cosines` of each stream's number of pairs. Fewer terms: more robust to
        autocorrelation, less power.
    min_pairs
        Streams with fewer pairs are not tested and not promoted.

    Returns
    -------
    ChallengerResult

    Examples
    --------
    A challenger with errors 40 % smaller than the champion's on one day of hourly data:

    >>> rng = np.random.default_rng(1)
    >>> champion = np.abs(rng.normal(size=(2, 24)))
    >>> challenger = np.vstack([0.6 * champion[0], champion[1]])   # better, identical
    >>> result = paired_noninferiority_test(challenger, champion, margin=0.0)
    >>> result.promote
    array([ True, False])
    >>> np.round(result.ratio, 2)
    array([0.6, 1. ])
    """
    ch = _as_matrix(challenger_losses, "challenger_losses")
    champ = _as_matrix(champion_losses, "champion_losses")
    if ch.shape != champ.shape:
        raise ValueError(f"challenger_losses has shape {ch.shape} but champion_losses has shape {champ.shape};"
                         " they must be paired (aligned) arrays of the same shape")
    if not np.isfinite(margin) or margin <= -1:
        raise ValueError(f"margin must be a finite number > -1 (a relative margin, e.g. 0.05), got {margin!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if n_cosines is not None and (not isinstance(n_cosines, (int, np.integer)) or n_cosines < 1):
        raise ValueError(f"n_cosines must be a whole number >= 1 or None, got {n_cosines!r}")
    if not isinstance(min_pairs, (int, np.integer)) or min_pairs < 2:
        raise ValueError(f"min_pairs must be a whole number >= 2, got {min_pairs!r}")

    paired = np.isfinite(ch) & np.isfinite(champ)
    n_pairs = paired.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        challenger_mean = np.where(n_pairs > 0, np.where(paired, ch, 0.0).sum(axis=1) / n_pairs, np.nan)
        champion_mean = np.where(n_pairs > 0, np.where(paired, champ, 0.0).sum(axis=1) / n_pairs, np.nan)
        ratio = challenger_mean / champion_mean
    diff = np.where(paired, ch - (1.0 + margin) * champ, np.nan)
    if not paired.all():
        # Close the gaps: the cosine basis needs each stream's differentials consecutive.
        order = np.argsort(~paired, axis=1, kind="stable")
        diff = np.take_along_axis(diff, order, axis=1)

    n_streams = ch.shape[0]
    statistic = np.full(n_streams, np.nan)
    p_value = np.full(n_streams, np.nan)
    df = np.full(n_streams, np.nan)
    testable = n_pairs >= max(min_pairs, 2)
    for n in np.unique(n_pairs[testable]):
        rows = np.flatnonzero(n_pairs == n)
        nu = default_cosines(int(n)) if n_cosines is None else min(int(n_cosines), int(n) - 1)
        t, p = _ewc_test(diff[rows, :n], nu)
        statistic[rows], p_value[rows], df[rows] = t, p, nu
    promote = testable & (p_value <= alpha)
    return ChallengerResult(statistic, p_value, challenger_mean, champion_mean, ratio, n_pairs, df,
                            testable, promote)


def _ewc_test(d: np.ndarray, nu: int) -> tuple[np.ndarray, np.ndarray]:
    """t statistic and lower-tail p-value of the mean of each row of ``d`` with the EWC variance."""
    n = d.shape[1]
    mean = d.mean(axis=1)
    centred = d - mean[:, None]
    times = np.arange(n) + 0.5
    basis = np.sqrt(2.0 / n) * np.cos(np.pi * np.outer(times, np.arange(1, nu + 1)) / n)
    long_run_variance = np.mean((centred @ basis) ** 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        statistic = np.sqrt(n) * mean / np.sqrt(long_run_variance)
    # A differential with no variation at all: the sign of its mean decides (constant better or not).
    scale = np.mean(np.abs(d), axis=1)
    flat = long_run_variance <= 1e-24 * np.maximum(scale * scale, 1e-300)
    statistic = np.where(flat, np.where(mean < 0, -np.inf, np.where(mean > 0, np.inf, 0.0)), statistic)
    p_value = special.stdtr(nu, statistic)
    p_value = np.where(flat & (mean == 0), 1.0, p_value)
    return statistic, p_value


def _as_matrix(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_streams, n_values), got shape {array.shape}")
    if np.isinf(array).any():
        raise ValueError(f"{name} has infinite losses; use NaN for 'no value'")
    return array
