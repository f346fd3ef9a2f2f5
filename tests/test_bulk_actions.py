"""A person's action on thousands of named streams: one read to find them, one statement to write them.

Above 1,000 streams the store stages the names and the new values in temporary tables (an IN list or a
statement per stream cost a minute at 100,000 streams; ``benchmarks/bench_actions.py``), so these tests use
1,500 streams, on SQLite and PostgreSQL, and check that exactly the chosen streams got exactly what was asked.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd
import pytest

from mlma.control import ActionError, Operations
from mlma.store.testing import serve_first_models

N = 1_500


@pytest.fixture
def fleet(store):
    names = [f"zone-{i:05d}" for i in range(N)]
    ids = store.stream_ids(names)
    # A stream stored with the spaces around its id (written before ids were stripped), and one whose id has
    # a composed character.
    legacy, composed = store.stream_ids([" legacy ", "Z\u00fcrich"])
    return store, dict(zip(names, ids.tolist())) | {" legacy ": int(legacy), "Z\u00fcrich": int(composed)}


@pytest.mark.parametrize("size", [10, N], ids=["a page", "a fleet"])
def test_resolve_many_finds_each_stream_in_the_order_given(fleet, size):
    store, ids = fleet
    rng = np.random.default_rng(size)
    names = [f"zone-{i:05d}" for i in rng.permutation(N)[:size]]
    given = names + [f"  {names[0]}\t", ids[names[1]], " legacy ", unicodedata.normalize("NFD", "Z\u00fcrich ")]
    expected = [ids[n] for n in names] + [ids[names[0]], ids[names[1]], ids[" legacy "], ids["Z\u00fcrich"]]
    assert store.resolve_many(given).tolist() == expected
    assert store.resolve_many([]).tolist() == []


def test_resolve_many_names_the_unknown_streams(fleet):
    store, ids = fleet
    names = [f"zone-{i:05d}" for i in range(N)]
    with pytest.raises(KeyError, match=r"unknown stream 'nowhere' \(and 2 more unknown\)"):
        store.resolve_many(names + ["nowhere", "legacy", 10**9])  # "legacy" is stored as " legacy ", not so
    with pytest.raises(KeyError, match=r"^'unknown stream 1000000000'$"):
        store.resolve_many([10**9, names[0]])
    with pytest.raises(TypeError, match="got True"):
        store.resolve_many([names[0], True])


def test_a_pin_of_thousands_of_streams_sets_each_one_once(fleet):
    store, ids = fleet
    ops = Operations(store)
    chosen = [f"zone-{i:05d}" for i in range(N) if i % 7] + [f"zone-{i:05d}" for i in range(1200, N)]
    until = pd.Timestamp.now(tz="UTC").floor("s") + pd.Timedelta(days=3)
    done = ops.pin(streams=chosen + [" zone-00001"], until=until, by="user:ana", reason="city launch")
    wanted = {ids[n] for n in chosen}
    assert len(wanted) > 1000  # the staged path
    assert done.changed == len(wanted) == len(done.streams)
    overrides = store.stream_overrides()
    assert set(overrides) == wanted
    assert {pd.Timestamp(o.pinned_until) for o in overrides.values()} == {until}

    again = ops.pin(streams=chosen, until=until, by="user:ana")
    assert again.changed == 0 and again.audit_id is None  # a retried pin writes nothing

    audit = store.audit_log(action="pin")
    assert len(audit) == 1 and audit["id"].iloc[0] == done.audit_id
    assert len(store.audit_log(stream="zone-00003")) == 1 and len(store.audit_log(stream="zone-00007")) == 0

    cleared = ops.unpin(streams=[f"zone-{i:05d}" for i in range(N)], by="user:ana")
    assert cleared.changed == len(wanted) and store.stream_overrides() == {}


def test_parameters_set_and_cleared_on_thousands_of_streams_leave_the_others_alone(fleet):
    store, ids = fleet
    ops = Operations(store)
    ops.pin(streams=["zone-00007"], by="user:ana")
    first = [f"zone-{i:05d}" for i in range(1100)]
    ops.set_params(streams=first, params={"cooldown_ticks": 5}, by="user:ana")
    overrides = store.stream_overrides()
    assert {i for i, o in overrides.items() if o.cooldown_ticks == 5} == {ids[n] for n in first}
    assert overrides[ids["zone-00007"]].pinned_until is not None

    ops.set_params(streams=first, params={"cooldown_ticks": None}, by="user:ana")
    overrides = store.stream_overrides()
    assert set(overrides) == {ids["zone-00007"]} and overrides[ids["zone-00007"]].cooldown_ticks is None


def test_actions_queued_and_periods_marked_on_thousands_of_streams_are_one_row_each(fleet):
    store, ids = fleet
    ops = Operations(store)
    chosen = [f"zone-{i:05d}" for i in range(100, 1300)]
    serve_first_models(store, [ids[n] for n in chosen])
    queued = ops.force_retrain(streams=chosen + chosen[:50], by="user:bob", reason="new promo calendar")
    assert queued.queued == len(chosen)
    pending = ops.pending_actions()
    assert sorted(pending["stream_id"].tolist()) == sorted(ids[n] for n in chosen)
    assert set(pending["kind"]) == {"retrain"} and set(pending["created_by"]) == {"user:bob"}
    assert set(pending["reason"]) == {"new promo calendar"}
    assert all(p == {"direct": False} for p in pending["params"])

    marked = ops.mark_abnormal("2024-03-01", "2024-03-04", streams=chosen[:1001], by="user:bob", reason=None)
    periods = ops.abnormal_periods()
    assert marked.changed == 1001 and sorted(periods["stream_id"].tolist()) == sorted(ids[n] for n in chosen[:1001])
    assert set(pd.to_datetime(periods["start"])) == {pd.Timestamp("2024-03-01")}
    assert set(pd.to_datetime(periods["end"])) == {pd.Timestamp("2024-03-04")}
    assert periods["reason"].isna().all()

    fleet_wide = ops.mark_abnormal("2024-05-01", "2024-05-02", by="user:bob")
    assert fleet_wide.changed == 1 and ops.abnormal_periods()["stream_id"].isna().sum() == 1

    with pytest.raises(ActionError, match=r"unknown stream 'zone-99999' \(and 1 more unknown\)"):
        ops.force_retrain(streams=chosen + ["zone-99999", "zone-99998"], by="user:bob")
    assert len(ops.pending_actions()) == len(chosen)  # nothing queued by the refused request


def test_a_queued_action_leaves_out_the_streams_no_model_serves_yet_and_says_so(fleet):
    """A re-training or a reset of a stream that has no model yet is something no tick can carry out: asked for
    such streams alone it is refused, naming them, with nothing written; asked for a group or many streams of
    which some have a model (`mlma retrain --all` the day after new zones arrived), those are acted on and the
    answer and the audit entry say how many were left out and why."""
    store, ids = fleet
    ops = Operations(store)
    store.set_attributes({f"zone-{i:05d}": {"city": "Berlin" if i < 1000 else "Paris"} for i in range(N)})
    serve_first_models(store, [ids[f"zone-{i:05d}"] for i in range(10, 1000)])
    with pytest.raises(ActionError, match=r"^stream 'zone-00003' has no model yet: the agent fits a stream's first "
                                          r"model once it has enough history \(a season\), and a queued retrain"):
        ops.force_retrain(["zone-00003"], by="user:ana")
    with pytest.raises(ActionError, match=r"^none of the 500 streams \(group:city=Paris\) has a model yet: .* "
                                          "queued rebase-reference would do nothing; nothing was queued$"):
        ops.reset_reference(group={"city": "Paris"}, rebase=True, by="user:ana")
    with pytest.raises(ActionError, match=r"^none of the 4 streams \(zone-00000, zone-00001, zone-00002 and 1 more\)"):
        ops.force_retrain([f"zone-{i:05d}" for i in range(4)], by="user:ana")
    assert ops.pending_actions().empty and store.audit_log().empty

    queued = ops.force_retrain(group={"city": "Berlin"}, by="user:ana", reason="new promo calendar")
    assert queued.queued == 990 and queued.streams[0] == "zone-00010"
    assert queued.detail["note"] == ("10 of the 1,000 streams left out (zone-00000, zone-00001, zone-00002, "
                                     "zone-00003, zone-00004 and 5 more): no model yet, the agent fits a stream's "
                                     "first model once it has enough history (a season)")
    assert sorted(ops.pending_actions()["stream_id"]) == [ids[f"zone-{i:05d}"] for i in range(10, 1000)]
    entry = store.audit_log().iloc[-1]
    assert (entry["target"], entry["params"]) == ("group:city=Berlin", {"streams": 990, "direct": False,
                                                                        "left_out_no_model": 10})
    assert len(store.audit_log(stream="zone-00010")) == 1 and store.audit_log(stream="zone-00000").empty
    reset = ops.reset_reference(["zone-00011", "zone-01200"], by="user:ana")
    assert (reset.queued, reset.streams) == (1, ["zone-00011"]) and "1 of the 2 streams left out (zone-01200)" \
        in reset.detail["note"]
    assert store.audit_log().iloc[-1]["target"] == "stream:zone-00011"


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_name_among_thousands_is_an_unknown_stream(fleet, blank):
    """Staged, a blank name became NULL, which PostgreSQL's staged key refused: a 500 from the API, where a page
    of names gave the 422 of an unknown stream."""
    store, ids = fleet
    ops = Operations(store)
    names = [f"zone-{i:05d}" for i in range(1200)]
    with pytest.raises(ActionError, match=f"^unknown stream {blank!r}$"):
        ops.pin(streams=names + [blank], by="user:ana")
    with pytest.raises(ActionError, match=r"unknown stream 'nowhere' \(and 1 more unknown\)"):
        ops.pin(streams=names + ["nowhere", "nowhere", ""], by="user:ana")  # a repeated name is one stream
    assert store.stream_overrides() == {}


def test_what_a_person_adds_keeps_their_reason_as_given_and_takes_any_collection_of_ids(fleet):
    store, ids = fleet
    chosen = {ids[f"zone-{i:05d}"] for i in range(10)}
    with store.transaction() as tx:
        tx.queue_actions(chosen, "retrain", {"direct": False}, by="user:ana", reason="")
        tx.add_abnormal_periods(sorted(chosen), pd.Timestamp("2024-01-01").to_pydatetime(),
                                pd.Timestamp("2024-01-02").to_pydatetime(), by="user:ana", reason="")
        tx.audit("user:ana", "retrain", "streams:10", {}, "", streams=dict.fromkeys(chosen).keys())
    ops = Operations(store)
    assert sorted(ops.pending_actions()["stream_id"]) == sorted(chosen)
    assert set(ops.pending_actions()["reason"]) == {""} and set(ops.abnormal_periods()["reason"]) == {""}
    assert len(store.audit_log(stream="zone-00004")) == 1


def test_each_streams_audit_finds_who_acted_on_its_escalations_queued_actions_and_abnormal_periods(store):
    """`audit?stream=` and the stream page found two of about twenty entries about a stream: the changes of its
    escalations' status, the cancels of its queued actions and abnormal periods, and fleet-wide abnormal periods
    were audited without the streams they touched."""
    from mlma.escalations import Escalation

    ids = store.stream_ids(["zone-a", "zone-b", "zone-c"]).tolist()
    serve_first_models(store, ids)
    ops = Operations(store)
    a, b, c = ids
    esc_a, esc_b = store.add_escalations([Escalation(a, 3, "silent", 1, "no actuals"),
                                          Escalation(b, 3, "silent", 1, "no actuals")])
    ops.acknowledge([esc_a], by="user:ana")
    ops.silence([esc_a, esc_b], "4h", by="user:ana", reason="feed outage known")
    ops.force_retrain(["zone-a"], by="user:ana")
    ops.cancel_action([int(ops.pending_actions()["id"].iloc[0])], by="user:bob", reason="not needed")
    ops.mark_abnormal("2025-01-01", "2025-01-02", ["zone-a"], by="user:ana")
    ops.mark_abnormal("2025-01-05", "2025-01-06", by="user:ana", reason="a national holiday")  # the fleet
    for period in store.abnormal_periods()["id"].tolist():
        ops.cancel_abnormal([int(period)], by="user:bob")

    def actions(stream):
        return store.audit_log(stream=stream)["action"].tolist()

    assert actions("zone-a") == ["escalation-acknowledged", "escalation-silenced", "retrain", "cancel-action",
                                 "mark-abnormal", "mark-abnormal", "cancel-abnormal", "cancel-abnormal"]
    assert actions("zone-b") == ["escalation-silenced", "mark-abnormal", "cancel-abnormal"]  # its own and the fleet's
    assert actions("zone-c") == ["mark-abnormal", "cancel-abnormal"]
    fleet_cancel = store.audit_log(action="cancel-abnormal").iloc[-1]
    assert fleet_cancel["target"] == "fleet" and fleet_cancel["params"]["abnormal"].startswith("abnormal:")


def test_an_abnormal_period_marked_twice_is_one_period_and_one_audit_entry(store):
    """A request sent twice (a double click, a retried call) marked each stream twice, and the fleet's count
    of active periods doubled; now the second marks only what the first did not, and says so."""
    store.stream_ids(["zone-a", "zone-b"])
    ops = Operations(store)
    first = ops.mark_abnormal("2025-01-01", "2025-01-02", ["zone-a"], by="user:ana", reason="an outage")
    again = ops.mark_abnormal("2025-01-01", "2025-01-02", ["zone-a", "zone-b"], by="user:bo")
    same = ops.mark_abnormal("2025-01-01", "2025-01-02", ["zone-b"], by="user:bo")
    fleet = [ops.mark_abnormal("2025-01-05", "2025-01-06", by="user:ana") for _ in range(2)]
    assert (first.changed, again.changed, same.changed) == (1, 1, 0)
    assert same.audit_id is None and same.detail["note"] == "this period was marked already: nothing changed"
    assert [f.changed for f in fleet] == [1, 0] and fleet[0].detail["scope"] == "fleet"
    periods = store.abnormal_periods()
    assert sorted(periods["unique_id"].fillna("fleet")) == ["fleet", "zone-a", "zone-b"]
    assert store.audit_log(action="mark-abnormal")["params"].map(lambda p: p["streams"]).tolist() == [1, 1, 1]
    # Cancelled, it can be marked again; other bounds are another period.
    ops.cancel_abnormal([int(periods.query("unique_id == 'zone-a'")["id"].iloc[0])], by="user:ana")
    assert ops.mark_abnormal("2025-01-01", "2025-01-02", ["zone-a"], by="user:ana").changed == 1
    assert ops.mark_abnormal("2025-01-01", "2025-01-03", ["zone-a"], by="user:ana").changed == 1
