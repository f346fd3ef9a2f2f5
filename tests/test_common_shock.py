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
from test_policy_calibration import STEPS, simulate_errors, tick_observation

N, TICKS, T0 = 200, 80, 50


def run(policy: MLMAPolicy, hit: np.ndarray, *, shock: float = 1.0, shift: float = 1.0, seed: int = 1,
        restart_at: int | None = None):
    """Drive ``policy``; streams ``hit`` get their errors times ``shock`` on tick T0 only and times ``shift``
    from T0 on while their serving model was fitted before T0 (a model fitted on tick T0 itself, the shock's
    tick, errs 1.5 times afterwards). With ``restart_at`` the policy's state is saved after that tick and
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


def test_a_one_tick_shock_across_a_third_of_the_fleet_is_not_retrained_on():
    """Errors four times as large on one tick for 60 streams, nothing lasting (three seeds): without the hold
    nearly all of them re-train on the shock (and their challengers, fitted on it, would lose); with it almost
    none do. A false confirmation needs a Benjamini-Hochberg rejection at q = 0.01 of a stream back to normal,
    in the fleet's family or the held streams': about 1 % of the 180 held streams (1.8) would be many; 5 is
    more than two standard deviations beyond."""
    hit = share(60)
    false = 0
    for seed in SEEDS:
        held, _ = run(MLMAPolicy(), hit, shock=4.0, seed=seed)
        unheld, _ = run(MLMAPolicy(common_shock=0), hit, shock=4.0, seed=seed)
        assert unheld[T0].sum() >= 40, unheld[T0].sum()  # the shock does trigger
        assert held[T0].sum() == 0
        false += held[T0:T0 + 4].sum()
    assert false <= 5, false


def test_a_lasting_shift_of_many_streams_is_retrained_a_few_ticks_later():
    """Errors doubled from tick T0 on for 60 streams (three seeds): nearly every stream the loop without the
    hold re-trains is re-trained with it too, most within the hold (three ticks). Streams that trigger on a
    common-shock tick wait for a second trigger or for the hold's last check on the ticks after the shock;
    confirming by a second trigger alone lost 8-22 % of them (marginal detections), which this fails on."""
    hit = share(60)

    def first(retrains):
        window = retrains[T0:T0 + 20]
        return np.where(window.any(axis=0), window.argmax(axis=0), -1)

    caught = missed = delayed = within_hold = confirmed = 0
    for seed in SEEDS:
        held, reasons = run(MLMAPolicy(), hit, shift=2.0, seed=seed)
        unheld, _ = run(MLMAPolicy(common_shock=0), hit, shift=2.0, seed=seed)
        first_held, first_unheld = first(held), first(unheld)
        both = (first_unheld >= 0) & (first_held >= 0)
        caught += (first_unheld >= 0).sum()
        missed += ((first_unheld >= 0) & (first_held < 0)).sum()
        delay = first_held[both] - first_unheld[both]
        delayed += (delay > 0).sum()
        within_hold += (delay <= 3).sum()
        reasons_held = [r for tick in reasons[T0:T0 + 20] for r in tick if "confirmed after a hold" in r]
        assert all("tested streams triggered at once" in r for r in reasons_held)
        confirmed += len(reasons_held)
    assert caught >= 120, caught  # the shift is found at all (60 x 3 streams)
    assert missed <= 0.1 * caught, (missed, caught)
    assert within_hold >= 0.9 * (caught - missed), (within_hold, caught - missed)
    assert delayed >= MIN_COUNT and confirmed >= delayed - 3, (delayed, confirmed)


def test_a_stream_that_changes_alone_is_never_held():
    """One stream's errors tripled from T0 on: it triggers alone, so it re-trains on the same tick with or
    without the hold."""
    hit = share(1)
    held, _ = run(MLMAPolicy(), hit, shift=3.0)
    unheld, _ = run(MLMAPolicy(common_shock=0), hit, shift=3.0)
    assert held[T0:, 0].any()
    assert held[T0:, 0].argmax() == unheld[T0:, 0].argmax()


def test_a_hold_survives_a_restart_between_the_shock_and_its_confirmation():
    """The policy's state is saved on the shock's tick of a lasting shift and loaded into a fresh policy: the
    held streams are confirmed on the next tick exactly as without the restart (fails if the hold is not part
    of the saved state: the restarted policy would act on the confirmations as fresh triggers, held again)."""
    hit = share(60)
    straight, reasons = run(MLMAPolicy(), hit, shift=2.0)
    confirmed = [r for tick in reasons for r in tick if "confirmed after a hold" in r]
    held_on = int(re.search(r"held on tick (\d+)", confirmed[0]).group(1))
    restarted, _ = run(MLMAPolicy(), hit, shift=2.0, restart_at=held_on)
    assert straight[held_on].sum() == 0 and straight[held_on + 1].sum() >= 1
    assert np.array_equal(straight, restarted)


def test_the_share_is_relative_to_the_tested_streams():
    hold = CommonShockHold(share=0.1)
    assert not hold.is_shock(9, 100) and hold.is_shock(10, 100)
    assert not hold.is_shock(MIN_COUNT - 1, 10)
    for bad in (0, -0.1, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="common-shock share"):
            CommonShockHold(bad)
    with pytest.raises(ValueError, match="common-shock share"):
        MLMAPolicy(common_shock=2)
    assert MLMAPolicy(common_shock=0).common_shock is None


def test_mlma_toml_sets_or_turns_off_the_hold(tmp_path):
    (tmp_path / "mlma.toml").write_text("[monitor]\ncommon_shock = 0.1\n")
    assert load_config(tmp_path).build_policy().common_shock == 0.1
    (tmp_path / "mlma.toml").write_text("[monitor]\ncommon_shock = 0\n")
    assert load_config(tmp_path).build_policy().common_shock is None
    (tmp_path / "mlma.toml").write_text("[monitor]\n")
    assert load_config(tmp_path).build_policy().common_shock == 0.02
    (tmp_path / "mlma.toml").write_text("[monitor]\ncommon_shock = 1.5\n")
    with pytest.raises(ConfigError, match="common_shock"):
        load_config(tmp_path)
