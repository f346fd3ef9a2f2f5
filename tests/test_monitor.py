"""Unit tests of the monitor's statistical core: losses, degradation test, multiplicity, challenger.

The statistical calibration (rejection rates by simulation) lives in ``test_calibration.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlma.monitor.challenger import default_cosines, paired_noninferiority_test
from mlma.monitor.degradation import TestStatus, degradation_test
from mlma.monitor.losses import (absolute_loss, pinball_loss, scaled_loss, seasonal_naive_scale,
                                 squared_loss)
from mlma.monitor.multiplicity import fdr_control

NAN = np.nan


# -- losses ---------------------------------------------------------------------------------------------
def test_point_losses_elementwise_with_nan():
    y = np.array([[1.0, 2.0, NAN], [0.0, -1.0, 4.0]])
    y_hat = np.array([[2.0, 2.0, 1.0], [NAN, 1.0, 1.0]])
    np.testing.assert_array_equal(absolute_loss(y, y_hat), [[1.0, 0.0, NAN], [NAN, 2.0, 3.0]])
    np.testing.assert_array_equal(squared_loss(y, y_hat), [[1.0, 0.0, NAN], [NAN, 4.0, 9.0]])


def test_pinball_loss_matches_definition_and_median_is_half_absolute():
    rng = np.random.default_rng(0)
    y, q_hat = rng.normal(size=(3, 50)), rng.normal(size=(3, 50))
    for q in (0.1, 0.5, 0.9):
        expected = np.where(y >= q_hat, q * (y - q_hat), (1 - q) * (q_hat - y))
        np.testing.assert_allclose(pinball_loss(y, q_hat, q), expected)
    np.testing.assert_allclose(pinball_loss(y, q_hat, 0.5), 0.5 * absolute_loss(y, q_hat))
    # several quantile levels at once, broadcast over a trailing axis
    levels = np.array([0.1, 0.9])
    out = pinball_loss(y[..., None], q_hat[..., None], levels)
    assert out.shape == (3, 50, 2)
    assert np.isnan(pinball_loss(np.array([NAN]), np.array([1.0]), 0.5)).all()
    for bad in (0.0, 1.0, -0.2, np.array([0.5, 1.2])):
        with pytest.raises(ValueError, match="q must be"):
            pinball_loss(y, q_hat, bad)


def test_seasonal_naive_scale_skips_gaps_and_short_histories():
    y = np.array([[1.0, 5.0, 3.0, 8.0, 2.0, NAN, 4.0],
                  [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
                  [1.0, 2.0, NAN, NAN, NAN, NAN, NAN]])
    scale = seasonal_naive_scale(y, season_length=2)
    # row 0 pairs: |3-1|, |8-5|, |2-3|, (NaN-8 skipped), |4-2|
    np.testing.assert_allclose(scale, [(2 + 3 + 1 + 2) / 4, 0.0, NAN])
    np.testing.assert_allclose(seasonal_naive_scale(y[:1], 1), [np.nanmean(np.abs(np.diff(y[0])))])
    assert np.isnan(seasonal_naive_scale(y, season_length=7)).all()
    assert np.isnan(seasonal_naive_scale(y[:1], 2, min_pairs=5)).all()
    with pytest.raises(ValueError, match="season_length"):
        seasonal_naive_scale(y, 0)


def test_scaled_loss_never_produces_infinities():
    losses = np.array([[1.0, 2.0], [3.0, 0.0], [1.0, 1.0], [2.0, 4.0]])
    scales = np.array([2.0, 0.0, NAN, 1e-12])
    out = scaled_loss(losses, scales)
    assert not np.isinf(out).any()
    np.testing.assert_allclose(out[0], [0.5, 1.0])
    assert np.isnan(out[1:3]).all()
    np.testing.assert_allclose(out[3], [2e12, 4e12])  # tiny but positive scales are kept...
    assert np.isnan(scaled_loss(losses, scales, min_scale=1e-9)[3]).all()  # ...unless below min_scale
    np.testing.assert_allclose(scaled_loss(losses, scales, fallback=1.0)[1:3], losses[1:3])
    np.testing.assert_allclose(scaled_loss(losses, 2.0), losses / 2.0)
    with pytest.raises(ValueError, match="one scale per stream"):
        scaled_loss(losses, np.ones(3))
    with pytest.raises(ValueError, match="fallback"):
        scaled_loss(losses, scales, fallback=0.0)


def test_scaling_does_not_change_the_degradation_test():
    rng = np.random.default_rng(1)
    y = rng.gamma(2.0, 10.0, size=(20, 216)) * rng.uniform(1, 100, size=(20, 1))
    losses = absolute_loss(y[:, 24:], y[:, :-24])
    scaled = scaled_loss(losses, seasonal_naive_scale(y[:, :168], 24))
    raw = degradation_test(losses[:, 168:], losses[:, :168])
    rescaled = degradation_test(scaled[:, 168:], scaled[:, :168])
    np.testing.assert_allclose(raw.p_value, rescaled.p_value, rtol=1e-9)


# -- degradation test -----------------------------------------------------------------------------------
def gamma_losses(seed, n_streams=50, n=192, shape=2.0):
    return np.random.default_rng(seed).gamma(shape, 1.0, size=(n_streams, n))


def test_result_fields_shapes_and_counts():
    losses = gamma_losses(0)
    current, reference = losses[:, 168:].copy(), losses[:, :168].copy()
    current[0, 5:] = NAN
    reference[1, 100:] = NAN
    result = degradation_test(current, reference)
    for name in ("statistic", "p_value", "effect", "current_mean", "reference_mean", "n_current",
                 "n_reference", "n_reference_blocks", "df", "testable", "status"):
        assert getattr(result, name).shape == (50,), name
    assert result.n_current[0] == 5 and result.n_current[2] == 24
    assert result.n_reference[1] == 100 and result.n_reference[2] == 168
    # 100 values = 4 full days + 4 hours: the partial day covers too little and is left out
    assert result.n_reference_blocks[1] == 4 and result.n_reference_blocks[2] == 7
    assert result.df[1] == 3 and result.df[2] == 6
    assert result.testable.all() and ((result.p_value > 0) & (result.p_value < 1)).all()
    np.testing.assert_allclose(result.effect[2], current[2].mean() / reference[2].mean())
    np.testing.assert_allclose(result.effect, result.current_mean / result.reference_mean)


def test_one_dimensional_input_is_one_stream():
    losses = gamma_losses(1, n_streams=1)[0]
    one = degradation_test(losses[168:], losses[:168])
    two = degradation_test(losses[None, 168:], losses[None, :168])
    assert one.p_value.shape == (1,)
    np.testing.assert_array_equal(one.p_value, two.p_value)


def test_p_value_falls_as_the_current_loss_rises_and_margin_protects():
    losses = gamma_losses(2, n_streams=1)
    reference, current = losses[:, :168], losses[:, 168:]
    p = [degradation_test(current * f, reference, delta=0.0).p_value[0] for f in (0.5, 1.0, 1.5, 3.0)]
    assert np.all(np.diff(p) < 0)
    assert p[-1] < 0.01 and p[0] > 0.5
    margins = [degradation_test(current * 1.5, reference, delta=d).p_value[0] for d in (0.0, 0.1, 0.5)]
    assert np.all(np.diff(margins) > 0)


def test_margin_boundary_is_scale_exact():
    """Dividing the current batch by (1 + delta) is the same as testing it at delta = 0."""
    losses = gamma_losses(3)
    reference, current = losses[:, :168], losses[:, 168:]
    a = degradation_test(current * 1.2, reference, delta=0.2)
    b = degradation_test(current, reference, delta=0.0)
    np.testing.assert_allclose(a.p_value, b.p_value, rtol=1e-9)
    np.testing.assert_allclose(a.effect, 1.2 * b.effect)


def test_scale_invariance_per_stream():
    losses = gamma_losses(4)
    factors = np.geomspace(1e-6, 1e6, 50)[:, None]
    base = degradation_test(losses[:, 168:], losses[:, :168])
    scaled = degradation_test(losses[:, 168:] * factors, losses[:, :168] * factors)
    np.testing.assert_allclose(base.p_value, scaled.p_value, rtol=1e-8)


def test_partial_batch_is_compared_with_the_same_hours():
    """Losses are 10x larger at night. A batch with only night hours, as large as the reference's nights,
    is not degraded; one with only day hours that match the reference's nights is not either, and it would
    look degraded if compared with whole reference days."""
    rng = np.random.default_rng(5)
    profile = np.where(np.arange(24) < 6, 10.0, 1.0)
    losses = rng.gamma(5.0, 0.2, size=(200, 192)) * np.resize(profile, 192)
    reference, current = losses[:, :168], losses[:, 168:]
    night = np.full_like(current, NAN)
    night[:, :6] = current[:, :6]
    day = np.full_like(current, NAN)
    day[:, 6:] = current[:, 6:]
    for batch in (night, day):
        p = degradation_test(batch, reference, delta=0.0).p_value
        assert np.mean(p < 0.05) < 0.12
    # the same night values, scaled 3x: degraded
    assert np.mean(degradation_test(night * 3, reference, delta=0.0).p_value < 0.05) > 0.9


def test_block_length_and_multi_block_current():
    losses = gamma_losses(6, n=240)
    reference, current = losses[:, :168], losses[:, 168:]  # three days of current losses
    result = degradation_test(current, reference, block_length=24)
    assert (result.df == 7 + 3 - 2).all()
    # default block length = the current's width: 72 -> only two reference blocks
    default = degradation_test(current, reference)
    assert not default.testable.any()
    assert (default.status == TestStatus.SHORT_REFERENCE).all()


def test_small_batches_and_daily_data_with_weekly_blocks():
    losses = gamma_losses(7, n=200)
    for n in (1, 2, 3):
        result = degradation_test(losses[:, 168:168 + n], losses[:, :168], block_length=24)
        assert result.testable.all()
        assert ((result.p_value > 0) & (result.p_value < 1)).all()
    # daily data: one value per tick, weekly blocks; the value sits at its weekday's column
    daily = gamma_losses(8, n=8 * 7)
    today = np.full((50, 7), NAN)
    today[:, 3] = daily[:, 7 * 7 + 3]
    result = degradation_test(today, daily[:, :7 * 7])
    assert (result.n_reference_blocks == 7).all() and result.testable.all()
    assert (result.n_current == 1).all()


def test_untestable_streams_get_nan_and_a_reason():
    losses = gamma_losses(9, n_streams=5)
    current, reference = losses[:, 168:].copy(), losses[:, :168].copy()
    current[0] = NAN  # no current data
    reference[1, 48:] = NAN  # two days of reference only
    reference[2] = 0.0  # perfect forecasts in the reference
    reference[3] = 1.0  # all reference days identical
    result = degradation_test(current, reference, min_reference_blocks=4)
    assert list(result.status) == [TestStatus.NO_CURRENT, TestStatus.SHORT_REFERENCE,
                                   TestStatus.DEGENERATE_REFERENCE, TestStatus.DEGENERATE_REFERENCE,
                                   TestStatus.TESTED]
    assert list(result.testable) == [False, False, False, False, True]
    assert np.isnan(result.p_value[:4]).all() and np.isnan(result.statistic[:4]).all()
    assert np.isnan(result.effect[0]) and np.isinf(result.effect[2])
    assert not result.degraded(0.5)[:4].any()
    assert degradation_test(current[4:], reference[4:], min_current=25).status[0] == TestStatus.NO_CURRENT


def test_ties_and_zero_heavy_losses():
    rng = np.random.default_rng(10)
    losses = rng.poisson(0.1, size=(500, 192)).astype(float)  # ~90 % zeros
    result = degradation_test(losses[:, 168:], losses[:, :168], delta=0.0)
    p = result.p_value[result.testable]
    assert result.testable.mean() > 0.95
    assert ((p > 0) & (p <= 1)).all()
    # an all-zero current batch is never degraded
    zeros = degradation_test(np.zeros((500, 24)), losses[:, :168], delta=0.0)
    assert (zeros.p_value[zeros.testable] > 0.5).all()


def test_input_validation_names_the_problem():
    losses = gamma_losses(11, n_streams=3)
    cur, ref = losses[:, 168:], losses[:, :168]
    with pytest.raises(ValueError, match="negative"):
        degradation_test(-cur, ref)
    with pytest.raises(ValueError, match="infinite"):
        degradation_test(np.where(cur > 2, np.inf, cur), ref)
    with pytest.raises(ValueError, match="streams"):
        degradation_test(cur[:2], ref)
    with pytest.raises(ValueError, match="2-D"):
        degradation_test(cur[..., None], ref)
    for kwargs, word in [(dict(delta=-1.0), "delta"), (dict(block_length=0), "block_length"),
                         (dict(offset=0.0), "offset"), (dict(min_reference_blocks=1), "min_reference_blocks"),
                         (dict(min_coverage=0.0), "min_coverage"), (dict(min_current=0), "min_current")]:
        with pytest.raises(ValueError, match=word):
            degradation_test(cur, ref, **kwargs)


# -- multiplicity ---------------------------------------------------------------------------------------
def brute_force_bh(p, alpha):
    """Textbook step-up: reject the k smallest, k the largest i with p_(i) <= i alpha / m."""
    tested = ~np.isnan(p)
    values = p[tested]
    m = values.size
    order = np.sort(values)
    passing = [i for i in range(1, m + 1) if order[i - 1] <= i * alpha / m]
    cutoff = order[max(passing) - 1] if passing else -1.0
    reject = np.zeros(p.shape, dtype=bool)
    reject[tested] = values <= cutoff
    return reject


def test_bh_matches_the_textbook_procedure():
    rng = np.random.default_rng(12)
    for trial in range(50):
        m = int(rng.integers(1, 300))
        p = np.concatenate([rng.uniform(size=m), rng.uniform(0, 1e-3, size=int(rng.integers(0, 30)))])
        p[rng.uniform(size=p.size) < 0.1] = NAN
        for alpha in (0.01, 0.05, 0.2):
            reject, q = fdr_control(p, alpha, "bh")
            np.testing.assert_array_equal(reject, brute_force_bh(p, alpha))
            np.testing.assert_array_equal(np.isnan(q), np.isnan(p))


def test_adjusted_p_values_are_ordered_and_bounded():
    rng = np.random.default_rng(13)
    p = rng.uniform(size=1000) ** 3
    p[::17] = NAN
    q = {m: fdr_control(p, 0.05, m).adjusted for m in ("none", "bh", "by", "bonferroni")}
    tested = ~np.isnan(p)
    for method, adjusted in q.items():
        assert (adjusted[tested] >= p[tested] - 1e-15).all() and (adjusted[tested] <= 1).all(), method
    assert (q["by"][tested] >= q["bh"][tested]).all()
    assert (q["bonferroni"][tested] >= q["bh"][tested]).all()
    order = np.argsort(p[tested])
    assert np.all(np.diff(q["bh"][tested][order]) >= 0)
    np.testing.assert_array_equal(q["none"], p)
    np.testing.assert_allclose(q["bonferroni"][tested], np.minimum(p[tested] * tested.sum(), 1))


def test_nan_p_values_do_not_count_as_tests():
    p = np.array([0.01, 0.02, NAN, NAN, NAN, NAN])
    reject, q = fdr_control(p, 0.05, "bonferroni")
    np.testing.assert_allclose(q[:2], [0.02, 0.04])  # m = 2, not 6
    assert list(reject) == [True, True, False, False, False, False]
    reject, q = fdr_control(np.full(4, NAN), 0.05)
    assert not reject.any() and np.isnan(q).all()
    assert fdr_control(np.array([]), 0.05).reject.shape == (0,)


def test_fdr_control_validation():
    with pytest.raises(ValueError, match="method"):
        fdr_control(np.array([0.1]), 0.05, "holm")
    with pytest.raises(ValueError, match="alpha"):
        fdr_control(np.array([0.1]), 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fdr_control(np.array([1.1]), 0.05)
    with pytest.raises(ValueError, match="1-D"):
        fdr_control(np.ones((2, 2)) * 0.5, 0.05)


# -- challenger -----------------------------------------------------------------------------------------
def test_challenger_decisions_and_means():
    rng = np.random.default_rng(14)
    champion = np.abs(rng.normal(size=(4, 48)))
    challenger = np.vstack([0.5 * champion[0], champion[1], 2.0 * champion[2],
                            champion[3] * rng.uniform(0.9, 1.1, 48)])
    result = paired_noninferiority_test(challenger, champion, margin=0.0)
    assert list(result.promote[:3]) == [True, False, False]
    np.testing.assert_allclose(result.challenger_mean, challenger.mean(axis=1))
    np.testing.assert_allclose(result.champion_mean, champion.mean(axis=1))
    np.testing.assert_allclose(result.ratio[:3], [0.5, 1.0, 2.0])
    assert result.statistic[0] < 0 < result.statistic[2]
    assert result.p_value[1] == 1.0  # identical models
    assert (result.df == default_cosines(48)).all()
    # a generous margin lets the slightly noisier but equal challenger through
    assert paired_noninferiority_test(challenger, champion, margin=0.5).promote[3]


def test_challenger_margin_is_relative_to_champion_mean():
    rng = np.random.default_rng(15)
    champion = np.abs(rng.normal(size=(1, 24))) + 1.0
    challenger = 1.2 * champion + 0.01 * rng.normal(size=(1, 24))  # 20 % worse, nearly constant ratio
    assert not paired_noninferiority_test(challenger, champion, margin=0.1).promote[0]
    assert paired_noninferiority_test(challenger, champion, margin=0.3).promote[0]
    p = [paired_noninferiority_test(challenger, champion, margin=m).p_value[0] for m in (0.1, 0.2, 0.3)]
    assert p[0] > 0.5 > p[2]


def test_challenger_gaps_and_too_few_pairs():
    rng = np.random.default_rng(16)
    champion = np.abs(rng.normal(size=(3, 24)))
    challenger = 0.3 * champion.copy()
    challenger[0, ::2] = NAN  # 12 pairs left
    challenger[1, 3:] = NAN  # 3 pairs: untestable
    result = paired_noninferiority_test(challenger, champion, min_pairs=4)
    assert list(result.n_pairs) == [12, 3, 24]
    assert list(result.testable) == [True, False, True]
    assert list(result.promote) == [True, False, True]
    assert np.isnan(result.p_value[1])
    np.testing.assert_allclose(result.champion_mean[0], champion[0, 1::2].mean())
    gap_free = paired_noninferiority_test(challenger[:1, 1::2], champion[:1, 1::2])
    np.testing.assert_allclose(result.p_value[0], gap_free.p_value[0])


def test_challenger_validation():
    a = np.ones((2, 24))
    with pytest.raises(ValueError, match="same shape"):
        paired_noninferiority_test(a, np.ones((2, 23)))
    with pytest.raises(ValueError, match="margin"):
        paired_noninferiority_test(a, a, margin=-1.0)
    with pytest.raises(ValueError, match="n_cosines"):
        paired_noninferiority_test(a, a, n_cosines=0)
    with pytest.raises(ValueError, match="infinite"):
        paired_noninferiority_test(a * np.inf, a)
