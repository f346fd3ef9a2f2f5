"""The Page-Hinkley trigger of the MLMA policy (``MLMAPolicy(page_hinkley=200)``, opt-in;
:class:`mlma.monitor.page_hinkley.PageHinkley`).

Statistically, in the decision loop of ``test_policy_calibration`` (AR(1) t(4) forecast errors, 24 losses a
tick, a daily pattern in their scale):

- the tick-level statistic alarms as often as River's loss-by-loss detector at the same threshold on the same
  losses (it is the same statistic, summed over a tick);
- under no change with persistent losses (phi 0.95), 200 streams x 400 ticks in the agent's loop (challengers
  judged, lost ones re-based, no other reset), the trigger's re-trainings plus the age backstop's steady
  1 / 365 stay within the issue's target of 0.005 per stream-tick, and the last hundred ticks are not above
  the second hundred beyond noise (the first hundred alarm less: every mean starts with the model);
- a sustained doubling of the loss in a tenth of 2,000 streams is found within 40 ticks in most of them, by
  accumulation, and a rise under the relevance margin alarms no more than no change.

Tolerances are three binomial standard errors of the measured counts (``binomial_tolerance``).
"""

from __future__ import annotations

import numpy as np
import pytest

from mlma.mlma_policy import MLMAPolicy
from mlma.monitor.page_hinkley import PageHinkley
from test_policy_calibration import STEPS, binomial_tolerance, drive, first_alarm, first_retrains, simulate_errors
from test_policy_calibration import tick_observation as _observation



def _ph_alarms(reasons: list) -> np.ndarray:
    """(ticks, streams): the re-trainings whose reason names Page-Hinkley (alone or beside a test)."""
    return np.array([["Page-Hinkley:" in str(r) for r in row] for row in reasons])


def test_the_statistic_is_rivers_page_hinkley_summed_over_a_tick():
    """Fed the same losses, 100 streams x 200 ticks of persistent losses, the tick-level statistic (margin 0)
    and River's detector loss by loss alarm about equally often at threshold 200 (measured on other seeds: 24
    against 25 alarms for 50 streams). The two differ only where an alarm falls inside a tick (River restarts at
    that loss), so the counts agree within three Poisson standard errors of their sum."""
    from river import drift

    rng = np.random.default_rng(11)
    n, ticks = 100, 200
    losses = np.abs(simulate_errors(n, ticks, 0.95, 4, rng))
    river_alarms = 0
    for s in range(n):
        detector = drift.PageHinkley(mode="up", threshold=200.0)
        for value in losses[s].ravel():
            detector.update(float(value))
            river_alarms += detector.drift_detected
    ph = PageHinkley(200.0)
    ph.reset(n)
    ours = 0
    for t in range(ticks):
        alarm, *_ = ph.update(np.arange(n), losses[:, t].mean(axis=1), np.full(n, STEPS))
        ph.restart(np.flatnonzero(alarm))
        ours += int(alarm.sum())
    assert river_alarms > 10  # the comparison has something to compare
    assert abs(ours - river_alarms) <= 3 * np.sqrt(ours + river_alarms), (ours, river_alarms)


def test_with_one_loss_a_tick_it_is_rivers_statistic_exactly():
    """With one loss a tick there is nothing to sum: the statistic equals River's without forgetting
    (``alpha=1``) loss by loss, and the alarms fall on the same losses, restarts included (heavy-tailed
    losses whose level triples and falls back every 60 losses: 49 alarms at threshold 5)."""
    from river import drift

    rng = np.random.default_rng(2)
    losses = np.concatenate([scale * np.abs(rng.standard_t(4, 60)) for _ in range(20) for scale in (1.0, 3.0)])
    detector = drift.PageHinkley(mode="up", threshold=5.0, alpha=1.0)
    ph = PageHinkley(5.0)
    ph.reset(1)
    river_alarms, our_alarms = [], []
    for i, value in enumerate(losses):
        detector.update(float(value))
        alarm, level, *_ = ph.update(np.array([0]), np.array([value]), np.array([1]))
        if detector.drift_detected:
            river_alarms.append(i)
        elif detector._x_mean.n >= 30:  # River's test statistic, where it has one
            assert level[0] == pytest.approx(detector._sum_increase - detector._min_increase, abs=1e-9), i
        if alarm[0]:
            our_alarms.append(i)
            ph.restart(np.array([0]))
    assert len(river_alarms) >= 20 and our_alarms == river_alarms


def test_missing_losses_change_nothing_and_a_new_model_starts_afresh():
    ph = PageHinkley(threshold=100.0, margin=0.05)
    ph.reset(2)
    ph.update(np.arange(2), np.array([1.0, 2.0]), np.array([24, 24]))
    ph.update(np.arange(2), np.array([3.0, 2.0]), np.array([24, 24]))
    before = {name: getattr(ph, name).copy() for name in PageHinkley.STATE}
    alarm, level, mean, run = ph.update(np.arange(2), np.array([np.nan, 5.0]), np.array([0, 0]))
    for name in PageHinkley.STATE:
        np.testing.assert_array_equal(getattr(ph, name), before[name])
    assert not alarm.any() and level[0] == pytest.approx(24 * (3.0 - 2.0 * 1.05 - 0.005))
    ph.restart(np.array([0]))
    assert ph.ph_count[0] == 0 and ph.ph_statistic[0] == 0 and ph.ph_count[1] == 48


@pytest.mark.parametrize("value", [-1, True, float("nan"), float("inf"), "200"])
def test_bad_thresholds_are_refused_with_the_parameter_named(value):
    with pytest.raises(ValueError, match="page_hinkley"):
        MLMAPolicy(page_hinkley=value)


def test_bad_statistic_settings_are_refused_with_the_setting_named():
    with pytest.raises(ValueError, match="Page-Hinkley threshold"):
        PageHinkley(threshold=0)
    with pytest.raises(ValueError, match="Page-Hinkley margin"):
        PageHinkley(threshold=1, margin=-0.1)
    with pytest.raises(ValueError, match="Page-Hinkley min_values"):
        PageHinkley(threshold=1, min_values=2.5)


def test_the_project_setting_reaches_the_policy(tmp_path):
    from mlma.project import CONFIG_NAME, init_project, load_config

    init_project(tmp_path / "p")
    path = tmp_path / "p" / CONFIG_NAME
    assert load_config(tmp_path / "p").build_policy().page_hinkley is None  # the template: off
    path.write_text(path.read_text().replace("\npage_hinkley = 0 ", "\npage_hinkley = 150 "))
    policy = load_config(tmp_path / "p").build_policy()
    assert policy.page_hinkley == 150.0 and policy.ph.threshold == 150.0


def test_off_by_default_and_in_the_params():
    assert MLMAPolicy().get_params()["page_hinkley"] is None
    assert MLMAPolicy(page_hinkley=200).get_params()["page_hinkley"] == 200.0
    assert MLMAPolicy(page_hinkley=0).get_params()["page_hinkley"] is None
    assert MLMAPolicy(page_hinkley=None).page_hinkley is None
    # Its relative allowance is the policy's relevance margin.
    assert MLMAPolicy(delta=0.1).ph.margin == 0.1


def test_an_alarm_is_explained_checked_as_a_challenger_and_its_state_survives_a_restart():
    """A stream whose loss triples alarms (the tests made inert by a tiny alpha) with a reason that names
    Page-Hinkley; the statistic is saved and restored with the policy (a live restart resumes), and a state
    saved before the trigger existed still loads, with the statistic at 0."""
    rng = np.random.default_rng(3)
    n, ticks = 40, 60
    errors = simulate_errors(n, ticks, 0.5, 4, rng)
    errors[0, 20:] *= 3.0
    policy = MLMAPolicy(page_hinkley=200, alpha=1e-12, max_age=0)
    policy.reset(n, STEPS, STEPS)
    policy.on_new_model(np.arange(n), -1)
    assert first_alarm(policy, errors, range(22), "Page-Hinkley") is None
    saved = {k: v.copy() for k, v in policy.state_arrays().items()}
    assert saved["ph_statistic"][0] > 0 and saved["ph_count"][0] == 22 * STEPS
    resumed = MLMAPolicy(page_hinkley=200)
    resumed.reset(n + 2, STEPS, STEPS)
    resumed.load_state_arrays(saved)
    for name in PageHinkley.STATE:
        np.testing.assert_array_equal(getattr(resumed.ph, name)[:n], getattr(policy.ph, name))
    older = MLMAPolicy(page_hinkley=200)
    older.reset(n, STEPS, STEPS)
    older.load_state_arrays({k: v for k, v in saved.items() if not k.startswith("ph_")})
    # The rest of the state is restored; the trigger starts empty.
    np.testing.assert_array_equal(older.ref_sum, policy.ref_sum)
    assert not older.ph.ph_statistic.any() and not older.ph.ph_count.any()
    decision = first_alarm(policy, errors, range(22, ticks), "Page-Hinkley")
    assert decision is not None and not decision.serve_at_once[0]  # checked as a challenger
    reason = decision.reason[0]
    assert reason.startswith("Page-Hinkley: scaled loss above 1.05x") \
        and "threshold 200" in reason, reason
    # The alarm acted on started the statistic afresh.
    assert policy.ph.ph_statistic[0] == 0 and policy.ph.ph_count[0] == 0
    # A new model restarts it.
    policy.on_new_model(np.array([0]), ticks)
    assert policy.ph.ph_statistic[0] == 0 and policy.ph.ph_count[0] == 0


def _drive_one_rise(policy: MLMAPolicy, n: int = 20, ticks: int = 24, rise_at: int = 10, lost_at: int = -1):
    """Constant losses of 1 (nothing to test, nothing random), then streams 0 and 1 at 3 from ``rise_at``.
    With threshold 100 and 24 losses a tick the statistic climbs 42, 80, 115 (alarm), 148, 177, ... from
    ``rise_at`` (the mean follows: 1.18, 1.33, 1.46, ...), and stays at 0 on a stream at its usual loss.
    ``lost_at``: a lost challenger of stream 0 at that tick (a cool-down, no restart of the trigger; the
    agent tells the policy on the next tick). Returns per tick the Page-Hinkley re-trainings of streams 0
    and 1 and their statistics."""
    errors = np.ones((n, ticks, STEPS))
    errors[:2, rise_at:] = 3.0
    policy.reset(n, STEPS, STEPS)
    policy.on_new_model(np.arange(n), -1)
    retrained, levels = [], []
    for t in range(ticks):
        if t == lost_at + 1:
            policy.on_challenger_lost(np.array([0]), lost_at)
        d = policy.decide(_observation(t, errors[:, t], np.full(n, -1)))
        retrained.append([bool(d.retrain[s]) and "Page-Hinkley" in str(d.reason[s]) for s in (0, 1)])
        levels.append(policy.ph.ph_statistic[:2].copy())
    return np.array(retrained), np.array(levels)


def test_an_alarm_waits_out_the_cool_down_and_then_retrains():
    """Stream 0's loss triples at tick 10 and a challenger of it was lost at tick 10, so it cools down through
    tick 15 (cool-down 5): its statistic passes the threshold at tick 12 and stands, nothing is re-trained
    until tick 16, then it is and the statistic starts afresh. Stream 1, not cooling, re-trains at tick 12."""
    policy = MLMAPolicy(page_hinkley=100, alpha=1e-12, max_age=0, cooldown_ticks=5)
    retrained, levels = _drive_one_rise(policy, lost_at=10)
    assert np.flatnonzero(retrained[:, 1]).tolist() == [12]
    assert np.flatnonzero(retrained[:, 0]).tolist() == [16]
    assert (levels[12:16, 0] > 100).all() and levels[16, 0] == 0


@pytest.mark.parametrize("budget, backbone", [(0.05, "schedule"), (1, "gain")])
def test_with_a_budget_the_alarm_retrains_or_waits_for_its_turn(budget, backbone):
    """With a budget spent as a schedule, the alarms are added to it like the growth trigger's: both risen
    streams re-train at tick 12. With the gain-ranked budget of one re-training a tick they compete for the
    slot: one re-trains at tick 12, the other's alarm stands (its statistic kept above the threshold) and
    re-trains at tick 13, instead of being lost."""
    policy = MLMAPolicy(page_hinkley=100, alpha=1e-12, max_age=0, budget=budget, backbone=backbone)
    retrained, levels = _drive_one_rise(policy)
    first = [int(np.flatnonzero(retrained[:, s])[0]) for s in (0, 1)]
    if backbone == "schedule":
        assert first == [12, 12]
    else:
        assert sorted(first) == [12, 13]
        waited = int(np.argmax(first))
        assert levels[12, waited] > 100 and levels[13, waited] == 0


def test_a_streams_own_relevance_margin_is_its_allowance():
    """A person gives stream 0 a relevance margin of 30: a twentyfold rise is under 1 + 30 times the mean, so
    it accumulates nothing there; stream 1, at the policy's margin, alarms, and says its margin."""
    policy = MLMAPolicy(page_hinkley=50, alpha=1e-12, max_age=0)
    rng = np.random.default_rng(4)
    n = 20
    errors = simulate_errors(n, 40, 0.5, 4, rng)
    errors[:2, 10:] *= 20.0
    policy.reset(n, STEPS, STEPS)
    policy.set_overrides(delta=np.where(np.arange(n) == 0, 30.0, np.nan))
    policy.on_new_model(np.arange(n), -1)
    reasons = {0: [], 1: []}
    for t in range(40):
        d = policy.decide(_observation(t, errors[:, t], np.full(n, -1)))
        for s in (0, 1):
            if d.retrain[s] and "Page-Hinkley" in str(d.reason[s]):
                reasons[s].append(d.reason[s])
    assert not reasons[0] and reasons[1]
    assert "above 1.05x" in reasons[1][0]


def test_losses_explained_by_known_events_do_not_accumulate():
    """A known campaign doubles a stream's level and its absolute errors, and the model says so (an explained
    scale of 2 over those ticks): the trigger reads the errors divided by it, as the tests do, so nothing
    accumulates; the same rise unexplained alarms."""
    rng = np.random.default_rng(5)
    n, ticks = 20, 80
    errors = simulate_errors(n, ticks, 0.5, 4, rng)
    errors[:, 30:] *= 2.0
    found = {}
    for explained_by_events in (True, False):
        policy = MLMAPolicy(page_hinkley=200, alpha=1e-12, max_age=0)
        policy.reset(n, STEPS, STEPS)
        policy.on_new_model(np.arange(n), -1)
        alarms = 0
        for t in range(ticks):
            scale = np.full((n, STEPS), 2.0 if (explained_by_events and t >= 30) else 1.0)
            d = policy.decide(_observation(t, errors[:, t], np.full(n, -1), explained=scale))
            alarms += sum("Page-Hinkley" in str(r) for r in d.reason[d.retrain])
        found[explained_by_events] = alarms
    assert found[True] == 0 and found[False] >= n // 2, found


@pytest.mark.slow
def test_with_page_hinkley_the_no_change_target_holds_for_persistent_losses():
    """The issue's no-change target in the agent's loop: 200 streams, AR(1) t(4) with phi 0.95 (hourly
    errors carried from one tick into the next, the hardest case for a cumulative statistic), challengers from
    the same process judged on the next tick, lost ones re-based, for 400 ticks. The policy's triggered
    re-trainings (the default tests and Page-Hinkley at 200) plus the age backstop's steady 1 / 365 stay within 0.005 per
    stream-tick (measured on another seed: 0.0012 triggered, quarters 0.0010 / 0.0014 / 0.0014 / 0.0016 over
    800 ticks), and the last hundred ticks are not above the second hundred beyond noise: every stream's mean
    starts with its model, so the first hundred alarm less."""
    rng = np.random.default_rng(21)
    n, ticks = 200, 400
    errors = simulate_errors(n, ticks, 0.95, 4, rng)
    policy = MLMAPolicy(page_hinkley=200)
    at_once: list = []
    reasons: list = []
    _, _, retrains, _ = drive(policy, errors, rng, challenger_errors=simulate_errors(n, ticks, 0.95, 4, rng),
                              at_once=at_once, reasons=reasons)
    triggered = retrains & ~np.array(at_once)
    rate = triggered.mean()
    assert rate + 1 / policy.max_age <= 0.005, rate
    assert _ph_alarms(reasons).sum() > 0  # the trigger is live here
    second, last = triggered[100:200].mean(), triggered[300:].mean()
    assert last <= second + 2 * binomial_tolerance(max(rate, 1e-3), n * 100), (second, last)


@pytest.mark.slow
def test_a_sustained_doubling_is_found_by_accumulation_and_a_rise_under_the_margin_is_not():
    """The loss of a tenth of 2,000 streams doubles at tick 30 and stays, another tenth rises by 4 % (under
    the relevance margin of 5 %); the tests are made inert (a tiny alpha), so what is found is Page-Hinkley's.
    At threshold 200 and 24 losses a tick of mean about 0.8, the statistic gains about 24 x (1.6 - 0.84) a
    tick at first, less as the mean follows the rise (measured on this seed: all found, median 16 ticks, 89 %
    within 20; a rise by half is found within 40 ticks in only 34 %: the trigger is for large changes, the
    tests for significant ones). Asserted: at least 90 % of the doubled streams alarm within 40 ticks, none
    within 5 (it is the accumulation that finds them), and the streams risen by 4 % alarm no more often than
    the unchanged ones beyond noise."""
    rng = np.random.default_rng(8)
    n, pre, post = 2000, 30, 40
    errors = simulate_errors(n, pre + post, 0.5, 4, rng)
    half = np.arange(n) < n // 10
    small = (np.arange(n) >= n // 10) & (np.arange(n) < n // 5)
    errors[half, pre:] *= 2.0
    errors[small, pre:] *= 1.04
    policy = MLMAPolicy(page_hinkley=200, alpha=1e-12, max_age=0)
    first = first_retrains(policy, errors, pre)
    found = (first[half] > 0).mean()
    assert found >= 0.9 - binomial_tolerance(0.9, int(half.sum()), clusters=1.0), found
    assert not ((first[half] > 0) & (first[half] <= 5)).any()
    other = ~half & ~small
    rate_small, rate_other = (first[small] > 0).mean(), (first[other] > 0).mean()
    assert rate_small <= rate_other + binomial_tolerance(max(rate_other, 0.01), int(small.sum()), clusters=1.0), \
        (rate_small, rate_other)
