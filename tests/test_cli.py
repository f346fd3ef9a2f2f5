"""End-to-end runs of the installed ``mlma`` command, as a user would type them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

MLMA = str(Path(sys.executable).parent / "mlma")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MLMA, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_tiny_platform(tmp_path):
    done = run("demo", "--zones", "8", "--days", "40", "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    policies = [p["policy"] for p in summary["policies"] if not p["frontier_only"]]
    assert policies == ["never", "periodic:7", "always", "mlma", "adwin", "page-hinkley"]
    # The demo adds the frontier's schedules and gives every policy its gap to them.
    assert len(summary["frontier"]) > 3 and summary["policies"][3]["gap_pct"] is not None
    assert all(p["mae"] is not None and p["mae"] > 0 for p in summary["policies"])
    assert (out / "report.html").exists() and (out / "platform.parquet").exists()
    assert "mlma" in done.stdout and "MAE" in done.stdout


@pytest.mark.slow
def test_simulate_then_backtest_a_file(tmp_path):
    sim = run("simulate", "--zones", "6", "--days", "35", "--seed", "3", "--out", "zones.csv", cwd=tmp_path)
    assert sim.returncode == 0, sim.stderr
    assert (tmp_path / "zones.events.csv").exists()
    bt = run("backtest", "--data", "zones.csv", "--policies", "never,periodic:7,always,mlma",
             "--model", "seasonal-naive", "--out", "res", cwd=tmp_path)
    assert bt.returncode == 0, bt.stdout + bt.stderr
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    row = {p["policy"]: p for p in summary["policies"]}
    assert row["never"]["retrains"] == 0
    assert "detection_recall" in row["mlma"]
    per_stream = pd.read_csv(tmp_path / "res" / "per_stream.csv")
    assert per_stream["unique_id"].nunique() == 6


@pytest.mark.slow
def test_backtest_on_bundled_real_data_with_custom_columns(tmp_path):
    from mlma.datasets import load_dataset

    frame = load_dataset("aus-retail")
    keep = frame["unique_id"].drop_duplicates().head(12)
    frame = frame[frame["unique_id"].isin(keep)].rename(columns={"unique_id": "series", "ds": "month",
                                                                 "y": "turnover"})
    frame.to_csv(tmp_path / "retail.csv", index=False)
    bt = run("backtest", "--data", "retail.csv", "--policies", "never,periodic:2,always,mlma",
             "--model", "ridge", "--id-col", "series", "--time-col", "month", "--target-col", "turnover",
             "--out", "res", cwd=tmp_path)
    assert bt.returncode == 0, bt.stdout + bt.stderr
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    assert summary["config"]["freq"] == "MS" and summary["config"]["n_streams"] == 12


def test_bad_input_gets_a_clear_error_naming_the_column(tmp_path):
    pd.DataFrame({"unique_id": ["a"], "when": ["2025-01-01"], "y": [1.0]}).to_csv(tmp_path / "bad.csv",
                                                                               index=False)
    bt = run("backtest", "--data", "bad.csv", "--out", "res", cwd=tmp_path)
    assert bt.returncode == 2
    assert "ds" in bt.stdout and "bad.csv" in bt.stdout
    assert not (tmp_path / "res").exists()


def test_unknown_policy_is_rejected(tmp_path):
    pd.DataFrame({"unique_id": ["a"] * 3, "ds": ["2025-01-01", "2025-01-02", "2025-01-03"],
                  "y": [1.0, 2, 3]}).to_csv(tmp_path / "d.csv", index=False)
    bt = run("backtest", "--data", "d.csv", "--policies", "never,sometimes", cwd=tmp_path)
    assert bt.returncode == 2 and "unknown policy" in bt.stdout
