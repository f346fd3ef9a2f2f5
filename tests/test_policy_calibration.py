"""Statistical validation of the whole MLMA decision loop, not just the test function.

The policy adds state on top of :func:`mlma.monitor.degradation_test`: warm-up, a reference that rolls
forward after probation, a two-window test (newest tick, last three ticks) combined by Bonferroni, the
reference gate, resets after a new model. These seeded simulations feed the policy loss batches of many
streams, tick after tick, and check

- under no change: the per-stream trigger rate per tested tick is at or under the nominal alpha (no
  multiplicity control, relevance margin 0: the strictest setting), on autocorrelated heavy-tailed losses
  with a daily pattern; and with Benjamini-Hochberg the fleet has almost no tick with any false trigger;
- under a sustained 30 % / 100 % loss increase in part of the fleet: most affected streams are flagged within
  a few ticks, and the reference does not absorb the change.

Run as a script to print the tables in docs/statistics.md ("The decision loop").
"""

from __future__ import annotations

import numpy as np
import pytest

from mlma.mlma_policy import MLMAPolicy
from mlma.policy import TickObservation

STEPS = 24


def simulate_losses(n: int, ticks: int, phi: float, t_df: float | None, rng) -> np.ndarray:
    """Absolute losses of AR(1) forecast errors with a daily pattern in their scale, ``(n, ticks, STEPS)``."""
    total = ticks * STEPS
    shocks = rng.standard_t(t_df, (n, total)) if t_df else rng.normal(size=(n, total))
    errors = np.empty((n, total))
    state = shocks[:, 0] / np.sqrt(max(1 - phi ** 2, 1e-9))
    for t in range(total):
        state = phi * state + shocks[:, t] if t else state
        errors[:, t] = state
    daily = 1 + 0.6 * np.sin(2 * np.pi * np.arange(total) / STEPS)
    return np.abs(errors * daily).reshape(n, ticks, STEPS)


def drive(policy: MLMAPolicy, losses: np.ndarray, rng, reset_on_trigger: bool = True):
    """Feed ``losses`` tick by tick; returns per-tick arrays of p-values and triggers."""
    n, ticks, _ = losses.shape
    policy.reset(n, STEPS, STEPS)
    policy.on_new_model(np.arange(n), -1)
    p_values, triggers = [], []
    for t in range(ticks):
        obs = TickObservation(t, actuals=10 + rng.normal(0, 1, (n, STEPS)), losses=losses[:, t],
                              scaled_losses=losses[:, t], has_model=np.ones(n, dtype=bool),
                              ticks_since_fit=np.full(n, t), observed=np.full(n, STEPS))
        decision = policy.decide(obs)
        p_values.append(decision.p_value)
        triggers.append(decision.retrain)
        if reset_on_trigger and decision.retrain.any():
            # Under no change a re-trained model has the same loss distribution: a fresh reference.
            policy.on_new_model(np.flatnonzero(decision.retrain), t)
    return np.array(p_values), np.array(triggers)


def false_trigger_rate(phi: float, t_df: float | None, n: int = 2000, ticks: int = 40, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    losses = simulate_losses(n, ticks, phi, t_df, rng)
    p, trig = drive(MLMAPolicy(fdr="none", delta=0.0, alpha=0.05), losses, rng)
    return trig.sum() / np.isfinite(p).sum()


def detection(factor: float, share: float, phi: float, t_df: float | None, *, delta: float = 0.1, n: int = 2000,
              pre: int = 20, post: int = 6, seed: int = 1, fdr: str = "bh"):
    """Share of affected streams flagged within 1, 2, 3 and 6 ticks, and false triggers among the others."""
    rng = np.random.default_rng(seed)
    losses = simulate_losses(n, pre + post, phi, t_df, rng)
    hit = np.arange(n) < int(share * n)
    losses[hit, pre:] *= factor
    policy = MLMAPolicy(fdr=fdr, delta=delta, alpha=0.05)
    policy.reset(n, STEPS, STEPS)
    policy.on_new_model(np.arange(n), -1)
    first = np.full(n, -1)
    false = 0
    for t in range(pre + post):
        obs = TickObservation(t, actuals=10 + rng.normal(0, 1, (n, STEPS)), losses=losses[:, t],
                              scaled_losses=losses[:, t], has_model=np.ones(n, dtype=bool),
                              ticks_since_fit=np.full(n, t), observed=np.full(n, STEPS))
        decision = policy.decide(obs)
        if t < pre:
            false += int(decision.retrain.sum())
            if decision.retrain.any():
                policy.on_new_model(np.flatnonzero(decision.retrain), t)
        else:
            new = decision.retrain & (first < 0)
            first[new] = t - pre + 1
            false += int((decision.retrain & ~hit).sum())
    within = [float(np.mean(((first > 0) & (first <= k))[hit])) for k in (1, 2, 3, 6)]
    return within, false


# Monte-Carlo tolerance: 2,000 streams x ~30 tested ticks, binomial sd of a 5 % rate ~0.0009; the streams'
# ticks are dependent, so allow about three times that.
TOLERANCE = 0.004


@pytest.mark.slow
@pytest.mark.parametrize("phi, t_df", [(0.0, None), (0.5, 4), (0.8, None), (0.95, 4)])
def test_per_stream_false_trigger_rate_is_at_most_nominal(phi, t_df):
    rate = false_trigger_rate(phi, t_df)
    assert rate <= 0.05 + TOLERANCE, f"false-trigger rate {rate:.4f} for phi={phi}, t df={t_df}"
    # A test that never fires would pass the line above; it must be live.
    assert rate >= 0.005


@pytest.mark.slow
def test_fleet_false_triggers_under_bh_stay_rare():
    rng = np.random.default_rng(3)
    losses = simulate_losses(2000, 40, 0.5, 4, rng)
    _, trig = drive(MLMAPolicy(fdr="bh", alpha=0.05), losses, rng)
    ticks_with_any = (trig.sum(axis=1) > 0).mean()
    assert ticks_with_any <= 0.10
    assert trig.sum() <= 10


@pytest.mark.slow
def test_a_doubled_loss_in_a_tenth_of_the_fleet_is_found_within_three_ticks():
    within, false = detection(2.0, 0.1, 0.0, None)
    assert within[2] >= 0.9
    assert false <= 5


@pytest.mark.slow
def test_a_thirty_percent_rise_across_a_city_is_found_within_a_few_ticks():
    # A shared cause (a city's zones all worse) gives BH many small p-values at once.
    within, false = detection(1.3, 1.0, 0.0, None, delta=0.0)
    assert within[3] >= 0.8
    assert within[0] <= within[1] <= within[2] <= within[3]


if __name__ == "__main__":  # pragma: no cover - prints the doc tables
    print("| AR(1) phi | innovations | false-trigger rate (alpha 0.05, no FDR, delta 0) |")
    print("| --- | --- | --- |")
    for phi, t_df in [(0.0, None), (0.0, 4), (0.5, None), (0.5, 4), (0.8, None), (0.8, 4), (0.95, None), (0.95, 4)]:
        print(f"| {phi} | {'t(4)' if t_df else 'Gaussian'} | {false_trigger_rate(phi, t_df):.4f} |")
    print()
    print("| loss x | share hit | phi, innovations | delta | flagged within 1 / 2 / 3 / 6 ticks | false triggers |")
    print("| --- | --- | --- | --- | --- | --- |")
    for share in (1.0, 0.1):
        for phi, t_df in [(0.0, None), (0.5, 4), (0.8, None)]:
            for factor, delta in [(1.3, 0.0), (1.5, 0.1), (2.0, 0.1)]:
                within, false = detection(factor, share, phi, t_df, delta=delta)
                label = f"{phi}, {'t(4)' if t_df else 'Gaussian'}"
                print(f"| {factor} | {share:.0%} | {label} | {delta} | "
                      f"{' / '.join(f'{w:.2f}' for w in within)} | {false} |")
