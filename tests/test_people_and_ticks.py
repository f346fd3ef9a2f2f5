"""A person's actions made while a tick runs, on SQLite and PostgreSQL: a roll-back during the tick stands (the
tick's own move of that stream is left out), the actions the tick took up can no longer be cancelled, and the
verdicts name the version that made the forecasts they score, whatever a person moved since."""

from __future__ import annotations

import contextlib

import pandas as pd
import pytest

import mlma.live
from mlma.control import ActionError, Operations
from mlma.live import LiveAgent
from mlma.project import load_config
from mlma.registry import ModelRegistry
from mlma.simulate import simulate_platform
from mlma.store import Store
from test_live import FIRST_TICK, day_chunks, make_project

STREAM = "c00-z01"


@pytest.fixture(scope="module")
def platform() -> pd.DataFrame:
    return simulate_platform(6, FIRST_TICK + 8, seed=2, event_rate=0).data


@pytest.fixture(params=["sqlite", "postgresql"])
def project(request, tmp_path, platform):
    """A live project on each backend after its start-up tick (seasonal naive: quick fits), the agent, the store
    a person acts through (a connection of their own), and the days to come."""
    with contextlib.ExitStack() as stack:
        db = None
        if request.param == "postgresql":
            from mlma.store.testing import postgres_schema

            db = stack.enter_context(postgres_schema(request.getfixturevalue("postgres_server")))
        root = make_project(tmp_path / "p", db=db, model="seasonal-naive")
        config = load_config(root)
        agent_store = stack.enter_context(Store.open(config.store_url))
        person_store = stack.enter_context(Store.open(config.store_url))
        chunks = iter(day_chunks(platform, FIRST_TICK))
        live = stack.enter_context(LiveAgent(config, store=agent_store))
        ops = Operations(person_store, registry=ModelRegistry(person_store, config.artifacts_dir))
        agent_store.ingest_frame(next(chunks), "history")
        live.step()
        yield live, agent_store, ops, chunks


def tick(live, store, chunks, *, during=None, at: str = "before-commit"):
    """Ingest the next day and run its tick; ``during()`` runs at the tick's checkpoint ``at`` (a person acting
    while it runs: after it began, or just before it commits)."""
    chunk = next(chunks)
    store.ingest_frame(chunk, f"day-{chunk['ds'].min()}")
    with pytest.MonkeyPatch.context() as patch:
        if during is not None:
            def checkpoint(name: str) -> None:
                if name == at:
                    during()
            patch.setattr(mlma.live, "_checkpoint", checkpoint)
        return live.step()


def test_a_roll_back_while_the_tick_runs_stands_and_the_taken_up_action_cannot_be_cancelled(project):
    live, store, ops, chunks = project
    ops.force_retrain([STREAM], direct=True, by="user:ana")
    tick(live, store, chunks)
    registry = ops.registry
    assert registry.champion(STREAM).version == 2
    queued = ops.force_retrain([STREAM], direct=True, by="user:ana", reason="before the campaign")
    action_id = int(ops.pending_actions()["id"].iloc[0])
    acted = {}

    def person():
        with pytest.raises(ActionError) as refused:
            ops.cancel_action([action_id], by="user:bob")
        acted["refusal"] = str(refused.value)
        acted["rollback"] = ops.rollback(STREAM, 1, by="user:bob", reason="v2 over-forecasts")

    result = tick(live, store, chunks, during=person)
    assert queued.queued == 1
    assert acted["refusal"].startswith(f"action(s) [{action_id}] were taken up by tick {result.tick}, which is "
                                       "running: they can no longer be cancelled")
    # The tick re-trained the stream (version 3) and would have put it in service; bob's roll-back came first.
    assert registry.champion(STREAM).version == 1
    assert [v.version for v in registry.versions(STREAM)] == [1, 2, 3]
    history = registry.history(STREAM)
    assert (history[-1].version, history[-1].previous_version, history[-1].moved_by) == (1, 2, "user:bob")
    assert any("left out because a person moved the stream" in note for note in result.notes), result.notes
    actions = ops.actions().set_index("id")
    assert actions.loc[action_id, "status"] == "applied"  # carried out: the fit was made, but does not serve
    assert actions.loc[action_id, "outcome"].endswith("; version 3 was not put in service: a person moved the "
                                                      "stream while the tick ran, and their choice stands")
    assert result.summary.promoted == 0 and store.tick_summaries([result.tick])[result.tick].promoted == 0
    # The next tick adopts bob's choice: its forecasts are version 1's; its verdicts name version 3, whose
    # forecasts (issued by the tick above, in its own view) it scores.
    after = tick(live, store, chunks)
    forecasts = store.forecasts(after.tick).set_index("unique_id")
    assert (forecasts.loc[STREAM, "model_version"] == 1).all()
    issued_before = store.forecasts(result.tick).set_index("unique_id")
    verdict = store.verdicts(tick=after.tick).set_index("unique_id").loc[STREAM]
    assert verdict["model_version"] == issued_before.loc[STREAM, "model_version"].iloc[0]
    assert registry.champion(STREAM).version == 1


def test_verdicts_name_the_version_that_made_the_scored_forecasts_after_a_persons_move(project):
    live, store, ops, chunks = project
    ops.force_retrain([STREAM], direct=True, by="user:ana")
    first = tick(live, store, chunks)
    assert ops.registry.champion(STREAM).version == 2
    ops.rollback(STREAM, 1, by="user:bob")  # between ticks: the forecasts to score were version 2's
    scored = tick(live, store, chunks)
    issued = store.forecasts(first.tick).set_index("unique_id").loc[STREAM, "model_version"]
    assert set(issued) == {2}
    assert store.verdicts(tick=scored.tick).set_index("unique_id").loc[STREAM, "model_version"] == 2
    assert (store.forecasts(scored.tick).set_index("unique_id").loc[STREAM, "model_version"] == 1).all()


@pytest.mark.parametrize("order", ["rollback-then-retrain", "retrain-then-rollback", "direct-rollback-retrain"])
def test_of_a_roll_back_and_a_forced_re_training_between_ticks_the_later_one_is_carried_out_last(project, order):
    """A person rolled a stream back, then queued a re-training of it (a fresh fit to challenge the version they
    chose): the tick dropped the re-training ("their choice stands"), though it came after. Now a re-training
    queued after the roll-back runs on top of it, a challenger to the version chosen; one queued before it
    still yields to it, and says so, and lends the later one neither its `direct` nor its reason (a `direct`
    re-training queued before the roll-back put the new model in service over it)."""
    live, store, ops, chunks = project
    ops.force_retrain([STREAM], direct=True, by="user:ana")
    tick(live, store, chunks)
    registry = ops.registry
    assert registry.champion(STREAM).version == 2
    if order == "rollback-then-retrain":
        ops.rollback(STREAM, 1, by="user:ana", reason="v2 over-forecasts")
        ops.force_retrain([STREAM], by="user:ana", reason="and a fresh fit to challenge v1")
    elif order == "retrain-then-rollback":
        ops.force_retrain([STREAM], by="user:ana")
        ops.rollback(STREAM, 1, by="user:ana", reason="v2 over-forecasts")
    else:
        ops.force_retrain([STREAM], direct=True, by="user:ana", reason="serve a fresh fit")
        ops.rollback(STREAM, 1, by="user:ana", reason="v2 over-forecasts")
        ops.force_retrain([STREAM], by="user:ana", reason="a challenger to v1")
    result = tick(live, store, chunks)
    actions = ops.actions()
    retrains = actions[actions["kind"] == "retrain"].sort_values("id")
    retrain = retrains.iloc[-1]
    assert registry.champion(STREAM).version == 1
    if order == "retrain-then-rollback":
        assert [v.version for v in registry.versions(STREAM)] == [1, 2]
        assert result.summary.retrains == 0
        assert retrain["outcome"].startswith("not re-trained: a person put version 1 in service after this "
                                             "re-training was queued")
        return
    assert [v.version for v in registry.versions(STREAM)] == [1, 2, 3]
    assert result.summary.retrains == 1
    assert retrain["outcome"] == "re-trained; the challenger runs in shadow before promotion"
    if order == "direct-rollback-retrain":
        assert retrains.iloc[-2]["outcome"].startswith(
            "not re-trained: a person put another version in service after this re-training was queued")
        assert retrains.iloc[-2]["outcome"].endswith("; a re-training queued after that choice was carried out")
        reason = store.verdicts(tick=result.tick).set_index("unique_id").loc[STREAM, "reason"]
        assert reason == "forced by user:ana: a challenger to v1", reason


def test_an_action_queued_while_a_tick_runs_waits_for_the_next_and_can_be_cancelled(project):
    live, store, ops, chunks = project
    late = {}

    def person():
        ops.force_retrain([STREAM], by="user:ana")
        late["id"] = int(ops.pending_actions()["id"].iloc[0])

    tick(live, store, chunks, during=person, at="after-begin")  # queued after the tick took up the actions
    assert ops.actions().set_index("id").loc[late["id"], "status"] == "pending"
    assert ops.cancel_action([late["id"]], by="user:ana").changed == 1
    tick(live, store, chunks)
    assert ops.actions().set_index("id").loc[late["id"], "status"] == "cancelled"
    assert [v.version for v in ops.registry.versions(STREAM)] == [1]


def test_an_action_taken_up_by_a_killed_tick_can_be_cancelled_and_its_next_attempt_leaves_it_out(project):
    """An agent killed (SIGKILL) right after its tick took the actions up leaves the tick `running` and its lock
    held by a process that no longer runs: the tick runs no more, so a person may still cancel, and the next
    attempt of that tick does not re-train the stream."""
    from mlma.store.testing import gone_agent

    live, store, ops, chunks = project
    ops.force_retrain([STREAM], direct=True, by="user:ana", reason="before the campaign")
    action_id = int(ops.pending_actions()["id"].iloc[0])
    chunk = next(chunks)
    store.ingest_frame(chunk, f"day-{chunk['ds'].min()}")
    k = store.last_done_tick() + 1
    store.begin_tick(k, lease=store.acquire_lock(gone_agent(), ttl=300.0))  # what the killed agent committed
    assert ops.cancel_action([action_id], by="user:bob", reason="the campaign was called off").changed == 1
    result = live.step()
    assert result.tick == k
    assert ops.actions().set_index("id").loc[action_id, "status"] == "cancelled"
    assert [v.version for v in ops.registry.versions(STREAM)] == [1]


def test_a_pinned_young_stream_on_its_fall_back_is_not_re_fitted_until_unpinned(tmp_path, platform):
    """A zone launched two days before the start-up serves seasonal naive (ridge needs nine days) and is retried
    each day as its history grows; pinned, it keeps its model: a pin means no automatic re-training."""
    day0 = platform["ds"].min().normalize()
    young = platform[(platform["unique_id"] != STREAM) | (platform["ds"] >= day0 + pd.Timedelta(days=FIRST_TICK - 2))]
    root = make_project(tmp_path / "p", model="ridge")
    config = load_config(root)
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        ops = Operations(store, registry=ModelRegistry(store, config.artifacts_dir))
        chunks = iter(day_chunks(young, FIRST_TICK))
        store.ingest_frame(next(chunks), "history")
        live.step()
        first = ops.registry.champion(STREAM)
        assert "ridge needs" in first.metrics["fallback_reason"]  # seasonal naive, its fall-back
        ops.pin([STREAM], by="user:ana", reason="launch week")
        for _ in range(3):
            tick(live, store, chunks)
        assert [v.version for v in ops.registry.versions(STREAM)] == [1]
        ops.unpin([STREAM], by="user:ana")
        tick(live, store, chunks)
        assert [v.version for v in ops.registry.versions(STREAM)] == [1, 2]  # retried once unpinned


def _until_awaiting(live, store, chunks, registry, version: int, ticks: int = 5) -> None:
    """Tick until ``version`` of the stream waits for approval (seasonal naive re-fitted ties its champion in
    shadow, and a tie is promoted: with approval required, it waits)."""
    for _ in range(ticks):
        tick(live, store, chunks)
        if registry.version(STREAM, version).check.get("result") == "awaiting-approval":
            return
    raise AssertionError(f"version {version} never waited for approval: {registry.version(STREAM, version).check}")


def _second_version_waiting(live, store, ops, chunks) -> None:
    """Require approval of the stream's promotions and force a re-training: tick until version 2 waits."""
    ops.require_approval([STREAM], by="user:ana")
    ops.force_retrain([STREAM], by="user:ana")
    _until_awaiting(live, store, chunks, ops.registry, 2)


@pytest.mark.parametrize("answer", ["approve", "reject"])
def test_an_approval_overtaken_by_a_persons_move_says_so_and_the_waiting_version_is_marked_dropped(project, answer):
    live, store, ops, chunks = project
    registry = ops.registry
    ops.force_retrain([STREAM], direct=True, by="user:ana")
    tick(live, store, chunks)                                    # version 2 serves
    ops.require_approval([STREAM], by="user:ana")
    ops.force_retrain([STREAM], by="user:ana")                   # version 3: judged in shadow, then waits
    _until_awaiting(live, store, chunks, registry, 3)
    getattr(ops, answer)(STREAM, by="user:ana")
    ops.rollback(STREAM, 1, by="user:bob")                       # before the tick that carries the answer out
    tick(live, store, chunks)
    outcome = ops.actions().query("kind == @answer")["outcome"].iloc[0]
    assert outcome == ("not carried out: a person put version 1 in service, which dropped version 3 that waited "
                       "for approval"), outcome
    assert registry.champion(STREAM).version == 1
    assert registry.version(STREAM, 3).check == {"result": "dropped", "why": "user:bob put version 1 in service"}


def test_an_approval_carried_out_and_one_with_nothing_waiting_say_what_happened(project):
    live, store, ops, chunks = project
    registry = ops.registry
    ops.require_approval([STREAM], by="user:ana")
    with pytest.raises(ActionError, match="no model waiting for approval and no challenger in shadow"):
        ops.approve(STREAM, by="user:ana", reason="nothing waits yet")   # refused, not queued to do nothing
    assert len(ops.actions()) == 0
    ops.force_retrain([STREAM], by="user:ana")
    tick(live, store, chunks)
    assert registry.version(STREAM, 2).check == {"result": "pending"}
    ops.approve(STREAM, by="user:ana", reason="approved ahead of its check")  # in shadow: it may come to wait
    tick(live, store, chunks)
    # Its check ended in that tick (seasonal naive re-fitted ties its champion, and a tie is promoted: with
    # approval required, it waits) and the approval decided it there.
    assert ops.actions().query("kind == 'approve'")["outcome"].iloc[0] == "approved: version 2 serves"
    assert registry.version(STREAM, 2).check == {"result": "promoted", "approved_by": "user:ana"}
    assert registry.champion(STREAM).version == 2
    ops.force_retrain([STREAM], by="user:ana")
    _until_awaiting(live, store, chunks, registry, 3)
    ops.approve(STREAM, by="user:ana")
    tick(live, store, chunks)
    assert ops.actions().query("kind == 'approve'")["outcome"].iloc[0] == "approved: version 3 serves"
    assert registry.champion(STREAM).version == 3


def test_a_re_training_queued_before_an_approval_that_a_rejection_overrode_is_carried_out_as_queued(project):
    """Re-train, approve, then reject, all for one tick: the rejection stands, so no person chose a serving model
    and the re-training does not yield to the overridden approval (it was dropped with "a person put another
    version in service" and lost its reason)."""
    live, store, ops, chunks = project
    registry = ops.registry
    _second_version_waiting(live, store, ops, chunks)
    ops.force_retrain([STREAM], by="user:ana", reason="a fit on this week's data instead")
    ops.approve(STREAM, by="user:ana")
    ops.reject(STREAM, by="user:bob")
    result = tick(live, store, chunks)
    actions = ops.actions()
    assert actions.query("kind == 'reject'")["outcome"].iloc[0].startswith("rejected")
    assert registry.champion(STREAM).version == 1
    assert [v.version for v in registry.versions(STREAM)] == [1, 2, 3]
    retrain = actions[actions["kind"] == "retrain"].sort_values("id").iloc[-1]
    assert retrain["outcome"] == "re-trained; the challenger runs in shadow before promotion", retrain["outcome"]
    reason = store.verdicts(tick=result.tick).set_index("unique_id").loc[STREAM, "reason"]
    assert reason == "forced by user:ana: a fit on this week's data instead", reason


def test_a_re_training_queued_before_an_approval_the_agents_own_check_made_moot_is_not_said_to_yield(project):
    """A re-training, then an approval of the challenger still in shadow (approval not required): the tick's own
    check promotes the challenger, nothing waited, and the re-training is carried out. Its outcome said "a person
    put another version in service ... their choice stands": the agent chose, not a person."""
    live, store, ops, chunks = project
    registry = ops.registry
    ops.force_retrain([STREAM], by="user:ana")                   # version 2, judged in shadow
    tick(live, store, chunks)
    assert registry.version(STREAM, 2).check == {"result": "pending"}
    ops.force_retrain([STREAM], by="user:ana", reason="a fit on this week's data too")
    ops.approve(STREAM, by="user:bob")
    tick(live, store, chunks)
    assert registry.champion(STREAM).version == 2                # the check promoted it (seasonal naive ties)
    assert registry.version(STREAM, 2).check.get("result") == "promoted"
    retrain = ops.actions().query("kind == 'retrain'").sort_values("id").iloc[-1]
    assert retrain["outcome"].startswith("re-trained"), retrain["outcome"]
    assert [v.version for v in registry.versions(STREAM)] == [1, 2, 3]


@pytest.mark.parametrize("order", [("approve", "reject"), ("reject", "approve")])
def test_approve_and_reject_queued_for_one_tick_the_later_decision_stands(project, order):
    """A person approves, then changes their mind and rejects before the tick (or the other way round): the
    later decision is carried out and the earlier one's outcome names the action that replaced it."""
    live, store, ops, chunks = project
    registry = ops.registry
    _second_version_waiting(live, store, ops, chunks)
    first, then = order
    getattr(ops, first)(STREAM, by="user:ana")
    later = getattr(ops, then)(STREAM, by="user:bob")
    tick(live, store, chunks)
    actions = ops.actions().set_index("kind")
    later_id = int(actions.loc[then, "id"])
    assert actions.loc[first, "outcome"] == (f"not carried out: a later {then} (action {later_id} by user:bob) "
                                             "replaced it")
    assert later.audit_id is not None
    if then == "approve":
        assert actions.loc[then, "outcome"] == "approved: version 2 serves"
        assert registry.champion(STREAM).version == 2
    else:
        assert actions.loc[then, "outcome"] == "rejected: version 2 is dropped"
        assert registry.champion(STREAM).version == 1
        assert registry.version(STREAM, 2).check.get("result") == "rejected"


def _slots(store, stream: str) -> tuple[int, int, int]:
    """The stream's registry versions in the saved state's slots: serving, in shadow, waiting for approval (-1:
    none), as the next tick starts from them."""
    arrays = store.load_state().arrays
    sid = int(store.stream_ids([stream], create=False)[0])
    return tuple(int(arrays[f"live.{slot}_version"][sid]) for slot in ("champion", "challenger", "awaiting"))


def test_a_forced_re_training_replaces_the_challenger_in_shadow(project):
    """A person forces a re-training while the stream's last one runs in shadow: the request is carried out (it
    used to be lost: "still being judged"), the challenger in shadow is dropped with a check saying who replaced
    it, and the new one runs in shadow in its place and is judged at the next tick."""
    live, store, ops, chunks = project
    registry = ops.registry
    ops.force_retrain([STREAM], by="user:ana")
    tick(live, store, chunks)
    assert registry.version(STREAM, 2).check == {"result": "pending"}
    queued = ops.force_retrain([STREAM], by="user:bob", reason="depot data fixed")
    # The answer says what the tick will do with the challenger (the CLI prints it, the API returns it).
    assert queued.detail["note"].startswith(f"1 stream has a challenger ({STREAM}: version 2 in shadow): the "
                                            "re-training replaces it"), queued.detail
    result = tick(live, store, chunks)
    assert registry.version(STREAM, 2).check == {"result": "dropped", "why": "replaced by version 3, a re-training "
                                                                              "forced by user:bob: depot data fixed"}
    assert registry.version(STREAM, 3).check == {"result": "pending"}
    assert registry.champion(STREAM).version == 1 and _slots(store, STREAM) == (1, 3, -1)
    outcome = ops.actions().query("reason == 'depot data fixed'")["outcome"].iloc[0]
    assert outcome == "re-trained; the challenger runs in shadow before promotion; it replaced version 2, which was " \
                      "in shadow", outcome
    assert store.verdicts(tick=result.tick).set_index("unique_id").loc[STREAM, "reason"].startswith("forced by "
                                                                                                   "user:bob")
    # The next tick judges the new challenger (seasonal naive re-fitted ties its champion, and a tie is
    # promoted); the dropped one stays dropped.
    tick(live, store, chunks)
    assert registry.version(STREAM, 3).check["result"] == "promoted" and registry.champion(STREAM).version == 3
    assert registry.version(STREAM, 2).check["result"] == "dropped" and _slots(store, STREAM) == (3, -1, -1)


def test_a_direct_forced_re_training_replaces_the_challenger_in_shadow_and_serves_at_once(project):
    live, store, ops, chunks = project
    registry = ops.registry
    ops.force_retrain([STREAM], by="user:ana")
    tick(live, store, chunks)
    assert registry.version(STREAM, 2).check == {"result": "pending"}
    ops.force_retrain([STREAM], direct=True, by="user:bob")
    result = tick(live, store, chunks)
    assert registry.version(STREAM, 2).check == {"result": "dropped",
                                                 "why": "replaced by version 3, a re-training forced by user:bob"}
    assert registry.champion(STREAM).version == 3 and _slots(store, STREAM) == (3, -1, -1)
    assert (store.forecasts(result.tick).set_index("unique_id").loc[STREAM, "model_version"] == 3).all()
    outcome = ops.actions().query("created_by == 'user:bob'")["outcome"].iloc[0]
    assert outcome == "re-trained and promoted (version 3); it replaced version 2, which was in shadow", outcome
    after = tick(live, store, chunks)
    assert registry.champion(STREAM).version == 3 and _slots(store, STREAM) == (3, -1, -1)
    assert [v.version for v in registry.versions(STREAM)] == [1, 2, 3]
    assert (store.forecasts(after.tick).set_index("unique_id").loc[STREAM, "model_version"] == 3).all()


@pytest.mark.parametrize("direct", [False, True], ids=["in shadow", "direct"])
def test_a_forced_re_training_whose_fit_fails_leaves_the_challenger_in_its_place(project, direct):
    """The challenger used to be dropped before the replacing fit: a fit that failed left the stream with neither
    (the person's action lost the re-training that was being judged). It now stays, and is judged next tick."""
    from mlma.training import ModelService

    live, store, ops, chunks = project
    registry = ops.registry
    ops.force_retrain([STREAM], by="user:ana")
    tick(live, store, chunks)
    assert registry.version(STREAM, 2).check == {"result": "pending"} and _slots(store, STREAM) == (1, 2, -1)
    ops.force_retrain([STREAM], direct=direct, by="user:bob", reason="depot data fixed")
    sid, fit = store.resolve(STREAM), ModelService.fit

    def failing_fit(self, keys, **kw):
        fitted = fit(self, keys, **kw)
        for i, key in enumerate(keys):
            if key.stream == sid:
                fitted[i] = None
                self.failures[key] = "RuntimeError: the feature store timed out"
        return fitted

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ModelService, "fit", failing_fit)
        tick(live, store, chunks)
    assert registry.version(STREAM, 2).check == {"result": "pending"}
    assert [v.version for v in registry.versions(STREAM)] == [1, 2] and _slots(store, STREAM) == (1, 2, -1)
    outcome = ops.actions().query("reason == 'depot data fixed'")["outcome"].iloc[0]
    assert outcome == ("re-training failed: RuntimeError: the feature store timed out; version 2, in shadow, stays "
                       "in its place"), outcome
    # Its check goes on: the next tick judges it (seasonal naive re-fitted ties its champion: promoted).
    tick(live, store, chunks)
    assert registry.version(STREAM, 2).check["result"] == "promoted" and _slots(store, STREAM) == (2, -1, -1)


def test_a_forced_re_training_replaces_the_version_waiting_for_approval_and_resolves_its_escalation(project):
    live, store, ops, chunks = project
    registry = ops.registry
    _second_version_waiting(live, store, ops, chunks)
    assert "approval-needed" in set(store.escalations(streams=[STREAM], status="open")["kind"])
    queued = ops.force_retrain([STREAM], by="user:bob", reason="campaign data came late")
    assert f"({STREAM}: version 2 waits for approval)" in queued.detail["note"], queued.detail
    tick(live, store, chunks)
    assert registry.version(STREAM, 2).check == {
        "result": "dropped", "why": "replaced by version 3, a re-training forced by user:bob: campaign data came late"}
    assert registry.version(STREAM, 3).check == {"result": "pending"}
    assert registry.champion(STREAM).version == 1 and _slots(store, STREAM) == (1, 3, -1)
    outcome = ops.actions().query("created_by == 'user:bob'")["outcome"].iloc[0]
    assert outcome == "re-trained; the challenger runs in shadow before promotion; it replaced version 2, which was " \
                      "waiting for approval", outcome
    # Nothing waits for approval any more: its escalation is resolved with the tick that dropped the version.
    assert "approval-needed" not in set(store.escalations(streams=[STREAM], status="open")["kind"])
    tick(live, store, chunks)
    assert registry.version(STREAM, 3).check["result"] == "awaiting-approval"
    assert registry.champion(STREAM).version == 1 and _slots(store, STREAM) == (1, -1, 3)


def test_an_approval_of_a_version_a_forced_re_training_replaced_is_not_carried_out_for_its_successor(project):
    """Ana approves version 2, which waits for approval, while the tick that replaces it (Bob's forced
    re-training) runs: her approval is of version 2. It used to be carried out at the next tick for version 3,
    which had come to wait in its place and which she never saw; now it is not, and its outcome says why."""
    live, store, ops, chunks = project
    registry = ops.registry
    _second_version_waiting(live, store, ops, chunks)
    ops.force_retrain([STREAM], by="user:bob", reason="campaign data came late")
    approved = {}
    tick(live, store, chunks, during=lambda: approved.update(answer=ops.approve(STREAM, by="user:ana")),
         at="after-begin")
    assert approved["answer"].queued == 1 and approved["answer"].detail["version"] == 2
    assert _slots(store, STREAM) == (1, 3, -1)   # version 3 in shadow in version 2's place
    tick(live, store, chunks)
    assert registry.version(STREAM, 3).check["result"] == "awaiting-approval"   # still waits: nobody approved it
    assert registry.champion(STREAM).version == 1 and _slots(store, STREAM) == (1, -1, 3)
    outcome = ops.actions().query("kind == 'approve'")["outcome"].iloc[0]
    assert outcome.startswith("not carried out: version 2 no longer waits; version 3 took its place"), outcome
    # An approval of version 3 itself is carried out.
    ops.approve(STREAM, by="user:ana")
    tick(live, store, chunks)
    assert registry.champion(STREAM).version == 3
    assert registry.version(STREAM, 3).check == {"result": "promoted", "approved_by": "user:ana"}


def test_a_challenger_a_person_promotes_while_the_tick_that_replaces_it_runs_is_recorded_as_their_promotion(project):
    """Bob's forced re-training replaces version 2 (in shadow) while Carl promotes version 2 during that tick: Carl's
    move stands and version 2 serves, so its check records his promotion, not the tick's "dropped" (which stayed for
    good: the next tick adopts his move by the slots, which by then name version 3)."""
    live, store, ops, chunks = project
    registry = ops.registry
    ops.force_retrain([STREAM], by="user:ana")
    tick(live, store, chunks)
    ops.force_retrain([STREAM], by="user:bob", reason="fix")
    tick(live, store, chunks, during=lambda: ops.promote(STREAM, 2, by="user:carl"), at="after-fit")
    assert registry.champion(STREAM).version == 2
    assert registry.version(STREAM, 2).check == {"result": "promoted", "promoted_by": "user:carl", "why": "put in "
                                                 "service by a person while the tick that replaced it ran"}
    tick(live, store, chunks)
    assert registry.champion(STREAM).version == 2 and registry.version(STREAM, 2).check["result"] == "promoted"
    assert registry.version(STREAM, 3).check["result"] == "dropped" and _slots(store, STREAM) == (2, -1, -1)


@pytest.mark.parametrize("first_rebases", [True, False], ids=["re-base, then reset", "reset, then re-base"])
def test_a_reset_and_a_rebase_queued_for_one_tick_the_later_stands(project, monkeypatch, first_rebases):
    """Both were reported done ("reference reset" and "reference re-based ..."), but the tick ran the reset and
    then the re-base over it, whatever the order: the later request is carried out, the earlier one's outcome
    names the action that replaced it."""
    from mlma.mlma_policy import MLMAPolicy

    live, store, ops, chunks = project
    done = []
    real = MLMAPolicy.reset_reference

    def spy(policy, streams, tick, *, rebase=False, **options):
        done.extend((int(s), rebase) for s in streams)
        return real(policy, streams, tick, rebase=rebase, **options)

    monkeypatch.setattr(MLMAPolicy, "reset_reference", spy)
    ops.reset_reference([STREAM], rebase=first_rebases, by="user:ana", reason="first thought")
    ops.reset_reference([STREAM], rebase=not first_rebases, by="user:bob", reason="changed my mind")
    tick(live, store, chunks)
    stream = store.resolve(STREAM)
    assert done == [(stream, not first_rebases)], done
    first, later = ops.actions().query("kind == 'reset-reference'").sort_values("id").itertuples()
    what = "reset" if first_rebases else "re-base"
    assert first.outcome == (f"not carried out: a later {what} of the reference (action {later.id} by user:bob) "
                             "replaced it"), first.outcome
    assert later.outcome == ("reference reset" if first_rebases else "reference re-based on the recent losses")
