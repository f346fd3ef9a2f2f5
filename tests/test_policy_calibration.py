"""Statistical validation of the whole MLMA decision loop, not just the test functions.

The policy adds state on top of :func:`mlma.monitor.degradation_test` and :func:`mlma.monitor.bias_shift_test`:
warm-up, a reference that rolls forward after probation, two windows combined by Bonferroni, re-basing after a
lost challenger, an expected-gain model that learns from the outcomes of re-trainings. These seeded
simulations drive the policy for 200+ ticks the way the agent does, WITHOUT starting the reference afresh after
each trigger (a re-training that changes nothing is judged like a real one: a challenger whose errors come from
the same process wins or loses by chance), and check

- under no change: the tests' per-stream trigger rate stays at or under the nominal level, and does not rise
  over 200 ticks (a reference that admitted only ticks that passed its tests drifted low: 7-11 % triggers per
  stream by tick 80-200); the reference stays an unbiased sample of the losses; the default policy learns that
  re-training does not pay and its re-trainings fall to at most 0.005 per stream-tick;
- under a sustained 30 % / 100 % loss increase in part of the fleet: most affected streams are flagged within
  a few ticks;
- a level drop on count data, which absolute losses hide, is found by the bias test.

Run as a script to print the tables in docs/statistics.md ("The decision loop").
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from mlma.mlma_policy import MLMAPolicy, stream_slots
from mlma.policy import TickObservation

STEPS = 24


def simulate_errors(n: int, ticks: int, phi: float, t_df: float | None, rng) -> np.ndarray:
    """Signed AR(1) forecast errors with unit innovation variance and a daily pattern in their scale,
    ``(n, ticks, STEPS)``."""
    total = ticks * STEPS
    shocks = rng.standard_t(t_df, (n, total)) / np.sqrt(t_df / (t_df - 2)) if t_df else rng.normal(size=(n, total))
    shocks[:, 0] /= np.sqrt(max(1 - phi ** 2, 1e-9))
    errors = signal.lfilter([1.0], [1.0, -phi], shocks, axis=1) * np.sqrt(1 - phi ** 2)
    daily = 1 + 0.6 * np.sin(2 * np.pi * np.arange(total) / STEPS)
    return (errors * daily).reshape(n, ticks, STEPS)


def tick_observation(t: int, errors: np.ndarray, fitted: np.ndarray, explained=None) -> TickObservation:
    """Tick ``t`` of signed ``errors`` ``(n, STEPS)`` as the agent gives it to a policy (actuals 10 + error, the
    absolute errors as losses and scaled losses), each stream's model fitted at tick ``fitted``."""
    n = len(errors)
    return TickObservation(t, actuals=10 + errors, losses=np.abs(errors), scaled_losses=np.abs(errors),
                           has_model=np.ones(n, dtype=bool), ticks_since_fit=t - fitted,
                           observed=np.full(n, STEPS), errors=errors, explained=explained)


def first_retrains(policy: MLMAPolicy, errors: np.ndarray, pre: int) -> np.ndarray:
    """Drive ``policy`` over ``errors`` ``(n, ticks, STEPS)`` without re-training anything and return, per
    stream, the tick (counted from 1 at tick ``pre``) of its first re-training from tick ``pre`` on; -1 for
    none."""
    n, ticks, _ = errors.shape
    policy.reset(n, STEPS, STEPS)
    policy.on_new_model(np.arange(n), -1)
    first = np.full(n, -1)
    for t in range(ticks):
        d = policy.decide(tick_observation(t, errors[:, t], np.full(n, -1)))
        new = d.retrain & (first < 0) & (t >= pre)
        first[new] = t - pre + 1
    return first


def first_alarm(policy: MLMAPolicy, errors: np.ndarray, ticks, marker: str):
    """Drive ``policy`` over ticks ``ticks`` (indexes into ``errors`` ``(n, ticks, STEPS)``) with every model
    fitted before the first tick and nothing re-trained; return the first decision that re-trains stream 0
    with ``marker`` in its reason, or None."""
    n = len(errors)
    for t in ticks:
        decision = policy.decide(tick_observation(t, errors[:, t], np.full(n, -1)))
        if decision.retrain[0] and marker in decision.reason[0]:
            return decision
    return None


def level_drop_retrained(policy: MLMAPolicy, post: int, n: int = 400, pre: int = 16) -> float:
    """Poisson orders at 20 an hour for ``n`` streams fall to 8 on tick ``pre``, where the model forecasts 11
    (its lag features follow part of the way): the share of the streams ``policy`` re-trains within ``post``
    ticks of the drop (nothing is re-trained, so the change stays)."""
    policy.reset(n, STEPS, STEPS)
    policy.on_new_model(np.arange(n), -1)
    rng = np.random.default_rng(3)
    found = np.zeros(n, dtype=bool)
    for t in range(pre + post):
        y = rng.poisson(20.0 if t < pre else 8.0, (n, STEPS)).astype(float)
        e = y - (20.0 if t < pre else 11.0) * (1 + 0.02 * rng.normal(size=(n, 1)))
        d = policy.decide(TickObservation(t, actuals=y, losses=np.abs(e), scaled_losses=np.abs(e),
                                          has_model=np.ones(n, dtype=bool), ticks_since_fit=np.full(n, t),
                                          observed=np.full(n, STEPS), errors=e))
        if t >= pre:
            found |= d.retrain
    return float(found.mean())


def drive(policy: MLMAPolicy, errors: np.ndarray, rng, challenger_errors: np.ndarray | None = None,
          retrain: bool = True, at_once: list | None = None, reasons: list | None = None):
    """Run the agent's loop over ``errors`` without any real change: a stream the policy re-trains at tick
    ``t`` gets a challenger judged on tick ``t + 1`` (its errors from ``challenger_errors``, the same
    process); it wins (new model, fresh reference) when its mean loss is at most the champion's, else it is
    lost (the policy re-bases). A re-training the decision serves at once (``serve_at_once``: the age backstop,
    a schedule) is a new model at once, as in the agent; ``at_once`` and ``reasons``, when given, collect
    those per tick and the decisions' reasons. With ``retrain=False`` nothing is ever re-trained.
    Returns per-tick arrays of p-values, triggers (test rejections) and
    re-trainings, and the fitted-at tick of each stream's model."""
    n, ticks, _ = errors.shape
    if challenger_errors is None:
        challenger_errors = simulate_errors(n, ticks, 0.5, 4, rng)
    policy.reset(n, STEPS, STEPS)
    policy.on_new_model(np.arange(n), -1)
    fitted = np.full(n, -1)
    pending = np.full(n, -2)
    p_values, triggers, retrains = [], [], []
    for t in range(ticks):
        e = errors[:, t]
        obs = TickObservation(t, actuals=10 + e, losses=np.abs(e), scaled_losses=np.abs(e),
                              has_model=np.ones(n, dtype=bool), ticks_since_fit=t - fitted,
                              observed=np.full(n, STEPS), errors=e)
        decision = policy.decide(obs)
        judged = np.flatnonzero(pending == t - 1)
        if len(judged):
            challenger = np.abs(challenger_errors[judged, t]).mean(axis=1)
            champion = np.abs(e[judged]).mean(axis=1)
            policy.on_challenger_judged(judged, t, challenger, champion)
            won, lost = judged[challenger <= champion], judged[challenger > champion]
            fitted[won] = t
            policy.on_new_model(won, t)
            policy.on_challenger_lost(lost, t)
            pending[judged] = -2
        chosen = decision.retrain & (pending < 0) & retrain  # the agent does not re-train a stream in shadow
        direct = chosen & (decision.serve_at_once if decision.serve_at_once is not None else False)
        fitted[direct] = t
        policy.on_new_model(np.flatnonzero(direct), t)
        pending[chosen & ~direct] = t
        if at_once is not None:
            at_once.append(direct)
        if reasons is not None:
            reasons.append(decision.reason.copy())
        p_values.append(decision.p_value)
        triggers.append(decision.verdict == 1)
        retrains.append(chosen)
    return np.array(p_values), np.array(triggers), np.array(retrains), fitted


def _tests_only(**params) -> MLMAPolicy:
    """The tests alone: no budget, no refresh, no multiplicity control, no margin unless given."""
    return MLMAPolicy(**({"budget": None, "refresh_ticks": 0, "fdr": "none", "delta": 0.0, "alpha": 0.05}
                         | params))


def false_trigger_rates(phi: float, t_df: float | None, n: int = 1000, ticks: int = 200, seed: int = 0):
    """Per-stream trigger rate per tested tick under no change, over all ticks and by halves."""
    rng = np.random.default_rng(seed)
    errors = simulate_errors(n, ticks, phi, t_df, rng)
    p, trig, _, _ = drive(_tests_only(), errors, rng, simulate_errors(n, ticks, phi, t_df, rng))
    tested = np.isfinite(p)
    half = ticks // 2
    rate = trig.sum() / tested.sum()
    first, second = trig[:half].sum() / tested[:half].sum(), trig[half:].sum() / tested[half:].sum()
    return rate, first, second, tested.sum()


def binomial_tolerance(rate: float, n: int, clusters: float = 3.0) -> float:
    """Three standard errors of a rate from ``n`` trials; ``clusters`` inflates the variance for the
    dependence between a stream's consecutive tests (the window ticks overlap)."""
    return 3.0 * np.sqrt(clusters * rate * (1 - rate) / n)


@pytest.mark.slow
@pytest.mark.parametrize("phi, t_df", [(0.0, None), (0.5, 4), (0.95, 4)])
def test_per_stream_false_trigger_rate_stays_nominal_over_200_ticks_without_resets(phi, t_df):
    rate, first, second, n_tested = false_trigger_rates(phi, t_df)
    tol = binomial_tolerance(0.05, n_tested)
    assert rate <= 0.05 + tol, f"false-trigger rate {rate:.4f} for phi={phi}, t df={t_df}"
    # Not rising: the second hundred ticks are not worse than the first beyond Monte-Carlo noise (with
    # admission that depended on test outcomes the rate rose steadily).
    assert second <= first + 2 * binomial_tolerance(0.05, n_tested // 2)
    # A test that never fires would pass the lines above; it must be live.
    assert rate >= 0.005


@pytest.mark.slow
def test_the_reference_stays_an_unbiased_sample_of_the_losses():
    """After 200 ticks of no change, triggers acted on by nothing (the issue's setting: no reset after a
    trigger), the fleet's mean reference loss matches the mean loss: admission does not depend on test
    outcomes (a reference fed only ticks that passed their tests sat 1-4 % low, eating most of the 5 %
    relevance margin). (When triggers re-train, every reset drops the window that triggered it, so the
    references standing at any moment lack the ticks that caused resets: about 1 % low at the strictest
    setting's 2 % trigger rate. That is the price of starting a new model's reference afresh, not an
    admission rule.)"""
    rng = np.random.default_rng(4)
    n, ticks = 1000, 200
    errors = simulate_errors(n, ticks, 0.5, 4, rng)
    policy = _tests_only()
    _, triggers, _, _ = drive(policy, errors, rng, simulate_errors(n, ticks, 0.5, 4, rng), retrain=False)
    assert triggers.sum() > 1000  # the tests fired; nothing was re-trained
    reference = policy.reference_mean()
    ok = np.isfinite(reference)
    true_mean = np.abs(errors[:, -60:]).mean()
    ratio = reference[ok].mean() / true_mean
    # Each stream's reference mean averages 14 days of heavy-tailed losses; over ~1,000 streams the fleet
    # mean has a standard error well under 0.5 %.
    per_stream = reference[ok] / true_mean
    tol = 3 * per_stream.std() / np.sqrt(ok.sum())
    assert abs(ratio - 1) <= max(tol, 0.005), (ratio, tol)


def gain_ranked_policy() -> MLMAPolicy:
    """The budget spent on the highest learned expected gains (the default before the schedule backbone)."""
    return MLMAPolicy(budget=0.05, backbone="gain", refresh_ticks=None, alpha=0.2)


@pytest.mark.slow
def test_gain_ranked_budget_learns_that_retraining_does_not_pay_under_no_change():
    """200 streams x 200 ticks, AR(1) t(4) errors, nothing changes. The gain-ranked budget (5 % of the
    fleet, age refresh, learned expected gain) spends its budget while its prior believes that old models
    gain; the challengers' outcomes teach it otherwise, and its re-trainings fall quarter after quarter to
    0.005 per stream-tick or less by the last 50 ticks (about 0.015 over all 200 ticks)."""
    rng = np.random.default_rng(5)
    n, ticks = 200, 200
    errors = simulate_errors(n, ticks, 0.5, 4, rng)
    _, _, retrains, _ = drive(gain_ranked_policy(), errors, rng)
    per_quarter = retrains.reshape(4, ticks // 4, n).mean(axis=(1, 2))
    # 50 ticks x 200 streams = 10,000 stream-ticks per quarter.
    tol = binomial_tolerance(0.005, 10_000)
    assert per_quarter[3] <= 0.005 + tol, per_quarter
    # Falling: every quarter below the one before, beyond Monte-Carlo noise at the later level.
    assert np.all(np.diff(per_quarter) < binomial_tolerance(per_quarter[1:], 10_000)), per_quarter
    assert per_quarter[3] < per_quarter[0] / 3, per_quarter


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [None, 0.2])
def test_tests_only_policy_with_bh_retrains_rarely_under_no_change(alpha):
    """Triggers (no budget, no refresh: the default) plus the default age backstop (365 ticks), BH over the
    fleet at the default q (0.01) and at 0.2, 200 x 200: at most 0.005 re-trainings per stream-tick, and the
    triggered ones not rising. The backstop is a schedule, not an alarm: in 200 ticks only its staggered first
    round reaches the streams whose first due age is under 200; at its steady state it adds at most
    1 / max_age per stream-tick, so the triggers' rate plus 1 / 365 must stay within the target too."""
    rng = np.random.default_rng(3)
    n, ticks = 200, 200
    errors = simulate_errors(n, ticks, 0.5, 4, rng)
    policy = MLMAPolicy() if alpha is None else MLMAPolicy(alpha=alpha)
    assert policy.budget is None and policy.refresh_ticks == 0 and policy.max_age == 365
    at_once: list = []
    _, _, retrains, _ = drive(policy, errors, rng, at_once=at_once)
    backstop = np.array(at_once)
    triggered = retrains & ~backstop
    assert retrains.mean() <= 0.005, retrains.mean()
    rate = triggered.mean()
    assert rate + 1 / policy.max_age <= 0.005, rate
    first, second = triggered[:100].mean(), triggered[100:].mean()
    assert second <= first + 2 * binomial_tolerance(max(rate, 1e-3), n * 100)
    # Only the first round's staggered streams (first due at age 365 - its phase in [0, 182), from its identity;
    # ages here reach 200) can have met the backstop, each at most once.
    assert backstop.sum(axis=0).max() <= 1
    assert not backstop[:, stream_slots(range(n)) * 182 // 1 < 365 - ticks].any()


def test_the_age_backstop_is_staggered_and_bounds_every_model_age():
    """40 streams launched together, max_age 10, challengers that always lose: the first backstops are spread
    over the second half of the backstop age (over five ticks by each stream's phase, from its identity: a
    hash, so about 8 a tick, not 40 at once), and afterwards each stream keeps its phase; no model serves
    more than 10 ticks."""
    rng = np.random.default_rng(2)
    n, ticks = 40, 60
    errors = simulate_errors(n, ticks, 0.5, 4, rng)
    at_once: list = []
    ages = []
    policy = MLMAPolicy(max_age=10)
    _, _, _, fitted = drive(policy, errors, rng, challenger_errors=10 * errors + 10, at_once=at_once)
    backstop = np.array(at_once)
    per_tick = backstop.sum(axis=1)
    phase = (stream_slots(range(n)) * 5 // 1).astype(int)
    # Binomial counts per phase (n / 5 = 8, sd 2.5): within four standard deviations, never the fleet at once.
    np.testing.assert_array_equal(per_tick[:10], np.bincount(9 - phase, minlength=10))
    assert per_tick.max() <= 8 + 4 * np.sqrt(n * 0.2 * 0.8) < n and per_tick.sum() == n * ticks // 10, per_tick
    # Each stream's backstops are exactly 10 ticks apart, the first one at age 10 - its phase (fitted at -1).
    for s in range(n):
        served = np.flatnonzero(backstop[:, s])
        assert served[0] == 9 - phase[s] and np.all(np.diff(served) == 10), (s, served)
        ages.append(np.diff(np.concatenate([[-1], served, [ticks]])).max())
    assert max(ages) <= 10


def test_the_age_backstop_serves_at_once_even_when_every_other_retraining_is_checked():
    """``challenge="all"`` checks every re-training but the backstop's: checked, it could lose like the
    challengers before it."""
    rng = np.random.default_rng(4)
    errors = simulate_errors(3, 30, 0.5, 4, rng)
    at_once: list = []
    _, _, _, fitted = drive(MLMAPolicy(max_age=10, challenge="all"), errors, rng,
                            challenger_errors=10 * errors + 10, at_once=at_once)
    served = np.array(at_once)
    phase = (stream_slots(range(3)) * 5 // 1).astype(int)  # first backstop at age 10 - phase, then every 10
    assert served.sum(axis=0).tolist() == [3, 3, 3] and fitted.tolist() == (29 - phase).tolist(), (served.sum(0),
                                                                                                 fitted)


def test_a_stream_whose_challengers_always_lose_is_refreshed_at_the_backstop_age():
    """One stream over 1,000 ticks whose challengers are ten times worse than its model, so that each loses:
    vic-elec's failure (its first model served all 1,069 days). With the default age backstop it gets a new
    model served at once whenever its model reaches 365 ticks, explained as an age backstop, and no model
    serves longer; without the backstop (max_age=0) its first model serves throughout."""
    ticks = 1_000
    for max_age in (365, 0):
        rng = np.random.default_rng(11)
        errors = simulate_errors(1, ticks, 0.5, 4, rng)
        # Level shifts every 50 ticks make the tests trigger now and then; every challenger still loses.
        errors[0] *= np.repeat(1 + 0.8 * (np.arange(ticks // 50) % 2), 50)[:, None]
        policy = MLMAPolicy() if max_age else MLMAPolicy(max_age=0)
        at_once: list = []
        reasons: list = []
        _, _, retrains, fitted = drive(policy, errors, rng, challenger_errors=10 * errors + 10,
                                       at_once=at_once, reasons=reasons)
        served = np.flatnonzero(np.array(at_once)[:, 0])
        checked = np.flatnonzero(retrains[:, 0] & ~np.array(at_once)[:, 0])
        if not max_age:
            assert len(served) == 0 and fitted[0] == -1 and len(checked) >= 3, (served, checked)
            continue
        # Every new model came from the backstop (the challengers all lost): first at its staggered turn,
        # age 365 - phase (fitted at -1), then at age 365.
        phase = int(stream_slots([0])[0] * 182)
        assert list(served) == [364 - phase, 729 - phase], served
        assert len(checked) >= 3, checked  # triggers fired and their challengers lost
        assert fitted[0] == 729 - phase
        assert reasons[served[0]][0].startswith(f"age backstop: model {365 - phase} ticks old"), reasons[served[0]][0]
        assert reasons[served[1]][0].startswith("age backstop: model 365 ticks old"), reasons[served[1]][0]


def detection(factor: float, share: float, phi: float, t_df: float | None, *, delta: float = 0.1,
              n: int = 2000, pre: int = 20, post: int = 6, seed: int = 1, fdr: str = "bh"):
    """Share of affected streams flagged within 1, 2, 3 and 6 ticks, and false triggers among the others."""
    rng = np.random.default_rng(seed)
    errors = simulate_errors(n, pre + post, phi, t_df, rng)
    hit = np.arange(n) < int(share * n)
    errors[hit, pre:] *= factor
    policy = MLMAPolicy(fdr=fdr, delta=delta, alpha=0.05, budget=None, refresh_ticks=0)
    policy.reset(n, STEPS, STEPS)
    policy.on_new_model(np.arange(n), -1)
    first = np.full(n, -1)
    false = 0
    for t in range(pre + post):
        e = errors[:, t]
        obs = TickObservation(t, actuals=10 + e, losses=np.abs(e), scaled_losses=np.abs(e),
                              has_model=np.ones(n, dtype=bool), ticks_since_fit=np.full(n, t),
                              observed=np.full(n, STEPS), errors=e)
        decision = policy.decide(obs)
        if t < pre:
            false += int(decision.retrain.sum())
        else:
            new = decision.retrain & (first < 0)
            first[new] = t - pre + 1
            false += int((decision.retrain & ~hit).sum())
    within = [float(np.mean(((first > 0) & (first <= k))[hit])) for k in (1, 2, 3, 6)]
    return within, false


@pytest.mark.slow
def test_a_doubled_loss_in_a_tenth_of_the_fleet_is_found_within_three_ticks():
    within, false = detection(2.0, 0.1, 0.0, None)
    assert within[2] >= 0.9
    assert false <= 10


@pytest.mark.slow
def test_a_thirty_percent_rise_across_a_city_is_found_within_a_few_ticks():
    # A shared cause (a city's zones all worse) gives BH many small p-values at once.
    within, _ = detection(1.3, 1.0, 0.0, None, delta=0.0)
    # 0.72 measured: the bias test's share of the Bonferroni split costs the loss test some power here
    # (the errors grew, their mean did not move); it was 0.8+ with the loss test alone.
    assert within[3] >= 0.65


def test_a_level_drop_on_count_data_is_found_by_the_bias_test():
    """Poisson orders at 20 an hour fall to 8; the model's lag features follow part of the way (it forecasts
    11). Its absolute error falls (the noise fell with the level: about 3.3 against 3.6 before), so the loss
    test sees nothing, while the mean signed error moved by -3 an hour. With the bias test most streams are
    flagged within three ticks; with the loss test alone almost none are. At BH q = 0.2: at the default
    q = 0.01 the bias test's p-values (3 window ticks against the reference's) stay above BH's thresholds for
    400 streams and none is flagged within eight ticks (docs/monitoring.md says so)."""
    with_bias, loss_only = (level_drop_retrained(MLMAPolicy(budget=None, refresh_ticks=0, bias_test=bias_test,
                                                            alpha=0.2), post=3) for bias_test in (True, False))
    assert with_bias >= 0.8, with_bias
    assert loss_only < with_bias - 0.3, (loss_only, with_bias)


if __name__ == "__main__":  # pragma: no cover - prints the doc tables
    print("| AR(1) phi | innovations | trigger rate, ticks 1-100 / 101-200 (alpha 0.05, no FDR, delta 0) |")
    print("| --- | --- | --- |")
    for phi, t_df in [(0.0, None), (0.5, 4), (0.8, None), (0.95, 4)]:
        rate, first, second, _ = false_trigger_rates(phi, t_df)
        print(f"| {phi} | {'t(4)' if t_df else 'Gaussian'} | {first:.4f} / {second:.4f} |")
    for label, policy in [("default (tests only, BH at 0.01)", MLMAPolicy()),
                          ("tests only, BH at 0.2", MLMAPolicy(alpha=0.2)),
                          ("gain-ranked budget 5 %", gain_ranked_policy())]:
        rng = np.random.default_rng(5)
        _, _, retrains, _ = drive(policy, simulate_errors(200, 200, 0.5, 4, rng), rng)
        quarters = retrains.reshape(4, 50, 200).mean(axis=(1, 2))
        print(f"{label}: re-trainings per stream-tick {retrains.mean():.4f}; by 50 ticks "
              + " / ".join(f"{q:.4f}" for q in quarters))
    print()
    print("| loss x | share hit | phi, innovations | delta | flagged within 1 / 2 / 3 / 6 ticks | false triggers |")
    print("| --- | --- | --- | --- | --- | --- |")
    for share in (1.0, 0.1):
        for phi, t_df in [(0.0, None), (0.5, 4)]:
            for factor, delta in [(1.3, 0.0), (1.5, 0.1), (2.0, 0.1)]:
                within, false = detection(factor, share, phi, t_df, delta=delta)
                label = f"{phi}, {'t(4)' if t_df else 'Gaussian'}"
                print(f"| {factor} | {share:.0%} | {label} | {delta} | "
                      f"{' / '.join(f'{w:.2f}' for w in within)} | {false} |")
