"""Fleet-level variance moderation (empirical Bayes) in the degradation test, by seeded simulation.

``degradation_test(..., moderate=True)`` shrinks each stream's variance of transformed block means towards
a prior fitted to all streams of the call (Smyth 2004; robust fit after Phipson et al. 2016). These tests
check, with explicit Monte-Carlo tolerances, that this

* recovers known prior hyperparameters and resists outlying variances;
* stays calibrated on *heterogeneous* fleets (mixed AR(1) persistence, Gaussian and t(4) noise, error
  scales, Poisson and negative binomial count streams with many zero and tied losses, daily and weekly
  patterns), for references of 4, 7 and 14 blocks and current windows of 1-3 blocks, at 5 % and 0.1 %;
* gains power over the plain test, per stream and under Benjamini-Hochberg, and keeps BH's false
  discovery proportion at or below q when part of the fleet is degraded;
* costs little time.

Run this file as a script to print the tables of ``docs/statistics.md`` ("Moderated variance across the
fleet")::

    .venv/bin/python tests/test_moderation.py
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import signal

from mlma.monitor.degradation import MIN_MODERATION_STREAMS, degradation_test, fit_variance_prior
from mlma.monitor.multiplicity import fdr_control

HOURS = 24
ALPHA = 0.05
FAR = 0.001
PHIS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9)


# -- simulation ---------------------------------------------------------------------------------------------
def daily_profile() -> np.ndarray:
    """A delivery-like daily profile of error scale or demand: quiet nights, lunch and dinner peaks
    (mean 1)."""
    hour = np.arange(HOURS)
    profile = 0.3 + np.exp(-0.5 * ((hour - 12) / 2.0) ** 2) + 1.2 * np.exp(-0.5 * ((hour - 19) / 2.0) ** 2)
    return profile / profile.mean()


def ar1(rng, phi: np.ndarray, heavy: np.ndarray, length: int) -> np.ndarray:
    """Stationary AR(1) errors with unit variance, one row per stream; ``heavy`` rows get t(4) shocks."""
    shocks = rng.standard_normal((phi.size, length))
    shocks[heavy] = rng.standard_t(4, (int(heavy.sum()), length)) / np.sqrt(2.0)
    for value in np.unique(phi):
        if value == 0:
            continue
        rows = phi == value
        start = shocks[rows]
        start[:, 0] /= np.sqrt(1.0 - value**2)
        shocks[rows] = signal.lfilter([1.0], [1.0, -value], start, axis=1) * np.sqrt(1.0 - value**2)
    return shocks


def heterogeneous_fleet(rng, n_streams: int, n_days: int, *, loss: str = "abs", count_share: float = 0.2,
                        weekly_share: float = 0.3, weekend_scale: float = 1.3) -> tuple[np.ndarray, dict]:
    """Hourly losses of a mixed fleet, day 0 at column 0, and each stream's kind.

    Continuous streams: AR(1) errors with phi drawn from 0-0.9, Gaussian or t(4) shocks, log-normal error
    scales, half with the daily profile. Count streams (``count_share``): Poisson or negative binomial
    counts with 0.5-5 per hour on average, forecast by their true mean or by the seasonal naive forecast
    (integer errors: many zero and tied losses). ``weekly_share`` of all streams have noisier weekends
    (error scale or demand x ``weekend_scale`` on two days of seven, at a random weekday phase).
    """
    length = n_days * HOURS
    phi = rng.choice(np.array(PHIS), n_streams)
    heavy = rng.random(n_streams) < 0.5
    seasonal = rng.random(n_streams) < 0.5
    weekly = rng.random(n_streams) < weekly_share
    count = rng.random(n_streams) < count_share
    # One day before day 0, for the seasonal naive forecast of count streams.
    weekday = (rng.integers(0, 7, n_streams)[:, None] + np.arange(-1, n_days)) % 7
    pattern = np.where(seasonal[:, None], np.resize(daily_profile(), length + HOURS), 1.0)
    pattern = pattern * np.where(weekly[:, None] & np.repeat(weekday >= 5, HOURS, axis=1), weekend_scale, 1.0)
    scale = np.exp(rng.normal(0.0, 1.0, n_streams))[:, None]
    errors = ar1(rng, phi, heavy & ~count, length) * pattern[:, HOURS:] * scale
    rows = np.flatnonzero(count)
    if rows.size:
        mean = rng.uniform(0.5, 5.0, (rows.size, 1)) * pattern[rows]
        size = rng.uniform(1.0, 5.0, (rows.size, 1))
        overdispersed = (rng.random(rows.size) < 0.5)[:, None]
        y = rng.poisson(np.where(overdispersed, rng.gamma(size, mean / size), mean)).astype(np.float64)
        naive = (rng.random(rows.size) < 0.5)[:, None]
        errors[rows] = np.where(naive, y[:, HOURS:] - y[:, :-HOURS], y[:, HOURS:] - mean[:, HOURS:])
    losses = np.abs(errors) if loss == "abs" else errors**2
    return losses, dict(phi=np.where(count, np.nan, phi), heavy=heavy & ~count, count=count, weekly=weekly,
                        weekend_today=weekly[:, None] & (weekday[:, 1:] >= 5))


def count_zone_fleet(rng, n_streams: int, n_days: int) -> np.ndarray:
    """Absolute errors of a fleet of delivery zones, more alike than the heterogeneous fleet: negative
    binomial hourly orders (zone means log-normal, median 3 per hour, from below 1 to about 50; dispersion
    2-20) with the daily profile, forecast by the true mean times a persistent model error (AR(1) 0.8 in
    log, sd 0.15)."""
    length = n_days * HOURS
    zone = np.exp(rng.normal(np.log(3.0), 1.0, (n_streams, 1)))
    mean = zone * np.resize(daily_profile(), length)
    size = rng.uniform(2.0, 20.0, (n_streams, 1))
    y = rng.poisson(rng.gamma(size, mean / size))
    forecast = mean * np.exp(0.15 * ar1(rng, np.full(n_streams, 0.8), np.zeros(n_streams, bool), length))
    return np.abs(y - forecast)


def split(losses: np.ndarray, reference_days: int, current_days: int) -> tuple[np.ndarray, np.ndarray]:
    """(current, reference): the current window directly follows the reference."""
    end = (reference_days + current_days) * HOURS
    return losses[:, reference_days * HOURS:end], losses[:, :reference_days * HOURS]


def tolerance(rate: float, n: int, z: float = 3.0) -> float:
    return z * np.sqrt(rate * (1.0 - rate) / n)


# -- the prior fit ------------------------------------------------------------------------------------------
def sample_variances(rng, n: int, d0: float, s0_squared: float, df) -> np.ndarray:
    """Sample variances on ``df`` degrees of freedom whose true variances follow Smyth's prior."""
    sigma2 = s0_squared * (d0 / rng.chisquare(d0, n) if np.isfinite(d0) else np.ones(n))
    return sigma2 * rng.chisquare(df, n) / df


@pytest.mark.parametrize("d0", [3.0, 10.0, 40.0])
def test_prior_fit_recovers_known_hyperparameters(d0):
    """Under the model the robust moment fit finds d0 and s0^2, with one or with mixed stream df."""
    rng = np.random.default_rng(int(d0))
    n = 50_000
    for df in (6.0, rng.choice([3.0, 6.0, 13.0], n)):
        fitted_d0, fitted_s0 = fit_variance_prior(sample_variances(rng, n, d0, 0.05, df), df)
        assert abs(np.log(fitted_d0 / d0)) < 0.15 + 0.01 * d0, (d0, fitted_d0)
        assert abs(fitted_s0 / 0.05 - 1) < 0.03


def test_prior_fit_homogeneous_and_overdispersed_extremes():
    """Identical true variances: d0 is 'infinite', capped at what n streams can tell; variances spread
    over many orders of magnitude: no prior (d0 = 0)."""
    rng = np.random.default_rng(1)
    for n in (30, 3_000):
        d0, s0 = fit_variance_prior(sample_variances(rng, n, np.inf, 2.0, 6.0), 6.0)
        assert 0.1 * n < d0 <= 2 * n / 0.3949 + 1e-9
        assert abs(np.log(s0 / 2.0)) < 4 * np.sqrt(0.4 / n)  # 4 SE of a mean of n log variances
    d0, s0 = fit_variance_prior(np.exp(rng.uniform(-300, 300, 1_000)), 6.0)
    assert d0 == 0.0 and np.isnan(s0)
    d0, s0 = fit_variance_prior(np.array([1.0, 2.0, np.nan, 0.0]), 6.0)  # fewer than 3 usable variances
    assert d0 == 0.0 and np.isnan(s0)


def test_prior_fit_resists_outlying_variances():
    """2 % of streams with 100x inflated variances (a holiday in the reference): the Winsorized fit keeps
    most of d0, Smyth's plain moments lose most of it."""
    rng = np.random.default_rng(2)
    clean = sample_variances(rng, 20_000, 30.0, 0.05, 6.0)
    dirty = clean.copy()
    dirty[:400] *= 100.0
    robust, _ = fit_variance_prior(dirty, 6.0)
    plain, _ = fit_variance_prior(dirty, 6.0, winsor_tails=(0.0, 0.0))
    reference, _ = fit_variance_prior(clean, 6.0)
    assert robust > 0.6 * reference
    assert plain < 0.3 * reference
    with pytest.raises(ValueError, match="winsor_tails"):
        fit_variance_prior(clean, 6.0, winsor_tails=(0.0, 0.1))


# -- the option in degradation_test -------------------------------------------------------------------------
def test_moderation_fields_and_fallback_to_the_plain_test():
    rng = np.random.default_rng(3)
    losses, _ = heterogeneous_fleet(rng, 200, 8)
    current, reference = split(losses, 7, 1)
    plain = degradation_test(current, reference, moderate=False)
    moderated = degradation_test(current, reference)
    assert (plain.prior_df == 0).all() and np.isnan(plain.prior_variance).all()
    d0 = moderated.prior_df[0]
    assert 0 < d0 < np.inf and (moderated.prior_df == d0).all()
    assert (moderated.df == plain.df).all()  # the stream's own df; the t has df + prior_df
    np.testing.assert_array_equal(moderated.effect, plain.effect)
    assert not np.allclose(moderated.p_value, plain.p_value)
    # few streams: the plain test, whatever the option says
    few = MIN_MODERATION_STREAMS - 1
    small = degradation_test(current[:few], reference[:few])
    np.testing.assert_array_equal(small.p_value, plain.p_value[:few])
    assert (small.prior_df == 0).all()
    # ...and untestable streams neither count nor get a prior
    current_gaps = current.copy()
    current_gaps[:190] = np.nan
    gaps = degradation_test(current_gaps, reference)
    assert (gaps.prior_df[gaps.testable] == 0).all() and np.isnan(gaps.prior_df[~gaps.testable]).all()
    with pytest.raises(ValueError, match="moderate"):
        degradation_test(current, reference, moderate="yes")
    with pytest.raises(ValueError, match="min_moderation_streams"):
        degradation_test(current, reference, min_moderation_streams=1)


def test_moderated_statistic_uses_the_posterior_variance():
    """Recomputed by hand: block means over the reference mean, Box-Cox -1/2, the stream's variance
    ``s2`` on ``k - 1`` df, and the statistic divided by ``sqrt((d0 s0^2 + d s2) / (d0 + d) (1 + 1/k))``."""
    rng = np.random.default_rng(4)
    losses = rng.gamma(2.0, 1.0, (300, 8 * HOURS)) * rng.uniform(0.5, 2.0, (300, 1))
    current, reference = split(losses, 7, 1)
    result = degradation_test(current, reference, delta=0.0)
    blocks = reference.reshape(300, 7, HOURS).mean(axis=2)
    unit = blocks.mean(axis=1, keepdims=True)
    g_ref = ((blocks / unit + 0.1) ** -0.5 - 1.0) / -0.5
    g_cur = ((current.mean(axis=1, keepdims=True) / unit + 0.1) ** -0.5 - 1.0) / -0.5
    own = g_ref.var(axis=1, ddof=1)
    d0, s0_squared = result.prior_df[0], result.prior_variance[0]
    posterior = (d0 * s0_squared + 6 * own) / (d0 + 6)
    expected = (g_cur[:, 0] - g_ref.mean(axis=1)) / np.sqrt(posterior * (1 + 1 / 7))
    np.testing.assert_allclose(result.statistic, expected, rtol=1e-9)
    assert (result.df == 6).all() and d0 > 6
    # the fleet's variances are alike: the prior sits among them and the shrinkage pulls both ways
    assert np.quantile(own, 0.1) < s0_squared < np.quantile(own, 0.9)
    assert (posterior < own).any() and (posterior > own).any()


# -- calibration on heterogeneous fleets --------------------------------------------------------------------
N_CALIBRATION = 40_000


def null_rates(p: np.ndarray) -> tuple[float, float]:
    return float(np.mean(p <= ALPHA)), float(np.mean(p <= FAR))


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["abs", "sq"])
def test_calibration_on_heterogeneous_fleets(loss):
    """No change, delta = 0, one call per fleet of 40,000 mixed streams: references of 4, 7 and 14 days,
    current windows of 1, 2 and 3 days directly after them. With a one-day batch the moderated test
    rejects at most 5 % + 3 SE at 5 % and 0.1 % + 3 SE at 0.1 %. Multi-day windows inherit the plain
    test's known excess when consecutive days are correlated (here: count streams forecast by the
    seasonal naive forecast share a count between consecutive days' errors); moderation must not add to
    it. Weekly patterns are only in the 7- and 14-day fleets (a 4-day reference cannot hold a week); the
    current days fall on every weekday alike."""
    failures = []
    for seed, reference_days in enumerate((4, 7, 14)):
        rng = np.random.default_rng(100 + seed + (50 if loss == "sq" else 0))
        losses, _ = heterogeneous_fleet(rng, N_CALIBRATION, reference_days + 3, loss=loss,
                                        weekly_share=0.3 if reference_days >= 7 else 0.0)
        for current_days in (1, 2, 3):
            current, reference = split(losses, reference_days, current_days)
            result = degradation_test(current, reference, delta=0.0, block_length=HOURS)
            assert result.testable.mean() > 0.99 and (result.prior_df[result.testable] > 0).all()
            rates = null_rates(result.p_value[result.testable])
            plain = degradation_test(current, reference, delta=0.0, block_length=HOURS, moderate=False)
            plain_rates = null_rates(plain.p_value[plain.testable])
            for level, rate, plain_rate in zip((ALPHA, FAR), rates, plain_rates):
                limit = level if current_days == 1 else max(level, plain_rate)
                if rate > limit + tolerance(level, N_CALIBRATION):
                    failures.append(f"{loss} ref {reference_days} cur {current_days} at {level}: {rate:.4f}")
    assert not failures, failures


@pytest.mark.slow
def test_calibration_by_kind_of_stream():
    """The prior is the fleet's, so moderation is calibrated for the fleet, not for every kind of stream
    (a known limitation, see docs/statistics.md). What must hold: the fleet as a whole at alpha, and no
    kind of stream above the documented ceiling, twice alpha at 5 % and alpha (+ 3 SE) in the far tail.
    (This test used to require that the persistent kind be flagged more often with moderation than
    without: that locked the limitation in instead of bounding it.)"""
    rng = np.random.default_rng(7)
    losses, kind = heterogeneous_fleet(rng, 2 * N_CALIBRATION, 8, weekly_share=0.0)
    current, reference = split(losses, 7, 1)
    p = degradation_test(current, reference, delta=0.0).p_value
    plain = degradation_test(current, reference, delta=0.0, moderate=False).p_value
    persistent = kind["phi"] == 0.9
    for group in (persistent, kind["count"], ~persistent & ~kind["count"]):
        assert np.mean(p[group] <= ALPHA) < 2 * ALPHA
        assert np.mean(plain[group] <= ALPHA) <= ALPHA + tolerance(ALPHA, group.sum())
    assert np.mean(p[persistent] <= 0.002) <= 0.002 + tolerance(0.002, persistent.sum())
    assert np.mean(p <= ALPHA) <= ALPHA + tolerance(ALPHA, p.size)


def test_calibration_with_weekly_pattern_over_a_week_of_ticks():
    """All streams have noisier weekends (x 1.3), reference of 7 days: over the seven weekdays the
    moderated test is calibrated, as the plain one is. (On weekend days both flag more, because a
    weekend day's loss really is above the week's mean; see the docs.)"""
    rng = np.random.default_rng(8)
    losses, kind = heterogeneous_fleet(rng, 20_000, 8, weekly_share=1.0)
    current, reference = split(losses, 7, 1)
    p = degradation_test(current, reference, delta=0.0).p_value
    assert np.mean(p <= ALPHA) <= ALPHA + tolerance(ALPHA, p.size)
    weekend = kind["weekend_today"][:, -1]
    plain = degradation_test(current, reference, delta=0.0, moderate=False).p_value
    assert np.mean(p[weekend] <= ALPHA) > np.mean(p[~weekend] <= ALPHA)
    assert np.mean(plain[weekend] <= ALPHA) > ALPHA


@pytest.mark.parametrize("fleet_size", [MIN_MODERATION_STREAMS, 50])
def test_calibration_of_small_fleets(fleet_size):
    """The prior is estimated from the streams in the call: with as few as 20 mixed streams per call the
    rate over many calls stays at most 5 % + 3 SE."""
    rng = np.random.default_rng(fleet_size)
    n = 30_000
    losses, _ = heterogeneous_fleet(rng, n, 5, weekly_share=0.0)
    current, reference = split(losses, 4, 1)
    p = np.concatenate([degradation_test(current[i:i + fleet_size], reference[i:i + fleet_size],
                                         delta=0.0).p_value for i in range(0, n, fleet_size)])
    assert np.mean(p <= ALPHA) <= ALPHA + tolerance(ALPHA, n)
    assert np.mean(p <= 0.01) <= 0.01 + tolerance(0.01, n)


# -- power and the false discovery proportion ---------------------------------------------------------------
def degraded_fleet(seed: int, n_streams: int, reference_days: int, increase: float, *, kind: str = "mixed",
                   hit_share: float = 0.1):
    """(current, reference, hit): one day after the reference; the first ``hit_share`` of the streams
    have their current losses ``1 + increase`` times larger."""
    rng = np.random.default_rng(seed)
    if kind == "mixed":
        losses, _ = heterogeneous_fleet(rng, n_streams, reference_days + 1,
                                        weekly_share=0.3 if reference_days >= 7 else 0.0)
    else:
        losses = count_zone_fleet(rng, n_streams, reference_days + 1)
    current, reference = split(losses, reference_days, 1)
    hit = np.arange(n_streams) < hit_share * n_streams
    current = current.copy()
    current[hit] *= 1.0 + increase
    return current, reference, hit


def detection(current, reference, hit, *, moderate: bool, delta: float = 0.1):
    """(share of hit streams flagged at 5 %, share found by BH at q = 5 %, BH's false discovery
    proportion)."""
    p = degradation_test(current, reference, delta=delta, moderate=moderate).p_value
    reject = fdr_control(p, ALPHA, "bh").reject
    return (float(np.mean(p[hit] <= ALPHA)), float(reject[hit].mean()),
            float(reject[~hit].sum() / max(reject.sum(), 1)))


@pytest.mark.parametrize("kind", ["mixed", "zones"])
def test_power_gain_per_stream(kind):
    """10 % of the fleet doubles its losses (delta = 0.1): moderation flags clearly more of them at 5 %
    with a 4- or 7-day reference, and never fewer."""
    for reference_days, gain in ((4, 0.08), (7, 0.04), (14, 0.0)):
        current, reference, hit = degraded_fleet(10 + reference_days, 10_000, reference_days, 1.0, kind=kind)
        plain = detection(current, reference, hit, moderate=False)[0]
        moderated = detection(current, reference, hit, moderate=True)[0]
        assert moderated >= plain + gain, (reference_days, plain, moderated)


def test_power_gain_under_bh_for_a_fleet_of_zones():
    """The motivating case: losses 2-2.5x the reference in 10 % of 5,000 zones, one tick, delta = 0.1.
    The plain test's smallest p-values are too large for BH to find any; moderated, BH finds many."""
    for reference_days, increase in ((4, 1.5), (7, 1.0)):
        current, reference, hit = degraded_fleet(20, 5_000, reference_days, increase, kind="zones")
        plain = detection(current, reference, hit, moderate=False)[1]
        moderated = detection(current, reference, hit, moderate=True)[1]
        assert plain < 0.05 and moderated > 0.4, (reference_days, plain, moderated)


FDP_CASES = (("zones", 4, 1.0), ("zones", 7, 1.0), ("zones", 14, 1.0), ("mixed", 7, 1.5), ("mixed", 14, 1.5))


@pytest.mark.slow
def test_bh_false_discovery_proportion_under_partial_nulls():
    """Over many fleets with 10 % degraded streams (losses x 1.5 to x 2.5, delta = 0), the average false
    discovery proportion of BH at q = 5 % on moderated p-values stays at most q (+ 2.5 SE)."""
    for kind, reference_days, increase in FDP_CASES:
        fdp = []
        for rep in range(60):
            current, reference, hit = degraded_fleet(1_000 + rep, 2_000, reference_days, increase, kind=kind)
            fdp.append(detection(current, reference, hit, moderate=True, delta=0.0)[2])
        fdp = np.array(fdp)
        assert fdp.mean() <= ALPHA + 2.5 * fdp.std(ddof=1) / np.sqrt(fdp.size), (kind, reference_days,
                                                                                  fdp.mean())


# -- speed ------------------------------------------------------------------------------------------------
def best_time(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.mark.slow
def test_speed_of_moderation_100k_streams():
    """The moderated test + BH for 100,000 streams (168 reference, 24 current losses) stays within 2x
    of the plain test + BH, measured in the same run."""
    rng = np.random.default_rng(0)
    reference = np.abs(rng.standard_normal((100_000, 7 * HOURS)))
    current = np.abs(rng.standard_normal((100_000, HOURS)))

    def run(moderate):
        def test_and_bh():
            fdr_control(degradation_test(current, reference, moderate=moderate).p_value, ALPHA, "bh")
        return test_and_bh

    assert best_time(run(True)) < 2 * best_time(run(False))


# -- tables for docs/statistics.md --------------------------------------------------------------------------
def print_tables() -> None:  # pragma: no cover - a report, run by hand
    def pct(rate, digits=1):
        return f"{100 * rate:.{digits}f}"

    print("## Calibration, heterogeneous fleets, % rejected at 5 % / 0.1 % (plain -> moderated), 40,000 "
          "streams, delta = 0")
    print("| losses | reference days | current 1 day | 2 days | 3 days | d0 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for loss in ("abs", "sq"):
        for seed, reference_days in enumerate((4, 7, 14)):
            rng = np.random.default_rng(100 + seed + (50 if loss == "sq" else 0))
            losses, _ = heterogeneous_fleet(rng, N_CALIBRATION, reference_days + 3, loss=loss,
                                            weekly_share=0.3 if reference_days >= 7 else 0.0)
            cells, d0 = [], []
            for current_days in (1, 2, 3):
                current, reference = split(losses, reference_days, current_days)
                rates = []
                for moderate in (False, True):
                    r = degradation_test(current, reference, delta=0.0, block_length=HOURS, moderate=moderate)
                    a, b = null_rates(r.p_value[r.testable])
                    rates.append(f"{pct(a)} / {pct(b, 2)}")
                    if moderate:
                        d0.append(f"{np.nanmax(r.prior_df):.1f}")
                cells.append(" -> ".join(rates))
            print(f"| {loss} | {reference_days} | " + " | ".join(cells) + f" | {', '.join(d0)} |")

    print("\n## By kind of stream, abs, reference 7 days, current 1 day, no weekly pattern, 80,000 streams")
    rng = np.random.default_rng(7)
    losses, kind = heterogeneous_fleet(rng, 2 * N_CALIBRATION, 8, weekly_share=0.0)
    current, reference = split(losses, 7, 1)
    p = {m: degradation_test(current, reference, delta=0.0, moderate=m).p_value for m in (False, True)}
    groups = {"all": np.ones(len(p[True]), bool), "counts": kind["count"]}
    groups.update({f"phi {phi}": kind["phi"] == phi for phi in PHIS})
    groups.update({"t(4) shocks": kind["heavy"]})
    print("| streams | plain 5 % / 0.1 % | moderated 5 % / 0.1 % |")
    print("| --- | --- | --- |")
    for name, mask in groups.items():
        print(f"| {name} | " + " | ".join(" / ".join([pct(np.mean(p[m][mask] <= ALPHA)),
                                                       pct(np.mean(p[m][mask] <= FAR), 2)])
                                             for m in (False, True)) + " |")

    print("\n## Weekly pattern (all streams, weekends x 1.3), reference 7 days, % at 5 % (plain, moderated)")
    rng = np.random.default_rng(8)
    losses, kind = heterogeneous_fleet(rng, 20_000, 8, weekly_share=1.0)
    current, reference = split(losses, 7, 1)
    weekend = kind["weekend_today"][:, -1]
    for m in (False, True):
        p = degradation_test(current, reference, delta=0.0, moderate=m).p_value
        print(f"moderate={m}: all {pct(np.mean(p <= ALPHA))}, weekdays {pct(np.mean(p[~weekend] <= ALPHA))}, "
              f"weekend days {pct(np.mean(p[weekend] <= ALPHA))}")

    print("\n## Small fleets (abs, mixed, reference 4 days), % at 5 % / 1 % / 0.1 %, 60,000 streams in calls "
          "of n")
    rng = np.random.default_rng(9)
    losses, _ = heterogeneous_fleet(rng, 60_000, 5, weekly_share=0.0)
    current, reference = split(losses, 4, 1)
    plain = degradation_test(current, reference, delta=0.0, moderate=False).p_value
    print("plain: " + " / ".join(pct(np.mean(plain <= a), 2) for a in (0.05, 0.01, 0.001)))
    for n in (5, 10, 20, 50, 200):
        p = np.concatenate([degradation_test(current[i:i + n], reference[i:i + n], delta=0.0,
                                             min_moderation_streams=3).p_value for i in range(0, 60_000, n)])
        print(f"n={n}: " + " / ".join(pct(np.mean(p <= a), 2) for a in (0.05, 0.01, 0.001)))

    print("\n## Power, 10 % of 10,000 streams hit, one day, delta = 0.1: % of hit streams flagged at 5 % / "
          "found by BH (q = 5 %), plain -> moderated")
    print("| fleet | reference days | d0 | +30 % | +50 % | +100 % | +150 % |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind in ("mixed", "zones"):
        for reference_days in (4, 7, 14):
            cells = []
            for increase in (0.3, 0.5, 1.0, 1.5):
                current, reference, hit = degraded_fleet(10 + reference_days, 10_000, reference_days,
                                                         increase, kind=kind)
                plain = detection(current, reference, hit, moderate=False)
                moderated = detection(current, reference, hit, moderate=True)
                cells.append(f"{pct(plain[0], 0)} / {pct(plain[1], 0)} -> {pct(moderated[0], 0)} / "
                             f"{pct(moderated[1], 0)}")
            d0 = degradation_test(current, reference).prior_df[0]
            print(f"| {kind} | {reference_days} | {d0:.0f} | " + " | ".join(cells) + " |")

    print("\n## BH false discovery proportion (%), mean over 60 fleets of 2,000, 10 % hit, delta = 0, "
          "plain / moderated")
    for kind, reference_days, increase in FDP_CASES:
        row = []
        for moderate in (False, True):
            fdp, found = [], []
            for rep in range(60):
                current, reference, hit = degraded_fleet(1_000 + rep, 2_000, reference_days, increase,
                                                         kind=kind)
                _, power, share = detection(current, reference, hit, moderate=moderate, delta=0.0)
                fdp.append(share)
                found.append(power)
            row.append(f"FDP {pct(np.mean(fdp), 2)} (found {pct(np.mean(found), 0)} %)")
        print(f"{kind}, reference {reference_days}, +{100 * increase:.0f} %: " + " | ".join(row))

    print("\n## d0 on the simulated delivery platform (3,000 zones, 35 days, absolute errors)")
    from mlma.simulate import simulate_platform

    for event_rate in (0.0, 1.0):
        data = simulate_platform(3_000, 35, seed=1, event_rate=event_rate, outages=event_rate > 0,
                                 expected=True).data
        y = data.pivot(index="unique_id", columns="ds", values="y").to_numpy()
        mean = data.pivot(index="unique_id", columns="ds", values="expected").to_numpy()
        for name, forecast in (("true mean", mean[:, 168:]), ("weekly naive", y[:, :-168])):
            losses = np.abs(y[:, 168:] - forecast)
            d0 = [np.nanmax(degradation_test(losses[:, -HOURS:], losses[:, -(k + 1) * HOURS:-HOURS]).prior_df)
                  for k in (4, 7, 14)]
            print(f"events x{event_rate}, {name}: d0 " + " / ".join(f"{v:.0f}" for v in d0))

    print("\n## Speed, 100,000 streams, 168 + 24 losses, test + BH (best of 5)")
    rng = np.random.default_rng(0)
    reference = np.abs(rng.standard_normal((100_000, 7 * HOURS)))
    current = np.abs(rng.standard_normal((100_000, HOURS)))
    times = {m: best_time(lambda m=m: fdr_control(degradation_test(current, reference, moderate=m).p_value,
                                                  ALPHA, "bh"), 5) for m in (False, True)}
    print(f"plain {times[False]:.3f} s, moderated {times[True]:.3f} s ({times[True] / times[False]:.2f}x)")


if __name__ == "__main__":  # pragma: no cover
    print_tables()
