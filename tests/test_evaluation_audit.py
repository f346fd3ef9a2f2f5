"""Known-answer checks of mlma.evaluation found by an audit of the frontier, the gap and its interval."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlma.evaluation import MIN_STREAMS_FOR_INTERVAL, frontier_gaps


def fleet(n_scored: int, n_empty: int, seed: int = 0) -> pd.DataFrame:
    """``n_scored`` streams scored under every policy, then ``n_empty`` with no scored point and no
    re-training (a stream that ended before scoring began, or launched too late to get a model)."""
    rng = np.random.default_rng(seed)
    factors = {"never": 1.3, "periodic:4": 1.1, "always": 1.0, "x": 1.1}
    costs = {"never": 0, "periodic:4": 5, "always": 20, "x": 3}
    level = rng.lognormal(0.0, 0.5, n_scored)
    rows = []
    for policy, factor in factors.items():
        mae = np.concatenate([level * factor * rng.gamma(20.0, 1 / 20.0, n_scored), np.full(n_empty, np.nan)])
        rows.append(pd.DataFrame({
            "policy": policy, "unique_id": [f"s{i}" for i in range(n_scored + n_empty)], "mae": mae,
            "n_scored": np.r_[np.full(n_scored, 50), np.zeros(n_empty, dtype=int)],
            "retrains": np.r_[np.full(n_scored, costs[policy]), np.zeros(n_empty, dtype=int)]}))
    return pd.concat(rows, ignore_index=True)


def test_streams_without_a_scored_point_do_not_make_up_the_minimum_for_an_interval():
    # 8 measured streams and 4 that never got a point: 8 < 10, so no interval, as for 8 streams alone.
    assert MIN_STREAMS_FOR_INTERVAL == 10
    gap = frontier_gaps(fleet(8, 4), n_boot=200)["gaps"]["x"]
    alone = frontier_gaps(fleet(8, 0), n_boot=200)["gaps"]["x"]
    assert gap["gap_pct"] == alone["gap_pct"]
    assert gap["gap_low"] is None and gap["gap_high"] is None


def test_streams_without_a_scored_point_leave_the_interval_unchanged():
    # They weigh nothing in any MAE or cost; in the resample they took places of measured streams.
    alone = frontier_gaps(fleet(60, 0), n_boot=300, seed=4)["gaps"]["x"]
    padded = frontier_gaps(fleet(60, 60), n_boot=300, seed=4)["gaps"]["x"]
    assert padded == alone
