"""Two processes on one store never both page for a group: each delivery claims its group in the store first.

Two :class:`~mlma.alerts.Notifier` objects, each on its own :class:`~mlma.store.Store` of one database (a SQLite
file, a PostgreSQL schema), stand for two processes (``mlma run`` between its ticks and an ``mlma tick``, or the
API server); the webhook is a real local HTTP server counting the posts. One test runs a real second process
and kills it in the middle of a delivery.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import sqlalchemy as sa
from test_alerts import hook, url  # noqa: F401  (fixtures: a webhook receiver; SQLite and PostgreSQL stores)
from test_alerts import escalate, fleet, receiver, records

from mlma.alerts import Notifier, claim_seconds
from mlma.store import Store
from mlma.store.notifications import NotificationLog

BERLIN = '{kind="data-quality",city="Berlin"}'
PARIS = '{kind="data-quality",city="Paris"}'


@pytest.fixture
def stores(url):
    """Two stores on one database, as two processes have."""
    with Store.create(url) as first, Store.open(url) as second:
        yield first, second


class BarrierNotifier(Notifier):
    """A notifier whose plans wait at ``barrier`` once made: every process has planned before any delivers."""

    def __init__(self, *args, barrier: threading.Barrier, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.barrier = barrier

    def plan(self, tick=None, *, between_ticks=False):
        notes = super().plan(tick, between_ticks=between_ticks)
        self.barrier.wait(20)
        return notes


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def test_two_processes_planning_at_once_post_each_group_once(stores, hook):
    """Both planned the same groups with the same fresh escalation ids before either recorded its delivery,
    and both posted them: a double page."""
    a_store, b_store = stores
    ids = fleet(a_store, {"Berlin": 6, "Paris": 6})
    barrier = threading.Barrier(2)
    a = BarrierNotifier(a_store, [receiver(hook.url)], barrier=barrier)
    b = BarrierNotifier(b_store, [receiver(hook.url)], barrier=barrier)
    posted = 0
    for tick in (1, 2, 3):  # each tick new members in both cities: both groups are due again
        escalate(a_store, ids["Berlin"][2 * tick - 2:2 * tick], tick=tick)
        escalate(b_store, ids["Paris"][2 * tick - 2:2 * tick], tick=tick)
        first, second = a.notify(tick=tick), b.notify(tick=tick)
        deliveries = first.result(30) + second.result(30)
        posted += 2
        assert len(hook.requests) == posted
        assert sorted((d.group_key, d.status) for d in deliveries) == [
            (BERLIN, "sent"), (BERLIN, "skipped"), (PARIS, "sent"), (PARIS, "skipped")]
        bodies = {r["json"]["groupKey"]: r["json"] for r in hook.requests[-2:]}
        assert sorted(bodies) == [BERLIN, PARIS]
        assert all(body["mlma"]["escalations"] == 2 * tick and body["mlma"]["new"] == 2 for body in bodies.values())
    assert [r.status for r in records(a_store)] == ["sent"] * 6
    assert NotificationLog(a_store).claims(["ops"]) == {}  # every claim released
    assert a.close(5) and b.close(5)


def test_a_group_being_delivered_by_another_process_is_not_posted_again(stores, hook):
    """The second process planned the group before the first one claimed it; while the first delivery is
    under way, and after it is recorded, the second one's delivery of the same members is skipped."""
    a_store, b_store = stores
    ids = fleet(a_store, {"Berlin": 2})
    escalate(a_store, ids["Berlin"], tick=1)
    a = Notifier(a_store, [receiver(hook.url)])
    b = Notifier(b_store, [receiver(hook.url)])
    gate = threading.Event()
    hook.gates = [gate]
    try:
        (planned,) = b.plan(tick=1)
        first = a.notify(tick=1)
        wait_for(lambda: len(hook.requests) == 1)
        (claim,) = NotificationLog(b_store).claims(["ops"]).values()
        assert (claim.group_key, sorted(claim.escalation_ids)) == (BERLIN, planned.escalation_ids)
        assert b.plan(tick=1) == []  # the other's claim counts as in flight
        during = b.deliver(planned)
        assert (during.status, during.attempts, during.recorded) == ("skipped", 0, False)
        assert during.error.startswith("being sent by mlma-alerts@")
        gate.set()
        assert [d.status for d in first.result(10)] == ["sent"]
        after = b.deliver(planned)
        assert after.status == "skipped" and after.error.startswith("sent meanwhile")
        assert b.notify(tick=1).result(10) == []
    finally:
        gate.set()
    assert len(hook.requests) == 1 and [r.status for r in records(a_store)] == ["sent"]
    assert a.close(5) and b.close(5)


def test_a_new_member_waits_for_the_other_process_delivery_and_then_goes_out(stores, hook):
    """A claim that lacks a member of the plan: the plan's delivery follows the other one, as a group's
    deliveries do within one process, and lists the members, the one the other did not send marked new."""
    a_store, b_store = stores
    ids = fleet(a_store, {"Berlin": 2})
    (first_id,) = escalate(a_store, ids["Berlin"][:1], tick=1)
    a = Notifier(a_store, [receiver(hook.url)])
    b = Notifier(b_store, [receiver(hook.url)])
    gate = threading.Event()
    hook.gates = [gate]
    try:
        first = a.notify(tick=1)
        wait_for(lambda: len(hook.requests) == 1)
        (second_id,) = escalate(b_store, ids["Berlin"][1:], tick=2)
        second = b.notify(tick=2)
        time.sleep(1.0)  # it waits for the claim: nothing posted
        assert len(hook.requests) == 1 and not second.done()
        gate.set()
        assert [(d.status, d.escalation_ids) for d in first.result(10)] == [("sent", [first_id])]
        assert [(d.status, d.escalation_ids) for d in second.result(10)] == [("sent", [first_id, second_id])]
    finally:
        gate.set()
    body = hook.requests[1]["json"]
    assert body["mlma"]["new"] == 1 and body["alerts"][0]["annotations"]["escalation_id"] == str(second_id)
    assert [r.escalation_ids for r in records(a_store)] == [[first_id], [first_id, second_id]]
    assert a.plan(tick=2) == [] and b.plan(tick=2) == []
    assert a.close(5) and b.close(5)


CRASHING = textwrap.dedent("""
    import sys
    from mlma.alerts import Notifier, parse_receivers
    from mlma.store import Store

    url, hook = sys.argv[1:3]
    with Store.open(url) as store:
        receivers = parse_receivers([{"name": "ops", "url": hook, "group_by": ["kind", "city"],
                                      "timeout_seconds": 2, "attempts": 1}])
        Notifier(store, receivers, claim_margin=0).notify(tick=1).result(30)
    print("finished", flush=True)
""")


def test_the_claim_of_a_process_killed_while_delivering_lapses_and_the_group_is_sent(url, stores, hook):
    """A process killed in the middle of a delivery never records nor releases its claim: the group is held
    until the claim lapses (claim_seconds), and then the next plan sends it."""
    a_store, _ = stores
    ids = fleet(a_store, {"Berlin": 2})
    escalate(a_store, ids["Berlin"], tick=1)
    gate = threading.Event()
    hook.gates = [gate]
    lease = claim_seconds(receiver(hook.url, timeout_seconds=2, attempts=1), 0)
    assert lease == 6.0
    process = subprocess.Popen([sys.executable, "-c", CRASHING, url, hook.url], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        wait_for(lambda: len(hook.requests) == 1 or process.poll() is not None, 60)
        assert len(hook.requests) == 1, process.communicate()
        killed_at = time.monotonic()
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        gate.set()
    assert records(a_store) == []  # killed before it recorded anything
    survivor = Notifier(a_store, [receiver(hook.url)])
    assert survivor.plan(tick=1) == []  # the dead process's claim holds the group ...
    assert survivor.notify(tick=1).result(10) == [] and len(hook.requests) == 1
    wait_for(lambda: survivor.plan(tick=1) != [], lease + 5)  # ... until it lapses
    assert time.monotonic() - killed_at > lease - 2.5
    assert [(d.group_key, d.status) for d in survivor.notify(tick=1).result(10)] == [(BERLIN, "sent")]
    assert len(hook.requests) == 2 and [r.status for r in records(a_store)] == ["sent"]
    assert survivor.close(5)


def test_a_failed_delivery_releases_its_claim_and_is_retried_by_the_other_process(stores, hook):
    a_store, b_store = stores
    ids = fleet(a_store, {"Berlin": 2})
    escalate(a_store, ids["Berlin"], tick=1)
    hook.script = [(500, {})]
    a = Notifier(a_store, [receiver(hook.url, attempts=1)])
    b = Notifier(b_store, [receiver(hook.url, attempts=1)])
    assert [(d.status, d.http_status, d.recorded) for d in a.notify(tick=1).result(10)] == [("failed", 500, True)]
    assert NotificationLog(b_store).claims(["ops"]) == {}
    # The other process tries it again at its next notify, at once: no claim in the way.
    started = time.monotonic()
    assert [d.status for d in b.notify(tick=1).result(10)] == ["sent"]
    assert time.monotonic() - started < 5
    assert len(hook.requests) == 2 and [r.status for r in records(a_store)] == ["failed", "sent"]
    assert a.plan(tick=1) == [] and b.plan(tick=1) == []
    assert a.close(5) and b.close(5)


def test_a_fleet_wide_event_costs_about_one_store_write_per_group(stores, hook, monkeypatch):
    """Many groups at once (group_by stream): the claims are taken in batches, in the transactions that read what
    was sent, and each outcome is recorded with its claim released in one transaction. Three writes a group (claim,
    record, release) made 2,000 groups take 18 s instead of 6 s, past the 10 s an ``mlma tick`` waits."""
    a_store, _ = stores
    ids = fleet(a_store, {"Berlin": 64})
    escalate(a_store, ids["Berlin"], tick=1)
    writes = []
    write = a_store._write

    @contextlib.contextmanager
    def counted():
        writes.append(1)
        with write() as conn:
            yield conn

    monkeypatch.setattr(a_store, "_write", counted)
    notifier = Notifier(a_store, [receiver(hook.url, group_by=["stream"])])
    deliveries = notifier.notify(tick=1).result(60)
    assert [d.status for d in deliveries] == ["sent"] * 64 and len(hook.requests) == 64
    assert len(writes) <= 64 + 16, len(writes)  # one record each, a few claims of many groups
    assert NotificationLog(a_store).claims(["ops"]) == {} and notifier.plan(tick=1) == []
    assert notifier.close(5)


def test_groups_held_by_a_dead_process_do_not_hold_up_the_others(stores, hook):
    """A process died delivering four groups (as many as a receiver's delivery threads); new members came in
    those groups and in an unrelated one (Zurich). Waiting for the dead process's claims occupied every delivery
    thread until they lapsed (300 s with the defaults), and Zurich with them: it is posted at once."""
    a_store, b_store = stores
    cities = ["Aachen", "Berlin", "Cologne", "Dresden"]
    ids = fleet(a_store, {c: 2 for c in cities + ["Zurich"]})
    dead = NotificationLog(b_store)
    held = []
    for city in cities:
        (first,) = escalate(a_store, ids[city][:1], tick=1)
        held.append(dead.claim("ops", f'{{kind="data-quality",city="{city}"}}', [first],
                               holder="mlma-alerts@elsewhere:999/dead", seconds=300))
        escalate(a_store, ids[city][1:], tick=2)
    escalate(a_store, ids["Zurich"][:1], tick=2)
    notifier = Notifier(a_store, [receiver(hook.url)], max_workers=4)
    pending = notifier.notify(tick=2)
    wait_for(lambda: len(hook.requests) == 1, 20)
    assert hook.requests[0]["json"]["groupKey"] == '{kind="data-quality",city="Zurich"}'
    assert not pending.done()  # the four wait for the claims, without a thread each
    dead.release(*held)  # that delivery ended (here: given up): the waiting ones go out
    deliveries = pending.result(20)
    assert sorted((d.group_key.split('"')[3], d.status, len(d.escalation_ids)) for d in deliveries) == [
        (c, "sent", 2) for c in cities] + [("Zurich", "sent", 1)]
    assert len(hook.requests) == 5 and NotificationLog(a_store).claims(["ops"]) == {}
    assert notifier.close(5)


def test_a_page_is_posted_when_the_sqlite_store_is_too_busy_to_claim_it(tmp_path, hook, caplog):
    """Another process holds the SQLite store's write lock beyond the busy timeout (a long ingest or prune):
    the claim could not be written, and nothing was posted nor recorded. A page does not depend on the store."""
    path = tmp_path / "mlma.db"
    with Store.create(f"sqlite:///{path}") as store:
        escalate(store, fleet(store, {"Berlin": 2})["Berlin"], tick=1)
    with Store.open(f"sqlite:///{path}?timeout=0.5") as store:
        notifier = Notifier(store, [receiver(hook.url)])
        (note,) = notifier.plan(tick=1)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with caplog.at_level(logging.WARNING, logger="mlma.alerts"):
                delivery = notifier.deliver(note)
            other.execute("COMMIT")
        finally:
            other.close()
        assert (delivery.status, delivery.recorded, len(hook.requests)) == ("sent", False, 1)
        assert "posting it without a claim" in caplog.text
        assert notifier.close(5)


def test_a_claim_that_cannot_be_written_does_not_hold_the_page_back(stores, hook, monkeypatch, caplog):
    a_store, _ = stores
    escalate(a_store, fleet(a_store, {"Berlin": 2})["Berlin"], tick=1)

    def down(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT INTO locks ...", {}, Exception("could not connect to server"))

    monkeypatch.setattr(NotificationLog, "claim_groups", down)
    notifier = Notifier(a_store, [receiver(hook.url)])
    with caplog.at_level(logging.WARNING, logger="mlma.alerts"):
        deliveries = notifier.notify(tick=1).result(10)
    assert [(d.status, d.recorded) for d in deliveries] == [("sent", True)] and len(hook.requests) == 1
    assert "without a claim" in caplog.text
    assert [r.status for r in records(a_store)] == ["sent"] and notifier.plan(tick=1) == []
    assert notifier.close(5)


def test_a_notifier_takes_over_its_own_claim_left_by_an_unrecorded_delivery(stores, hook, monkeypatch):
    """Recording a delivery failed once, so its claim was kept; the next delivery of the group by the same
    notifier (a new member) waited for its own claim to lapse (claim_seconds: 198 s here)."""
    a_store, b_store = stores
    ids = fleet(a_store, {"Berlin": 2})
    (first_id,) = escalate(a_store, ids["Berlin"][:1], tick=1)
    record = NotificationLog.record
    failures = [RuntimeError("the store hiccupped")]

    def flaky(self, *args, **kwargs):
        if failures:
            raise failures.pop()
        return record(self, *args, **kwargs)

    monkeypatch.setattr(NotificationLog, "record", flaky)
    a = Notifier(a_store, [receiver(hook.url)])
    assert [(d.status, d.recorded) for d in a.notify(tick=1).result(10)] == [("sent", False)]
    (kept,) = NotificationLog(a_store).claims(["ops"]).values()
    assert sorted(kept.escalation_ids) == [first_id] and kept.holder.startswith("mlma-alerts@")
    # Another process still keeps off the group: the claim lists all the members it would send.
    b = Notifier(b_store, [receiver(hook.url)])
    assert b.plan(tick=1) == []
    (second_id,) = escalate(a_store, ids["Berlin"][1:], tick=2)
    deliveries = a.notify(tick=2).result(10)
    assert [(d.status, d.escalation_ids, d.recorded) for d in deliveries] == [("sent", [first_id, second_id], True)]
    assert hook.requests[1]["json"]["mlma"]["new"] == 1
    assert len(hook.requests) == 2 and NotificationLog(a_store).claims(["ops"]) == {}
    assert a.close(5) and b.close(5)


def test_a_plan_that_read_a_claim_and_then_the_next_sent_notification_does_not_page_again(stores, hook):
    """The plan reads the live claims, then the last sent notifications. Between the two reads the claim's
    holder recorded its delivery of {e1} and sent the group again with e2 new: the plan took {e1} as in flight
    (e2 new) with the newer notification as its last, and its delivery saw nothing sent since: e2 paged twice."""
    a_store, b_store = stores
    ids = fleet(a_store, {"Berlin": 2})
    (e1,) = escalate(a_store, ids["Berlin"][:1], tick=1)
    a = Notifier(a_store, [receiver(hook.url)])
    b = Notifier(b_store, [receiver(hook.url)])
    gate = threading.Event()
    hook.gates = [gate]
    first = a.notify(tick=1)
    wait_for(lambda: len(hook.requests) == 1)  # A posts {e1}; the receiver holds the answer: A's claim lists it
    (e2,) = escalate(a_store, ids["Berlin"][1:], tick=2)
    read_claims = b._log.claims

    def claims_then_the_other_moves_on(receivers):
        found = read_claims(receivers)
        gate.set()
        assert [d.status for d in first.result(10)] == ["sent"]
        assert [(d.status, d.escalation_ids) for d in a.notify(tick=2).result(10)] == [("sent", [e1, e2])]
        return found

    b._log.claims = claims_then_the_other_moves_on
    try:
        (note,) = b.plan(tick=2)
    finally:
        b._log.claims = read_claims
    assert sorted(note.new_ids) == [e2]
    assert b.deliver(note).status == "skipped"
    assert len(hook.requests) == 2  # e2 paged once, by A
    assert a.close(5) and b.close(5)


def test_the_claims_watcher_ends_with_its_notifier(stores, hook):
    """A delivery waiting for another process's claim starts a thread that watches the claims; it waited for
    ever after close(), holding its notifier and store."""
    a_store, _ = stores
    ids = fleet(a_store, {"Berlin": 2})
    escalate(a_store, ids["Berlin"], tick=1)
    NotificationLog(a_store).claim("ops", BERLIN, [987], holder="another process", seconds=600)
    before = set(threading.enumerate())
    notifier = Notifier(a_store, [receiver(hook.url)])
    pending = notifier.notify(tick=1)
    wait_for(lambda: any(t.name == "mlma-alerts-claims" for t in set(threading.enumerate()) - before))
    (watcher,) = [t for t in set(threading.enumerate()) - before if t.name == "mlma-alerts-claims"]
    assert notifier.close(1)
    assert [d.status for d in pending.result(5)] == ["skipped"] and not hook.requests
    watcher.join(5)
    assert not watcher.is_alive()
