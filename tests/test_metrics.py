"""Prometheus metrics of a store (mlma.metrics), parsed back with prometheus_client's own parsers."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import sqlalchemy as sa
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from mlma.control import Operations
from mlma.escalations import Escalation
from mlma.metrics import KNOWN_KINDS, MAX_ACTIONS, render_metrics
from mlma.store import Store, TickRecord, TickSummary
from mlma.store import schema as S
from mlma.store.testing import serve_first_models

UTC = dt.timezone.utc


def samples(body: bytes) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}, from the classic text format parser."""
    out = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def summary(**values) -> TickSummary:
    base = {"n_streams": 6, "verdicts": {"ok": 6}, "retrains": 0, "promoted": 0, "rejected": 0, "initial_fits": 0,
            "fit_failures": 0, "compute_seconds": 0.0, "loss": 1.0, "reference_loss": 1.0, "loss_ratio": 1.0,
            "escalations": 0, "awaiting_approval": 0, "pinned": 0, "duration_seconds": 1.0}
    base.update(values)
    return TickSummary(**base)


def build(store: Store) -> dict:
    """A store with ticks, escalations, audit entries, queued actions and alert deliveries; returns facts."""
    frame = pd.DataFrame({"unique_id": [f"zone-{i}" for i in range(6)],
                          "ds": pd.Timestamp("2025-01-01"), "y": 1.0})
    store.ingest_frame(frame, source="day-1.csv")
    store.set_attributes({f"zone-{i}": {"city": "Berlin" if i < 4 else "Paris"} for i in range(6)})

    store.write_tick(TickRecord(0, summary=summary(initial_fits=6, compute_seconds=3.25, verdicts={"cold": 6},
                                                   duration_seconds=8.0)))
    store.write_tick(TickRecord(1, summary=summary(retrains=2, compute_seconds=1.5, rejected=1, fit_failures=1,
                                                   verdicts={"ok": 4, "degraded": 2})))
    store.begin_tick(2)
    store.fail_tick(2, RuntimeError("database went away"))
    store.begin_tick(2)                      # second attempt
    store.write_tick(TickRecord(2, summary=summary(retrains=3, promoted=2, compute_seconds=2.0, loss=1.3, policy_loss=0.21,
                                                   reference_loss=1.0, loss_ratio=1.3, awaiting_approval=1,
                                                   duration_seconds=12.5,
                                                   verdicts={"ok": 3, "degraded": 1, "cooling-down": 1, "pinned": 1},
                                                   escalations=4)))
    store.fail_tick(3, "model service crashed")
    store.begin_tick(4)                      # running now

    e = store.add_escalations([Escalation(s, 1, "data-quality", 2, "flat") for s in range(4)]
                              + [Escalation(4, 2, "silent", 1, "no actuals"), Escalation(5, 2, "silent", 1, "none"),
                                 Escalation(5, 2, "cold", 1, "fallback"), Escalation(-1, 2, "budget", 3, "queued")])
    store.set_escalation_status([e[0]], "acknowledged", by="user:ana")
    store.set_escalation_status([e[4]], "silenced", by="user:ana", silenced_until="2999-01-01")
    store.set_escalation_status([e[5]], "silenced", by="user:ana",
                                silenced_until=dt.datetime.now(UTC) - dt.timedelta(hours=1))   # ran out: open
    store.set_escalation_status([e[6]], "resolved", by="user:bo")

    ops = Operations(store)
    ops.pin(group={"city": "Paris"}, by="user:ana", reason="holiday")
    serve_first_models(store, store.resolve_many(["zone-0", "zone-1", "zone-2"]))  # a re-training needs a model
    ops.force_retrain(["zone-0", "zone-1", "zone-2"], by="user:bo")
    store.add_audit("agent", "tick-note", "fleet")

    with store.engine.begin() as conn:
        now = dt.datetime.now(UTC)
        rows = [("ops", "sent"), ("ops", "sent"), ("ops", "failed"), ("pager", "failed"), ("ops", "sent")]
        conn.execute(sa.insert(S.alert_notifications), [
            {"receiver": r, "group_key": '{kind="silent"}', "escalation_ids": [1, 2], "status": st, "attempts": 1,
             "created_at": now, "sent_at": now if st == "sent" else None} for r, st in rows])
    return {"escalation_ids": e}


def test_series_match_what_the_store_holds(store):
    build(store)
    lease = store.acquire_lock("agent@test:1", ttl=60)
    body, content_type = render_metrics(store)
    lease.release()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    got = samples(body)

    def value(name, **labels):
        return got[(name, tuple(sorted(labels.items())))]

    assert value("mlma_known_streams") == 6
    # Ticks: 0, 1, 2 done (2 after a failed attempt), 3 failed, 4 running.
    assert [value("mlma_ticks", status=s) for s in ("done", "failed", "running")] == [3, 1, 1]
    assert value("mlma_tick_attempts_total") == 6 and value("mlma_tick_failures_total") == 2
    assert value("mlma_last_completed_tick") == 2
    finished = store.ticks().set_index("tick").loc[2, "finished_at"]
    assert value("mlma_last_tick_completed_timestamp_seconds") == pytest.approx(finished.timestamp())
    assert value("mlma_last_tick_duration_seconds") == 12.5
    # Counters: sums over the done ticks' summaries.
    assert value("mlma_retrains_total") == 5 and value("mlma_promotions_total") == 2
    assert value("mlma_rejected_challengers_total") == 1 and value("mlma_fit_failures_total") == 1
    assert value("mlma_initial_fits_total") == 6
    assert value("mlma_compute_seconds_total") == pytest.approx(6.75)
    # Gauges of the last done tick (2).
    assert {v: value("mlma_streams", verdict=v) for v in ("ok", "degraded", "cooling-down", "pinned", "cold")} == {
        "ok": 3, "degraded": 1, "cooling-down": 1, "pinned": 1, "cold": 0}
    assert value("mlma_fleet_loss_ratio") == pytest.approx(1.3) and value("mlma_fleet_loss") == pytest.approx(1.3)
    assert value("mlma_fleet_reference_loss") == 1.0 and value("mlma_streams_awaiting_approval") == 1
    assert value("mlma_tick_streams") == 6 and value("mlma_tick_escalations") == 4
    assert value("mlma_fleet_policy_loss") == pytest.approx(0.21)
    # Escalations by current status; the silence that ran out counts as open.
    assert value("mlma_escalations", status="open", kind="data-quality", severity="2") == 3
    assert value("mlma_escalations", status="acknowledged", kind="data-quality", severity="2") == 1
    assert value("mlma_escalations", status="silenced", kind="silent", severity="1") == 1
    assert value("mlma_escalations", status="open", kind="silent", severity="1") == 1
    assert value("mlma_escalations", status="resolved", kind="cold", severity="1") == 1
    assert value("mlma_escalations", status="open", kind="budget", severity="3") == 1
    assert value("mlma_escalations", status="open", kind="challenger-lost", severity="2") == 0
    # Each failed tick raised a `tick-failed` item: tick 2's was resolved by its commit, tick 3's is open.
    assert value("mlma_escalations", status="resolved", kind="tick-failed", severity="3") == 1
    assert value("mlma_escalations", status="open", kind="tick-failed", severity="3") == 1
    assert sum(v for (n, _), v in got.items() if n == "mlma_escalations") == 10
    assert value("mlma_escalations_created_total", kind="data-quality") == 4
    assert value("mlma_escalations_created_total", kind="silent") == 2
    # The audit log: four escalation changes, a pin, a forced re-training and an agent's entry.
    assert value("mlma_actions_total", action="escalation-acknowledged", actor="user") == 1
    assert value("mlma_actions_total", action="escalation-silenced", actor="user") == 2
    assert value("mlma_actions_total", action="escalation-resolved", actor="user") == 1
    assert value("mlma_actions_total", action="pin", actor="user") == 1
    assert value("mlma_actions_total", action="retrain", actor="user") == 1
    assert value("mlma_actions_total", action="tick-note", actor="agent") == 1
    assert value("mlma_pending_stream_actions", kind="retrain") == 3
    assert value("mlma_pending_stream_actions", kind="approve") == 0
    assert value("mlma_alert_notifications_total", receiver="ops", status="sent") == 3
    assert value("mlma_alert_notifications_total", receiver="ops", status="failed") == 1
    assert value("mlma_alert_notifications_total", receiver="pager", status="failed") == 1
    assert value("mlma_tick_lock_held") == 1
    ingested = store.ingests()["at"].max()
    assert value("mlma_last_ingest_timestamp_seconds") == pytest.approx(ingested.timestamp())
    assert ("mlma_build_info", (("version", __import__("mlma").__version__),)) in got

    # Bounded labels: no label names or carries a stream.
    names = set(store.streams()["unique_id"])
    for (name, labels), _ in got.items():
        assert name.startswith("mlma_")
        for label, text in labels:
            assert label not in {"stream", "unique_id", "stream_id"} and text not in names, (name, label, text)
    # As many series as the label values allow (kinds x statuses x severities, and per kind), not per stream.
    assert render_metrics(store)[0].count(b"\nmlma_") < len(KNOWN_KINDS) * (4 * 3 + 1) + 60

    # Without the lock, the gauge says so.
    assert samples(render_metrics(store)[0])[("mlma_tick_lock_held", ())] == 0


def test_empty_store_and_openmetrics(store):
    body, _ = render_metrics(store)
    got = samples(body)
    assert got[("mlma_retrains_total", ())] == 0 and got[("mlma_tick_attempts_total", ())] == 0
    assert not any(name in ("mlma_streams", "mlma_last_completed_tick", "mlma_fleet_loss_ratio")
                   for name, _ in got), "gauges of the last tick need a done tick"
    store.write_tick(TickRecord(0))                  # a tick without a summary (written before migration 0003)
    store.write_tick(TickRecord(1, summary=summary(retrains=2, verdicts={"ok": 5, "warming-up": 1})))
    body, content_type = render_metrics(store, accept="application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    families = {f.name: f for f in openmetrics_families(body.decode())}
    assert families["mlma_retrains"].type == "counter"
    assert [s.value for s in families["mlma_retrains"].samples if s.name == "mlma_retrains_total"] == [2]
    assert {s.labels["verdict"]: s.value for s in families["mlma_streams"].samples}["warming-up"] == 1


def test_label_values_stay_bounded(store):
    store.stream_ids(["zone-1"])
    with store.engine.begin() as conn:
        now = dt.datetime.now(UTC)
        conn.execute(sa.insert(S.escalations), [
            {"stream_id": 0, "tick": 1, "kind": f"custom-{i}", "severity": 2, "message": "m", "status": "open",
             "created_at": now, "updated_at": now} for i in range(5)])
    for i in range(MAX_ACTIONS + 10):
        store.add_audit("user:ana", f"action-{i:03d}", reason="load")
    store.add_audit("user:ana", "Weird Action!")
    got = samples(render_metrics(store)[0])
    kinds = {dict(labels)["kind"] for name, labels in got if name == "mlma_escalations"}
    assert "other" in kinds and not any(k.startswith("custom-") for k in kinds)
    assert got[("mlma_escalations", (("kind", "other"), ("severity", "2"), ("status", "open")))] == 5
    actions = {dict(labels)["action"]: v for (name, labels), v in got.items() if name == "mlma_actions_total"}
    assert len(actions) == MAX_ACTIONS + 1 and actions["other"] == 11
