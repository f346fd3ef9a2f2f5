"""The schedule frontier, the gap to it and its bootstrap interval (mlma.evaluation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlma.evaluation import default_periods, frontier_gaps, frontier_mae, frontier_points, is_schedule


def test_frontier_interpolates_on_log_one_plus_retrainings():
    retrains, mae = [0, 9, 99], [3.0, 2.0, 1.0]
    # log1p(9) = log(10), log1p(99) = log(100): 31 re-trainings sit at log(32), 0.505 of the way.
    share = (np.log(32) - np.log(10)) / (np.log(100) - np.log(10))
    assert frontier_mae(retrains, mae, 31) == pytest.approx(2.0 - share)
    # Between never and the first schedule the axis starts at log1p(0) = 0.
    assert frontier_mae(retrains, mae, 2) == pytest.approx(3.0 - np.log(3) / np.log(10))
    # At a schedule the frontier is that schedule; past the dearest one it stays there.
    assert frontier_mae(retrains, mae, [0, 9, 99, 5000]).tolist() == pytest.approx([3.0, 2.0, 1.0, 1.0])


def test_dominated_schedules_leave_the_frontier():
    # periodic at 50 re-trainings is worse than the one at 10: it must not bend the frontier upwards.
    x, y = frontier_points([0, 10, 50, 200], [3.0, 2.0, 2.5, 1.0])
    assert np.expm1(x).round().tolist() == [0, 10, 200]
    at = 50
    share = (np.log1p(50) - np.log1p(10)) / (np.log1p(200) - np.log1p(10))
    assert frontier_mae([0, 10, 50, 200], [3.0, 2.0, 2.5, 1.0], at) == pytest.approx(2.0 - share)
    # Below the cheapest schedule the frontier says nothing.
    assert np.isnan(frontier_mae([5, 10], [2.0, 1.0], 1))


def test_schedules_and_periods():
    assert is_schedule("periodic:14") and not is_schedule("periodic:14:sync") and not is_schedule("adwin")
    periods = default_periods(300)
    assert len(periods) == 10 and periods == sorted(periods) and periods[0] == 2 and periods[-1] == 16 * 300
    # Geometric: each period about the same factor above the one before.
    ratios = np.diff(np.log(periods))
    assert ratios.max() < 1.2 * ratios.mean()


def per_stream_frame(stream_mae: dict[str, np.ndarray], stream_retrains: dict[str, np.ndarray],
                     n_scored: int = 100) -> pd.DataFrame:
    rows = []
    for policy, mae in stream_mae.items():
        rows.append(pd.DataFrame({"policy": policy, "unique_id": [f"s{i}" for i in range(len(mae))], "mae": mae,
                                  "n_scored": n_scored, "retrains": stream_retrains[policy]}))
    return pd.concat(rows, ignore_index=True)


def test_gap_point_estimate_by_hand():
    mae = {"never": np.array([3.0, 5.0]), "periodic:4": np.array([2.0, 4.0]), "always": np.array([1.5, 2.5]),
           "mlma": np.array([2.0, 3.0])}
    retrains = {"never": [0, 0], "periodic:4": [5, 5], "always": [20, 20], "mlma": [1, 5]}
    out = frontier_gaps(per_stream_frame(mae, retrains), n_boot=0)
    # Fleet MAEs: never 4, periodic 3, always 2, mlma 2.5 at 6 re-trainings (schedules: 0, 10, 40).
    frontier = 4.0 - (4.0 - 3.0) * np.log1p(6) / np.log1p(10)
    assert out["gaps"]["mlma"]["gap_pct"] == pytest.approx(100 * (2.5 - frontier) / 2.0, abs=1e-3)
    assert out["gaps"]["mlma"]["gap_low"] is None  # no replicates, no interval
    assert [f["policy"] for f in out["frontier"]] == ["never", "periodic:4", "always"]


def test_a_handful_of_streams_gets_no_interval():
    frame, _ = synthetic_fleet(np.random.default_rng(0), 9)
    gap = frontier_gaps(frame, n_boot=100)["gaps"]["x"]
    assert gap["gap_pct"] is not None and gap["gap_low"] is None and gap["gap_high"] is None
    frame, _ = synthetic_fleet(np.random.default_rng(0), 10)
    assert frontier_gaps(frame, n_boot=100)["gaps"]["x"]["gap_low"] is not None


def test_no_gap_without_always():
    mae = {"never": np.array([3.0]), "periodic:4": np.array([2.0])}
    assert frontier_gaps(per_stream_frame(mae, {"never": [0], "periodic:4": [5]}), n_boot=10) == {}


def synthetic_fleet(rng, n_streams: int):
    """A fleet whose population gap is known: per-stream MAE = level x policy factor x noise."""
    level = rng.lognormal(0.0, 0.5, n_streams)
    factors = {"never": 1.30, "periodic:8": 1.12, "periodic:2": 1.03, "always": 1.00, "x": 1.10}
    per_stream_retrains = {"never": 0, "periodic:8": 5, "periodic:2": 20, "always": 40}
    mae, retrains = {}, {}
    for policy, f in factors.items():
        mae[policy] = level * f * rng.gamma(20.0, 1 / 20.0, n_streams)  # mean-one noise, sd about 0.22
        retrains[policy] = (np.full(n_streams, per_stream_retrains[policy]) if policy != "x"
                            else rng.poisson(3.0, n_streams))
    # The population: E[level x factor x noise] / E[n] = factor x E[level]; re-trainings 3 a stream.
    x = np.log1p(3.0 * n_streams)
    xs = np.log1p(np.array([0, 5, 20]) * n_streams)
    frontier = np.interp(x, xs, [1.30, 1.12, 1.03])
    true_gap = 100 * (1.10 - frontier) / 1.00
    return per_stream_frame(mae, retrains), true_gap


def test_bootstrap_interval_covers_the_true_gap_at_its_level():
    rng = np.random.default_rng(11)
    replications, n_streams = 200, 200
    covered, widths = 0, []
    for _ in range(replications):
        frame, true_gap = synthetic_fleet(rng, n_streams)
        gap = frontier_gaps(frame, n_boot=300, seed=int(rng.integers(1 << 30)))["gaps"]["x"]
        covered += gap["gap_low"] <= true_gap <= gap["gap_high"]
        widths.append(gap["gap_high"] - gap["gap_low"])
    rate = covered / replications
    # 95 % nominal; three binomial standard errors of 200 replications, plus 1.5 % for the percentile
    # bootstrap's known small-sample undercoverage and the Monte Carlo error of 300 replicates.
    se = np.sqrt(0.95 * 0.05 / replications)
    assert 0.95 - 3 * se - 0.015 <= rate <= min(1.0, 0.95 + 3 * se), rate
    assert np.median(widths) > 0


def test_interval_is_reproducible_and_shrinks_with_more_streams():
    small, _ = synthetic_fleet(np.random.default_rng(1), 50)
    large, _ = synthetic_fleet(np.random.default_rng(1), 800)
    a = frontier_gaps(small, n_boot=300, seed=3)["gaps"]["x"]
    assert frontier_gaps(small, n_boot=300, seed=3)["gaps"]["x"] == a
    b = frontier_gaps(large, n_boot=300, seed=3)["gaps"]["x"]
    # Width scales as 1 / sqrt(streams): 16 times the streams, about a quarter of the width.
    ratio = (b["gap_high"] - b["gap_low"]) / (a["gap_high"] - a["gap_low"])
    assert 0.15 < ratio < 0.4


def test_clairvoyant_curve_matches_a_brute_force_search():
    import itertools

    from mlma.evaluation import clairvoyant_curve

    rng = np.random.default_rng(5)
    for _ in range(20):
        n_streams, n_options = 4, 3
        retrains = np.sort(rng.integers(0, 12, (n_streams, n_options)), axis=1)
        retrains[:, 0] = 0
        errors = rng.uniform(5, 15, (n_streams, n_options))
        cost, err = clairvoyant_curve(errors, retrains)
        choices = list(itertools.product(range(n_options), repeat=n_streams))
        totals = np.array([sum(retrains[s, c] for s, c in enumerate(ch)) for ch in choices])
        errs = np.array([sum(errors[s, c] for s, c in enumerate(ch)) for ch in choices])
        for budget in range(0, int(retrains.sum()) + 1):
            best = errs[totals <= budget].min()
            bound = np.interp(budget, cost, err)
            # A lower bound at every budget (the relaxation), and exact at the curve's corners.
            assert bound <= best + 1e-9
            if budget in cost:
                assert bound == pytest.approx(best)


def test_clairvoyant_bound_spends_the_retrainings_where_they_pay():
    # Half the streams (the odd ones) halve their error when re-trained; the others gain nothing. Schedules
    # spread re-trainings evenly; the oracle puts them on the odd streams.
    n = 40
    pays = np.arange(n) % 2 == 1
    mae = {"never": np.full(n, 2.0), "periodic:4": np.where(pays, 1.5, 2.0), "always": np.where(pays, 1.0, 2.0),
           "x": np.where(pays, 1.0, 2.0)}
    retrains = {"never": np.zeros(n), "periodic:4": np.full(n, 5), "always": np.full(n, 20),
                "x": np.where(pays, 20, 0)}
    out = frontier_gaps(per_stream_frame(mae, retrains), n_boot=0)
    gap = out["gaps"]["x"]
    # x re-trains only the odd streams: 400 re-trainings, half of always's, for always's MAE of 1.5.
    assert gap["clairvoyant_mae"] == pytest.approx(1.5)
    assert gap["gap_pct"] < 0 and gap["headroom_pct"] > 0
    frontier = 2.0 - 0.25 * np.log1p(200) / np.log1p(200) - 0.25 * (np.log1p(400) - np.log1p(200)) / (
        np.log1p(800) - np.log1p(200))
    assert gap["frontier_mae"] == pytest.approx(frontier)
    assert gap["headroom_pct"] == pytest.approx(100 * (frontier - 1.5) / 1.5, abs=1e-3)
