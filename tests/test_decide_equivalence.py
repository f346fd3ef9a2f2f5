"""The optimised ``MLMAPolicy.decide`` decides exactly as the straightforward one did.

``decide`` tests each stream's newest batch and recent window against block means kept as batches enter the
reference (and re-reads the reference only for streams whose batch misses hours). ``StraightforwardPolicy``
below keeps the earlier logic: both tests by the public :func:`mlma.monitor.degradation_test` on the
time-ordered, flattened reference. Both are driven through the same seeded fleets, with NaN gaps, batches
missing hours, whole ticks missing, warm-up, streams restarted by ``on_new_model``, lost challengers,
quality-flagged and abnormal batches, and must agree tick after tick.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlma.mlma_policy import MLMAPolicy, _usable_means
from mlma.monitor import degradation_test
from mlma.policy import TickObservation, Verdict


class StraightforwardPolicy(MLMAPolicy):
    """``MLMAPolicy`` with the two tests run by the public test on the time-ordered reference (the logic
    before the block means were kept)."""

    def _test(self, idx, current):
        slots = (self.ref_next[idx, None] - self.ref_len[idx, None] + np.arange(self.capacity)) % self.capacity
        ordered = np.take_along_axis(self.ref[idx], slots[:, :, None].astype(np.int64), axis=1)
        reference = ordered.reshape(len(idx), -1).astype(np.float64)
        newest = degradation_test(current[idx], reference, delta=self.delta, block_length=self.steps)
        p = np.asarray(newest.p_value, dtype=np.float64)
        effect = np.asarray(newest.effect, dtype=np.float64)
        excess = np.asarray(newest.current_mean) - np.asarray(newest.reference_mean)
        if self.window_ticks == 1:
            return p, effect, excess
        window = self.window[idx, -self.window_ticks:].reshape(len(idx), -1).astype(np.float64)
        sustained = degradation_test(window, reference, delta=self.delta, block_length=self.steps)
        p_window = np.asarray(sustained.p_value, dtype=np.float64)
        two = (self.window_len[idx] > 1) & np.isfinite(p_window)
        use_window = two & (p_window < p)
        combined = np.where(two, np.minimum(1.0, 2 * np.fmin(p, p_window)), p)
        effect = np.where(use_window, sustained.effect, effect)
        excess = np.where(use_window, np.asarray(sustained.current_mean) - np.asarray(sustained.reference_mean),
                          excess)
        return combined, effect, excess


class IgnoresMissingHours(MLMAPolicy):
    """A wrong shortcut: full-day reference means even for batches that miss hours. The equivalence check
    must catch it."""

    def _phase_matched(self, idx, full_means, positions):
        return full_means


class MessyFleet:
    """Seeded losses and actuals with everything that makes the bookkeeping hard."""

    def __init__(self, n: int, steps: int, seed: int):
        self.n, self.steps = n, steps
        self.rng = np.random.default_rng(seed)
        self.scale = self.rng.lognormal(0.0, 0.7, n)
        self.level = 10.0 * self.scale + 5.0
        self.multiplier = np.ones(n)
        self.shape = 1.0 + 0.4 * np.sin(2 * np.pi * np.arange(steps) / steps)

    def observation(self, tick: int, has_model: np.ndarray) -> TickObservation:
        n, steps, rng = self.n, self.steps, self.rng
        self.multiplier[rng.random(n) < 0.02] = rng.choice([1.3, 2.0, 3.0])
        self.multiplier[rng.random(n) < 0.02] = 1.0
        errors = rng.standard_t(5, size=(n, steps)) * self.shape * self.scale[:, None]
        actuals = self.level[:, None] + errors
        losses = np.abs(errors) * self.multiplier[:, None]
        gaps = rng.random((n, steps)) < 0.03
        missing_hours = rng.random(n) < 0.08          # a batch without its first hours
        gaps[missing_hours, : max(1, steps // 4)] = True
        sparse = rng.random(n) < 0.03                 # too few values: below the window's coverage
        gaps[sparse, : steps // 2 + 1] = True
        gaps[rng.random(n) < 0.03] = True             # nothing arrived
        actuals[gaps] = np.nan
        losses[gaps] = np.nan
        broken = rng.random(n) < 0.02                 # actuals that the quality checks flag
        actuals[broken] = np.where(np.isfinite(actuals[broken]), 0.0, np.nan)
        losses[~has_model] = np.nan
        abnormal = rng.random(n) < 0.02 if tick % 3 == 0 else None
        return TickObservation(
            tick=tick, actuals=actuals, losses=losses, scaled_losses=losses, has_model=has_model.copy(),
            ticks_since_fit=np.full(n, tick, dtype=np.int64), observed=np.isfinite(actuals).sum(axis=1),
            abnormal=abnormal)


def run_side_by_side(optimised: MLMAPolicy, reference: MLMAPolicy, *, n: int, steps: int, season: int,
                     ticks: int, seed: int) -> dict[str, int]:
    """Drive both policies through the same fleet; assert equal decisions each tick; count what happened."""
    for policy in (optimised, reference):
        policy.reset(n, season, steps)
    fleet = MessyFleet(n, steps, seed)
    rng = np.random.default_rng(seed + 1)
    has_model = rng.random(n) > 0.05
    for policy in (optimised, reference):
        policy.on_new_model(np.flatnonzero(has_model), -1)
    seen = dict(tested=0, partial_tested=0, degraded=0, retrained=0, warming=0, escalations=0)
    for tick in range(ticks):
        obs = fleet.observation(tick, has_model)
        fast = optimised.decide(obs)
        slow = reference.decide(obs)
        where = f"tick {tick}"
        np.testing.assert_allclose(fast.p_value, slow.p_value, rtol=0, atol=1e-9, err_msg=where)
        np.testing.assert_allclose(fast.effect, slow.effect, rtol=1e-9, atol=0, err_msg=where)
        np.testing.assert_array_equal(fast.verdict, slow.verdict, err_msg=where)
        np.testing.assert_array_equal(fast.retrain, slow.retrain, err_msg=where)
        assert fast.escalations == slow.escalations, where
        np.testing.assert_array_equal(optimised.window_len, reference.window_len, err_msg=where)
        np.testing.assert_array_equal(optimised.ref_len, reference.ref_len, err_msg=where)
        np.testing.assert_allclose(optimised.cusum.statistic, reference.cusum.statistic, rtol=1e-9, atol=1e-12,
                                   err_msg=where)

        tested = np.isfinite(fast.p_value)
        partial = tested & np.isnan(obs.losses).any(axis=1)
        seen["tested"] += int(tested.sum())
        seen["partial_tested"] += int(partial.sum())
        seen["degraded"] += int((fast.verdict == Verdict.DEGRADED).sum())
        seen["warming"] += int((fast.verdict == Verdict.WARMING_UP).sum())
        seen["escalations"] += len(fast.escalations)

        # The agent's side: re-trained streams mostly get a new version, some challengers lose; a few
        # streams are restarted for other reasons, and cold streams get their first model.
        chosen = np.flatnonzero(fast.retrain)
        seen["retrained"] += len(chosen)
        lost = chosen[rng.random(len(chosen)) < 0.3]
        promoted = np.setdiff1d(chosen, lost)
        restarted = np.union1d(promoted, np.flatnonzero(rng.random(n) < 0.01))
        cold = np.flatnonzero(~has_model & (rng.random(n) < 0.2))
        has_model[cold] = True
        for policy in (optimised, reference):
            policy.on_challenger_lost(lost, tick)
            policy.on_new_model(np.union1d(restarted, cold), tick)
            fleet.multiplier[restarted] = 1.0
    return seen


CASES = [
    pytest.param(dict(), 24, 24, 400, id="hourly-daily-ticks"),
    pytest.param(dict(window_ticks=1), 24, 24, 300, id="newest-tick-only"),
    pytest.param(dict(loss="squared", budget=5, delta=0.1, alpha=0.1), 24, 24, 300, id="squared-budget"),
    pytest.param(dict(reference_ticks=7, warmup_ticks=4, probation_ticks=3), 24, 168, 300, id="short-ref"),
    pytest.param(dict(fdr="bonferroni"), 7, 7, 300, id="daily-weekly-ticks"),
    pytest.param(dict(), 24, 24, 15, id="too-few-to-moderate"),
    # The CUSUM reuses the newest tick's reference block means from the fast test; the straightforward
    # policy computes them afresh.
    pytest.param(dict(cusum_threshold=2.0), 24, 24, 300, id="cusum"),
]


@pytest.mark.parametrize(("params", "steps", "season", "n"), CASES)
def test_optimised_decide_matches_the_straightforward_one(params, steps, season, n):
    seen = run_side_by_side(MLMAPolicy(**params), StraightforwardPolicy(**params), n=n, steps=steps,
                            season=season, ticks=40, seed=7 + n + steps)
    # The comparison covered what it is meant to cover.
    assert seen["tested"] > 10 * n
    assert seen["partial_tested"] > 0
    assert seen["warming"] > 0
    assert seen["escalations"] > 0
    if n >= 100:
        assert seen["degraded"] > 0 and seen["retrained"] > 0


def test_the_check_catches_a_reference_that_ignores_missing_hours():
    with pytest.raises(AssertionError):
        run_side_by_side(IgnoresMissingHours(), StraightforwardPolicy(), n=300, steps=24, season=24,
                         ticks=30, seed=11)


def test_kept_block_sums_match_the_reference_and_window():
    policy = MLMAPolicy()
    run_side_by_side(policy, StraightforwardPolicy(), n=200, steps=24, season=24, ticks=30, seed=5)
    stored = policy.ref.astype(np.float64)
    np.testing.assert_allclose(policy.ref_sum, np.nansum(stored, axis=2), rtol=1e-12)
    np.testing.assert_array_equal(policy.ref_count, np.isfinite(stored).sum(axis=2))
    assert (policy.ref_count.sum(axis=1) > 0).any()
    window = policy.window.astype(np.float64)
    np.testing.assert_allclose(policy.window_sum, np.nansum(window, axis=2), rtol=1e-12)
    np.testing.assert_array_equal(policy.window_count, np.isfinite(window).sum(axis=2))
    assert (policy.window_count > 0).any()


def test_usable_means_follow_the_coverage_rule():
    sums = np.array([[24.0, 17.0, 18.0, 0.0]])
    counts = np.array([[24.0, 17.0, 18.0, 0.0]])
    means = _usable_means(sums, counts, 24)
    # 0.75 x 24 = 18 values needed; a block with none has no mean.
    np.testing.assert_array_equal(np.isnan(means), [[False, True, False, True]])
    np.testing.assert_allclose(means[0, [0, 2]], [1.0, 1.0])
