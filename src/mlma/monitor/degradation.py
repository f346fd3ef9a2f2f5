"""The degradation test: is a stream's new loss batch relevantly worse than its reference losses?

One call tests every stream of the fleet at once. Each stream brings a *current* loss batch (the losses
scored in this tick) and a *reference* (the stream's losses from a period it was known to be good). The
null hypothesis, per stream, is

    H0: E[current loss] <= (1 + delta) * E[reference loss]      against      H1: it is larger,

so ``delta`` is a relevance margin: a 5 % rise with ``delta=0.1`` is no reason to re-train.

Why not a z-test
----------------
Forecast losses are skewed, heavy-tailed and autocorrelated, and a tick brings only a few of them. A z-test
of 24 current absolute losses against 168 reference losses with a Newey-West variance [1]_ rejects a true
"no change" in 7-18 % of streams instead of 5 % (see ``docs/statistics.md``): the mean of 24 skewed values
has a long upper tail, which is the very tail a one-sided test and Benjamini-Hochberg rely on, and five lags
do not capture the dependence of losses whose errors persist for hours.

The method
----------
1. **Blocks.** The reference is cut into consecutive blocks of ``block_length`` values (a day of hourly
   data), so that each block is a sample of "one batch's mean loss" with the autocorrelation inside the
   block and the daily seasonality of losses both averaged in, as in the method of batch means
   (Schmeiser 1982 [4]_; Meketon & Schmeiser 1984 [5]_). The current batch is a block of the same kind.
2. **Phase matching.** Each reference block is averaged over the same positions inside the block (hours of
   the day) that the current batch has values for, so a batch missing its night hours is compared with the
   reference days without their night hours. Blocks covering less than ``min_coverage`` of those positions
   are left out.
3. **Transform.** Block means are divided by the reference mean (the test is scale-free) and transformed
   with a Box-Cox power ``g(x) = ((x + offset)**power - 1) / power`` (the logarithm for ``power=0``) [6]_.
   The default power -1/2 compresses the long upper tail of a batch mean more than the logarithm does;
   it is the mildest power that kept the test calibrated for every loss distribution in our simulations,
   including squared t(4) errors, whose losses have no finite variance.
4. **Prediction t-test.** Is the current block unusual among the reference blocks? With ``k`` reference
   blocks and ``k_c`` current blocks (``k_c = 1`` for one tick) the statistic is the two-sample t
   statistic of the transformed block means, pooled variance and ``k + k_c - 2`` degrees of freedom. For
   one current block this is the classical prediction interval for a new observation: the factor
   ``1/k_c + 1/k`` accounts for the reference mean's own estimation error, and Student's t with honest
   degrees of freedom for the estimation error of the variance (cf. the small-sample correction of
   Harvey, Leybourne & Newbold 1997 [3]_). The margin enters by dividing the current block means by
   ``1 + delta`` before the transform, which makes the test exact at the boundary of H0 for a change of
   loss level.
5. **Moderated variance across the fleet** (``moderate=True``, the default, with at least
   ``min_moderation_streams`` testable streams in the call). A week gives a stream only 6 degrees of
   freedom for its variance, and the t tail on 6 df is what keeps p-values too large for
   Benjamini-Hochberg. Because the transformed block means are in units of each stream's own reference
   mean, their variances are comparable across streams, so each stream's variance ``s2`` (on ``d`` df) is
   shrunk towards a prior fitted to all streams of the call, as in limma's moderated t (Smyth 2004
   [7]_): the variance becomes ``(d0 s0**2 + d s2) / (d0 + d)`` and the t distribution has ``d + d0``
   degrees of freedom. The prior ``(d0, s0**2)`` is fitted by matching the Winsorized mean and variance
   of the log variances to those of the scaled F distribution the model implies (Phipson et al. 2016
   [8]_), so that a minority of streams with outlying variances does not remove the prior for everyone;
   see :func:`fit_variance_prior`. A fleet of alike streams gets a large ``d0`` (tens to hundreds of df);
   a very mixed one a small ``d0`` and little shrinkage. The prior is the fleet's: the fleet as a whole
   stays calibrated, but a stream much noisier than most is flagged somewhat more often than ``alpha``
   and a much quieter one less often.

Calibration, power and speed are measured in ``tests/test_calibration.py`` and
``tests/test_moderation.py`` and tabulated in ``docs/statistics.md``.

References
----------
.. [1] Newey, W. K., & West, K. D. (1987). A simple, positive semi-definite, heteroskedasticity and
   autocorrelation consistent covariance matrix. Econometrica, 55(3), 703-708.
.. [2] Andrews, D. W. K. (1991). Heteroskedasticity and autocorrelation consistent covariance matrix
   estimation. Econometrica, 59(3), 817-858.
.. [3] Harvey, D., Leybourne, S., & Newbold, P. (1997). Testing the equality of prediction mean squared
   errors. International Journal of Forecasting, 13(2), 281-291.
.. [4] Schmeiser, B. (1982). Batch size effects in the analysis of simulation output. Operations
   Research, 30(3), 556-568.
.. [5] Meketon, M. S., & Schmeiser, B. (1984). Overlapping batch means: something for nothing?
   Proceedings of the 1984 Winter Simulation Conference, 227-230.
.. [6] Box, G. E. P., & Cox, D. R. (1964). An analysis of transformations. Journal of the Royal
   Statistical Society B, 26(2), 211-252.
.. [7] Smyth, G. K. (2004). Linear models and empirical Bayes methods for assessing differential
   expression in microarray experiments. Statistical Applications in Genetics and Molecular Biology,
   3(1), Article 3.
.. [8] Phipson, B., Lee, S., Majewski, I. J., Alexander, W. S., & Smyth, G. K. (2016). Robust
   hyperparameter estimation protects against hypervariable genes and improves power to detect
   differential expression. Annals of Applied Statistics, 10(2), 946-963.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

import numpy as np
from scipy import optimize, special

__all__ = ["DegradationResult", "TestResult", "TestStatus", "degradation_test", "fit_variance_prior"]

#: Fewest testable streams in one call for the fleet-level variance prior to be used (else the plain test).
MIN_MODERATION_STREAMS = 20


class TestStatus(IntEnum):
    """Why a stream was or was not tested (``DegradationResult.status``)."""

    __test__ = False  # not a pytest test class

    TESTED = 0
    #: fewer than ``min_current`` current values (or none at all)
    NO_CURRENT = 1
    #: fewer than ``min_reference_blocks`` usable reference blocks
    SHORT_REFERENCE = 2
    #: the reference losses are all zero, or all reference blocks have the same mean: no scale to judge by
    DEGENERATE_REFERENCE = 3


@dataclass(frozen=True)
class DegradationResult:
    """Per-stream outcome of :func:`degradation_test`; every field is an array of length ``n_streams``.

    Attributes
    ----------
    statistic
        The t statistic (NaN where not testable). Large means "worse than the reference allows".
    p_value
        One-sided p-value of H0 ``E[current] <= (1 + delta) E[reference]``; NaN where not testable.
    effect
        Ratio of the current mean loss to the reference mean loss over the same positions in the block
        (hours of the day); ``inf`` where the reference mean is zero and the current one is not.
    current_mean, reference_mean
        The two means the effect is the ratio of.
    n_current, n_reference
        Number of finite losses in the current batch and in the reference.
    n_reference_blocks
        Number of reference blocks that entered the test.
    df
        The stream's own degrees of freedom, ``k + k_c - 2``. Without moderation they are those of the t
        reference distribution; with it the reference distribution has ``df + prior_df`` (the convention
        of limma: residual and prior degrees of freedom are reported apart).
    prior_df
        Degrees of freedom of the fleet's variance prior that the stream's variance was shrunk towards
        (``d0`` of Smyth 2004); ``0`` where the variance was not moderated, NaN where not testable.
    prior_variance
        The fleet's prior variance of transformed block means (``s0**2``); NaN where not moderated.
    testable
        Whether the stream had enough data to be tested (``status == TESTED``).
    status
        A :class:`TestStatus` code per stream.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    statistic: np.ndarray
    p_value: np.ndarray
    effect: np.ndarray
    current_mean: np.ndarray
    reference_mean: np.ndarray
    n_current: np.ndarray
    n_reference: np.ndarray
    n_reference_blocks: np.ndarray
    df: np.ndarray
    testable: np.ndarray
    status: np.ndarray
    prior_df: np.ndarray
    prior_variance: np.ndarray

    def degraded(self, alpha: float = 0.05) -> np.ndarray:
        """Streams whose own p-value is at most ``alpha`` (no multiplicity control; see
        :func:`mlma.monitor.multiplicity.fdr_control` for the fleet-wide decision)."""
        with np.errstate(invalid="ignore"):
            return self.testable & (self.p_value <= alpha)


#: The name the architecture notes use for the result.
TestResult = DegradationResult


def degradation_test(
    current: np.ndarray,
    reference: np.ndarray,
    *,
    delta: float = 0.1,
    block_length: int | None = None,
    power: float = -0.5,
    offset: float = 0.1,
    min_current: int = 1,
    min_reference_blocks: int = 4,
    min_coverage: float = 0.75,
    moderate: bool = True,
    min_moderation_streams: int = MIN_MODERATION_STREAMS,
) -> DegradationResult:
    """Test every stream's current loss batch against its reference losses, one-sided, all at once.

    Parameters
    ----------
    current
        ``(n_streams, n_cur)`` non-negative losses of this tick, NaN where there is no value. Column 0 must
        be at the start of a block (e.g. midnight for hourly data and daily blocks), like column 0 of
        ``reference``. A 1-D array is one stream.
    reference
        ``(n_streams, n_ref)`` non-negative reference losses, NaN-padded, oldest first, column 0 at the
        start of a block.
    delta
        Relevance margin: H0 is ``E[current] <= (1 + delta) * E[reference]``. ``0`` tests for any increase.
    block_length
        Values per block: the batch length the reference is cut into. Default: ``current.shape[1]`` (one
        tick). Choose at least the season length (24 for hourly data with a daily pattern, 7 for daily data
        with a weekly one) and long enough that block means are nearly uncorrelated. To test one value of
        daily data against weekly blocks, pass ``current`` as a 7-column row with only that weekday filled.
    power
        Box-Cox power applied to the block means (``0``: logarithm). The default ``-0.5`` is calibrated
        for light- and heavy-tailed losses; ``0`` has slightly more power but over-rejects heavy-tailed
        (e.g. squared) losses.
    offset
        Added to the block means (in units of the reference mean) before the transform, so that blocks of
        zero loss stay finite.
    min_current
        Fewest finite current losses for a stream to be tested.
    min_reference_blocks
        Fewest usable reference blocks for a stream to be tested (the t distribution then has at least
        ``min_reference_blocks - 1`` degrees of freedom).
    min_coverage
        A block (reference or current) enters the test only if it has values at this share of the
        positions the current batch has values at. Lower it for multi-tick current windows of sparse
        data, whose single ticks may each cover only part of the hours the window covers.
    moderate
        Shrink each stream's variance of transformed block means towards a prior fitted to all testable
        streams of this call (empirical Bayes, Smyth 2004; step 5 of the module docstring). More power,
        especially under Benjamini-Hochberg, when the streams are alike; calibrated for the fleet as a
        whole. Pass ``False`` for the plain per-stream test, e.g. when one call mixes streams that are
        known to be very unlike (then rather call the test once per group of alike streams).
    min_moderation_streams
        Fewest testable streams in the call for the moderation to be used; with fewer, the plain test is
        used (a prior fitted to a handful of variances is too uncertain; see ``docs/statistics.md``).

    Returns
    -------
    DegradationResult
        Per-stream arrays: ``statistic``, ``p_value``, ``effect``, ``n_current``, ``n_reference``,
        ``testable`` and more.

    Raises
    ------
    ValueError
        On arrays of the wrong shape, negative or infinite losses, or parameters out of range.

    Notes
    -----
    The method and its references are in the module docstring; its calibration in ``docs/statistics.md``.
    With moderation the p-value of one stream depends on the other streams in the call (through the
    prior), so the same stream can get a slightly different p-value in a different fleet.
    Assumptions: within a stream, losses are stationary apart from a pattern that repeats every block,
    and block means are nearly uncorrelated with each other. With errors that persist much longer than a
    block (AR(1) coefficient 0.95 at hourly resolution) a single-block test stays calibrated, but a current
    window of several blocks over-rejects somewhat (about 7 % at a nominal 5 %).

    Examples
    --------
    Ten days of hourly absolute errors of one stream; the last day's errors are 80 % larger:

    >>> rng = np.random.default_rng(3)
    >>> errors = np.abs(rng.normal(size=(1, 240)))
    >>> reference, current = errors[:, :216], 1.8 * errors[:, 216:]
    >>> result = degradation_test(current, reference, delta=0.1)
    >>> bool(result.testable[0]), round(float(result.effect[0]), 2), round(float(result.p_value[0]), 4)
    (True, 1.7, 0.0031)
    >>> int(result.n_reference_blocks[0]), float(result.df[0])
    (9, 8.0)

    One stream is below ``min_moderation_streams``, so that was the plain test. In a fleet of 200 alike
    streams the variances are moderated: each stream's t distribution gains the prior's degrees of
    freedom. Of 20 streams whose losses are 80 % larger, more reach p < 0.01:

    >>> fleet = np.abs(rng.normal(size=(200, 192)))
    >>> fleet[:20, 168:] *= 1.8
    >>> moderated = degradation_test(fleet[:, 168:], fleet[:, :168])
    >>> plain = degradation_test(fleet[:, 168:], fleet[:, :168], moderate=False)
    >>> float(plain.df[0]), round(float(moderated.prior_df[0]))
    (6.0, 97)
    >>> int((plain.p_value[:20] < 0.01).sum()), int((moderated.p_value[:20] < 0.01).sum())
    (11, 13)

    A stream with too little reference is not tested:

    >>> short = degradation_test(current, reference[:, :48])
    >>> bool(short.testable[0]), TestStatus(int(short.status[0])).name
    (False, 'SHORT_REFERENCE')
    """
    cur = _as_loss_matrix(current, "current")
    ref = _as_loss_matrix(reference, "reference")
    if cur.shape[0] != ref.shape[0]:
        raise ValueError(f"current has {cur.shape[0]} streams (rows) but reference has {ref.shape[0]}")
    b = cur.shape[1] if block_length is None else block_length
    _check_parameters(delta, b, power, offset, min_current, min_reference_blocks, min_coverage)
    _check_moderation(moderate, min_moderation_streams)
    b = int(b)

    cur_blocks = _split_blocks(cur, b)
    ref_blocks = _split_blocks(ref, b)
    # Positions inside the block (hours of the day) the current batch has values at.
    positions = np.isfinite(cur_blocks).any(axis=1).astype(np.float64)
    cur_means = _masked_block_means(cur_blocks, positions, min_coverage)
    ref_means = _masked_block_means(ref_blocks, positions, min_coverage)
    return _test_block_means(
        cur_means, ref_means, np.isfinite(cur).sum(axis=1), np.isfinite(ref).sum(axis=1), delta=delta,
        power=power, offset=offset, min_current=min_current, min_reference_blocks=min_reference_blocks,
        moderate=moderate, min_moderation_streams=min_moderation_streams)


def _test_block_means(cur_means: np.ndarray, ref_means: np.ndarray, n_current: np.ndarray,
                      n_reference: np.ndarray, *, delta: float, power: float, offset: float, min_current: int,
                      min_reference_blocks: int, moderate: bool,
                      min_moderation_streams: int) -> DegradationResult:
    """Steps 3-5 of the method on phase-matched block means (NaN for blocks left out), unvalidated.

    Shared by :func:`degradation_test` and callers that keep block means of their references as the
    blocks arrive (:class:`mlma.mlma_policy.MLMAPolicy`), so that a reference is not re-blocked every call.
    The order of the blocks along axis 1 does not matter.
    """
    k_cur = np.isfinite(cur_means).sum(axis=1)
    k_ref = np.isfinite(ref_means).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        current_mean = _nanmean_rows(cur_means, k_cur)
        reference_mean = _nanmean_rows(ref_means, k_ref)
        effect = current_mean / reference_mean

        unit = np.where(reference_mean > 0, reference_mean, np.nan)[:, None]
        g_ref = _box_cox(ref_means / unit + offset, power)
        g_cur = _box_cox(cur_means / ((1.0 + delta) * unit) + offset, power)
        mean_ref = _nanmean_rows(g_ref, k_ref)
        mean_cur = _nanmean_rows(g_cur, k_cur)
        ref_squares = np.nansum((g_ref - mean_ref[:, None]) ** 2, axis=1)
        cur_squares = np.nansum((g_cur - mean_cur[:, None]) ** 2, axis=1)
        df = (k_ref + k_cur - 2).astype(np.float64)
        variance = (ref_squares + cur_squares) / df

    n_streams = cur_means.shape[0]
    status = np.full(n_streams, TestStatus.TESTED, dtype=np.int8)
    # The transformed means are in units of the reference mean, so this threshold is relative: a spread at
    # rounding level is no spread.
    degenerate = ~(reference_mean > 0) | ~(ref_squares > 1e-20)
    status[degenerate] = TestStatus.DEGENERATE_REFERENCE
    status[k_ref < min_reference_blocks] = TestStatus.SHORT_REFERENCE
    status[(n_current < min_current) | (k_cur < 1)] = TestStatus.NO_CURRENT
    testable = status == TestStatus.TESTED

    prior_df = np.where(testable, 0.0, np.nan)
    prior_variance = np.full(n_streams, np.nan)
    if moderate and testable.sum() >= min_moderation_streams:
        # Empirical Bayes over this call's testable streams: their variances are in units of each stream's
        # own reference mean, so they are comparable, and the fleet knows more about them than one stream.
        d0, s0_squared = fit_variance_prior(variance[testable], df[testable])
        if d0 > 0:
            prior_df[testable] = d0
            prior_variance[testable] = s0_squared
            variance = np.where(testable, (d0 * s0_squared + df * variance) / (d0 + df), variance)
    with np.errstate(invalid="ignore", divide="ignore"):
        statistic = (mean_cur - mean_ref) / np.sqrt(variance * (1.0 / k_cur + 1.0 / k_ref))
    statistic = np.where(testable, statistic, np.nan)
    p_value = np.full(n_streams, np.nan)
    p_value[testable] = special.stdtr(df[testable] + prior_df[testable], -statistic[testable])
    return DegradationResult(
        statistic=statistic,
        p_value=p_value,
        effect=np.where(n_current > 0, effect, np.nan),
        current_mean=current_mean,
        reference_mean=reference_mean,
        n_current=n_current,
        n_reference=n_reference,
        n_reference_blocks=k_ref,
        df=np.where(testable, df, np.nan),
        testable=testable,
        status=status,
        prior_df=prior_df,
        prior_variance=prior_variance,
    )


# -- helpers ------------------------------------------------------------------------------------------------
def _as_loss_matrix(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_streams, n_values), got shape {array.shape}")
    if array.shape[1] == 0:
        raise ValueError(f"{name} has no columns; pass at least one value per stream (NaN for none)")
    if np.isinf(array).any():
        row = int(np.flatnonzero(np.isinf(array).any(axis=1))[0])
        raise ValueError(f"{name} has infinite losses (first in row {row}); use NaN for 'no value'")
    if (array < 0).any():
        row = int(np.flatnonzero((array < 0).any(axis=1))[0])
        raise ValueError(f"{name} has negative losses (first in row {row}); losses must be >= 0")
    return array


def _check_parameters(delta, block_length, power, offset, min_current, min_reference_blocks, min_coverage):
    if not np.isfinite(delta) or delta <= -1:
        raise ValueError(f"delta must be a finite number > -1 (a relative margin, e.g. 0.1), got {delta!r}")
    if not isinstance(block_length, (int, np.integer)) or block_length < 1:
        raise ValueError(f"block_length must be a whole number >= 1, got {block_length!r}")
    if not np.isfinite(power):
        raise ValueError(f"power must be a finite number, got {power!r}")
    if not np.isfinite(offset) or offset < 0 or (power <= 0 and offset == 0):
        raise ValueError(f"offset must be >= 0, and > 0 unless power > 0, got {offset!r}")
    if not isinstance(min_current, (int, np.integer)) or min_current < 1:
        raise ValueError(f"min_current must be a whole number >= 1, got {min_current!r}")
    if not isinstance(min_reference_blocks, (int, np.integer)) or min_reference_blocks < 2:
        raise ValueError(f"min_reference_blocks must be a whole number >= 2, got {min_reference_blocks!r}")
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage!r}")


def _check_moderation(moderate, min_moderation_streams):
    if not isinstance(moderate, (bool, np.bool_)):
        raise ValueError(f"moderate must be True or False, got {moderate!r}")
    if not isinstance(min_moderation_streams, (int, np.integer)) or min_moderation_streams < 3:
        raise ValueError(
            f"min_moderation_streams must be a whole number >= 3, got {min_moderation_streams!r}")


def _split_blocks(x: np.ndarray, block_length: int) -> np.ndarray:
    """``(n, m)`` -> ``(n, ceil(m / b), b)``, NaN-padding the last block."""
    n_rows, n_cols = x.shape
    n_blocks = -(-n_cols // block_length)
    pad = n_blocks * block_length - n_cols
    if pad:
        x = np.concatenate([x, np.full((n_rows, pad), np.nan)], axis=1)
    return x.reshape(n_rows, n_blocks, block_length)


def _masked_block_means(blocks: np.ndarray, positions: np.ndarray, min_coverage: float) -> np.ndarray:
    """Mean of each block over ``positions`` (0/1 weights per position), NaN if too little is covered."""
    valid = np.isfinite(blocks)
    weights = positions[:, :, None]
    # Batched matrix-vector products are the fastest way to take masked sums over the last axis.
    total = np.matmul(np.where(valid, blocks, 0.0), weights)[..., 0]
    covered = np.matmul(valid.astype(np.float64), weights)[..., 0]
    needed = min_coverage * positions.sum(axis=1, keepdims=True)
    usable = (covered > 0) & (covered >= needed - 1e-9)
    return np.where(usable, total / np.where(usable, covered, 1.0), np.nan)


def _nanmean_rows(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    # np.nanmean warns on all-NaN rows; the counts are already known.
    return np.where(counts > 0, np.nansum(x, axis=1) / np.maximum(counts, 1), np.nan)


def _box_cox(x: np.ndarray, power: float) -> np.ndarray:
    if power == 0:
        return np.log(x)
    return (np.power(x, power) - 1.0) / power


# -- the fleet's variance prior ------------------------------------------------------------------------------
def fit_variance_prior(
    variances: np.ndarray,
    df: np.ndarray | float,
    *,
    winsor_tails: tuple[float, float] = (0.05, 0.1),
) -> tuple[float, float]:
    """Estimate the prior degrees of freedom ``d0`` and prior variance ``s0**2`` from many streams' sample
    variances, robustly.

    The model is Smyth's (2004) [7]_: each stream's true variance is drawn from a scaled inverse
    chi-square distribution, ``sigma**2 ~ s0**2 d0 / chi2(d0)``, and its sample variance on ``df``
    degrees of freedom is ``sigma**2 chi2(df) / df``; then ``variance / s0**2`` follows an F distribution
    on ``(df, d0)`` degrees of freedom. Smyth matches the mean and variance of ``log(variance)``; here, as
    in Phipson et al. (2016) [8]_, the log variances are first Winsorized at the given lower and upper
    tail shares and matched with the Winsorized moments of the model, so that a minority of streams with
    outlying variances (a reference that contains a holiday, an outage) does not drag ``d0`` down for the
    whole fleet.

    Parameters
    ----------
    variances
        Positive sample variances, one per stream (non-finite and non-positive ones are ignored).
    df
        Their degrees of freedom (a scalar or one per stream), each > 0.
    winsor_tails
        Shares of the smallest and the largest log variances that are Winsorized, each in (0, 0.5); the
        default is Phipson et al.'s. ``(0, 0)`` gives Smyth's original (non-robust) moment estimator.

    Returns
    -------
    (d0, s0_squared)
        ``d0`` is ``0.0`` when the variances are so dispersed that a prior adds nothing (``s0_squared``
        is then NaN). It is capped at ``2 n / mean(trigamma(df / 2))`` for ``n`` streams: the number of
        degrees of freedom whose variance estimate is as precise as ``s0_squared`` is, so that a
        homogeneous fleet (where the moments give ``d0 = inf``) does not claim more precision than it has.

    Examples
    --------
    Variances of 2,000 streams whose true variances vary like ``1 / chi2(10) * 10``, each estimated on 6
    degrees of freedom:

    >>> rng = np.random.default_rng(0)
    >>> sigma2 = 0.05 * 10 / rng.chisquare(10, 2_000)
    >>> s2 = sigma2 * rng.chisquare(6, 2_000) / 6
    >>> d0, s0_squared = fit_variance_prior(s2, 6)
    >>> round(d0, 1), round(s0_squared, 3)
    (9.5, 0.051)
    """
    s2 = np.asarray(variances, dtype=np.float64).ravel()
    d = np.broadcast_to(np.asarray(df, dtype=np.float64), s2.shape)
    lower, upper = winsor_tails
    if not ((lower == upper == 0) or (0 < lower < 0.5 and 0 < upper < 0.5)):
        raise ValueError(f"winsor_tails must be two shares in (0, 0.5), or (0, 0), got {winsor_tails!r}")
    keep = np.isfinite(s2) & (s2 > 0) & np.isfinite(d) & (d > 0)
    z, d = np.log(s2[keep]), d[keep]
    n = z.size
    if n < 3:
        return 0.0, np.nan
    values, counts = np.unique(d, return_counts=True)
    model = _LogFMoments(values, counts / n, lower, upper)
    if lower > 0:
        z = np.clip(z, *np.quantile(z, [lower, 1.0 - upper]))
    mean, var = z.mean(), z.var(ddof=1)
    # The mean over streams, from the few distinct degrees of freedom.
    max_d0 = 2.0 * n / (float((special.polygamma(1, values / 2.0) * counts).sum()) / n)
    if var <= model.moments(_D0_HIGHEST)[1]:
        d0 = np.inf
    elif var >= model.moments(_D0_LOWEST)[1]:
        return 0.0, np.nan
    else:
        d0 = float(np.exp(optimize.brentq(lambda log_d0: model.moments(np.exp(log_d0))[1] - var,
                                          np.log(_D0_LOWEST), np.log(_D0_HIGHEST), xtol=1e-4)))
    s0_squared = float(np.exp(mean - model.moments(d0)[0]))
    return float(min(d0, max_d0)), s0_squared


_D0_LOWEST = 0.05  # below this a prior carries no information
_D0_HIGHEST = 1e5  # above this the F distribution is the chi-square one for every practical purpose
_GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(24)


class _LogFMoments:
    """Mean and variance of ``log F(df_g, d0)``, mixed over groups ``g`` with weights ``w_g``, Winsorized
    at the mixture's ``lower`` and ``1 - upper`` quantiles (integrals over the quantile function by
    Gauss-Legendre quadrature), or in closed form when nothing is Winsorized (Smyth 2004)."""

    def __init__(self, df: np.ndarray, weights: np.ndarray, lower: float, upper: float):
        self.df, self.weights, self.lower, self.upper = df[:, None], weights[:, None], lower, upper

    def _cdf(self, x, d0):
        if np.isinf(d0):
            return special.gammainc(self.df / 2.0, self.df * np.exp(x) / 2.0)
        return special.fdtr(self.df, d0, np.exp(x))

    def _quantile(self, u, d0):
        if np.isinf(d0):
            return np.log(2.0 * special.gammaincinv(self.df / 2.0, u) / self.df)
        return np.log(special.fdtri(self.df, d0, u))

    def _mixture_quantile(self, p: float, d0: float) -> float:
        each = self._quantile(np.full((1, 1), p), d0)[:, 0]
        if each.size == 1:
            return float(each[0])
        grid = np.linspace(each.min(), each.max(), 65)
        return float(np.interp(p, (self.weights * self._cdf(grid[None, :], d0)).sum(axis=0), grid))

    def moments(self, d0: float) -> tuple[float, float]:
        if self.lower == 0:
            return self._plain_moments(d0)
        low, high = self._mixture_quantile(self.lower, d0), self._mixture_quantile(1.0 - self.upper, d0)
        u_low, u_high = self._cdf(low, d0), self._cdf(high, d0)
        first_tails = low * u_low + high * (1.0 - u_high)
        second_tails = low**2 * u_low + high**2 * (1.0 - u_high)
        nodes, node_weights = _GAUSS_LEGENDRE
        half = (u_high - u_low) / 2.0
        x = self._quantile(u_low + half * (nodes[None, :] + 1.0), d0)
        first = half * (x * node_weights).sum(axis=1, keepdims=True) + first_tails
        second = half * (x**2 * node_weights).sum(axis=1, keepdims=True) + second_tails
        mean = float((self.weights * first).sum())
        return mean, float((self.weights * second).sum() - mean**2)

    def _plain_moments(self, d0: float) -> tuple[float, float]:
        half = self.df / 2.0
        each_mean = special.digamma(half) - np.log(half)
        each_var = special.polygamma(1, half)
        if np.isfinite(d0):
            each_mean = each_mean - special.digamma(d0 / 2.0) + np.log(d0 / 2.0)
            each_var = each_var + special.polygamma(1, d0 / 2.0)
        mean = float((self.weights * each_mean).sum())
        return mean, float((self.weights * (each_var + each_mean**2)).sum() - mean**2)
