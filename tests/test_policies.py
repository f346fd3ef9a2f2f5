"""The MLMA policy's state machine (warm-up, rolling reference, budget, cooldown, escalations) and the
drift-detector baselines, driven with hand-made tick observations."""

from __future__ import annotations

import numpy as np
import pytest

from mlma.drift_policy import DriftDetectorPolicy
from mlma.mlma_policy import MLMAPolicy
from mlma.policy import TickObservation, Verdict
from mlma.quality import check_batch

STEPS = 24


def observation(tick: int, losses: np.ndarray, actuals: np.ndarray | None = None) -> TickObservation:
    n = losses.shape[0]
    if actuals is None:
        actuals = 10 + np.random.default_rng(tick).normal(0, 2, losses.shape)
    return TickObservation(
        tick=tick, actuals=actuals, losses=losses, scaled_losses=losses,
        has_model=np.ones(n, dtype=bool), ticks_since_fit=np.full(n, tick), observed=np.full(n, losses.shape[1]),
    )


def run_ticks(policy: MLMAPolicy, n_streams: int, ticks: int, scale_of=lambda t: np.ones(1), seed: int = 0,
              start: int = 0):
    rng = np.random.default_rng(seed)
    decisions = []
    for t in range(start, start + ticks):
        losses = np.abs(rng.normal(0, 1, (n_streams, STEPS))) * scale_of(t)[:, None]
        decisions.append(policy.decide(observation(t, losses)))
    return decisions


def fresh_policy(n: int, **params) -> MLMAPolicy:
    policy = MLMAPolicy(**params)
    policy.reset(n, season_length=24, steps_per_tick=STEPS)
    policy.on_new_model(np.arange(n), tick=-1)
    return policy


def test_a_new_version_warms_up_then_is_tested():
    policy = fresh_policy(3, window_ticks=1, probation_ticks=1, reference_gate=0.0)
    decisions = run_ticks(policy, 3, 6)
    verdicts = [Verdict(int(d.verdict[0])) for d in decisions]
    assert verdicts[:4] == [Verdict.WARMING_UP] * 4
    assert verdicts[4] == Verdict.OK
    assert np.isnan(decisions[3].p_value).all() and np.isfinite(decisions[4].p_value).all()
    # Four warm-up ticks, then tick 4 was tested and left the one-tick window for the reference at tick 5.
    assert policy.reference_losses(0).size == 5 * STEPS


def test_a_large_sustained_increase_triggers_and_a_stable_stream_does_not():
    n = 40
    policy = fresh_policy(n, reference_ticks=14)
    run_ticks(policy, n, 14, seed=1)
    # Streams 0-9 get three times their loss from tick 14 on.
    worse = np.ones(n)
    worse[:10] = 3.0
    decisions = run_ticks(policy, n, 3, scale_of=lambda t: worse, seed=2, start=14)
    triggered = np.zeros(n, dtype=bool)
    for d in decisions:
        triggered |= d.retrain
    assert triggered[:10].sum() >= 8
    assert triggered[10:].sum() <= 1
    reasons = decisions[0].reason[decisions[0].retrain]
    assert all(r.startswith("loss ") for r in reasons)


def test_healthy_ticks_roll_into_the_reference_and_flagged_ones_do_not():
    policy = fresh_policy(1, reference_ticks=6, window_ticks=2, probation_ticks=2, reference_gate=0.0)
    run_ticks(policy, 1, 12)
    assert policy.window_len[0] == 2
    assert policy.ref_len[0] == 6
    before = policy.reference_losses(0).copy()
    run_ticks(policy, 1, 1, seed=5, start=12)
    after = policy.reference_losses(0)
    # Probation holds the two newest ticks; the tick that left it replaced the oldest reference tick.
    assert not np.array_equal(before, after)
    assert np.array_equal(before[STEPS:], after[:-STEPS])


def test_budget_keeps_the_most_severe_and_queues_the_rest():
    n = 10
    policy = fresh_policy(n, budget=2, reference_ticks=14)
    run_ticks(policy, n, 14, seed=3)
    severity = np.linspace(2.0, 6.0, n)
    decision = run_ticks(policy, n, 1, scale_of=lambda t: severity, seed=4, start=14)[0]
    assert decision.retrain.sum() == 2
    # The two most severe degraded streams are the last two.
    assert decision.retrain[-2:].all()
    assert any(e.kind == "budget" for e in decision.escalations)
    assert policy.queued.sum() >= 1


def test_cooldown_after_a_new_model_and_repeated_triggers_escalate():
    n = 20
    policy = fresh_policy(n, reference_ticks=14, cooldown_ticks=2, repeat_limit=2, repeat_window=30)
    run_ticks(policy, n, 14, seed=6)
    worse = np.ones(n)
    worse[0] = 4.0
    d = run_ticks(policy, n, 1, scale_of=lambda t: worse, seed=7, start=14)[0]
    assert d.retrain[0]
    policy.on_challenger_lost(np.array([0]), tick=14)
    d = run_ticks(policy, n, 1, scale_of=lambda t: worse, seed=8, start=15)[0]
    assert d.verdict[0] == Verdict.COOLING_DOWN and not d.retrain[0]
    kinds = []
    for t in range(16, 22):
        d = run_ticks(policy, n, 1, scale_of=lambda t: worse, seed=t, start=t)[0]
        kinds += [e.kind for e in d.escalations if e.stream == 0]
        if d.retrain[0]:
            policy.on_challenger_lost(np.array([0]), tick=t)
    assert "repeated-trigger" in kinds


def test_a_data_outage_escalates_and_triggers_nothing():
    n = 5
    policy = fresh_policy(n, reference_ticks=14)
    run_ticks(policy, n, 14, seed=9)
    actuals = 10 + np.random.default_rng(0).normal(0, 2, (n, STEPS))
    actuals[0] = 0.0  # a zone reports only zeros: a broken feed, not a demand collapse
    losses = np.abs(np.random.default_rng(1).normal(0, 1, (n, STEPS)))
    losses[0] = 10.0  # its forecasts look terrible against the zeros
    reference, window = policy.reference_losses(0).copy(), policy.window[0].copy()
    d = policy.decide(observation(14, losses, actuals))
    assert not d.retrain[0]
    assert [e.kind for e in d.escalations if e.stream == 0] == ["data-quality"]
    # The broken batch entered neither the reference nor the test window.
    assert np.array_equal(policy.reference_losses(0), reference)
    assert np.array_equal(policy.window[0], window, equal_nan=True)


def test_silent_stream_escalates_once():
    policy = fresh_policy(2)
    kinds = []
    for t in range(6):
        losses = np.abs(np.random.default_rng(t).normal(0, 1, (2, STEPS)))
        losses[1] = np.nan
        obs = observation(t, losses)
        obs.observed = np.array([STEPS, 0])
        kinds += [(e.stream, e.kind) for e in policy.decide(obs).escalations]
    assert kinds.count((1, "silent")) == 1 and (0, "silent") not in kinds


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="alpha"):
        MLMAPolicy(alpha=1.5)
    with pytest.raises(ValueError, match="delta"):
        MLMAPolicy(delta=-0.1)
    with pytest.raises(ValueError, match="budget"):
        MLMAPolicy(budget=0)
    with pytest.raises(ValueError, match="window_ticks"):
        MLMAPolicy(window_ticks=0)


def test_quality_checks_flag_each_kind():
    actuals = np.array([[0.0] * 6, [1.0, np.nan, np.nan, np.nan, np.nan, np.nan], [2.0] * 6, [1, 3, 2, 4, 3, 2.0]])
    flags = check_batch(actuals, np.full(4, 6.0), np.full(4, 3.0), np.full(4, 1.0))
    assert flags.zeros.tolist() == [True, False, False, False]
    assert flags.missing.tolist() == [False, True, False, False]
    assert flags.flat.tolist() == [True, False, True, False]


@pytest.mark.parametrize("detector", ["adwin", "page-hinkley"])
def test_drift_detectors_fire_on_a_jump_and_reset_after_a_new_model(detector):
    policy = DriftDetectorPolicy(detector)
    policy.reset(2, 24, STEPS)
    policy.on_new_model(np.arange(2), -1)
    rng = np.random.default_rng(0)
    fired = np.zeros(2, dtype=bool)
    for t in range(20):
        losses = np.abs(rng.normal(0, 1, (2, STEPS)))
        if t >= 10:
            losses[0] *= 5
        d = policy.decide(observation(t, losses))
        fired |= d.retrain
        if d.retrain.any():
            policy.on_new_model(np.flatnonzero(d.retrain), t)
    assert fired[0] and not fired[1]


def test_unknown_drift_detector():
    with pytest.raises(ValueError, match="unknown drift detector"):
        DriftDetectorPolicy("kswin")
