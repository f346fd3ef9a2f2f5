"""Hostile and broken data files never stop the fleet (issue 11, the data and store half).

Each test feeds a live project one kind of bad input through the command a user runs (`mlma ingest`,
`mlma tick`) and then checks that the real data that follows still ingests, ticks and forecasts for every
stream. The projects are small (6 hourly zones of the simulated platform, seasonal-naive models, fits inline)
so that the whole file runs in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mlma.live import LiveAgent
from mlma.project import init_project, load_config
from mlma.simulate import simulate_platform
from mlma.store import Store, TickRecord, TickSummary
from mlma.store import schema as S

FIRST_TICK = 28
HISTORY_DAYS = FIRST_TICK + 1   # the start-up step fits on 28 days, then tick 28 is scored


@pytest.fixture(scope="module")
def fleet() -> pd.DataFrame:
    return simulate_platform(6, 40, seed=3).data


def day0(fleet: pd.DataFrame) -> pd.Timestamp:
    return fleet["ds"].min().normalize()


def days(fleet: pd.DataFrame, first: int, last: int) -> pd.DataFrame:
    """The rows of days ``first`` to ``last - 1``."""
    d = (fleet["ds"] - day0(fleet)) // pd.Timedelta("1D")
    return fleet[(d >= first) & (d < last)]


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    out = frame.copy()
    if pd.api.types.is_datetime64_dtype(out["ds"]):
        out["ds"] = out["ds"].dt.strftime("%Y-%m-%d %H:%M:%S")
    out.to_csv(path, index=False)
    return path


def make_project(root: Path, **keys) -> Path:
    init_project(root, model="seasonal-naive")
    text = (root / "mlma.toml").read_text().replace('executor = "process"', 'executor = "inline"')
    keys.setdefault("initial_ticks", FIRST_TICK)
    for key, value in keys.items():
        text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert found == 1, f"{key} is not in the template"
    (root / "mlma.toml").write_text(text)
    return root


def cli(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlma.cli", *args, "--project", str(root)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def base(tmp_path_factory, fleet) -> Path:
    """A project that ingested 29 days of history through `mlma ingest` and ran its start-up and tick 28."""
    root = make_project(tmp_path_factory.mktemp("base") / "project")
    data = write_csv(days(fleet, 0, HISTORY_DAYS), root.parent / "history.csv")
    done = cli(root, "ingest", str(data))
    assert done.returncode == 0, done.stdout + done.stderr
    config = load_config(root)
    with LiveAgent(config) as live:
        results = live.catch_up()
    assert [r.tick for r in results] == [FIRST_TICK - 1, FIRST_TICK]
    return root


@pytest.fixture()
def project(base, tmp_path) -> Path:
    """A copy of the base project (no agent runs on it, so copying the SQLite file is safe)."""
    return Path(shutil.copytree(base, tmp_path / "project"))


def snapshot(root: Path) -> dict:
    """Everything an ingest or a tick may write."""
    with Store.open(load_config(root).store_url) as store:
        return {"observations": store.observations().to_dict("list"), "ingests": len(store.ingests()),
                "revisions": len(store.revisions()), "ticks": store.ticks()["tick"].tolist(),
                "streams": store.streams()["unique_id"].tolist()}


def carries_on(root: Path, fleet: pd.DataFrame, day: int) -> None:
    """The real data of ``day`` ingests cleanly, its tick runs, every stream is scored and gets forecasts."""
    data = write_csv(days(fleet, day, day + 1), root.parent / f"real-day-{day}.csv")
    done = cli(root, "ingest", str(data))
    assert done.returncode == 0, done.stdout + done.stderr
    assert ", 0 dropped rows" in done.stdout, done.stdout
    ticked = cli(root, "tick", "--all")
    assert ticked.returncode == 0, ticked.stdout + ticked.stderr
    with Store.open(load_config(root).store_url) as store:
        tick = store.last_done_tick()
        start, end = store.ticks().set_index("tick").loc[tick, ["start_ds", "end_ds"]]
        assert pd.Timestamp(start) == day0(fleet) + pd.Timedelta(days=day), "the day's own tick ran last"
        verdicts = store.verdicts(tick)
        n = fleet["unique_id"].nunique()
        assert len(verdicts) == n and verdicts["loss"].notna().all(), "every stream's actuals were scored"
        forecasts = store.forecasts(tick)
        assert forecasts.groupby("unique_id").size().eq(24).all() and forecasts["unique_id"].nunique() == n
        assert (forecasts["ds"] >= pd.Timestamp(end)).all()


# -- finding: one row far in the future moved the clock ------------------------------------------------------------
def test_rows_dated_ahead_are_rejected_by_name_and_the_real_data_after_them_is_scored(project, fleet):
    real = days(fleet, HISTORY_DAYS, HISTORY_DAYS + 1)
    stream = real["unique_id"].iloc[0]
    hostile = pd.concat([real.assign(ds=real["ds"].dt.strftime("%Y-%m-%d %H:%M:%S")),
                         pd.DataFrame({"unique_id": [stream, stream],
                                       "ds": ["2200-01-01 00:00:00",
                                              str(day0(fleet) + pd.Timedelta(days=HISTORY_DAYS + 20))],
                                       "y": [5.0, 6.0]})])
    data = write_csv(hostile, project.parent / "hostile.csv")
    done = cli(project, "ingest", str(data))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(real):,} new" in done.stdout and "2 dropped rows" in done.stdout
    assert "future-timestamp" in done.stdout and "ahead-of-fleet" in done.stdout
    # Every rejected row is listed with its line, stream, column and value.
    listed = pd.read_csv(project / "rejected" / os.listdir(project / "rejected")[0])
    assert listed[["line", "code", "column", "unique_id"]].values.tolist() == [
        [len(real) + 2, "future-timestamp", "ds", stream], [len(real) + 3, "ahead-of-fleet", "ds", stream]]
    ticked = cli(project, "tick", "--all")
    assert ticked.returncode == 0 and ticked.stdout.count("tick ") == 1, ticked.stdout  # one tick, not thousands
    carries_on(project, fleet, HISTORY_DAYS + 1)


def test_a_file_of_a_coarser_frequency_is_refused_whole_and_nothing_is_written(project, fleet):
    daily = days(fleet, HISTORY_DAYS, HISTORY_DAYS + 8)
    daily = daily[daily["ds"].dt.hour == 0]                # one row a day per zone: daily data
    before = snapshot(project)
    done = cli(project, "ingest", str(write_csv(daily, project.parent / "daily.csv")))
    assert done.returncode == 2
    assert "the project's frequency is h" in done.stdout and "look D" in done.stdout.replace("looks", "look")
    assert "nothing was written" in done.stdout
    assert snapshot(project) == before
    carries_on(project, fleet, HISTORY_DAYS)


def test_a_zone_that_missed_readings_is_not_another_frequency_and_its_partial_day_is_stored(project, fleet):
    """A sensor down every other hour for most of a partial day: its most common spacing is 2 hours, but a pair
    of readings one hour apart shows an hourly stream with gaps; the whole file is stored."""
    real = days(fleet, HISTORY_DAYS, HISTORY_DAYS + 1)
    morning = real[real["ds"].dt.hour < 12]
    zone = morning["unique_id"].iloc[0]
    hours = morning["ds"].dt.hour
    gapped = morning[(morning["unique_id"] != zone) | hours.isin([0, 2, 4, 6, 7, 9, 11])]
    done = cli(project, "ingest", str(write_csv(gapped, project.parent / "morning.csv")))
    assert done.returncode == 0 and ", 0 dropped rows" in done.stdout, done.stdout + done.stderr
    with Store.open(load_config(project).store_url) as store:
        stored = store.observations()
    day = stored[stored["ds"] >= morning["ds"].min()]
    assert len(day) == len(gapped) and sorted(day.loc[day["unique_id"] == zone, "ds"].dt.hour) == [0, 2, 4, 6, 7, 9, 11]
    carries_on(project, fleet, HISTORY_DAYS)


def test_one_zone_spaced_otherwise_loses_only_its_rows_and_strict_refuses_the_file(project, fleet):
    """One zone's every-other-hour file among hourly ones: with the default drop its rows are dropped and listed,
    named with the spacing it looks like, and the fleet's rows are stored; --strict refuses the file whole."""
    real = days(fleet, HISTORY_DAYS, HISTORY_DAYS + 1)
    zone = real["unique_id"].iloc[0]
    odd = real[(real["unique_id"] != zone) | (real["ds"].dt.hour % 2 == 0)]
    path = write_csv(odd, project.parent / "odd.csv")
    before = snapshot(project)
    strict = cli(project, "ingest", "--strict", str(path))
    assert strict.returncode == 2 and "nothing was written" in strict.stdout, strict.stdout
    assert snapshot(project) == before
    done = cli(project, "ingest", str(path))
    said = " ".join(done.stdout.split())
    assert done.returncode == 0 and "stream-frequency" in said and f"{zone!r} looks 2h" in said, said
    assert ", 12 dropped rows" in said, said
    listed = pd.read_csv(project / "rejected" / os.listdir(project / "rejected")[0])
    assert set(listed["code"]) == {"stream-frequency"} and set(listed["unique_id"]) == {zone} and len(listed) == 12
    with Store.open(load_config(project).store_url) as store:
        stored = store.observations()
    day = stored[stored["ds"] >= real["ds"].min()]
    assert sorted(day["unique_id"].unique()) == sorted(set(real["unique_id"]) - {zone})
    assert len(day) == len(real) - 24


def test_a_file_shifted_by_half_an_hour_is_said_to_be_shifted_not_another_frequency(project, fleet):
    shifted = days(fleet, HISTORY_DAYS, HISTORY_DAYS + 1).copy()
    shifted["ds"] = shifted["ds"] + pd.Timedelta(minutes=30)
    before = snapshot(project)
    done = cli(project, "ingest", str(write_csv(shifted, project.parent / "shifted.csv")))
    said = " ".join(done.stdout.split())
    assert done.returncode == 2 and "every one by the same 30 min after it" in said, said
    assert "shifted clock" in said and "another frequency" not in said and "nothing was written" in said
    assert snapshot(project) == before
    carries_on(project, fleet, HISTORY_DAYS)


def test_one_zone_on_a_shifted_clock_loses_only_its_rows_and_strict_refuses_the_file(project, fleet):
    """One zone's logger stamping every reading 30 min late refused the whole file (every zone's day) as
    mixed-frequency; with the default drop its rows are dropped and listed, the fleet's stored, as for a zone
    spaced otherwise; --strict still refuses the file whole."""
    real = days(fleet, HISTORY_DAYS, HISTORY_DAYS + 1).copy()
    zone = real["unique_id"].iloc[0]
    real.loc[real["unique_id"] == zone, "ds"] += pd.Timedelta(minutes=30)
    path = write_csv(real, project.parent / "late-logger.csv")
    before = snapshot(project)
    strict = cli(project, "ingest", "--strict", str(path))
    assert strict.returncode == 2 and "every one by the same 30 min after it" in " ".join(strict.stdout.split())
    assert snapshot(project) == before
    done = cli(project, "ingest", str(path))
    said = " ".join(done.stdout.split())
    assert done.returncode == 0 and "stream-off-grid" in said and "every one by the same 30 min" in said, said
    assert ", 24 dropped rows" in said, said
    listed = pd.read_csv(project / "rejected" / os.listdir(project / "rejected")[0])
    assert set(listed["code"]) == {"stream-off-grid"} and set(listed["unique_id"]) == {zone} and len(listed) == 24
    with Store.open(load_config(project).store_url) as store:
        stored = store.observations()
    day = stored[stored["ds"] >= real["ds"].min()]
    assert sorted(day["unique_id"].unique()) == sorted(set(real["unique_id"]) - {zone})
    assert len(day) == len(real) - 24
    carries_on(project, fleet, HISTORY_DAYS)


def test_zones_off_the_grid_and_zones_spaced_otherwise_count_together_toward_half_the_file(project, fleet):
    """Each rule drops a few odd zones while they are fewer than half of the file's; counted apart, two zones on a
    shifted clock (2 of 6) and then one spaced every other hour (1 of the 4 left) dropped half the fleet's zones
    and stored the rest. Together they are half: the file is refused whole, as a file of another clock is."""
    real = days(fleet, HISTORY_DAYS, HISTORY_DAYS + 1).copy()
    zones = sorted(real["unique_id"].unique())
    assert len(zones) == 6
    real.loc[real["unique_id"].isin(zones[:2]), "ds"] += pd.Timedelta(minutes=30)
    odd = real[(real["unique_id"] != zones[2]) | (real["ds"].dt.hour % 2 == 0)]
    before = snapshot(project)
    done = cli(project, "ingest", str(write_csv(odd, project.parent / "odd.csv")))
    said = " ".join(done.stdout.split())
    assert done.returncode == 2 and "nothing was written" in said and f"{zones[2]!r} looks 2h" in said, said
    assert ("with the 2 streams whose timestamps are off the project's grid, half the file's streams or more are not "
            "on the project's clock") in said, said
    assert snapshot(project) == before
    one_less = odd[odd["unique_id"] != zones[1]]  # 1 of 5 shifted and 1 spaced otherwise: 2 of 5, fewer than half
    done = cli(project, "ingest", str(write_csv(one_less, project.parent / "one-less.csv")))
    said = " ".join(done.stdout.split())
    assert done.returncode == 0 and "stream-off-grid" in said and "stream-frequency" in said, said
    carries_on(project, fleet, HISTORY_DAYS)


# -- finding: y = 1e308 reached the tick summary as Infinity -------------------------------------------------------
def test_values_out_of_any_plausible_range_are_rejected_and_the_fleet_ticks_on(project, fleet):
    real = days(fleet, HISTORY_DAYS, HISTORY_DAYS + 1).copy()
    streams = real["unique_id"].unique()
    hours = real.groupby("unique_id").head(1).index
    real.loc[hours[0], "y"] = 1e308                         # overflows every sum and square
    real.loc[hours[1], "y"] = real.loc[hours[1], "y"] * 1e6 + 1e6   # a unit error: far outside the stream's range
    before = snapshot(project)
    done = cli(project, "ingest", str(write_csv(real, project.parent / "huge.csv")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 dropped rows" in done.stdout and done.stdout.count("out-of-range") == 2, done.stdout
    listed = pd.read_csv(next((project / "rejected").iterdir()))
    assert set(listed["unique_id"]) == {streams[0], streams[1]} and set(listed["column"]) == {"y"}
    old, new = (pd.DataFrame(x["observations"]).set_index(["unique_id", "ds"])["y"] for x in (before, snapshot(project)))
    assert new.loc[old.index].equals(old) and len(new) == len(old) + len(real) - 2   # nothing accepted changed
    ticked = cli(project, "tick", "--all")
    assert ticked.returncode == 0, ticked.stdout + ticked.stderr
    with Store.open(load_config(project).store_url) as store:
        summary = store.ticks().iloc[-1]["summary"]
        assert np.isfinite(summary["loss"]) and summary["n_streams"] == len(streams)
    carries_on(project, fleet, HISTORY_DAYS + 1)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_json_written_to_the_store_is_finite_and_valid_on_both_backends(backend, tmp_path, request):
    from mlma.metrics import render_metrics

    if backend == "postgresql":
        from mlma.store.testing import postgres_schema

        context = postgres_schema(request.getfixturevalue("postgres_server"))
    else:
        import contextlib

        context = contextlib.nullcontext(f"sqlite:///{tmp_path / 'mlma.db'}")
    with context as url, Store.create(url) as store:
        frame = pd.DataFrame({"unique_id": ["a", "b"], "ds": pd.to_datetime(["2024-01-01"] * 2), "y": [1.0, 2.0]})
        store.ingest_frame(frame, "f")
        # A tick whose numbers overflowed: before, PostgreSQL refused the summary and the tick never committed.
        store.write_tick(TickRecord(0, summary=TickSummary(n_streams=2, loss=float("inf"), loss_ratio=float("nan"),
                                                           verdicts={"ok": np.int64(2)})))
        store.set_overrides(["a"], {"delta": float("inf"), "cooldown_ticks": 3}, by="user:ana", reason="hostile")
        summary = store.ticks()["summary"][0]
        assert summary["loss"] is None and summary["loss_ratio"] is None and summary["verdicts"] == {"ok": 2}
        overrides = store.streams().set_index("unique_id").loc["a", "overrides"]
        assert overrides == {"delta": None, "cooldown_ticks": 3}
        body, _ = render_metrics(store)                  # what /metrics serves: answered 500 on SQLite before
        assert b"mlma_ticks_total" in body or b"mlma_" in body


def test_an_older_sqlite_store_with_infinity_in_its_json_is_repaired_by_the_upgrade(tmp_path):
    from mlma.metrics import render_metrics

    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert Store.upgrade(url, "0003") == "0003"
    with Store.open(url, check_schema=False) as old, old.engine.begin() as conn:
        # What mlma before 0004 wrote for a tick whose loss overflowed.
        conn.execute(sa.insert(S.ticks).values(tick=0, status="done", attempts=1,
                                               started_at=pd.Timestamp("2024-01-01", tz="UTC").to_pydatetime()))
        conn.exec_driver_sql("UPDATE ticks SET summary = '{\"loss\": Infinity, \"retrains\": 1}' WHERE tick = 0")
    Store.upgrade(url)
    with Store.open(url) as store:
        assert store.ticks()["summary"][0] == {"loss": None, "retrains": 1}
        body, _ = render_metrics(store)
        assert b"mlma_" in body


# -- finding: a tick with no data for nearly all streams was committed ------------------------------------------------
def test_a_tick_without_data_for_nearly_all_streams_is_held_until_a_person_allows_it(project, fleet):
    stream = fleet["unique_id"].iloc[0]
    ahead = pd.DataFrame({"unique_id": [stream], "ds": [str(day0(fleet) + pd.Timedelta(days=HISTORY_DAYS + 3))],
                          "y": [3.0]})
    assert cli(project, "ingest", str(write_csv(ahead, project.parent / "ahead.csv"))).returncode == 0
    before = snapshot(project)
    for _ in range(2):                                   # asked again: still held, escalated once
        held = cli(project, "tick", "--all")
        assert held.returncode == 5, held.stdout + held.stderr
        assert f"tick {HISTORY_DAYS} " in held.stdout and "is held" in held.stdout and "--allow-no-data" in held.stdout
    # The service (`mlma run`) reports the hold once, as a wait rather than a failure, however many rounds pass.
    service = cli(project, "run", "--every", "50ms", "--iterations", "4")
    assert service.returncode == 0, service.stdout + service.stderr
    assert service.stdout.count("waiting:") == 1 and "is held" in service.stdout, service.stdout
    assert "tick failed" not in service.stdout, service.stdout
    assert snapshot(project)["ticks"] == before["ticks"]
    with Store.open(load_config(project).store_url) as store:
        escalations = store.escalations(status="open")
        fleet_wide = escalations[escalations["stream_id"].isna()]
        assert fleet_wide[["kind", "tick"]].values.tolist() == [["data-quality", HISTORY_DAYS]]
    # The actuals arrive late: their ticks run as usual, nobody needs to allow anything; day 31 stays silent
    # (one stream reported on day 32 only) and is held again.
    late = write_csv(days(fleet, HISTORY_DAYS, HISTORY_DAYS + 2), project.parent / "late.csv")
    assert cli(project, "ingest", str(late)).returncode == 0
    caught_up = cli(project, "tick", "--all")
    assert caught_up.returncode == 5 and f"tick {HISTORY_DAYS + 2} " in caught_up.stdout, caught_up.stdout
    assert caught_up.stdout.count("streams, ") == 2                    # ticks 29 and 30 ran
    allowed = cli(project, "tick", "--allow-no-data", "--by", "ana", "--reason", "the depot was closed")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    with Store.open(load_config(project).store_url) as store:
        audit = store.audit_log(action="allow-no-data-tick")
        assert audit[["actor", "target", "reason"]].values.tolist() == [
            ["user:ana", f"tick:{HISTORY_DAYS + 2}", "the depot was closed"]]
        assert audit["params"][0]["streams_without_data"] == 6
        assert store.last_done_tick() == HISTORY_DAYS + 2
        held = store.escalations()
        assert (held[held["stream_id"].isna()]["status"] == "resolved").all()
    carries_on(project, fleet, HISTORY_DAYS + 3)


# -- finding: `tick --all` printed nothing until the whole catch-up ended ----------------------------------------------
HOLD_SECOND_COMMIT = """
import os, sys, time
import mlma.store.store as store_module
original = store_module.Store.write_tick
calls = []
def write_tick(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:       # the second tick waits until the test has seen the first tick's line
        while not os.path.exists(os.environ["GO_ON"]):
            time.sleep(0.05)
    return original(self, *args, **kwargs)
store_module.Store.write_tick = write_tick
from mlma.cli import app
app()
"""


def test_tick_all_prints_each_tick_as_it_commits(project, fleet, tmp_path):
    import queue
    import threading

    data = write_csv(days(fleet, HISTORY_DAYS, HISTORY_DAYS + 8), project.parent / "week.csv")
    assert cli(project, "ingest", str(data)).returncode == 0
    one = cli(project, "tick")                   # one of the eight: and it says the others are due
    assert one.returncode == 0 and f"tick {HISTORY_DAYS + 1} is due too: run `mlma tick --all`" in one.stdout
    script = tmp_path / "hold_second_commit.py"
    script.write_text(HOLD_SECOND_COMMIT)
    go_on = tmp_path / "go-on"
    proc = subprocess.Popen([sys.executable, str(script), "tick", "--all", "--project", str(project)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GO_ON": str(go_on)})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        first = lines.get(timeout=120)      # printed while the second tick is still waiting to commit
    except queue.Empty:
        first = None
    go_on.touch()
    rest, err = proc.communicate(timeout=300)
    assert first is not None, "nothing was printed before the catch-up ended"
    assert first.startswith(f"tick {HISTORY_DAYS + 1}:") and proc.returncode == 0, err
    assert (first + rest).count("tick ") == 7


# -- finding: `mlma ingest` hid validation warnings and guessed naive times as UTC -------------------------------------
def test_ingest_shows_its_findings_with_counts(project, fleet):
    real = days(fleet, HISTORY_DAYS, HISTORY_DAYS + 1)
    stream = real["unique_id"].iloc[0]
    gappy = real.drop(real[real["unique_id"] == stream].index[5:9])    # four hours missing
    done = cli(project, "ingest", str(write_csv(gappy, project.parent / "gappy.csv")))
    assert done.returncode == 0
    line = next(line for line in done.stdout.splitlines() if "gaps" in line)
    assert "warning" in line and "4 rows in 1 stream" in line and repr(stream) in line
    verbose = cli(project, "ingest", "--verbose", str(write_csv(gappy.iloc[:-1], project.parent / "gappy2.csv")))
    assert f"streams: {stream}" in verbose.stdout


def test_a_file_mixing_naive_and_offset_timestamps_is_refused(project, fleet):
    real = days(fleet, HISTORY_DAYS - 1, HISTORY_DAYS + 1).copy()
    text = real["ds"].dt.strftime("%Y-%m-%d %H:%M:%S")
    later = (real["ds"] >= day0(fleet) + pd.Timedelta(days=HISTORY_DAYS)).to_numpy()
    real["ds"] = np.where(later, (real["ds"] - pd.Timedelta(hours=1)).dt.strftime("%Y-%m-%d %H:%M:%S-01:00"), text)
    before = snapshot(project)
    done = cli(project, "ingest", str(write_csv(real, project.parent / "mixed.csv")))
    assert done.returncode == 2
    assert "mixes" in done.stdout and "without a time zone" in done.stdout and "nothing was written" in done.stdout
    assert snapshot(project) == before                   # before: 144 stored values silently revised
    carries_on(project, fleet, HISTORY_DAYS)


def test_a_file_of_the_other_kind_of_timestamps_than_the_projects_is_refused(project, fleet, tmp_path):
    """A project fed tz-naive timestamps is on its files' local clock: a file with offsets, converted to UTC,
    would be shifted by them; a project fed offsets is kept in UTC: a file of local times read as UTC would be
    shifted by their offset (a sensor's Melbourne wall-clock file moved 11 hours). Both are refused whole."""
    nxt = days(fleet, HISTORY_DAYS, HISTORY_DAYS + 1).copy()
    zoned = nxt.assign(ds=(nxt["ds"] - pd.Timedelta(hours=1)).dt.strftime("%Y-%m-%dT%H:%M:%S-01:00"))
    before = snapshot(project)
    done = cli(project, "ingest", str(write_csv(zoned, tmp_path / "zoned.csv")))
    said = " ".join(done.stdout.split())
    assert done.returncode == 2 and "carry time zones, but this project's are tz-naive" in said, said
    assert "nothing was written" in said and snapshot(project) == before
    carries_on(project, fleet, HISTORY_DAYS)

    utc = make_project(tmp_path / "utc")
    history = days(fleet, 0, HISTORY_DAYS).copy()
    history["ds"] = history["ds"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert cli(utc, "ingest", str(write_csv(history, tmp_path / "history-z.csv"))).returncode == 0
    local = nxt.assign(ds=(nxt["ds"] + pd.Timedelta(hours=11)).dt.strftime("%Y-%m-%d %H:%M:%S"))
    with Store.open(load_config(utc).store_url) as store:
        assert store.time_zones() == "zoned"
        rows = len(store.observations())
    done = cli(utc, "ingest", str(write_csv(local, tmp_path / "local.csv")))
    said = " ".join(done.stdout.split())
    assert done.returncode == 2 and "carry no time zone, but this project's came with time zones" in said, said
    plan = write_csv(local[["unique_id", "ds"]].assign(temperature=1.0), tmp_path / "plan.csv")
    done = cli(utc, "ingest", "--future", str(plan))
    assert done.returncode == 2 and "the ds timestamps carry no time zone, but this project's came with time zones" in " ".join(
        done.stdout.split()), done.stdout
    with Store.open(load_config(utc).store_url) as store:
        assert len(store.observations()) == rows
    nxt_z = nxt.assign(ds=nxt["ds"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert cli(utc, "ingest", str(write_csv(nxt_z, tmp_path / "next-z.csv"))).returncode == 0


# -- issue 12: a daily panel fed one day per file ---------------------------------------------------------------------
def test_a_daily_panel_fed_one_day_per_file_ingests_and_ticks_with_no_settings(tmp_path):
    root = tmp_path / "daily"
    init_project(root, model="seasonal-naive")
    rng = np.random.default_rng(1)
    ids = ["north", "south", "east", "west"]
    start = pd.Timestamp("2024-01-01")                   # a Monday: ticks are Monday-Sunday weeks
    files = []
    for d in range(42):
        day = pd.DataFrame({"unique_id": ids, "ds": (start + pd.Timedelta(days=d)).strftime("%Y-%m-%d"),
                            "y": rng.poisson([20, 50, 80, 110]).astype(float)})
        files.append(write_csv(day, tmp_path / f"day-{d:02d}.csv"))
    first = cli(root, "ingest", str(files[0]))
    assert first.returncode == 0 and "frequency-pending" in first.stdout, first.stdout + first.stderr
    second = cli(root, "ingest", str(files[1]))
    assert second.returncode == 0 and "clock: frequency D, tick 7D" in second.stdout, second.stdout
    assert "note: each tick holds 7 step(s) of D data" in " ".join(second.stdout.split())   # said once, now
    third = cli(root, "ingest", str(files[2]))
    assert third.returncode == 0 and "each tick holds" not in third.stdout
    with Store.open(load_config(root).store_url) as store:
        for path in files[3:35]:
            report = store.ingest_file(path)
            assert report.rows_new == 4 and report.rows_dropped == 0
    started = cli(root, "tick", "--all", "--executor", "inline")
    assert started.returncode == 0 and "start-up (tick 4)" in started.stdout, started.stdout + started.stderr
    with Store.open(load_config(root).store_url) as store:
        for path in files[35:]:
            store.ingest_file(path)
    ticked = cli(root, "tick", "--executor", "inline")
    assert ticked.returncode == 0 and "tick 5: 4 streams" in ticked.stdout, ticked.stdout + ticked.stderr
    # A file of another frequency is refused with a clear message, and nothing is written.
    hourly = pd.DataFrame({"unique_id": "north", "ds": pd.date_range(start + pd.Timedelta(days=42), periods=24,
                                                                      freq="h").strftime("%Y-%m-%d %H:%M"),
                           "y": 1.0})
    before = snapshot(root)
    refused = cli(root, "ingest", str(write_csv(hourly, tmp_path / "hourly.csv")))
    assert refused.returncode == 2
    assert "the project's frequency is D" in refused.stdout and "nothing was written" in refused.stdout
    assert snapshot(root) == before
    forecasts = cli(root, "forecast")
    assert forecasts.returncode == 0
    exported = pd.read_csv(__import__("io").StringIO(forecasts.stdout))
    assert exported.groupby("unique_id").size().to_dict() == {i: 7 for i in ids}


# -- finding: the store file was created world-readable -----------------------------------------------------------------
def test_the_store_and_the_project_are_private_to_their_owner(tmp_path):
    old = os.umask(0o022)
    try:
        root = make_project(tmp_path / "p")
        Store.create(f"sqlite:///{tmp_path / 'other' / 'x.db'}").close()
    finally:
        os.umask(old)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(root / "mlma.db") == 0o600 and mode(root / "mlma.toml") == 0o600
    assert mode(root) == 0o700 and mode(root / "artifacts") == 0o700
    assert mode(tmp_path / "other" / "x.db") == 0o600 and mode(tmp_path / "other") == 0o700
    with Store.open(load_config(root).store_url) as store:   # WAL files take the database file's mode
        store.ingest_frame(pd.DataFrame({"unique_id": ["a"], "ds": pd.to_datetime(["2024-01-01"]), "y": [1.0]}), "x")
        assert mode(root / "mlma.db-wal") == 0o600


def test_an_id_no_store_keeps_loses_its_rows_only_on_both_backends(store, tmp_path):
    """A NUL in a stream id failed the whole file on PostgreSQL with a traceback (the staging COPY), and an id of
    4,000 characters made it call the store unusable (the index takes at most 2,704 bytes), for ever; SQLite
    took both as streams. Such rows are now rejected by name (``bad-id``), on both backends, and the rest of
    the file is stored."""
    good = pd.DataFrame({"unique_id": ["a"] * 3 + ["b"] * 3,
                         "ds": list(pd.date_range("2024-01-01", periods=3, freq="h")) * 2, "y": [1.0] * 6})
    bad = pd.DataFrame({"unique_id": ["\x00bad", "x" * 4_000, "tab\there"],
                        "ds": pd.to_datetime(["2024-01-01 00:00"] * 3), "y": [1.0] * 3})
    path = tmp_path / "mixed.csv"
    pd.concat([good, bad]).to_csv(path, index=False)
    report = store.ingest_file(str(path), rejects=str(tmp_path / "rejects.csv"))
    assert report.rows_accepted == 6 and report.rows_dropped == 3, report
    finding = next(f for f in report.validation.findings if f.code == "bad-id")
    assert "3 rows whose unique_id no store keeps" in finding.message and "lines 8, 9, 10" in finding.message, finding
    assert any("holds a control character ('\\x00')" in e for e in finding.examples), finding.examples
    assert any("has 4,000 characters, more than 500" in e for e in finding.examples), finding.examples
    assert sorted(store.streams()["unique_id"]) == ["a", "b"]
    assert len(pd.read_csv(tmp_path / "rejects.csv")) == 3
    # A driver column whose name holds one refuses the file (PostgreSQL failed on it with a traceback).
    named = tmp_path / "named.csv"
    good.assign(**{"te\x00mp": 1.0}).to_csv(named, index=False)
    with pytest.raises(ValueError, match=r"the name of column 4 \('te\\x00mp'\) holds a control character"):
        store.ingest_file(str(named))
    assert len(store.ingests()) == 1
    # A file of future drivers with such an id is refused whole, naming its line (nothing is stored).
    future = tmp_path / "future.csv"
    pd.DataFrame({"unique_id": ["a", "\x00bad"], "ds": ["2024-01-02 00:00"] * 2, "temp": [1.0, 2.0]}).to_csv(
        future, index=False)
    with pytest.raises(ValueError, match=r"1 row\(s\) whose unique_id no store keeps, first on line/row 3"):
        store.ingest_future(str(future))


def test_attributes_refuse_an_unusable_id_and_a_repeated_column(tmp_path, fleet):
    """`mlma attributes` looked such an id up (a traceback on PostgreSQL) and stored a repeated column ``city``
    as a second attribute ``city.1``; both refuse the file, naming the row or the column, and change nothing."""
    root = make_project(tmp_path / "p")
    assert cli(root, "ingest", str(write_csv(days(fleet, 0, 2), tmp_path / "history.csv"))).returncode == 0
    uid = fleet["unique_id"].iloc[0]
    repeated = tmp_path / "repeated.csv"
    repeated.write_text(f"unique_id,city,city\n{uid},a,b\n")
    done = cli(root, "attributes", str(repeated))
    assert done.returncode == 2 and "duplicate column name 'city' (columns 2, 3)" in done.stdout, done.stdout
    unusable = tmp_path / "unusable.csv"
    unusable.write_text(f"unique_id,city\n{uid},a\nzone\x00x,b\n")
    done = cli(root, "attributes", str(unusable))
    text = " ".join(done.stdout.split())
    assert done.returncode == 2 and "row 3: unique_id 'zone\\x00x' holds a control character" in text, text
    assert "Traceback" not in done.stdout + done.stderr
    with Store.open(load_config(root).store_url) as opened:
        assert all(not a for a in opened.streams()["attributes"])
