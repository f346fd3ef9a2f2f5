"""A simulated last-mile delivery platform with ground-truth events.

The platform has cities, each with delivery zones, and every zone is one stream of hourly order counts.
Demand follows a delivery rhythm (quiet nights, lunch and dinner peaks, a different weekend), grows slowly,
and is hit by the things that make fleets of forecasting models go stale: zone level shifts and drifts,
changed daily profiles, city-wide holidays, storms and marketing campaigns, zones that open or close
mid-run, and data outages. Every event is written down beside the data, labelled as a *relevant* change
(a model should adapt) or not, and as a *data fault* or real demand, so that a monitoring policy can be
scored against the truth.

The counts are negative binomial (a gamma-Poisson mixture): for zone ``z`` at hour ``t``

.. math::

    y_{z,t} \\sim \\operatorname{NB}(\\mu_{z,t}, k_z), \\qquad
    \\mu_{z,t} = s_z \\, d_z(t) \\, w_{c(z)}(t) \\, e^{g_z t} \\prod_e m_{e,z}(t),

with zone scale ``s`` (log-normal over zones), daily profile ``d`` (weekday and weekend shapes, varying a
little per city and zone), weekly level ``w`` per city, growth rate ``g`` and the multipliers ``m`` of the
events. The variance is ``mu + mu**2 / k`` with a dispersion ``k`` per zone, so the noise is wider than
Poisson; see Cameron & Trivedi (2013), *Regression Analysis of Count Data*, ch. 3, for the model.

Generation is vectorised over zones: the zones x hours arrays are built for one chunk of zones at a
time, so that memory stays bounded by the size of the returned frame.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "EVENT_KINDS",
    "Simulation",
    "read_events",
    "read_simulation",
    "read_streams",
    "simulate_platform",
    "write_simulation",
]

#: Labels of every event kind: whether a forecasting model should adapt to it (``relevant``), whether it
#: is a fault of the data rather than of demand (``is_data_fault``), and whether it lasts to the end of
#: the run (``permanent``; ``end`` then marks when the new regime is fully in place).
EVENT_KINDS: dict[str, dict[str, bool]] = {
    "level_shift": {"relevant": True, "is_data_fault": False, "permanent": True},
    "drift": {"relevant": True, "is_data_fault": False, "permanent": True},
    "profile_change": {"relevant": True, "is_data_fault": False, "permanent": True},
    "campaign": {"relevant": True, "is_data_fault": False, "permanent": False},
    "holiday": {"relevant": False, "is_data_fault": False, "permanent": False},
    "storm": {"relevant": False, "is_data_fault": False, "permanent": False},
    "outage_zeros": {"relevant": False, "is_data_fault": True, "permanent": False},
    "outage_missing": {"relevant": False, "is_data_fault": True, "permanent": False},
    "launch": {"relevant": False, "is_data_fault": False, "permanent": True},
    "closure": {"relevant": False, "is_data_fault": False, "permanent": True},
}

_HOUR_NS = 3_600_000_000_000
_HOURS_PER_YEAR = 24 * 365.25
_MONTH_HOURS = 30 * 24

# Expected events per zone (or per city) per 30 days of eligible time, at event_rate=1.
_ZONE_RATES = {"level_shift": 0.10, "drift": 0.05, "profile_change": 0.04}
_ZONE_OUTAGE_RATES = {"outage_zeros": 0.04, "outage_missing": 0.04}
_CITY_RATES = {"holiday": 0.3, "storm": 0.8, "campaign": 0.3}
# What the announced campaign driver carries (simulate_platform's campaign_driver).
_CAMPAIGN_DRIVERS = ("planned", "flag")
_CITY_OUTAGE_RATE = 0.05
_LAUNCH_RATE = 0.03
_CLOSURE_RATE = 0.015

# Monday..Sunday level; Friday and Saturday are the busiest delivery days.
_WEEKLY = np.array([0.94, 0.95, 0.97, 1.00, 1.10, 1.12, 1.02])
_WEEKLY = _WEEKLY / _WEEKLY.mean()

# Cells (zones x hours) per chunk: bounds the transient arrays to a few tens of MB.
_CHUNK_CELLS = 1_000_000

_PROFILE_KEYS = ("lunch_hour", "lunch_amp", "dinner_hour", "dinner_amp", "late_amp")

_EVENT_DTYPES = {
    "event_id": "int64",
    "kind": "str",
    "scope": "str",
    "city": "str",
    "unique_id": "str",
    "start": "datetime64[ns]",
    "end": "datetime64[ns]",
    "magnitude": "float64",
    "is_data_fault": "bool",
    "relevant": "bool",
    "permanent": "bool",
    "description": "str",
}
_STREAM_DTYPES = {
    "unique_id": "str",
    "city": "str",
    "zone": "str",
    "scale": "float64",
    "dispersion": "float64",
    "growth": "float64",
    "launched": "datetime64[ns]",
    "closed": "datetime64[ns]",
}


@dataclass(repr=False)
class Simulation:
    """A simulated platform: the observations, the streams and the ground-truth events.

    Attributes
    ----------
    data
        Long frame ``unique_id, ds, y`` (str, datetime64[ns], float64) of hourly order counts, sorted by
        ``unique_id`` then ``ds``. Rows are absent where a zone is not live (before its launch, from its
        closure on) and during ``outage_missing`` events. With ``expected=True`` a fourth column
        ``expected`` holds the true mean of each count.
    streams
        One row per zone: ``unique_id, city, zone, scale, dispersion, growth, launched, closed``.
        ``scale`` is the zone's mean orders per hour at the start (before growth and events),
        ``dispersion`` the negative binomial size ``k`` (variance ``mu + mu**2 / k``), ``growth`` the
        trend as a continuous rate per year (the mean is multiplied by ``exp(growth * years)``),
        ``launched`` / ``closed`` the first hour with and the first hour without rows, or NaT if the zone
        is live from the start / to the end.
    events
        One row per (event, affected stream): ``event_id, kind, scope, city, unique_id, start, end,
        magnitude, is_data_fault, relevant, permanent, description``; see :data:`EVENT_KINDS`.
    """

    data: pd.DataFrame
    streams: pd.DataFrame
    events: pd.DataFrame

    def __repr__(self) -> str:
        n_events = self.events["event_id"].nunique() if len(self.events) else 0
        return (f"Simulation(streams={len(self.streams):,}, cities={self.streams['city'].nunique():,}, "
                f"rows={len(self.data):,}, events={n_events:,})")

    def summary(self) -> str:
        """A few lines for people: size, time span and events per kind.

        Examples
        --------
        >>> sim = simulate_platform(4, 3, seed=1, event_rate=0)
        >>> print(sim.summary())
        4 zones in 1 city, 288 hourly rows from 2025-01-06 00:00 to 2025-01-08 23:00
        no events
        """
        lines = []
        n_cities = self.streams["city"].nunique()
        if len(self.data):
            span = f" from {self.data['ds'].min():%Y-%m-%d %H:%M} to {self.data['ds'].max():%Y-%m-%d %H:%M}"
        else:
            span = ""
        lines.append(f"{len(self.streams):,} zones in {n_cities:,} {'city' if n_cities == 1 else 'cities'}, "
                     f"{len(self.data):,} hourly rows{span}")
        if not len(self.events):
            lines.append("no events")
            return "\n".join(lines)
        per_kind = self.events.groupby("kind", sort=False).agg(
            events=("event_id", "nunique"), streams=("unique_id", "size"),
            relevant=("relevant", "first"), fault=("is_data_fault", "first"))
        for kind in EVENT_KINDS:
            if kind not in per_kind.index:
                continue
            row = per_kind.loc[kind]
            label = "relevant" if row["relevant"] else ("data fault" if row["fault"] else "not relevant")
            lines.append(f"{kind:15s} {int(row['events']):>7,} events {int(row['streams']):>9,} stream rows"
                         f"  ({label})")
        return "\n".join(lines)


@dataclass
class _Event:
    kind: str
    city: int
    zones: np.ndarray  # affected zone indices
    start_h: int
    end_h: int  # exclusive end of the window, or the end of the transition for permanent kinds
    magnitude: float
    description: str
    scope: str
    params: dict = field(default_factory=dict)


@dataclass
class _Platform:
    start: pd.Timestamp
    hours: int
    clean_h: int
    city_of_zone: np.ndarray
    city_bounds: np.ndarray  # zones of city c are city_bounds[c]:city_bounds[c + 1]
    scale: np.ndarray
    dispersion: np.ndarray
    growth: np.ndarray
    profile: dict[str, np.ndarray]
    norm_wd: np.ndarray
    norm_we: np.ndarray
    weekly: np.ndarray  # cities x 7
    launch_h: np.ndarray  # first live hour (0 if live from the start)
    close_h: np.ndarray  # first hour after closure (hours if never closed)
    city_ids: np.ndarray
    zone_ids: np.ndarray
    ids: np.ndarray
    how: np.ndarray  # hour of the week (Monday 00:00 = 0) of every simulated hour
    midnights: np.ndarray  # indices of the simulated hours that start a calendar day
    weather: dict[str, np.ndarray] | None = None  # "temperature", "rain": cities x hours, with drivers=True

    @property
    def n_zones(self) -> int:
        return len(self.scale)

    @property
    def n_cities(self) -> int:
        return len(self.city_bounds) - 1


MAX_DAYS = 3_660
"""Longest run :func:`simulate_platform` simulates."""

MAX_ROWS = 250_000_000
"""Most hourly rows (zones x days x 24) :func:`simulate_platform` makes: 100,000,000 zones ended in a MemoryError
traceback after minutes."""


def simulate_platform(n_zones: int, days: int, seed: int = 0, *, n_cities: int | None = None,
                      start: str | pd.Timestamp = "2025-01-06", event_rate: float = 1.0, outages: bool = True,
                      clean_days: float | None = None, expected: bool = False,
                      drivers: bool = False, campaign_rate: float = 1.0, campaign_driver: str = "planned",
                      campaign_plan_sd: float = 0.2) -> Simulation:
    """Simulate hourly orders of a delivery platform's zones, with ground-truth events.

    Parameters
    ----------
    n_zones
        Number of delivery zones (streams), at least 1.
    days
        Length of the run in days, 1 to :data:`MAX_DAYS` (ten years); the data are hourly.
    seed
        Seed of the random generator (non-negative). The same arguments give identical frames.
    n_cities
        Number of cities the zones are spread over, unequally (a few big cities, many small ones).
        Default ``max(1, round(sqrt(n_zones) / 2))``; at most ``n_zones``.
    start
        First hour of the run (anything :class:`pandas.Timestamp` parses, tz-naive, on the hour).
    event_rate
        Scales the expected number of events of every kind, launches and closures included; 0 gives
        clean data. At 1 a zone sees about 0.2 relevant zone-level changes per 30 days and a city
        about 1.4 city-wide events per 30 days.
    outages
        Whether to simulate data outages (zones reporting zeros or missing rows). Outages use a random
        stream of their own, so switching them off leaves everything else unchanged.
    clean_days
        Length of the clean training window at the start, in days, in which no event starts. A zone
        launched mid-run also gets this long before its own zone-level events (city-wide events still
        reach it). Default ``min(14, days / 2)``.
    expected
        Add a column ``expected`` to ``data``: the true mean of each count (the demand, also during
        ``outage_zeros``). It is ground truth for evaluation (an oracle forecast, the noise floor of a
        loss), not a feature: keep it away from models.
    drivers
        Simulate weather that moves demand and add driver columns to ``data``: ``temperature`` (deg C) and
        ``rain`` (mm in the hour) of the zone's city, and ``campaign``: the announced marketing campaigns
        of the zone's city, by default their planned uplift (see ``campaign_driver``), 0 when none runs.
        Demand is multiplied by ``exp(-0.02 (temperature - 12))``
        (cold days, more orders) and ``1 + 0.1 min(rain, 5)`` (up to +50 % in heavy rain). The weather uses a
        random stream of its own: the events are the same as without drivers, the counts differ by the
        weather's effect. See docs/simulator.md.
    campaign_rate
        Scales the rate of marketing campaigns on top of ``event_rate`` (a platform that runs promotions
        often). Campaigns are drawn last, so the other events stay the same.
    campaign_driver
        What the ``campaign`` driver column announces (with ``drivers=True``): ``"planned"`` (default) the
        sum of the planned relative uplifts of the campaigns running (0.3: +30 % planned; two overlapping
        campaigns add up), ``"flag"`` 1 while any runs (the 0/1 flag of earlier versions). A campaign's
        planned uplift is its realised one, ``magnitude - 1``, times ``exp(campaign_plan_sd x N(0, 1))``,
        rounded to whole percent: a plan, not the answer. Drawn from a random stream of their own, so the
        weather, events and counts are the same either way; only the column differs.
    campaign_plan_sd
        Standard deviation of the log ratio of a campaign's planned to its realised uplift (default 0.2:
        plans within about -18 % / +22 % of the realised uplift two times in three); 0 announces the
        realised uplift exactly.

    Returns
    -------
    Simulation
        ``data``, ``streams`` and ``events``; see :class:`Simulation`.

    Examples
    --------
    >>> sim = simulate_platform(6, 2, seed=7)
    >>> sim
    Simulation(streams=6, cities=1, rows=288, events=0)
    >>> sim.data.dtypes.astype(str).to_dict()
    {'unique_id': 'str', 'ds': 'datetime64[ns]', 'y': 'float64'}
    >>> sim.streams["unique_id"].tolist()[:3]
    ['c00-z00', 'c00-z01', 'c00-z02']
    >>> night = sim.data[sim.data["ds"].dt.hour.between(2, 5)]["y"].mean()
    >>> evening = sim.data[sim.data["ds"].dt.hour.between(18, 21)]["y"].mean()
    >>> bool(night < 0.2 * evening)
    True
    """
    n_zones = _check_int("n_zones", n_zones, minimum=1)
    days = _check_int("days", days, minimum=1, maximum=MAX_DAYS,
                      why=" (ten years: the platform's growth and events are made for weeks to a few years)")
    seed = _check_int("seed", seed, minimum=0)
    if n_zones * days * 24 > MAX_ROWS:
        raise ValueError(f"n_zones x days x 24 hourly rows must be at most {MAX_ROWS:,}, got {n_zones:,} x {days:,} x "
                         f"24 = {n_zones * days * 24:,}: simulate fewer zones or days")
    if n_cities is None:
        n_cities = min(n_zones, max(1, round(math.sqrt(n_zones) / 2)))
    else:
        n_cities = _check_int("n_cities", n_cities, minimum=1)
        if n_cities > n_zones:
            raise ValueError(f"n_cities must be at most n_zones={n_zones} (every city needs a zone), "
                             f"got {n_cities}")
    start_ts = _check_start(start)
    event_rate = _check_float("event_rate", event_rate, minimum=0.0)
    if not isinstance(outages, (bool, np.bool_)):
        raise ValueError(f"outages must be True or False, got {outages!r}")
    if not isinstance(expected, (bool, np.bool_)):
        raise ValueError(f"expected must be True or False, got {expected!r}")
    if not isinstance(drivers, (bool, np.bool_)):
        raise ValueError(f"drivers must be True or False, got {drivers!r}")
    if clean_days is None:
        clean_days = min(14.0, days / 2)
    clean_days = _check_float("clean_days", clean_days, minimum=0.0)
    campaign_rate = _check_float("campaign_rate", campaign_rate, minimum=0.0)
    if campaign_driver not in _CAMPAIGN_DRIVERS:
        raise ValueError(f"campaign_driver must be one of {list(_CAMPAIGN_DRIVERS)}, got {campaign_driver!r}")
    campaign_plan_sd = _check_float("campaign_plan_sd", campaign_plan_sd, minimum=0.0)

    hours = days * 24
    root = np.random.SeedSequence(seed)
    ss_structure, ss_events, ss_outages, ss_noise = root.spawn(4)
    plat = _build_platform(np.random.default_rng(ss_structure), n_zones, n_cities, hours, start_ts,
                           event_rate, min(hours, round(clean_days * 24)))
    events = _sample_events(np.random.default_rng(ss_events), plat, event_rate, campaign_rate)
    if outages:
        events += _sample_outages(np.random.default_rng(ss_outages), plat, event_rate)
    events.sort(key=lambda e: (e.start_h, list(EVENT_KINDS).index(e.kind), e.city, int(e.zones[0])))
    if drivers:
        # A fifth child of the root: the four above, and so every event and the noise, stay as they were.
        plat.weather = _simulate_weather(np.random.default_rng(root.spawn(1)[0]), plat)
        if campaign_driver == "planned":
            # A sixth child: the weather's stream is left as it was.
            _plan_campaigns(np.random.default_rng(root.spawn(1)[0]), events, campaign_plan_sd)
    data = _generate_data(plat, events, ss_noise, bool(expected))
    return Simulation(data=data, streams=_streams_frame(plat), events=_events_frame(plat, events))


# --------------------------------------------------------------------------------------------- validation


def _check_int(name: str, value, *, minimum: int, maximum: int | None = None, why: str = "") -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:,}{why}, got {value:,}")
    return int(value)


def _check_float(name: str, value, *, minimum: float) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value}")
    return float(value)


def _check_start(start) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(start)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"start must be a date or timestamp, got {start!r}") from exc
    if ts is pd.NaT:
        raise ValueError(f"start must be a date or timestamp, got {start!r}")
    if ts.tz is not None:
        raise ValueError(f"start must be tz-naive (the data are tz-naive), got {start!r}")
    if ts != ts.floor("h"):
        raise ValueError(f"start must be on the hour, got {start!r}")
    return ts.as_unit("ns")


# ------------------------------------------------------------------------------------------- structure


def _width(n: int) -> int:
    return max(2, len(str(n - 1)))


def _build_platform(rng: np.random.Generator, n_zones: int, n_cities: int, hours: int,
                    start: pd.Timestamp, event_rate: float, clean_h: int) -> _Platform:
    # Unequal city sizes: Zipf-like weights with noise, in random order so city 0 is not always largest.
    weights = np.arange(1, n_cities + 1) ** -0.9 * rng.lognormal(0.0, 0.3, n_cities)
    weights = rng.permutation(weights)
    sizes = 1 + rng.multinomial(n_zones - n_cities, weights / weights.sum())
    city_bounds = np.concatenate([[0], np.cumsum(sizes)])
    city_of_zone = np.repeat(np.arange(n_cities), sizes)

    city_level = rng.lognormal(0.0, 0.25, n_cities)
    scale = np.clip(rng.lognormal(math.log(6.0), 1.2, n_zones) * city_level[city_of_zone], 0.2, 2000.0)
    dispersion = np.exp(rng.uniform(math.log(15.0), math.log(150.0), n_zones))
    growth = rng.normal(0.10, 0.10, n_zones)

    # Daily rhythm: a city has its own lunch and dinner habits; zones vary a little around them
    # (a business district has a bigger lunch than a residential one).
    city_profile = {
        "lunch_hour": 12.5 + rng.normal(0.0, 0.3, n_cities),
        "lunch_amp": 1.0 * rng.lognormal(0.0, 0.15, n_cities),
        "dinner_hour": 19.5 + rng.normal(0.0, 0.4, n_cities),
        "dinner_amp": 1.5 * rng.lognormal(0.0, 0.15, n_cities),
    }
    profile = {
        "lunch_hour": city_profile["lunch_hour"][city_of_zone] + rng.normal(0.0, 0.15, n_zones),
        "lunch_amp": city_profile["lunch_amp"][city_of_zone] * rng.lognormal(0.0, 0.25, n_zones),
        "dinner_hour": city_profile["dinner_hour"][city_of_zone] + rng.normal(0.0, 0.15, n_zones),
        "dinner_amp": city_profile["dinner_amp"][city_of_zone] * rng.lognormal(0.0, 0.1, n_zones),
        "late_amp": np.zeros(n_zones),
    }
    norm_wd = _daily_profile(profile, weekend=False).mean(axis=1)
    norm_we = _daily_profile(profile, weekend=True).mean(axis=1)
    weekly = _WEEKLY[None, :] * rng.lognormal(0.0, 0.03, (n_cities, 7))

    # Launches and closures happen at midnight, after the clean window.
    first_midnight = (24 - start.hour) % 24
    midnights = np.arange(first_midnight, hours, 24)
    launch_h = np.zeros(n_zones, dtype=np.int64)
    close_h = np.full(n_zones, hours, dtype=np.int64)
    span_months = max(hours - clean_h, 0) / _MONTH_HOURS
    launch_slots = midnights[(midnights >= max(clean_h, 1)) & (midnights <= hours - 24)]
    if len(launch_slots):
        launched = rng.random(n_zones) < -np.expm1(-_LAUNCH_RATE * event_rate * span_months)
        launch_h[launched] = rng.choice(launch_slots, launched.sum())
    closure_slots = midnights[(midnights >= max(clean_h, 24)) & (midnights <= hours - 24)]
    if len(closure_slots):
        closed = rng.random(n_zones) < -np.expm1(-_CLOSURE_RATE * event_rate * span_months)
        close_h[closed] = rng.choice(closure_slots, closed.sum())
        # A zone must live at least two days.
        close_h[close_h < launch_h + 48] = hours

    cw, zw = _width(n_cities), _width(n_zones)
    city_ids = np.array([f"c{c:0{cw}d}" for c in range(n_cities)], dtype=object)
    zone_ids = np.array([f"z{z:0{zw}d}" for z in range(n_zones)], dtype=object)
    ids = np.array([f"{c}-{z}" for c, z in zip(city_ids[city_of_zone], zone_ids)], dtype=object)

    offsets = start.hour + np.arange(hours)
    how = ((start.day_of_week + offsets // 24) % 7) * 24 + offsets % 24
    return _Platform(start, hours, clean_h, city_of_zone, city_bounds, scale, dispersion, growth, profile,
                     norm_wd, norm_we, weekly, launch_h, close_h, city_ids, zone_ids, ids,
                     how, midnights)


# Weather: seasonal and daily temperature cycles with day-to-day anomalies; rain spells from a two-state chain.
_TEMP_MEAN, _TEMP_SEASON, _TEMP_DAY, _TEMP_ANOMALY_SD, _TEMP_ANOMALY_PHI = 11.0, 8.0, 4.0, 3.5, 0.7
_RAIN_START, _RAIN_STOP, _RAIN_MEAN_MM = 0.015, 0.15, 1.5
_TEMP_EFFECT, _TEMP_REF, _RAIN_EFFECT, _RAIN_CAP = -0.02, 12.0, 0.1, 5.0


def _simulate_weather(rng: np.random.Generator, plat: _Platform) -> dict[str, np.ndarray]:
    """Hourly temperature (deg C) and rain (mm) per city (cities x hours)."""
    n_cities, hours = plat.n_cities, plat.hours
    t = plat.start.value / _HOUR_NS + np.arange(hours)  # hours since 1970, for the calendar cycles
    day_of_year = (t / 24.0) % 365.25
    hour_of_day = t % 24
    base = (_TEMP_MEAN + _TEMP_SEASON * np.sin(2 * np.pi * (day_of_year - 110) / 365.25)
            + _TEMP_DAY * np.cos(2 * np.pi * (hour_of_day - 15) / 24))
    n_days = hours // 24 + 2
    shocks = rng.normal(0.0, _TEMP_ANOMALY_SD * math.sqrt(1 - _TEMP_ANOMALY_PHI ** 2), (n_cities, n_days))
    anomaly = np.empty_like(shocks)
    anomaly[:, 0] = rng.normal(0.0, _TEMP_ANOMALY_SD, n_cities)
    for d in range(1, n_days):
        anomaly[:, d] = _TEMP_ANOMALY_PHI * anomaly[:, d - 1] + shocks[:, d]
    # Anomalies change smoothly through the day: linear between the daily values.
    day_pos = np.arange(hours) / 24.0
    lo = np.floor(day_pos).astype(np.int64)
    frac = day_pos - lo
    smooth = anomaly[:, lo] * (1 - frac) + anomaly[:, lo + 1] * frac
    temperature = np.round(base[None, :] + smooth + rng.normal(0.0, 0.5, (n_cities, hours)), 1)
    raining = np.zeros((n_cities, hours), dtype=bool)
    draws = rng.random((n_cities, hours))
    state = draws[:, 0] < _RAIN_START / (_RAIN_START + _RAIN_STOP)
    for h in range(hours):
        state = np.where(state, draws[:, h] >= _RAIN_STOP, draws[:, h] < _RAIN_START)
        raining[:, h] = state
    rain = np.where(raining, np.round(rng.gamma(1.5, _RAIN_MEAN_MM / 1.5, (n_cities, hours)), 1), 0.0)
    return {"temperature": temperature, "rain": rain}


def _weather_multiplier(weather: dict[str, np.ndarray]) -> np.ndarray:
    """Demand multiplier of the weather (cities x hours)."""
    return (np.exp(_TEMP_EFFECT * (weather["temperature"] - _TEMP_REF))
            * (1 + _RAIN_EFFECT * np.minimum(weather["rain"], _RAIN_CAP)))


def _bump(center: np.ndarray, width: float) -> np.ndarray:
    """Circular Gaussian bump over the 24 hour centres, one row per centre."""
    x = np.arange(24) + 0.5
    d = (x[None, :] - np.asarray(center, dtype=float)[:, None] + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width) ** 2)


def _daily_profile(p: dict[str, np.ndarray], *, weekend: bool) -> np.ndarray:
    """Un-normalised orders by hour of day (rows: zones): near zero at night, lunch and dinner peaks."""
    x = np.arange(24) + 0.5
    opens = 11.0 if weekend else 10.0
    plateau = 0.35 / (1 + np.exp(-(x - opens) / 0.8)) / (1 + np.exp(-(23.5 - x) / 0.8))
    lunch_hour = p["lunch_hour"] + (0.75 if weekend else 0.0)
    lunch_amp = p["lunch_amp"] * (1.35 if weekend else 1.0)
    return (0.03 + plateau[None, :]
            + lunch_amp[:, None] * _bump(lunch_hour, 1.2)
            + p["dinner_amp"][:, None] * _bump(p["dinner_hour"], 1.6)
            + p["late_amp"][:, None] * _bump(np.full(len(lunch_hour), 23.5), 1.0))


def _week_table(p: dict[str, np.ndarray], norm_wd: np.ndarray, norm_we: np.ndarray,
                weekly: np.ndarray) -> np.ndarray:
    """Mean multiplier by hour of the week (zones x 168), average about 1 for the base profile."""
    wd = _daily_profile(p, weekend=False) / norm_wd[:, None]
    we = _daily_profile(p, weekend=True) / norm_we[:, None]
    days = [we if d >= 5 else wd for d in range(7)]
    return np.concatenate([days[d] * weekly[:, d:d + 1] for d in range(7)], axis=1)


# ---------------------------------------------------------------------------------------------- events


def _factor(rng: np.random.Generator, n: int, low: float, high: float, p_up: float = 0.5) -> np.ndarray:
    """Multiplicative factors: up by U(low, high) or down by its inverse."""
    f = rng.uniform(low, high, n)
    return np.where(rng.random(n) < p_up, f, 1.0 / f)


def _zone_windows(plat: _Platform) -> tuple[np.ndarray, np.ndarray]:
    """Hours in which a zone's own events may start: after its clean window, before its closure."""
    lo = np.where(plat.launch_h > 0, plat.launch_h + plat.clean_h, plat.clean_h)
    hi = plat.close_h - 1
    return lo, np.maximum(hi, lo)


def _poisson_starts(rng, rate: float, lo: np.ndarray, hi: np.ndarray):
    counts = rng.poisson(rate * (hi - lo) / _MONTH_HOURS)
    units = np.repeat(np.arange(len(lo)), counts)
    starts = lo[units] + np.floor(rng.random(len(units)) * (hi - lo)[units]).astype(np.int64)
    return units, starts


def _city_zones(plat: _Platform, city: int, start_h: int, end_h: int) -> np.ndarray:
    """Zones of a city that are live at some hour of [start_h, end_h)."""
    z = np.arange(plat.city_bounds[city], plat.city_bounds[city + 1])
    live = (plat.launch_h[z] < end_h) & (plat.close_h[z] > start_h)
    return z[live]


def _profile_of(plat: _Platform, z: int, overrides: dict[int, dict]) -> dict[str, np.ndarray]:
    if z in overrides:
        return overrides[z]
    return {k: plat.profile[k][z:z + 1].copy() for k in _PROFILE_KEYS}


def _sample_events(rng: np.random.Generator, plat: _Platform, event_rate: float,
                   campaign_rate: float = 1.0) -> list[_Event]:
    events: list[_Event] = []
    zlo, zhi = _zone_windows(plat)

    zones, starts = _poisson_starts(rng, _ZONE_RATES["level_shift"] * event_rate, zlo, zhi)
    for z, h, f in zip(zones, starts, _factor(rng, len(zones), 1.3, 2.0)):
        events.append(_Event("level_shift", int(plat.city_of_zone[z]), np.array([z]), int(h), int(h), float(f),
                             f"level shift: orders x{f:.2f} from here on", "zone"))

    zones, starts = _poisson_starts(rng, _ZONE_RATES["drift"] * event_rate, zlo, zhi)
    factors = _factor(rng, len(zones), 1.3, 2.0)
    ramps = np.round(rng.uniform(3.0, 10.0, len(zones)) * 24).astype(np.int64)
    for z, h, f, r in zip(zones, starts, factors, ramps):
        events.append(_Event("drift", int(plat.city_of_zone[z]), np.array([z]), int(h), int(h + r), float(f),
                             f"gradual drift to orders x{f:.2f} over {r / 24:.1f} days", "zone",
                             {"ramp_h": int(r)}))

    zones, starts = _poisson_starts(rng, _ZONE_RATES["profile_change"] * event_rate, zlo, zhi)
    variants = rng.integers(0, 5, len(zones))
    sizes = rng.random(len(zones))
    # Changes of one zone build on each other, so apply them in time order.
    overrides: dict[int, dict] = {}
    for i in np.lexsort((starts, zones)):
        z, h = int(zones[i]), int(starts[i])
        c = int(plat.city_of_zone[z])
        args = (plat.norm_wd[z:z + 1], plat.norm_we[z:z + 1], plat.weekly[c:c + 1])
        old = _profile_of(plat, z, overrides)
        new = {k: v.copy() for k, v in old.items()}
        u = sizes[i]
        if variants[i] == 0:
            shift = 1.0 + u
            new["dinner_hour"] = new["dinner_hour"] + shift
            what = (f"dinner peak moves later by {shift:.1f} h "
                    f"({_clock(old['dinner_hour'][0])} -> {_clock(new['dinner_hour'][0])})")
        elif variants[i] == 1:
            shift = 0.75 + 0.75 * u
            new["dinner_hour"] = new["dinner_hour"] - shift
            what = (f"dinner peak moves earlier by {shift:.1f} h "
                    f"({_clock(old['dinner_hour'][0])} -> {_clock(new['dinner_hour'][0])})")
        elif variants[i] == 2:
            # Sized by the orders it adds, so that the change is visible whatever the zone's lunch.
            share = 0.15 + 0.2 * u
            new["lunch_amp"] = _amplitude_adding(old, "lunch_amp", share, args)
            what = f"lunch peak grows x{(new['lunch_amp'] / old['lunch_amp'])[0]:.2f}"
        elif variants[i] == 3:
            f = 0.2 + 0.3 * u
            new["lunch_amp"] = new["lunch_amp"] * f
            what = f"lunch peak shrinks x{f:.2f}"
        else:
            share = 0.1 + 0.15 * u
            new["late_amp"] = _amplitude_adding(old, "late_amp", share, args)
            what = "late-night orders appear (a peak at 23:30)"
        overrides[z] = new
        magnitude = _mean_level(new, args) / _mean_level(old, args)
        events.append(_Event("profile_change", c, np.array([z]), h, h, magnitude,
                             f"daily profile change: {what}; daily volume x{magnitude:.2f}", "zone",
                             {"profile": new}))

    city_lo = np.full(plat.n_cities, plat.clean_h)
    city_hi = np.full(plat.n_cities, max(plat.hours - 1, plat.clean_h))
    day_starts = plat.midnights[(plat.midnights >= plat.clean_h) & (plat.midnights + 24 <= plat.hours)]

    cities, _ = _poisson_starts(rng, _CITY_RATES["holiday"] * event_rate, city_lo, city_hi)
    if len(day_starts):
        days = rng.choice(day_starts, len(cities))
        factors = np.where(rng.random(len(cities)) < 0.6, rng.uniform(0.5, 0.8, len(cities)),
                           rng.uniform(1.15, 1.5, len(cities)))
        for c, h, f in zip(cities, days, factors):
            zs = _city_zones(plat, int(c), int(h), int(h) + 24)
            if len(zs):
                events.append(_Event("holiday", int(c), zs, int(h), int(h) + 24, float(f),
                                     f"public holiday: orders x{f:.2f} for the day, quiet morning, late lunch",
                                     "city"))

    cities, starts = _poisson_starts(rng, _CITY_RATES["storm"] * event_rate, city_lo, city_hi)
    durations = rng.integers(3, 25, len(cities))
    factors = np.where(rng.random(len(cities)) < 0.6, rng.uniform(1.3, 1.8, len(cities)),
                       rng.uniform(0.3, 0.6, len(cities)))
    for c, h, d, f in zip(cities, starts, durations, factors):
        end = min(int(h + d), plat.hours)
        zs = _city_zones(plat, int(c), int(h), end)
        why = "people stay in and order" if f > 1 else "couriers cannot ride"
        if len(zs):
            events.append(_Event("storm", int(c), zs, int(h), end, float(f),
                                 f"storm: orders x{f:.2f} for {end - h} h ({why})", "city"))

    cities, _ = _poisson_starts(rng, _CITY_RATES["campaign"] * event_rate * campaign_rate, city_lo, city_hi)
    if len(day_starts):
        days = rng.choice(day_starts, len(cities))
        lengths = rng.integers(7, 15, len(cities))
        factors = rng.uniform(1.15, 1.5, len(cities))
        for c, h, n, f in zip(cities, days, lengths, factors):
            end = min(int(h + 24 * n), plat.hours)
            zs = _city_zones(plat, int(c), int(h), end)
            if len(zs):
                events.append(_Event("campaign", int(c), zs, int(h), end, float(f),
                                     f"marketing campaign: orders x{f:.2f} for {n} days", "city"))

    for z in np.flatnonzero(plat.launch_h > 0):
        h = int(plat.launch_h[z])
        events.append(_Event("launch", int(plat.city_of_zone[z]), np.array([z]), h, h, math.nan,
                             "zone launched: no rows before", "zone"))
    for z in np.flatnonzero(plat.close_h < plat.hours):
        h = int(plat.close_h[z])
        events.append(_Event("closure", int(plat.city_of_zone[z]), np.array([z]), h, h, math.nan,
                             "zone closed: no rows from here on", "zone"))
    return events


def _mean_level(p: dict[str, np.ndarray], args: tuple) -> float:
    return float(_week_table(p, *args).mean())


def _amplitude_adding(p: dict[str, np.ndarray], key: str, share: float, args: tuple) -> np.ndarray:
    """The peak amplitude that adds ``share`` of the daily volume (the volume is linear in it)."""
    per_unit = _mean_level({**p, key: p[key] + 1.0}, args) - _mean_level(p, args)
    return p[key] + share * _mean_level(p, args) / per_unit


def _sample_outages(rng: np.random.Generator, plat: _Platform, event_rate: float) -> list[_Event]:
    events: list[_Event] = []
    zlo, zhi = _zone_windows(plat)
    for kind, rate in _ZONE_OUTAGE_RATES.items():
        zones, starts = _poisson_starts(rng, rate * event_rate, zlo, zhi)
        durations = np.round(np.exp(rng.uniform(math.log(2), math.log(24), len(zones)))).astype(np.int64)
        for z, h, d in zip(zones, starts, durations):
            end = int(min(h + d, plat.close_h[z]))
            events.append(_outage(kind, int(plat.city_of_zone[z]), np.array([z]), int(h), end, "zone"))
    city_lo = np.full(plat.n_cities, plat.clean_h)
    city_hi = np.full(plat.n_cities, max(plat.hours - 1, plat.clean_h))
    cities, starts = _poisson_starts(rng, _CITY_OUTAGE_RATE * event_rate, city_lo, city_hi)
    durations = np.round(np.exp(rng.uniform(math.log(2), math.log(24), len(cities)))).astype(np.int64)
    kinds = rng.random(len(cities)) < 0.5
    for c, h, d, zeros in zip(cities, starts, durations, kinds):
        end = int(min(h + d, plat.hours))
        zs = _city_zones(plat, int(c), int(h), end)
        if len(zs):
            events.append(_outage("outage_zeros" if zeros else "outage_missing", int(c), zs, int(h), end,
                                  "city"))
    return events


def _outage(kind: str, city: int, zones: np.ndarray, start_h: int, end_h: int, scope: str) -> _Event:
    where = "the city's feed" if scope == "city" else "the zone"
    if kind == "outage_zeros":
        return _Event(kind, city, zones, start_h, end_h, 0.0,
                      f"data outage: {where} reports zeros for {end_h - start_h} h", scope)
    return _Event(kind, city, zones, start_h, end_h, math.nan,
                  f"data outage: rows of {where} missing for {end_h - start_h} h", scope)


# Hour-of-day multipliers of a public holiday: a quiet morning and a late lunch.
_HOLIDAY_RESHAPE = 1.0 - 0.6 * _bump(np.array([8.5]), 1.5)[0] + 0.5 * _bump(np.array([14.5]), 1.5)[0]


def _clock(hour: float) -> str:
    minutes = round(hour % 24 * 60) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# ------------------------------------------------------------------------------------------------ data


def _chunk_bounds(plat: _Platform) -> list[tuple[int, int]]:
    per_chunk = max(1, _CHUNK_CELLS // plat.hours)
    return [(lo, min(lo + per_chunk, plat.n_zones)) for lo in range(0, plat.n_zones, per_chunk)]


def _events_by_chunk(events: list[_Event], bounds: list[tuple[int, int]]) -> list[list[_Event]]:
    """Events touching each chunk of zones (zone indices are contiguous per city)."""
    lows = np.array([lo for lo, _ in bounds])
    out: list[list[_Event]] = [[] for _ in bounds]
    for ev in events:
        first = np.searchsorted(lows, ev.zones[0], side="right") - 1
        last = np.searchsorted(lows, ev.zones[-1], side="right") - 1
        for i in range(first, last + 1):
            out[i].append(ev)
    return out


def _rows_in(ev: _Event, lo: int, hi: int) -> np.ndarray | slice:
    """Rows of the chunk [lo, hi) that the event hits."""
    if len(ev.zones) == 1:
        return slice(int(ev.zones[0]) - lo, int(ev.zones[0]) - lo + 1)
    z = ev.zones[(ev.zones >= lo) & (ev.zones < hi)]
    if len(z) and z[-1] - z[0] + 1 == len(z):
        return slice(int(z[0]) - lo, int(z[-1]) - lo + 1)
    return z - lo


def _live_mask(plat: _Platform, lo: int, hi: int, events: list[_Event]) -> np.ndarray:
    h = np.arange(plat.hours)
    mask = (h[None, :] >= plat.launch_h[lo:hi, None]) & (h[None, :] < plat.close_h[lo:hi, None])
    for ev in events:
        if ev.kind == "outage_missing":
            mask[_rows_in(ev, lo, hi), ev.start_h:ev.end_h] = False
    return mask


def _chunk_mean(plat: _Platform, lo: int, hi: int, events: list[_Event]) -> np.ndarray:
    """Expected orders (zones lo..hi x hours): profile x weekly x scale x growth x event multipliers."""
    p = {k: v[lo:hi] for k, v in plat.profile.items()}
    weekly = plat.weekly[plat.city_of_zone[lo:hi]]
    mu = _week_table(p, plat.norm_wd[lo:hi], plat.norm_we[lo:hi], weekly)[:, plat.how]
    for ev in events:
        if ev.kind == "profile_change":
            z = int(ev.zones[0])
            c = int(plat.city_of_zone[z])
            table = _week_table(ev.params["profile"], plat.norm_wd[z:z + 1], plat.norm_we[z:z + 1],
                                plat.weekly[c:c + 1])
            mu[z - lo, ev.start_h:] = table[0, plat.how[ev.start_h:]]
        elif ev.kind == "holiday":
            # Reshape the day (quiet morning, late lunch) at the zone's own daily volume, then scale it,
            # so that the labelled magnitude is exactly the day's volume factor.
            rows, hours = _rows_in(ev, lo, hi), slice(ev.start_h, ev.end_h)
            day = mu[rows, hours]
            reshaped = day * _HOLIDAY_RESHAPE[plat.how[hours] % 24]
            reshaped *= ev.magnitude * day.sum(axis=1, keepdims=True) / reshaped.sum(axis=1, keepdims=True)
            mu[rows, hours] = reshaped

    t = np.arange(plat.hours) / _HOURS_PER_YEAR
    level = np.exp(plat.growth[lo:hi, None] * t[None, :])
    level *= plat.scale[lo:hi, None]
    for ev in events:
        rows = _rows_in(ev, lo, hi)
        if ev.kind == "level_shift":
            level[rows, ev.start_h:] *= ev.magnitude
        elif ev.kind == "drift":
            steps = np.arange(1, plat.hours - ev.start_h + 1) / ev.params["ramp_h"]
            level[rows, ev.start_h:] *= ev.magnitude ** np.minimum(steps, 1.0)
        elif ev.kind in ("storm", "campaign"):
            level[rows, ev.start_h:ev.end_h] *= ev.magnitude
    if plat.weather is not None:
        level *= _weather_multiplier(plat.weather)[plat.city_of_zone[lo:hi]]
    mu *= level
    return mu


def _plan_campaigns(rng: np.random.Generator, events: list[_Event], sd: float) -> None:
    """Give every campaign its announced (planned) relative uplift, ``params["planned"]``: the realised
    uplift ``magnitude - 1`` times a log-normal error of log-sd ``sd``, rounded to whole percent (at least 1 %)."""
    campaigns = [ev for ev in events if ev.kind == "campaign"]
    errors = np.exp(sd * rng.standard_normal(len(campaigns)))
    for ev, error in zip(campaigns, errors):
        ev.params["planned"] = max(0.01, round((ev.magnitude - 1.0) * float(error), 2))


def _campaign_driver(plat: _Platform, lo: int, hi: int, events: list[_Event]) -> np.ndarray:
    """The announced campaign driver (zones lo..hi x hours): the sum of the planned uplifts of the campaigns
    running for the zone, or 1.0 while any runs for campaigns without a plan (``campaign_driver="flag"``);
    0.0 where none runs."""
    values = np.zeros((hi - lo, plat.hours))
    for ev in events:
        if ev.kind == "campaign":
            rows, hours = _rows_in(ev, lo, hi), slice(ev.start_h, ev.end_h)
            if "planned" in ev.params:
                values[rows, hours] += ev.params["planned"]
            else:
                values[rows, hours] = 1.0
    return np.round(values, 2)  # whole percent also where plans add up (no 0.45000000000000007)


def _chunk_counts(plat: _Platform, lo: int, hi: int, events: list[_Event], rng: np.random.Generator,
                  keep_mean: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Simulated counts (zones lo..hi x hours) before rows are dropped, and their means if asked for."""
    mu = _chunk_mean(plat, lo, hi, events)
    # Gamma-Poisson mixture: NB with mean mu and size k.
    k = plat.dispersion[lo:hi, None]
    gamma = rng.gamma(k, 1.0 / k, size=mu.shape)
    if keep_mean:
        gamma *= mu
        lam = gamma
    else:
        mu *= gamma
        lam, mu = mu, None
    y = rng.poisson(lam).astype(np.float64)
    for ev in events:
        if ev.kind == "outage_zeros":
            y[_rows_in(ev, lo, hi), ev.start_h:ev.end_h] = 0.0
    return y, mu


def _generate_data(plat: _Platform, events: list[_Event], ss_noise: np.random.SeedSequence,
                   expected: bool) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.compute as pc

    bounds = _chunk_bounds(plat)
    chunk_events = _events_by_chunk(events, bounds)
    # First pass: row counts, so that the output arrays are allocated once.
    counts = [int(_live_mask(plat, lo, hi, ev).sum()) for (lo, hi), ev in zip(bounds, chunk_events)]
    n = sum(counts)
    codes = np.empty(n, dtype=np.int32)
    ds = np.empty(n, dtype=np.int64)
    y = np.empty(n, dtype=np.float64)
    mean = np.empty(n, dtype=np.float64) if expected else None
    extra = {name: np.empty(n) for name in ("temperature", "rain", "campaign")} if plat.weather else {}
    start_ns = plat.start.value
    off = 0
    for (lo, hi), ev, count, ss in zip(bounds, chunk_events, counts, ss_noise.spawn(len(bounds))):
        mask = _live_mask(plat, lo, hi, ev)
        counts_chunk, mean_chunk = _chunk_counts(plat, lo, hi, ev, np.random.default_rng(ss), expected)
        rows, cols = np.nonzero(mask)
        codes[off:off + count] = rows + lo
        ds[off:off + count] = start_ns + cols * _HOUR_NS
        y[off:off + count] = counts_chunk[mask]
        if mean is not None:
            mean[off:off + count] = mean_chunk[mask]
        if extra:
            city = plat.city_of_zone[rows + lo]
            for name in ("temperature", "rain"):
                extra[name][off:off + count] = plat.weather[name][city, cols]
            extra["campaign"][off:off + count] = _campaign_driver(plat, lo, hi, ev)[mask]
        off += count
    ids = pa.array(plat.ids.tolist(), type=pa.large_string())
    unique_id = pc.take(ids, pa.array(codes)).to_pandas()
    del codes
    columns = {"unique_id": unique_id, "ds": ds.view("datetime64[ns]"), "y": y}
    if mean is not None:
        columns["expected"] = mean
    columns.update(extra)
    return pd.DataFrame(columns, copy=False)


# ------------------------------------------------------------------------------------------------ frames


def _streams_frame(plat: _Platform) -> pd.DataFrame:
    hour = np.timedelta64(1, "h")
    start = np.datetime64(plat.start.value, "ns")
    launched = np.where(plat.launch_h > 0, start + plat.launch_h * hour, np.datetime64("NaT", "ns"))
    closed = np.where(plat.close_h < plat.hours, start + plat.close_h * hour, np.datetime64("NaT", "ns"))
    frame = pd.DataFrame({
        "unique_id": plat.ids,
        "city": plat.city_ids[plat.city_of_zone],
        "zone": plat.zone_ids,
        "scale": plat.scale,
        "dispersion": plat.dispersion,
        "growth": plat.growth,
        "launched": launched.astype("datetime64[ns]"),
        "closed": closed.astype("datetime64[ns]"),
    })
    return frame.astype(_STREAM_DTYPES)


def _events_frame(plat: _Platform, events: list[_Event]) -> pd.DataFrame:
    if not events:
        return _empty_events()
    n_rows = np.array([len(e.zones) for e in events])
    zones = np.concatenate([e.zones for e in events])
    event_id = np.repeat(np.arange(len(events)), n_rows)
    kinds = [e.kind for e in events]
    start = np.datetime64(plat.start.value, "ns")
    hour = np.timedelta64(1, "h")

    def per_event(values, dtype=None):
        return np.repeat(np.asarray(values, dtype=dtype), n_rows)

    frame = pd.DataFrame({
        "event_id": event_id.astype(np.int64),
        "kind": per_event(kinds, object),
        "scope": per_event([e.scope for e in events], object),
        "city": per_event(plat.city_ids[[e.city for e in events]], object),
        "unique_id": plat.ids[zones],
        "start": start + per_event([e.start_h for e in events], np.int64) * hour,
        "end": start + per_event([e.end_h for e in events], np.int64) * hour,
        "magnitude": per_event([e.magnitude for e in events], np.float64),
        "is_data_fault": per_event([EVENT_KINDS[k]["is_data_fault"] for k in kinds], bool),
        "relevant": per_event([EVENT_KINDS[k]["relevant"] for k in kinds], bool),
        "permanent": per_event([EVENT_KINDS[k]["permanent"] for k in kinds], bool),
        "description": per_event([e.description for e in events], object),
    })
    return frame.astype(_EVENT_DTYPES)


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in _EVENT_DTYPES.items()})


# ------------------------------------------------------------------------------------------------- files


def _data_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"path must end in .csv or .parquet, got suffix {path.suffix!r} ({str(path)!r})")
    return suffix[1:]


def sidecar_path(data_path: str | Path, what: str) -> Path:
    """The file written beside a data file: ``<stem>.<what>.csv`` (events, streams).

    >>> sidecar_path("runs/orders.parquet", "streams").as_posix()
    'runs/orders.streams.csv'
    """
    path = Path(data_path)
    return path.with_name(f"{path.stem}.{what}.csv")


def write_simulation(sim: Simulation, path: str | Path) -> dict[str, Path]:
    """Write a simulation: the data to ``path``, events and streams beside it.

    The data go to ``path`` as CSV or Parquet, chosen by its suffix (``.csv`` or ``.parquet``); the events
    to ``<stem>.events.csv`` and the streams to ``<stem>.streams.csv`` in the same folder, which is
    created if needed.

    Parameters
    ----------
    sim
        The simulation to write.
    path
        File for the data; its suffix picks the format.

    Returns
    -------
    dict
        The paths written, under ``"data"``, ``"events"`` and ``"streams"``.

    Examples
    --------
    >>> import tempfile
    >>> sim = simulate_platform(3, 2, seed=1)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = write_simulation(sim, Path(tmp) / "orders.csv")
    ...     sorted(p.name for p in paths.values())
    ['orders.csv', 'orders.events.csv', 'orders.streams.csv']
    """
    path = Path(path)
    fmt = _data_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    paths = {"data": path, "events": sidecar_path(path, "events"), "streams": sidecar_path(path, "streams")}
    # All three or none: each is written beside its place and renamed there once all are written, so that a
    # failed write (a full disk, a side file's name taken by a folder) or a killed run leaves no data file
    # without its events, nor a file cut short under the real name.
    partial = {kind: target.with_name(f".{target.name}.partial") for kind, target in paths.items()}
    for target in paths.values():
        if target.is_dir():
            raise IsADirectoryError(f"{target} is a folder; nothing was written")
    try:
        if fmt == "parquet":
            sim.data.to_parquet(partial["data"], index=False)
        else:
            _write_data_csv(sim.data, partial["data"])
        sim.events.to_csv(partial["events"], index=False, date_format="%Y-%m-%d %H:%M:%S")
        sim.streams.to_csv(partial["streams"], index=False, date_format="%Y-%m-%d %H:%M:%S")
        for kind, target in paths.items():
            os.replace(partial[kind], target)
    finally:
        for leftover in partial.values():
            leftover.unlink(missing_ok=True)
    return paths


def _write_data_csv(data: pd.DataFrame, path: Path) -> None:
    # pyarrow writes millions of rows an order of magnitude faster than DataFrame.to_csv.
    import pyarrow as pa
    import pyarrow.csv as pcsv

    table = pa.Table.from_pandas(data, preserve_index=False)
    if "ds" in data.columns:
        try:  # whole seconds print as "2025-01-06 13:00:00" rather than with nine decimals
            table = table.set_column(table.schema.get_field_index("ds"), "ds",
                                     table["ds"].cast(pa.timestamp("s")))
        except pa.ArrowInvalid:
            pass
    with open(path, "wb") as sink:
        # pyarrow would quote every header name; plain names read the same and look like pandas output.
        sink.write((",".join(table.column_names) + "\n").encode())
        try:
            pcsv.write_csv(table, sink, pcsv.WriteOptions(include_header=False, quoting_style="none"))
        except pa.ArrowInvalid:  # a value that needs quotes
            sink.seek(0)
            sink.truncate()
            pcsv.write_csv(table, sink, pcsv.WriteOptions(quoting_style="needed"))


def read_events(data_path: str | Path) -> pd.DataFrame | None:
    """Read the ground-truth events written beside a data file, or ``None`` if there are none.

    Parameters
    ----------
    data_path
        The data file (``orders.csv`` or ``orders.parquet``); the events are read from
        ``orders.events.csv`` beside it.

    Examples
    --------
    >>> read_events("/nonexistent/orders.csv") is None
    True
    """
    path = sidecar_path(data_path, "events")
    return read_events_file(path) if path.exists() else None


def read_events_file(path: str | Path) -> pd.DataFrame:
    """Read a table of events (the simulator's ``orders.events.csv``, or one given with ``mlma backtest
    --events``): ids and kinds stay text ("007" is not "7")."""
    frame = pd.read_csv(path, dtype={"kind": "str", "scope": "str", "city": "str", "unique_id": "str",
                                     "description": "str"}, keep_default_na=False, na_values={
        "start": [""], "end": [""], "magnitude": ["", "NaN", "nan"]})
    return _coerce(frame, _EVENT_DTYPES)


def read_streams(data_path: str | Path) -> pd.DataFrame | None:
    """Read the streams table written beside a data file, or ``None`` if there is none.

    Parameters
    ----------
    data_path
        The data file (``orders.csv`` or ``orders.parquet``); the streams are read from
        ``orders.streams.csv`` beside it.
    """
    path = sidecar_path(data_path, "streams")
    if not path.exists():
        return None
    frame = pd.read_csv(path, dtype={"unique_id": "str", "city": "str", "zone": "str"}, keep_default_na=False,
                        na_values={"launched": [""], "closed": [""]})
    frame = _coerce(frame, _STREAM_DTYPES)
    frame.attrs["source"] = str(path)  # named in errors about the table (mlma.backtest)
    return frame


def read_simulation(path: str | Path) -> Simulation:
    """Read back what :func:`write_simulation` wrote.

    Parameters
    ----------
    path
        The data file (``.csv`` or ``.parquet``) with its ``.events.csv`` and ``.streams.csv`` beside it.
    """
    path = Path(path)
    fmt = _data_format(path)
    if fmt == "parquet":
        data = pd.read_parquet(path)
    else:
        data = pd.read_csv(path, dtype={"unique_id": "str", "y": "float64"}, parse_dates=["ds"])
    data = _coerce(data, {"unique_id": "str", "ds": "datetime64[ns]", "y": "float64"})
    events, streams = read_events(path), read_streams(path)
    if events is None or streams is None:
        missing = sidecar_path(path, "events" if events is None else "streams")
        raise FileNotFoundError(f"{missing} not found beside {path}")
    return Simulation(data=data, streams=streams, events=events)


#: How a true-or-false cell of an events or streams table may be written (a spreadsheet's TRUE, yes, 1).
_TRUTH = {"true": True, "false": False, "yes": True, "no": False, "y": True, "n": False, "t": True, "f": False,
          "1": True, "0": False}


def _coerce(frame: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    r"""``frame``'s columns ``dtypes`` in those types; a cell of a true-or-false column that is neither is refused,
    naming its line in the file (every text but "false" was read as true: "no" too).

    >>> _coerce(pd.DataFrame({"relevant": ["yes", "No", "TRUE", "0"]}), {"relevant": "bool"})["relevant"].tolist()
    [True, False, True, False]
    >>> _coerce(pd.DataFrame({"relevant": ["yes", "maybe"]}), {"relevant": "bool"})
    Traceback (most recent call last):
    ...
    ValueError: column 'relevant', line 3: 'maybe' is not true or false (write true/false, yes/no or 1/0)
    """
    missing = [c for c in dtypes if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} missing; expected {list(dtypes)}")
    frame = frame[list(dtypes) + [c for c in frame.columns if c not in dtypes]]
    for col, dtype in dtypes.items():
        if dtype.startswith("datetime64"):
            frame[col] = pd.to_datetime(frame[col]).astype(dtype)
        elif dtype == "bool" and frame[col].dtype != bool:
            truth = frame[col].astype(str).str.strip().str.lower().map(_TRUTH)
            if truth.isna().any():
                at = int(np.flatnonzero(truth.isna().to_numpy())[0])
                raise ValueError(f"column {col!r}, line {at + 2}: {frame[col].iloc[at]!r} is not true or "
                                 "false (write true/false, yes/no or 1/0)")
            frame[col] = truth.astype(bool)
        else:
            frame[col] = frame[col].astype(dtype)
    return frame
