"""The newest tick waits for feeds that report late ([agent] wait_for_share and max_wait).

The clock calls a tick complete once any stream reports past its end. Before the wait, one feed that reports
earlier than the others (or one stream whose clock runs ahead) made the whole fleet's tick run on part of its
day: every other stream's short batch was called broken data and the rest of its actuals were never scored.
Each test drives a small live project (6 hourly zones of the simulated platform, seasonal-naive models, fits
inline) through the commands a user runs, with the data dated around today so that the ingests are live.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mlma.live import LateActuals, LiveAgent
from mlma.project import ConfigError, init_project, load_config
from mlma.simulate import simulate_platform
from mlma.store import Store
from mlma.store import schema as S

FIRST_TICK = 28
WAITING = FIRST_TICK + 1          # the tick after the start-up step and tick 28: the one whose actuals come late


def today_utc() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()


def simulated(tick_end: pd.Timestamp) -> pd.DataFrame:
    """The platform's rows, moved in time so that tick ``WAITING`` (a day) ends at ``tick_end``."""
    data = simulate_platform(6, 40, seed=3).data
    start = data["ds"].min().normalize()
    return data.assign(ds=data["ds"] + (tick_end - pd.Timedelta(days=WAITING + 1) - start))


def days(fleet: pd.DataFrame, first: int, last: int) -> pd.DataFrame:
    d = (fleet["ds"] - fleet["ds"].min().normalize()) // pd.Timedelta("1D")
    return fleet[(d >= first) & (d < last)]


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.assign(ds=frame["ds"].dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(path, index=False)
    return path


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlma.cli", *args, "--project", str(root)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


def make_project(root: Path, fleet: pd.DataFrame, **keys) -> Path:
    """A project that ran its start-up step and tick 28 on ``fleet``'s first 29 days."""
    init_project(root, model="seasonal-naive")
    text = (root / "mlma.toml").read_text().replace('executor = "process"', 'executor = "inline"')
    for key, value in {"initial_ticks": FIRST_TICK, **keys}.items():
        text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert found == 1, f"{key} is not in the template"
    (root / "mlma.toml").write_text(text)
    done = cli(root, "ingest", str(write_csv(days(fleet, 0, WAITING), root.parent / "history.csv")))
    assert done.returncode == 0, done.stdout + done.stderr
    with LiveAgent(load_config(root)) as live:
        assert [r.tick for r in live.catch_up()] == [FIRST_TICK - 1, FIRST_TICK]
    return root


def early_and_partial(fleet: pd.DataFrame, hours: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Tick ``WAITING``'s day as a fleet with one early feed sends it: the first stream's whole day and its
    first row of the next day, the other streams' first ``hours`` hours; and the rest, which comes later."""
    day = days(fleet, WAITING, WAITING + 1)
    early = day["unique_id"].iloc[0]
    hour = day["ds"].dt.hour
    now = day[(day["unique_id"] == early) | (hour < hours)]
    nxt = days(fleet, WAITING + 1, WAITING + 2)
    now = pd.concat([now, nxt[nxt["unique_id"] == early].iloc[:1]])
    return now, day.drop(now.index, errors="ignore"), early


def ticks(root: Path) -> list[int]:
    with Store.open(load_config(root).store_url) as store:
        return store.ticks()["tick"].tolist()


def broken_batches(root: Path, tick: int) -> set[str]:
    """Streams whose batch of ``tick`` was called broken data (escalated as ``data-quality``)."""
    with Store.open(load_config(root).store_url) as store:
        escalations = store.escalations()
    found = escalations[(escalations["kind"] == "data-quality") & (escalations["tick"] == tick)]
    return set(found["unique_id"].dropna())


@pytest.fixture(scope="module")
def live_fleet() -> pd.DataFrame:
    # Tick WAITING ends at midnight tonight (UTC): its actuals are today's, and they are being ingested now.
    return simulated(today_utc() + pd.Timedelta(days=1))


@pytest.fixture(scope="module")
def base(tmp_path_factory, live_fleet) -> Path:
    return make_project(tmp_path_factory.mktemp("late") / "project", live_fleet)


@pytest.fixture()
def project(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "project"))


def test_the_newest_tick_waits_for_the_late_feeds_then_scores_all_its_actuals(project, live_fleet):
    now, rest, early = early_and_partial(live_fleet, hours=18)
    assert cli(project, "ingest", str(write_csv(now, project.parent / "now.csv"))).returncode == 0
    for command in (("tick",), ("tick", "--all")):
        waiting = cli(project, *command)
        assert waiting.returncode == 3, waiting.stdout + waiting.stderr
        assert f"tick {WAITING} " in waiting.stdout and "waits for the rest of its actuals" in waiting.stdout
        assert "wait_for_share" in waiting.stdout and "--no-wait" in waiting.stdout, waiting.stdout
    # 24 rows of the early stream and 18 of each of the five others: 114 of the 144 of tick 28 (79 %).
    assert "114 observation(s) in it, 79% of the 144 of tick 28" in " ".join(waiting.stdout.split())
    # The service says it once, however many rounds pass while it waits.
    service = cli(project, "run", "--every", "50ms", "--iterations", "4")
    assert service.returncode == 0 and service.stdout.count("waits for the rest of its actuals") == 1, service.stdout
    assert ticks(project) == [FIRST_TICK - 1, FIRST_TICK]
    # The late feeds deliver: the tick runs on every stream's whole day.
    assert cli(project, "ingest", str(write_csv(rest, project.parent / "rest.csv"))).returncode == 0
    ran = cli(project, "tick")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ticks(project) == [FIRST_TICK - 1, FIRST_TICK, WAITING]
    assert broken_batches(project, WAITING) == set()


def test_without_the_wait_the_early_feed_runs_the_tick_on_part_of_the_others_day(project, live_fleet):
    now, _, early = early_and_partial(live_fleet, hours=10)
    assert cli(project, "ingest", str(write_csv(now, project.parent / "now.csv"))).returncode == 0
    ran = cli(project, "tick", "--no-wait")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ticks(project) == [FIRST_TICK - 1, FIRST_TICK, WAITING]
    # What the wait prevents: every stream but the early one had its batch of 10 hours called broken data (less
    # than half its usual count), and the rest of its day, when it comes, is never scored.
    assert broken_batches(project, WAITING) == set(live_fleet["unique_id"].unique()) - {early}


def test_the_wait_ends_after_max_wait_and_a_fleet_that_shrank_waits_only_once(tmp_path):
    # Tick WAITING ended at midnight (UTC), so that the day after it can be complete too (its last hour is not
    # later than now plus [data] max_future).
    fleet = simulated(today_utc())
    project = make_project(tmp_path / "project", fleet, max_wait='"20s"')
    # Three of the six zones stop reporting for good; the others report their whole days from now on.
    kept = fleet["unique_id"].drop_duplicates().iloc[:3].tolist()
    shrunk = fleet[fleet["unique_id"].isin(kept)]
    today = days(shrunk, WAITING, WAITING + 1)
    ingested = time.monotonic()
    assert cli(project, "ingest", str(write_csv(today, project.parent / "today.csv"))).returncode == 0
    first = cli(project, "tick")
    assert first.returncode == 3 and "waits for the rest of its actuals" in first.stdout, first.stdout
    assert "72 observation(s) in it, 50% of the 144 of tick 28" in " ".join(first.stdout.split())
    deadline = time.monotonic() + 120
    while (ran := cli(project, "tick")).returncode == 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert time.monotonic() - ingested >= 20                  # it waited for max_wait after the ingest
    assert ticks(project)[-1] == WAITING
    # The next day of the smaller fleet is compared with this one: it runs at once.
    tomorrow = days(shrunk, WAITING + 1, WAITING + 2)
    assert cli(project, "ingest", str(write_csv(tomorrow, project.parent / "tomorrow.csv"))).returncode == 0
    again = cli(project, "tick")
    assert again.returncode == 0, again.stdout + again.stderr
    assert ticks(project)[-1] == WAITING + 1


def test_history_replayed_long_after_it_happened_never_waits(tmp_path):
    # The same early feed and partial day, dated in January 2025 and ingested now: nothing more will come.
    fleet = simulate_platform(6, 40, seed=3).data
    project = make_project(tmp_path / "project", fleet)
    now, _, _ = early_and_partial(fleet, hours=18)
    assert cli(project, "ingest", str(write_csv(now, project.parent / "now.csv"))).returncode == 0
    ran = cli(project, "tick")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ticks(project)[-1] == WAITING


@pytest.mark.parametrize("key, value, message", [
    ("wait_for_share", "1.5", "wait_for_share"),
    ("wait_for_share", "-0.1", "wait_for_share"),
    ("max_wait", '"2"', "max_wait must be a duration with its unit"),
    ("max_wait", '"8D"', "max_wait must be a duration"),
    ("max_wait", '"soon"', "max_wait must be a duration"),
])
def test_a_wrong_wait_setting_is_refused_by_name(tmp_path, key, value, message):
    root = tmp_path / "project"
    init_project(root, model="seasonal-naive")
    text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", (root / "mlma.toml").read_text())
    (root / "mlma.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(root)


def test_a_catch_up_runs_the_ticks_later_data_passed_and_stops_at_the_newest_that_waits(tmp_path):
    fleet = simulated(today_utc())                       # tick WAITING is yesterday, the next one today
    project = make_project(tmp_path / "project", fleet)
    yesterday, _, early = early_and_partial(fleet, hours=20)
    yesterday = yesterday[yesterday["ds"] < today_utc()]   # without its row of today
    today = days(fleet, WAITING + 1, WAITING + 2)
    today = today[(today["unique_id"] == early) | (today["ds"].dt.hour < 10)]
    tomorrow = days(fleet, WAITING + 2, WAITING + 3)
    first_row = tomorrow[tomorrow["unique_id"] == early].iloc[:1]
    data = write_csv(pd.concat([yesterday, today, first_row]), project.parent / "two-days.csv")
    assert cli(project, "ingest", str(data)).returncode == 0
    ran = cli(project, "tick", "--all")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # Yesterday's tick lacks some actuals too (20 of 24 hours of five streams), but today's have passed it.
    assert ticks(project)[-1] == WAITING
    text = " ".join(ran.stdout.split())
    assert f"next: tick {WAITING + 1} " in text and "waits for the rest of its actuals" in text, text


def test_one_streams_rows_days_ahead_do_not_make_the_fleets_tick_a_catch_up(tmp_path):
    """With [data] max_future off, one stream whose clock runs days ahead (a stray row three days on) made every
    tick up to it complete, and the fleet's tick, the newest its actuals reached, counted as a catch-up: it ran
    on part of its hours (the other streams' batches called broken data, their other hours never scored), and
    so did each tick after it. A tick that only a few streams passed waits as the fleet's front does, counting
    max_wait from the first of its streams reaching its end (the stray row, and the tick's first hours, came
    in hours earlier)."""
    fleet = simulated(today_utc() + pd.Timedelta(days=1))    # tick WAITING ends tonight
    project = make_project(tmp_path / "project", fleet, max_future='"off"')
    day = days(fleet, WAITING, WAITING + 1)
    zones = day["unique_id"].drop_duplicates().tolist()
    later = days(fleet, WAITING + 3, WAITING + 4)
    stray = later[later["unique_id"] == zones[0]].iloc[:1]
    morning = day[day["ds"].dt.hour < 6]
    for frame, name in ((stray, "stray.csv"), (morning, "morning.csv")):
        assert cli(project, "ingest", str(write_csv(frame, project.parent / name))).returncode == 0
    with Store.open(load_config(project).store_url) as store:
        with store.engine.begin() as conn:   # they came in three hours ago (max_wait is two hours)
            for ingest, at in conn.execute(sa.select(S.ingests.c.id, S.ingests.c.at)).all():
                conn.execute(sa.update(S.ingests).where(S.ingests.c.id == ingest)
                             .values(at=at - dt.timedelta(hours=3)))
    # Now half the zones complete their day and the others reach 18:00: 126 of 144 observations (87.5 %).
    rest = day[(day["ds"].dt.hour >= 6) & (day["unique_id"].isin(zones[:3]) | (day["ds"].dt.hour < 18))]
    assert cli(project, "ingest", str(write_csv(rest, project.parent / "rest.csv"))).returncode == 0
    waiting = cli(project, "tick", "--all")
    assert waiting.returncode == 3, waiting.stdout + waiting.stderr
    assert f"tick {WAITING} " in waiting.stdout and "waits for the rest of its actuals" in waiting.stdout
    assert "126 observation(s) in it, 88% of the 144" in " ".join(waiting.stdout.split()), waiting.stdout
    assert ticks(project) == [FIRST_TICK - 1, FIRST_TICK]
    late = day[(day["ds"].dt.hour >= 18) & ~day["unique_id"].isin(zones[:3])]
    assert cli(project, "ingest", str(write_csv(late, project.parent / "late.csv"))).returncode == 0
    ran = cli(project, "tick", "--all")
    assert ticks(project)[-1] == WAITING, ran.stdout + ran.stderr
    assert broken_batches(project, WAITING) == set()
    # The next tick has no actuals yet (the stray row is two ticks later): it is held, not run on nothing.
    text = " ".join(ran.stdout.split())
    assert f"tick {WAITING + 1} (" in text and "is held: 6 of the 6 streams" in text, text


def test_a_feed_that_revises_its_newest_rows_does_not_move_the_wait_on(project, live_fleet):
    # The early feed sends its day and its first row of tomorrow, then re-sends its newest hours with their
    # counts updated, as a running count does. The wait counts from when the first of those rows came in, not
    # from their last revision: else a feed re-sending every ten minutes kept the tick waiting until a day passed.
    now, _, early = early_and_partial(live_fleet, hours=18)
    assert cli(project, "ingest", str(write_csv(now, project.parent / "now.csv"))).returncode == 0
    with Store.open(load_config(project).store_url) as store:
        with store.engine.begin() as conn:   # that ingest came in 40 minutes ago (max_wait is 30 minutes)
            for ingest, at in conn.execute(sa.select(S.ingests.c.id, S.ingests.c.at)).all():
                conn.execute(sa.update(S.ingests).where(S.ingests.c.id == ingest)
                             .values(at=at - dt.timedelta(minutes=40)))
    newest = now[now["unique_id"] == early].nlargest(2, "ds")
    resent = write_csv(newest.assign(y=newest["y"] + 1), project.parent / "resent.csv")
    assert cli(project, "ingest", str(resent)).returncode == 0
    text = (project / "mlma.toml").read_text()
    (project / "mlma.toml").write_text(re.sub(r'(?m)^max_wait = .*$', 'max_wait = "30min"', text))
    ran = cli(project, "tick")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ticks(project)[-1] == WAITING


def test_the_wait_counts_by_the_stores_clock(project, live_fleet, monkeypatch):
    # The deadline is the arrival plus max_wait, both read on the store's clock (PostgreSQL's, maybe on another
    # host than the agent): with that clock three hours on, the tick runs; with the real one, it waits.
    from mlma.store.store import Store as StoreClass

    now, _, _ = early_and_partial(live_fleet, hours=18)
    assert cli(project, "ingest", str(write_csv(now, project.parent / "now.csv"))).returncode == 0
    with LiveAgent(load_config(project), executor="inline") as live:
        with pytest.raises(LateActuals, match=f"tick {WAITING} .* waits for the rest of its actuals"):
            live.due_tick()
        store_now = StoreClass._now
        monkeypatch.setattr(StoreClass, "_now", lambda self, conn: store_now(self, conn) + dt.timedelta(hours=3))
        assert live.due_tick() == (WAITING, False)


def test_a_quiet_day_of_a_sparse_fleet_is_compared_with_the_same_day_a_week_before(tmp_path):
    # Counts stored only when they are not zero, and one quiet weekday (a Sunday) with a third of the traffic:
    # that day has a third fewer rows than the day before although all its actuals are in. It runs at once; before,
    # it waited max_wait every week. A late feed on that day still makes it wait.
    rng = np.random.default_rng(0)
    end = today_utc() + pd.Timedelta(days=1)
    ds = pd.date_range(end - pd.Timedelta(days=WAITING + 1), end + pd.Timedelta(days=1), freq="h", inclusive="left")
    hourly = 3 * np.clip(1 + np.sin((ds.hour.to_numpy() - 6) / 24 * 2 * np.pi), 0.05, None)
    rate = hourly * np.where(ds.day_of_week.to_numpy() == today_utc().day_of_week, 0.3, 1.0)
    fleet = pd.concat([pd.DataFrame({"unique_id": f"zone{s:02d}", "ds": ds, "y": rng.poisson(rate).astype(float)})
                       for s in range(20)])
    fleet = fleet[fleet["y"] > 0]
    project = make_project(tmp_path / "project", fleet)
    today = days(fleet, WAITING, WAITING + 1)
    yesterday = days(fleet, WAITING - 1, WAITING)
    assert len(today) < 0.8 * len(yesterday)
    # An export of the last two days: one zone has its whole day and a row of its last hour (it may have none: 0
    # is not stored), the others their morning only (with yesterday's rows, so that 1h is their frequency).
    early = (today["unique_id"] == "zone00") | (today["ds"].dt.hour < 12)
    last_hour = pd.DataFrame({"unique_id": ["zone00"], "ds": [end - pd.Timedelta(hours=1)], "y": [1.0]})
    first = pd.concat([yesterday, today[early], last_hour]).drop_duplicates(["unique_id", "ds"])
    done = cli(project, "ingest", str(write_csv(first, project.parent / "early.csv")))
    assert done.returncode == 0, done.stdout + done.stderr
    waiting = cli(project, "tick")
    assert waiting.returncode == 3 and "waits for the rest of its actuals" in waiting.stdout, waiting.stdout
    assert f"of tick {WAITING - 7} (the tick a week before;" in " ".join(waiting.stdout.split())
    whole = write_csv(pd.concat([yesterday, today]), project.parent / "two-days.csv")   # the same export, whole
    assert cli(project, "ingest", str(whole)).returncode == 0
    ran = cli(project, "tick")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ticks(project)[-1] == WAITING


def test_a_person_who_allows_a_tick_without_data_does_not_wait_for_its_actuals_first(project, live_fleet):
    # Only the early feed reported: nearly every served stream has no data in the tick, which is also the front.
    now, _, early = early_and_partial(live_fleet, hours=0)
    assert set(now["unique_id"]) == {early}
    assert cli(project, "ingest", str(write_csv(now, project.parent / "now.csv"))).returncode == 0
    assert cli(project, "tick").returncode == 3                        # it waits for the other feeds first
    allowed = cli(project, "tick", "--allow-no-data", "--by", "ana", "--reason", "the other depots were closed")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert ticks(project)[-1] == WAITING
