"""Tests of the data contract: reading, validation findings, frequencies and tick grids."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from mlma.data import (
    DataError,
    Finding,
    Frequency,
    TickGrid,
    ValidationReport,
    _group_mode,
    infer_frequency,
    make_tick_grid,
    read_frame,
    read_future_drivers,
    validate,
)


def panel(streams: dict[str, pd.DatetimeIndex], seed: int = 0) -> pd.DataFrame:
    """A canonical frame with random, non-constant y for each stream."""
    rng = np.random.default_rng(seed)
    parts = [pd.DataFrame({"unique_id": uid, "ds": ds, "y": rng.normal(10, 2, len(ds))})
             for uid, ds in streams.items()]
    return pd.concat(parts, ignore_index=True)


def hours(start: str, n: int) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="h")


def dropped_rows(report: ValidationReport) -> int:
    return sum(f.n_rows for f in report.findings if f.severity == "dropped")


# --------------------------------------------------------------------------------------------------------
# read_frame
# --------------------------------------------------------------------------------------------------------


def test_read_frame_renames_and_keeps_numeric_extras_by_default():
    raw = pd.DataFrame({"store": ["s1", "s1"], "day": ["2024-01-01", "2024-01-02"], "sales": [1, 2],
                        "price": [1.0, 1.1], "promo": [True, False], "region": ["n", "n"]})
    out = read_frame(raw, id_col="store", time_col="day", target_col="sales")
    assert out.columns.tolist() == ["unique_id", "ds", "y", "price", "promo"]
    assert out["y"].tolist() == [1, 2]
    checked = validate(out, min_length=1)
    dropped = checked.report.by_code("columns-dropped")
    assert len(dropped) == 1 and "'region'" in dropped[0].message and dropped[0].severity == "info"


def test_read_frame_explicit_exog_keeps_only_those_and_checks_they_exist():
    raw = pd.DataFrame({"unique_id": ["a"], "ds": ["2024-01-01"], "y": [1.0], "t": [3.0], "u": [4.0]})
    assert read_frame(raw, exog=["u"]).columns.tolist() == ["unique_id", "ds", "y", "u"]
    assert read_frame(raw, exog=[]).columns.tolist() == ["unique_id", "ds", "y"]
    with pytest.raises(DataError, match=r"missing column 'w' \(exog\)"):
        read_frame(raw, exog=["w"])


def test_read_frame_missing_column_names_file_column_and_present_columns(tmp_path):
    path = tmp_path / "sales.csv"
    pd.DataFrame({"store": ["a"], "day": ["2024-01-01"], "sales": [1]}).to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        read_frame(path, id_col="store", time_col="date", target_col="sales")
    err = info.value
    assert err.source == str(path) and err.column == "date"
    assert str(path) in str(err) and "'date'" in str(err)
    assert all(f"'{c}'" in str(err) for c in ("store", "day", "sales"))


def test_read_frame_rejects_unknown_suffix_and_clashing_columns(tmp_path):
    with pytest.raises(ValueError, match=r"unknown file type '\.xlsx'"):
        read_frame(tmp_path / "data.xlsx")
    raw = pd.DataFrame({"id": ["a"], "ds": ["2024-01-01"], "sales": [1.0], "y": [2.0]})
    with pytest.raises(DataError, match="'y' already exists"):
        read_frame(raw, id_col="id", target_col="sales")


def test_read_frame_csv_keeps_ids_as_text(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("unique_id,ds,y\n007,2024-01-01,1\nNA,2024-01-01,2\n")
    out = read_frame(path)
    assert out["unique_id"].tolist() == ["007", "NA"]


def test_read_frame_joins_several_id_columns_and_handles_a_single_stream():
    raw = pd.DataFrame({"state": ["V", "N"], "industry": ["food", "food"], "ds": ["2024-01-01"] * 2, "y": [1, 2]})
    assert read_frame(raw, id_col=["state", "industry"])["unique_id"].tolist() == ["V / food", "N / food"]
    single = read_frame(raw.drop(columns=["state", "industry"]), id_col=None)
    assert single["unique_id"].tolist() == ["series", "series"]


def test_polars_input_is_converted():
    pl = pytest.importorskip("polars")
    ds = pd.date_range("2024-01-01", periods=30, freq="D")
    frame = pl.DataFrame({"sku": ["a"] * 30, "day": ds, "qty": np.arange(30, dtype=float)})
    checked = validate(read_frame(frame, id_col="sku", time_col="day", target_col="qty"))
    assert checked.freq.alias == "D"
    assert checked.frame["y"].tolist() == list(range(30))
    assert str(checked.frame["ds"].dtype) == "datetime64[ns]"
    assert validate(pl.DataFrame({"unique_id": ["a"] * 30, "ds": ds, "y": np.arange(30.0)})).freq.alias == "D"


def test_parquet_roundtrip(tmp_path):
    df = panel({"a": hours("2024-01-01", 72), "b": hours("2024-01-01", 72)})
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    checked = validate(read_frame(path))
    pd.testing.assert_frame_equal(checked.frame, validate(df).frame)


# --------------------------------------------------------------------------------------------------------
# validate: errors and drops
# --------------------------------------------------------------------------------------------------------


def test_csv_line_numbers_point_at_the_bad_lines(tmp_path):
    rng = np.random.default_rng(3)
    df = panel({"a": hours("2024-01-01", 60), "b": hours("2024-01-01", 60)})
    df["ds"] = df["ds"].dt.strftime("%Y-%m-%d %H:%M:%S").astype(object)
    df["y"] = df["y"].astype(object)
    bad_y = rng.choice(len(df), 4, replace=False)
    df.loc[bad_y, "y"] = "n/a!"
    path = tmp_path / "orders.csv"
    df.to_csv(path, index=False)
    lines = path.read_text().splitlines()
    with pytest.raises(DataError) as info:
        validate(read_frame(path))
    err = info.value
    assert err.source == str(path) and err.column == "y"
    assert sorted(err.rows.tolist()) == sorted((bad_y + 2).tolist())
    for line_number in err.rows:
        assert "n/a!" in lines[line_number - 1]  # line numbers are 1-based
    first = sorted(bad_y + 2)[0]
    assert f"line{'s' if len(bad_y) > 1 else ''} {first}" in str(err)
    assert str(path) in str(err)


def test_unparsable_dates_raise_naming_rows_or_are_dropped():
    df = panel({"a": hours("2024-01-01", 60)})
    df["ds"] = df["ds"].astype(str).astype(object)
    df.loc[[7, 30], "ds"] = ["yesterday", "2024-13-45 00:00:00"]
    with pytest.raises(DataError) as info:
        validate(df)
    assert info.value.rows.tolist() == [7, 30] and info.value.column == "ds"
    assert "'a'" in str(info.value) and "unparsable" in str(info.value)
    checked = validate(df, on_bad_rows="drop")
    (finding,) = checked.report.by_code("unparsable-date")
    assert finding.severity == "dropped" and finding.n_rows == 2
    assert any("yesterday" in e for e in finding.examples)
    assert len(checked.frame) == 58


@pytest.mark.parametrize("arrow_type", ["timestamp-us", "timestamp-ms-utc", "date32"])
def test_parquet_timestamps_beyond_nanoseconds_are_bad_rows_not_a_refused_file(tmp_path, arrow_type):
    """A Parquet file's timestamps in micro- or milliseconds (or dates) can name the year 2500 or 1500, which
    nanoseconds since 1970 cannot hold: pandas' bare "Out of bounds nanosecond timestamp" refused the whole file,
    naming nothing. Those rows are unparsable dates now, dropped and listed, as a CSV's are."""
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    days = pd.date_range("2024-01-01", periods=30, freq="D").to_pydatetime().tolist()
    stamps = days[:14] + [datetime.datetime(2500, 1, 1)] + days[15:29] + [datetime.datetime(1500, 6, 1)]
    kind = {"timestamp-us": pa.timestamp("us"), "timestamp-ms-utc": pa.timestamp("ms", tz="UTC"),
            "date32": pa.date32()}[arrow_type]
    values = [d.date() for d in stamps] if arrow_type == "date32" else stamps
    path = tmp_path / "far.parquet"
    pq.write_table(pa.table({"unique_id": ["a"] * 30, "ds": pa.array(values, kind),
                             "y": np.arange(30, dtype=float)}), path)
    with pytest.raises(DataError) as info:
        validate(read_frame(path))
    assert info.value.rows.tolist() == [14, 29] and "unparsable" in str(info.value)
    checked = validate(read_frame(path), on_bad_rows="drop")
    (finding,) = checked.report.by_code("unparsable-date")
    assert finding.n_rows == 2 and any("2500" in e for e in finding.examples), finding.examples
    assert len(checked.frame) == 28 and checked.frame["ds"].max() == pd.Timestamp("2024-01-29")


def test_non_finite_target_nan_inf_and_text():
    df = panel({"a": hours("2024-01-01", 60), "b": hours("2024-01-01", 60)})
    df["y"] = df["y"].astype(object)
    df.loc[3, "y"] = np.nan
    df.loc[70, "y"] = np.inf
    df.loc[100, "y"] = "twelve"
    with pytest.raises(DataError) as info:
        validate(df)
    assert info.value.rows.tolist() == [3, 70, 100]
    assert "'a'" in str(info.value) and "'b'" in str(info.value)
    checked = validate(df, on_bad_rows="drop")
    (finding,) = checked.report.by_code("non-finite-target")
    assert finding.n_rows == 3 and set(finding.streams) == {"a", "b"}
    assert np.isfinite(checked.frame["y"]).all() and len(checked.frame) == 117


def test_missing_columns_and_missing_ids():
    with pytest.raises(DataError, match=r"missing column 'y'; columns present: 'unique_id', 'ds'"):
        validate(pd.DataFrame({"unique_id": ["a"], "ds": ["2024-01-01"]}))
    df = panel({"a": hours("2024-01-01", 60)})
    df["unique_id"] = df["unique_id"].astype(object)
    df.loc[5, "unique_id"] = None
    with pytest.raises(DataError, match="without a unique_id"):
        validate(df)
    assert validate(df, on_bad_rows="drop").report.by_code("missing-id")[0].n_rows == 1


def test_identical_duplicates_are_dropped_in_both_modes():
    df = panel({"a": hours("2024-01-01", 60)})
    doubled = pd.concat([df, df.iloc[[5, 6]]], ignore_index=True)
    for mode in ("raise", "drop"):
        checked = validate(doubled, on_bad_rows=mode)
        (finding,) = checked.report.by_code("duplicate-identical")
        assert finding.severity == "dropped" and finding.n_rows == 2
        pd.testing.assert_frame_equal(checked.frame, validate(df).frame)


def test_conflicting_duplicates_raise_or_keep_the_last():
    df = panel({"a": hours("2024-01-01", 60)})
    late = df.iloc[[10]].assign(y=-99.0)  # a later row for the same hour: a correction
    data = pd.concat([df, late], ignore_index=True)
    with pytest.raises(DataError) as info:
        validate(data)
    assert sorted(info.value.rows.tolist()) == [10, 60]
    assert "different values" in str(info.value) and "'a'" in str(info.value)
    checked = validate(data, on_bad_rows="drop")
    (finding,) = checked.report.by_code("duplicate-conflict")
    assert finding.severity == "dropped" and finding.n_rows == 1 and finding.rows.tolist() == [10]
    assert checked.frame.loc[checked.frame["ds"] == df.loc[10, "ds"], "y"].item() == -99.0
    # The message says which row won and its value, not only the one dropped.
    assert f"rows 10, 60 have y = {df.loc[10, 'y']:g}, -99 (row 60 kept)" in finding.message, finding.message


def test_duplicates_that_differ_only_in_an_exogenous_column_conflict():
    df = panel({"a": hours("2024-01-01", 60)}).assign(temp=1.0)
    data = pd.concat([df, df.iloc[[4]].assign(temp=2.0)], ignore_index=True)
    with pytest.raises(DataError, match="different values"):
        validate(data)


def test_mixed_frequencies_name_the_streams_in_both_modes():
    df = panel({"h1": hours("2024-01-01", 200), "h2": hours("2024-01-01", 200),
                "d1": pd.date_range("2024-01-01", periods=60, freq="D")})
    for mode in ("raise", "drop"):
        with pytest.raises(DataError) as info:
            validate(df, on_bad_rows=mode)
        assert info.value.streams == ("d1",)
        assert "'d1' looks D" in str(info.value) and "frequency is h" in str(info.value)
    with pytest.raises(DataError, match="'h1', 'h2' look h"):
        validate(df, freq="D")


def test_irregular_timestamps_inside_a_stream_are_named_or_dropped():
    df = panel({"a": hours("2024-01-01", 100), "b": hours("2024-01-01", 100)})
    df.loc[130, "ds"] += pd.Timedelta(minutes=17)
    with pytest.raises(DataError) as info:
        validate(df)
    assert info.value.rows.tolist() == [130] and info.value.unique_id == "b"
    assert "off the stream's h grid" in str(info.value)
    checked = validate(df, on_bad_rows="drop")
    assert checked.report.by_code("off-grid")[0].n_rows == 1
    assert len(checked.frame) == 199 and checked.report.by_code("gaps")[0].n_rows == 1


def test_raise_mode_reports_every_problem_at_once():
    df = panel({"a": hours("2024-01-01", 60)})
    df["y"] = df["y"].astype(object)
    df.loc[3, "y"] = "?"
    df.loc[9, "ds"] += pd.Timedelta(minutes=5)
    with pytest.raises(DataError) as info:
        validate(df, source="feed")
    err = info.value
    assert str(err).startswith("feed: 2 problems")
    assert [f.code for f in err.report.errors] == ["non-finite-target", "off-grid"]
    assert err.rows.tolist() == [3]  # the first error's rows


def test_dropped_findings_account_for_every_removed_row():
    rng = np.random.default_rng(11)
    df = panel({f"z{i}": hours("2024-01-01", 24 * 10) for i in range(20)}).sample(frac=1.0, random_state=1)
    df = df.reset_index(drop=True)
    df["y"] = df["y"].astype(object)
    df["ds"] = df["ds"].astype(object)
    df.loc[rng.choice(len(df), 15, replace=False), "y"] = np.nan
    df.loc[rng.choice(len(df), 5, replace=False), "ds"] = "garbage"
    df = pd.concat([df, df.iloc[rng.choice(len(df), 8, replace=False)]], ignore_index=True)
    checked = validate(df, on_bad_rows="drop")
    report = checked.report
    assert report.n_rows_in - report.n_rows_out == dropped_rows(report) > 0
    assert len(checked.frame) == report.n_rows_out
    assert "unsorted" in report.codes


# --------------------------------------------------------------------------------------------------------
# validate: repairs, warnings, info
# --------------------------------------------------------------------------------------------------------


def test_clean_data_gives_only_info_and_a_canonical_frame():
    df = panel({"b": hours("2024-01-01", 24 * 14), "a": hours("2024-01-03", 24 * 14)})
    df = df.sort_values(["unique_id", "ds"], ignore_index=True)
    checked = validate(df)
    assert {f.severity for f in checked.report.findings} == {"info"}
    assert checked.report.codes == ("summary",)
    frame = checked.frame
    assert frame.columns.tolist() == ["unique_id", "ds", "y"]
    assert str(frame["ds"].dtype) == "datetime64[ns]" and frame["y"].dtype == np.float64
    assert pd.api.types.is_string_dtype(frame["unique_id"].dtype)
    assert isinstance(frame.index, pd.RangeIndex)
    pd.testing.assert_frame_equal(frame, df.astype({"unique_id": "str"}), check_dtype=False)


def test_unsorted_rows_are_sorted_and_reported():
    df = panel({"a": hours("2024-01-01", 60), "b": hours("2024-01-01", 60)})
    shuffled = df.sample(frac=1.0, random_state=4)
    checked = validate(shuffled)
    (finding,) = checked.report.by_code("unsorted")
    assert finding.severity == "repaired" and finding.n_rows > 0
    expected = df.sort_values(["unique_id", "ds"], ignore_index=True)
    pd.testing.assert_frame_equal(checked.frame, expected, check_dtype=False)


def test_timezones_are_converted_to_utc_and_reported():
    local = pd.date_range("2024-03-30", periods=72, freq="h", tz="Europe/Berlin")  # crosses DST
    df = pd.DataFrame({"unique_id": "a", "ds": local, "y": np.arange(72.0)})
    checked = validate(df)
    (finding,) = checked.report.by_code("timezone-converted")
    assert finding.severity == "repaired" and "Europe/Berlin" in finding.message
    expected = local.tz_convert("UTC").tz_localize(None)
    assert (checked.frame["ds"].to_numpy() == expected.to_numpy()).all()
    assert checked.freq.alias == "h" and "gaps" not in checked.report.codes


def test_mixed_utc_offsets_in_text_are_converted():
    text = ["2024-01-01T00:00:00+01:00", "2024-01-01T00:00:00+00:00", "2024-01-01T01:00:00+00:00"]
    checked = validate(pd.DataFrame({"unique_id": "a", "ds": text, "y": [1.0, 2.0, 3.0]}))
    assert checked.frame["ds"].dt.hour.tolist() == [23, 0, 1]
    assert "timezone-converted" in checked.report.codes


def test_random_gaps_are_a_warning_with_the_missing_count():
    df = panel({"a": hours("2024-01-01", 24 * 20), "b": hours("2024-01-01", 24 * 20)})
    holes = [30, 31, 32, 100, 400, 500]
    checked = validate(df.drop(index=holes))
    (finding,) = checked.report.by_code("gaps")
    assert finding.severity == "warning" and finding.n_rows == len(holes)
    assert set(finding.streams) == {"a", "b"}
    assert "observation-window" not in checked.report.codes


def parking_sensor(days: int = 21, start: str = "08:00", end: str = "16:30") -> pd.DatetimeIndex:
    ds = pd.date_range("2024-04-01", periods=days * 48, freq="30min")
    clock = ds.strftime("%H:%M")
    if start <= end:
        return ds[(clock >= start) & (clock <= end)]
    return ds[(clock >= start) | (clock <= end)]  # a window across midnight


def test_parking_sensor_window_is_info_not_gaps():
    checked = validate(panel({"lot-1": parking_sensor(), "lot-2": parking_sensor()}))
    (finding,) = checked.report.by_code("observation-window")
    assert finding.severity == "info"
    assert "observation window 08:00-16:30" in finding.message
    assert set(finding.streams) == {"lot-1", "lot-2"}
    assert "gaps" not in checked.report.codes and not checked.report.errors
    assert checked.freq.alias == "30min"


def test_parking_sensor_with_random_gaps_counts_only_gaps_inside_the_window():
    df = panel({"lot-1": parking_sensor(), "lot-9": parking_sensor(start="22:00", end="05:30")})
    inside_holes = [3, 50, 51]
    checked = validate(df.drop(index=inside_holes))
    windows = {f.message.split(" (")[0]: f.streams for f in checked.report.by_code("observation-window")}
    assert windows == {"observation window 08:00-16:30": ("lot-1",),
                       "observation window 22:00-05:30": ("lot-9",)}
    (gaps,) = checked.report.by_code("gaps")
    assert gaps.n_rows == len(inside_holes) and gaps.streams == ("lot-1",)


def test_daily_data_closed_on_sundays_is_a_weekly_window():
    ds = pd.date_range("2024-01-01", periods=10 * 7, freq="D")
    checked = validate(panel({"shop": ds[ds.day_of_week != 6]}))
    (finding,) = checked.report.by_code("observation-window")
    assert "Mon-Sat" in finding.message
    assert "gaps" not in checked.report.codes


def test_short_and_constant_series_are_warnings():
    df = panel({"long": hours("2024-01-01", 24 * 3), "short": hours("2024-01-01", 30)})
    df.loc[df["unique_id"] == "long", "y"] = 5.0
    checked = validate(df)
    (short,) = checked.report.by_code("short-series")
    assert short.streams == ("short",) and "fewer than 48 rows" in short.message
    (constant,) = checked.report.by_code("constant-series")
    assert constant.streams == ("long",) and constant.severity == "warning"
    assert "short-series" not in validate(df, min_length=30).report.codes


def test_exogenous_problems_are_warnings():
    df = panel({"a": hours("2024-01-01", 60)}).assign(temp=1.0, label="x")
    df.loc[[2, 3], "temp"] = np.nan
    checked = validate(df)
    assert checked.report.by_code("exog-missing")[0].n_rows == 2
    assert checked.report.by_code("exog-non-numeric")[0].column == "label"
    assert checked.frame.columns.tolist() == ["unique_id", "ds", "y", "temp", "label"]


def test_parameters_are_checked():
    df = panel({"a": hours("2024-01-01", 60)})
    with pytest.raises(ValueError, match="on_bad_rows"):
        validate(df, on_bad_rows="ignore")
    with pytest.raises(ValueError, match="min_length"):
        validate(df, min_length=0)
    with pytest.raises(ValueError, match="freq='hourly'"):
        validate(df, freq="hourly")
    with pytest.raises(DataError, match="no rows"):
        validate(df.iloc[:0])


def test_report_helpers():
    df = panel({"a": hours("2024-01-01", 60)}).sample(frac=1.0, random_state=0)
    report = validate(df).report
    table = report.to_frame()
    assert table.columns.tolist() == ["code", "severity", "unique_id", "n_streams", "n_rows", "column",
                                      "message", "examples"]
    assert table["code"].tolist() == list(report.codes)
    text = str(report)
    assert "[repaired] unsorted" in text and "[info] summary" in text
    report.raise_if_errors()  # no errors: no exception
    broken = ValidationReport((Finding("x", "error", "it broke", unique_id="a", rows=np.array([4])),), "f.csv")
    with pytest.raises(DataError, match="f.csv: it broke") as info:
        broken.raise_if_errors()
    assert info.value.unique_id == "a" and info.value.rows.tolist() == [4]
    with pytest.raises(ValueError, match="severity"):
        Finding("x", "fatal", "no such severity")


def test_validate_stays_fast_on_a_large_fleet():
    n_series, days = 1_000, 90
    ds = hours("2024-01-01", 24 * days).to_numpy()
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"unique_id": np.repeat([f"zone_{i:04d}" for i in range(n_series)], len(ds)),
                       "ds": np.tile(ds, n_series), "y": rng.poisson(10, n_series * len(ds)).astype(float)})
    started = time.perf_counter()
    checked = validate(df)
    elapsed = time.perf_counter() - started
    print(f"validate: {len(df):,} rows in {elapsed:.2f} s")
    assert checked.report.codes == ("summary",)
    assert elapsed < 20  # about 1 s on a 2-core machine; the bound only catches per-row Python loops


# --------------------------------------------------------------------------------------------------------
# Frequency
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("alias", "season", "secondary"), [
    ("h", 24, 168), ("30min", 48, 336), ("15min", 96, 672), ("D", 7, None), ("W-SUN", 52, None),
    ("MS", 12, None), ("ME", 12, None), ("QS", 4, None), ("YS", 1, None),
])
def test_frequency_seasons(alias, season, secondary):
    freq = Frequency(alias)
    assert (freq.season_length, freq.secondary_season) == (season, secondary)


def test_frequency_normalises_aliases_and_rejects_unsupported_ones():
    assert Frequency("1h") == Frequency("h")
    assert Frequency("QS-JAN").alias == "QS" and Frequency("YE-DEC").alias == "YE"
    assert Frequency("W").alias == "W-SUN" and Frequency("24h").alias == "D"
    assert Frequency("h", season_length=12).season_length == 12
    assert Frequency("h", secondary_season=None).secondary_season is None
    with pytest.raises(ValueError, match="not supported"):
        Frequency("B")
    with pytest.raises(ValueError, match="season_length"):
        Frequency("h", season_length=0)


@pytest.mark.parametrize(("alias", "tick", "steps"), [
    ("h", "1D", 24), ("30min", "1D", 48), ("15min", "1D", 96), ("D", "7D", 7), ("W-SUN", "28D", 4),
    ("MS", "12MS", 12), ("QS", "4QS", 4), ("YS", "YS", 1),
])
def test_default_ticks_hold_a_whole_number_of_steps(alias, tick, steps):
    freq = Frequency(alias)
    assert freq.steps_per(freq.default_tick()) == steps
    assert freq.steps_per(tick) == steps


def test_steps_per_rejects_fractional_and_varying_ticks():
    with pytest.raises(ValueError, match="whole number"):
        Frequency("h").steps_per("90min")
    with pytest.raises(ValueError, match="varying"):
        Frequency("D").steps_per("MS")
    with pytest.raises(ValueError, match="varying"):
        Frequency("MS").steps_per("30D")


def test_frequency_grid_and_future():
    grid = Frequency("ME").grid("2024-01-31", "2024-04-30")
    assert [d.strftime("%m-%d") for d in grid] == ["01-31", "02-29", "03-31", "04-30"]
    assert Frequency("30min").grid("2024-01-01 23:00", "2024-01-02 00:00").size == 3
    assert Frequency("QS").future("2024-10-01", 2).strftime("%Y-%m").tolist() == ["2025-01", "2025-04"]


@pytest.mark.parametrize("alias", ["h", "30min", "15min", "D", "W-SUN", "W-WED", "MS", "ME", "QS", "QE",
                                   "QS-FEB", "YS", "YE", "YE-JUN"])
def test_infer_frequency_with_gaps(alias):
    ds = pd.date_range("2001-03-01", periods=60, freq=alias).delete([4, 5, 20, 41])
    other = pd.date_range("2002-01-01", periods=30, freq=alias).delete([2])
    df = pd.DataFrame({"unique_id": ["a"] * len(ds) + ["b"] * len(other), "ds": ds.append(other)})
    assert infer_frequency(df.sample(frac=1.0, random_state=0)) == Frequency(alias)


def test_infer_frequency_names_streams_that_disagree():
    df = pd.DataFrame({"unique_id": ["x"] * 10 + ["y"] * 10 + ["z"] * 10,
                       "ds": hours("2024-01-01", 10).append(hours("2024-02-01", 10)).append(
                           pd.date_range("2024-01-01", periods=10, freq="MS"))})
    with pytest.raises(DataError) as info:
        infer_frequency(df)
    assert set(info.value.streams) == {"x", "y", "z"}
    assert "'x', 'y' look h" in str(info.value) and "'z' looks MS" in str(info.value)


def test_mid_month_stamps_are_not_guessed():
    ds = pd.date_range("2020-01-01", periods=24, freq="MS") + pd.Timedelta(days=14)
    with pytest.raises(DataError, match="first or last day of the month"):
        validate(panel({"a": ds}))


def test_group_mode_fallback_agrees_with_the_table_path():
    rng = np.random.default_rng(5)
    groups = np.sort(rng.integers(0, 5_000, 60_000))
    values = rng.integers(0, 2_000, 60_000)  # 5,000 groups x 2,000 values: the sort-based path
    mode, count = _group_mode(groups, values, 5_000)
    counts = pd.DataFrame({"g": groups, "v": values}).value_counts().reset_index()
    best = counts.sort_values(["g", "count", "v"], ascending=[True, False, True]).drop_duplicates("g")
    assert (mode[best["g"]] == best["v"]).all() and (count[best["g"]] == best["count"]).all()
    small_mode, small_count = _group_mode(groups % 50, values % 7, 50)  # the table path
    small = pd.DataFrame({"g": groups % 50, "v": values % 7}).value_counts().reset_index()
    small = small.sort_values(["g", "count", "v"], ascending=[True, False, True]).drop_duplicates("g")
    assert (small_mode[small["g"]] == small["v"]).all() and (small_count[small["g"]] == small["count"]).all()


# --------------------------------------------------------------------------------------------------------
# Ticks
# --------------------------------------------------------------------------------------------------------


def assert_covers(grid: TickGrid, ds: pd.DatetimeIndex) -> None:
    k = grid.tick_of(ds)
    assert (k >= 0).all()
    assert k.min() == 0 and k.max() == len(grid) - 1  # no empty tick at either end
    starts, ends = grid.boundaries[k], grid.boundaries[k + 1]
    assert ((starts <= ds) & (ds < ends)).all()


def test_daily_ticks_start_at_midnight_and_cover_the_data():
    ds = pd.date_range("2024-01-03 05:00", "2024-01-09 17:00", freq="h")
    grid = make_tick_grid(pd.DataFrame({"ds": ds}), "1D", freq="h")
    assert (grid.boundaries == grid.boundaries.normalize()).all()
    assert len(grid) == 7 and grid.bounds(0)[0] == pd.Timestamp("2024-01-03")
    assert_covers(grid, ds)
    expected = ((ds.normalize() - pd.Timestamp("2024-01-03")) // pd.Timedelta(days=1)).to_numpy()
    assert (grid.tick_of(ds) == expected).all()


def test_weekly_ticks_start_on_monday():
    ds = pd.date_range("2024-01-03", "2024-03-20", freq="D")  # starts on a Wednesday
    for tick in ("7D", "W-SUN", "28D"):
        grid = make_tick_grid(ds, tick, freq="D")
        assert (grid.boundaries.day_of_week == 0).all(), tick
        assert_covers(grid, ds)
    assert (make_tick_grid(ds, "W-WED", freq="D").boundaries.day_of_week == 3).all()


def test_month_quarter_and_year_ticks_follow_the_calendar():
    months = pd.date_range("1982-04-01", "1990-02-01", freq="MS")
    for tick, first_months in (("12MS", {1}), ("YS", {1}), ("QS", {1, 4, 7, 10}), ("YS-JUL", {7}),
                               ("YE-JUN", {7}), ("MS", set(range(1, 13)))):
        grid = make_tick_grid(months, tick, freq="MS")
        assert set(grid.boundaries.month) <= first_months and (grid.boundaries.day == 1).all(), tick
        assert_covers(grid, months)
    quarter_ends = pd.date_range("2000-03-31", periods=20, freq="QE")
    grid = make_tick_grid(quarter_ends, Frequency("QE").default_tick(), freq="QE")
    assert (grid.boundaries.month == 1).all() and (grid.boundaries.day == 1).all()
    assert np.bincount(grid.tick_of(quarter_ends)).tolist() == [4] * 5


def test_tick_grid_does_not_move_when_the_data_grows():
    early = make_tick_grid(pd.date_range("2024-01-10", periods=40, freq="D"), "28D", freq="D")
    later = make_tick_grid(pd.date_range("2023-11-02", periods=200, freq="D"), "28D", freq="D")
    assert set(early.boundaries) <= set(later.boundaries)


def test_tick_grid_rejects_ticks_that_do_not_fit_the_frequency():
    ds = pd.date_range("2024-01-01", periods=50, freq="h")
    with pytest.raises(ValueError, match="whole number"):
        make_tick_grid(ds, "90min", freq="h")
    with pytest.raises(ValueError, match="month-based"):
        make_tick_grid(pd.date_range("2024-01-01", periods=5, freq="MS"), "7D", freq="MS")
    with pytest.raises(ValueError, match="not a pandas offset alias"):
        make_tick_grid(ds, "a week", freq="h")
    with pytest.raises(ValueError, match="positive"):
        make_tick_grid(ds, "-1D", freq="h")


def test_tick_grid_accessors():
    grid = make_tick_grid(pd.date_range("2024-01-01", periods=72, freq="h"), "1D", freq="h")
    assert len(grid) == 3 and len(grid.starts) == 3
    assert grid.bounds(-1) == (pd.Timestamp("2024-01-03"), pd.Timestamp("2024-01-04"))
    assert grid.tick_of(pd.Timestamp("2023-12-31")).tolist() == [-1]
    assert grid.tick_of(pd.Timestamp("2024-01-04")).tolist() == [-1]  # the last boundary is exclusive
    with pytest.raises(IndexError):
        grid.bounds(3)


# --------------------------------------------------------------------------------------------------------
# The project's boundary (validate with a FleetContext) and chunked reading
# --------------------------------------------------------------------------------------------------------


def test_a_csv_read_in_chunks_gives_the_frame_and_findings_of_one_read(tmp_path, monkeypatch):
    import mlma.data as data

    frame = panel({"NA": hours("2024-01-01", 60), "007": hours("2024-01-01", 60), "z": hours("2024-01-02", 30)})
    text = frame.assign(ds=frame["ds"].dt.strftime("%Y-%m-%d %H:%M"), label="x").astype({"y": object})
    text.loc[7, "y"], text.loc[70, "ds"] = "oops", "never"       # bad values in different chunks
    path = tmp_path / "f.csv"
    text.to_csv(path, index=False)
    whole = validate(read_frame(path), on_bad_rows="drop")
    monkeypatch.setattr(data, "CSV_CHUNK_ROWS", 11)
    chunked_raw = read_frame(path)
    assert isinstance(chunked_raw["unique_id"].dtype, pd.CategoricalDtype)
    chunked = validate(chunked_raw, on_bad_rows="drop")
    pd.testing.assert_frame_equal(whole.frame, chunked.frame)
    assert str(whole.report) == str(chunked.report)
    assert "y='oops'" in " ".join(chunked.report.by_code("non-finite-target")[0].examples)


def test_per_stream_statistics_by_blocks_equal_the_whole_computation(monkeypatch):
    import mlma.data as data

    rng = np.random.default_rng(4)
    streams = {f"s{i}": pd.date_range("2024-01-01", periods=int(rng.integers(2, 50)),
                                      freq=str(rng.choice(["h", "D", "W-WED", "MS"]))) for i in range(40)}
    mixed = panel(streams)
    hourly = panel({f"h{i}": hours(f"2024-01-01 00:{15 * (i % 4):02d}", int(rng.integers(2, 60))) for i in range(40)})
    hourly.loc[rng.choice(len(hourly), 20, replace=False), "ds"] += pd.Timedelta("7min")     # off the grid

    def run(frame):
        try:
            checked = validate(frame, on_bad_rows="drop")
        except DataError as exc:
            return str(exc.report), None
        return str(checked.report), checked.frame

    before = [run(mixed), run(hourly)]
    monkeypatch.setattr(data, "_BLOCK_ROWS", 37)
    after = [run(mixed), run(hourly)]
    assert [b[0] for b in before] == [a[0] for a in after] and "off-grid" in after[1][0]
    pd.testing.assert_frame_equal(before[1][1], after[1][1])


def test_timestamps_on_the_project_grid():
    from mlma.data import on_tick_grid

    assert on_tick_grid(pd.to_datetime(["2024-01-01 10:00", "2024-01-01 10:30"]), "h", "1D").tolist() == [True, False]
    # W-SUN data on Sundays at midnight; the 4-week tick starts on a Monday.
    assert on_tick_grid(pd.to_datetime(["2024-01-07 00:00", "2024-01-08 00:00", "2024-01-07 12:00"]), "W-SUN",
                        "28D").tolist() == [True, False, False]
    assert on_tick_grid(pd.to_datetime(["2024-03-31", "2024-03-30"]), "ME", "12MS").tolist() == [True, False]
    assert on_tick_grid(pd.to_datetime(["2024-04-01", "2024-05-01"]), "QS", "YS").tolist() == [True, False]


def test_ingest_limits_are_checked_early():
    from mlma.data import IngestLimits

    for bad in ({"max_ahead_ticks": -1}, {"max_ahead_ticks": 1.5}, {"max_future": "soon"},
                {"max_future": "-1D"}, {"value_range_factor": float("inf")}, {"max_abs_value": 0},
                {"max_abs_value": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            IngestLimits(**bad)
    assert IngestLimits(max_future=None).max_future is None


def test_rows_are_checked_against_the_project_and_named():
    from mlma.data import FleetContext, IngestLimits

    frame = panel({"a": hours("2024-01-01", 48), "b": hours("2024-01-01", 48)}, seed=2)
    frame["ds"] = frame["ds"].astype(str)
    frame.loc[3, "y"] = 1e308                                # beyond max_abs_value
    frame.loc[50, "y"] = 1e5                                 # far outside b's stored range 5..15
    frame.loc[60, "ds"] = "2024-01-30 00:00:00"              # beyond the project's reach
    frame.loc[61, "ds"] = "2200-01-01 00:00:00"              # in the future
    frame.loc[62, "ds"] = "2024-01-02 14:30:00"              # off the hourly grid
    ranges = pd.DataFrame({"lo": [5.0], "hi": [15.0]}, index=pd.Index(["b"], name="unique_id"))
    context = FleetContext(freq=Frequency("h"), tick="1D", front=pd.Timestamp("2024-01-02 23:00"), ranges=ranges,
                           now=pd.Timestamp("2024-06-01"), limits=IngestLimits(max_ahead_ticks=3))
    checked = validate(frame, on_bad_rows="drop", context=context)
    rows = sorted((f.code, f.unique_id, f.column, f.rows.tolist()) for f in checked.report.findings
                  if f.severity == "dropped")
    assert rows == [("ahead-of-fleet", "b", "ds", [60]), ("future-timestamp", "b", "ds", [61]),
                    ("off-grid", "b", "ds", [62]), ("out-of-range", "a", "y", [3]), ("out-of-range", "b", "y", [50])]
    assert len(checked.frame) == len(frame) - 5
    with pytest.raises(DataError, match="line|row 50") as raised:
        validate(frame, context=context)
    assert "5 problems" in str(raised.value)


def test_a_new_streams_range_comes_from_the_middle_of_its_values():
    from mlma.data import FleetContext

    frame = panel({"new": hours("2024-01-01", 48)}, seed=3)
    frame.loc[10, "y"] = 10 * 5000.0                          # a unit error in a stream with no history
    checked = validate(frame, on_bad_rows="drop", context=FleetContext(now=pd.Timestamp("2025-01-01")))
    assert checked.report.by_code("out-of-range")[0].rows.tolist() == [10]
    zero = panel({"z": hours("2024-01-01", 48)}).assign(y=0.0)
    zero.loc[5, "y"] = 7.0                                    # all-zero history has no scale: not judged
    assert validate(zero, on_bad_rows="drop", context=FleetContext()).report.by_code("out-of-range") == ()


def test_naive_and_offset_timestamps_in_one_file_are_refused_in_both_modes():
    frame = pd.DataFrame({"unique_id": "a", "ds": ["2024-01-01 00:00", "2024-01-01 02:00+01:00", "2024-01-01 02:00"],
                          "y": [1.0, 2.0, 3.0]})
    for mode in ("raise", "drop"):
        with pytest.raises(DataError, match=r"mixes 2 timestamps without a time zone \(rows 0, 2.*row 1"):
            validate(frame, on_bad_rows=mode)
    offsets = frame.assign(ds=["2024-01-01 00:00Z", "2024-01-01 02:00+01:00", "2024-01-01 02:00Z"])
    assert validate(offsets, min_length=1).report.codes[0] == "timezone-converted"


def test_one_row_per_stream_leaves_the_frequency_pending_in_a_project():
    from mlma.data import FleetContext

    frame = pd.DataFrame({"unique_id": ["a", "b"], "ds": ["2024-01-01", "2024-01-01"], "y": [1.0, 2.0]})
    with pytest.raises(DataError, match="single row; give it, e.g. .h. or .D. \\(`--freq` of `mlma backtest`"):
        validate(frame)
    checked = validate(frame, context=FleetContext())
    assert checked.freq is None and checked.report.codes == ("frequency-pending",) and len(checked.frame) == 2


@pytest.mark.parametrize("kind", ["cp1252", "cp1252-gzip", "utf-16", "utf-16-gzip"])
def test_a_file_that_is_not_utf8_is_refused_naming_its_line_and_what_it_likely_is(tmp_path, kind):
    """A spreadsheet's default export (a Windows code page, or UTF-16) stopped ingest with Python's bare
    "'utf-8' codec can't decode byte 0xfc in position 1", naming neither the file nor the line."""
    import gzip

    text = "unique_id,ds,y\nz1,2024-01-01 00:00,1\nZürich,2024-01-01 00:00,2\n"
    path = tmp_path / ("orders.csv.gz" if kind.endswith("gzip") else "orders.csv")
    data = text.encode("utf-16") if kind.startswith("utf-16") else text.encode("cp1252")
    path.write_bytes(gzip.compress(data) if kind.endswith("gzip") else data)
    with pytest.raises(DataError) as info:
        read_frame(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line ") and "not UTF-8" in message and "nothing was written" in message
    if kind.startswith("utf-16"):
        assert "line 1 is" in message and "UTF-16 byte-order mark" in message and "iconv -f utf-16" in message
    else:
        assert "line 3 is" in message and "cp1252" in message and info.value.rows.tolist() == [3]


def test_a_file_whose_every_y_has_a_decimal_comma_is_refused_saying_so(tmp_path):
    """The whole file's rows dropped: the error (often all a person reads) said only "no usable rows left";
    it names the reason that took the most rows, and a decimal comma as such."""
    path = tmp_path / "orders.csv"
    path.write_text('unique_id,ds,y\nz1,2024-01-01 00:00,"1,5"\nz1,2024-01-01 01:00,"2,25"\nz1,2024-01-01 02:00,x\n')
    with pytest.raises(DataError) as info:
        validate(read_frame(path), on_bad_rows="drop")
    message = str(info.value)
    assert "no usable rows left; most rows (3) were dropped as non-finite-target" in message
    assert "decimal comma, e.g. '1,5'" in message
    fine = tmp_path / "fine.csv"
    fine.write_text("unique_id,ds,y\nz1,2024-01-01 00:00,x\nz1,2024-01-01 01:00,2\nz1,2024-01-01 02:00,3\n")
    found = validate(read_frame(fine), on_bad_rows="drop").report.findings
    assert "decimal comma" not in next(f for f in found if f.code == "non-finite-target").message


@pytest.mark.parametrize("cells, said", [
    (('"1,010.35"', '"2,500.00"'), "thousands separators, e.g. '1,010.35'"),
    (('"1,234,567"', '"2,000,001"'), "thousands separators, e.g. '1,010.35'"),
    (('"1.010,35"', '"2.500,10"'), "thousands points and a decimal comma, e.g. '1.010,35'"),
    (('"1,234"', '"2,500"'), "written with a comma, e.g. '1,234': a thousands separator or a decimal comma"),
])
def test_a_file_whose_y_has_thousands_separators_is_refused_saying_so(tmp_path, cells, said):
    """"1,010.35" was refused as "not a number" with no hint (only "1,5" got one, as a decimal comma)."""
    path = tmp_path / "orders.csv"
    path.write_text(f"unique_id,ds,y\nz1,2024-01-01 00:00,{cells[0]}\nz1,2024-01-01 01:00,{cells[1]}\n")
    with pytest.raises(DataError) as info:
        validate(read_frame(path), on_bad_rows="drop")
    assert said in str(info.value) and "decimal comma, e.g. '1,5'" not in str(info.value), str(info.value)


def test_an_empty_time_column_is_said_to_be_empty(tmp_path):
    """A ds column of empty cells reads as floats: "column 'ds' holds numbers (float64), not timestamps"."""
    path = tmp_path / "empty-ds.csv"
    path.write_text("unique_id,ds,y\nz1,,1\nz1,,2\n")
    with pytest.raises(DataError, match="column 'ds' is empty: no row has a timestamp"):
        validate(read_frame(path), on_bad_rows="drop")
    future = tmp_path / "future.csv"
    future.write_text("unique_id,ds,temperature\nz1,,1\n")
    with pytest.raises(DataError, match="column 'ds' is empty: no row has a timestamp; give ISO dates"):
        read_future_drivers(future)


def test_whole_days_written_at_local_midnight_with_their_offset_are_said_to_be_so(tmp_path):
    """Daily data stamped at local midnight with a UTC offset (Berlin: +01:00, +02:00 in summer) is read as
    the instants it names, 23:00 and 22:00 UTC the day before: one season falls off the daily grid. The rows
    dropped say why and what to write instead (they said only "off the stream's D grid")."""
    days = pd.date_range("2024-01-01", "2024-05-31", freq="D", tz="Europe/Berlin")
    path = tmp_path / "daily.csv"
    pd.DataFrame({"unique_id": "z1", "ds": [t.isoformat() for t in days], "y": np.arange(len(days)) % 5}
                 ).to_csv(path, index=False)
    checked = validate(read_frame(path), on_bad_rows="drop")
    (off,) = checked.report.by_code("off-grid")
    assert off.n_rows == 61 and "dates written at local midnight with their offset land off their day" in off.message
    hourly = pd.date_range("2024-03-30", "2024-04-01", freq="h", tz="Europe/Berlin")
    path.write_text(pd.DataFrame({"unique_id": "z1", "ds": [t.isoformat() for t in hourly], "y": 1.0})
                    .to_csv(index=False))
    assert not validate(read_frame(path), on_bad_rows="drop").report.by_code("off-grid")


def project_context(freq: str, tick: str) -> "FleetContext":
    from mlma.data import FleetContext

    return FleetContext(freq=Frequency(freq), tick=tick, now=pd.Timestamp("2030-01-01"))


def test_a_coarser_feed_with_a_stray_single_step_is_still_another_frequency():
    """Daily totals in an hourly project with one row stamped an hour late, weekly data in a daily project that
    moved its day once: a stray single step does not make a stream the project's frequency with gaps."""
    days = pd.date_range("2024-01-01", periods=30, freq="D")
    daily = {f"z{i}": days.append(pd.DatetimeIndex([days[3] + pd.Timedelta(hours=1)])) for i in range(4)}
    with pytest.raises(DataError, match="look D"):
        validate(panel(daily), on_bad_rows="drop", context=project_context("h", "1D"))
    weeks = pd.date_range("2024-01-01", periods=12, freq="7D")
    weekly = {f"w{i}": weeks.append(pd.DatetimeIndex([weeks[5] - pd.Timedelta(days=1)])) for i in range(4)}
    with pytest.raises(DataError, match="look W-MON"):
        validate(panel(weekly), on_bad_rows="drop", context=project_context("D", "7D"))
    # A sensor that missed most readings but reports at the step now and then is hourly with gaps.
    sensor = hours("2024-01-01", 48)[[h % 2 == 0 or h % 8 == 7 for h in range(48)]]
    checked = validate(panel({"s": sensor, "full": hours("2024-01-01", 48)}), on_bad_rows="drop",
                       context=project_context("h", "1D"))
    assert checked.report.by_code("stream-frequency") == () and len(checked.frame) == len(sensor) + 48


def test_before_the_clock_is_fixed_streams_that_disagree_refuse_the_file_in_drop_mode():
    """Without the project's frequency the file's majority is no clock: a complete hourly stream beside two
    gapped ones must not be dropped as 'another frequency' (and fix a 2h clock)."""
    from mlma.data import FleetContext

    gapped = hours("2024-01-01", 48)[[h % 2 == 0 or h % 8 == 7 for h in range(48)]]
    frame = panel({"full": hours("2024-01-01", 48), "gap1": gapped, "gap2": gapped})
    with pytest.raises(DataError, match="'full' looks h"):
        validate(frame, on_bad_rows="drop", context=FleetContext(now=pd.Timestamp("2030-01-01")))
    # With the clock fixed, the gapped streams are hourly with gaps and the file is taken whole.
    checked = validate(frame, on_bad_rows="drop", context=project_context("h", "1D"))
    assert len(checked.frame) == len(frame) and checked.report.by_code("stream-frequency") == ()


def test_a_minority_of_streams_spaced_otherwise_lose_their_rows_counting_single_row_streams():
    frame = panel({"odd": hours("2024-01-01", 48)[::2], "full": hours("2024-01-01", 48),
                   **{f"one{i}": hours("2024-01-01", 1) for i in range(3)}})
    checked = validate(frame, on_bad_rows="drop", context=project_context("h", "1D"))
    (finding,) = checked.report.by_code("stream-frequency")
    assert finding.streams == ("odd",) and finding.n_rows == 24 and "'odd' looks 2h" in finding.message
    assert sorted(checked.frame["unique_id"].unique()) == ["full", "one0", "one1", "one2"]
    with pytest.raises(DataError, match="'odd' looks 2h"):
        validate(frame, on_bad_rows="raise", context=project_context("h", "1D"))


def test_a_time_column_that_lost_its_time_of_day_is_refused_in_both_modes():
    frame = panel({"a": hours("2024-01-01", 48), "b": hours("2024-01-01", 48)})
    frame["ds"] = frame["ds"].dt.normalize()
    for mode in ("drop", "raise"):
        with pytest.raises(DataError, match=r"most rows \(92 of 96\).*a date without a time of day"):
            validate(frame, on_bad_rows=mode)
    # A feed's few corrections still keep their last value in drop mode.
    fixed = pd.concat([panel({"a": hours("2024-01-01", 48)}), panel({"a": hours("2024-01-01", 3)}, seed=1)])
    checked = validate(fixed.reset_index(drop=True), on_bad_rows="drop")
    assert len(checked.frame) == 48 and checked.report.by_code("duplicate-conflict")[0].n_rows == 3


def test_nested_and_boolean_columns_are_named_not_crashed_on(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    ds = hours("2024-01-01", 48)
    base = {"unique_id": ["a"] * 48, "ds": list(ds)}
    pq.write_table(pa.table({**base, "y": [1.0] * 48, "meta": [{"k": 1}] * 48}), tmp_path / "struct.parquet")
    checked = validate(read_frame(tmp_path / "struct.parquet"))
    (dropped,) = checked.report.by_code("columns-dropped")
    assert dropped.column == "meta" and "{'k': 1}" in dropped.message and list(checked.frame.columns) == [
        "unique_id", "ds", "y"]
    pq.write_table(pa.table({**base, "y": [[1.0]] * 48}), tmp_path / "list.parquet")
    with pytest.raises(DataError, match=r"list.parquet: column 'y' \(target_col\) holds nested values"):
        read_frame(tmp_path / "list.parquet")
    pq.write_table(pa.table({**base, "y": [True, False] * 24}), tmp_path / "bool.parquet")
    with pytest.raises(DataError, match=r"bool.parquet: column 'y' \(target_col\) holds true/false values"):
        read_frame(tmp_path / "bool.parquet")
    with pytest.raises(DataError, match="column 'y' holds true/false values"):
        validate(pd.DataFrame({**base, "y": [True] * 48}))


def test_a_future_driver_file_with_only_a_header_is_refused(tmp_path):
    from mlma.data import read_future_drivers

    (tmp_path / "h.csv").write_text("unique_id,ds,temperature\n")
    with pytest.raises(DataError, match="h.csv: the file has no rows"):
        read_future_drivers(tmp_path / "h.csv")


def test_now_and_today_in_a_time_column_are_bad_rows_not_the_wall_clock():
    frame = pd.DataFrame({"unique_id": "a", "ds": [str(t) for t in hours("2024-01-01", 47)] + ["now"], "y": 1.0})
    checked = validate(frame.assign(ds=frame["ds"].where(frame.index != 3, " Today ")), on_bad_rows="drop")
    (bad,) = checked.report.by_code("unparsable-date")
    assert bad.n_rows == 2 and len(checked.frame) == 46
    assert checked.frame["ds"].max() == pd.Timestamp("2024-01-02 22:00")


def test_a_future_driver_too_large_to_read_is_quoted_as_written(tmp_path):
    from mlma.data import read_future_drivers

    (tmp_path / "f.csv").write_text("unique_id,ds,rain\na,2025-01-01,1.5\na,2025-01-02,1e400\n")
    # Read as inf, or left as text by an older pandas: either way the message quotes the cell as written.
    with pytest.raises(DataError, match=r"f.csv: driver column 'rain' has 1 (infinite|non-numeric) value\(s\), "
                                        r"first '1e400' on line/row 3"):
        read_future_drivers(tmp_path / "f.csv")
