"""Exogenous drivers end to end: stored at ingest, values known in advance ingested for coming ticks, fed to
the models, revisable, with a fallback when missing; and what they are worth on the simulator."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlma.backtest import BacktestConfig, run_backtest
from mlma.data import DataError, read_future_drivers
from mlma.fleet import FleetData
from mlma.live import LiveAgent
from mlma.models import Drivers, ForecastContext, RidgeForecaster, fit_forecaster, make_forecaster
from mlma.project import ConfigError, init_project, load_config
from mlma.simulate import simulate_platform
from mlma.store import Store

FIRST_TICK = 28
DAYS = 31
PROMO_EFFECT = 0.8  # a promotion day has 1.8 times the demand


def promo_panel(n_streams: int = 4, days: int = DAYS, seed: int = 3) -> pd.DataFrame:
    """Hourly demand with a daily profile, and promotion days (known in advance) that lift it by 80 %."""
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2025-03-03", periods=24 * days, freq="h")
    hour = ds.hour.to_numpy()
    profile = 1.0 + 3.0 * np.exp(-0.5 * ((hour - 19) / 2.0) ** 2) + 1.5 * np.exp(-0.5 * ((hour - 12) / 1.5) ** 2)
    frames = []
    for s in range(n_streams):
        promo_days = rng.random(days) < 0.3
        promo = np.repeat(promo_days, 24).astype(float)
        mu = 20.0 * (1 + s) * profile * (1 + PROMO_EFFECT * promo)
        frames.append(pd.DataFrame({"unique_id": f"s{s}", "ds": ds, "y": rng.poisson(mu).astype(float),
                                    "promo": promo}))
    return pd.concat(frames, ignore_index=True)


def make_project(root: Path, drivers: str = '["promo"]') -> Path:
    init_project(root, model="ridge")
    text = (root / "mlma.toml").read_text().replace('executor = "process"', 'executor = "inline"')
    text = text.replace("initial_ticks = 0", f"initial_ticks = {FIRST_TICK}")
    text, found = re.subn(r"(?m)^drivers = .*$", f"drivers = {drivers}", text)
    assert found == 1
    (root / "mlma.toml").write_text(text)
    return root


def _csv_of(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def future_file(path: Path, panel: pd.DataFrame, day: pd.Timestamp, promo: float) -> Path:
    """Promotion plan for one day of every stream, as a CSV file like a user would write it."""
    ds = pd.date_range(day, periods=24, freq="h")
    rows = pd.DataFrame([(u, t, promo) for u in panel["unique_id"].unique() for t in ds],
                        columns=["unique_id", "ds", "promo"])
    rows.to_csv(path, index=False)
    return path


def issued(store: Store, tick: int) -> pd.DataFrame:
    return store.forecasts(tick).sort_values(["stream_id", "ds"]).reset_index(drop=True)


def run_live(root: Path, panel: pd.DataFrame, plans: list[tuple[int, float]], day_plans: list[tuple[int, float]]):
    """Ingest the history and the promotion plans for day FIRST_TICK (``plans``, in order: a later one
    revises an earlier one), run the start-up step, then ingest day FIRST_TICK's actuals and the plans for the
    next day (``day_plans``) and run that tick. Returns the forecasts issued at both steps."""
    config = load_config(root)
    day0 = panel["ds"].min().normalize()
    days = ((panel["ds"] - day0) // pd.Timedelta("1D")).to_numpy()
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        store.ingest_frame(panel[days < FIRST_TICK], "history")
        for i, (day, promo) in enumerate(plans):
            store.ingest_future(future_file(root / f"plan-{i}.csv", panel, day0 + pd.Timedelta(days=day), promo))
        first = live.step()
        store.ingest_frame(panel[days == FIRST_TICK], "day")
        for i, (day, promo) in enumerate(day_plans):
            store.ingest_future(future_file(root / f"next-{i}.csv", panel, day0 + pd.Timedelta(days=day), promo))
        second = live.step()
        return issued(store, first.tick), issued(store, second.tick), first, second


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return promo_panel()


def test_live_future_drivers_change_the_issued_forecasts_in_their_direction(tmp_path, panel):
    quiet = run_live(make_project(tmp_path / "quiet"), panel, [(FIRST_TICK, 0.0)], [(FIRST_TICK + 1, 0.0)])
    # The second project first gets the same "no promotion" plans, then revised plans announcing one.
    promo = run_live(make_project(tmp_path / "promo"), panel, [(FIRST_TICK, 0.0), (FIRST_TICK, 1.0)],
                     [(FIRST_TICK + 1, 0.0), (FIRST_TICK + 1, 1.0)])
    for step in (0, 1):  # the start-up step and a regular tick
        a, b = quiet[step], promo[step]
        assert len(a) == len(b) == 4 * 24
        assert (a["ds"].to_numpy() == b["ds"].to_numpy()).all()
        ratio = b["y_hat"].sum() / a["y_hat"].sum()
        # The models learnt the 80 % lift from the history's promotion days; a ridge on 28 days of data
        # recovers it only roughly, so the test asks for at least half of it, and for every stream.
        assert ratio > 1 + PROMO_EFFECT / 2, ratio
        per_stream = b.groupby("stream_id")["y_hat"].sum() / a.groupby("stream_id")["y_hat"].sum()
        assert (per_stream > 1.2).all(), per_stream
    # Every value was ingested: the fallback filled none.
    assert quiet[2].summary.driver_values_filled == 0 and promo[3].summary.driver_values_filled == 0


def test_missing_future_values_fall_back_and_are_counted_not_a_crash(tmp_path, panel, caplog):
    # No plan at all for the tick forecast at start-up; a plan for only 12 of the 24 hours of the next one.
    import logging

    root = make_project(tmp_path / "none")
    config = load_config(root)
    day0 = panel["ds"].min().normalize()
    days = ((panel["ds"] - day0) // pd.Timedelta("1D")).to_numpy()
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live, \
            caplog.at_level(logging.WARNING, logger="mlma.live"):
        store.ingest_frame(panel[days < FIRST_TICK], "history")
        first = live.step()
        store.ingest_frame(panel[days == FIRST_TICK], "day")
        half = future_file(root / "half.csv", panel, day0 + pd.Timedelta(days=FIRST_TICK + 1), 0.0)
        rows = pd.read_csv(half)
        rows[pd.to_datetime(rows["ds"]).dt.hour < 12].to_csv(half, index=False)
        store.ingest_future(half)
        second = live.step()
        assert np.isfinite(issued(store, first.tick)["y_hat"]).all()
        assert np.isfinite(issued(store, second.tick)["y_hat"]).all()
    assert first.summary.driver_values_filled == 4 * 24
    assert second.summary.driver_values_filled == 4 * 12
    # The warning names the driver and its streams (it gave only the count): whose plans are missing is known.
    said = [r.getMessage() for r in caplog.records if "were not ingested" in r.getMessage()]
    assert said == [f"tick {first.tick}: 96 future driver value(s) for tick {first.tick + 1} were not ingested (mlma "
                    "ingest --future): promo of 4 stream(s) (s0, s1, s2, s3); filled with the value a season "
                    "earlier or the last known one",
                    f"tick {second.tick}: 48 future driver value(s) for tick {second.tick + 1} were not ingested "
                    "(mlma ingest --future): promo of 4 stream(s) (s0, s1, s2, s3); filled with the value a "
                    "season earlier or the last known one"], said


def test_fallback_takes_the_value_a_season_earlier_then_the_last_known():
    ds = pd.date_range("2025-01-01", periods=72, freq="h")
    frame = pd.DataFrame({"unique_id": "a", "ds": ds[:48], "y": 1.0, "t": np.arange(48.0)})
    bounds = pd.date_range("2025-01-01", periods=4, freq="D")
    future = pd.DataFrame({"unique_id": "a", "ds": ds[48:50], "t": [100.0, 101.0]})
    fleet = FleetData(frame, "h", bounds, drivers=Drivers(future=("t",)), future=future)
    values, filled = fleet.future_driver_values(0, 2, season_length=24)
    assert filled == 22
    assert values[:2, 0].tolist() == [100.0, 101.0]  # given
    assert values[2:, 0].tolist() == list(np.arange(26.0, 48.0))  # the same hour a day earlier
    # With a season longer than the history, the last known value.
    values, _ = fleet.future_driver_values(0, 2, season_length=24 * 7)
    assert values[2:, 0].tolist() == [47.0] * 22


def test_the_fill_warning_names_the_drivers_and_their_streams():
    """The warning that future values were filled said only how many: it names each driver nobody sent values of
    and its streams (the first few, then how many more), so that the feed to mend is known."""
    from mlma.training import ModelKey, ModelService

    data = promo_panel(7, days=12).assign(temp=12.0)
    last = data["ds"] >= "2025-03-14"                               # tick 11
    data.loc[last & (data["unique_id"] != "s0"), "promo"] = np.nan   # six streams' plans missing
    data.loc[last & (data["unique_id"] == "s0"), "temp"] = np.nan    # and one stream's weather
    drivers = Drivers(future=("promo", "temp"))
    fleet = FleetData(data, "h", pd.date_range("2025-03-03", periods=13, freq="D"), drivers=drivers)
    service = ModelService(fleet, "ridge", ForecastContext("h", 24, 24, drivers=drivers), train_window_ticks=10)
    keys = [ModelKey(s, 10) for s in range(7)]
    service.fit(keys)
    service.predict_many(keys, 11)
    assert service.driver_fills[11] == 7 * 24
    assert service.driver_fill_message(11) == (
        "168 future driver value(s) for tick 11 were not ingested (mlma ingest --future): promo of 6 stream(s) (s1, "
        "s2, s3, s4, s5 and 1 more); temp of 1 stream(s) (s0); filled with the value a season earlier or the last "
        "known one")
    assert service.driver_fill_message(10) is None


def test_observed_values_win_over_values_known_in_advance():
    ds = pd.date_range("2025-01-01", periods=48, freq="h")
    frame = pd.DataFrame({"unique_id": "a", "ds": ds, "y": 1.0, "t": np.r_[np.arange(47.0), np.nan]})
    future = pd.DataFrame({"unique_id": "a", "ds": ds[46:], "t": [-1.0, -2.0]})
    fleet = FleetData(frame, "h", pd.date_range("2025-01-01", periods=3, freq="D"),
                      drivers=Drivers(future=("t",)), future=future)
    assert fleet.driver_values(0, ds[45:]).ravel().tolist() == [45.0, 46.0, -2.0]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mlma.db'}"
    else:
        from mlma.store.testing import postgres_schema

        with postgres_schema(request.getfixturevalue("postgres_server")) as scoped:
            yield scoped


def test_store_keeps_what_was_known_when_and_names_bad_future_files(tmp_path, panel, store_url):
    with Store.create(store_url) as store:
        store.ingest_frame(panel[panel["ds"] < "2025-03-05"], "history")
        day = pd.Timestamp("2025-03-05")
        first = store.ingest_future(future_file(tmp_path / "a.csv", panel, day, 0.0))
        again = store.ingest_future(tmp_path / "a.csv")
        assert again.duplicate and again.ingest_id == first.ingest_id
        store.ingest_future(future_file(tmp_path / "b.csv", panel, day, 1.0))
        now = store.driver_values(["promo"], day)
        then = store.driver_values(["promo"], day, as_of_ingest=first.ingest_id)
        assert (now["promo"] == 1.0).all() and (then["promo"] == 0.0).all() and len(now) == 4 * 24
        two = store.driver_values(["promo"], day, streams=[2, 0])          # only those streams' rows
        pd.testing.assert_frame_equal(two, now[now["stream_id"].isin([0, 2])].reset_index(drop=True))
        # Observed values (with the actuals) came with the history and are in force there.
        history = store.driver_values(["promo"], end=day)
        assert len(history) == len(panel[panel["ds"] < "2025-03-05"])
        # Streams without actuals are skipped and reported; nothing else changes.
        other = pd.DataFrame({"unique_id": ["s0", "ghost"], "ds": ["2025-03-06 00:00"] * 2, "promo": [1.0, 1.0]})
        report = store.ingest_future(other)
        assert report.rows_new == 1 and report.rows_dropped == 1
        assert "ghost" in store.ingests()["findings"].iloc[-1][0]["message"]
    bad = pd.DataFrame({"unique_id": ["s0", "s0"], "ds": ["2025-03-06 00:00", "2025-03-06 01:00"],
                        "promo": ["yes", 1.0]})
    with pytest.raises(DataError, match=r"driver column 'promo' has 1 non-numeric value\(s\), first 'yes'"):
        read_future_drivers(bad)
    with pytest.raises(DataError, match="repeat a"):
        read_future_drivers(bad.assign(promo=1.0, ds="2025-03-06 00:00"))
    path = tmp_path / "bad.csv"
    bad.assign(ds=["2025-03-06 00:00", "not a time"], promo=1.0).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"bad.csv: 1 timestamp\(s\) in 'ds' cannot be read, first 'not a time' "
                                        r"on line/row 3"):
        read_future_drivers(path)


def test_future_timestamps_with_zones_are_placed_on_the_actuals_clock_or_refused(tmp_path, panel, store_url):
    """Actuals sent with UTC offsets were converted to UTC, so a future file with offsets is converted the same
    way (and says so); actuals sent tz-naive are on a local clock the offsets cannot be mapped to: refused.
    A future file mixing naive and zoned timestamps is refused either way."""
    history = panel[panel["ds"] < "2025-03-05"]
    day = pd.Timestamp("2025-03-05")
    plan = future_file(tmp_path / "plan.csv", panel, day, 1.0)
    zoned = pd.read_csv(plan)
    zoned["ds"] = pd.to_datetime(zoned["ds"]).dt.strftime("%Y-%m-%dT%H:%M:%S+01:00")
    zoned.to_csv(tmp_path / "zoned.csv", index=False)
    with Store.create(f"sqlite:///{tmp_path / 'naive.db'}") as store:
        with pytest.raises(DataError, match="no checked file of actuals tells yet which clock"):
            store.ingest_future(tmp_path / "zoned.csv")
        store.ingest_file(_csv_of(history, tmp_path / "naive-history.csv"))
        assert store.time_zones() == "naive"
        with pytest.raises(DataError, match="zoned.csv: the ds timestamps carry time zones, but this project's "
                                            "are tz-naive"):
            store.ingest_future(tmp_path / "zoned.csv")
        assert store.driver_values(["promo"], day).empty
    sent = history.assign(ds=(history["ds"] + pd.Timedelta(hours=1)).dt.strftime("%Y-%m-%dT%H:%M:%S+01:00"))
    sent.to_csv(tmp_path / "history.csv", index=False)
    with Store.create(store_url) as store:
        report = store.ingest_file(tmp_path / "history.csv")
        assert "timezone-converted" in {f.code for f in report.validation.findings}
        assert store.newest_ds() == history["ds"].max()               # the offsets became UTC
        done = store.ingest_future(tmp_path / "zoned.csv")
        assert done.rows_new == 4 * 24 and any("time zone" in n and "as this project's actuals" in n
                                                for n in done.notes), done.notes
        # 00:00+01:00 to 23:00+01:00 is 23:00 the day before to 22:00 UTC (23:00 itself was observed already).
        values = store.driver_values(["promo"], day)
        assert values["ds"].max() == day + pd.Timedelta(hours=22) and len(values) == 4 * 23
        assert (values["promo"] == 1.0).all()
        mixed = zoned.copy()
        mixed.loc[5, "ds"] = "2025-03-05T05:00:00"
        mixed.to_csv(tmp_path / "mixed.csv", index=False)
        with pytest.raises(DataError, match=r"mixed.csv: the ds column mixes 1 timestamp without a time zone "
                                            r"\(line 7"):
            store.ingest_future(tmp_path / "mixed.csv")


def test_the_checked_ingest_stores_driver_columns_as_observed_values(tmp_path, panel):
    """`mlma ingest` (Store.ingest_file, the validation boundary) keeps the driver columns of a file or a
    frame of actuals, and a frame that differs only in a driver's values is new content, not a duplicate."""
    history = panel[panel["ds"] < "2025-03-05"]
    path = tmp_path / "history.csv"
    history.to_csv(path, index=False)
    with Store.create(f"sqlite:///{tmp_path / 'mlma.db'}") as store:
        report = store.ingest_file(path)
        assert not report.duplicate and report.clock is not None and report.rows_new == len(history)
        stored = store.driver_values(["promo"])
        assert len(stored) == len(history)
        assert stored["promo"].sum() == pytest.approx(history["promo"].sum())
        assert store.ingest_file(path).duplicate
        # The same actuals as a frame, with one day's promotion flags corrected.
        day = panel[(panel["ds"] >= "2025-03-04") & (panel["ds"] < "2025-03-05")]
        same = store.ingest_file(day.copy(), source="same day")
        revised = store.ingest_file(day.assign(promo=1.0 - day["promo"]), source="flags corrected")
        assert not revised.duplicate and revised.ingest_id != same.ingest_id
        # y is the same, but every row's driver value changed: revised, not "unchanged" (they said 0 revised).
        assert (revised.rows_revised, revised.rows_unchanged) == (len(day), 0)
        assert revised.drivers_revised == {"promo": len(day)}
        now = store.driver_values(["promo"], "2025-03-04", "2025-03-05")
        assert len(now) == len(day)
        flipped = day.sort_values(["unique_id", "ds"])["promo"].to_numpy()
        assert (now.sort_values(["stream_id", "ds"])["promo"].to_numpy() == 1.0 - flipped).all()


def test_resent_actuals_with_corrected_driver_values_count_them_revised_and_store_them(panel, store_url):
    """A file of actuals sent again with some driver values corrected said "0 revised" (its y were the same)
    while the new values were stored: the rows are revised, the values counted per driver, and in force."""
    from test_store import count

    from mlma.store import schema as S

    day = panel[(panel["ds"] >= "2025-03-04") & (panel["ds"] < "2025-03-05")].reset_index(drop=True)
    day = day.assign(temp=np.arange(len(day), dtype=float))
    day.loc[40, "temp"] = np.nan                                    # not observed at first
    fixed = day.copy()
    fixed.loc[0:9, "promo"] = 1.0 - day.loc[0:9, "promo"]           # 10 flags corrected
    fixed.loc[5:14, "temp"] += 0.5                                  # 10 temperatures, 5 in the same rows
    fixed.loc[20, ["y", "promo"]] = [day.loc[20, "y"] + 1.0, 1.0 - day.loc[20, "promo"]]  # y and a flag
    fixed.loc[40, "temp"] = 7.0                                     # a value the row had none of
    with Store.create(store_url) as store:
        store.ingest_frame(day, "first")
        # A value known in advance for an observed hour (stored, unused) is no reason to count that row: the
        # observed value sent again is compared with the observed one.
        store.ingest_future(day.loc[[50], ["unique_id", "ds", "promo"]].assign(promo=5.0), source="late plan")
        report = store.ingest_frame(fixed, "corrected")
        # Rows 0-14, 20 and 40 changed; row 20's y too, counted once.
        assert (report.rows_new, report.rows_revised, report.rows_unchanged) == (0, 17, len(day) - 17)
        assert report.drivers_revised == {"promo": 11, "temp": 11}
        assert str(report).endswith("; driver values revised: 11 promo, 11 temp"), str(report)
        assert store.ingests()["rows_revised"].iloc[-1] == 17                   # the ingest's record says so too
        now = store.driver_values(["promo", "temp"], "2025-03-04", "2025-03-05")
        ids = dict(zip(store.streams()["id"], store.streams()["unique_id"]))
        now = now.assign(unique_id=now["stream_id"].map(ids)).sort_values(["unique_id", "ds"])
        expected = fixed.sort_values(["unique_id", "ds"])
        np.testing.assert_array_equal(now["promo"].to_numpy(), expected["promo"].to_numpy())
        np.testing.assert_array_equal(now["temp"].to_numpy(), expected["temp"].to_numpy())
        # Sent again with one y corrected and the same driver values: new content, so the driver values are
        # compared (the same content again is a duplicate that never reaches them), and none changed.
        stored = count(store, S.driver_values)
        again = store.ingest_frame(fixed.assign(y=fixed["y"] + (fixed.index == 30)), "corrected again")
        assert again.duplicate is False
        assert (again.rows_revised, again.rows_unchanged, again.drivers_revised) == (1, len(day) - 1, {})
        assert count(store, S.driver_values) == stored                     # and none was stored again


def test_a_rolling_feed_stores_unchanged_observed_values_once_and_counts_only_its_corrections(store_url):
    """A feed that sends each day the days before again (a rolling window) stored the older days' driver values
    once more each time, and its corrections were miscounted: the newest earlier value was looked up over the
    whole file (the newest ingest of any of its keys), not per stream, time and driver."""
    from test_store import count

    from mlma.store import schema as S

    ds = pd.date_range("2025-03-01", periods=72, freq="h")
    feed = pd.DataFrame({"unique_id": np.repeat(["a", "b"], 72), "ds": np.tile(ds, 2), "y": 1.0,
                         "temp": np.arange(144.0)})
    days = (feed["ds"] - ds[0]) // pd.Timedelta("1D")
    with Store.create(store_url) as store:
        for d in (1, 2):
            report = store.ingest_frame(feed[days < d], f"days 0-{d - 1}")
            assert report.rows_revised == 0 and not report.drivers_revised
        assert count(store, S.driver_values) == 2 * 48                  # day 0's values once, not twice
        last = feed[days < 3].copy()
        last.loc[(last["unique_id"] == "a") & (last["ds"] == ds[3]), "temp"] = -1.0   # one of day 0 corrected
        report = store.ingest_frame(last, "days 0-2")
        assert (report.rows_new, report.rows_revised, report.drivers_revised) == (48, 1, {"temp": 1})
        assert count(store, S.driver_values) == 2 * 72 + 1


def test_what_a_resent_feed_changed_is_counted_from_the_values_it_stored_not_by_reading_every_value_again(
        store_url):
    """Counting what a re-sent file of actuals changed read all its driver values twice more (a count per driver,
    then the rows), on every rolling re-send too, most of whose values are unchanged and not stored: 40 % more
    time for 200,000 rows. A value not stored is unchanged, so the staged values are read once (to pick the
    values to store); what changed is counted among the values stored. The counts are as they were."""
    import sqlalchemy as sa

    from mlma.store import schema as S

    ds = pd.date_range("2025-03-01", periods=96, freq="h")
    feed = pd.DataFrame({"unique_id": np.repeat(["a", "b"], 96), "ds": np.tile(ds, 2), "y": 1.0,
                         "temp": np.arange(192.0), "promo": 0.0})
    days = ((feed["ds"] - ds[0]) // pd.Timedelta("1D")).to_numpy()
    with Store.create(store_url) as store:
        store.ingest_frame(feed[days < 2], "days 0-1")
        statements = []
        sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(" ".join(a[2].split())))

        def reads_of_staged_values(frame, source):
            statements.clear()
            report = store.ingest_frame(frame, source)
            # Statements that read the staged driver values (their table's own name, not another's prefix).
            return report, sum(bool(re.search(r"\bFROM mlma_stage_drivers\b", s)) for s in statements)

        rolling, reads = reads_of_staged_values(feed[(days >= 1) & (days < 3)], "days 1-2")
        assert (rolling.rows_new, rolling.rows_revised, rolling.drivers_revised, reads) == (48, 0, {}, 1)
        fixed = feed[(days >= 1) & (days < 3)].copy()
        fixed.loc[fixed.index[[0, 30]], "temp"] = -1.0                   # two temperatures of stored rows corrected
        fixed.loc[fixed.index[30], "promo"] = 1.0                         # and a flag in one of those rows
        fixed.loc[fixed.index[60], "y"] = 2.0                             # a y corrected, its drivers the same
        corrected, reads = reads_of_staged_values(fixed, "days 1-2 corrected")
        assert (corrected.rows_new, corrected.rows_revised, corrected.rows_unchanged) == (0, 3, 93)
        assert (corrected.drivers_revised, reads) == ({"temp": 2, "promo": 1}, 1)
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(S.driver_values)).scalar_one() \
                == 2 * (2 * 48 + 48) + 3                                  # unchanged values stored once


def test_a_later_future_file_over_the_same_hours_says_how_many_values_it_replaced(tmp_path, panel, store_url):
    """Last writer wins, but not silently: a campaign file over hours an earlier one declared says how many of
    its values differ from those, per driver. Equal values, new hours, new drivers and blank cells replace
    nothing."""
    day = pd.Timestamp("2025-03-05")
    with Store.create(store_url) as store:
        store.ingest_frame(panel[panel["ds"] < day], "history")
        first = pd.read_csv(future_file(tmp_path / "a.csv", panel, day, 0.0)).assign(temp=10.0)
        done = store.ingest_future(first)
        assert done.drivers_revised == {} and not any("replaced" in n for n in done.notes)
        later = first.copy()
        hour = pd.to_datetime(later["ds"]).dt.hour
        later.loc[hour < 6, "promo"] = 1.0                          # 6 hours x 4 streams changed
        later.loc[hour == 6, "temp"] = 12.5                         # 4 values of the other driver
        later.loc[hour == 7, "temp"] = np.nan                       # blank: the earlier value stays in force
        later = pd.concat([later.assign(wind=2.0), pd.DataFrame(    # a new hour, and a new driver
            {"unique_id": ["s0"], "ds": ["2025-03-06 00:00:00"], "promo": [1.0], "temp": [3.0]})])
        report = store.ingest_future(later)
        assert report.drivers_revised == {"promo": 24, "temp": 4}
        said = [n for n in report.notes if "replaced" in n]
        assert said == ["replaced 28 value(s) that an earlier file gave for the same stream and time with different "
                        "ones (24 promo, 4 temp): this file's values are in force"], report.notes
        assert "future-replaced" in {f["code"] for f in store.ingests()["findings"].iloc[-1]}  # on record
        now = store.driver_values(["promo", "temp"], day, day + pd.Timedelta("1D"))
        hours = now["ds"].dt.hour
        assert (now.loc[hours < 6, "promo"] == 1.0).all() and (now.loc[hours >= 6, "promo"] == 0.0).all()
        assert (now.loc[hours == 6, "temp"] == 12.5).all() and (now.loc[hours == 7, "temp"] == 10.0).all()


def test_a_later_future_file_does_not_count_as_replaced_values_for_hours_whose_observed_value_is_in_force(
        store_url):
    """A plan sent again over hours already observed said it replaced their values and that "this file's values
    are in force", but the observed values are (observed beats known in advance). Those are not counted as
    replaced; a driver the actuals did not carry is (the plan's value is in force there)."""
    ds = pd.date_range("2025-01-01", periods=72, freq="h")
    with Store.create(store_url) as store:
        store.ingest_frame(pd.DataFrame({"unique_id": "a", "ds": ds[:48], "y": 1.0, "temp": 10.0}), "actuals")
        plan = pd.DataFrame({"unique_id": "a", "ds": ds[24:], "temp": 20.0, "promo": 0.0})  # 24 observed hours
        store.ingest_future(plan, source="plan 1")
        report = store.ingest_future(plan.assign(temp=30.0, promo=1.0), source="plan 2")
        assert report.drivers_revised == {"temp": 24, "promo": 48}
        assert [n for n in report.notes if "replaced" in n] == [
            "replaced 72 value(s) that an earlier file gave for the same stream and time with different ones "
            "(24 temp, 48 promo): this file's values are in force"], report.notes
        now = store.driver_values(["temp", "promo"], ds[24], ds[-1] + pd.Timedelta("1h"))
        assert now["temp"].tolist() == [10.0] * 24 + [30.0] * 24 and (now["promo"] == 1.0).all()
        # Over observed hours only: nothing this file gives is in force, and nothing is said to be.
        observed_only = store.ingest_future(plan[plan["ds"] < ds[48]].assign(temp=40.0, promo=1.0), source="plan 3")
        assert observed_only.drivers_revised == {} and not any("replaced" in n for n in observed_only.notes)


def test_a_future_file_none_of_whose_rows_is_taken_is_refused_naming_the_reason(panel, store_url):
    """Every row skipped (streams without actuals, rows older than the data kept) was an ingest of nothing that
    `mlma ingest --future` reported as done, and the same file sent again "already ingested". It is refused as
    a file of actuals without a usable row is, naming the reason that took the most rows; nothing is written."""
    with Store.create(store_url) as store:
        store.ingest_frame(panel[panel["ds"] < "2025-03-05"], "history")
        n_ingests = len(store.ingests())
        ghosts = pd.DataFrame({"unique_id": ["ghost", "ghost", "phantom"], "promo": 1.0,
                               "ds": pd.to_datetime(["2025-03-05 00:00", "2025-03-05 01:00", "2025-03-05 00:00"])})
        for _ in range(2):  # not recorded: the second copy is refused the same way, not "already ingested"
            with pytest.raises(DataError, match=r"^future drivers: no usable rows left: none of its 3 row\(s\) was "
                                                r"taken; most rows \(3\) were dropped as future-unknown-streams: "
                                                r"skipped 3 row\(s\) of 2 stream\(s\) the store has no actuals "
                                                r"for, e.g. 'ghost'.*; nothing was written$"):
                store.ingest_future(ghosts)
        assert len(store.ingests()) == n_ingests and store.driver_values(["promo"], "2025-03-05").empty
        store.prune(pd.Timestamp("2025-03-03 12:00"), by="agent")
        old = pd.DataFrame({"unique_id": "s0", "promo": 1.0, "ds": pd.date_range("2025-03-03", periods=5, freq="h")})
        with pytest.raises(DataError, match=r"most rows \(5\) were dropped as before-kept: dropped 5 row\(s\) older "
                                            r"than the data the project keeps"):
            store.ingest_future(pd.concat([old, ghosts.iloc[:2]]))
        # Once a stream's actuals are in, the same file's rows of it go in.
        store.ingest_frame(pd.DataFrame({"unique_id": "ghost", "ds": [pd.Timestamp("2025-03-04 23:00")], "y": 1.0}),
                           "ghost")
        assert store.ingest_future(ghosts).rows_new == 2


def test_project_config_declares_drivers_and_holidays(tmp_path):
    root = make_project(tmp_path / "p", drivers='["promo", "temperature"]')
    text = (root / "mlma.toml").read_text()
    (root / "mlma.toml").write_text(text.replace('holidays = ""', 'holidays = "DE"'))
    config = load_config(root)
    assert config.drivers() == Drivers(future=("promo", "temperature"))
    assert config.model_params() == {"holidays": "DE"}
    (root / "mlma.toml").write_text(text.replace('historical_drivers = []', 'historical_drivers = ["promo"]'))
    with pytest.raises(ConfigError, match="'promo' is declared both future and historical"):
        load_config(root)
    (root / "mlma.toml").write_text(text.replace('holidays = ""', 'holidays = "XX"'))
    with pytest.raises(ConfigError, match="no calendar for country 'XX'"):
        load_config(root)


# -- models ---------------------------------------------------------------------------------------------------
def test_historical_drivers_are_used_only_at_lag_horizon():
    """A historical driver's column at a target time is its value ``horizon`` steps earlier: changing the
    driver's values after the origin cannot change the forecast; changing them before it can."""
    panel = promo_panel(1, days=40)
    ds, y, promo = panel["ds"].to_numpy(), panel["y"].to_numpy(), panel[["promo"]].to_numpy()
    ctx = ForecastContext("h", 24, 24, drivers=Drivers(historical=("promo",)))
    n = 24 * 35
    model = RidgeForecaster(ctx).fit(ds[:n], y[:n], promo[:n])
    assert model.feature_names()[-2:] == ["promo_lag_24-recent_mean", "promo_lag_24-recent_mean*seasonal"]
    future = ds[n:n + 24]
    base = model.predict(ds[:n], y[:n], future, promo[:n], np.full((24, 1), np.nan))
    assert np.array_equal(base, model.predict(ds[:n], y[:n], future, promo[:n], np.ones((24, 1))))
    flipped = promo[:n].copy()
    flipped[-24:] = 1 - flipped[-24:]
    assert not np.allclose(base, model.predict(ds[:n], y[:n], future, flipped, None))


@pytest.mark.parametrize("spec", ["ridge", "lightgbm", "sklearn:linear_model.Ridge"])
def test_every_driver_model_learns_a_promotion(spec):
    """Over 7 forecast days (168 hours, about 50 of them on promotion), knowing the promotion calendar cuts the
    MAE of every model that accepts drivers by more than a quarter: the effect (80 %) dwarfs the noise
    (Poisson, a few % at these volumes)."""
    panel = promo_panel(1, days=49, seed=11)
    ds, y, promo = panel["ds"].to_numpy(), panel["y"].to_numpy(), panel[["promo"]].to_numpy()
    errors = {}
    for use in (True, False):
        ctx = ForecastContext("h", 24, 24, drivers=Drivers(future=("promo",)))
        assert make_forecaster(spec, ctx, use_drivers=use).uses_drivers is use
        err = []
        for day in range(42, 49):
            n = 24 * day
            lo = n - 24 * 28
            out = fit_forecaster(spec, ctx, ds[lo:n], y[lo:n], promo[lo:n], use_drivers=use)
            assert out.fallback_reason is None
            pred = out.model.predict(ds[lo:n], y[lo:n], ds[n:n + 24], promo[lo:n] if use else None,
                                     promo[n:n + 24] if use else None)
            err.append(np.abs(pred - y[n:n + 24]).mean())
        errors[use] = float(np.mean(err))
    assert errors[True] < 0.75 * errors[False], errors


def test_holiday_feature_marks_public_holidays():
    panel = promo_panel(1, days=70)
    ctx = ForecastContext("h", 24, 24)
    model = RidgeForecaster(ctx, holidays="DE")
    assert model.feature_names()[-1] == "holiday_DE"
    spec_model = make_forecaster("ridge:holidays=de:alpha=3", ctx)
    assert spec_model.holidays == "DE" and spec_model.alpha == 3.0
    # Easter Monday 2025 (21 April) is a public holiday in Germany: its column is 1 for its 24 hours.
    from mlma.models.features import holiday_flags

    day = pd.date_range("2025-04-20", periods=72, freq="h").to_numpy()
    assert holiday_flags(day, "DE").reshape(3, 24).mean(axis=1).tolist() == [0.0, 1.0, 0.0]
    model.fit(panel["ds"].to_numpy(), panel["y"].to_numpy())


# -- value on the simulator ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_drivers_lower_the_backtest_mae_on_the_simulator():
    """The weather moves simulated demand by a few % an hour. Over 60 zones x 42 scored days a ridge given the
    weather and the campaign calendar as future drivers has a lower MAE under the `always` policy than the
    same ridge without them. Zones differ in size by two orders of magnitude, so each zone's change is taken
    relative to its own MAE; a one-sided t-test over zones must reject "no gain" at 1 % (measured: -0.96 %
    on average, p = 0.0006, 68 % of zones better)."""
    from scipy import stats

    sim = simulate_platform(60, 70, seed=11, drivers=True)
    maes = {}
    for name, drivers in {"without": Drivers(), "with": Drivers(future=("temperature", "rain", "campaign"))}.items():
        config = BacktestConfig(policies=["always"], model="ridge", executor="inline", drivers=drivers,
                                sample_streams=0)
        result = run_backtest(sim.data, config)
        maes[name] = result.per_stream.set_index("unique_id")["mae"]
        assert result.config["future_drivers"] == list(drivers.future)
    change = ((maes["with"] - maes["without"]) / maes["without"]).dropna()
    assert len(change) >= 55
    assert change.mean() < 0
    assert stats.ttest_1samp(change, 0.0, alternative="less").pvalue < 0.01


def test_cli_ingest_future_stores_values_and_names_bad_files(tmp_path, panel):
    import subprocess
    import sys

    root = make_project(tmp_path / "cli")
    history = tmp_path / "history.csv"
    panel[panel["ds"] < "2025-03-05"].to_csv(history, index=False)
    plan = future_file(tmp_path / "plan.csv", panel, pd.Timestamp("2025-03-05"), 1.0)
    pd.read_csv(plan).assign(wind=3.0).to_csv(plan, index=False)
    mlma = [str(Path(sys.executable).parent / "mlma")]

    def run(*args):
        return subprocess.run([*mlma, *args, "--project", str(root)], capture_output=True, text=True, timeout=300)

    assert run("ingest", str(history)).returncode == 0
    done = run("ingest", "--future", str(plan))
    assert done.returncode == 0, done.stderr
    assert "192 future driver values for 4 streams" in done.stdout
    assert "wind are stored but not declared" in " ".join(done.stdout.split())
    again = run("ingest", "--future", str(plan))
    assert "already ingested" in again.stdout
    ghost = tmp_path / "ghost.csv"
    pd.DataFrame({"unique_id": ["s0", "ghost"], "ds": ["2025-03-07 00:00"] * 2, "promo": 1.0}).to_csv(ghost, index=False)
    said = " ".join(run("ingest", "--future", str(ghost)).stdout.split())
    assert "1 future driver values for 1 streams" in said
    assert "note: skipped 1 row(s) of 1 stream(s) the store has no actuals for, e.g. 'ghost'" in said, said
    bad = tmp_path / "bad.csv"
    pd.read_csv(plan).assign(y=1.0).to_csv(bad, index=False)
    failed = run("ingest", "--future", str(bad))
    assert failed.returncode != 0 and "has no target column 'y'" in failed.stdout + failed.stderr
    with Store.open(load_config(root).store_url) as store:
        assert len(store.driver_values(["promo"], "2025-03-05", "2025-03-06")) == 4 * 24


def test_the_backtest_names_the_streams_that_hold_no_value_of_a_driver_the_model_uses(tmp_path, caplog):
    """A stream whose driver column is empty (another city's weather feed) is fitted and forecast without it: the
    backtest said nothing. It warns, naming the driver and the streams (the first few, then how many more), in
    its log, its summary and `mlma backtest`'s output. An event driver nobody gave is 0 by declaration, and a
    model that takes no drivers uses none: neither is warned about."""
    import logging
    import subprocess
    import sys

    data = promo_panel(7, days=12).assign(campaign=np.nan)
    data.loc[data["unique_id"] != "s0", "promo"] = np.nan
    drivers = Drivers(future=("promo", "campaign"), events=("campaign",))
    config = BacktestConfig(policies=["never"], model="ridge", executor="inline", drivers=drivers, frontier=False,
                            bootstrap=0, sample_streams=0)
    with caplog.at_level(logging.WARNING, logger="mlma.backtest"):
        result = run_backtest(data, config)
    message = ("the model uses driver promo, but 6 of 7 streams hold no value of it (s1, s2, s3, s4, s5 and 1 "
               "more): they are fitted and forecast without it")
    assert [r.getMessage() for r in caplog.records if r.name == "mlma.backtest"] == [message]
    assert result.config["streams_without_drivers"] == {"promo": {"n_streams": 6,
                                                                  "first": ["s1", "s2", "s3", "s4", "s5"]}}
    plain = run_backtest(data, BacktestConfig(policies=["never"], model="seasonal-naive", executor="inline",
                                              drivers=drivers, frontier=False, bootstrap=0, sample_streams=0))
    assert plain.config["streams_without_drivers"] == {}
    data.to_csv(tmp_path / "data.csv", index=False)
    done = subprocess.run([str(Path(sys.executable).parent / "mlma"), "backtest", "--data", "data.csv", "--model",
                           "ridge", "--drivers", "promo,campaign", "--event-drivers", "campaign", "--policies", "never",
                           "--no-frontier", "--bootstrap", "0", "--executor", "inline"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"warning: {message}" in " ".join(done.stdout.split()), done.stdout


def test_cli_ingest_says_what_driver_values_changed_and_refuses_a_future_file_it_took_nothing_of(tmp_path, panel):
    """What `mlma ingest` prints is true: corrected observed driver values are revised rows, named by driver;
    a plan over hours an earlier one gave says how many values it replaced; a future file none of whose rows
    is taken exits 2 saying why, as a file of actuals without a usable row does (it exited 0)."""
    import subprocess
    import sys

    root = make_project(tmp_path / "cli")
    history = panel[panel["ds"] < "2025-03-05"]
    history.to_csv(tmp_path / "history.csv", index=False)
    corrected = history.copy()
    first_day = (corrected["unique_id"] == "s0") & (corrected["ds"] < "2025-03-04")
    corrected.loc[first_day, "promo"] = 1.0 - corrected.loc[first_day, "promo"]
    corrected.to_csv(tmp_path / "corrected.csv", index=False)
    day = pd.Timestamp("2025-03-05")
    future_file(tmp_path / "plan.csv", panel, day, 0.0)
    future_file(tmp_path / "revised-plan.csv", panel, day, 1.0)
    pd.DataFrame({"unique_id": ["ghost", "phantom"], "ds": ["2025-03-05 00:00"] * 2, "promo": 1.0}).to_csv(
        tmp_path / "ghosts.csv", index=False)

    def run(*args):
        done = subprocess.run([str(Path(sys.executable).parent / "mlma"), *args, "--project", str(root)],
                              capture_output=True, text=True, timeout=300)
        return done.returncode, " ".join((done.stdout + done.stderr).split())

    assert run("ingest", str(tmp_path / "history.csv"))[0] == 0
    code, said = run("ingest", str(tmp_path / "corrected.csv"))
    assert code == 0 and f"0 new, 24 revised, {len(history) - 24:,} unchanged, 0 dropped rows; 0 new streams; " \
        "driver values revised: 24 promo" in said, said
    assert run("ingest", "--future", str(tmp_path / "plan.csv"))[0] == 0
    code, said = run("ingest", "--future", str(tmp_path / "revised-plan.csv"))
    assert code == 0 and "note: replaced 96 value(s) that an earlier file gave for the same stream and time with " \
        "different ones (96 promo): this file's values are in force" in said, said
    for _ in range(2):  # nothing recorded: sent again, it is refused again, not "already ingested"
        code, said = run("ingest", "--future", str(tmp_path / "ghosts.csv"))
        assert code == 2 and "error: ghosts.csv: no usable rows left: none of its 2 row(s) was taken; most rows (2) " \
            "were dropped as future-unknown-streams: skipped 2 row(s) of 2 stream(s) the store has no actuals for" \
            in said, said


def test_a_driver_model_without_driver_values_still_fits_and_forecasts():
    """Drivers declared but no values given (a stream whose feed has no weather): the drivers are held at zero
    and the model forecasts as one without drivers would (same features otherwise, same fit)."""
    panel = promo_panel(1, days=35)
    ds, y = panel["ds"].to_numpy(), panel["y"].to_numpy()
    n = 24 * 34
    with_ctx = ForecastContext("h", 24, 24, drivers=Drivers(future=("promo",)))
    blind = RidgeForecaster(with_ctx).fit(ds[:n], y[:n])
    plain = RidgeForecaster(ForecastContext("h", 24, 24)).fit(ds[:n], y[:n])
    assert blind.n_train_ == plain.n_train_
    np.testing.assert_allclose(blind.predict(ds[:n], y[:n], ds[n:]), plain.predict(ds[:n], y[:n], ds[n:]),
                               rtol=1e-6)


def test_relative_drivers_are_the_change_from_the_recent_mean():
    """Additive drivers: relative ones (the default with the local transform) are named for what they are;
    absolute ones (relative_drivers=False) are the raw values. Both learn the promotion's lift."""
    panel = promo_panel(1, days=40)
    ds, y, promo = panel["ds"].to_numpy(), panel["y"].to_numpy(), panel[["promo"]].to_numpy()
    ctx = ForecastContext("h", 24, 24, drivers=Drivers(future=("promo",)))
    n = 24 * 35
    relative = RidgeForecaster(ctx, driver_effect="additive").fit(ds[:n], y[:n], promo[:n])
    absolute = RidgeForecaster(ctx, driver_effect="additive", relative_drivers=False).fit(ds[:n], y[:n], promo[:n])
    assert relative.feature_names()[-2] == "promo-recent_mean" and absolute.feature_names()[-2] == "promo"
    assert make_forecaster("ridge:relative_drivers=false", ctx).relative_drivers is False
    # Both learn that a promotion day after a quiet day lifts demand.
    quiet = promo[:n].copy()
    quiet[-24:] = 0.0
    for model in (relative, absolute):
        on = model.predict(ds[:n], y[:n], ds[n:n + 24], quiet, np.ones((24, 1)))
        off = model.predict(ds[:n], y[:n], ds[n:n + 24], quiet, np.zeros((24, 1)))
        assert on.sum() > 1.4 * off.sum()
    with pytest.raises(ValueError, match="relative_drivers must be"):
        RidgeForecaster(ctx, relative_drivers="yes")


def test_a_file_whose_driver_cells_are_all_blank_stores_its_actuals_and_no_driver_value(tmp_path, panel, store_url):
    """A day without a campaign (the flag left empty) or a weather feed that was down: every driver cell blank.
    The whole file was refused ("zero-size array to reduction operation minimum"), a day of actuals lost for
    the fleet; so was a future file of blank cells, which the docs allow."""
    with Store.create(store_url) as store:
        store.ingest_file(panel[panel["ds"] < "2025-03-04"], source="history")
        held = len(store.driver_values(["promo"]))
        day = panel[(panel["ds"] >= "2025-03-04") & (panel["ds"] < "2025-03-05")].assign(promo=np.nan)
        path = tmp_path / "day.csv"
        day.to_csv(path, index=False)
        report = store.ingest_file(path)
        assert report.rows_new == len(day) and not report.drivers_revised
        assert len(store.driver_values(["promo"])) == held
        blank = pd.DataFrame({"unique_id": ["s0", "s1"], "ds": ["2025-03-05 00:00"] * 2, "promo": [np.nan] * 2})
        assert store.ingest_future(blank).rows_new == 0
        assert len(store.driver_values(["promo"])) == held


@pytest.mark.parametrize("name", ["s", "src"])
def test_a_driver_named_like_an_internal_column_keeps_each_streams_values(name):
    """The fleet's driver table kept its keys in columns "s" and "src": a driver of that name took their place,
    and streams a, b, c read NaN instead of 5, 7, 9."""
    ds = pd.date_range("2025-01-01", periods=48, freq="h")
    frame = pd.DataFrame({"unique_id": np.repeat(["a", "b", "c"], 48), "ds": np.tile(ds, 3), "y": 1.0,
                          name: np.repeat([5.0, 7.0, 9.0], 48)})
    fleet = FleetData(frame, "h", pd.date_range("2025-01-01", periods=3, freq="D"), drivers=Drivers(future=(name,)))
    assert [fleet.driver_values(s, ds[:2].to_numpy())[:, 0].tolist() for s in range(3)] == [[5.0] * 2, [7.0] * 2,
                                                                                             [9.0] * 2]


def test_future_files_that_pandas_alone_would_describe_are_named(tmp_path):
    """An empty file, a quote left open, a column with values but no name in the header (a driver called
    "Unnamed: 3") and a Parquet column of times (stored as a driver of epoch nanoseconds) are refused, naming the
    file. A comma at the end of every line (an empty column without a name) is no column."""
    cases = {"empty.csv": "", "quote.csv": 'unique_id,ds,promo\ns0,"2025-03-05 00:00,1\n',
             "comma.csv": "unique_id,ds,promo,\ns0,2025-03-05 00:00,1,\ns0,2025-03-05 01:00,1,7\n"}
    said = {"empty.csv": "the file is empty (not even a header line)", "quote.csv": "cannot read it as CSV",
            "comma.csv": "column 4 of the header has no name but holds values (line 3: '7')"}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DataError) as caught:
            read_future_drivers(path)
        assert str(caught.value).startswith(f"{path}: {said[name]}"), caught.value
    trailing = tmp_path / "trailing.csv"
    trailing.write_text("unique_id,ds,promo,\ns0,2025-03-05 00:00,1,\ns0,2025-03-05 01:00,0,\n")
    assert read_future_drivers(trailing).columns.tolist() == ["unique_id", "ds", "promo"]
    times = tmp_path / "times.parquet"
    pd.DataFrame({"unique_id": ["s0", "s0"], "ds": pd.to_datetime(["2025-03-05 00:00", "2025-03-05 01:00"]),
                  "promo": [1.0, None], "updated": pd.to_datetime(["2025-03-01", "2025-03-01"])}).to_parquet(times)
    with pytest.raises(DataError, match=r"column 'updated' holds times \(datetime64"):
        read_future_drivers(times)
    late = tmp_path / "late.parquet"
    pd.DataFrame({"unique_id": ["s0", "s0"], "ds": ["2025-03-05 00:00", "soon"], "promo": [1.0, 0.0]}).to_parquet(late)
    with pytest.raises(DataError, match=r"first 'soon' on line/row 2"):    # its second row, not "line 3"
        read_future_drivers(late)


def _day_of(panel: pd.DataFrame, day: str) -> pd.DataFrame:
    start = pd.Timestamp(day)
    return panel[(panel["ds"] >= start) & (panel["ds"] < start + pd.Timedelta("1D"))].reset_index(drop=True)


def _promo_at(store: Store, unique_id: str, ds: str) -> list[float]:
    """The promo values in force for one stream and hour ([] when none is stored)."""
    sid = int(store.stream_ids([unique_id], create=False)[0])
    held = store.driver_values(["promo"], ds, pd.Timestamp(ds) + pd.Timedelta("1h"), streams=[sid])
    return held["promo"].tolist()


def test_an_observed_driver_value_far_outside_its_range_is_dropped_and_its_row_kept(tmp_path, panel, store_url):
    """One promo=1000 typed into a 0/1 flag was stored silently: it moved the stream's forecasts by -40 % and
    widened the range a forecast's future values are checked against. It is dropped, the value before stays in
    force, the row's y is stored, and the finding names the stream, driver and value; a value within the bounds
    (50 against 0..1 with the factor 100) is stored. s3 has no promotion that day (its values in the file are all
    0): its stored recent ones (0 and 1) judge it."""
    from mlma.data import IngestLimits

    with Store.create(store_url) as store:
        store.ingest_file(panel[panel["ds"] < "2025-03-10"], source="history")
        assert store.driver_ranges(["s3", "nobody"], ["promo"]).values.tolist() == [[0.0, 1.0, 24 * 7]]
        day = _day_of(panel, "2025-03-10")
        at = (day["unique_id"] == "s3") & (day["ds"] == "2025-03-10 10:00")
        day.loc[at, "promo"] = 1000.0
        day.loc[(day["unique_id"] == "s2") & (day["ds"] == "2025-03-10 10:00"), "promo"] = 50.0
        path = _csv_of(day, tmp_path / "day.csv")
        report = store.ingest_file(path, rejects=tmp_path / "rejects.csv")
        assert report.rows_new == len(day) and report.rows_dropped == 0       # every row's y is stored
        (found,) = report.validation.by_code("driver-out-of-range")
        assert (found.severity, found.unique_id, found.column, found.n_rows) == ("dropped", "s3", "promo", 1)
        assert "promo=1000, range 0 to 1" in found.examples[0] and "the row kept" in found.message
        assert _promo_at(store, "s3", "2025-03-10 10:00") == []                # not stored: none was before
        assert _promo_at(store, "s2", "2025-03-10 10:00") == [50.0]
        sid = int(store.stream_ids(["s3"], create=False)[0])
        kept = store.observations(streams=[sid])
        assert kept.loc[kept["ds"] == pd.Timestamp("2025-03-10 10:00"), "y"].tolist() == day.loc[at, "y"].tolist()
        listed = pd.read_csv(tmp_path / "rejects.csv")
        assert listed[["code", "column", "unique_id"]].values.tolist() == [["driver-out-of-range", "promo", "s3"]]
        assert listed["reason"].iloc[0].startswith("promo=1000.0: dropped 1 value of driver 'promo'")
        # The same day sent again with a typo in an hour whose value is stored: that value stays in force.
        before = _promo_at(store, "s3", "2025-03-10 11:00")
        again = day.assign(promo=day["promo"].where(~at, 1.0))
        again.loc[(again["unique_id"] == "s3") & (again["ds"] == "2025-03-10 11:00"), "promo"] = -1e300
        report = store.ingest_file(again, source="day again")
        # The range is the driver's over the file's streams: s2's 50, stored above, is part of it now.
        (typo,) = report.validation.by_code("driver-out-of-range")
        assert typo.examples[0].endswith("promo=-1e+300, range 0 to 50 (the driver's over the file's streams))")
        assert len(before) == 1 and _promo_at(store, "s3", "2025-03-10 11:00") == before
        assert _promo_at(store, "s3", "2025-03-10 10:00") == [1.0]             # the corrected value is stored
        # Sent again once the factor is raised (a real change of scale), the file is checked again, not a
        # duplicate, and the value is stored then.
        raised = store.ingest_file(path, limits=IngestLimits(value_range_factor=5000))
        assert not raised.duplicate and not raised.validation.by_code("driver-out-of-range")
        assert _promo_at(store, "s3", "2025-03-10 10:00") == [1000.0]


def test_driver_values_are_not_range_checked_with_the_factor_0_and_refuse_the_file_with_strict(tmp_path, panel,
                                                                                                store_url):
    from mlma.data import IngestLimits

    with Store.create(store_url) as store:
        store.ingest_file(panel[panel["ds"] < "2025-03-10"], source="history")
        day = _day_of(panel, "2025-03-10")
        day.loc[(day["unique_id"] == "s3") & (day["ds"] == "2025-03-10 10:00"), "promo"] = 1000.0
        path = _csv_of(day, tmp_path / "day.csv")
        held = len(store.observations())
        with pytest.raises(DataError, match=r"1 value of driver 'promo' .* in stream 's3': line 84\n"
                                            r"nothing was written"):
            store.ingest_file(path, on_bad_rows="raise")
        assert len(store.observations()) == held
        report = store.ingest_file(path, limits=IngestLimits(value_range_factor=0))
        assert report.rows_new == len(day) and not report.validation.by_code("driver-out-of-range")
        assert _promo_at(store, "s3", "2025-03-10 10:00") == [1000.0]


def test_a_streams_first_driver_values_are_judged_by_the_interquartile_range_of_its_values_in_the_file(store_url):
    """A stream or driver without stored values in the window is judged against the interquartile range of its
    values in the file, as y is (1e6 among temperatures of 10 to 20 is dropped); the stored range
    (Store.driver_ranges) is of observed values in the window only."""
    ds = pd.date_range("2025-03-01", periods=48, freq="h")
    temp = 10.0 + np.arange(48) % 11
    first = pd.DataFrame({"unique_id": "a", "ds": ds, "y": 5.0, "temp": temp})
    first.loc[30, "temp"] = 1e6
    with Store.create(store_url) as store:
        report = store.ingest_file(first, source="first")
        (found,) = report.validation.by_code("driver-out-of-range")
        assert found.unique_id == "a" and "temp=1e+06" in found.examples[0]
        assert store.driver_values(["temp"])["temp"].max() == 20.0 and report.rows_new == 48
        ranges = store.driver_ranges(["a", "nobody"], ["temp", "rain"], since=ds[24])
        assert ranges.index.tolist() == [("a", "temp")] and store.driver_ranges(["a"], ["rain"]).empty
        assert ranges.loc[("a", "temp")].tolist() == [10.0, 20.0, 23.0]      # 1e6 at ds[30] was never stored
        # Values known in advance are not part of it: they are not checked when they come.
        store.ingest_future(pd.DataFrame({"unique_id": "a", "ds": [ds[-1] + pd.Timedelta("1h")], "temp": [9e9]}))
        assert store.driver_ranges(["a"], ["temp"]).loc[("a", "temp"), "hi"] == 20.0


def test_driver_values_are_judged_by_the_recent_window_the_y_check_uses(store_url):
    """The range is that of the last 7 ticks before the project's newest data, as for y: values of before (a feed
    in another unit then) do not widen it."""
    from mlma.data import IngestLimits

    ds = pd.date_range("2025-03-01", periods=240, freq="h")
    history = pd.DataFrame({"unique_id": "a", "ds": ds, "y": 5.0, "temp": 10.0 + np.arange(240) % 11})
    history.loc[:47, "temp"] = 100_000.0                    # days 0 and 1: stored while the check was off
    day = pd.DataFrame({"unique_id": "a", "ds": ds[-1] + pd.Timedelta("1h") * np.arange(1, 25), "y": 5.0,
                        "temp": 15.0})
    day.loc[3, "temp"] = 5000.0
    with Store.create(store_url) as store:
        store.ingest_file(history, source="history", limits=IngestLimits(value_range_factor=0))
        report = store.ingest_file(day, source="day")
        (found,) = report.validation.by_code("driver-out-of-range")
        assert "temp=5000, range 10 to 20" in found.examples[0]
        assert store.driver_values(["temp"], day["ds"].min())["temp"].max() == 15.0


def test_a_flag_without_an_event_in_the_window_is_judged_by_the_drivers_range_over_the_files_streams(
        tmp_path, panel, store_url):
    """A 0/1 flag is mostly 0: a stream without a promotion in the window has a range of 0 to 0, which has no
    scale and judged nothing, so the review's promo=1000 went through. Such a stream (and a new one whose values
    in the file are all 0 but the typo) is judged by the driver's range over the file's streams; an event that
    starts (promo=1) is stored."""
    history = panel[panel["ds"] < "2025-03-10"].copy()
    history.loc[history["unique_id"] == "s3", "promo"] = 0.0
    day = _day_of(panel, "2025-03-10")
    day.loc[day["unique_id"] == "s3", "promo"] = 0.0
    new = day[day["unique_id"] == "s3"].assign(unique_id="s9")
    day = pd.concat([day, new], ignore_index=True)
    day.loc[(day["unique_id"].isin(["s3", "s9"])) & (day["ds"] == "2025-03-10 10:00"), "promo"] = 1000.0
    day.loc[(day["unique_id"] == "s3") & (day["ds"] >= "2025-03-10 20:00"), "promo"] = 1.0
    with Store.create(store_url) as store:
        store.ingest_file(history, source="history")
        assert store.driver_ranges(["s3"], ["promo"]).values.tolist() == [[0.0, 0.0, 24 * 7]]
        report = store.ingest_file(_csv_of(day, tmp_path / "day.csv"))
        (found,) = report.validation.by_code("driver-out-of-range")
        assert found.streams == ("s3", "s9") and found.n_rows == 2 and report.rows_new == len(day)
        assert found.examples[0].endswith("promo=1000, range 0 to 1 (the driver's over the file's streams))")
        assert _promo_at(store, "s3", "2025-03-10 10:00") == [] and _promo_at(store, "s9", "2025-03-10 10:00") == []
        assert _promo_at(store, "s3", "2025-03-10 21:00") == [1.0]


def test_a_projects_first_file_judges_an_all_zero_flag_by_the_columns_interquartile_range():
    """Nothing stored yet: a stream whose flag is 0 but for one typo is judged by the column's interquartile
    range over the file's streams (0 to 1 here), since its own (0 to 0) has no scale."""
    from mlma.data import FleetContext, validate

    ds = pd.date_range("2025-03-01", periods=48, freq="h")
    frame = pd.DataFrame({"unique_id": np.repeat(["a", "b"], 48), "ds": np.tile(ds, 2), "y": 1.0,
                          "promo": np.r_[np.zeros(48), np.arange(48) % 2].astype(float)})
    frame.loc[5, "promo"] = 1e4
    checked = validate(frame, on_bad_rows="drop", context=FleetContext())
    (found,) = checked.report.by_code("driver-out-of-range")
    assert found.unique_id == "a" and "promo=10000, range 0 to 1 (the driver's over" in found.examples[0]
    assert checked.frame["promo"].isna().sum() == 1 and len(checked.frame) == 96


def test_a_file_sent_again_says_when_later_ingests_replaced_its_values_and_again_puts_them_in_force(tmp_path,
                                                                                                    panel):
    """Plan A, then plan B over the same hours, then plan A again to restore it: A was "already ingested;
    nothing changed" and B stayed in force, said nowhere. Now the duplicate names the later ingests that gave
    other values for its streams and times, and --again stores it, its values in force; the same for actuals,
    whose corrections it undoes."""
    from typer.testing import CliRunner

    from mlma.cli import app

    root = make_project(tmp_path / "p")
    history = tmp_path / "history.csv"
    panel[panel["ds"] < "2025-03-05"].to_csv(history, index=False)
    day = pd.Timestamp("2025-03-05")
    plan_a = future_file(tmp_path / "plan_a.csv", panel, day, 1.0)
    plan_b = future_file(tmp_path / "plan_b.csv", panel, day, 0.0)

    def ingest(*args):
        result = CliRunner().invoke(app, ["ingest", *map(str, args), "--project", str(root)])
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    def promo_in_force():
        with Store.open(load_config(root).store_url) as store:
            return set(store.driver_values(["promo"], day, day + pd.Timedelta(days=1))["promo"])

    ingest(history)
    ingest("--future", plan_a)
    assert "already ingested" in ingest("--future", plan_a) and "note:" not in ingest("--future", plan_a)
    ingest("--future", plan_b)
    said = ingest("--future", plan_a)
    assert "plan_a.csv: already ingested (same content, ingest #2); nothing changed" in said, said
    assert "note: ingest #3 since gave other values for some of its streams and times" in said, said
    assert "mlma ingest --again" in said
    assert promo_in_force() == {0.0}
    assert "96 future driver values for 4 streams" in ingest("--future", plan_a, "--again")
    assert promo_in_force() == {1.0}
    assert "note:" not in ingest("--future", plan_a)          # its values are in force again: nothing to say
    # Actuals: a day, its correction, the first version again on purpose.
    first = panel[(panel["ds"] >= "2025-03-05") & (panel["ds"] < "2025-03-06")]
    original, corrected = tmp_path / "day.csv", tmp_path / "day-corrected.csv"
    first.to_csv(original, index=False)
    first.assign(y=first["y"] + 1.0).to_csv(corrected, index=False)
    ingest(original)
    ingest(corrected)
    assert "note: ingest #6 since gave other values" in ingest(original)
    assert "0 new, 96 revised" in ingest(original, "--again")
    # Sent again after its own --again, or after a file of other streams over the same hours: nothing to say.
    assert "note:" not in ingest(original)
    other = first[first["unique_id"] == "s0"].assign(unique_id="s0-new")
    elsewhere = tmp_path / "elsewhere.csv"
    other.to_csv(elsewhere, index=False)
    ingest(elsewhere)
    assert "already ingested" in ingest(original) and "note:" not in ingest(original)
    with Store.open(load_config(root).store_url) as store:
        stored = store.observations(start="2025-03-05", end="2025-03-06")
    stored = stored[stored["unique_id"].isin(first["unique_id"])]
    assert np.allclose(np.sort(stored["y"].to_numpy()), np.sort(first["y"].to_numpy()))


def test_a_storm_in_a_stream_whose_own_window_was_dry_is_kept_when_the_fleet_saw_rain(store_url):
    """Rain is zero most hours: a stream whose window held one drizzle of 0.1 mm has a range whose scale caps it
    near 10 mm, so a storm of 15 and 22 mm there was dropped as a typo, the very shock the driver explains.
    The range is the driver's over the file's streams: another stream's 20 mm last week makes room for it,
    while a typed 5,000 mm is still dropped."""
    ds = pd.date_range("2025-03-01", periods=24 * 7, freq="h")
    dry = np.zeros(len(ds))
    dry[30] = 0.1
    wet = np.zeros(len(ds))
    wet[60:64] = [3.0, 12.0, 20.0, 5.0]
    history = pd.concat([pd.DataFrame({"unique_id": "dry", "ds": ds, "y": 5.0, "rain": dry}),
                         pd.DataFrame({"unique_id": "wet", "ds": ds, "y": 5.0, "rain": wet})], ignore_index=True)
    day = ds[-1] + pd.Timedelta("1h") * np.arange(1, 25)
    storm = np.zeros(24)
    storm[5:8] = [4.0, 15.0, 22.0]
    storm[12] = 5000.0
    file = pd.concat([pd.DataFrame({"unique_id": "dry", "ds": day, "y": 5.0, "rain": storm}),
                      pd.DataFrame({"unique_id": "wet", "ds": day, "y": 5.0, "rain": 0.0})], ignore_index=True)
    with Store.create(store_url) as store:
        store.ingest_file(history, source="history")
        report = store.ingest_file(file, source="storm")
        (found,) = report.validation.by_code("driver-out-of-range")
        assert found.n_rows == 1 and "rain=5000, range 0 to 20" in found.examples[0], found.examples
        kept = store.driver_values(["rain"], day[0])
        assert sorted(kept["rain"])[-3:] == [4.0, 15.0, 22.0]
