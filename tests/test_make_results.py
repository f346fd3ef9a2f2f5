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
