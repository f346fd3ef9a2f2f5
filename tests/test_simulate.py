"""Tests of the simulated delivery platform: layout, reproducibility, and that the events are in the data."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from mlma.simulate import (
    EVENT_KINDS,
    Simulation,
    read_events,
    read_simulation,
    read_streams,
    simulate_platform,
    write_simulation,
)

START = pd.Timestamp("2025-01-06")
HOUR = pd.Timedelta(hours=1)
WEEK = 168


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate_platform(600, 70, seed=11)


@pytest.fixture(scope="module")
def clean() -> Simulation:
    return simulate_platform(300, 56, seed=5, event_rate=0, outages=False)


def dense(sim: Simulation) -> np.ndarray:
    """Counts as zones x hours (rows in streams order), NaN where there is no row."""
    hours = int((sim.data["ds"].max() - START) / HOUR) + 1
    rows = pd.Index(sim.streams["unique_id"]).get_indexer(sim.data["unique_id"])
    cols = ((sim.data["ds"] - START) / HOUR).to_numpy().astype(int)
    out = np.full((len(sim.streams), hours), np.nan)
    out[rows, cols] = sim.data["y"].to_numpy()
    return out


def hour_of(ts) -> int:
    return int((pd.Timestamp(ts) - START) / HOUR)


def blocked_hours(events: pd.DataFrame, hours: int, skip_event: int) -> np.ndarray:
    """Hours of one zone touched by any of its events other than ``skip_event``."""
    out = np.zeros(hours, dtype=bool)
    for ev in events[events["event_id"] != skip_event].itertuples():
        a = hour_of(ev.start)
        b = hours if ev.permanent else hour_of(ev.end)
        out[max(a, 0):max(b, 0)] = True
    return out


def paired_error(y: np.ndarray, k: float, after: np.ndarray, lag: int, blocked: np.ndarray, growth: float,
                 factor, *, whole: bool = False):
    """Observed minus expected log(sum after / sum before) over hour pairs (t - lag, t), and its SE.

    Pairs a whole number of weeks apart share the hour of the week, so the daily and weekly rhythm cancel.
    The expected ratio is the event's multiplier ``factor(t)`` (weighted like the counts) times the
    zone's growth over the lag. With ``whole``, only an unbroken window counts. The variance of a sum
    of NB counts is sum(mu + mu**2 / k), with the counts standing in for mu. (Over 12 seeds the
    standardised errors of all zone and city events had mean 0.0 and sd 0.97-1.09.)
    """
    after = after[(after >= lag) & (after < len(y))]
    before = after - lag
    ok = ~blocked[after] & ~blocked[before] & ~np.isnan(y[after]) & ~np.isnan(y[before])
    if whole and not ok.all():
        return None
    after, before = after[ok], before[ok]
    y1, y0 = y[after], y[before]
    s1, s0 = y1.sum(), y0.sum()
    if len(after) < 12 or s0 < 30 or s1 < 30:
        return None
    expected = np.log((y0 * factor(after)).sum() / s0) + growth * lag / (24 * 365.25)
    var1, var0 = (y1 * (1 + y1 / k)).sum(), (y0 * (1 + y0 / k)).sum()
    return float(np.log(s1 / s0) - expected), float(np.sqrt(var1 / s1**2 + var0 / s0**2))


# ------------------------------------------------------------------------------------------------ layout


def test_same_arguments_give_identical_frames():
    a = simulate_platform(60, 30, seed=3)
    b = simulate_platform(60, 30, seed=3)
    pd.testing.assert_frame_equal(a.data, b.data)
    pd.testing.assert_frame_equal(a.streams, b.streams)
    pd.testing.assert_frame_equal(a.events, b.events)
    assert len(a.events) > 0
    c = simulate_platform(60, 30, seed=4)
    assert not a.streams["scale"].equals(c.streams["scale"])
    assert len(a.data) != len(c.data) or not np.array_equal(a.data["y"].to_numpy(), c.data["y"].to_numpy())


def test_frame_layout(sim):
    data, streams, events = sim.data, sim.streams, sim.events
    assert list(data.columns) == ["unique_id", "ds", "y"]
    assert data.dtypes.astype(str).tolist() == ["str", "datetime64[ns]", "float64"]
    assert not isinstance(data["unique_id"].dtype, pd.CategoricalDtype)
    # Sorted by unique_id then ds, one row per (stream, hour), on the hourly grid of the run.
    key = data["unique_id"].to_numpy()
    ds = data["ds"].to_numpy()
    same = key[1:] == key[:-1]
    assert (key[1:] >= key[:-1]).all()
    assert (ds[1:][same] > ds[:-1][same]).all()
    assert data["ds"].min() == START and data["ds"].max() == START + pd.Timedelta(days=70) - HOUR
    assert (data["ds"].dt.minute == 0).all()
    y = data["y"].to_numpy()
    assert (y >= 0).all() and (y == np.round(y)).all()

    assert len(streams) == 600 and streams["unique_id"].is_unique
    assert streams["unique_id"].tolist() == sorted(streams["unique_id"])
    assert all(re.fullmatch(r"c\d{2}-z\d{3}", u) for u in streams["unique_id"])
    assert (streams["unique_id"] == streams["city"] + "-" + streams["zone"]).all()
    assert set(data["unique_id"].unique()) <= set(streams["unique_id"])
    # Default city count grows with the fleet; city sizes are unequal.
    sizes = streams["city"].value_counts()
    assert len(sizes) == round(np.sqrt(600) / 2)
    assert sizes.max() > 2 * sizes.min()
    # Zone sizes span small (about one order an hour) to big (hundred or more).
    assert streams["scale"].quantile(0.05) < 1.5 and streams["scale"].max() > 100

    assert list(events.columns) == ["event_id", "kind", "scope", "city", "unique_id", "start", "end",
                                    "magnitude", "is_data_fault", "relevant", "permanent", "description"]
    assert str(events["start"].dtype) == "datetime64[ns]" and events["relevant"].dtype == bool
    assert set(events["kind"]) == set(EVENT_KINDS)
    for col in ("relevant", "is_data_fault", "permanent"):
        expected = events["kind"].map({k: v[col] for k, v in EVENT_KINDS.items()})
        assert (events[col] == expected).all(), col
    city_of = streams.set_index("unique_id")["city"]
    assert (events["city"].to_numpy() == city_of.loc[events["unique_id"]].to_numpy()).all()
    assert not events.duplicated(["event_id", "unique_id"]).any()
    assert (events["end"] >= events["start"]).all()
    # One event id has one kind, one window and one magnitude, however many streams it hits.
    per_event = events.groupby("event_id")[["kind", "start", "end", "description"]].nunique()
    assert (per_event == 1).all().all()
    assert set(events.loc[events["scope"] == "city", "kind"]) >= {"holiday", "storm", "campaign"}


def test_summary_and_repr(sim):
    assert repr(sim).startswith("Simulation(streams=600, cities=12,")
    text = sim.summary()
    assert "600 zones in 12 cities" in text and "level_shift" in text and "(data fault)" in text


def test_no_event_starts_in_the_clean_window(sim):
    clean_end = START + pd.Timedelta(days=14)
    assert sim.events["start"].min() >= clean_end
    launched = sim.streams.dropna(subset=["launched"]).set_index("unique_id")["launched"]
    own = sim.events[(sim.events["scope"] == "zone") & sim.events["unique_id"].isin(launched.index)
                     & ~sim.events["kind"].isin(["launch", "closure"])]
    assert len(own) == 0 or (own["start"].to_numpy()
                             >= (launched.loc[own["unique_id"]] + pd.Timedelta(days=14)).to_numpy()).all()
    early = simulate_platform(200, 30, seed=2, clean_days=0)
    assert early.events["start"].min() < clean_end


def test_event_rate_scales_the_number_of_events():
    def n_relevant(rate):
        ev = simulate_platform(600, 40, seed=8, event_rate=rate).events
        return ev.loc[ev["scope"] == "zone"].query("relevant")["event_id"].nunique()

    low, high = n_relevant(0.5), n_relevant(2.0)
    assert 2.5 < high / low < 6.5
    none = simulate_platform(200, 40, seed=8, event_rate=0)
    assert len(none.events) == 0 and len(none.data) == 200 * 40 * 24
    assert none.streams["launched"].isna().all() and none.streams["closed"].isna().all()


# ---------------------------------------------------------------------------------------- events in data


@pytest.mark.parametrize("kind", ["level_shift", "drift", "profile_change"])
def test_zone_changes_show_up_at_their_magnitude(sim, kind):
    """The zone's volume after the change vs before is the labelled factor, within sampling error."""
    y = dense(sim)
    hours = y.shape[1]
    row_of = {u: i for i, u in enumerate(sim.streams["unique_id"])}
    k_of = sim.streams["dispersion"].to_numpy()
    g_of = sim.streams["growth"].to_numpy()
    by_zone = dict(tuple(sim.events.groupby("unique_id")))
    z_scores, half_z = [], []
    for ev in sim.events[sim.events["kind"] == kind].itertuples():
        r = row_of[ev.unique_id]
        blocked = blocked_hours(by_zone[ev.unique_id], hours, ev.event_id)
        settled = hour_of(ev.end)  # the drift's ramp is over; equal to start for a step
        after = np.arange(settled, settled + 2 * WEEK)
        lag = WEEK * int(np.ceil((settled + 2 * WEEK - hour_of(ev.start)) / WEEK))
        f = ev.magnitude
        # A profile change moves orders between hours: its magnitude holds for whole weeks only.
        got = paired_error(y[r], k_of[r], after, lag, blocked, g_of[r], lambda t: f,
                           whole=kind == "profile_change")
        if got is None:
            continue
        error, se = got
        assert abs(error) < 4.5 * se, (ev.description, error, se)
        z_scores.append(np.sign(np.log(f)) * error / se)
        if kind == "drift":
            # During the ramp the level moves linearly on the log scale (checked on its middle half).
            s, ramp = hour_of(ev.start), settled - hour_of(ev.start)
            middle = np.arange(s + ramp // 4, s + 3 * ramp // 4)
            half = paired_error(y[r], k_of[r], middle, lag, blocked, g_of[r],
                                lambda t: f ** np.clip((t - s + 1) / ramp, 0, 1))
            if half is not None:
                assert abs(half[0]) < 4.5 * half[1], ev.description
                half_z.append(np.sign(np.log(f)) * half[0] / half[1])
    assert len(z_scores) >= (3 if kind == "profile_change" else 8)
    if kind == "drift":
        assert len(half_z) >= 10 and abs(np.mean(half_z)) < 4 / np.sqrt(len(half_z))
    # Neither under- nor overstated on average: z is signed by the direction of the change and has
    # a spread of about 1, so its mean is within 4 / sqrt(n) of 0.
    assert abs(np.mean(z_scores)) < 4 / np.sqrt(len(z_scores)) and np.std(z_scores) < 1.5


def test_level_shifts_go_both_ways_and_are_large(sim):
    shifts = sim.events.loc[sim.events["kind"] == "level_shift", "magnitude"]
    assert (shifts > 1).any() and (shifts < 1).any()
    assert (np.abs(np.log(shifts)) >= np.log(1.3) - 1e-9).all()


def test_profile_changes_move_the_daily_shape(sim):
    y = dense(sim)
    hours = y.shape[1]
    hod = np.arange(hours) % 24
    weekday = (np.arange(hours) // 24) % 7 < 5  # the run starts on a Monday
    row_of = {u: i for i, u in enumerate(sim.streams["unique_id"])}
    by_zone = dict(tuple(sim.events.groupby("unique_id")))
    checked = 0
    for ev in sim.events[sim.events["kind"] == "profile_change"].itertuples():
        r, s = row_of[ev.unique_id], hour_of(ev.start)
        if sim.streams["scale"].iloc[r] < 5:
            continue  # too few orders to see the shape
        blocked = blocked_hours(by_zone[ev.unique_id], hours, ev.event_id)
        before = np.arange(max(s - 2 * WEEK, 0), s)
        after = np.arange(s, min(s + 2 * WEEK, hours))
        # Mean weekday profile by hour of day: the weekend lunch is later and bigger, and other events
        # block uneven stretches of hours, so every hour of the day is averaged on its own.
        def profile(hours_):
            hours_ = hours_[~blocked[hours_] & weekday[hours_] & ~np.isnan(y[r, hours_])]
            n = np.bincount(hod[hours_], minlength=24)
            if n.min() < 5:  # a week of weekdays
                return None
            return np.bincount(hod[hours_], weights=y[r, hours_], minlength=24) / n

        before, after = profile(before), profile(after)
        if before is None or after is None:
            continue

        def share(prof, window):
            return prof[window].sum() / prof.sum()

        def dinner_centre(prof):
            return (np.arange(16, 24) * prof[16:24]).sum() / prof[16:24].sum()

        # A peak that gains or loses a share d of the daily orders moves the share of its hours from
        # L to about (L + c d) / (1 + d), c being the part of the peak inside those hours; ask for a
        # third of that, which is well clear of the noise.
        def expected_move(hours_, coverage):
            L = share(before, hours_)
            d = ev.magnitude - 1
            return (L + coverage * d) / (1 + d) - L

        lunch, late = [11, 12, 13, 14], [22, 23, 0]
        if "lunch peak" in ev.description:
            move = expected_move(lunch, 0.8)
            if abs(move) < 0.05:
                continue  # a small lunch peak shrank: too little to see
            assert (share(after, lunch) - share(before, lunch)) / move > 1 / 3, ev.description
        elif "late-night" in ev.description:
            move = expected_move(late, 0.6)
            assert (share(after, late) - share(before, late)) / move > 1 / 3, ev.description
        elif "moves later" in ev.description:
            assert dinner_centre(after) > dinner_centre(before) + 0.3, ev.description
        elif "moves earlier" in ev.description:
            assert dinner_centre(after) < dinner_centre(before) - 0.2, ev.description
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("kind", ["storm", "holiday", "campaign"])
def test_city_shocks_move_every_zone_of_the_city(sim, kind):
    """In the window, the city's orders and each busy zone's orders are x magnitude of the week(s) before."""
    y = dense(sim)
    hours = y.shape[1]
    row_of = {u: i for i, u in enumerate(sim.streams["unique_id"])}
    k_of = sim.streams["dispersion"].to_numpy()
    g_of = sim.streams["growth"].to_numpy()
    by_zone = dict(tuple(sim.events.groupby("unique_id")))
    n_events, z_scores = 0, []
    for event_id, rows in sim.events[sim.events["kind"] == kind].groupby("event_id"):
        first = rows.iloc[0]
        s, e, f = hour_of(first.start), hour_of(first.end), first.magnitude
        window = np.arange(s, e)
        lag = WEEK * int(np.ceil((e - s) / WEEK))
        sums, variances = np.zeros(2), np.zeros(2)
        for uid in rows["unique_id"]:
            r = row_of[uid]
            blocked = blocked_hours(by_zone[uid], hours, event_id)
            after = window[(window >= lag)]
            ok = (~blocked[after] & ~blocked[after - lag]
                  & ~np.isnan(y[r, after]) & ~np.isnan(y[r, after - lag]))
            if kind == "holiday" and not ok.all():
                continue  # the magnitude is the whole day's factor: within the day, orders move hours
            for i, hrs in enumerate((after[ok], after[ok] - lag)):
                sums[i] += y[r, hrs].sum()
                variances[i] += (y[r, hrs] * (1 + y[r, hrs] / k_of[r])).sum()
            got = paired_error(y[r], k_of[r], window, lag, blocked, g_of[r], lambda t: f)
            if got is not None and got[1] < 0.3:
                error, se = got
                assert abs(error) < 4.5 * se, (first.description, uid, error, se)
                z_scores.append(np.sign(np.log(f)) * error / se)
        if sums.min() > 200:
            se = np.sqrt((variances / sums**2).sum())
            city_log_ratio = np.log(sums[0] / sums[1])
            # 0.015: growth over the lag, which differs between zones (at most ~30 %/year x 2 weeks).
            assert abs(city_log_ratio - np.log(f)) < 4.5 * se + 0.015, (first.description, city_log_ratio, se)
            n_events += 1
    assert n_events >= 1 and len(z_scores) >= 5
    assert abs(np.mean(z_scores)) < 4 / np.sqrt(len(z_scores))  # signed by direction, as above


def test_launched_and_closed_zones_have_rows_only_while_live(sim):
    first = sim.data.groupby("unique_id")["ds"].min()
    last = sim.data.groupby("unique_id")["ds"].max()
    streams = sim.streams.set_index("unique_id")
    launched = streams["launched"].dropna()
    closed = streams["closed"].dropna()
    assert len(launched) >= 5 and len(closed) >= 3
    assert (first.loc[launched.index] >= launched).all()
    assert (first.loc[launched.index] <= launched + pd.Timedelta(days=1)).all()
    assert (last.loc[closed.index] < closed).all()
    assert (last.loc[closed.index] >= closed - pd.Timedelta(days=1)).all()
    always = streams.index[streams["launched"].isna()]
    assert (first.loc[always] == START).all()
    # The launch and closure events carry the same times.
    ev = sim.events
    launch_ev = ev[ev["kind"] == "launch"].set_index("unique_id")["start"].sort_index()
    closure_ev = ev[ev["kind"] == "closure"].set_index("unique_id")["start"].sort_index()
    pd.testing.assert_series_equal(launch_ev, launched.sort_index(), check_names=False)
    pd.testing.assert_series_equal(closure_ev, closed.sort_index(), check_names=False)


def test_outages_are_zeros_or_missing_rows_and_nothing_else():
    """Outages come from their own random stream: switching them off changes only the outage windows."""
    with_out = simulate_platform(300, 40, seed=21)
    without = simulate_platform(300, 40, seed=21, outages=False)
    outages = with_out.events[with_out.events["is_data_fault"]]
    assert set(outages["kind"]) == {"outage_zeros", "outage_missing"}
    assert not outages["relevant"].any()
    assert not without.events["is_data_fault"].any()
    cols = [c for c in without.events.columns if c != "event_id"]
    pd.testing.assert_frame_equal(
        with_out.events.loc[~with_out.events["is_data_fault"], cols].reset_index(drop=True),
        without.events[cols].reset_index(drop=True))

    merged = without.data.merge(with_out.data, on=["unique_id", "ds"], how="left", suffixes=("", "_out"),
                                indicator=True)
    assert len(with_out.data) < len(without.data)
    in_zeros = np.zeros(len(merged), dtype=bool)
    in_missing = np.zeros(len(merged), dtype=bool)
    for ev in outages.itertuples():
        hit = (merged["unique_id"] == ev.unique_id) & (merged["ds"] >= ev.start) & (merged["ds"] < ev.end)
        if ev.kind == "outage_zeros":
            in_zeros |= hit.to_numpy()
        else:
            in_missing |= hit.to_numpy()
    present = (merged["_merge"] == "both").to_numpy()
    # Missing-row outages remove exactly their rows; zero outages report 0 for every row they cover.
    assert not present[in_missing].any()
    assert present[~in_missing].all()
    assert (merged.loc[in_zeros & ~in_missing, "y_out"] == 0).all()
    assert (merged.loc[in_zeros & ~in_missing, "y"] > 0).any()
    untouched = ~in_zeros & ~in_missing
    np.testing.assert_array_equal(merged.loc[untouched, "y"], merged.loc[untouched, "y_out"])
    assert in_zeros.sum() > 0 and in_missing.sum() > 0


# ----------------------------------------------------------------------------------------- distribution


def test_counts_are_overdispersed_with_the_labelled_dispersion(clean):
    """Same hour of the week over 8 clean weeks: the variance exceeds the mean by mean**2 / k (NB)."""
    y = dense(clean)
    weeks = y.reshape(len(y), -1, WEEK)  # zones x weeks x hour of week
    mean, var = weeks.mean(axis=1), weeks.var(axis=1, ddof=1)
    k = clean.streams["dispersion"].to_numpy()[:, None]
    scale = clean.streams["scale"].to_numpy()
    mid = (scale > 5) & (scale < 50)
    assert mid.sum() >= 50
    assert var[mid].sum() > 1.3 * mean[mid].sum()
    # The excess over Poisson matches the labelled k: sum(var - mean) ~ sum(mean**2 / k).
    big = scale > 5
    excess = (var[big] - mean[big]).sum() / (mean[big] ** 2 / k[big]).sum()
    assert 0.75 < excess < 1.25


def test_expected_column_is_the_mean_and_changes_nothing_else():
    plain = simulate_platform(200, 30, seed=13)
    sim = simulate_platform(200, 30, seed=13, expected=True)
    pd.testing.assert_frame_equal(sim.data[["unique_id", "ds", "y"]], plain.data)
    pd.testing.assert_frame_equal(sim.events, plain.events)
    faults = sim.events[sim.events["kind"] == "outage_zeros"]
    data = sim.data.merge(sim.streams[["unique_id", "dispersion"]], on="unique_id")
    in_fault = np.zeros(len(data), dtype=bool)
    for ev in faults.itertuples():
        hit = (data["unique_id"] == ev.unique_id) & (data["ds"] >= ev.start) & (data["ds"] < ev.end)
        in_fault |= hit.to_numpy()
    assert in_fault.any() and (data.loc[in_fault, "y"] == 0).all()
    assert (data.loc[in_fault, "expected"] > 0).any()  # the demand goes on; only the data are wrong
    real = data[~in_fault]
    mu, y, k = real["expected"], real["y"], real["dispersion"]
    # Sums of many independent NB counts: mean and variance as the model says, within sampling error.
    assert abs(y.sum() / mu.sum() - 1) < 4 * np.sqrt((mu + mu**2 / k).sum()) / mu.sum()
    # Pearson statistic per row: 1 for NB(mu, k); Poisson noise alone would give about 1 / (1 + mu / k).
    pearson = ((y - mu) ** 2 / (mu + mu**2 / k)).mean()
    assert 0.96 < pearson < 1.04
    assert ((y - mu) ** 2 / mu).mean() > 1.3  # over-dispersed against Poisson


def test_daily_and_weekly_rhythm(clean):
    data = clean.data
    hour, dow = data["ds"].dt.hour, data["ds"].dt.day_of_week
    busy = clean.streams.loc[clean.streams["scale"] > 5, "unique_id"]
    per_zone = data[data["unique_id"].isin(busy)].groupby(["unique_id", hour])["y"].mean().unstack()
    night = per_zone[[2, 3, 4, 5]].mean(axis=1)
    evening = per_zone[[18, 19, 20, 21]].mean(axis=1)
    assert (night < 0.15 * evening).all()
    fleet = data.groupby(hour)["y"].sum()
    assert fleet[[12, 13]].sum() > 1.5 * fleet[[15, 16]].sum()  # a lunch peak
    assert fleet[[19, 20]].sum() > fleet[[12, 13]].sum()  # dinner is the bigger peak
    # Weekends: a later, bigger lunch; Friday and Saturday are the busiest days.
    weekend = dow >= 5
    lunch = hour.isin([13, 14])
    share_we = data.loc[weekend & lunch, "y"].sum() / data.loc[weekend, "y"].sum()
    share_wd = data.loc[~weekend & lunch, "y"].sum() / data.loc[~weekend, "y"].sum()
    assert share_we > 1.15 * share_wd
    per_day = data.groupby(dow)["y"].sum()
    assert per_day[[4, 5]].min() > per_day[[0, 1]].max()


# ---------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_read_round_trip(tmp_path, suffix):
    sim = simulate_platform(80, 40, seed=9, event_rate=3)
    assert len(sim.events) and sim.streams["launched"].notna().any() | sim.streams["closed"].notna().any()
    path = tmp_path / "sub" / f"orders{suffix}"
    paths = write_simulation(sim, path)
    assert paths == {"data": path, "events": tmp_path / "sub" / "orders.events.csv",
                     "streams": tmp_path / "sub" / "orders.streams.csv"}
    assert all(p.exists() for p in paths.values())
    back = read_simulation(path)
    pd.testing.assert_frame_equal(back.data, sim.data)
    pd.testing.assert_frame_equal(back.events, sim.events)
    pd.testing.assert_frame_equal(back.streams, sim.streams)
    pd.testing.assert_frame_equal(read_events(path), sim.events)
    pd.testing.assert_frame_equal(read_streams(str(path)), sim.streams)


def test_round_trip_keeps_the_expected_column(tmp_path):
    sim = simulate_platform(10, 3, seed=2, expected=True)
    write_simulation(sim, tmp_path / "orders.csv")
    pd.testing.assert_frame_equal(read_simulation(tmp_path / "orders.csv").data, sim.data)


def test_round_trip_without_events(tmp_path):
    sim = simulate_platform(5, 3, seed=1, event_rate=0)
    path = tmp_path / "clean.csv"
    write_simulation(sim, path)
    events = read_events(path)
    assert len(events) == 0 and events.dtypes.equals(sim.events.dtypes)
    assert read_events(tmp_path / "other.csv") is None and read_streams(tmp_path / "other.csv") is None


def test_a_failed_write_leaves_no_data_file_without_its_events(tmp_path, monkeypatch):
    """The data file was written first: when the events' file could not be (a full disk; its name taken by a
    folder), the data stood alone, and a backtest of it found no ground truth. All three or none now, and a
    second write over an earlier simulation leaves that one whole when it fails."""
    sim = simulate_platform(5, 3, seed=1)
    path = tmp_path / "orders.csv"
    (tmp_path / "orders.events.csv").mkdir()
    with pytest.raises(IsADirectoryError, match="orders.events.csv is a folder; nothing was written"):
        write_simulation(sim, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.events.csv"]
    (tmp_path / "orders.events.csv").rmdir()
    earlier = write_simulation(simulate_platform(4, 2, seed=2), path)
    before = {kind: p.read_bytes() for kind, p in earlier.items()}

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_simulation(sim, path)
    monkeypatch.undo()
    assert {kind: p.read_bytes() for kind, p in earlier.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.csv", "orders.events.csv", "orders.streams.csv"]


def test_write_rejects_unknown_suffix(tmp_path):
    sim = simulate_platform(3, 2, seed=1)
    with pytest.raises(ValueError, match=r"\.txt"):
        write_simulation(sim, tmp_path / "orders.txt")
    with pytest.raises(ValueError, match="suffix ''"):
        write_simulation(sim, tmp_path / "orders")


# ------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("kwargs, name", [
    ({"n_zones": 0}, "n_zones"),
    ({"n_zones": 2.5}, "n_zones"),
    ({"days": 0}, "days"),
    ({"days": "7"}, "days"),
    ({"seed": -1}, "seed"),
    ({"n_cities": 0}, "n_cities"),
    ({"n_cities": 11}, "n_cities"),
    ({"start": "not a date"}, "start"),
    ({"start": "2025-01-06 10:30"}, "start"),
    ({"start": "2025-01-06T00:00+01:00"}, "start"),
    ({"event_rate": -0.1}, "event_rate"),
    ({"event_rate": float("nan")}, "event_rate"),
    ({"outages": "yes"}, "outages"),
    ({"expected": 1}, "expected"),
    ({"clean_days": -1}, "clean_days"),
])
def test_bad_arguments_raise_naming_the_parameter(kwargs, name):
    args = {"n_zones": 10, "days": 3, **kwargs}
    with pytest.raises(ValueError, match=name):
        simulate_platform(**args)


# -- drivers: weather and announced campaigns ----------------------------------------------------------------
def test_drivers_add_weather_and_campaign_columns_that_move_demand_as_documented():
    plain = simulate_platform(30, 60, seed=4, expected=True, event_rate=3)
    sim = simulate_platform(30, 60, seed=4, expected=True, event_rate=3, drivers=True)
    d = sim.data
    assert list(d.columns) == ["unique_id", "ds", "y", "expected", "temperature", "rain", "campaign"]
    # Same platform and events; same rows.
    pd.testing.assert_frame_equal(sim.events, plain.events)
    pd.testing.assert_frame_equal(d[["unique_id", "ds"]], plain.data[["unique_id", "ds"]])
    # The mean moves exactly by the documented weather multiplier.
    factor = np.exp(-0.02 * (d["temperature"] - 12)) * (1 + 0.1 * np.minimum(d["rain"], 5))
    np.testing.assert_allclose(d["expected"] / plain.data["expected"], factor, rtol=1e-9)
    # Weather is per city and hour: every zone of a city sees the same values.
    city = d["unique_id"].str[:3]
    assert (d.groupby([city, "ds"])["temperature"].nunique() == 1).all()
    # About 9 % of hours wet (stationary share of the rain chain 0.015 / 0.165); 30 zones x 60 days.
    assert 0.05 < (d["rain"] > 0).mean() < 0.14
    # The campaign driver (the planned uplift, tests/test_campaign_intensity.py) is positive exactly inside
    # the campaign events of the zone, and 0 elsewhere.
    flag = np.zeros(len(d), dtype=bool)
    for ev in sim.events[sim.events["kind"] == "campaign"].itertuples():
        flag |= ((d["unique_id"] == ev.unique_id) & (d["ds"] >= ev.start) & (d["ds"] < ev.end)).to_numpy()
    assert flag.any()
    assert np.array_equal(d["campaign"].to_numpy() > 0, flag)
    assert (d["campaign"].to_numpy()[~flag] == 0).all()
    with pytest.raises(ValueError, match="drivers must be True or False"):
        simulate_platform(3, 2, drivers="yes")



def test_campaign_rate_changes_only_the_campaigns():
    base = simulate_platform(40, 60, seed=2, event_rate=2)
    none = simulate_platform(40, 60, seed=2, event_rate=2, campaign_rate=0)
    more = simulate_platform(40, 60, seed=2, event_rate=2, campaign_rate=4)
    other = lambda sim: sim.events[sim.events["kind"] != "campaign"].drop(columns="event_id")  # noqa: E731
    for sim in (none, more):
        pd.testing.assert_frame_equal(other(sim).reset_index(drop=True), other(base).reset_index(drop=True))
    count = lambda sim: sim.events.loc[sim.events["kind"] == "campaign", "event_id"].nunique()  # noqa: E731
    assert count(none) == 0 and count(more) > count(base)
