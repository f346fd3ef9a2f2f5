"""`mlma status` says whether the due tick waits for its late actuals ([agent] wait_for_share and max_wait).

It asks as `mlma tick` asks (``LiveAgent.check_late_actuals``), only of a tick that is due. Each test drives the
small live project of ``test_late_actuals`` (6 hourly zones, seasonal-naive, data dated around today) through
the commands a user runs, and reads `mlma status` both ways: through its quick path where that answers, and
through the store and the live agent.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from test_late_actuals import WAITING, cli, early_and_partial, make_project, simulated, ticks, today_utc, write_csv

from mlma.project import load_config
from mlma.store import Store
from mlma.store import schema as S

STATUS_THROUGH_THE_STORE = """
import sys
sys.argv = ["mlma", "status", "--project", sys.argv[1]]
import mlma.store.glance
mlma.store.glance.glance = lambda url: None   # as for a store the quick path does not read
from mlma.cli import app
app()
"""


def status(project: Path) -> dict[str, str]:
    """`mlma status`'s rows (a wrapped value joined up), the same through the quick path and through the store."""
    quick = cli(project, "status")
    full = subprocess.run([sys.executable, "-c", STATUS_THROUGH_THE_STORE, str(project)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert quick.returncode == 0 and full.returncode == 0, quick.stdout + quick.stderr + full.stdout + full.stderr
    assert quick.stdout == full.stdout
    rows: dict[str, str] = {}
    key = None
    for line in quick.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) != 4:
            continue
        key = cells[1] or key
        rows[key] = f"{rows.get(key, '')} {cells[2]}".strip()
    return rows


def quick_path_answers(project: Path) -> bool:
    from mlma.cli import _due_from
    from mlma.store.glance import glance

    view = glance(load_config(project).store_url)
    return view is not None and _due_from(view) is not None


def set_key(project: Path, key: str, value: str) -> None:
    toml = project / "mlma.toml"
    text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", toml.read_text())
    assert found == 1
    toml.write_text(text)


def tick_deadline(output: str) -> str:
    """The time `mlma tick` says the waiting tick runs at the latest."""
    found = re.search(r"or at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC \(\[agent\] max_wait", " ".join(output.split()))
    assert found, output
    return found.group(1)


@pytest.fixture(scope="module", params=["ends-tonight", "ended-at-midnight"])
def fleet(request) -> pd.DataFrame:
    # Tick WAITING ends at midnight tonight (the early feed's row past it is dated tomorrow: `mlma status` asks the
    # store and the live agent), or ended at midnight (its quick path answers).
    return simulated(today_utc() + pd.Timedelta(days=int(request.param == "ends-tonight")))


@pytest.fixture(scope="module")
def base(tmp_path_factory, fleet) -> Path:
    return make_project(tmp_path_factory.mktemp("status-wait") / "project", fleet)


@pytest.fixture()
def project(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "project"))


def test_a_due_tick_that_waits_says_how_much_is_in_and_until_when(project, fleet):
    now, _, _ = early_and_partial(fleet, hours=18)
    assert cli(project, "ingest", str(write_csv(now, project.parent / "now.csv"))).returncode == 0
    # The quick path answers unless the newest actual is dated after now.
    assert quick_path_answers(project) == (now["ds"].max() <= pd.Timestamp.now(tz="UTC").tz_localize(None))
    rows = status(project)
    assert rows["next tick due"] == f"tick {WAITING}, waiting for late actuals", rows
    # 24 rows of the early stream and 18 of each of the five others: 114 of the 144 of tick 28 (79 %).
    waiting = rows["waiting"]
    assert waiting.startswith(f"79% of the usual observations in (114 of 144, as in tick {WAITING - 1}; [agent] "
                              "wait_for_share = 0.9); it runs once they reach that share, or at "), waiting
    assert waiting.endswith("[agent] max_wait = '2h'); `mlma tick --no-wait` runs it now"), waiting
    # Two hours after the ingest that brought the first actual past its end, the time `mlma tick` says.
    with Store.open(load_config(project).store_url) as store:
        arrived = pd.Timestamp(store.ingests()["at"].max()).tz_convert("UTC").tz_localize(None)
    deadline = re.search(r"or at (\S+ \S+) UTC at the latest \(in (\d+)h(\d\d)m;", waiting)
    assert deadline, waiting
    assert pd.Timestamp(deadline.group(1)) == (arrived + pd.Timedelta(hours=2)).floor("s")
    assert 110 <= 60 * int(deadline.group(2)) + int(deadline.group(3)) <= 120
    waited = cli(project, "tick")
    assert waited.returncode == 3 and tick_deadline(waited.stdout) == deadline.group(1), waited.stdout
    assert ticks(project)[-1] == WAITING - 1


def test_a_due_tick_with_its_actuals_in_does_not_wait(project, fleet):
    now, rest, _ = early_and_partial(fleet, hours=18)
    assert cli(project, "ingest", str(write_csv(pd.concat([now, rest]), project.parent / "all.csv"))).returncode == 0
    rows = status(project)
    assert rows["next tick due"] == f"tick {WAITING}" and "waiting" not in rows, rows
    ran = cli(project, "tick")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ticks(project)[-1] == WAITING


def test_a_due_tick_past_max_wait_does_not_wait(project, fleet):
    now, _, _ = early_and_partial(fleet, hours=18)
    assert cli(project, "ingest", str(write_csv(now, project.parent / "now.csv"))).returncode == 0
    assert "waiting" in status(project)
    with Store.open(load_config(project).store_url) as store:
        with store.engine.begin() as conn:   # that ingest came in three hours ago (max_wait is two hours)
            for ingest, at in conn.execute(sa.select(S.ingests.c.id, S.ingests.c.at)).all():
                conn.execute(sa.update(S.ingests).where(S.ingests.c.id == ingest)
                             .values(at=at - dt.timedelta(hours=3)))
    rows = status(project)
    assert rows["next tick due"] == f"tick {WAITING}" and "waiting" not in rows, rows
    ran = cli(project, "tick")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ticks(project)[-1] == WAITING


def test_nothing_waits_with_wait_for_share_0(project, fleet):
    now, _, _ = early_and_partial(fleet, hours=18)
    assert cli(project, "ingest", str(write_csv(now, project.parent / "now.csv"))).returncode == 0
    set_key(project, "wait_for_share", "0")
    rows = status(project)
    assert rows["next tick due"] == f"tick {WAITING}" and "waiting" not in rows, rows
    ran = cli(project, "tick")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ticks(project)[-1] == WAITING
