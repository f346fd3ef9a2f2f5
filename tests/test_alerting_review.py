"""A hostile review of alerting and metrics, each finding met as the operator meets it:

- a tick that cannot start (a damaged saved state) counts in ``mlma_tick_failures_total``, once per failure,
  so that MlmaTickFailing and MlmaTickFailingRepeatedly fire as docs/alerts.md says (it stayed 0);
- a receiver's first failed delivery fires MlmaAlertDeliveryFailing: ``/metrics`` serves both outcomes of
  every receiver from 0 (the failed series appeared at 1, and ``increase()`` cannot see a series appear);
- a receiver that echoes a configured header (``Authorization``) in its error answer leaves no secret in the
  log nor in ``alert_notifications.error`` (only the URL's secrets were cut out);
- ``mlma run`` sends a delivery that failed at the tick in its next round without a tick, not a tick later;
- ``mlma_newest_observation_timestamp_seconds`` measures data time, where the last ingest's time moves with a
  file of old data.

MlmaNotScraped for one project among several, and the dashboard's Project variable, are in
``deploy/prometheus/mlma-alerts.test.yml`` and ``tests/test_grafana.py``.
"""

from __future__ import annotations

import base64
import logging
import sqlite3
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlma.alerts import Notifier, parse_receivers
from mlma.escalations import Escalation
from mlma.live import LiveAgent
from mlma.metrics import render_metrics
from mlma.project import load_config
from mlma.store import Store
from mlma.store import schema as S
from test_alerts import Hook
from test_grafana import ALERTS, _tool, alert_rules
from test_live_config_changes import files, make_project, ok, run_cli, templates  # noqa: F401 - fixtures

SECRET = "s3cr3t-webhook-credential"


def samples(store: Store, **kwargs) -> dict[tuple[str, tuple], float]:
    body, _ = render_metrics(store, **kwargs)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def notification_series(store: Store, **kwargs) -> dict[tuple[str, str], float]:
    return {(dict(labels)["receiver"], dict(labels)["status"]): value
            for (name, labels), value in samples(store, **kwargs).items() if name == "mlma_alert_notifications_total"}


def records(store: Store) -> list:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(S.alert_notifications).order_by(S.alert_notifications.c.id)).all()


@pytest.fixture
def sqlite_store(tmp_path):
    with Store.create(f"sqlite:///{tmp_path / 'mlma.db'}") as opened:
        yield opened


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


# -- a tick that cannot start counts as a failed attempt ------------------------------------------------------------
def test_a_tick_that_cannot_start_counts_in_the_failure_counter_once_per_failure(make_project):
    """The saved state is damaged: every attempt fails before the tick begins, marks no tick and only updates
    the one `tick-failed` item. The failure counter stayed 0, so the rules on it never fired."""
    root = make_project()
    config = load_config(root)
    db = Path(config.store_url.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        newest, blob = conn.execute("SELECT tick, blob FROM agent_state ORDER BY tick DESC LIMIT 1").fetchone()
        conn.execute("UPDATE agent_state SET blob = ? WHERE tick = ?", (b"\x00\x11\x22\x33", newest))
    with Store.open(config.store_url) as store:
        before = samples(store)
    assert before[("mlma_tick_failures_total", ())] == 0
    with LiveAgent(config, executor="inline") as live:
        for _ in range(3):
            with pytest.raises(Exception, match=f"saved agent state of tick {newest} is damaged"):
                live.step()
        after = samples(live.store)
        items = live.store.escalations(status="open").query("kind == 'tick-failed'")
        audited = list(live.store.audit_log(action="tick-start-failed")["target"])
    assert after[("mlma_tick_failures_total", ())] == 3                      # MlmaTickFailingRepeatedly: >= 3
    assert after[("mlma_tick_attempts_total", ())] == before[("mlma_tick_attempts_total", ())] + 3
    assert after[("mlma_ticks", (("status", "failed"),))] == 0                # no tick row was marked
    assert len(items) == 1 and audited == [f"tick:{newest + 1}"] * 3         # one item; an entry per failure
    # Mended, the tick commits: the counter keeps its 3 (a counter never goes down) and counts nothing more.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE agent_state SET blob = ? WHERE tick = ?", (blob, newest))
    with LiveAgent(config, executor="inline") as live:
        assert live.step().tick == newest + 1
        done = samples(live.store)
    assert done[("mlma_tick_failures_total", ())] == 3
    assert done[("mlma_tick_attempts_total", ())] == after[("mlma_tick_attempts_total", ())] + 1


def test_a_failure_before_a_tick_begins_is_not_counted_when_it_is_a_stop(monkeypatch, make_project):
    """A Ctrl-C while the clock is read is no failure (not escalated): nothing counts it either."""
    config = load_config(make_project())

    def stopped():
        raise KeyboardInterrupt

    with LiveAgent(config, executor="inline") as live:
        monkeypatch.setattr(live, "timing", stopped)
        with pytest.raises(KeyboardInterrupt):
            live.step()
        got = samples(live.store)
        assert live.store.audit_log(action="tick-start-failed").empty
    assert got[("mlma_tick_failures_total", ())] == 0


# -- a receiver's first failure -------------------------------------------------------------------------------------
def test_every_receiver_is_served_with_both_outcomes_from_zero(sqlite_store):
    ids = sqlite_store.stream_ids(["zone-1"])
    sqlite_store.add_escalations([Escalation(int(ids[0]), 3, "data-quality", 2, "flat line")])
    # Configured, nothing delivered yet: both series at 0, so the first failure is a step increase() sees.
    assert notification_series(sqlite_store, receivers=["hook", "pager"]) == {
        ("hook", "sent"): 0, ("hook", "failed"): 0, ("pager", "sent"): 0, ("pager", "failed"): 0}
    # The receivers as configured, as docs/alerts.md shows it: each served by its name (it was the receiver's
    # repr, {receiver="Receiver(name='hook', target=...)"}).
    configured = parse_receivers([{"name": "hook", "url": "http://127.0.0.1:9/hook"},
                                  {"name": "pager", "url": "http://127.0.0.1:9/pager"}])
    assert notification_series(sqlite_store, receivers=configured) == {
        ("hook", "sent"): 0, ("hook", "failed"): 0, ("pager", "sent"): 0, ("pager", "failed"): 0}
    notifier = Notifier(sqlite_store, parse_receivers([{"name": "hook", "url": "http://127.0.0.1:9/hook",
                                                        "attempts": 1}]))
    assert [d.status for d in notifier.notify(tick=3).result(30)] == ["failed"]
    assert notifier.close(5)
    # A receiver with a recorded delivery is served without being named (a server not told the configuration).
    assert notification_series(sqlite_store) == {("hook", "sent"): 0, ("hook", "failed"): 1}
    assert notification_series(sqlite_store, receivers=["pager"])[("pager", "failed")] == 0


def test_the_served_metrics_start_a_projects_configured_receivers_at_zero(make_project):
    """`mlma serve`'s /metrics was not told the project's receivers: one whose very first delivery failed was
    never seen by MlmaAlertDeliveryFailing."""
    from fastapi.testclient import TestClient

    from mlma.api import create_app

    root = make_project()
    with open(root / "mlma.toml", "a") as toml:
        toml.write('\n[[alerts.receivers]]\nname = "ops"\nurl = "http://127.0.0.1:9/hook"\n')
    app = create_app(load_config(root), public_metrics=True)
    with TestClient(app) as client:
        body = client.get("/metrics").text
    served = {(s.labels["receiver"], s.labels["status"]): s.value for family in text_string_to_metric_families(body)
              for s in family.samples if s.name == "mlma_alert_notifications_total"}
    assert served == {("ops", "sent"): 0, ("ops", "failed"): 0}, served


def test_a_first_failed_delivery_fires_the_shipped_rule_in_promtool(tmp_path):
    """What the server serves before and after a receiver's first failure, scraped every 10 minutes, is fed to
    promtool with the shipped rules: the alert must fire. With the failed series appearing at 1 it did not."""
    promtool = _tool("promtool")
    store = Store.create(f"sqlite:///{tmp_path / 'mlma.db'}")
    before = notification_series(store, receivers=["hook"])
    with store.engine.begin() as conn:
        conn.execute(sa.insert(S.alert_notifications).values(
            receiver="hook", group_key='{kind="silent"}', escalation_ids=[1], status="failed", attempts=4,
            created_at=pd.Timestamp.now(tz="UTC").to_pydatetime()))
    after = notification_series(store, receivers=["hook"])
    store.close()
    series = []
    for receiver, status in sorted(set(before) | set(after)):
        values = " ".join("_" if before.get((receiver, status)) is None else f"{before[(receiver, status)]:g}"
                          for _ in range(12))
        values += " " + " ".join(f"{after[(receiver, status)]:g}" for _ in range(12))
        series.append({"series": f'mlma_alert_notifications_total{{job="mlma", instance="a", receiver="{receiver}", '
                                 f'status="{status}"}}', "values": values})
    (rule,) = [r for r in alert_rules() if r["alert"] == "MlmaAlertDeliveryFailing"]
    annotations = {k: v.replace("{{ $labels.receiver }}", "hook") for k, v in rule["annotations"].items()}
    test = {"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": [{
        "interval": "10m", "input_series": series,
        "alert_rule_test": [{"eval_time": "2h10m", "alertname": "MlmaAlertDeliveryFailing", "exp_alerts": [
            {"exp_labels": {"severity": "warning", "job": "mlma", "instance": "a", "receiver": "hook"},
             "exp_annotations": annotations}]}]}]}
    (tmp_path / "first-failure.test.yml").write_text(yaml.safe_dump(test))
    tested = subprocess.run([promtool, "test", "rules", "first-failure.test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr


# -- header secrets -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header, answer", [
    ("Bearer " + SECRET, "invalid credentials: Bearer " + SECRET),
    ("Bearer " + SECRET, "unknown token " + SECRET + " (expired?)"),       # the token alone
    ("Basic " + base64.b64encode(f"mlma:{SECRET}".encode()).decode(), "wrong password " + SECRET + " for mlma"),
    ("Bearer " + SECRET, "x" * 285 + " token " + SECRET),                  # across the 300 characters kept
])
def test_a_header_secret_the_receiver_echoes_is_neither_logged_nor_recorded(sqlite_store, hook, caplog, header,
                                                                          answer):
    """docs/alerts.md: headers are never logged or recorded. A receiver that names the credential it refused
    put it in both, since only the URL's secrets were cut out of its answer."""
    ids = sqlite_store.stream_ids(["zone-1"])
    sqlite_store.add_escalations([Escalation(int(ids[0]), 3, "data-quality", 2, "flat line")])
    hook.script = [(401, {})]
    hook.answer = answer
    notifier = Notifier(sqlite_store, parse_receivers([{"name": "ops", "url": hook.url, "attempts": 1,
                                                        "headers": {"Authorization": header, "X-Team": "ops"}}]))
    with caplog.at_level(logging.INFO, logger="mlma.alerts"):
        (delivery,) = notifier.notify(tick=3).result(30)
    assert notifier.close(5)
    assert hook.requests[0]["headers"]["Authorization"] == header             # it was sent
    (row,) = records(sqlite_store)
    assert delivery.status == "failed" and row.error == delivery.error and delivery.error.startswith("HTTP 401")
    for text in (row.error, caplog.text):
        # Not even a part of it: an answer cut at 300 characters kept the token's first letters.
        assert SECRET[:4] not in text and header not in text, text
    assert "..." in row.error                                                  # where it was


# -- mlma run retries between ticks -------------------------------------------------------------------------------
def test_mlma_run_delivers_what_failed_at_the_tick_in_its_next_round_without_a_tick(make_project, hook):
    """The receiver answered 503 at the moment of the tick; `mlma run` rounds with no tick due never notified,
    so the escalation waited for the next tick (a day with daily ticks), or was never sent if it cleared."""
    root = make_project()
    with open(root / "mlma.toml", "a") as toml:
        # One kind the tick neither raises nor resolves (a person does): one delivery per notification.
        toml.write(f'\n[[alerts.receivers]]\nname = "ops"\nurl = "{hook.url}"\nattempts = 1\nkinds = ["budget"]\n')
    config = load_config(root)
    with Store.open(config.store_url) as store:
        (item,) = store.add_escalations([Escalation(-1, 1, "budget", 2, "re-trainings were queued")])
    hook.script = [(503, {})]
    ok(run_cli(root, "tick"))                                                  # notifies at its commit: 503
    with Store.open(config.store_url) as store:
        assert [r.status for r in records(store)] == ["failed"]
        done = store.last_done_tick()
    started = time.monotonic()
    ok(run_cli(root, "run", "--every", "1s", "--iterations", "2"))
    assert time.monotonic() - started < 60
    with Store.open(config.store_url) as store:
        assert store.last_done_tick() == done                                  # no tick was due (no new data)
        assert [r.status for r in records(store)] == ["failed", "sent"]
    assert len(hook.requests) == 2
    sent = hook.requests[1]["json"]
    assert sent["mlma"]["tick"] is None and sent["mlma"]["reason"] == "new"   # no tick committed with it
    assert str(item) in [a["annotations"]["escalation_id"] for a in sent["alerts"]]


def test_notify_due_queues_nothing_while_a_notification_is_under_way(sqlite_store, hook):
    """Rounds that come faster than a delivery (a receiver that hangs, a long queue to plan) must not pile up
    plans, nor try a down receiver once more per round."""
    ids = sqlite_store.stream_ids(["zone-1"])
    sqlite_store.add_escalations([Escalation(int(ids[0]), 3, "data-quality", 2, "flat line")])
    hook.hang = 30
    notifier = Notifier(sqlite_store, parse_receivers([{"name": "ops", "url": hook.url, "attempts": 1,
                                                        "timeout_seconds": 10}]))
    first = notifier.notify_due()
    assert first is not None
    deadline = time.monotonic() + 10
    while not hook.requests:
        assert time.monotonic() < deadline, "the receiver was not called"
        time.sleep(0.05)
    assert [notifier.notify_due() for _ in range(5)] == [None] * 5
    hook.release.set()
    assert [d.status for d in first.result(20)] == ["sent"]
    time.sleep(0.2)                                                            # the future's callbacks run
    assert notifier.notify_due().result(20) == []                              # nothing due: sent, not repeated
    assert len(hook.requests) == 1
    assert notifier.close(5)


# -- data time and ingest time ----------------------------------------------------------------------------------
def test_the_newest_observation_time_is_data_time_where_the_last_ingest_is_wall_clock_time(sqlite_store):
    def frame(day: str) -> pd.DataFrame:
        return pd.DataFrame({"unique_id": ["zone-1", "zone-2"], "ds": pd.Timestamp(day), "y": 1.0})

    assert ("mlma_newest_observation_timestamp_seconds", ()) not in samples(sqlite_store)
    sqlite_store.ingest_frame(frame("2025-01-02"), source="day-2.csv")
    first = samples(sqlite_store)
    time.sleep(0.05)
    sqlite_store.ingest_frame(frame("2025-01-01"), source="day-1.csv")        # late data of an earlier day
    late = samples(sqlite_store)
    newest = pd.Timestamp("2025-01-02", tz="UTC").timestamp()
    assert first[("mlma_newest_observation_timestamp_seconds", ())] == newest
    assert late[("mlma_newest_observation_timestamp_seconds", ())] == newest
    assert late[("mlma_last_ingest_timestamp_seconds", ())] > first[("mlma_last_ingest_timestamp_seconds", ())]
