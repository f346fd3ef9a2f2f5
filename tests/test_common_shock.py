"""The common-shock hold (mlma.monitor.shock) in the MLMA decision loop.

A loop in which re-training *does* something, unlike the no-change loop of test_policy_calibration: each
stream's errors are multiplied while its model predates a change (a sustained shift is learnt by a model fitted
after it started), and a model fitted on a one-tick shock is worse afterwards (it learnt the shock). Challengers
are judged on the tick after their fit against the champion, as the agent does.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from mlma.mlma_policy import MLMAPolicy
from mlma.monitor.shock import MIN_COUNT, CommonShockHold
from mlma.project import ConfigError, load_config
from test_policy_calibration import STEPS, level_drop_retrained, simulate_errors, tick_observation

N, TICKS, T0 = 200, 80, 50


def run(policy: MLMAPolicy, hit: np.ndarray, *, shock: float = 1.0, shift: float = 1.0, seed: int = 1,
        restart_at: int | None = None, also: tuple | None = None, also_from: int = T0 + 1):
    """Drive ``policy``; streams ``hit`` get their errors times ``shock`` on tick T0 only and times ``shift``
    from T0 on while their serving model was fitted before T0 (a model fitted on tick T0 itself, the shock's
    tick, errs 1.5 times afterwards). ``also``, a pair (mask, factor): those streams' errors are times
    ``factor`` from ``also_from`` on while their model was fitted before it. With ``restart_at`` the policy's state is saved after that tick and
    loaded into a fresh policy with the same settings, as a restarted agent does. Returns per-tick re-trainings
    and the reasons of the re-trainings."""
    rng = np.random.default_rng(seed)
    base = simulate_errors(N, TICKS, 0.5, 4, rng)
    fitted = np.full(N, -1)
    pending = np.full(N, -2)
    policy.reset(N, STEPS, STEPS)
    policy.on_new_model(np.arange(N), -1)
    retrains, reasons = [], []

    def errors_of(fit_tick: np.ndarray, t: int) -> np.ndarray:
        factor = np.ones(N)
        factor[hit & (t >= T0) & (fit_tick < T0)] = shift
        factor[hit & (fit_tick == T0) & (t > T0)] = 1.5
        if t == T0:
            factor[hit] *= shock
        if also is not None:
            factor[also[0] & (t >= also_from) & (fit_tick < also_from)] = also[1]
        return base[:, t] * factor[:, None]

    for t in range(TICKS):
        e = errors_of(fitted, t)
        decision = policy.decide(tick_observation(t, e, fitted))
        judged = np.flatnonzero(pending == t - 1)
        if len(judged):
            challenger = np.abs(errors_of(np.full(N, t - 1), t)[judged]).mean(axis=1)
            champion = np.abs(e[judged]).mean(axis=1)
            won, lost = judged[challenger <= champion], judged[challenger > champion]
            fitted[won] = t - 1
            policy.on_new_model(won, t)
            policy.on_challenger_lost(lost, t)
            pending[judged] = -2
        chosen = decision.retrain & (pending < 0)
        pending[chosen] = t
        retrains.append(chosen)
        reasons.append(decision.reason.copy())
        if t == restart_at:
            saved = {name: np.array(value, copy=True) for name, value in policy.state_arrays().items()}
            policy = MLMAPolicy(**policy.get_params())
            policy.reset(N, STEPS, STEPS)
            policy.load_state_arrays(saved)
    return np.array(retrains), np.array(reasons)


def share(n: int) -> np.ndarray:
    return np.arange(N) < n


SEEDS = (1, 2, 3)
HOLD = 0.02  # the share the docs suggest; on 200 streams the minimum of five triggers decides


def first_retrains(retrains: np.ndarray) -> np.ndarray:
    """Per stream, the first re-training from T0 on (ticks after T0), -1 for none within 20 ticks."""
    window = retrains[T0:T0 + 20]
    return np.where(window.any(axis=0), window.argmax(axis=0), -1)


@pytest.mark.parametrize("size", [4.0, 8.0, 16.0])
def test_a_one_tick_shock_across_a_third_of_the_fleet_is_not_retrained_on(size):
    """Errors ``size`` times as large on one tick for 60 streams, nothing lasting (three seeds): without the
    hold nearly all of them re-train on the shock (and their challengers, fitted on it, lose); with it none
    should. The evidence that confirms a held stream leaves the shock's tick out, so a larger shock must not
    confirm itself (a first design that let a new trigger confirm a hold re-trained 13 of 180 streams at 8x and
    82 at 16x, whose window tests still held the shock). A false confirmation needs a rejection at 0.1 within
    the family of 60 held streams back to normal, on one of three ticks: Benjamini-Hochberg keeps the chance of
    any at about 0.1 a tick under that null, so 5 over the nine tick-families would be far beyond it."""
    hit = share(60)
    false = 0
    for seed in SEEDS:
        held, reasons = run(MLMAPolicy(common_shock=HOLD), hit, shock=size, seed=seed)
        unheld, _ = run(MLMAPolicy(), hit, shock=size, seed=seed)
        assert unheld[T0].sum() >= 40, unheld[T0].sum()  # the shock does trigger
        assert held[T0].sum() == 0
        false += held[T0:T0 + 5, hit].sum()
        assert sum(r.startswith("common shock: held on tick") for r in reasons[T0]) >= 40
    assert false <= 5, false


def test_a_lasting_shift_of_many_streams_is_retrained_a_few_ticks_later():
    """Errors doubled from tick T0 on for 60 streams (three seeds): nearly every stream the loop without the
    hold re-trains is re-trained with it too, within the hold (its own three ticks after the shock), and the
    reasons say what confirmed it. Confirming at the policy's strict level (0.01) lost 49 of 142 such streams,
    marginal detections that a few ticks do not confirm as strongly."""
    hit = share(60)
    caught = missed = within = confirmed = 0
    for seed in SEEDS:
        held, reasons = run(MLMAPolicy(common_shock=HOLD), hit, shift=2.0, seed=seed)
        unheld, _ = run(MLMAPolicy(), hit, shift=2.0, seed=seed)
        first_held, first_unheld = first_retrains(held), first_retrains(unheld)
        found = first_unheld >= 0
        caught += found.sum()
        missed += (found & (first_held < 0)).sum()
        both = found & (first_held >= 0)
        within += (first_held[both] - first_unheld[both] <= 3).sum()
        for tick in reasons[T0:T0 + 20]:
            for r in tick:
                if "confirmed by the" in r:
                    confirmed += 1
                    assert re.search(r"held on tick \d+, when \d+ of \d+ tested streams triggered at once; "
                                     r"confirmed by the [123] ticks? after it \(p=[0-9.e-]+, among \d+ held\)", r), r
    assert caught >= 120, caught  # the shift is found at all (60 x 3 streams)
    assert missed <= 0.05 * caught, (missed, caught)
    assert within >= 0.95 * (caught - missed), (within, caught - missed)
    assert confirmed >= MIN_COUNT


def test_a_lasting_level_drop_of_the_whole_fleet_is_mostly_retrained():
    """The bias test's case of tests/test_policy_calibration.py, Poisson orders at 20 an hour falling to 8 for
    all 400 streams (BH at 0.2): every tick's new triggers are many, so they are held, and a held stream is
    confirmed by the bias test on its ticks since the shock. A change of every stream at once is where the
    hold costs most (docs/monitoring.md says so): without it 0.998 are re-trained within ten ticks, with it
    0.78 (0.40 when the check read the loss test only, at alpha 0.05); 0.7 is four standard errors of 400
    streams below 0.78."""
    assert level_drop_retrained(MLMAPolicy(alpha=0.2), post=10) >= 0.95
    assert level_drop_retrained(MLMAPolicy(alpha=0.2, common_shock=HOLD), post=10) >= 0.7


def test_a_released_shock_does_not_hide_a_later_change():
    """A 4x one-tick shock on 60 streams, then their errors doubled for good from nine ticks later. A hold
    released unconfirmed drops the shock's tick from the stream's window, so it never enters the reference
    (kept, it raised the reference and all 180 hit streams of three seeds missed the later doubling). Without
    the hold the shock's challengers lose and the lost challenger re-bases the reference; measured: 63 of 180
    hit streams not re-trained within 20 ticks of the doubling with the hold, 122 without."""
    hit = share(60)
    missed_held = missed_unheld = 0
    for seed in SEEDS:
        held, _ = run(MLMAPolicy(common_shock=HOLD), hit, shock=4.0, seed=seed, also=(hit, 2.0), also_from=T0 + 9)
        unheld, _ = run(MLMAPolicy(), hit, shock=4.0, seed=seed, also=(hit, 2.0), also_from=T0 + 9)
        missed_held += (~held[T0 + 9:T0 + 29, hit].any(axis=0)).sum()
        missed_unheld += (~unheld[T0 + 9:T0 + 29, hit].any(axis=0)).sum()
    assert missed_held <= missed_unheld, (missed_held, missed_unheld)


def test_a_stream_that_changes_alone_is_not_held_during_another_shock():
    """A one-tick shock on 60 streams and, from the tick after it, stream 100's errors tripled for good: it
    triggers alone (the held streams' triggers are not counted as new ones), so its re-training is a plain
    trigger's, at most a tick from the loop without the hold (the held streams stay in the tests' variance
    moderation, which moves its p-value a little: 1e-4 against 9e-6 on seed 1's second tick)."""
    hit = share(60)
    lone = np.arange(N) == 100
    for seed in SEEDS:
        held, reasons = run(MLMAPolicy(common_shock=HOLD), hit, shock=4.0, seed=seed, also=(lone, 3.0))
        unheld, _ = run(MLMAPolicy(), hit, shock=4.0, seed=seed, also=(lone, 3.0))
        first, first_unheld = held[T0 + 1:, 100].argmax(), unheld[T0 + 1:, 100].argmax()
        assert held[T0 + 1:, 100].any() and abs(first - first_unheld) <= 1, (first, first_unheld)
        reason = reasons[T0 + 1 + first][100]
        assert reason.startswith("loss ") and "common shock" not in reason, reason


@pytest.mark.parametrize("after", [0, 1, 2])
def test_a_hold_survives_a_restart_between_the_shock_and_its_confirmation(after):
    """The policy's state is saved ``after`` ticks after a common-shock tick of a lasting shift and loaded
    into a fresh policy: the re-trainings and their reasons are exactly those without the restart (fails if
    the hold's tick or its count of ticks since the shock is not part of the saved state)."""
    hit = share(60)
    straight, reasons = run(MLMAPolicy(common_shock=HOLD), hit, shift=2.0)
    confirmed = [r for tick in reasons for r in tick if "confirmed by the" in r]
    held_on = int(re.search(r"held on tick (\d+)", confirmed[0]).group(1))
    restarted, restarted_reasons = run(MLMAPolicy(common_shock=HOLD), hit, shift=2.0, restart_at=held_on + after)
    assert straight[held_on].sum() == 0 and straight[held_on + 1:held_on + 4].sum() >= MIN_COUNT
    assert np.array_equal(straight, restarted)
    assert np.array_equal(reasons, restarted_reasons)


def test_a_new_model_or_a_fresh_reference_ends_a_hold():
    """A hold is evidence against the serving model's reference: a new model (or a reference started afresh)
    releases it, so that the next trigger is judged as a fresh one."""
    policy = MLMAPolicy(common_shock=HOLD)
    policy.reset(10, STEPS, STEPS)
    policy.shock.act(np.ones(10, dtype=bool), n_tested=10, tick=5)
    assert policy.shock.held.all()
    policy.on_new_model(np.array([0, 1]), 6)
    policy.reset_reference(np.array([2]), 6)
    assert policy.shock.held.tolist() == [False] * 3 + [True] * 7


def test_a_gain_ranked_budget_does_not_spend_on_held_streams():
    """With ``backbone="gain"`` the budget (20 a tick) goes to the highest expected gains, which a shock's
    p-values raise: held streams are left out until confirmed. Hit streams whose tests did not trigger can still
    be ranked on the evidence the shock raised (docs/monitoring.md says so), so some of the 60 are re-trained on
    the shock's tick, but fewer than the whole budget, which they take without the hold."""
    hit = share(60)
    params = dict(budget=20, backbone="gain")
    for seed in SEEDS:
        held, reasons = run(MLMAPolicy(common_shock=HOLD, **params), hit, shock=4.0, seed=seed)
        unheld, _ = run(MLMAPolicy(**params), hit, shock=4.0, seed=seed)
        assert unheld[T0, hit].sum() >= 18, unheld[T0, hit].sum()
        assert held[T0, hit].sum() <= 15, held[T0, hit].sum()
        assert not any(r.startswith("common shock") for r in reasons[T0][held[T0]])


def test_the_share_is_relative_to_the_tested_streams():
    hold = CommonShockHold(share=0.1)
    assert not hold.is_shock(9, 100) and hold.is_shock(10, 100)
    assert not hold.is_shock(MIN_COUNT - 1, 10)
    for bad in (-0.1, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="common_shock .* must be in \\(0, 1\\], or 0 / None for no hold"):
            MLMAPolicy(common_shock=bad)
    assert MLMAPolicy(common_shock=0).common_shock is None
    assert MLMAPolicy().common_shock is None  # opt-in


def test_mlma_toml_sets_or_turns_off_the_hold(tmp_path):
    (tmp_path / "mlma.toml").write_text("[monitor]\ncommon_shock = 0.1\n")
    assert load_config(tmp_path).build_policy().common_shock == 0.1
    (tmp_path / "mlma.toml").write_text("[monitor]\ncommon_shock = 0\n")
    assert load_config(tmp_path).build_policy().common_shock is None
    (tmp_path / "mlma.toml").write_text("[monitor]\n")
    assert load_config(tmp_path).build_policy().common_shock is None
    (tmp_path / "mlma.toml").write_text("[monitor]\ncommon_shock = 1.5\n")
    with pytest.raises(ConfigError, match="common_shock"):
        load_config(tmp_path)
