"""``scripts/make_results.sh``, the script that measures what docs/results.md reports: a small simulated platform
end to end (the default MLMA, its budget swept, the tables), and its refusals (a tuning seed, a folder holding
another platform size, whose results it would overwrite)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_results.sh"


def make_results(out: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the script into ``out`` with this interpreter's mlma, no real panels and no detector sweeps."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    settings = dict(os.environ, MLMA=f"{sys.executable} -m mlma.cli", PYTHON=sys.executable, PYTHONPATH=path,
                    PANELS="", SWEEPS="", BOOTSTRAP="50") | env
    return subprocess.run(["bash", str(SCRIPT), str(out)], env=settings, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_a_small_platform_is_measured_and_a_folder_of_another_size_is_refused(tmp_path):
    done = make_results(tmp_path, SEEDS="7", ZONES="12", DAYS="30")
    assert done.returncode == 0, done.stderr[-2000:]
    tables = (tmp_path / "tables.md").read_text()
    assert "## sim-7-ridge" in tables
    rows = [line for line in tables.splitlines() if line.startswith("| mlma")]
    assert [row.split("|")[1].strip() for row in rows] == [
        "mlma", "mlma:budget=0.01", "mlma:budget=0.03", "mlma:budget=0.1", "mlma:budget=0.3"]
    assert all("[" in row for row in rows), "every MLMA row has a gap with its bootstrap interval"
    assert (tmp_path / "platform-7-12z-30d.parquet").exists()

    # Another size into the same folder would overwrite sim-7-ridge and tables.md: refused, nothing changed.
    other = make_results(tmp_path, SEEDS="7", ZONES="14", DAYS="30")
    assert other.returncode == 2
    assert "zones=12 days=30, not zones=14 days=30" in other.stderr
    assert (tmp_path / "tables.md").read_text() == tables
    assert not (tmp_path / "platform-7-14z-30d.parquet").exists()


def test_a_tuning_seed_is_refused_before_anything_is_simulated(tmp_path):
    refused = make_results(tmp_path, SEEDS="7 3", ZONES="12", DAYS="30")
    assert refused.returncode == 2
    assert "seed 3 is a tuning seed" in refused.stderr
    assert not list(tmp_path.glob("platform*"))


def test_tuning_and_report_data_are_never_mixed_in_one_run(tmp_path):
    """Settings are chosen on the tuning data (seeds 1 to 6, `mlma datasets --use tuning`) and reported on the
    rest: each kind of run refuses the other's seeds and panels before anything is simulated or measured."""
    refusals = [({"USE": "tuning", "SEEDS": "3 7"}, "seed 7 is a report seed"),
                ({"USE": "tuning", "SEEDS": "", "PANELS": "taylor vic-elec"}, "panel vic-elec is not a tuning panel"),
                ({"SEEDS": "", "PANELS": "pbs prison"}, "panel prison is not a report panel"),
                ({"USE": "tune"}, "USE must be report or tuning")]
    for env, message in refusals:
        refused = make_results(tmp_path, ZONES="12", DAYS="30", **env)
        assert refused.returncode == 2, (env, refused.stderr)
        assert message in refused.stderr, (env, refused.stderr)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
