"""The declared drivers edited in mlma.toml while models serve: re-ordered or extended, every model goes on
forecasting with its own columns (by name, not by position); a driver removed re-fits the streams whose models
used it, once, audited, and the fleet never stops forecasting. Also how values of drivers reach a forecast when
the files are imperfect: an event driver not announced for a tick is 0, and ids of a future file stay text."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlma.data import DataError
from mlma.fleet import FleetData
from mlma.live import LiveAgent
from mlma.models import Drivers
from mlma.project import init_project, load_config
from mlma.registry import ModelRegistry
from mlma.store import Store

FIRST_TICK = 28
DAYS = FIRST_TICK + 4


def panel(n_streams: int = 4, seed: int = 5) -> pd.DataFrame:
    """Hourly demand that a promotion lifts by 80 % and warm hours by a little: two future drivers."""
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2025-03-03", periods=24 * DAYS, freq="h")
    hour = ds.hour.to_numpy()
    profile = 1.0 + 3.0 * np.exp(-0.5 * ((hour - 19) / 2.0) ** 2)
    frames = []
    for s in range(n_streams):
        promo = np.repeat(rng.random(DAYS) < 0.3, 24).astype(float)
        temp = 10 + 5 * np.sin(2 * np.pi * hour / 24) + rng.normal(0, 2, ds.size)
        mu = 20.0 * (1 + s) * profile * (1 + 0.8 * promo) * (1 + 0.02 * (temp - 10))
        frames.append(pd.DataFrame({"unique_id": f"s{s}", "ds": ds, "y": rng.poisson(mu).astype(float),
                                    "promo": promo, "temp": temp}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return panel()


def make_project(root: Path, drivers: str, model: str = "ridge") -> Path:
    init_project(root, model=model)
    text = (root / "mlma.toml").read_text().replace('executor = "process"', 'executor = "inline"')
    text = text.replace("initial_ticks = 0", f"initial_ticks = {FIRST_TICK}")
    text = text.replace('policy = "mlma"', 'policy = "never"')  # no re-training: the serving models are compared
    set_drivers(root, drivers, text)
    return root


def set_drivers(root: Path, drivers: str, text: str | None = None) -> None:
    text, found = re.subn(r"(?m)^drivers = .*$", f"drivers = {drivers}",
                          text if text is not None else (root / "mlma.toml").read_text())
    assert found == 1
    (root / "mlma.toml").write_text(text)


def day_of(frame: pd.DataFrame) -> np.ndarray:
    return ((frame["ds"] - frame["ds"].min().normalize()) // pd.Timedelta("1D")).to_numpy()


def step(root: Path, data: pd.DataFrame, day: int):
    """Ingest a day's actuals (all history before the first tick) and the next day's driver values known in
    advance, then run one tick with a new agent (as `mlma tick` does: the configuration is read afresh)."""
    config = load_config(root)
    days = day_of(data)
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        store.ingest_frame(data[days < day] if day == FIRST_TICK else data[days == day - 1], f"day-{day}")
        store.ingest_future(data.loc[days == day, ["unique_id", "ds", "promo", "temp"]].reset_index(drop=True),
                            source=f"plan-{day}")
        result = live.step()
        forecasts = store.forecasts(result.tick).sort_values(["stream_id", "ds"]).reset_index(drop=True)
        versions = pd.DataFrame([{"unique_id": v.unique_id, "version": v.version, "why": v.check.get("why", "")}
                                 for v in ModelRegistry(store, config.artifacts_dir).tables.versions()])
        return result, forecasts, store.audit_log(action="drivers-changed"), versions


@pytest.mark.parametrize("model", ["ridge", "ridge:driver_pooling=false"])
@pytest.mark.parametrize("edited", ['["temp", "promo"]', '["promo", "temp", "extra"]'])
def test_drivers_reordered_or_added_keep_every_model_forecasting_with_its_own_columns(tmp_path, data, edited,
                                                                                      model):
    """A twin project keeps ["promo", "temp"]; the other's list is re-ordered or gets a driver more. Until a
    re-training, each serving model forecasts from the columns it was fitted on, by name: the issued forecasts
    are the twin's, nothing is re-fitted, nothing fails. (Before, a re-ordered list fed `temp` where a model had
    learnt `promo`, silently, without pooling, and failed every forecast with it; a driver more failed every
    stream's forecast at every tick.)"""
    twin = make_project(tmp_path / "twin", '["promo", "temp"]', model)
    edit = make_project(tmp_path / "edit", '["promo", "temp"]', model)
    for day in (FIRST_TICK, FIRST_TICK + 1):
        step(twin, data, day), step(edit, data, day)
    set_drivers(edit, edited)
    for day in (FIRST_TICK + 2, FIRST_TICK + 3):
        want, want_forecasts, _, want_versions = step(twin, data, day)
        got, got_forecasts, audit, versions = step(edit, data, day)
        assert got.summary.forecast_failures == 0 and not audit.shape[0], (got.summary, audit)
        assert len(versions) == len(want_versions) == 4  # the first models, still serving
        np.testing.assert_allclose(got_forecasts["y_hat"], want_forecasts["y_hat"], rtol=1e-12)


def test_a_driver_added_is_not_judged_for_models_that_do_not_use_it_yet(tmp_path, data):
    """The range check of future driver values looks at a model's own drivers only: a driver declared after
    the model was fitted, with values far from its history, fails no forecast of that model."""
    twin, edit = make_project(tmp_path / "twin", '["promo"]'), make_project(tmp_path / "edit", '["promo"]')
    wild = data.assign(temp=np.where(day_of(data) >= FIRST_TICK + 1, 1e6, data["temp"]))
    for day in (FIRST_TICK, FIRST_TICK + 1):
        step(twin, wild, day), step(edit, wild, day)
    set_drivers(edit, '["promo", "temp"]')
    want, want_forecasts, _, _ = step(twin, wild, FIRST_TICK + 2)
    got, got_forecasts, _, _ = step(edit, wild, FIRST_TICK + 2)
    assert got.summary.forecast_failures == 0
    np.testing.assert_allclose(got_forecasts["y_hat"], want_forecasts["y_hat"], rtol=1e-12)


def test_a_driver_removed_refits_the_streams_that_used_it_once_and_says_so(tmp_path, data):
    root = make_project(tmp_path / "p", '["promo", "temp"]')
    for day in (FIRST_TICK, FIRST_TICK + 1):
        step(root, data, day)
    set_drivers(root, '["promo"]')
    result, forecasts, audit, versions = step(root, data, FIRST_TICK + 2)
    assert result.summary.forecast_failures == 0
    assert np.isfinite(forecasts["y_hat"]).all() and len(forecasts) == 4 * 24
    new = versions[versions["version"] == 2]
    assert len(new) == 4, versions  # every stream's model used temp: each is fitted again, this tick
    for why in new["why"]:
        assert why.startswith("the serving model cannot forecast: the model was fitted with the future driver(s) "
                              "['promo', 'temp']; the fleet declares ['promo'] now (temp is gone); re-fitted"), why
    assert len(audit) == 1
    entry = audit.iloc[0]
    assert entry["params"]["refitted"] == 4 and entry["params"]["future"] == ["promo"]
    assert "temp is gone" in entry["reason"] and any("temp is gone" in n for n in result.notes)
    # The new models serve under the new drivers: the next tick changes nothing more.
    result, forecasts, audit, versions = step(root, data, FIRST_TICK + 3)
    assert result.summary.forecast_failures == 0 and len(audit) == 1 and versions["version"].max() == 2


def test_a_tick_that_fails_after_a_driver_was_removed_leaves_the_refit_to_the_next_one(tmp_path, data, monkeypatch):
    """`mlma run`: the tick that found the models using a removed driver failed before its commit (a full
    disk); the process took them as checked, and every later tick failed their forecasts."""
    import mlma.live

    root = make_project(tmp_path / "p", '["promo", "temp"]')
    for day in (FIRST_TICK, FIRST_TICK + 1):
        step(root, data, day)
    set_drivers(root, '["promo"]')
    config = load_config(root)
    days = day_of(data)
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        for day in (FIRST_TICK + 2, FIRST_TICK + 3):
            store.ingest_frame(data[days == day - 1], f"day-{day}")
            store.ingest_future(data.loc[days == day, ["unique_id", "ds", "promo", "temp"]].reset_index(drop=True),
                                source=f"plan-{day}")
        with monkeypatch.context() as patch:
            def disk_full(name: str) -> None:
                if name == "after-fit":
                    raise OSError("no space left on device")

            patch.setattr(mlma.live, "_checkpoint", disk_full)
            with pytest.raises(OSError):
                live.step()
        result = live.step()  # the same process: the tick again, then the next
        results = [result] + live.catch_up()
    assert [r.summary.forecast_failures for r in results] == [0, 0]
    assert "temp is gone" in " ".join(results[0].notes)


def test_an_event_driver_not_announced_for_a_tick_is_zero_not_the_last_campaign():
    """A campaign ran until yesterday; today's file carries the weather only. The campaign (an event driver:
    0 when none runs) must not run on in the forecasts; a missing temperature still takes yesterday's."""
    ds = pd.date_range("2025-01-01", periods=72, freq="h")
    frame = pd.DataFrame({"unique_id": "a", "ds": ds[:48], "y": 1.0, "campaign": 1.0,
                          "temp": np.arange(48, dtype=float)})
    fleet = FleetData(frame, "h", pd.DatetimeIndex(ds[::24]).append(pd.DatetimeIndex([ds[-1] + pd.Timedelta("1h")])),
                      drivers=Drivers(future=("campaign", "temp"), events=("campaign",)))
    values, filled = fleet.future_driver_values(0, 2, 24)
    assert (values[:, 0] == 0).all()
    np.testing.assert_array_equal(values[:, 1], np.arange(24, 48, dtype=float))
    assert filled == 24  # the temperatures; an event's 0 is what it means, not a guess
    plain = FleetData(frame, "h", pd.DatetimeIndex(ds[::24]).append(pd.DatetimeIndex([ds[-1] + pd.Timedelta("1h")])),
                      drivers=Drivers(future=("campaign", "temp")))
    assert (plain.future_driver_values(0, 2, 24)[0][:, 0] == 1).all()  # not declared an event: filled
    # In training too: a campaign file that lists only the hours a campaign runs (no rows, no 0s in between).
    sparse = frame.assign(campaign=np.where(np.arange(48) < 6, 1.0, np.nan))
    fleet = FleetData(sparse, "h", pd.DatetimeIndex(ds[::24]).append(pd.DatetimeIndex([ds[-1] + pd.Timedelta("1h")])),
                      drivers=Drivers(future=("campaign", "temp"), events=("campaign",)))
    np.testing.assert_array_equal(fleet.driver_values(0, ds[:48])[:, 0], np.r_[np.ones(6), np.zeros(42)])


def test_a_future_file_keeps_ids_as_text_and_waits_for_streams_it_names_before_their_actuals(tmp_path):
    """Zero-padded ids are other streams than their numbers; a file naming streams whose actuals have not come
    yet stores their rows when it is sent again after them (it was "already ingested" before, and lost)."""
    store = Store.create(f"sqlite:///{tmp_path}/s.db")
    ds = pd.date_range("2025-01-01", periods=24, freq="h")
    actuals = pd.DataFrame({"unique_id": np.repeat(["007", "7"], 24), "ds": np.tile(ds, 2), "y": 1.0})
    store.ingest_frame(actuals, "actuals")
    plan = tmp_path / "plan.csv"
    pd.DataFrame({"unique_id": ["007"] * 3 + ["NA"] * 3, "ds": np.tile(ds[:3] + pd.Timedelta("1D"), 2),
                  "promo": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}).to_csv(plan, index=False)
    first = store.ingest_future(plan)
    assert first.rows_accepted == 3 and first.rows_dropped == 3 and not first.duplicate
    values = store.driver_values(["promo"])
    ids = dict(zip(store.streams()["id"], store.streams()["unique_id"]))
    assert {ids[s] for s in values["stream_id"]} == {"007"} and values["promo"].tolist() == [1.0, 2.0, 3.0]
    assert store.ingest_future(plan).duplicate  # the same content, the same streams unknown: nothing to do
    store.ingest_frame(pd.DataFrame({"unique_id": "NA", "ds": ds, "y": 1.0}), "late stream")
    again = store.ingest_future(plan)
    assert not again.duplicate and again.rows_accepted == 6
    values = store.driver_values(["promo"])
    assert sorted(values["promo"].tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    store.close()


def test_one_bad_cell_of_a_driver_column_loses_that_cell_only_and_is_named(tmp_path):
    """A typo in one cell of the temperature column made pandas read the whole column as text, and mlma
    dropped every temperature of the file with an "ignored non-numeric column" note. Now the cell is named by
    its line and the other values, and that row's actuals, are stored."""
    ds = pd.date_range("2025-01-01", periods=200, freq="h")
    frame = pd.DataFrame({"unique_id": "a", "ds": ds.strftime("%Y-%m-%d %H:%M"), "y": 1.0,
                          "temperature": np.arange(200).astype(float).astype(str), "city": "Berlin"})
    frame.loc[100, "temperature"] = "abc"  # line 102 of the file: the header is line 1
    frame.loc[150, "temperature"] = "inf"  # no number either (it was dropped unsaid)
    # Codes, nine in ten of which look like numbers: not a driver (it was stored as 42.0, 17.0, ...).
    frame["store_code"] = np.where(np.arange(200) % 10 == 0, "A17", "0042")
    path = tmp_path / "day.csv"
    frame.to_csv(path, index=False)
    store = Store.create(f"sqlite:///{tmp_path}/s.db")
    report = store.ingest_file(path)
    assert report.rows_new == 200
    unread = report.validation.by_code("values-unread")
    assert len(unread) == 1 and unread[0].column == "temperature"
    assert "2 cells that are no number, first 'abc' on lines 102, 152" in unread[0].message, unread[0].message
    dropped = report.validation.by_code("columns-dropped")
    assert [f.column for f in dropped] == ["city", "store_code"] and "first value 'Berlin'" in dropped[0].message
    values = store.driver_values(["temperature"])
    assert len(values) == 198 and not {100.0, 150.0} & set(values["temperature"])
    store.close()


def test_the_cli_says_when_a_declared_driver_column_holds_text(tmp_path, data):
    """European decimals ("3,5") in a declared driver: nothing of the column can be read; the ingest says that
    a declared driver was not stored, instead of an info line about an ignored column."""
    import subprocess
    import sys

    root = make_project(tmp_path / "p", '["promo", "temp"]')
    days = day_of(data)
    first = data[days < 3].copy()
    first["temp"] = first["temp"].map(lambda t: f"{t:.1f}".replace(".", ","))
    first.to_csv(root / "history.csv", index=False)
    done = subprocess.run([str(Path(sys.executable).parent / "mlma"), "ingest", "history.csv"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "note: declared driver column(s) temp (mlma.toml [data]) hold text, not numbers, in history.csv" \
        in done.stdout, done.stdout
    assert "columns-dropped" in done.stdout and "first value '" in done.stdout


def test_a_future_value_far_outside_the_streams_window_fails_that_forecast_with_a_reason(tmp_path, data):
    """A value in the wrong unit (a share sent per mille, 800 for 0.8) or an overflow was forecast from: a
    forecast far beyond anything the stream has seen, served without a word. Now that stream's forecast is
    refused and escalated with the driver, the time and the window's values (the rule y is checked by,
    value_range_factor 100); a value new but plausible (a campaign 12 times the largest seen) is forecast from,
    and the other streams are forecast as before."""
    root = make_project(tmp_path / "p", '["promo", "temp"]')
    step(root, data, FIRST_TICK)
    days = day_of(data)
    plan = data.loc[days == FIRST_TICK + 1, ["unique_id", "ds", "promo", "temp"]].reset_index(drop=True)
    plan.loc[plan["unique_id"] == "s1", "promo"] = 800.0
    plan.loc[plan["unique_id"] == "s2", "promo"] = 12.0
    config = load_config(root)
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        store.ingest_frame(data[days == FIRST_TICK], "day")
        store.ingest_future(plan, source="plan in percent")
        result = live.step()
        forecasts = store.forecasts(result.tick)
        escalations = store.escalations()
        culprit = int(store.stream_ids(["s1"])[0])
    assert result.summary.forecast_failures == 1
    failed = escalations[escalations["kind"] == "forecast-failed"]
    assert failed["stream_id"].tolist() == [culprit]
    assert "the future value of driver 'promo' at 2025-04-01 00:00 is 800," in failed["message"].iloc[0]
    assert "far outside the values of the stream's window (0 to 1; value_range_factor 100)" in \
        failed["message"].iloc[0]
    assert sorted(set(forecasts["stream_id"])) == sorted({0, 1, 2, 3} - {culprit})
    assert np.isfinite(forecasts["y_hat"]).all()


def test_infinite_driver_values_are_refused_in_a_future_file_and_said_in_actuals(tmp_path):
    store = Store.create(f"sqlite:///{tmp_path}/s.db")
    ds = pd.date_range("2025-01-01", periods=48, freq="h")
    actuals = pd.DataFrame({"unique_id": "a", "ds": ds, "y": 1.0, "rain": np.r_[np.inf, np.zeros(47)]})
    report = store.ingest_file(actuals)
    unread = report.validation.by_code("values-unread")
    assert len(unread) == 1 and unread[0].column == "rain" and "first 'inf'" in unread[0].message
    assert len(store.driver_values(["rain"])) == 47
    plan = tmp_path / "plan.csv"
    pd.DataFrame({"unique_id": "a", "ds": ds[-1] + pd.to_timedelta([1, 2], "h"), "rain": [0.5, float("inf")]}) \
        .to_csv(plan, index=False)
    with pytest.raises(DataError, match=r"driver column 'rain' has 1 infinite value\(s\), first 'inf' on line/row 3"):
        store.ingest_future(plan)
    assert len(store.driver_values(["rain"])) == 47  # nothing of the file was stored
    store.close()


def test_a_daily_calendar_in_an_hourly_project_is_noted(tmp_path):
    store = Store.create(f"sqlite:///{tmp_path}/s.db")
    ds = pd.date_range("2025-01-01", periods=48, freq="h")
    store.ingest_file(pd.DataFrame({"unique_id": "a", "ds": ds, "y": 1.0}))
    days = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2025-01-03", periods=3, freq="D"), "campaign": 1.0})
    report = store.ingest_future(days)
    assert any(note.startswith("every row is at midnight, one per stream and day, but the project steps every "
                               "1 hour") for note in report.notes), report.notes
    hourly = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2025-01-03", periods=24, freq="h"), "campaign": 1.0})
    assert not any("midnight" in note for note in store.ingest_future(hourly).notes)
    store.close()


def test_the_holidays_error_names_the_unknown_subdivision_not_the_country():
    from mlma.models.features import check_holiday_country

    with pytest.raises(ValueError, match=r"holidays='US-XX': country 'US' has no subdivision 'XX' .*\(it has AK, AL"):
        check_holiday_country("US-XX")
    assert check_holiday_country("US-CA") == "US-CA"


def test_ingest_notes_for_drivers_that_no_model_uses(tmp_path, data, caplog):
    """Undeclared numeric columns of actuals are stored and said; a declared historical driver's values known in
    advance are not what models use, and are said; a model that takes no drivers is said once by the tick."""
    import logging
    import subprocess
    import sys

    mlma = str(Path(sys.executable).parent / "mlma")
    root = make_project(tmp_path / "p", '["promo"]')
    text = (root / "mlma.toml").read_text()
    (root / "mlma.toml").write_text(re.sub(r"(?m)^historical_drivers = .*$", 'historical_drivers = ["temp"]', text))
    days = day_of(data)
    data[days < FIRST_TICK].assign(wind=1.0).to_csv(root / "history.csv", index=False)
    done = subprocess.run([mlma, "ingest", "history.csv"], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "note: column(s) wind are stored as observed driver values but not declared" in " ".join(
        done.stdout.split()), done.stdout
    data.loc[days == FIRST_TICK, ["unique_id", "ds", "promo", "temp"]].to_csv(root / "plan.csv", index=False)
    done = subprocess.run([mlma, "ingest", "--future", "plan.csv"], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "note: column(s) temp are declared historical drivers" in " ".join(done.stdout.split()), done.stdout
    text = (root / "mlma.toml").read_text()
    (root / "mlma.toml").write_text(text.replace('spec = "ridge"', 'spec = "seasonal-naive"'))
    config = load_config(root)
    with caplog.at_level(logging.WARNING, logger="mlma.live"), Store.open(config.store_url) as store, \
            LiveAgent(config, store=store) as live:
        live.step()
    said = [r.getMessage() for r in caplog.records if "takes no drivers" in r.getMessage()]
    assert len(said) == 1 and "'seasonal-naive' takes no drivers" in said[0], said
