"""`mlma backtest`'s inputs checked before the replay: the output folder, the policy specs, the data's grid."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from typer.testing import CliRunner

from mlma.cli import app

from test_backtest import hourly_frame


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "fleet.csv"
    hourly_frame(n_streams=2, days=6).to_csv(path, index=False)
    return path


@pytest.fixture
def no_replay(monkeypatch):
    """The replay fails the test if reached: a bad input must be refused before it."""
    def replay(*args, **kwargs):
        raise AssertionError("the backtest replayed before refusing its input")

    monkeypatch.setattr("mlma.backtest.run_backtest", replay)


def backtest(*args):
    return CliRunner().invoke(app, ["backtest", *map(str, args), "--model", "seasonal-naive", "--no-frontier"])


def test_an_out_that_is_a_file_is_refused_before_the_replay(tmp_path, data_file, no_replay):
    blocker = tmp_path / "afile"
    blocker.write_text("x\n")
    result = backtest("--data", data_file, "--out", blocker)
    assert result.exit_code == 2, result.output
    assert "is a file, not a folder" in result.output and str(blocker) in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    assert blocker.read_text() == "x\n"


def test_an_out_under_a_file_is_refused_before_the_replay(tmp_path, data_file, no_replay):
    blocker = tmp_path / "afile"
    blocker.write_text("x\n")
    result = backtest("--data", data_file, "--out", blocker / "results")
    assert result.exit_code == 2, result.output
    assert f"{blocker} is a file, so no folder can be made under it" in " ".join(result.output.split())


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_an_out_this_user_cannot_write_is_refused_before_the_replay(tmp_path, data_file, no_replay):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = backtest("--data", data_file, "--out", locked / "results")
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 2, result.output
    assert "cannot create folders in" in result.output
    assert not (locked / "results").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_an_out_holding_an_output_this_user_cannot_overwrite_is_refused_before_the_replay(tmp_path, data_file,
                                                                                          no_replay):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "summary.json").write_text("{}\n")
    (out / "summary.json").chmod(0o444)
    result = backtest("--data", data_file, "--out", out)
    assert result.exit_code == 2, result.output
    assert "cannot overwrite summary.json there" in " ".join(result.output.split())


@pytest.mark.parametrize("spec,message", [
    ("adwin:clock=0", "policy adwin: clock must be a whole number >= 1"),
    ("adwin:max_buckets=0", "policy adwin: max_buckets must be a whole number >= 1, got 0"),
    ("periodic", "policy 'periodic' needs its period in ticks"),
])
def test_a_policy_spec_out_of_range_is_refused_before_the_replay(tmp_path, data_file, spec, message):
    # ADWIN's clock=0 and max_buckets=0 used to panic in River's Rust core at the first loss: an exception that
    # is no Exception, so the whole backtest ended in a traceback.
    result = backtest("--data", data_file, "--out", tmp_path / "out", "--policies", f"never,{spec}")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options,message", [
    (["--fit-timeout", "5"], "fit_timeout needs an executor that runs fits elsewhere"),
    (["--fit-timeout", "5", "--executor", "inline"], "fit_timeout needs an executor that runs fits elsewhere"),
    (["--fit-timeout", "0", "--executor", "process:2"], "fit_timeout must be a number of seconds above 0 and at most"),
    (["--fit-timeout", "-1", "--executor", "process:2"], "--fit-timeout"),
])
def test_a_fit_timeout_that_cannot_work_is_refused_before_the_replay(tmp_path, data_file, no_replay, options,
                                                                     message):
    result = backtest("--data", data_file, "--out", tmp_path / "out", *options)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def shifted_fleet():
    """Three hourly streams; the first, s0, stamped at :30 where the others are at :00."""
    frame = hourly_frame(n_streams=3, days=6)
    frame.loc[frame["unique_id"] == "s0", "ds"] += pd.Timedelta(minutes=30)
    return frame


def test_validate_names_the_stream_on_a_shifted_grid(tmp_path):
    path = tmp_path / "phase.csv"
    shifted_fleet().to_csv(path, index=False)
    result = CliRunner().invoke(app, ["validate", str(path)])
    # Each stream is on its own grid, which is all the data contract asks: a warning, since the backtest
    # (one grid for the fleet) refuses it.
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning" in text and "shifted-grid" in text
    assert "streams are on shifted h grids: 2 of 3 streams share the grid of 's1'" in text
    assert "but 's0' is 30 minutes after it; a backtest replays the fleet on one grid and refuses this" in text


def test_the_backtest_names_the_stream_on_a_shifted_grid_not_a_good_one(tmp_path):
    path = tmp_path / "phase.csv"
    shifted_fleet().to_csv(path, index=False)
    result = backtest("--data", path, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "'s0' is 30 minutes after it" in text and "'s1' has a timestamp" not in text


def test_a_fleet_built_without_validation_blames_the_shifted_stream():
    from mlma.data import validate
    from mlma.fleet import FleetData

    frame = shifted_fleet()
    bounds = pd.date_range("2025-03-03", periods=7, freq="D")
    with pytest.raises(ValueError, match=r"stream 's0' has a timestamp 2025-03-03T00:30:00.* not on the 'h' grid "
                                         r"that 2 of the 3 streams are on"):
        FleetData(frame, "h", bounds)
    # Half and half, on ticks laid from the shifted stream's first row (as make_tick_grid lays them): the same
    # stream as mlma validate names (the tie goes to the earlier phase, :00); the good one was blamed.
    two = frame[frame["unique_id"] != "s2"]
    with pytest.raises(ValueError, match=r"stream 's0' has a timestamp .* that 1 of the 2 streams are on"):
        FleetData(two, "h", bounds + pd.Timedelta(minutes=30))
    messages = [f.message for f in validate(two).report.findings if f.code == "shifted-grid"]
    assert len(messages) == 1 and "'s0' is 30 minutes after it" in messages[0], messages
    # A stray row in a good stream is still the one named.
    stray = hourly_frame(n_streams=3, days=6)
    stray.loc[30, "ds"] += pd.Timedelta(minutes=17)
    with pytest.raises(ValueError, match=r"stream 's0' has a timestamp 2025-03-04T06:17:00"):
        FleetData(stray, "h", bounds)


@pytest.mark.parametrize("option, content, message", [
    ("--events", "", "cannot read it as events: No columns to parse from file"),
    ("--events", "kind,scope,start,end\nstorm,fleet,garbage,2025-03-04\n", "cannot read it as events:"),
    ("--abnormal", "unique_id,begin,finish\ns0,2025-03-03,2025-03-04\n",
     "cannot read it as abnormal periods (unique_id, start, end): Missing column"),
])
def test_a_side_file_that_cannot_be_read_is_named(tmp_path, data_file, no_replay, option, content, message):
    """pandas' own words ("No columns to parse from file") named no file: which of the data, events and abnormal
    periods was it?"""
    side = tmp_path / "side.csv"
    side.write_text(content)
    result = backtest("--data", data_file, option, side, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert f"{side}: {message}" in " ".join(result.output.split()), result.output


def test_a_data_file_that_is_not_parquet_is_named(tmp_path):
    broken = tmp_path / "fleet.parquet"
    broken.write_text("not parquet\n")
    result = backtest("--data", broken, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert f"{broken}: cannot read it as Parquet: Parquet magic bytes not found" in " ".join(result.output.split())


@pytest.mark.parametrize("row, problem", [
    ("s1,2025-03-05,2025-03-04", "it ends before or when it starts"),
    ("s1,2025-03-05,2025-03-05", "it ends before or when it starts"),
    ("s1,soon,2025-03-05", "its start or end is missing or not a time"),
    ("s1,2025-03-05,", "its start or end is missing or not a time"),
])
def test_an_abnormal_period_that_cannot_be_meant_is_refused_by_file_and_row(tmp_path, data_file, row, problem):
    """Before, a period without an end (or with an unreadable start) marked nothing and said nothing, and an
    end before the start was refused without the file, row or stream."""
    periods = tmp_path / "periods.csv"
    periods.write_text(f"unique_id,start,end\ns0,2025-03-04,2025-03-05\n,2025-03-06,2025-03-07\n{row}\n")
    result = backtest("--data", data_file, "--abnormal", periods, "--out", tmp_path / "out")
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert f"{periods}: row 4 (counting the header as row 1;" in said and "stream 's1'" in said, said
    assert problem in said, said
    assert not (tmp_path / "out").exists()


def test_abnormal_periods_and_attributes_naming_streams_the_data_does_not_have_are_said(caplog, monkeypatch):
    """The data has streams s0 and s1: a period for 'S1' or a typo marks nothing, and an attributes table whose
    ids match none of the data's groups nothing; each is said, naming the file and the ids."""
    import logging

    from mlma.backtest import BacktestConfig, run_backtest
    from mlma.fleet import FleetData

    frame = hourly_frame(n_streams=2, days=6)
    periods = pd.DataFrame({"unique_id": ["s0", "S1", "s9", "", " s1"],
                            "start": ["2025-03-05"] * 5, "end": ["2025-03-06"] * 5})
    periods.attrs["source"] = "periods.csv"
    attributes = pd.DataFrame({"unique_id": ["0", "1"], "city": ["x", "y"]})
    attributes.attrs["source"] = "cities.csv"
    config = BacktestConfig(policies=["never"], model="seasonal-naive", initial_ticks=2, sample_streams=0,
                            frontier=False, group_by="city")
    marked = []
    real = FleetData.mark_abnormal
    monkeypatch.setattr(FleetData, "mark_abnormal", lambda fleet, p: (marked.append(p), real(fleet, p))[1])
    with caplog.at_level(logging.WARNING, logger="mlma.backtest"):
        result = run_backtest(frame, config, abnormal=periods, attributes=attributes)
    said = [r.getMessage() for r in caplog.records]
    assert ("periods.csv: 2 of 5 abnormal periods name streams the data does not have (S1, s9): they are "
            "ignored") in said, said
    assert any(m.startswith("cities.csv: none of its 2 streams is in the data (e.g. 0; the data's: s0, s1)")
               for m in said), said
    assert result.config["queue_grouped_streams"] == 0
    # The ids are read as the data's are (spaces around them dropped); an empty one still marks every stream.
    given = marked[0]["unique_id"].tolist()
    assert given[:3] + given[4:] == ["s0", "S1", "s9", "s1"] and pd.isna(given[3])


def test_a_users_streams_table_beside_the_data_groups_the_queue(tmp_path):
    """`<stem>.streams.csv` beside the data is the default --attributes: any attribute columns, as `mlma
    attributes` takes them. It was read as the simulator's own table and refused ("columns ['city', 'zone',
    'scale', ...] missing")."""
    import json

    data = tmp_path / "fleet.csv"
    hourly_frame(n_streams=3, days=8).to_csv(data, index=False)
    (tmp_path / "fleet.streams.csv").write_text("unique_id,region\ns0,north\ns1,south\ns2,north\n")
    result = backtest("--data", data, "--group-by", "region", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "summary.json").read_text())["config"]
    assert config["queue_group_by"] == "region" and config["queue_grouped_streams"] == 3


def test_abnormal_periods_in_mixed_formats_are_read_each_on_its_own(tmp_path, data_file):
    """Whole days above times, with a space or a T, seconds or not: read cell by cell (a column parsed at once
    took its format from its first row and refused the file). UTC offsets must fit the data's timestamps (these
    have none): tests/test_action_dates.py."""
    periods = tmp_path / "periods.csv"
    periods.write_text("unique_id,start,end\n"
                       "s0,2025-03-03,2025-03-04\n"
                       "s1,2025-03-05 06:00,2025-03-05 18:00\n"
                       "s0,2025-03-06T01:00,2025-03-06 05:00:00\n"
                       "s1,2025-03-07,2025-03-07T06:00:00\n")
    result = backtest("--data", data_file, "--abnormal", periods, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize("model,used", [("seasonal-naive", False), ("ridge", True)])
def test_drivers_given_to_a_model_that_takes_none_are_said_unused(caplog, model, used):
    """`mlma backtest --model statsforecast:AutoETS --drivers temperature` said nothing, and the summary listed
    the drivers as if the model had used them; the live agent says so."""
    import logging

    from mlma.backtest import BacktestConfig, run_backtest
    from mlma.models import Drivers

    frame = hourly_frame(n_streams=2, days=24)
    frame["temperature"] = 15.0 + (frame["ds"].dt.hour % 7)
    config = BacktestConfig(policies=["never"], model=model, frontier=False, bootstrap=0, sample_streams=0,
                            drivers=Drivers(future=("temperature",)))
    with caplog.at_level(logging.WARNING, logger="mlma"):
        result = run_backtest(frame, config)
    said = [r.getMessage() for r in caplog.records if "takes no drivers" in r.getMessage()]
    assert result.config["drivers_used"] is used
    assert said == ([] if used else [f"the model '{model}' takes no drivers: the drivers given (temperature) are "
                                     "not used by its forecasts, and event drivers are not discounted from its "
                                     "losses; use a model that takes them (ridge, lightgbm, docs/models.md)"])


def test_true_or_false_cells_of_an_events_file_are_read_as_written_and_others_refused(tmp_path, data_file,
                                                                                       no_replay):
    """An events file written with yes/no (a spreadsheet's choice) had every "no" read as true: each event
    relevant and a data fault, which scored the detection against events that were not there (a probe saw trigger
    precision go from 0.03 to 0.41). Any text but "false" was true, a blank cell too."""
    from mlma.simulate import read_events_file

    head = "event_id,kind,scope,city,unique_id,start,end,magnitude,is_data_fault,relevant,permanent,description\n"
    rows = ["1,storm,zone,c1,s0,2025-03-03,2025-03-04,1.5,no,yes,No,a", "2,outage,zone,c1,s1,2025-03-03,,,1,0,n,b",
            "3,storm,zone,c1,s0,2025-03-05,2025-03-06,1.0,False,TRUE,f,c"]
    (tmp_path / "ev.csv").write_text(head + "\n".join(rows) + "\n")
    events = read_events_file(tmp_path / "ev.csv")
    assert events["is_data_fault"].tolist() == [False, True, False]
    assert events["relevant"].tolist() == [True, False, True]
    assert events["permanent"].tolist() == [False, False, False]
    for cell, line in (("maybe", 3), ("", 3)):
        (tmp_path / "bad.csv").write_text(head + "\n".join([rows[0], rows[1].replace(",1,0,", f",1,{cell},")]))
        result = backtest("--data", data_file, "--events", tmp_path / "bad.csv", "--out", tmp_path / "out")
        assert result.exit_code == 2, result.output
        said = " ".join(result.output.split())
        assert f"cannot read it as events: column 'relevant', line {line}: {cell!r} is not true or false" in said, said
