"""`mlma table`: one folder's full table, or one table of gaps and labour over several folders."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mlma.cli import app


def write_summary(folder, policies):
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"config": {}, "policies": policies, "frontier": []}))


def test_table_over_several_runs_lists_each_run_and_policy(tmp_path):
    rows = [{"policy": "mlma", "mae": 1.1, "retrains": 2, "gap_pct": -0.5, "gap_low": -0.9, "gap_high": -0.1,
             "escalations_per_1k_stream_days": 0.4, "escalation_precision": 0.9},
            {"policy": "always", "mae": 1.0, "retrains": 100, "gap_pct": 0.0, "frontier_only": True}]
    write_summary(tmp_path / "sim-7", rows)
    write_summary(tmp_path / "sim-11", rows)
    result = CliRunner().invoke(app, ["table", str(tmp_path / "sim-7"), str(tmp_path / "sim-11")])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[2] == "| sim-7 | mlma | 1.100 | 0.020 | -0.50 [-0.90, -0.10] | - | - | 0.40 | - | - | 0.90 |"
    assert lines[3].startswith("| sim-11 | mlma |") and len(lines) == 4  # the added schedule is left out
    everything = CliRunner().invoke(app, ["table", "--all", str(tmp_path / "sim-7"), str(tmp_path / "sim-11")])
    assert "| sim-7 | always |" in everything.output


def test_table_names_a_folder_without_summary(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["table", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no summary.json in" in result.output
