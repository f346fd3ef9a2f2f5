"""Hostile input to the data contract: text dates whose day and month could be swapped, stream ids that are
empty or blank, and headers that repeat a column name.

Each case is driven through the public functions (``read_frame``, ``validate``, ``read_future_drivers``) and,
where a user would meet it, through the CLI (``mlma validate``, ``mlma ingest``), checking the exact message and
that a refused file writes nothing to the project.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlma.data import DataError, read_frame, read_future_drivers, validate
from mlma.project import init_project, load_config
from mlma.store import Store

DAY = pd.Timestamp("2025-02-03")  # a Monday; day first this is 03/02/2025, month first 02/03/2025


def hourly(n_streams: int = 3, days: int = 1, start: pd.Timestamp = DAY) -> pd.DataFrame:
    ds = pd.date_range(start, periods=24 * days, freq="h")
    rng = np.random.default_rng(0)
    return pd.DataFrame({"unique_id": np.repeat([f"z{i}" for i in range(n_streams)], len(ds)),
                         "ds": np.tile(ds, n_streams),
                         "y": rng.poisson(20, n_streams * len(ds)).astype(float)})


def as_text(frame: pd.DataFrame, fmt: str) -> pd.DataFrame:
    return frame.assign(ds=frame["ds"].dt.strftime(fmt))


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}  # one line per message: no wrapping by the console
    return subprocess.run([sys.executable, "-m", "mlma.cli", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project holding 14 days of 3 hourly streams, up to 2025-02-02 23:00."""
    root = tmp_path / "p"
    init_project(root, model="seasonal-naive")
    toml = root / "mlma.toml"
    toml.write_text(toml.read_text().replace('executor = "process"', 'executor = "inline"'))
    history = hourly(days=14, start=DAY - pd.Timedelta(days=14))
    history.to_parquet(tmp_path / "history.parquet")
    done = cli("ingest", str(tmp_path / "history.parquet"), "--project", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def snapshot(root: Path) -> dict:
    """Everything an ingest may write."""
    with Store.open(load_config(root).store_url) as store:
        return {"observations": store.observations().to_dict("list"), "ingests": len(store.ingests()),
                "streams": store.streams()["unique_id"].tolist(), "clock": str(store.clock()),
                "newest": store.newest_ds()}


# -- 1. text timestamps are ISO 8601 or refused ------------------------------------------------------------

DAY_FIRST_MESSAGE = (
    "the time column 'hour' holds 72 timestamps that are not ISO 8601 (e.g. '03/02/2025 00:00' on line 2, "
    "'03/02/2025 01:00', '03/02/2025 02:00'); day and month could be swapped in every one of them "
    "('03/02/2025 00:00' is 3 February read day first, 2 March read month first); text timestamps must be ISO "
    "dates, YYYY-MM-DD with an optional time (2025-02-03 or 2025-02-03 14:00): rewrite the column, or parse it "
    "with an explicit format (pandas.to_datetime(..., format=...)) and pass datetimes")


@pytest.mark.parametrize("mode", ["raise", "drop"])
def test_day_first_dates_are_refused_naming_file_and_column(tmp_path, mode):
    path = tmp_path / "day-first.csv"
    as_text(hourly(), "%d/%m/%Y %H:%M").rename(columns={"ds": "hour"}).to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        validate(read_frame(path, time_col="hour"), on_bad_rows=mode)
    assert str(info.value) == f"{path}: {DAY_FIRST_MESSAGE}"
    assert info.value.column == "ds" and info.value.rows[:3].tolist() == [2, 3, 4] and len(info.value.rows) == 72
    assert info.value.report.codes == ("non-iso-date",)


@pytest.mark.parametrize("fmt", ["%d.%m.%Y %H:%M", "%m/%d/%Y %H:%M", "%d-%m-%Y %H:%M", "%d/%m/%y"])
def test_other_day_month_layouts_are_refused(fmt):
    frame = as_text(hourly(days=1), fmt)
    with pytest.raises(DataError, match=r"not ISO 8601 .* day and month could be swapped"):
        validate(frame, on_bad_rows="drop")


def test_dates_readable_only_day_first_are_still_not_guessed():
    # 13-28 February: the day field is above 12 in every value, so only day first makes sense; still refused,
    # because the next file of early-month days would read either way.
    frame = as_text(hourly(days=16, start=pd.Timestamp("2025-02-13")), "%d/%m/%Y %H:%M")
    with pytest.raises(DataError) as info:
        validate(frame, on_bad_rows="drop")
    assert ("not ISO 8601 (e.g. '13/02/2025 00:00' on row 0, '13/02/2025 01:00', '13/02/2025 02:00'); dates "
            "written day or month first ('13/02/2025 00:00') are not guessed; text timestamps must be ISO dates"
            ) in str(info.value)


def test_other_non_iso_text_is_refused_whole():
    frame = as_text(hourly(), "%b %d %Y %H:%M")  # 'Feb 03 2025 00:00'
    with pytest.raises(DataError, match=r"^the time column 'ds' holds 72 timestamps that are not ISO 8601 "
                                        r"\(e\.g\. 'Feb 03 2025 00:00' on row 0"):
        validate(frame, on_bad_rows="drop")


@pytest.mark.parametrize("fmt", ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M"])
def test_iso_text_still_parses(fmt):
    checked = validate(as_text(hourly(), fmt), min_length=1)
    assert checked.frame["ds"].min() == DAY and checked.freq.alias == "h"
    assert set(checked.report.codes) == {"summary"}


def test_iso_text_with_offsets_still_converts_to_utc():
    frame = as_text(hourly(), "%Y-%m-%dT%H:%M:%S+01:00")
    checked = validate(frame, min_length=1)
    assert checked.frame["ds"].min() == DAY - pd.Timedelta(hours=1)
    assert "timezone-converted" in checked.report.codes


@pytest.mark.parametrize("zone", ["UTC", "GMT"])
def test_year_first_text_with_a_zone_name_is_read_as_utc(zone):
    """BigQuery exports timestamps as '2025-02-03 00:00:00 UTC': year first, so nothing to guess."""
    checked = validate(as_text(hourly(), f"%Y-%m-%d %H:%M:%S {zone}"), min_length=1)
    assert checked.frame["ds"].min() == DAY and "timezone-converted" in checked.report.codes
    with pytest.raises(DataError, match="not ISO 8601"):  # day first with a zone name is still not guessed
        validate(as_text(hourly(), f"%d/%m/%Y %H:%M {zone}"), on_bad_rows="drop")


def test_datetimes_of_several_time_zones_in_one_column_are_instants_in_utc():
    """Frames of several time zones concatenated give a column of objects: each value is an instant."""
    utc = hourly(n_streams=1).assign(ds=lambda f: f["ds"].dt.tz_localize("UTC"))
    paris = hourly(n_streams=1).assign(unique_id="p", ds=lambda f: f["ds"].dt.tz_localize("Europe/Paris"))
    mixed = pd.concat([utc, paris], ignore_index=True)
    assert mixed["ds"].dtype == object
    checked = validate(mixed, min_length=1)
    frame = checked.frame.set_index("unique_id")
    assert frame.loc["z0", "ds"].min() == DAY and frame.loc["p", "ds"].min() == DAY - pd.Timedelta(hours=1)
    assert "timezone-converted" in checked.report.codes


def test_numbers_among_text_timestamps_are_bad_rows_not_1970():
    frame = hourly(n_streams=1).assign(ds=lambda f: f["ds"].dt.strftime("%Y-%m-%d %H:%M").astype(object))
    frame.loc[3, "ds"] = 0
    checked = validate(frame, on_bad_rows="drop", min_length=1)
    assert len(checked.frame) == 23 and checked.frame["ds"].min() == DAY
    assert "unparsable-date" in checked.report.codes


def test_a_parquet_dataset_folder_is_read_whole(tmp_path):
    """Spark, Dask and pyarrow write a data set as a folder of part files: one schema, read as one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "fleet.parquet"
    folder.mkdir()
    frame = hourly()
    for i, part in enumerate([frame.iloc[:40], frame.iloc[40:]]):
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / f"part-{i}.parquet")
    assert len(read_frame(folder)) == 72
    done = cli("validate", str(folder))
    assert done.returncode == 0 and "3 streams, 72 rows" in one_line(done.stdout)


def test_datetime_columns_and_parquet_dates_still_work(tmp_path):
    frame = hourly()
    assert validate(frame, min_length=1).frame["ds"].min() == DAY
    daily = pd.DataFrame({"unique_id": "a", "ds": pd.date_range(DAY, periods=20, freq="D").date, "y": 1.0 + np.arange(20)})
    daily.to_parquet(tmp_path / "dates.parquet")  # a date32 column: read back as Python dates
    checked = validate(tmp_path / "dates.parquet", min_length=1)
    assert checked.freq.alias == "D" and checked.frame["ds"].iloc[0] == DAY
    with pytest.raises(DataError, match="holds numbers"):
        validate(frame.assign(ds=frame["ds"].astype("int64")))  # epoch numbers: refused as before


def test_a_stray_non_iso_value_is_a_bad_row_not_a_refused_file():
    frame = as_text(hourly(), "%Y-%m-%d %H:%M")
    frame.loc[5, "ds"] = "03/02/2025 05:00"
    checked = validate(frame, on_bad_rows="drop", min_length=1)
    (finding,) = checked.report.by_code("unparsable-date")
    assert finding.rows.tolist() == [5] and len(checked.frame) == 71


def test_future_driver_file_refuses_day_first_dates(tmp_path):
    path = tmp_path / "future.csv"
    as_text(hourly(), "%d/%m/%Y %H:%M").drop(columns="y").assign(temperature=3.5).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"future\.csv: the time column 'ds' holds 72 timestamps that are not ISO "
                                        r"8601 \(e\.g\. '03/02/2025 00:00' on line/row 2"):
        read_future_drivers(path)


def test_cli_validate_and_ingest_refuse_day_first_dates(tmp_path, project):
    path = tmp_path / "day-3.csv"
    as_text(hourly(), "%d/%m/%Y %H:%M").rename(columns={"ds": "hour"}).to_csv(path, index=False)
    done = cli("validate", str(path), "--time-col", "hour")
    assert done.returncode != 0 and f"error: {path}: {DAY_FIRST_MESSAGE}" in one_line(done.stdout + done.stderr)

    path = tmp_path / "day-3b.csv"
    as_text(hourly(), "%d/%m/%Y %H:%M").to_csv(path, index=False)
    before = snapshot(project)
    done = cli("ingest", str(path), "--project", str(project))
    out = one_line(done.stdout + done.stderr)
    assert done.returncode != 0
    assert ("day-3b.csv: the time column 'ds' holds 72 timestamps that are not ISO 8601 (e.g. '03/02/2025 00:00' "
            "on line 2") in out and "nothing was written" in out
    after = snapshot(project)
    assert after == before and after["newest"] == DAY - pd.Timedelta(hours=1)
    # The same day in ISO is accepted: the project's clock moves by one day, not four weeks.
    path = tmp_path / "day-3c.csv"
    as_text(hourly(), "%Y-%m-%d %H:%M").to_csv(path, index=False)
    done = cli("ingest", str(path), "--project", str(project))
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(project)["newest"] == DAY + pd.Timedelta(hours=23)


# -- 2. empty, blank and missing stream ids are rejected rows ------------------------------------------------

def with_bad_ids(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["unique_id"] = out["unique_id"].astype(object)
    out.loc[0, "unique_id"] = ""
    out.loc[1, "unique_id"] = "   "
    out.loc[2, "unique_id"] = None
    return out


def test_empty_blank_and_missing_ids_are_rejected_rows(tmp_path):
    path = tmp_path / "ids.parquet"
    with_bad_ids(hourly()).to_parquet(path)
    with pytest.raises(DataError) as info:
        validate(path, min_length=1)
    assert str(info.value) == (f"{path}: 3 rows without a unique_id (missing, empty or blank): rows 0, 1, 2")
    checked = validate(path, on_bad_rows="drop", min_length=1)
    (finding,) = checked.report.by_code("missing-id")
    assert finding.severity == "dropped" and finding.rows.tolist() == [0, 1, 2]
    assert finding.examples == ("row 0 (unique_id='')", "row 1 (unique_id='   ')", "row 2 (unique_id is missing)")
    assert sorted(checked.frame["unique_id"].unique()) == ["z0", "z1", "z2"] and len(checked.frame) == 69


def test_an_empty_id_in_a_csv_is_rejected_too(tmp_path):
    path = tmp_path / "ids.csv"
    as_text(with_bad_ids(hourly()), "%Y-%m-%d %H:%M").to_csv(path, index=False)
    checked = validate(path, on_bad_rows="drop", min_length=1)
    assert checked.report.by_code("missing-id")[0].rows.tolist() == [2, 3, 4]
    assert "" not in set(checked.frame["unique_id"])


def test_a_file_of_only_missing_ids_is_an_error_not_a_crash():
    frame = hourly().assign(unique_id=None)
    with pytest.raises(DataError, match=r"72 rows without a unique_id .*\n  - no usable rows left"):
        validate(frame, min_length=1)


def test_cli_validate_and_ingest_reject_empty_ids(tmp_path, project):
    path = tmp_path / "day-3.parquet"
    with_bad_ids(hourly()).to_parquet(path)
    done = cli("validate", str(path))
    out = one_line(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "missing-id: dropped 3 rows without a unique_id (missing, empty or blank): rows 0, 1, 2" in out
    assert "frequency: h (season length 24), 3 streams, 69 rows" in out

    before = snapshot(project)
    done = cli("ingest", str(path), "--project", str(project), "--strict")
    assert done.returncode != 0 and "IntegrityError" not in done.stderr
    assert "3 rows without a unique_id (missing, empty or blank): rows 0, 1, 2" in one_line(done.stdout + done.stderr)
    assert snapshot(project) == before
    done = cli("ingest", str(path), "--project", str(project))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "69 new, 0 revised, 0 unchanged, 3 dropped rows; 0 new streams" in one_line(done.stdout)
    after = snapshot(project)
    assert after["streams"] == before["streams"] == ["z0", "z1", "z2"]
    assert len(after["observations"]["y"]) == len(before["observations"]["y"]) + 69


def test_future_driver_file_refuses_empty_ids(tmp_path):
    frame = with_bad_ids(hourly()).drop(columns="y").assign(temperature=3.5)
    with pytest.raises(DataError, match=r"3 row\(s\) without a unique_id \(missing, empty or blank\), first on "
                                        r"line/row 0"):
        read_future_drivers(frame)


def test_ids_with_spaces_around_them_are_the_stream_without_them(tmp_path, project):
    """A CSV written with ", " gives ids like " z1": they are the stream "z1", said as a repair, not streams of
    their own (which split a zone's rows; on a new project they made the frequency look 3-hourly, for good)."""
    frame = hourly(days=1)
    frame["unique_id"] = frame["unique_id"].astype(object)
    frame.loc[1::3, "unique_id"] = " " + frame.loc[1::3, "unique_id"]
    frame.loc[2::3, "unique_id"] = frame.loc[2::3, "unique_id"] + "\t"
    done = validate(frame)
    assert sorted(done.frame["unique_id"].unique()) == ["z0", "z1", "z2"] and done.freq.alias == "h"
    found = {f.code: f for f in done.report.findings}["id-spaces"]
    assert found.severity == "repaired" and found.n_rows == 48
    assert found.message.startswith("removed the spaces around 6 unique_id values (' z0', 'z0\\t', ' z1' and 3 more")

    path = tmp_path / "day.csv"
    hourly(days=1, start=DAY).assign(unique_id=lambda f: " " + f["unique_id"]).to_csv(path, index=False)
    done = cli("ingest", str(path), "--project", str(project))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "repaired id-spaces 72 rows: removed the spaces around 3 unique_id values" in one_line(done.stdout)
    assert "72 new, 0 revised, 0 unchanged, 0 dropped rows; 0 new streams" in one_line(done.stdout)
    assert snapshot(project)["streams"] == ["z0", "z1", "z2"]

    future = tmp_path / "future.csv"
    hourly(days=1, start=DAY + pd.Timedelta(days=1)).drop(columns="y").assign(
        unique_id=lambda f: f["unique_id"] + " ", temperature=3.0).to_csv(future, index=False)
    assert sorted(read_future_drivers(future)["unique_id"].unique()) == ["z0", "z1", "z2"]


def test_invisible_characters_around_an_id_are_no_part_of_it(tmp_path, project):
    """Exports joined together leave a byte-order mark at a line's start, and a copy from a web page a zero-width
    space at a cell's end: "\\ufeffz0" and "z1\\u200b" were new streams, silently beside z0 and z1, which then
    looked silent. They are z0 and z1 now (an id-spaces repair); inside an id such a character stays."""
    path = tmp_path / "day.csv"
    day = hourly(days=1, start=DAY)
    day.to_csv(path, index=False)
    assert cli("ingest", str(path), "--project", str(project)).returncode == 0
    later = hourly(days=1, start=DAY + pd.Timedelta(days=1)).astype({"unique_id": object})
    later.loc[later["unique_id"] == "z0", "unique_id"] = "\ufeffz0"
    later.loc[later["unique_id"] == "z1", "unique_id"] = "z1\u200b"
    later.loc[later["unique_id"] == "z2", "unique_id"] = "z\u200c2"       # inside: another stream
    path = tmp_path / "later.csv"
    later.to_csv(path, index=False, encoding="utf-8")
    done = cli("ingest", str(path), "--project", str(project))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "repaired id-spaces 48 rows" in one_line(done.stdout) and "1 new streams" in one_line(done.stdout)
    assert snapshot(project)["streams"] == ["z0", "z1", "z2", "z\u200c2"]
    future = tmp_path / "future.csv"
    hourly(days=1, start=DAY + pd.Timedelta(days=2)).drop(columns="y").assign(
        unique_id=lambda f: "\u2060" + f["unique_id"] + "\u200e", temperature=3.0).to_csv(future, index=False)
    assert sorted(read_future_drivers(future)["unique_id"].unique()) == ["z0", "z1", "z2"]
    # An id of invisible characters only names no stream: blank, as an empty one is (it was skipped as an
    # unknown stream '').
    invisible = pd.read_csv(future, dtype=str)
    invisible["unique_id"] = invisible["unique_id"].where(invisible.index != 3, "\u200b")
    invisible.to_csv(future, index=False)
    with pytest.raises(DataError, match=r"1 row\(s\) without a unique_id \(missing, empty or blank\), first on "
                                         r"line/row 5"):
        read_future_drivers(future)
    attributes = tmp_path / "attributes.csv"
    attributes.write_text("unique_id,city\nz0,Berlin\n\u200b,Paris\n", encoding="utf-8")
    done = cli("attributes", str(attributes), "--project", str(project))
    assert done.returncode == 2 and "row 3: column 'unique_id' is blank" in one_line(done.stdout), done.stdout


def test_ids_a_store_already_holds_with_spaces_keep_their_streams(tmp_path):
    """A store written before ids were stripped may hold " z0": its feed keeps going to that stream (stripping
    it would start a new stream "z0" and leave the old one silent), while ids the store does not hold with
    their spaces are stripped as usual; an attributes file is read the same way."""
    from mlma.store.ingest import ingest_checked

    with Store.create(f"sqlite:///{tmp_path / 'legacy.db'}") as store:
        old = hourly(n_streams=2, days=2, start=DAY - pd.Timedelta(days=2))
        old["unique_id"] = " " + old["unique_id"]
        store.ingest_frame(old, "before the change")                  # as an older mlma stored them
        assert sorted(store.streams()["unique_id"]) == [" z0", " z1"]
        day = hourly(n_streams=3, days=1)
        day["unique_id"] = " " + day["unique_id"]                     # " z2" is new: stripped
        path = tmp_path / "day.csv"
        day.to_csv(path, index=False)
        report = ingest_checked(store, path)
        assert sorted(store.streams()["unique_id"]) == [" z0", " z1", "z2"]
        assert report.rows_new == 72 and report.new_streams == 1
        found = {f.code: f for f in report.validation.findings}["id-spaces"]
        assert found.n_rows == 24 and "(' z2')" in found.message
        future = hourly(n_streams=3, days=1, start=DAY + pd.Timedelta(days=1)).drop(columns="y").assign(price=2.0)
        future["unique_id"] = " " + future["unique_id"]
        done = store.ingest_future(future)                            # the same rule for future driver values
        assert done.rows_new == 72 and done.rows_dropped == 0

def test_attribute_and_abnormal_period_files_read_ids_as_the_actuals_are(tmp_path, project):
    from mlma.backtest import _queue_groups
    from mlma.fleet import FleetData

    path = tmp_path / "attributes.csv"
    pd.DataFrame({"unique_id": [" z0", "z1 ", "z9"], "city": ["berlin", "paris", "rome"]}).to_csv(path, index=False)
    done = cli("attributes", str(path), "--project", str(project))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "set on 2 streams; 1 unknown stream(s) skipped, e.g. 'z9'" in one_line(done.stdout)
    with Store.open(load_config(project).store_url) as store:
        cities = store.streams().set_index("unique_id")["attributes"]
    assert cities["z0"] == {"city": "berlin"} and cities["z1"] == {"city": "paris"}
    twice = tmp_path / "twice.csv"
    pd.DataFrame({"unique_id": ["z0", "z0 "], "city": ["a", "b"]}).to_csv(twice, index=False)
    done = cli("attributes", str(twice), "--project", str(project))
    assert done.returncode == 2 and "stream 'z0' appears twice (row 3)" in one_line(done.stdout)

    frame = pd.DataFrame({"unique_id": [" z0", "z1"], "city": ["berlin", "paris"]})
    assert _queue_groups(frame, "city", "unique_id") == {"z0": "berlin", "z1": "paris"}
    # "NA" (Namibia) and "nan" are ids as the actuals' reader keeps them, and "NA" a region: only an empty cell
    # is missing (the stream NA lost its group; NA and nan together were "stream nan appears twice").
    countries = hourly(n_streams=2, days=1)
    countries["unique_id"] = countries["unique_id"].map({"z0": "NA", "z1": "nan"})
    countries.to_csv(tmp_path / "countries.csv", index=False)
    assert cli("ingest", str(tmp_path / "countries.csv"), "--project", str(project)).returncode == 0
    pd.DataFrame({"unique_id": ["NA", "nan"], "region": ["AF", "NA"], "city": ["windhoek", ""]}).to_csv(
        tmp_path / "countries.attributes.csv", index=False)
    done = cli("attributes", str(tmp_path / "countries.attributes.csv"), "--project", str(project))
    assert done.returncode == 0, done.stdout + done.stderr
    with Store.open(load_config(project).store_url) as store:
        found = store.streams().set_index("unique_id")["attributes"]
    assert found["NA"] == {"region": "AF", "city": "windhoek"} and found["nan"] == {"region": "NA"}
    frame = hourly(days=2).assign(stream_id=lambda f: f["unique_id"].str[1:].astype(int))
    fleet = FleetData(frame[["stream_id", "ds", "y"]], "h", pd.date_range(DAY, periods=3, freq="D"),
                      ids=["z0", "z1", "z2"])
    fleet.mark_abnormal(pd.DataFrame({"unique_id": ["z1 "], "start": [DAY], "end": [DAY + pd.Timedelta(hours=5)]}))
    assert fleet.tick_abnormal[:, 0].tolist() == [False, True, False]


def test_a_dropped_rows_message_names_its_count_in_plain_words(tmp_path, project):
    """The noun of a dropped-rows finding takes the plural, not the end of the sentence (it read
    "dropped 2 timestamp off the project's h grid (...)s in streams")."""
    path = tmp_path / "off-grid.csv"
    day = hourly(days=1, start=DAY)
    stray = day[day["unique_id"] == "z1"].head(2).assign(ds=lambda f: f["ds"] + pd.Timedelta(minutes=30))
    pd.concat([day, stray]).to_csv(path, index=False)
    done = cli("ingest", str(path), "--project", str(project))
    text = one_line(done.stdout + done.stderr)
    assert done.returncode == 0 and "dropped 2 timestamps off the project's h grid (" in text, text
    assert ")s in stream" not in text and "grid (fixed by the ingest of history.parquet) in stream 'z1'" in text


# -- 3. repeated column names are refused ----------------------------------------------------------------------

def test_duplicate_csv_header_is_refused(tmp_path):
    path = tmp_path / "dup.csv"
    frame = as_text(hourly(), "%Y-%m-%d %H:%M")
    frame.assign(y2=frame["y"] + 1).to_csv(path, index=False, header=["unique_id", "ds", "y", "y"])
    message = (f"{path}: duplicate column name 'y' (columns 3, 4); each column needs its own name, so that which "
               f"one is the target (or a driver) is not guessed")
    with pytest.raises(DataError) as info:
        read_frame(path)
    assert str(info.value) == message and info.value.column == "y"
    with pytest.raises(DataError, match=re.escape(message)):
        validate(path)
    with pytest.raises(DataError, match=re.escape(message)):
        read_future_drivers(path)


def test_several_duplicate_names_are_all_named(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("unique_id,ds,y,t,y,t\na,2025-02-03,1,2,3,4\n")
    with pytest.raises(DataError, match=r"duplicate column names 'y' \(columns 3, 5\), 't' \(columns 4, 6\)"):
        read_frame(path)


def test_duplicate_parquet_columns_are_refused(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "dup.parquet"
    frame = hourly()
    table = pa.Table.from_arrays([pa.array(frame["unique_id"]), pa.array(frame["ds"]), pa.array(frame["y"]),
                                  pa.array(frame["y"] + 1)], names=["unique_id", "ds", "y", "y"])
    pq.write_table(table, path)
    with pytest.raises(DataError, match=re.escape(f"{path}: duplicate column name 'y' (columns 3, 4)")):
        read_frame(path)


def test_duplicate_frame_columns_are_refused():
    frame = hourly()
    frame = pd.concat([frame, frame[["y"]]], axis=1)
    with pytest.raises(DataError, match=re.escape("input frame: duplicate column name 'y' (columns 3, 4)")):
        read_frame(frame)
    with pytest.raises(DataError, match=re.escape("input frame: duplicate column name 'y' (columns 3, 4)")):
        validate(frame)


def test_cli_ingest_refuses_duplicate_header_and_writes_nothing(tmp_path, project):
    path = tmp_path / "dup.csv"
    frame = as_text(hourly(), "%Y-%m-%d %H:%M")
    frame.assign(y2=frame["y"] + 1).to_csv(path, index=False, header=["unique_id", "ds", "y", "y"])
    done = cli("validate", str(path))
    assert done.returncode != 0 and f"error: {path}: duplicate column name 'y' (columns 3, 4)" in one_line(done.stdout
                                                                                                           + done.stderr)
    before = snapshot(project)
    done = cli("ingest", str(path), "--project", str(project))
    assert done.returncode != 0 and "duplicate column name 'y' (columns 3, 4)" in one_line(done.stdout + done.stderr)
    assert snapshot(project) == before
