"""Outgoing alerts (mlma.alerts) against a real HTTP receiver and a real store (SQLite, PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import re
import socket
import threading
import time

import pytest
import sqlalchemy as sa

from mlma import alerts
from mlma.alerts import (AlertConfigError, Notifier, Receiver, parse_duration, parse_receivers, post_json,
                         retry_after_seconds)
from mlma.escalations import Escalation
from mlma.store import Store
from mlma.store import schema as S
from mlma.store.testing import postgres_schema

BACKENDS = ["sqlite", "postgresql"]


# -- a webhook receiver on a free local port --------------------------------------------------------------------
class Hook:
    """A local HTTP server that records every POST and answers from a script.

    ``script`` is a list of (status, headers) for the first requests, then 200. ``hang`` makes it wait that
    many seconds (or until released) before answering. ``gates`` holds one event for each of the first
    requests: each waits for its own (at most 10 s) before answering.
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict]] = []
        self.gates: list[threading.Event] = []
        self.answer = "nope"  # the body of an answer other than 200; {path} is the path posted to
        self.hang = 0.0
        self.release = threading.Event()
        self._lock = threading.Lock()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with hook._lock:
                    hook.requests.append({"at": time.monotonic(), "path": self.path, "headers": dict(self.headers),
                                          "json": json.loads(body)})
                    status, headers = hook.script.pop(0) if hook.script else (200, {})
                    gate = hook.gates.pop(0) if hook.gates else None
                if gate is not None:
                    gate.wait(10)
                if hook.hang:
                    hook.release.wait(hook.hang)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    payload = b"ok" if status == 200 else hook.answer.format(path=self.path).encode()
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up waiting
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


@pytest.fixture
def hook2():
    server = Hook()
    yield server
    server.close()


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mlma.db'}"
    else:
        with postgres_schema(request.getfixturevalue("postgres_server")) as scoped:
            yield scoped


@pytest.fixture
def store(url):
    with Store.create(url) as opened:
        yield opened


@pytest.fixture
def sqlite_store(tmp_path):
    with Store.create(f"sqlite:///{tmp_path / 'mlma.db'}") as opened:
        yield opened


def fleet(store: Store, cities: dict[str, int]) -> dict[str, list[int]]:
    """Streams named <city>-<i> with attribute city; returns their ids by city."""
    ids = {}
    for city, n in cities.items():
        names = [f"{city.lower()}-{i}" for i in range(n)]
        ids[city] = [int(i) for i in store.stream_ids(names)]
        store.set_attributes({name: {"city": city, "zone_type": "urban"} for name in names})
    return ids


def escalate(store: Store, streams, kind="data-quality", severity=2, tick=1, message="flat line") -> list[int]:
    return store.add_escalations([Escalation(s, tick, kind, severity, f"{message} ({s})") for s in streams])


def receiver(url: str, **kw) -> Receiver:
    defaults = {"name": "ops", "url": url, "group_by": ["kind", "city"], "repeat_interval": "1h",
                "timeout_seconds": 2, "attempts": 3, "backoff_seconds": 0.05}
    defaults.update(kw)
    return parse_receivers([defaults])[0]


def age_notifications(store: Store, hours: float) -> None:
    """Move every recorded delivery ``hours`` into the past: a repeat interval passes without waiting for it."""
    table = S.alert_notifications
    with store.engine.begin() as conn:
        for row in conn.execute(sa.select(table.c.id, table.c.sent_at)).all():
            if row.sent_at is not None:
                conn.execute(sa.update(table).where(table.c.id == row.id)
                             .values(sent_at=row.sent_at - dt.timedelta(hours=hours)))


def records(store: Store) -> list:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(S.alert_notifications).order_by(S.alert_notifications.c.id)).all()


# -- configuration ---------------------------------------------------------------------------------------------
def test_parse_receivers_reads_every_key_and_names_the_bad_one():
    (r,) = parse_receivers([{"name": "ops-slack", "url": "https://hooks.example.org/services/T/B/secret",
                             "format": "slack", "min_severity": 2, "kinds": ["data-quality", "silent"],
                             "group_by": ["kind", "city"], "repeat_interval": "1h30m",
                             "headers": {"Authorization": "Bearer t0ken"}, "timeout_seconds": 3, "attempts": 5,
                             "backoff_seconds": 0.5, "max_backoff_seconds": 30, "max_alerts": 20}])
    assert (r.format, r.min_severity, r.kinds, r.group_by) == ("slack", 2, ("data-quality", "silent"),
                                                               ("kind", "city"))
    assert (r.repeat_interval, r.timeout_seconds, r.attempts, r.max_alerts) == (5400.0, 3.0, 5, 20)
    assert r.headers == (("Authorization", "Bearer t0ken"),)
    # Secrets stay out of the repr: the webhook path and the headers.
    assert "secret" not in repr(r) and "t0ken" not in repr(r) and "hooks.example.org" in repr(r)

    def error(item, source="mlma.toml") -> str:
        with pytest.raises(AlertConfigError) as info:
            parse_receivers(item, source=source)
        return str(info.value)

    good = {"name": "ops", "url": "http://127.0.0.1:1/h"}
    assert error([{**good, "timout_seconds": 1}]) == (
        "mlma.toml: [[alerts.receivers]] #1 ('ops'): unknown key 'timout_seconds'; known: name, url, url_env, "
        "format, min_severity, kinds, group_by, repeat_interval, headers, timeout_seconds, attempts, "
        "backoff_seconds, max_backoff_seconds, max_alerts")
    assert "#2 ('b'): format must be 'generic' or 'slack', got 'teams'" in error(
        [good, {"name": "b", "url": "http://x.org/h", "format": "teams"}])
    assert "min_severity must be 1, 2 or 3, got 4" in error([{**good, "min_severity": 4}])
    assert "kinds: unknown escalation kind 'flat'" in error([{**good, "kinds": ["flat"]}])
    assert "url must be an http:// or https:// address with a host, got 'file:///...'" in error(
        [{"name": "ops", "url": "file:///etc/passwd"}])
    assert "exactly one of url" in error([{"name": "ops"}])
    assert "repeat_interval must be seconds" in error([{**good, "repeat_interval": "often"}])
    assert "attempts must be a whole number, got 2.5" in error([{**good, "attempts": 2.5}])
    assert "name 'ops' is already used by receiver #1" in error([good, good])
    assert "missing key 'name'" in error([{"url": "http://x.org/h"}])
    assert error({"name": "ops"}, source="p/mlma.toml").startswith("p/mlma.toml: [[alerts.receivers]] must be a list")
    assert parse_receivers(None) == [] and parse_receivers([]) == []


def test_durations_and_retry_after():
    assert parse_duration("4h") == 14400 and parse_duration("1d12h") == 129600 and parse_duration(0) == 0
    with pytest.raises(AlertConfigError):
        parse_duration("-1h")
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_a_repeat_interval_under_a_minute_is_refused(sqlite_store, hook):
    """repeat_interval = "0s" was accepted, and then every notify_due() (every round of mlma run) paged every
    open group again. Alertmanager takes no interval of 0; mlma refuses any under a minute, naming the receiver
    and the key, as written."""
    good = {"name": "ops", "url": "http://127.0.0.1:1/h"}
    for value in ("0s", 0, 0.0, "30s", "59s", "500ms", 59.9):
        with pytest.raises(AlertConfigError) as info:
            parse_receivers([good, {"name": "z", "url": "http://127.0.0.1:1/ok", "repeat_interval": value}],
                            source="p/mlma.toml")
        assert str(info.value).startswith(f"p/mlma.toml: [[alerts.receivers]] #2 ('z'): repeat_interval must be "
                                          f"at least 60 seconds ('1m')"), value
        assert str(info.value).endswith(f"got {value!r}")
    for value in ("-1s", -5):
        with pytest.raises(AlertConfigError, match="repeat_interval"):
            parse_receivers([{**good, "repeat_interval": value}])
    for value in (0, -1, "30s", float("nan")):  # built in Python: the range said is the one checked
        with pytest.raises(AlertConfigError, match="repeat_interval must be at least 60 seconds"):
            Receiver(name="ops", url="http://127.0.0.1:1/h", repeat_interval=value)
    assert [r.repeat_interval for r in parse_receivers([{**good, "repeat_interval": "1m"}])] == [60.0]
    assert Receiver(name="ops", url="http://127.0.0.1:1/h", repeat_interval=60).repeat_interval == 60.0

    # With the least interval, rounds of notify_due() do not page an open group again.
    ids = fleet(sqlite_store, {"Berlin": 2})
    escalate(sqlite_store, ids["Berlin"])
    notifier = Notifier(sqlite_store, [receiver(hook.url, repeat_interval="1m")])
    assert [d.status for d in notifier.notify(tick=1).result(20)] == ["sent"]
    for _ in range(3):
        due = notifier.notify_due()
        assert due is None or due.result(20) == []
    assert len(hook.requests) == 1 and notifier.close(5)


def test_a_failing_group_waits_out_a_back_off_between_ticks_but_not_its_new_members_nor_a_tick(sqlite_store,
                                                                                                monkeypatch):
    """`mlma run` tries what is due at every round without a tick: a receiver that stayed down was tried, and its
    failure recorded and logged, at each round (96 rows a day per group at a 15-minute round, 50 in half a second
    at `--every 10ms`). Between ticks a failed group now waits 1, 2, 4... minutes (at most an hour); a new member
    is tried at once, and so is every group after a tick."""
    import mlma.alerts as alerts

    ids = fleet(sqlite_store, {"Berlin": 2})
    escalate(sqlite_store, ids["Berlin"][:1])
    notifier = Notifier(sqlite_store, [receiver("http://127.0.0.1:9/down", attempts=1)])  # nothing listens there
    assert [d.status for d in notifier.notify(tick=1).result(20)] == ["failed"]
    for _ in range(20):  # rounds without a tick, within the minute of back-off
        due = notifier.notify_due()
        assert due is None or due.result(20) == []
    assert [r.status for r in records(sqlite_store)] == ["failed"]
    escalate(sqlite_store, ids["Berlin"][1:])  # a new member: tried at once, between ticks too
    assert [d.status for d in notifier.notify_due().result(20)] == ["failed"]
    assert [d.status for d in notifier.notify(tick=1).result(20)] == ["failed"]  # a tick tries every group
    assert len(records(sqlite_store)) == 3
    # The back-off passed (its first step made short here): tried again between ticks.
    monkeypatch.setattr(alerts, "RETRY_FIRST_SECONDS", 0.0)
    assert [d.status for d in notifier.notify_due().result(20)] == ["failed"]
    assert notifier.close(5)


def test_a_busy_store_that_cannot_record_a_delivery_is_said_in_a_line(sqlite_store, hook, monkeypatch, caplog):
    """A delivery whose record met "database is locked" logged some fifty lines of traceback for a routine busy
    store (the delivery happened: it is sent again once the claim lapses, as documented)."""
    import logging

    import sqlalchemy as sa

    from mlma.store.notifications import NotificationLog

    def busy(self, *args, **kwargs):
        raise sa.exc.OperationalError("INSERT INTO alert_notifications ...", {}, Exception("database is locked"))

    ids = fleet(sqlite_store, {"Berlin": 1})
    escalate(sqlite_store, ids["Berlin"])
    monkeypatch.setattr(NotificationLog, "record", busy)
    notifier = Notifier(sqlite_store, [receiver(hook.url)])
    with caplog.at_level(logging.WARNING, logger="mlma.alerts"):
        (delivery,) = notifier.notify(tick=1).result(20)
    assert delivery.status == "sent" and not delivery.recorded and len(hook.requests) == 1
    (said,) = [r for r in caplog.records if "could not record" in r.getMessage()]
    assert said.getMessage().endswith(": database is locked") and said.exc_info is None
    assert notifier.close(5)


def test_url_from_environment_is_read_at_delivery(sqlite_store, hook, monkeypatch):
    ids = fleet(sqlite_store, {"Berlin": 1})
    escalate(sqlite_store, ids["Berlin"])
    r = parse_receivers([{"name": "ops", "url_env": "MLMA_TEST_HOOK_URL", "attempts": 1}])[0]
    notifier = Notifier(sqlite_store, [r])
    monkeypatch.delenv("MLMA_TEST_HOOK_URL", raising=False)
    (missing,) = notifier.notify(tick=1).result(10)
    assert missing.status == "failed" and missing.attempts == 0
    assert "environment variable MLMA_TEST_HOOK_URL is not set" in missing.error
    monkeypatch.setenv("MLMA_TEST_HOOK_URL", hook.url)
    (sent,) = notifier.notify(tick=1).result(10)
    assert sent.status == "sent" and len(hook.requests) == 1
    assert notifier.close(5)


# -- grouping, de-duplication, silences ------------------------------------------------------------------------
def test_forty_escalations_in_one_city_make_one_notification(store, hook):
    ids = fleet(store, {"Berlin": 40, "Paris": 3})
    berlin = escalate(store, ids["Berlin"])
    paris = escalate(store, ids["Paris"])
    escalate(store, ids["Paris"][:1], kind="silent", severity=1)
    notifier = Notifier(store, [receiver(hook.url)])
    deliveries = notifier.notify(tick=1).result(20)
    assert notifier.close(5)
    assert sorted((d.group_key, len(d.escalation_ids), d.status) for d in deliveries) == [
        ('{kind="data-quality",city="Berlin"}', 40, "sent"),
        ('{kind="data-quality",city="Paris"}', 3, "sent"),
        ('{kind="silent",city="Paris"}', 1, "sent")]
    assert len(hook.requests) == 3
    body = next(r["json"] for r in hook.requests if r["json"]["groupLabels"] == {"kind": "data-quality",
                                                                                 "city": "Berlin"})
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "ops"
    assert body["groupKey"] == '{kind="data-quality",city="Berlin"}'
    assert len(body["alerts"]) == 40 and body["truncatedAlerts"] == 0
    assert body["commonLabels"] == {"kind": "data-quality", "severity": "2", "city": "Berlin", "zone_type": "urban"}
    assert {a["labels"]["stream"] for a in body["alerts"]} == {f"berlin-{i}" for i in range(40)}
    assert {int(a["annotations"]["escalation_id"]) for a in body["alerts"]} == set(berlin)
    first = body["alerts"][0]
    assert first["status"] == "firing" and first["startsAt"].endswith("Z")
    assert first["annotations"]["message"].startswith("flat line") and first["annotations"]["tick"] == "1"
    assert body["mlma"] == {"tick": 1, "reason": "new", "escalations": 40, "new": 40}
    rows = records(store)
    assert len(rows) == 3 and {r.status for r in rows} == {"sent"}
    by_key = {r.group_key: r for r in rows}
    assert sorted(by_key['{kind="data-quality",city="Paris"}'].escalation_ids) == sorted(paris)
    assert all(r.attempts == 1 and r.sent_at is not None and r.error is None for r in rows)


def test_repeat_interval_across_processes_and_new_members(url, store, hook):
    ids = fleet(store, {"Berlin": 41})
    escalate(store, ids["Berlin"][:40], tick=1)
    first = Notifier(store, [receiver(hook.url)])
    assert [d.status for d in first.notify(tick=1).result(20)] == ["sent"]
    assert first.close(5)

    # The next tick's process: another Notifier, another connection; the same members are not sent again.
    with Store.open(url) as other_store:
        second = Notifier(other_store, [receiver(hook.url)])
        assert second.plan(tick=2) == []
        assert second.notify(tick=2).result(20) == []
        assert len(hook.requests) == 1

        # A new member re-notifies the group, listing all its open members, the new one marked.
        (new_id,) = escalate(other_store, ids["Berlin"][40:], tick=2)
        (delivery,) = second.notify(tick=2).result(20)
        assert delivery.status == "sent" and len(delivery.escalation_ids) == 41
        body = hook.requests[-1]["json"]
        assert body["mlma"]["new"] == 1 and body["mlma"]["reason"] == "new"
        assert body["alerts"][0]["annotations"]["escalation_id"] == str(new_id)
        assert second.plan(tick=2) == []
        assert second.close(5)

        # Once the repeat interval (1 h) has passed, the unchanged group is sent again as a reminder.
        third = Notifier(other_store, [receiver(hook.url)])
        assert third.plan(tick=2) == []
        age_notifications(other_store, hours=2)
        (reminder,) = third.plan(tick=2)
        assert reminder.reason == "repeat" and reminder.n_new == 0 and not reminder.new_ids
        assert len(reminder.alerts) == 41
    assert len(records(store)) == 2


def test_silenced_acknowledged_and_resolved_are_not_sent(store, hook):
    ids = fleet(store, {"Berlin": 4})
    e = escalate(store, ids["Berlin"])
    store.set_escalation_status([e[0]], "acknowledged", by="user:ana")
    store.set_escalation_status([e[1]], "resolved", by="user:ana")
    store.set_escalation_status([e[2]], "silenced", by="user:ana", silenced_until="2999-01-01")
    notifier = Notifier(store, [receiver(hook.url)])
    (delivery,) = notifier.notify(tick=1).result(20)
    assert delivery.escalation_ids == [e[3]]
    assert [a["annotations"]["escalation_id"] for a in hook.requests[0]["json"]["alerts"]] == [str(e[3])]

    # All silenced: nothing to send.
    store.set_escalation_status([e[3]], "silenced", by="user:ana", silenced_until="2999-01-01")
    quiet = Notifier(store, [receiver(hook.url)])
    age_notifications(store, hours=2)  # a reminder of e[3] would be due, were it not silenced
    assert quiet.plan(tick=1) == []
    # A silence that has run out makes the escalation open again: it is new to the group.
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    store.set_escalation_status([e[2]], "silenced", by="user:ana", silenced_until=past)
    (woke,) = quiet.plan(tick=1)
    assert woke.escalation_ids == [e[2]] and woke.reason == "new"
    assert notifier.close(5) and quiet.close(5)


def test_receiver_filters_and_tick_bound(sqlite_store, hook, hook2):
    ids = fleet(sqlite_store, {"Berlin": 3})
    low = escalate(sqlite_store, ids["Berlin"][:1], kind="cold", severity=1, tick=1)
    high = escalate(sqlite_store, ids["Berlin"][1:2], kind="repeated-trigger", severity=2, tick=1)
    later = escalate(sqlite_store, ids["Berlin"][2:], kind="data-quality", severity=3, tick=5)
    notifier = Notifier(sqlite_store, [receiver(hook.url, name="all", group_by=[]),
                                       receiver(hook2.url, name="urgent", min_severity=2,
                                                kinds=["repeated-trigger", "data-quality"], group_by=["severity"])])
    plans = {(n.receiver.name, n.group_key): n.escalation_ids for n in notifier.plan(tick=1)}
    assert plans == {("all", "{}"): sorted(low + high), ("urgent", '{severity="2"}'): high}
    plans = {(n.receiver.name, n.group_key): n.escalation_ids for n in notifier.plan()}
    assert plans[("urgent", '{severity="3"}')] == later and plans[("all", "{}")] == sorted(low + high + later)
    assert notifier.close(1)


# -- delivery -------------------------------------------------------------------------------------------------------
def test_retries_with_backoff_and_retry_after_then_success(sqlite_store, hook):
    ids = fleet(sqlite_store, {"Berlin": 2})
    escalate(sqlite_store, ids["Berlin"])
    hook.script = [(500, {}), (429, {"Retry-After": "1"}), (503, {})]
    notifier = Notifier(sqlite_store, [receiver(hook.url, attempts=5, backoff_seconds=0.2)])
    (delivery,) = notifier.notify(tick=1).result(30)
    assert delivery.status == "sent" and delivery.attempts == 4 and delivery.http_status == 200
    times = [r["at"] for r in hook.requests]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # Waits: 0.2 s after the 500, the 1 s asked for by the 429, then 0.8 s (0.2 * 2**2) after the 503.
    assert 0.2 <= gaps[0] < 1.5, gaps
    assert 1.0 <= gaps[1] < 2.5, gaps
    assert 0.8 <= gaps[2] < 2.3, gaps
    (row,) = records(sqlite_store)
    assert (row.status, row.attempts, row.error) == ("sent", 4, None)
    assert notifier.close(5)


def test_a_client_error_is_not_retried_and_failures_are_sent_again_next_time(sqlite_store, hook):
    ids = fleet(sqlite_store, {"Berlin": 2})
    escalate(sqlite_store, ids["Berlin"])
    hook.script = [(400, {})]
    notifier = Notifier(sqlite_store, [receiver(hook.url, attempts=4)])
    (failed,) = notifier.notify(tick=1).result(20)
    assert (failed.status, failed.attempts, failed.http_status) == ("failed", 1, 400)
    assert failed.error == "HTTP 400 Bad Request: nope"
    (row,) = records(sqlite_store)
    assert (row.status, row.attempts, row.sent_at) == ("failed", 1, None)
    # Only sent notifications count for de-duplication: the next tick tries the group again.
    (again,) = notifier.notify(tick=2).result(20)
    assert again.status == "sent" and len(hook.requests) == 2
    assert notifier.close(5)


def test_a_hanging_receiver_never_blocks_the_tick_nor_other_receivers(sqlite_store, hook, hook2):
    ids = fleet(sqlite_store, {"Berlin": 3})
    escalate(sqlite_store, ids["Berlin"])
    hook.hang = 30.0
    notifier = Notifier(sqlite_store, [receiver(hook.url, name="stuck", timeout_seconds=0.5, attempts=2,
                                                backoff_seconds=0.1),
                                       receiver(hook2.url, name="fine")])
    started = time.monotonic()
    future = notifier.notify(tick=1)
    returned = time.monotonic() - started
    assert returned < 0.25, returned          # the receiver hangs 30 s
    # The healthy receiver is not held up by the stuck one.
    deadline = time.monotonic() + 5
    while not hook2.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hook2.requests and hook2.requests[0]["at"] - started < 2.0
    deliveries = {d.receiver: d for d in future.result(10)}
    waited = time.monotonic() - started
    assert deliveries["fine"].status == "sent"
    stuck = deliveries["stuck"]
    assert (stuck.status, stuck.attempts) == ("failed", 2) and stuck.error == "timed out after 0.5 s"
    assert 1.0 <= waited < 5.0, waited         # two 0.5 s attempts and a 0.1 s wait
    assert {(r.receiver, r.status, r.attempts) for r in records(sqlite_store)} == {("stuck", "failed", 2),
                                                                                   ("fine", "sent", 1)}
    assert notifier.close(5)


class Trickler:
    """A receiver that reads the request, then trickles a valid answer one byte every ``pause`` seconds: no
    single read waits long, but the answer takes ``len(answer) * pause`` seconds."""

    def __init__(self, pause: float = 0.2, tls=None) -> None:
        self.pause = pause
        self.connections = 0
        self.stop = threading.Event()
        self.tls = tls  # an ssl.SSLContext of the server: HTTPS
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http{'s' if self.tls else ''}://127.0.0.1:{self.listener.getsockname()[1]}/hook"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        answer = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 200 + b"\r\nContent-Length: 2\r\n\r\nok"
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                for i in range(len(answer)):
                    if self.stop.wait(self.pause):
                        return
                    conn.sendall(answer[i:i + 1])
            except OSError:  # the client gave up
                return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


def test_a_receiver_that_trickles_its_answer_is_cut_at_its_deadline_and_starves_no_one(sqlite_store, hook):
    """Each attempt has a deadline in all (not per socket read), and each receiver its own delivery threads: a
    receiver that sends a byte every 0.2 s (a 45 s answer) is given up after 1.5 s per attempt, while a fast
    receiver configured next to it gets all its notifications at once."""
    names = [f"zone-{i}" for i in range(8)]
    ids = [int(i) for i in sqlite_store.stream_ids(names)]
    escalate(sqlite_store, ids)
    slow = Trickler(pause=0.2)
    try:
        # The slow receiver comes first: before, its eight groups took every one of the four shared threads.
        notifier = Notifier(sqlite_store, [receiver(slow.url, name="slow", group_by=["stream"], timeout_seconds=1.5,
                                                    attempts=1),
                                           receiver(hook.url, name="fast", group_by=["stream"])])
        started = time.monotonic()
        future = notifier.notify(tick=1)
        deadline = time.monotonic() + 10
        while len(hook.requests) < len(names) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(hook.requests) == len(names)
        fast_done = max(r["at"] for r in hook.requests) - started
        assert fast_done < 1.0, fast_done
        deliveries = future.result(30)
        waited = time.monotonic() - started
        slow_ones = [d for d in deliveries if d.receiver == "slow"]
        assert len(slow_ones) == len(names) and slow.connections == len(names)
        for d in slow_ones:
            assert (d.status, d.attempts, d.error) == ("failed", 1, "timed out after 1.5 s"), d
            assert 1.4 <= d.seconds < 2.5, d.seconds
        # Eight 1.5 s attempts on four threads of its own: two rounds, not eight times 45 s.
        assert waited < 5.0, waited
        assert all(d.status == "sent" for d in deliveries if d.receiver == "fast")
        assert notifier.close(5)
    finally:
        slow.close()


def test_an_https_receiver_that_trickles_its_answer_is_cut_at_its_deadline(sqlite_store, tmp_path, monkeypatch):
    """Over HTTPS the deadline shut the socket TLS had taken over (a closed descriptor, the error swallowed), so
    an attempt ran for as long as the receiver trickled; Slack's webhooks are all HTTPS."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this receiver's certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    ids = [int(i) for i in sqlite_store.stream_ids(["zone-1"])]
    escalate(sqlite_store, ids)
    slow = Trickler(pause=0.2, tls=tls)
    try:
        notifier = Notifier(sqlite_store, [receiver(slow.url, name="slow", timeout_seconds=1.5, attempts=1)])
        (delivery,) = notifier.notify(tick=1).result(30)
        assert (delivery.status, delivery.error) == ("failed", "timed out after 1.5 s"), delivery
        assert 1.4 <= delivery.seconds < 3.0, delivery.seconds
        assert notifier.close(5)
    finally:
        slow.close()


def test_a_webhook_address_with_a_port_that_cannot_be_used_is_refused_when_read():
    for url in ("http://127.0.0.1:99999/hook", "http://127.0.0.1:abc/hook"):
        with pytest.raises(AlertConfigError, match=r"url must be an http:// or https:// address, got one that "
                                                   r"cannot be used"):
            parse_receivers([{"name": "ops", "url": url}])


def test_close_waits_a_bounded_time(sqlite_store, hook, hook2):
    ids = fleet(sqlite_store, {"Berlin": 1, "Paris": 1})
    escalate(sqlite_store, ids["Berlin"])
    escalate(sqlite_store, ids["Paris"])
    hook.hang = 30.0
    hook2.script = [(503, {"Retry-After": "20"})] * 2
    notifier = Notifier(sqlite_store, [receiver(hook.url, name="stuck", timeout_seconds=20, attempts=1),
                                       receiver(hook2.url, name="busy", attempts=3, max_backoff_seconds=30)])
    notifier.notify(tick=1)
    while len(hook.requests) < 2 or len(hook2.requests) < 2:     # both receivers reached, for both groups
        time.sleep(0.01)
    started = time.monotonic()
    finished = notifier.close(timeout=1.0)
    took = time.monotonic() - started
    assert not finished and took < 2.0, took
    # The retry that would have ended after the deadline was given up and recorded; the hanging attempt
    # could not be recorded (it is still waiting) and will be sent again by the next process.
    rows = records(sqlite_store)
    assert [(r.receiver, r.status, r.attempts) for r in rows] == [("busy", "failed", 1)] * 2
    assert all("gave up: the notifier was closing" in r.error and "HTTP 503" in r.error for r in rows)
    with pytest.raises(RuntimeError):
        notifier.notify(tick=2)


def test_slack_payload_has_text_blocks_and_truncation(sqlite_store, hook):
    ids = fleet(sqlite_store, {"Berlin": 40})
    escalate(sqlite_store, ids["Berlin"], message="actuals <look> broken & flat")
    notifier = Notifier(sqlite_store, [receiver(hook.url, format="slack", max_alerts=25)],
                        external_url="http://mlma.internal:8000")
    (delivery,) = notifier.notify(tick=1).result(20)
    assert delivery.status == "sent"
    body = hook.requests[0]["json"]
    assert set(body) == {"text", "blocks"}
    lines = body["text"].splitlines()
    assert lines[0] == "*mlma: 40 open data-quality escalations (40 new) in city=Berlin*"
    assert sum(line.startswith("• [new] berlin-") for line in lines) == 25
    assert "… and 15 more (<http://mlma.internal:8000|dashboard>)" in lines
    assert "&lt;look&gt; broken &amp; flat" in body["text"] and "<look>" not in body["text"]
    assert body["blocks"][0] == {"type": "header", "text": {"type": "plain_text",
                                                           "text": "mlma: 40 open data-quality escalations (40 new) "
                                                                   "in city=Berlin"}}
    assert all(len(b["text"]["text"]) <= 3000 for b in body["blocks"] if b["type"] == "section")
    # A generic receiver gets the truncation as a count.
    generic = Notifier(sqlite_store, [receiver(hook.url, name="generic", max_alerts=10)])
    generic.notify(tick=1).result(20)
    body = hook.requests[-1]["json"]
    assert len(body["alerts"]) == 10 and body["truncatedAlerts"] == 30 and body["mlma"]["escalations"] == 40
    assert notifier.close(5) and generic.close(5)


def test_a_storm_in_slack_keeps_within_slack_limits_and_counts_what_it_leaves_out(sqlite_store, hook):
    """max_alerts = 1000 of long messages: the payload cut its blocks at 50 (376 alerts and the trailer went,
    unsaid) and its text ran to 223,000 characters, past Slack's limit. Now what does not fit is counted."""
    ids = fleet(sqlite_store, {"Berlin": 1000})
    escalate(sqlite_store, ids["Berlin"], message="x" * 280)
    notifier = Notifier(sqlite_store, [receiver(hook.url, format="slack", max_alerts=1000)],
                        external_url="http://mlma.internal:8000")
    (delivery,) = notifier.notify(tick=1).result(30)
    assert delivery.status == "sent"
    body = hook.requests[0]["json"]
    assert len(body["blocks"]) <= 50 and len(body["text"]) <= 40_000
    shown = sum(line.startswith("• [new] berlin-") for line in body["text"].splitlines())
    assert 50 < shown < 1000
    assert f"… and {1000 - shown} more (<http://mlma.internal:8000|dashboard>)" in body["text"]
    assert body["blocks"][-1]["type"] == "context" and "group " in body["blocks"][-1]["elements"][0]["text"]
    assert notifier.close(5)


def slack_note(stream: str, message: str, labels: dict[str, str], n: int = 3, **receiver_keys):
    """A Notification of ``n`` alerts to a Slack receiver grouped by kind and city, built without a store."""
    (r,) = parse_receivers([{"name": "s", "url": "http://127.0.0.1:9/x", "format": "slack",
                             "group_by": ["kind", "city"], **receiver_keys}])
    now = dt.datetime.now(dt.timezone.utc)
    group = {"kind": "data-quality", "city": labels.get("city", "")}
    members = tuple(alerts.Alert(i, f"{stream}{i}", "data-quality", 2, 5, message, now,
                                 {"kind": "data-quality", "severity": "2", "stream": f"{stream}{i}", **labels})
                    for i in range(n))
    return alerts.Notification(r, alerts.group_key(r.group_by, group), group, members, "new", 5, now,
                               frozenset(range(n)))


def slack_texts(payload: dict) -> list[tuple[str, str]]:
    """Every text of a Slack payload, with where it is: the fallback text, and each block's text objects."""
    texts = [("text", payload["text"])]
    for block in payload["blocks"]:
        if "text" in block:
            texts.append((block["type"], block["text"]["text"]))
        texts += [(block["type"], element["text"]) for element in block.get("elements", [])]
    return texts


# U+202E/U+202D overrides, U+2066-U+2069 isolates, U+200E/U+200F marks, U+200B zero width, U+FEFF, C0 and C1.
HIDDEN = "\u202e\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u200b\ufeff\x07\x1b\x85"


def test_slack_shows_bidi_and_control_characters_where_they_would_reorder_the_text():
    """A stream id "zone\u202eevil.exe" reached Slack raw and displayed as "zoneexe.live"; attribute values
    and messages likewise. Every text of the Slack payload now shows such characters as \\uXXXX, as the
    dashboard does; the generic payload's JSON fields keep the raw values for programs."""
    note = slack_note("zone\u202eevil.exe", "flat line \u2066x\u2069 for 6 h\x07",
                      {"city": "Ber\u200flin" + HIDDEN})
    payload = alerts.slack_payload(note, "http://mlma.internal:8000")
    for where, text in slack_texts(payload):
        assert not any(c in text for c in HIDDEN), (where, text)
    assert "zone\\u202Eevil.exe0" in payload["text"]
    section = next(t for w, t in slack_texts(payload) if w == "section")
    assert "• [new] zone\\u202Eevil.exe1" in section and "flat line \\u2066x\\u2069 for 6 h\\u0007" in section
    header = payload["blocks"][0]["text"]["text"]
    assert "city=Ber\\u200Flin\\u202E\\u202D\\u2066" in header and len(header) <= 150
    assert "Ber\\u200Flin" in slack_texts(payload)[-1][1]  # the group's key in the trailer
    # The generic payload is data for programs: ids and attribute values as stored.
    generic = alerts.generic_payload(note)
    assert generic["alerts"][0]["labels"]["stream"] == "zone\u202eevil.exe0"
    assert generic["groupLabels"]["city"] == "Ber\u200flin" + HIDDEN


def test_slack_text_objects_are_cut_to_slacks_limits_after_escaping():
    """A grouping attribute of 1,200 characters holding "<&>" made a 5,267-character context text once escaped
    (Slack refuses a text object over 3,000 characters: every message of the group failed with 400, not
    retried). Every text object is now cut to Slack's limits after escaping, never through an escape, and the
    cut is marked with an ellipsis."""
    for city, stream in [("<&>" * 400, "<" * 1200), ("&" * 4000, "zone\u202e" * 200), ("x" * 3999 + "&", "z")]:
        note = slack_note(stream, "m<&>" * 300, {"city": city, "zone": "<" * 4000}, n=60,
                          repeat_interval="1h", max_alerts=1000)
        for external_url in (None, "http://mlma.internal:8000"):
            payload = alerts.slack_payload(note, external_url)
            assert len(payload["blocks"]) <= 50 and len(payload["text"]) <= 40_000
            for where, text in slack_texts(payload):
                limit = {"text": 40_000, "header": 150}.get(where, 3000)
                assert 0 < len(text) <= limit, (where, len(text))
                if where != "header":  # mrkdwn: every & begins a whole escape, every \u a whole character
                    assert re.fullmatch(r"(?:[^&\\]|&(?:amp|lt|gt);|\\u[0-9A-F]{4})*", text), (where, text[-20:])
                    assert text.count("<") == text.count(">")  # links only, whole
            trailer = payload["blocks"][-1]["elements"][0]["text"]
            assert trailer.startswith("group {kind=") and "…" in trailer and "tick 5" in trailer
            if external_url:
                assert f"<{external_url}|dashboard>" in payload["text"]
    # Each cut keeps whole escapes, whatever its length.
    escaped = alerts._slack_escape("a<&>b\u202ec" * 20)
    for limit in range(1, len(escaped)):
        cut = alerts._cut(escaped, limit)
        assert len(cut) <= limit and cut.endswith("…") and escaped.startswith(cut[:-1])
        assert re.fullmatch(r"(?:[^&\\]|&(?:amp|lt|gt);|\\u[0-9A-F]{4})*…", cut), (limit, cut)


def test_notify_without_receivers_and_send_test(sqlite_store, hook):
    assert Notifier(sqlite_store, []).notify(tick=1).result(1) == []
    notifier = Notifier(sqlite_store, [receiver(hook.url, format="slack")])
    test = notifier.send_test("ops")
    assert test.status == "sent" and "test message" in hook.requests[0]["json"]["text"]
    assert records(sqlite_store) == []
    with pytest.raises(KeyError):
        notifier.send_test("nobody")
    assert notifier.close(1)


def test_many_groups_one_per_stream(sqlite_store, hook):
    ids = fleet(sqlite_store, {"Berlin": 520})
    escalate(sqlite_store, ids["Berlin"], kind="silent", severity=1)
    notifier = Notifier(sqlite_store, [receiver(hook.url, group_by=["stream"])], max_workers=8)
    deliveries = notifier.notify(tick=1).result(60)
    assert len(deliveries) == 520 and {d.status for d in deliveries} == {"sent"}
    assert len({r["json"]["groupKey"] for r in hook.requests}) == 520
    # More groups than fit in one IN list: the last deliveries are looked up without it, and still found.
    assert notifier.plan(tick=1) == []
    assert notifier.close(5)


def test_notify_takes_a_tick_or_the_ticks_escalation_ids(sqlite_store, hook):
    import numpy as np

    ids = fleet(sqlite_store, {"Berlin": 2})
    new = escalate(sqlite_store, ids["Berlin"], tick=3)
    notifier = Notifier(sqlite_store, [receiver(hook.url)])
    (delivery,) = notifier.notify(new).result(10)            # as the live tick passes TickResult.escalation_ids
    assert delivery.escalation_ids == new
    assert notifier.notify(np.int64(3)).result(10) == []     # already sent
    assert notifier.notify(tick=2).result(10) == []          # tick 3's escalations wait for tick 3
    with pytest.raises(TypeError):
        notifier.notify("3")
    assert notifier.close(5)


def test_a_dashboard_address_that_is_no_url_is_refused_when_mlma_toml_is_read(tmp_path):
    """It was accepted, then every tick stopped with a traceback when the notifier was built."""
    from mlma.project import ConfigError, init_project, load_config

    init_project(tmp_path / "p")
    path = tmp_path / "p" / "mlma.toml"
    path.write_text(path.read_text() + '\n[alerts]\nexternal_url = "dashboard.internal"\n')
    with pytest.raises(ConfigError, match=r"mlma.toml: \[alerts\] external_url must be an http:// or https:// "
                                          r"address with a host"):
        load_config(tmp_path / "p")


# -- secrets, odd settings and odd failures (review) ---------------------------------------------------------------
def config_error(item: dict) -> str:
    with pytest.raises(AlertConfigError) as info:
        parse_receivers([item])
    return str(info.value)


def test_an_address_with_spaces_or_control_characters_is_refused_and_the_secret_path_never_shown(
        sqlite_store, monkeypatch, caplog):
    """A stray space or tab from a paste was accepted; every delivery then failed and recorded (and logged)
    http.client's InvalidURL, whose text quotes the whole secret path. The URL itself put in url_env was
    echoed in full."""
    secret = "s3cr3tT0k3n"
    for url in (f"https://hooks.example.org/services/T0/{secret} xyz", f"https://hooks.example.org/{secret}\tx",
                f"https://hooks.example.org/{secret}\nx", f"https://hooks.example.org/{secret}\x00",
                f"https://hooks.example.org/{secret}\u00a0x"):
        message = config_error({"name": "ops", "url": url})
        assert message == ("mlma.toml: [[alerts.receivers]] #1 ('ops'): url must be an http:// or https:// address "
                           "without spaces or control characters (a tab or line break from a paste?)"), message
    # Spaces around it (a paste) are dropped, as urllib drops them: that URL worked, and must go on working.
    (around,) = parse_receivers([{"name": "ops", "url": f" https://hooks.example.org/{secret}\n"}])
    assert around.url == f"https://hooks.example.org/{secret}"
    message = config_error({"name": "ops", "url_env": f"https://hooks.example.org/services/T0/{secret}"})
    assert "url_env must be the name of an environment variable" in message
    assert "'https://hooks.example.org/...'" in message and secret not in message
    message = config_error({"name": "ops", "url": "https://a.example/h",
                            "url_env": f"https://hooks.example.org/services/T0/{secret}"})
    assert "exactly one of url" in message and secret not in message

    ids = fleet(sqlite_store, {"Berlin": 1})
    escalate(sqlite_store, ids["Berlin"])
    monkeypatch.setenv("MLMA_TEST_HOOK_URL", f"http://127.0.0.1:9/services/T0/{secret} xyz")
    notifier = Notifier(sqlite_store, parse_receivers([{"name": "ops", "url_env": "MLMA_TEST_HOOK_URL",
                                                        "attempts": 3, "backoff_seconds": 0.05}]))
    with caplog.at_level(logging.INFO, logger="mlma.alerts"):
        (refused,) = notifier.notify(tick=1).result(10)
        assert (refused.status, refused.attempts) == ("failed", 0)
        assert refused.error.startswith("environment variable MLMA_TEST_HOOK_URL must be an http:// or https:// "
                                        "address without spaces")
        # An address that gets past the check all the same: http.client refuses it with a text quoting the
        # path; what is recorded and logged is the type and the masked address, and it is not retried.
        monkeypatch.setattr(alerts, "check_url", lambda url, what: url)
        (invalid,) = notifier.notify(tick=1).result(10)
    assert (invalid.status, invalid.attempts, invalid.error) == ("failed", 1, "InvalidURL (http://127.0.0.1:9/...)")
    assert [r.error for r in records(sqlite_store)] == [refused.error, invalid.error]
    assert "InvalidURL" in caplog.text and secret not in caplog.text
    assert notifier.close(5)


def test_a_receivers_answer_that_quotes_the_secret_path_is_recorded_without_it(sqlite_store, hook):
    """Web servers answer an unknown path with "Cannot POST /services/..."; that text went into the record."""
    ids = fleet(sqlite_store, {"Berlin": 1})
    escalate(sqlite_store, ids["Berlin"])
    hook.script = [(404, {})]
    hook.answer = "Cannot POST {path}"
    notifier = Notifier(sqlite_store, [receiver(hook.url.replace("/hook", "/services/T0/s3cr3t"), attempts=1)])
    (failed,) = notifier.notify(tick=1).result(10)
    assert hook.requests[0]["path"] == "/services/T0/s3cr3t"
    assert failed.error == "HTTP 404 Not Found: Cannot POST ..."
    assert notifier.close(5)


@pytest.mark.parametrize("name", ["ops\x00", "ops\nteam", "ops\u202e", "ops\udce9"])
def test_a_receiver_name_with_control_invisible_or_direction_characters_is_refused(name):
    """Such a name was stored with each delivery and served as a /metrics label; a NUL went out as a raw byte."""
    message = config_error({"name": name, "url": "https://hooks.example.org/h"})
    assert "name must be a text without control, invisible or direction characters" in message


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "Host", "Connection"])
def test_a_header_that_frames_the_request_is_refused_by_name(name):
    """`Content-Length = "5"` cut every payload to `{"ver` and `Transfer-Encoding = "chunked"` emptied it, each
    delivery recorded as sent: the HTTP client sets these from the request."""
    message = config_error({"name": "ops", "url": "https://hooks.example.org/h", "headers": {name: "5"}})
    assert f"headers: {name!r} is set by mlma for each request (it frames the message or names the server); leave " \
           "it out" in message


def test_credentials_in_the_address_and_a_header_that_is_not_latin1_are_refused_by_name(monkeypatch):
    """Both were accepted and failed every delivery: urllib sends no user:password@ (the host did not
    resolve), and a pasted '…' in a header failed as a UnicodeEncodeError naming no header."""
    message = config_error({"name": "ops", "url": "https://hookuser:s3cretpass@hooks.example.org/h"})
    assert "url must be an http:// or https:// address without a user name or password" in message
    assert "s3cretpass" not in message
    message = config_error({"name": "ops", "url": "https://hooks.example.org/h",
                            "headers": {"X-Team": "ops", "Authorization": "Bearer s3cret\u2026"}})
    assert "headers: 'Authorization' must have a value of Latin-1 characters" in message
    assert "s3cret" not in message
    # Latin-1 beyond ASCII is what HTTP can carry: accepted.
    (r,) = parse_receivers([{"name": "ops", "url": "https://hooks.example.org/h", "headers": {"X-City": "Köln"}}])
    assert r.headers == (("X-City", "Köln"),)
    # The same check applies to the address read from url_env at delivery, naming the variable.
    (r,) = parse_receivers([{"name": "ops", "url_env": "MLMA_TEST_HOOK_URL"}])
    monkeypatch.setenv("MLMA_TEST_HOOK_URL", "https://hookuser:s3cretpass@hooks.example.org/h")
    with pytest.raises(AlertConfigError, match="environment variable MLMA_TEST_HOOK_URL must be .* without a user "
                                               "name or password") as info:
        r.resolved_url()
    assert "s3cretpass" not in str(info.value)


def test_timeouts_and_backoffs_out_of_range_are_refused_naming_key_and_range():
    """timeout_seconds = 1e10 was accepted; each delivery then raised OverflowError in a timer."""
    good = {"name": "ops", "url": "http://127.0.0.1:1/h"}
    assert config_error({**good, "timeout_seconds": 1e10}).endswith(
        "timeout_seconds must be a number > 0 and at most 3600 (seconds), got 10000000000.0")
    assert "timeout_seconds must be a number > 0 and at most 3600" in config_error({**good, "timeout_seconds": 0})
    for key in ("backoff_seconds", "max_backoff_seconds"):
        assert config_error({**good, key: 1e10}).endswith(f"{key} must be a number of seconds from 0 to 86400, "
                                                          "got 10000000000.0")
        assert f"{key} must be a number of seconds from 0 to 86400" in config_error({**good, key: -1})
    (r,) = parse_receivers([{**good, "timeout_seconds": 3600, "backoff_seconds": 86400,
                             "max_backoff_seconds": 86400}])
    assert (r.timeout_seconds, r.backoff_seconds, r.max_backoff_seconds) == (3600.0, 86400.0, 86400.0)


def test_an_unexpected_error_in_a_delivery_is_logged_and_recorded_as_failed(sqlite_store, hook, monkeypatch, caplog):
    """Only the expected errors were caught: anything else ended in an unobserved future, with no log line and
    no failed row (so MlmaAlertDeliveryFailing never fired)."""
    ids = fleet(sqlite_store, {"Berlin": 1})
    escalate(sqlite_store, ids["Berlin"])
    notifier = Notifier(sqlite_store, [receiver(hook.url)])

    def broken(url, *args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(alerts, "post_json", broken)
    with caplog.at_level(logging.WARNING, logger="mlma.alerts"):
        (delivery,) = notifier.notify(tick=1).result(10)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert delivery.error == "unexpected error: RuntimeError: a bug"
    (row,) = records(sqlite_store)
    assert (row.status, row.attempts, row.error) == ("failed", 1, delivery.error)
    (logged,) = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert logged.levelno == logging.WARNING and logged.exc_info is not None   # with its traceback

    # One whose text quotes the address: masked, and logged without the traceback that would show it.
    def quoting(url, *args):
        raise RuntimeError(f"cannot post to {url}")

    monkeypatch.setattr(alerts, "post_json", quoting)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlma.alerts"):
        (again,) = notifier.notify(tick=1).result(10)
    assert again.error == f"unexpected error: RuntimeError: cannot post to {hook.url[:-len('/hook')]}/..."
    assert "/hook" not in caplog.text and all(r.exc_info is None for r in caplog.records)
    assert [r.status for r in records(sqlite_store)] == ["failed", "failed"]
    assert notifier.close(5)


def test_a_group_is_not_sent_again_while_a_newer_delivery_of_it_is_in_flight(sqlite_store, hook):
    """Each notification of a group overwrote its "in flight" marker, and the first to end removed it: with a
    slow receiver, the next plan sent the group again while the newer delivery was still under way. And
    delivered side by side, an older notification that ended after the newer one was recorded last, so the
    next plan took it for the last one sent and sent the newer one's members again."""
    ids = fleet(sqlite_store, {"Berlin": 2})
    first_gate, second_gate = threading.Event(), threading.Event()
    hook.gates = [first_gate, second_gate]
    notifier = Notifier(sqlite_store, [receiver(hook.url)])

    def wait_for(condition) -> None:
        deadline = time.monotonic() + 5
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert condition()

    try:
        (first_id,) = escalate(sqlite_store, ids["Berlin"][:1], tick=1)
        first = notifier.notify(tick=1)
        wait_for(lambda: len(hook.requests) == 1)
        (second_id,) = escalate(sqlite_store, ids["Berlin"][1:], tick=2)
        second = notifier.notify(tick=2)
        # Once the second notification (both members) is planned, nothing more is due ...
        wait_for(lambda: notifier.plan(tick=2) == [])
        # ... and it waits for the first delivery of its group to end.
        time.sleep(0.2)
        assert len(hook.requests) == 1
        first_gate.set()
        assert [(d.status, d.escalation_ids) for d in first.result(5)] == [("sent", [first_id])]
        wait_for(lambda: len(hook.requests) == 2)
        # The second delivery is in flight: the first one's end did not make the group due again.
        assert notifier.plan(tick=2) == []
        second_gate.set()
        assert [(d.status, d.escalation_ids) for d in second.result(5)] == [("sent", [first_id, second_id])]
        assert notifier.plan(tick=2) == [] and len(hook.requests) == 2
        assert [r.escalation_ids for r in records(sqlite_store)] == [[first_id], [first_id, second_id]]
    finally:
        first_gate.set()
        second_gate.set()
    assert notifier.close(5)


def test_a_lookup_that_fails_after_the_deadline_keeps_its_own_error(monkeypatch):
    """A failed attempt whose deadline had passed was reported as "timed out", also when the deadline never
    cut it off: a resolver that failed after 4 s hid its error behind "timed out after 1 s"."""
    real = socket.getaddrinfo

    def slow_failing_lookup(host, *args, **kwargs):
        if host == "hook.invalid":
            time.sleep(0.5)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_failing_lookup)
    answer = post_json("http://hook.invalid/services/s3cret", b"{}", (), 0.2)
    assert (answer.ok, answer.retryable) == (False, True)
    assert answer.error == f"gaierror: [Errno {socket.EAI_AGAIN}] Temporary failure in name resolution"
