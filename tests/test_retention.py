"""Retention: `Store.prune` and `mlma prune` delete the data a live agent no longer reads, so a store does not
grow for ever, and nothing a later tick computes changes.

- the store deletes exactly the rows before the time (observations, driver values, revisions) and the
  verdicts and forecasts of the ticks that ended by then, keeps the newest done tick's forecasts, records the
  time (only ever later) and audits it; a dry run counts the same rows and deletes none; the slices of a long
  history give the same result as one;
- ingests drop rows older than the kept time in both modes (a file re-sent whole brings nothing back);
- the live agent refuses a time inside the next tick's training window and a model that trains on all
  history, and a pruned project's later ticks are those of the same project never pruned.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from test_store import _tick_outputs, count, fleet_frame

from mlma.store import Store, TickRecord
from mlma.store import schema as S


def _store_with_ticks(store: Store, n: int = 4, days: int = 6) -> pd.DataFrame:
    """``n`` hourly streams over ``days`` days, with driver values, a revision, and a done tick per day (its
    verdicts and forecasts) whose span is that day."""
    frame = fleet_frame(n, 24 * days).assign(price=1.5)
    store.ingest_frame(frame, "history")
    fix = frame.iloc[[3]].assign(y=999.0)  # a revised value, on day 0
    store.ingest_frame(fix, "fix")
    day0 = pd.Timestamp("2024-01-01")
    for k in range(days):
        decision, forecasts, _ = _tick_outputs(store, n)
        store.write_tick(TickRecord(k, verdicts=decision, forecasts=forecasts, start=day0 + pd.Timedelta(days=k),
                                    end=day0 + pd.Timedelta(days=k + 1)))
    return frame


def _ds_before(store: Store, table: sa.Table, cut: pd.Timestamp) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)
                                .where(table.c.ds < cut.to_pydatetime())).scalar_one())


def _ticks_of(store: Store, table: sa.Table, column: str) -> list[int]:
    with store.engine.connect() as conn:
        return sorted({int(t) for (t,) in conn.execute(sa.select(table.c[column]))})


@pytest.mark.parametrize("slice_rows", [500_000, 7, 3])  # 3: fewer than the rows of one timestamp (4)
def test_prune_deletes_exactly_the_rows_before_the_time_and_records_it(store, monkeypatch, slice_rows):
    import mlma.store.store as store_module

    monkeypatch.setattr(store_module, "PRUNE_SLICE_ROWS", slice_rows)   # dozens of slices, same result
    frame = _store_with_ticks(store)
    cut = pd.Timestamp("2024-01-03 05:00")
    expected_obs = int((frame["ds"] < cut).sum())
    before = {t.name: count(store, t) for t in (S.observations, S.driver_values, S.observation_revisions,
                                                S.verdicts, S.forecasts)}
    assert store.kept_from() is None and before["observation_revisions"] == 1

    dry = store.prune(cut, by="user:ana", dry_run=True)
    assert dry.dry_run and dry.rows["observations"] == expected_obs and dry.through_tick == 1
    assert {t.name: count(store, t) for t in (S.observations, S.verdicts)} == {
        "observations": before["observations"], "verdicts": before["verdicts"]}
    assert store.kept_from() is None and store.audit_log(action="prune").empty

    done = store.prune(cut, by="user:ana", reason="disk")
    assert done.rows == dry.rows and not done.dry_run
    assert "deleted the rows before 2024-01-03 05:00:00" in str(done) and "through tick 1" in str(done)
    assert count(store, S.observations) == before["observations"] - expected_obs
    assert _ds_before(store, S.observations, cut) == 0 and _ds_before(store, S.driver_values, cut) == 0
    assert count(store, S.observation_revisions) == 0                  # its row was on day 0
    assert _ds_before(store, S.observations, cut + pd.Timedelta(hours=1)) == 4   # the hour at the cut stays
    # Ticks 0 and 1 ended by the cut (day 2 00:00): their verdicts go, and the forecasts issued before tick 1.
    assert _ticks_of(store, S.verdicts, "tick") == [2, 3, 4, 5]
    assert _ticks_of(store, S.forecasts, "issued_tick") == [1, 2, 3, 4, 5]
    assert store.kept_from() == cut
    entry = store.audit_log(action="prune").iloc[0]
    assert entry["actor"] == "user:ana" and entry["reason"] == "disk" and entry["params"]["through_tick"] == 1
    assert entry["params"]["rows"]["observations"] == expected_obs
    assert len(store.ticks()) == 6                                    # the ticks' records and summaries stay

    # An earlier time deletes nothing more and does not move the kept time back; the newest done tick's
    # forecasts (for the next tick) stay even when every tick ended by the time given, and so do its verdicts
    # and the forecasts they scored.
    assert store.prune(pd.Timestamp("2024-01-02"), by="agent").rows["observations"] == 0
    assert store.kept_from() == cut
    store.prune(pd.Timestamp("2024-01-07"), by="agent")
    assert _ticks_of(store, S.forecasts, "issued_tick") == [4, 5] and _ticks_of(store, S.verdicts, "tick") == [5]
    assert count(store, S.observations) == 0 and store.kept_from() == pd.Timestamp("2024-01-07")


def test_prune_refuses_a_bad_time_or_actor(store):
    _store_with_ticks(store, days=2)
    with pytest.raises(ValueError, match="tz-naive"):
        store.prune(pd.Timestamp("2024-01-02", tz="UTC"), by="agent")
    with pytest.raises(ValueError, match="by"):
        store.prune(pd.Timestamp("2024-01-02"), by="ana")
    for nothing in (None, pd.NaT, ""):        # "" is pandas' NaT: it deleted verdicts and blocked every ingest
        with pytest.raises(ValueError, match="needs a data time"):
            store.prune(nothing, by="agent")
    assert store.kept_from() is None and count(store, S.observations) == 4 * 48 and count(store, S.verdicts) == 8


def test_driver_values_before_the_time_go_even_without_older_observations(store):
    """Future driver values dated before the first observation, and an ingest of such values after the prune."""
    store.ingest_frame(fleet_frame(2, 48, start="2024-01-10"), "actuals")
    early = pd.DataFrame({"unique_id": np.repeat(["zone-00000", "zone-00001"], 96),
                          "ds": np.tile(pd.date_range("2024-01-01", periods=96, freq="h"), 2), "price": 2.0})
    store.ingest_future(early)
    cut = pd.Timestamp("2024-01-03")
    done = store.prune(cut, by="agent")
    assert done.rows["driver_values"] == 2 * 48 and done.rows["observations"] == 0
    assert _ds_before(store, S.driver_values, cut) == 0 and count(store, S.driver_values) == 2 * 48
    again = store.ingest_future(early.assign(price=3.0))
    assert again.rows_dropped == 2 * 48 and again.rows_new == 2 * 48
    assert _ds_before(store, S.driver_values, cut) == 0


@pytest.mark.parametrize("on_bad_rows", ["drop", "raise"])
def test_an_ingest_drops_rows_older_than_the_kept_time_in_both_modes(store, tmp_path, on_bad_rows):
    from mlma.data import DataError
    from mlma.store.ingest import ingest_checked

    frame = _store_with_ticks(store, n=3, days=4)
    cut = pd.Timestamp("2024-01-03")
    store.prune(cut, by="agent")
    kept = count(store, S.observations)
    resent = frame.assign(y=frame["y"] + 1.0)                        # the whole history again, every value new
    path = tmp_path / "resent.csv"
    resent.to_csv(path, index=False)
    report = ingest_checked(store, path, on_bad_rows=on_bad_rows)
    old = int((frame["ds"] < cut).sum())
    found = {f.code: f for f in report.validation.findings}["before-kept"]
    assert found.severity == "dropped" and found.n_rows == old
    assert "older than the data the project keeps (pruned before 2024-01-03 00:00:00)" in found.message
    assert report.rows_revised == len(frame) - old and report.rows_new == 0
    assert count(store, S.observations) == kept and _ds_before(store, S.observations, cut) == 0
    path = tmp_path / "old.csv"
    resent[resent["ds"] < cut].assign(y=7.0).to_csv(path, index=False)
    with pytest.raises(DataError, match="every row is older than the data the project keeps .pruned before "
                                        "2024-01-03 00:00:00."):
        ingest_checked(store, path, on_bad_rows=on_bad_rows)


def test_rows_older_than_the_kept_time_are_counted_but_not_listed_as_rejects(store, tmp_path):
    """A daily export re-sent whole after a prune holds the pruned history each day: those rows are not bad data,
    and listing them made every ingest's rejects file hundreds of MB. The file lists the bad rows alone."""
    from mlma.store.ingest import ingest_checked

    frame = _store_with_ticks(store, n=3, days=4)
    cut = pd.Timestamp("2024-01-03")
    store.prune(cut, by="agent")
    resent = frame.assign(y=frame["y"] + 1.0)
    path, rejects = tmp_path / "resent.csv", tmp_path / "rejects.csv"
    resent.to_csv(path, index=False)
    report = ingest_checked(store, path, rejects=rejects)
    old = int((frame["ds"] < cut).sum())
    assert report.rows_dropped == old and report.rejected_path is None and not rejects.exists()

    bad_line = int(np.flatnonzero(resent["ds"] >= cut)[-1])
    resent["y"] = resent["y"].astype(object)
    resent.loc[bad_line, "y"] = "twelve"  # text for a number, among rows newer than the kept time
    resent.to_csv(path, index=False)
    report = ingest_checked(store, path, rejects=rejects)
    assert report.rows_dropped == old + 1 and report.rejected_path == rejects
    listed = pd.read_csv(rejects, keep_default_na=False)
    assert listed.to_dict("records") == [{
        "line": bad_line + 2, "code": "non-finite-target", "column": "y",
        "unique_id": resent.loc[bad_line, "unique_id"], "ds": str(resent.loc[bad_line, "ds"]), "y": "twelve",
        "reason": listed["reason"].iloc[0]}]
    assert "not a number" in listed["reason"].iloc[0]


def test_the_cli_refuses_the_training_window_and_a_pruned_project_ticks_as_one_never_pruned(tmp_path):
    """Two copies of one live project; one is pruned right up to the next tick's training window (ridge, 28
    daily ticks), then both re-train every stream, ingest twelve more days and tick: their verdicts and forecasts
    are identical."""
    from mlma.project import load_config
    from mlma.simulate import simulate_platform

    data = simulate_platform(5, 72, seed=3).data[["unique_id", "ds", "y"]]
    day0 = data["ds"].min().normalize()
    first, later = data[data["ds"] < day0 + pd.Timedelta(days=60)], data[data["ds"] >= day0 + pd.Timedelta(days=60)]
    first.to_csv(tmp_path / "first.csv", index=False)
    later.to_csv(tmp_path / "later.csv", index=False)

    def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mlma.cli", *args, "--project", str(root)], capture_output=True,
                              text=True, timeout=600, env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"})

    def ok(result: subprocess.CompletedProcess, code: int = 0) -> str:
        assert result.returncode == code and "Traceback" not in result.stderr, result.stdout + result.stderr
        return " ".join(result.stdout.split())

    pruned = tmp_path / "pruned"
    ok(subprocess.run([sys.executable, "-m", "mlma.cli", "init", str(pruned), "--model", "ridge"],
                      capture_output=True, text=True, timeout=300))
    toml = pruned / "mlma.toml"
    toml.write_text(toml.read_text().replace('executor = "process"', 'executor = "inline"')
                    .replace("initial_ticks = 0 ", "initial_ticks = 20 "))
    ok(cli(pruned, "ingest", str(tmp_path / "first.csv")))
    ok(cli(pruned, "tick", "--all"))
    kept = pruned.parent / "kept"
    shutil.copytree(pruned, kept)
    said = ok(cli(pruned, "prune", "--keep", "10D"), 2)
    assert "error:" in said and "would delete data the next ticks read (their training window" in said
    limit = pd.Timestamp(said.split("the latest time to prune to is ")[1].strip())
    assert "give one of --keep" in ok(cli(pruned, "prune"), 2)
    assert "--before must be an ISO 8601 data time" in ok(cli(pruned, "prune", "--before", ""), 2)
    # pandas kept the nanoseconds, the store dropped them with two raw warnings: the time applied was not the one
    # printed.
    fine = ok(cli(pruned, "prune", "--before", "2025-02-01T00:00:00.0000001"), 2)
    assert "--before must not be finer than a microsecond" in fine and "Warning" not in fine
    assert "--keep must be a whole number of days or weeks" in ok(cli(pruned, "prune", "--keep", "nan"), 2)
    # An empty --keep "$KEEP" of a cron line with the variable unset: the option and what it takes are named.
    assert "--keep must be a whole number of days or weeks such as 400D or 13W, got ''" in ok(
        cli(pruned, "prune", "--keep", ""), 2)
    assert "would delete" in ok(cli(pruned, "prune", "--keep", "40D", "--dry-run"))
    ok(cli(pruned, "prune", "--before", str(limit + pd.Timedelta(hours=1))), 2)
    # Right up to the limit: what the next ticks read is all still there.
    said = ok(cli(pruned, "prune", "--before", str(limit), "--by", "ana", "--reason", "disk"))
    assert said.startswith(f"deleted the rows before {limit}") and "through tick" in said

    config = {name: load_config(root) for name, root in (("pruned", pruned), ("kept", kept))}
    # The copy names the same SQLite file by a relative URL, so each project has its own store.
    assert config["pruned"].store_url != config["kept"].store_url
    for root in (pruned, kept):
        # The agent keeps its window in a cache file, rebuilt from the store when lost (a new machine): lost
        # here, so that the ticks read what the store holds; and every stream re-fits in the next tick.
        shutil.rmtree(root / "cache")
        ok(cli(root, "retrain", "--all"))
        ok(cli(root, "ingest", str(tmp_path / "later.csv")))
        ok(cli(root, "tick", "--all"))
    with Store.open(config["pruned"].store_url) as a, Store.open(config["kept"].store_url) as b:
        cut = a.kept_from()
        assert cut is not None and b.kept_from() is None
        assert a.oldest_ds() >= cut > b.oldest_ds()
        pruned_through = int(a.audit_log(action="prune").iloc[0]["params"]["through_tick"])
        last = a.last_done_tick()
        assert last == b.last_done_tick() and last >= 68
        for k in range(pruned_through + 1, last + 1):
            va, vb = a.verdicts(k), b.verdicts(k)
            assert len(va) == 5
            pd.testing.assert_frame_equal(va.reset_index(drop=True), vb.reset_index(drop=True))
        fa, fb = a.forecasts(last), b.forecasts(last)
        assert fa["unique_id"].nunique() >= 4 and len(fa) == 24 * fa["unique_id"].nunique()
        pd.testing.assert_frame_equal(fa.reset_index(drop=True), fb.reset_index(drop=True))
        assert a.verdicts(pruned_through).empty and not b.verdicts(pruned_through).empty
        assert a.audit_log(action="prune").iloc[0]["actor"] == "user:ana"


def test_the_limit_in_a_young_project_and_with_a_window_shorter_than_the_ingests_range_check(tmp_path):
    """While the window still reaches the first tick nothing can be pruned (said so, not "all history"); a
    window of 3 ticks is not the limit, the ingest's check of value ranges over 7 ticks is."""
    from mlma.live import LiveAgent, NotReady
    from mlma.project import init_project, load_config
    from mlma.store.ingest import RANGE_TICKS

    root = tmp_path / "p"
    init_project(root, model="seasonal-naive")
    toml = root / "mlma.toml"
    toml.write_text(toml.read_text().replace("initial_ticks = 0 ", "initial_ticks = 2 ")
                    .replace("train_window_ticks = 0 ", "train_window_ticks = 3 "))
    config = load_config(root)
    with Store.open(config.store_url) as store:
        store.ingest_frame(fleet_frame(3, 24 * 20), "history")
    with LiveAgent(config, executor="inline") as live:
        live.step()                                                  # the start-up, tick 1
        with pytest.raises(NotReady, match="still starts at the first tick: nothing can be pruned before tick 3"):
            live.earliest_prune_time()
        live.catch_up()
        done = live.store.last_done_tick()
        limit = live.earliest_prune_time()
        window_start = live.timing().boundaries(done + 1 - 3, done + 2)[0]
        # The ingest checks new values against each stream's rows since the newest data less 7 ticks.
        reach = live.store.newest_ds() - RANGE_TICKS * pd.Timedelta(days=1)
        assert limit == reach < window_start
        ranges = live.store.value_ranges(["zone-00000"], since=reach)
        live.prune(limit, by="agent")
        assert live.store.value_ranges(["zone-00000"], since=reach).equals(ranges)
        with pytest.raises(ValueError, match="needs a data time"):
            live.prune(pd.NaT, by="agent")


def test_a_model_that_trains_on_all_history_cannot_be_pruned(tmp_path):
    from mlma.live import LiveAgent
    from mlma.project import ConfigError, init_project, load_config

    root = tmp_path / "monthly"
    init_project(root, model="seasonal-naive")
    months = pd.date_range("2015-01-01", periods=60, freq="MS")
    frame = pd.DataFrame({"unique_id": np.repeat(["a", "b"], len(months)), "ds": np.tile(months, 2),
                          "y": np.arange(120, dtype=float)})
    config = load_config(root)
    with Store.open(config.store_url) as store:
        store.ingest_frame(frame, "months")
    with LiveAgent(config, executor="inline") as live:
        live.catch_up()
        with pytest.raises(ConfigError, match="trains on all history, so no observation can be pruned"):
            live.prune(pd.Timestamp("2016-01-01"), by="agent")
        assert live.store.kept_from() is None


def _keep_project(root: Path, keep: str, window: int = 3) -> None:
    """A seasonal-naive project of 3 hourly streams over 20 days, daily ticks from the third, ``[store] keep``."""
    from mlma.project import init_project, load_config

    init_project(root, model="seasonal-naive")
    toml = root / "mlma.toml"
    toml.write_text(toml.read_text().replace("initial_ticks = 0 ", "initial_ticks = 2 ")
                    .replace("train_window_ticks = 0 ", f"train_window_ticks = {window} ")
                    .replace('executor = "process"', 'executor = "inline"')
                    .replace('keep = ""', f'keep = "{keep}"'))
    with Store.open(load_config(root).store_url) as store:
        store.ingest_frame(fleet_frame(3, 24 * 20), "history")


def test_keep_prunes_after_the_ticks_once_per_new_cut_and_never_what_a_tick_reads(tmp_path, caplog):
    """`[store] keep`: nothing before the first tick or while the window reaches it; then the data older than
    `keep` before the last tick's end, audited by the agent, and nothing again (no audit entry) until a tick
    moves the cut; a `keep` shorter than what the ticks read keeps from the limit instead, said once."""
    import logging

    from mlma.live import LiveAgent
    from mlma.project import load_config

    root = tmp_path / "p"
    _keep_project(root, "10D")
    config = load_config(root)
    with LiveAgent(config, executor="inline") as live:
        assert live.apply_retention() is None                      # no tick yet
        live.step()
        assert live.apply_retention() is None                      # the window still reaches the first tick
        live.catch_up()
        end = live.timing().boundaries(live.store.last_done_tick(), live.store.last_done_tick() + 1)[1]
        report = live.apply_retention()
        assert report.kept_from == end - pd.Timedelta(days=10) < live.earliest_prune_time()
        assert report.rows["observations"] > 0 and live.store.oldest_ds() == report.kept_from
        assert live.apply_retention() is None                      # nothing new to delete: no second entry
        entries = live.store.audit_log(action="prune")
        assert len(entries) == 1 and entries.iloc[0]["actor"] == "agent"
        assert entries.iloc[0]["reason"] == "[store] keep = '10D'"
        day = fleet_frame(3, 24 * 21).query("ds >= @end")
        live.store.ingest_frame(day, "day 21")
        live.step()
        assert live.apply_retention().kept_from == end - pd.Timedelta(days=9)
        assert len(live.store.audit_log(action="prune")) == 2
    # A window lengthened after the prune reaches before the kept data: said once, and the ticks go on.
    toml = root / "mlma.toml"
    toml.write_text(toml.read_text().replace("train_window_ticks = 3 ", "train_window_ticks = 15 "))
    with LiveAgent(load_config(root), executor="inline") as live, caplog.at_level(logging.WARNING, "mlma.live"):
        for day in (22, 23):
            newest = live.store.newest_ds()
            live.store.ingest_frame(fleet_frame(3, 24 * day).query("ds > @newest"), f"day {day}")
            live.step()
        said = [r.getMessage() for r in caplog.records if "training window starts at" in r.getMessage()]
        assert len(said) == 1 and "before the data the store keeps" in said[0], said
    caplog.clear()

    short = tmp_path / "short"
    _keep_project(short, "2D")
    with LiveAgent(load_config(short), executor="inline") as live, caplog.at_level(logging.WARNING, "mlma.live"):
        live.catch_up()
        limit = live.earliest_prune_time()
        assert live.apply_retention().kept_from == limit           # not 2 days: the ticks read 7 (range check)
        newest = live.store.newest_ds()
        live.store.ingest_frame(fleet_frame(3, 24 * 21).query("ds > @newest"), "day 21")
        live.step()
        assert live.apply_retention().kept_from == live.earliest_prune_time() == limit + pd.Timedelta(days=1)
        said = [r.getMessage() for r in caplog.records if "keep" in r.getMessage()]
        assert len(said) == 1 and "is shorter than the data the next ticks read" in said[0], said


def test_mlma_tick_and_run_apply_keep_and_a_keep_that_cannot_work_does_not_stop_the_ticks(tmp_path):
    from mlma.project import load_config

    def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mlma.cli", *args, "--project", str(root)], capture_output=True,
                              text=True, timeout=600, env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"})

    root = tmp_path / "p"
    _keep_project(root, "10D")
    done = cli(root, "tick", "--all")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "retention: deleted the rows before" in done.stdout
    with Store.open(load_config(root).store_url) as store:
        assert store.kept_from() is not None and len(store.audit_log(action="prune")) == 1
        store.ingest_frame(fleet_frame(3, 24 * 21).query("ds >= '2024-01-21'"), "day 21")
    ran = cli(root, "run", "--iterations", "1")
    assert ran.returncode == 0 and ran.stdout.count("retention: deleted the rows before") == 1, ran.stdout
    # A model on all history cannot be pruned: said once over two rounds, and the ticks run all the same.
    from mlma.project import init_project

    monthly = tmp_path / "monthly"
    init_project(monthly, model="seasonal-naive")
    toml = monthly / "mlma.toml"
    toml.write_text(toml.read_text().replace('keep = ""', 'keep = "400D"'))
    months = pd.date_range("2015-01-01", periods=60, freq="MS")
    with Store.open(load_config(monthly).store_url) as store:
        store.ingest_frame(pd.DataFrame({"unique_id": np.repeat(["a", "b"], 60), "ds": np.tile(months, 2),
                                         "y": np.arange(120, dtype=float)}), "months")
    ran = cli(monthly, "run", "--iterations", "2", "--every", "0.2s")
    said = " ".join(ran.stdout.split())
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stdout + ran.stderr
    assert said.count("retention ([store] keep) did not run: ConfigError:") == 1, said
    assert "trains on all history" in said and "stopped after 2 round(s)" in said
    with Store.open(load_config(monthly).store_url) as store:
        assert store.last_done_tick() is not None and store.kept_from() is None


def test_a_keep_prune_stopped_part_way_is_finished_by_the_next_round(tmp_path, monkeypatch):
    """The kept time is recorded before the rows go: a prune killed after that (SIGKILL mid-slice) left rows
    before it, and the next round finishes them although the cut has not moved."""
    from mlma.live import LiveAgent
    from mlma.project import load_config

    root = tmp_path / "p"
    _keep_project(root, "10D")
    with LiveAgent(load_config(root), executor="inline") as live:
        live.catch_up()
        store = live.store
        real = store._prune_table

        def killed_at(which: str):
            def prune_table(table, cut):
                if table.name == which:
                    raise KeyboardInterrupt  # as if the process died in this table's first slice
                real(table, cut)
            return prune_table

        for which in ("observations", "driver_values"):   # stopped before any row went, and after the observations
            store.ingest_frame(fleet_frame(3, 24 * 20).assign(price=1.0), f"drivers for {which}")
            monkeypatch.setattr(store, "_prune_table", killed_at(which))
            if which == "driver_values":
                newest = store.newest_ds()
                store.ingest_frame(fleet_frame(3, 24 * 21).query("ds > @newest"), "a day")
                live.step()
            with pytest.raises(KeyboardInterrupt):
                live.apply_retention()
            kept = store.kept_from()
            assert kept is not None and store.prune_unfinished()
            monkeypatch.setattr(store, "_prune_table", real)
            report = live.apply_retention()
            assert report is not None and report.kept_from == kept and report.rows["driver_values"] > 0
            assert not store.prune_unfinished() and live.apply_retention() is None
        assert store.oldest_ds() == kept


@pytest.mark.parametrize("stop", ["SIGTERM", "Ctrl-C"])
def test_a_stop_while_mlma_run_prunes_ends_the_prune_at_once_and_the_next_start_finishes_it(tmp_path, monkeypatch,
                                                                                            stop):
    """A prune of a large store can outlast a supervisor's grace period before its SIGKILL: `mlma run` stops it
    at once (the round's ticks are committed already), says so, exits 0, and the next start finishes it."""
    import os
    import signal

    from typer.testing import CliRunner

    from mlma.cli import app
    from mlma.project import load_config

    root = tmp_path / "p"
    _keep_project(root, "10D")
    real = Store._prune_table
    pruned: list[str] = []

    def stopped_in_the_first_table(self, table, cut):
        pruned.append(table.name)
        if len(pruned) == 1:
            os.kill(os.getpid(), signal.SIGTERM if stop == "SIGTERM" else signal.SIGINT)
        real(self, table, cut)

    monkeypatch.setattr(Store, "_prune_table", stopped_in_the_first_table)
    ran = CliRunner().invoke(app, ["run", "--every", "1s", "--iterations", "3", "--project", str(root)])
    said = " ".join(ran.output.split())
    assert ran.exit_code == 0, said
    assert f"retention stopped part way ({stop})" in said and "stopped after 1 round(s)" in said, said
    assert pruned == ["observations"]                       # no table after the one it stopped in
    with Store.open(load_config(root).store_url) as store:
        assert store.last_done_tick() is not None and store.prune_unfinished()
    monkeypatch.setattr(Store, "_prune_table", real)
    again = CliRunner().invoke(app, ["run", "--every", "1s", "--iterations", "1", "--project", str(root)])
    assert again.exit_code == 0 and "retention: deleted the rows before" in again.output, again.output
    with Store.open(load_config(root).store_url) as store:
        assert not store.prune_unfinished() and store.oldest_ds() == store.kept_from()
