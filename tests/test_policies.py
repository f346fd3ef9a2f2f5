"""The MLMA policy's state machine (warm-up, rolling reference, budget, cooldown, escalations) and the
drift-detector baselines, driven with hand-made tick observations."""

from __future__ import annotations

import re

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
    """A policy with tests only (no budget, no refresh) unless ``params`` say otherwise."""
    params = {"budget": None, "refresh_ticks": 0} | params
    policy = MLMAPolicy(**params)
    policy.reset(n, season_length=24, steps_per_tick=STEPS)
    policy.on_new_model(np.arange(n), tick=-1)
    return policy


def test_a_new_version_warms_up_then_is_tested():
    policy = fresh_policy(3, window_ticks=1, probation_ticks=1)
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


def test_ticks_roll_into_the_reference_after_probation():
    policy = fresh_policy(1, reference_ticks=6, window_ticks=2, probation_ticks=2)
    run_ticks(policy, 1, 12)
    assert policy.window_len[0] == 2
    assert policy.ref_len[0] == 6
    before = policy.reference_losses(0).copy()
    run_ticks(policy, 1, 1, seed=5, start=12)
    after = policy.reference_losses(0)
    # Probation holds the two newest ticks; the tick that left it replaced the oldest reference tick.
    assert not np.array_equal(before, after)
    assert np.array_equal(before[STEPS:], after[:-STEPS])


def test_budget_goes_to_the_highest_expected_gains():
    n = 10
    policy = fresh_policy(n, budget=2, reference_ticks=14, backbone="gain")
    run_ticks(policy, n, 14, seed=3)
    severity = np.linspace(1.0, 6.0, n)
    decision = run_ticks(policy, n, 1, scale_of=lambda t: severity, seed=4, start=14)[0]
    assert decision.retrain.sum() == 2
    # All models are equally old: the strongest evidence (smallest p-values) has the highest expected gain.
    assert set(np.flatnonzero(decision.retrain)) == set(np.argsort(decision.p_value)[:2])
    assert not decision.retrain[:3].any()
    assert all("expected gain" in r for r in decision.reason[decision.retrain])


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
    # The lost challenger re-based the reference on the newest tick: the stream fills it again (warming up)
    # and cools down; no re-training meanwhile.
    assert d.verdict[0] in (Verdict.COOLING_DOWN, Verdict.WARMING_UP) and not d.retrain[0]
    assert policy.cooldown_until[0] >= 16
    kinds = []
    # The stream keeps getting worse (its loss grows by half each tick): each new model is soon degraded again.
    for t in range(16, 40):
        worse[0] *= 1.5
        d = run_ticks(policy, n, 1, scale_of=lambda t: worse, seed=t, start=t)[0]
        kinds += [e.kind for e in d.escalations if e.stream == 0]
        if d.retrain[0]:
            policy.on_new_model(np.array([0]), tick=t)
    assert "repeated-trigger" in kinds


def repeated_trigger_escalations(**params) -> tuple[int, int]:
    """(re-trainings, repeated-trigger escalations) of a stream whose loss keeps growing: every new model is
    soon degraded again."""
    n = 20
    policy = fresh_policy(n, reference_ticks=14, cooldown_ticks=2, repeat_window=30, **params)
    run_ticks(policy, n, 14, seed=6)
    worse = np.ones(n)
    retrains = escalated = 0
    for t in range(14, 40):
        worse[0] = 4.0 * 1.5 ** (t - 14)
        d = run_ticks(policy, n, 1, scale_of=lambda t: worse, seed=t, start=t)[0]
        escalated += sum(e.kind == "repeated-trigger" for e in d.escalations)
        if d.retrain[0]:
            retrains += 1
            policy.on_new_model(np.array([0]), tick=t)
    return retrains, escalated


def test_repeat_limit_zero_turns_the_repeated_trigger_escalation_off():
    # Documented (docs/monitoring.md, step 11) rather than refused: the trigger ring is sized max(limit, 1).
    retrains, escalated = repeated_trigger_escalations(repeat_limit=0)
    assert retrains >= 3 and escalated == 0
    assert repeated_trigger_escalations(repeat_limit=2)[1] >= 1


def test_a_stream_whose_retraining_is_being_judged_is_neither_chosen_nor_counted_as_a_trigger():
    """The tick after a trigger the stream's challenger is still in shadow (the agent says so in
    ``TickObservation.busy``) and its loss is as bad as before. The agent would not re-train it, so the policy
    does not choose it: it stays DEGRADED, with its reason and why it waits, but the trigger ring holds one
    trigger, not two (with ``repeat_limit=2`` a second would escalate a repeated trigger after a single
    re-training), and a budget's slots go to other streams."""
    from copy import deepcopy
    from dataclasses import replace

    n = 20
    policy = fresh_policy(n, reference_ticks=14, repeat_limit=2, repeat_window=30)
    run_ticks(policy, n, 14, seed=6)
    worse = np.ones(n)
    worse[0] = 4.0
    assert run_ticks(policy, n, 1, scale_of=lambda t: worse, seed=7, start=14)[0].retrain[0]
    unaware = deepcopy(policy)
    busy = np.zeros(n, dtype=bool)
    busy[0] = True
    losses = np.abs(np.random.default_rng(8).normal(0, 1, (n, STEPS))) * worse[:, None]
    d = policy.decide(replace(observation(15, losses), busy=busy))
    assert not d.retrain[0] and d.verdict[0] == Verdict.DEGRADED
    assert d.reason[0].startswith("loss ") and "still being judged" in d.reason[0]
    assert not any(e.kind == "repeated-trigger" for e in d.escalations)
    assert (policy.trigger_ticks[0] == 15).sum() == 0 and (policy.trigger_ticks[0] == 14).sum() == 1
    # The same tick without the flag: the stream is chosen again and the second trigger escalates.
    d = unaware.decide(observation(15, losses))
    assert d.retrain[0] and any(e.kind == "repeated-trigger" and e.stream == 0 for e in d.escalations)

    # A gain-ranked budget of two: the streams it would choose are busy, so two others get the slots.
    budget = fresh_policy(10, budget=2, reference_ticks=14, backbone="gain")
    run_ticks(budget, 10, 14, seed=3)
    severity = np.linspace(1.0, 6.0, 10)
    losses = np.abs(np.random.default_rng(4).normal(0, 1, (10, STEPS))) * severity[:, None]
    first = deepcopy(budget).decide(observation(14, losses)).retrain
    assert first.sum() == 2
    d = budget.decide(replace(observation(14, losses), busy=first))
    assert d.retrain.sum() == 2 and not (d.retrain & first).any()


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
    for max_age in (-1, 2.5, True, 10**23):
        with pytest.raises(ValueError, match=r"max_age \(the age backstop, in ticks, 0: off\) must be a whole number"):
            MLMAPolicy(max_age=max_age)
    # Accepted, they overflowed a 16-bit counter or asked for 894 GiB mid-replay, or (nan, a negative
    # probation, a window of 0 ticks) changed the results without a word.
    for name, value, words in (("window_ticks", 10**6, "window_ticks must be a whole number from 1 to 10,000"),
                               ("reference_ticks", 10**9, "reference_ticks must be a whole number from 1 to 1,000"),
                               ("probation_ticks", -5, "probation_ticks must be a whole number from 0 to 10,000"),
                               ("repeat_window", 0, "repeat_window must be a whole number from 1 to 10,000"),
                               ("min_gain", float("nan"), "min_gain must be a finite number")):
        with pytest.raises(ValueError, match=re.escape(words)):
            MLMAPolicy(**{name: value})
    # Kept in 32-bit counters: 3,000,000,000 wrapped round to no cool-down at all.
    with pytest.raises(ValueError, match="cooldown_ticks must be the cool-down in ticks, a whole number from 0 to "
                                         r"10000 \(for the policy\), got 3000000000"):
        MLMAPolicy(cooldown_ticks=3_000_000_000)


def test_quality_checks_flag_each_kind():
    actuals = np.array([[0.0] * 6, [1.0, np.nan, np.nan, np.nan, np.nan, np.nan], [2.0] * 6, [1, 3, 2, 4, 3, 2.0]])
    flags = check_batch(actuals, np.full(4, 6.0), np.full(4, 3.0), np.full(4, 1.0))
    assert flags.zeros.tolist() == [True, False, False, False]
    assert flags.missing.tolist() == [False, True, False, False]
    # Six equal values at a typical level of 3 are not implausible for counts (Poisson chance 1e-4).
    assert flags.flat.tolist() == [False, False, False, False]
    assert check_batch(actuals, np.full(4, 6.0), np.full(4, 30.0), np.full(4, 1.0)).flat.tolist() == [
        False, False, True, False]


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


def count_triggers(policy, n_streams: int = 30, ticks: int = 40, jump: float = 1.6, seed: int = 3) -> int:
    """Triggers of a policy over streams whose loss rises by ``jump`` at tick 20."""
    policy.reset(n_streams, 24, STEPS)
    policy.on_new_model(np.arange(n_streams), -1)
    rng = np.random.default_rng(seed)
    total = 0
    for t in range(ticks):
        losses = np.abs(rng.normal(0, 1, (n_streams, STEPS))) * (jump if t >= 20 else 1.0)
        d = policy.decide(observation(t, losses))
        total += int(d.retrain.sum())
        if d.retrain.any():
            policy.on_new_model(np.flatnonzero(d.retrain), t)
    return total


@pytest.mark.parametrize("loose,strict", [("page-hinkley:threshold=2", "page-hinkley:threshold=200"),
                                          ("adwin:delta=0.5", "adwin:delta=0.0001")])
def test_drift_detector_settings_in_the_spec_reach_the_detector(loose, strict):
    # These settings used to be dropped silently: both specs then ran the detector's defaults.
    from mlma.policy import make_policy

    policy = make_policy(loose)
    assert policy.name == loose and policy.params
    assert count_triggers(make_policy(loose)) > count_triggers(make_policy(strict))


def test_page_hinkley_watches_increases_unless_told_otherwise():
    from mlma.policy import make_policy

    assert make_policy("page-hinkley")._new_detector().mode == "up"
    assert make_policy("page-hinkley:mode=both")._new_detector().mode == "both"


@pytest.mark.parametrize("spec,message", [
    ("adwin:delt=0.01", r"policy adwin has no parameter 'delt'; its parameters are: delta, clock"),
    ("page-hinkley:thresh=3", r"policy page-hinkley has no parameter 'thresh'; its parameters are: min_instances"),
    ("mlma:alfa=0.1", r"policy mlma has no parameter 'alfa'; its parameters are: alpha, "),
    ("mlma:alpha=high", r"policy mlma: parameter alpha='high' must be float"),
    ("mlma:budget=2.5", r"budget must be a whole number >= 1 .* a share of the fleet in \(0, 1\)"),
    ("mlma:alpha=0.1:alpha=0.2", r"sets 'alpha' twice"),
    ("mlma:alpha", r"unexpected argument 'alpha'.*key=value"),
    ("mlma:alpha=", r"'alpha=' is not of the form key=value"),
    ("never:x=1", r"policy never has no parameter 'x'; its parameters are: \(none\)"),
    ("periodic:seven", r"unexpected argument 'seven'"),
    ("periodic:0", r"whole number of ticks from 1 to 1,000,000"),
    ("periodic:99999999999999999999", r"whole number of ticks from 1 to 1,000,000"),
    ("mlma:max_age=-5", r"max_age \(the age backstop, in ticks, 0: off\) must be a whole number from 0 to 10,000"),
    ("mlma:window_ticks=1000000", r"window_ticks must be a whole number from 1 to 10,000"),
    ("adwin:delta=2", r"policy adwin: delta must be in \(0, 1\)"),
    ("page-hinkley:mode=sideways", r"policy page-hinkley: .*mode"),
    ("", r"non-empty"),
    # River takes these and then panics in its Rust core mid-run (a PanicException, no Exception), or runs on
    # values that mean nothing: each is refused up front, naming the parameter and its range.
    ("adwin:clock=0", r"policy adwin: clock must be a whole number >= 1"),
    ("adwin:clock=-1", r"policy adwin: clock must be a whole number >= 1"),
    ("adwin:max_buckets=0", r"policy adwin: max_buckets must be a whole number >= 1, got 0"),
    ("adwin:min_window_length=0", r"policy adwin: min_window_length must be a whole number >= 1"),
    ("adwin:grace_period=-1", r"policy adwin: grace_period must be a whole number >= 0"),
    ("adwin:delta=nan", r"policy adwin: delta must be in \(0, 1\), got nan"),
    ("page-hinkley:threshold=0", r"policy page-hinkley: threshold must be a finite number > 0, got 0"),
    ("page-hinkley:threshold=inf", r"policy page-hinkley: threshold must be a finite number > 0"),
    ("page-hinkley:delta=-1", r"policy page-hinkley: delta must be a finite number >= 0, got -1"),
    ("page-hinkley:alpha=0", r"policy page-hinkley: alpha must be in \(0, 1\]"),
    ("page-hinkley:alpha=1.5", r"policy page-hinkley: alpha must be in \(0, 1\]"),
    ("page-hinkley:min_instances=0", r"policy page-hinkley: min_instances must be a whole number >= 1, got 0"),
    ("mlma:silent_ticks=0", r"silent_ticks \(ticks without actuals .*\) must be a whole number from 1 to 10,000"),
    ("periodic", r"policy 'periodic' needs its period in ticks: write it 'periodic:K'"),
    ("periodic:sync", r"policy 'periodic:sync' needs its period in ticks: write it 'periodic:K'"),
])
def test_bad_policy_specs_name_the_policy_and_the_parameter(spec, message):
    from mlma.policy import make_policy

    with pytest.raises(ValueError, match=message):
        make_policy(spec)


@pytest.mark.parametrize("spec", ["adwin:clock=1:max_buckets=1:min_window_length=1:grace_period=0",
                                  "page-hinkley:alpha=1:delta=0:min_instances=1:threshold=0.5",
                                  "mlma:silent_ticks=1:repeat_limit=0"])
def test_the_edges_of_the_parameters_ranges_are_accepted(spec):
    from mlma.policy import make_policy

    assert make_policy(spec).name == spec


def test_a_period_given_as_a_setting_is_a_period():
    from mlma.policy import make_policy

    assert make_policy("periodic:every=3").every == 3
    assert make_policy("periodic", every=5).every == 5


def test_policy_specs_convert_types_and_name_the_policy():
    from mlma.policy import make_policy

    policy = make_policy("mlma:alpha=0.1:budget=20:loss=squared")
    assert (policy.alpha, policy.budget, policy.loss) == (0.1, 20, "squared")
    assert isinstance(policy.budget, int) and policy.name == "mlma:alpha=0.1:budget=20:loss=squared"
    assert make_policy("mlma:budget=none").budget is None
    assert make_policy("periodic:every=5").name == "periodic:5"
    assert make_policy("PH:threshold=20").name == "page-hinkley:threshold=20"
    # Settings from a project file still arrive as keyword arguments; the same key twice is an error.
    assert make_policy("mlma", alpha=0.05).alpha == 0.05
    with pytest.raises(ValueError, match="alpha given both"):
        make_policy("mlma:alpha=0.1", alpha=0.05)


def periodic_run(policy, n_streams: int, ticks: int, start: int = 10, scored=None):
    """Drive a periodic policy like the agent does: fits at ``start - 1``, the age counts from the last fit."""
    last_fit = np.full(n_streams, start - 1)
    fits = {s: [] for s in range(n_streams)}
    for k in range(start, start + ticks):
        losses = np.ones((n_streams, STEPS))
        if scored is not None:
            losses[~scored(k)] = np.nan
        obs = TickObservation(tick=k, actuals=losses, losses=losses, scaled_losses=losses,
                              has_model=np.ones(n_streams, dtype=bool), ticks_since_fit=k - last_fit,
                              observed=np.full(n_streams, STEPS))
        retrain = policy.decide(obs).retrain
        last_fit[retrain] = k
        for s in np.flatnonzero(retrain):
            fits[s].append(k)
    return fits


def test_staggered_periodic_retrains_each_stream_every_k_ticks_at_spread_phases():
    from mlma.policy import PeriodicRetrain

    k, n = 7, 50
    fits = periodic_run(PeriodicRetrain(k), n, 70)
    for s, ticks in fits.items():
        assert np.all(np.diff(ticks) == k), (s, ticks)
        assert ticks[0] - 10 < k  # the first re-training within one period of the start
    per_tick = np.bincount(np.concatenate(list(fits.values())) - 10, minlength=70)
    # Load is spread: every tick re-trains about 50 / 7 streams (give or take two), never the whole fleet.
    assert abs(per_tick[k:] - n / k).max() <= 2
    # Phases are the same in another run and do not depend on the fleet's size.
    assert periodic_run(PeriodicRetrain(k), 20, 70) == {s: fits[s] for s in range(20)}


@pytest.mark.parametrize("n_streams,every", [(10, 40), (200, 450), (1000, 7)])
def test_staggered_phases_cover_the_whole_period_for_any_fleet_size(n_streams, every):
    from mlma.policy import PeriodicRetrain

    phase = PeriodicRetrain(every).phase(n_streams)
    assert phase.min() >= 0 and phase.max() < every
    # Spread over the whole period, not just its first n_streams ticks: the share due in any window of the
    # period is the window's share of it, give or take two streams.
    for start in range(0, every, max(1, every // 10)):
        width = max(1, every // 4)
        due = ((phase - start) % every < width).sum()
        assert abs(due - n_streams * width / every) <= 2, (start, due)


def test_synchronous_periodic_retrains_the_whole_fleet_together():
    from mlma.policy import PeriodicRetrain

    fits = periodic_run(PeriodicRetrain(5, stagger=False), 6, 20)
    assert all(ticks == [14, 19, 24, 29] for ticks in fits.values())


def test_a_stream_without_data_at_its_due_tick_catches_up_then_returns_to_its_phase():
    from mlma.policy import PeriodicRetrain

    # Stream 0 is due at ticks 14, 21, 28 ... (14 % 7 == 0); it has no data at tick 21.
    fits = periodic_run(PeriodicRetrain(7), 1, 30, scored=lambda k: np.array([k != 21]))
    assert fits[0] == [14, 22, 28, 35]


def seasonal_naive_fleet(zones: int, days: int, *, seed: int, event_rate: int):
    """A simulated platform's hourly fleet in daily ticks and a seasonal-naive model service on a 14-tick window:
    quick fits, for tests of what the agent does with people's actions."""
    import pandas as pd

    from mlma.data import Frequency, make_tick_grid
    from mlma.fleet import FleetData
    from mlma.models import ForecastContext
    from mlma.simulate import simulate_platform
    from mlma.training import ModelService

    frame = simulate_platform(zones, days, seed=seed, event_rate=event_rate).data
    freq = Frequency("h")
    grid = make_tick_grid(frame, pd.tseries.frequencies.to_offset("1D"), freq=freq).boundaries
    fleet = FleetData(frame, freq.alias, grid)
    return fleet, ModelService(fleet, "seasonal-naive", ForecastContext(freq="h", season_length=24, horizon=24),
                               train_window_ticks=14)


def test_the_agent_tells_the_policy_which_streams_are_busy_and_acts_on_every_choice():
    """On a simulated platform with frequent events, a loose MLMA re-trains streams as challengers; three
    streams need a person's approval (a winning challenger waits), and a person rolls back two streams: one
    with no challenger, one whose challenger waits for approval (dropped: the policy is told). At every tick
    the policy sees as ``busy`` exactly the streams with a challenger in shadow or waiting for approval, and
    those rolled back, and every stream it chooses is re-trained (before, about a third of its choices were
    streams in shadow, which the agent dropped: 69 of 212 on a tuning platform)."""
    from mlma.agent import NO_MODEL, Agent, Controls
    from mlma.training import ModelKey

    fleet, service = seasonal_naive_fleet(12, 40, seed=2, event_rate=3)
    seen = []

    dropped = []

    class Spy(MLMAPolicy):
        def decide(self, obs):
            decision = super().decide(obs)
            seen.append((obs.busy.copy(), decision.retrain.copy()))
            return decision

        def on_challenger_dropped(self, streams, tick):
            dropped.append((tick, streams.tolist()))
            super().on_challenger_dropped(streams, tick)

    agent = Agent(Spy(alpha=0.3, fdr="none", cooldown_ticks=0), service, season_length=24,
                  scale=fleet.seasonal_naive_scale(24, before_tick=14))
    agent.start(14)
    approval = np.zeros(fleet.n_streams, dtype=bool)
    approval[:3] = True
    expected, acted, adopted, waited, rolled_back = [], [], None, 0, None
    for k in range(14, fleet.n_ticks):
        waited += int((agent.awaiting != NO_MODEL).sum())
        controls = Controls(needs_approval=approval)
        busy = (agent.challenger != NO_MODEL) | (agent.awaiting != NO_MODEL)
        free = np.flatnonzero(~busy & (agent.champion != NO_MODEL))
        if k == 25 and len(free):  # a roll-back of a stream with no challenger: nothing is dropped
            adopted = int(free[-1])
            controls.adopt = {adopted: ModelKey(adopted, int(agent.champion[adopted]))}
        # A roll-back of a stream whose winning challenger waits for approval drops that challenger (one in
        # shadow is judged earlier in the tick than a roll-back is taken).
        waiting = np.flatnonzero(agent.awaiting != NO_MODEL)
        if k > 25 and rolled_back is None and len(waiting):
            rolled_back = (k, int(waiting[0]))
            controls.adopt = {rolled_back[1]: ModelKey(rolled_back[1], int(agent.champion[rolled_back[1]]))}
        expected.append(busy.copy())
        expected[-1][list(controls.adopt)] = True
        acted.append(agent.tick(k, controls).decision.retrain)
    assert adopted is not None and waited > 0, "a roll-back and a challenger waiting for approval should occur"
    assert rolled_back is not None and dropped == [(rolled_back[0], [rolled_back[1]])]
    assert sum(int(b.sum()) for b, _ in seen) >= 5, "some streams should be busy when the policy decides"
    for (busy, chosen), shadow, retrained in zip(seen, expected, acted):
        np.testing.assert_array_equal(busy, shadow)
        assert not (chosen & busy).any()
        np.testing.assert_array_equal(chosen, retrained)


def test_a_forced_re_training_replaces_a_pending_challenger_and_the_policy_hears_it_as_dropped():
    """A person forces a re-training of streams whose last re-training is in shadow or waits for approval: the
    agent re-trains the stream (the policy is told it is busy: the person, not the policy, chose it), drops that
    challenger without a verdict once the new model is fitted (the policy hears of the drop before the new
    model), and puts the new model in shadow, or in service with ``direct``. A person's approval, rejection or roll-back of the same tick is carried out first: an approved or
    rolled-back stream is not re-trained (their choice of the serving model stands), a rejected one is. The
    backtest's re-training log closes the dropped challenger's row."""
    from mlma.agent import NO_MODEL, Agent, Controls
    from mlma.backtest import _record_retrains
    from mlma.training import ModelKey

    fleet, service = seasonal_naive_fleet(8, 22, seed=3, event_rate=0)
    heard = []

    class Spy(MLMAPolicy):
        def decide(self, obs):
            heard.append(("busy", obs.tick, np.flatnonzero(obs.busy).tolist()))
            return super().decide(obs)

        def on_challenger_dropped(self, streams, tick):
            heard.append(("dropped", tick, np.asarray(streams).tolist()))
            super().on_challenger_dropped(streams, tick)

        def on_models_fitted(self, streams, tick, train_rows):
            heard.append(("fitted", tick, np.asarray(streams).tolist()))
            super().on_models_fitted(streams, tick, train_rows)

    # Growth on, so that the policy keeps per-stream state about a pending model (growth_pending_rows).
    agent = Agent(Spy(growth=2.0, cooldown_ticks=0), service, season_length=24,
                  scale=fleet.seasonal_naive_scale(24, before_tick=14))
    agent.start(14)
    n = fleet.n_streams
    approval = np.zeros(n, dtype=bool)
    approval[[1, 2, 3]] = True

    def forced(streams, **extra):
        mask = np.zeros(n, dtype=bool)
        mask[streams] = True
        return Controls(force_retrain=mask, needs_approval=approval, **extra)

    rows, open_rows, ids = [], {}, fleet.ids
    first = agent.tick(14, forced([0, 1, 2, 3, 4]))
    _record_retrains(first, "mlma", ids, None, rows, open_rows)
    assert (agent.challenger[:5] == 14).all()
    # Seasonal naive re-fitted ties its champion in shadow, and a tie is promoted: with approval, it waits.
    second = agent.tick(15, forced([0, 5]))       # 0: its challenger in shadow is replaced before it is judged
    _record_retrains(second, "mlma", ids, None, rows, open_rows)
    assert second.replaced == {0: ModelKey(0, 14)} and 0 not in second.checks
    assert agent.challenger[0] == 15 and agent.shadow[0] == [] and second.retrained[0]
    assert [r["outcome"] for r in rows if r["unique_id"] == ids[0]] == ["dropped", "pending"]
    assert ("busy", 15, [0, 1, 2, 3, 4]) in heard
    assert heard.index(("dropped", 15, [0])) < heard.index(("fitted", 15, [0, 5]))
    assert np.isfinite(agent.policy.history_growth.growth_pending_rows[0])
    assert (agent.awaiting[[1, 2, 3]] == 14).all() and agent.champion[4] == 14  # 4's challenger was promoted
    heard.clear()
    reject, approve = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    reject[2], approve[3] = True, True
    direct = np.zeros(n, dtype=bool)
    direct[1] = True
    adopt = {4: ModelKey(4, 13)}  # a roll-back of 4 to its first model
    third = agent.tick(16, forced([1, 2, 3, 4], force_direct=direct, reject=reject, approve=approve,
                                  adopt=adopt))
    _record_retrains(third, "mlma", ids, None, rows, open_rows)
    # 1: its version waiting for approval is replaced, the new model serves at once (direct).
    assert third.replaced == {1: ModelKey(1, 14)} and agent.champion[1] == 16 and agent.awaiting[1] == NO_MODEL
    assert third.promoted[1] and third.retrained[1] and 1 in third.cleared["approval-needed"]
    # 2: rejected by the person, then re-trained; 3: approved by the person, and 4: rolled back by the person,
    # whose choice of the serving model stands.
    assert third.rejected[2] and third.retrained[2] and agent.challenger[2] == 16
    assert third.promoted[3] and not third.retrained[3] and agent.champion[3] == 14
    assert third.promoted[4] and not third.retrained[4] and agent.champion[4] == 13
    assert heard.index(("dropped", 16, [1])) < heard.index(("fitted", 16, [1, 2]))
    # Busy when the policy decides: 0 and 5 (in shadow since the last tick, not forced), 1 (its version waiting
    # for approval, replaced by the person's re-training), 2 and 3 (waiting for the person's rejection and
    # approval, carried out first) and 4 (rolled back).
    assert ("busy", 16, [0, 1, 2, 3, 4, 5]) in heard


def test_a_pinned_stream_keeps_its_model_its_winning_challenger_stays_in_shadow_until_the_pin_ends():
    """A pin is to keep the models ("holiday: keep the models"), but a challenger already in shadow when the pin
    came was still judged and promoted: the serving model changed on pinned streams. A winner on a pinned
    stream now stays in shadow, its shadow ticks adding up, and is judged on them all once the pin ends (not
    left waiting for an approval that would keep the stream from being re-trained after the pin); streams
    without a pin are promoted as before."""
    from mlma.agent import NO_MODEL, Agent, Controls

    fleet, service = seasonal_naive_fleet(6, 22, seed=3, event_rate=0)
    agent = Agent(MLMAPolicy(cooldown_ticks=0), service, season_length=24,
                  scale=fleet.seasonal_naive_scale(24, before_tick=14))
    agent.start(14)
    n = fleet.n_streams
    forced = np.zeros(n, dtype=bool)
    forced[[0, 1, 2]] = True
    agent.tick(14, Controls(force_retrain=forced))
    assert (agent.challenger[[0, 1, 2]] == 14).all()
    pinned = np.zeros(n, dtype=bool)
    pinned[[0, 1]] = True   # pinned after the re-training, while its challenger is in shadow
    # Seasonal naive re-fitted ties its champion in shadow, and a tie is promoted, except under the pin.
    for k in (15, 16):
        report = agent.tick(k, Controls(pinned=pinned))
        assert not report.promoted[[0, 1]].any() and (agent.champion[[0, 1]] == 13).all()
        assert (agent.challenger[[0, 1]] == 14).all() and (agent.awaiting == NO_MODEL).all()
        assert 0 not in report.checks and 1 not in report.checks
        assert not any(e.kind == "approval-needed" for e in report.escalations)
    assert agent.champion[2] == 14 and [len(agent.shadow[s]) for s in (0, 1)] == [2, 2]
    # The pin on 0 ends: its challenger is judged on its shadow ticks and promoted; 1 stays pinned.
    pinned[0] = False
    report = agent.tick(17, Controls(pinned=pinned))
    assert report.promoted[0] and agent.champion[0] == 14 and report.checks[0].looks == 3
    assert agent.champion[1] == 13 and agent.challenger[1] == 14


def test_a_challenger_in_shadow_of_a_stream_a_person_rolls_back_is_dropped_not_judged():
    """A person puts a model in service (a roll-back) while the stream's challenger is in shadow: the challenger
    is out of the running, so the agent drops it before judging (the policy hears it dropped); judged, it was
    promoted or lost for a model nobody could serve any more, with a verdict, an escalation or a re-based
    reference to match."""
    from mlma.agent import NO_MODEL, Agent, Controls
    from mlma.training import ModelKey

    fleet, service = seasonal_naive_fleet(4, 20, seed=5, event_rate=0)
    heard = []

    class Spy(MLMAPolicy):
        def on_challenger_dropped(self, streams, tick):
            heard.append(("dropped", tick, np.asarray(streams).tolist()))
            super().on_challenger_dropped(streams, tick)

    agent = Agent(Spy(cooldown_ticks=0), service, season_length=24, scale=fleet.seasonal_naive_scale(24, before_tick=14))
    agent.start(14)
    force = np.zeros(fleet.n_streams, dtype=bool)
    force[[0, 1]] = True
    agent.tick(14, Controls(force_retrain=force))
    assert (agent.challenger[[0, 1]] == 14).all()
    report = agent.tick(15, Controls(adopt={0: ModelKey(0, 13)}))   # stream 0 rolled back to its first model
    assert 0 not in report.checks and 1 in report.checks   # 1's check ends as usual
    assert heard == [("dropped", 15, [0])]
    assert agent.champion[0] == 13 and agent.challenger[0] == NO_MODEL and agent.awaiting[0] == NO_MODEL
    assert report.promoted[0] and not report.retrained[0]
