"""Labour: escalations per 1,000 stream-days by class, and their precision against ground-truth events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlma.backtest import BacktestConfig, run_backtest
from mlma.detection import escalation_class, labour_scores

BOUNDS = pd.date_range("2025-01-01", periods=41, freq="D")


def events(*rows) -> pd.DataFrame:
    return pd.DataFrame([{"unique_id": uid, "kind": kind, "start": pd.Timestamp(start), "end": pd.Timestamp(end)}
                         for uid, kind, start, end in rows])


def escalations(*rows) -> pd.DataFrame:
    return pd.DataFrame([{"unique_id": uid, "tick": tick, "kind": kind} for uid, tick, kind in rows],
                        columns=["unique_id", "tick", "kind"])


def test_classes_of_escalation():
    assert [escalation_class(k) for k in ("data-quality", "silent", "cold")] == ["data"] * 3
    assert [escalation_class(k) for k in ("repeated-trigger", "challenger-lost", "fit-failed", "budget")] == \
        ["retraining"] * 4


def test_rates_are_per_thousand_stream_days_by_class():
    esc = escalations(("a", 3, "silent"), ("b", 4, "repeated-trigger"), ("b", 9, "challenger-lost"))
    out = labour_scores(esc, 500.0)
    assert out == {"escalations_per_1k_stream_days": 6.0, "data_escalations_per_1k_stream_days": 2.0,
                   "retraining_escalations_per_1k_stream_days": 4.0}
    assert labour_scores(escalations(), 500.0)["escalations_per_1k_stream_days"] == 0.0


def test_precision_counts_only_events_that_need_a_person_on_the_same_stream_within_the_window():
    truth = events(("a", "outage_zeros", "2025-01-10", "2025-01-12"),    # data fault: needs a person
                   ("b", "storm", "2025-01-10", "2025-01-11"),           # passes by itself
                   ("c", "closure", "2025-01-20", "2025-01-20"))         # instant, permanent
    esc = escalations(
        # Tick k covers day k + 1 of January.
        ("a", 10, "data-quality"),   # during the outage
        ("a", 18, "data-quality"),   # the window of 7 ticks back starts 01-12, the outage's last day
        ("a", 19, "silent"),         # the window starts 01-13: after the outage
        ("b", 9, "data-quality"),    # a storm is not a data fault
        ("c", 18, "silent"),         # tick 18 ends as the closure happens: not yet
        ("c", 19, "silent"),         # the closure's tick
        ("x", 11, "repeated-trigger"),
    )
    out = labour_scores(esc, 1000.0, events=truth, boundaries=BOUNDS)
    assert out["escalation_precision"] == pytest.approx(round(3 / 7, 4))
    assert out["data_escalation_precision"] == pytest.approx(round(3 / 6, 4))
    assert out["retraining_escalation_precision"] == 0.0


def test_a_backtest_reports_labour_per_policy():
    ds = pd.date_range("2025-03-03", periods=24 * 20, freq="h")
    rng = np.random.default_rng(0)
    frames = []
    for i in range(5):
        y = 10 + 5 * np.sin(np.arange(len(ds)) * 2 * np.pi / 24) + rng.normal(0, 1, len(ds))
        keep = np.ones(len(ds), dtype=bool)
        if i == 0:
            keep[24 * 13:24 * 17] = False  # stream 0 stops reporting for four days
        frames.append(pd.DataFrame({"unique_id": f"s{i}", "ds": ds[keep], "y": y[keep]}))
    frame = pd.concat(frames, ignore_index=True)
    truth = pd.DataFrame({"unique_id": ["s0"], "kind": ["outage_missing"], "start": [ds[24 * 13]],
                          "end": [ds[24 * 17]], "relevant": [False]})
    result = run_backtest(frame, BacktestConfig(policies=["mlma", "never"], model="seasonal-naive",
                                                initial_ticks=10, sample_streams=0), events=truth)
    rows = {r["policy"]: r for r in result.summary}
    # Ten scored daily ticks of 24 hours; stream 0 had nothing scored for some of them (the four silent days
    # and the day after, whose seasonal-naive forecast needed the missing day).
    per_stream = result.per_stream[result.per_stream.policy == "never"].set_index("unique_id")["n_scored"]
    assert (per_stream.drop("s0") == 240).all() and per_stream["s0"] == 24 * 5
    assert rows["never"]["stream_days"] == pytest.approx(4 * 10 + 5)
    mlma = rows["mlma"]
    silent = result.escalation_log[(result.escalation_log.policy == "mlma")
                                   & (result.escalation_log.kind == "silent")]
    assert list(silent.unique_id) == ["s0"]
    n = len(result.escalation_log[result.escalation_log.policy == "mlma"])
    assert mlma["escalations_per_1k_stream_days"] == pytest.approx(1000 * n / 45, abs=1e-3)
    assert mlma["data_escalation_precision"] == pytest.approx(1.0)


def test_a_new_stream_short_of_history_is_not_escalated_but_one_that_cannot_get_its_model_is_once():
    """Two zones launch on day 30 of 50: one with ordinary hourly orders, one that reports the same count every
    hour. Both first run on a fall-back (a day of history, ridge needs nine). The ordinary zone's retries fit
    ridge once its history is long enough, with no escalation; the flat zone's retry with enough history still
    falls back (a constant series), which is escalated once, and its later retries are not."""
    from mlma.simulate import simulate_platform

    data = simulate_platform(6, 50, seed=1, event_rate=0).data
    day30 = data["ds"].min().normalize() + pd.Timedelta(days=30)
    hours = pd.date_range(day30, data["ds"].max(), freq="h")
    ordinary = data[data["unique_id"] == data["unique_id"].iloc[0]].set_index("ds")["y"].reindex(hours).to_numpy()
    launched = pd.DataFrame({"unique_id": "new-ordinary", "ds": hours, "y": ordinary})
    flat = pd.DataFrame({"unique_id": "new-flat", "ds": hours, "y": 3.0})
    frame = pd.concat([data, launched, flat], ignore_index=True)
    result = run_backtest(frame, BacktestConfig(policies=["never"], model="ridge", initial_ticks=21,
                                                frontier=False, executor="inline"))
    log = result.escalation_log
    cold = log[log["kind"] == "cold"]
    assert cold["unique_id"].tolist() == ["new-flat"]
    assert "series is constant" in cold["message"].iloc[0]
    # Raised at the first retry with nine days of history (tick k holds day k; the zone's first day is 30).
    assert 30 + 8 <= int(cold["tick"].iloc[0]) <= 30 + 10
    assert not log["unique_id"].eq("new-ordinary").any()
