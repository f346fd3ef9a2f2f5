"""The CUSUM trigger (``MLMAPolicy(cusum_threshold=...)``, :class:`mlma.monitor.cusum.CUSUM`).

Statistically, in the decision loop of ``test_policy_calibration`` (AR(1) t(4) forecast errors, 24 losses a
tick, a daily pattern in their scale):

- under no change, 1,000 streams x 300 ticks with nothing ever re-trained (no reset after an alarm but the
  statistic's own restart, so a feedback through the reference would show), the CUSUM's alarms per tested
  stream-tick stay under a bound and do not rise beyond noise from the second hundred ticks to the third;
- in the agent's loop (challengers judged, lost ones re-based), 200 x 300, its re-trainings plus the age
  backstop's steady 1 / 365 stay within the no-change target of 0.005 per stream-tick;
- a sustained rise of the loss by half in a tenth of 2,000 streams is found by the CUSUM (threshold 8) within
  30 ticks in at least 90 % of them, by accumulation rather than at once (at most 20 % within 5 ticks).

Tolerances are three binomial standard errors of the measured counts, inflated for the dependence of one
stream's consecutive alarms (``binomial_tolerance``).
"""

from __future__ import annotations

import numpy as np
import pytest

from mlma.mlma_policy import MLMAPolicy
from mlma.monitor.cusum import CUSUM
from test_policy_calibration import STEPS, binomial_tolerance, drive, first_alarm, first_retrains, simulate_errors
from test_policy_calibration import tick_observation as _observation

#: The threshold the statistical tests hold the trigger to (the opt-in value docs/monitoring.md suggests).
THRESHOLD = 24.0


def _cusum_alarms(reasons: list) -> np.ndarray:
    """(ticks, streams): the re-trainings whose reason names the CUSUM (alone or beside a test)."""
    return np.array([[("CUSUM:" in str(r)) for r in row] for row in reasons])


def test_the_statistic_accumulates_excess_over_the_allowance_and_restarts_after_an_alarm():
    cusum = CUSUM(threshold=1.0, drift=0.1)
    cusum.reset(2)
    alarms = []
    for x in [0.6, 0.6, 0.6, 0.6]:
        alarm, level, run = cusum.update(np.arange(2), np.array([x, 0.05]))
        alarms.append(alarm.tolist())
    # 0.5 a tick above the allowance: over 1.0 at the third tick; then it restarts and climbs again.
    assert alarms == [[False, False], [False, False], [True, False], [False, False]]
    assert cusum.statistic.tolist() == pytest.approx([0.5, 0.0]) and cusum.ticks.tolist() == [1, 0]
    # A missing value leaves the statistic where it was.
    cusum.update(np.array([0]), np.array([np.nan]))
    assert cusum.statistic[0] == pytest.approx(0.5) and cusum.ticks[0] == 1


@pytest.mark.parametrize("threshold", [-1, True, float("nan"), "8"])
def test_bad_thresholds_are_refused_with_the_parameter_named(threshold):
    with pytest.raises(ValueError, match="cusum_threshold"):
        MLMAPolicy(cusum_threshold=threshold)
    with pytest.raises(ValueError, match="CUSUM threshold"):
        CUSUM(threshold=0)


def test_off_by_default_and_in_the_params():
    assert MLMAPolicy().get_params()["cusum_threshold"] is None
    assert MLMAPolicy(cusum_threshold=0).get_params()["cusum_threshold"] is None
    params = MLMAPolicy(cusum_threshold=24, cusum_at_once=True).get_params()
    assert params["cusum_threshold"] == 24.0 and params["cusum_at_once"] is True



def test_an_alarm_is_explained_checked_as_a_challenger_and_its_state_survives_a_restart():
    """A stream whose loss doubles alarms (the tests made inert by a tiny alpha) with a reason that names
    the CUSUM; the statistic is saved and restored with the policy (a live restart
    resumes), and a state saved before the CUSUM existed still loads, with the statistic at 0."""
    rng = np.random.default_rng(3)
    n, ticks = 40, 40
    errors = simulate_errors(n, ticks, 0.5, 4, rng)
    errors[0, 20:] *= 2.0
    policy = MLMAPolicy(cusum_threshold=4.0, alpha=1e-12)
    policy.reset(n, STEPS, STEPS)
    policy.on_new_model(np.arange(n), -1)
    assert first_alarm(policy, errors, range(22), "CUSUM") is None
    saved = {k: v.copy() for k, v in policy.state_arrays().items()}
    assert saved["cusum_statistic"][0] > 0
    resumed = MLMAPolicy(cusum_threshold=4.0)
    resumed.reset(n + 2, STEPS, STEPS)
    resumed.load_state_arrays(saved)
    np.testing.assert_array_equal(resumed.cusum.statistic[:n], policy.cusum.statistic)
    np.testing.assert_array_equal(resumed.cusum_baseline[:n], policy.cusum_baseline)
    old = {k: v for k, v in saved.items() if not k.startswith("cusum_")}
    older = MLMAPolicy(cusum_threshold=4.0)
    older.reset(n, STEPS, STEPS)
    older.load_state_arrays(old)
    assert not older.cusum.statistic.any()
    decision = first_alarm(policy, errors, range(22, ticks), "CUSUM")
    assert decision is not None and not decision.serve_at_once[0]  # checked as a challenger by default
    reason = decision.reason[0]
    assert reason.startswith("CUSUM: loss ") and "threshold 4" in reason, reason
    # A new model restarts the statistic.
    policy.on_new_model(np.array([0]), ticks)
    assert policy.cusum.statistic[0] == 0


def test_at_once_serves_the_cusum_retrainings_without_a_challenger():
    rng = np.random.default_rng(3)
    n = 10
    errors = simulate_errors(n, 40, 0.5, 4, rng)
    errors[:, 20:] *= 3.0
    served = []
    policy = MLMAPolicy(cusum_threshold=2.0, cusum_at_once=True, alpha=1e-12)
    policy.reset(n, STEPS, STEPS)
    policy.on_new_model(np.arange(n), -1)
    for t in range(40):
        d = policy.decide(_observation(t, errors[:, t], np.full(n, -1)))
        cusum_only = np.array(["CUSUM" in str(r) for r in d.reason]) & d.retrain
        served.append(cusum_only.any() and bool(d.serve_at_once[cusum_only].all()))
        assert all("served at once" in r for r in d.reason[cusum_only])
    assert any(served)


@pytest.mark.slow
@pytest.mark.parametrize("phi, t_df, bound", [(0.0, None, 0.0005), (0.5, 4, 0.0015), (0.95, 4, 0.006)])
def test_false_alarm_rate_under_no_change_over_300_ticks_without_resets(phi, t_df, bound):
    """Nothing changes and nothing is re-trained: the reference rolls on whatever the alarms, the statistic
    restarts only after its own alarm. The alarm rate per tested stream-tick over 300 ticks stays under
    ``bound`` (measured 0.0003 / 0.0009 / 0.0043 on these seeds at THRESHOLD; an AR(1) with phi 0.95 at
    hourly steps carries its errors from one tick into the next, which a CUSUM of tick means accumulates),
    and does not rise from ticks 100-199 to ticks 200-299 beyond noise. (The first hundred ticks alarm
    less: the statistic starts at 0 and needs tens of ticks to reach its steady spread, 0.0002 against
    0.0013 at phi 0.5; a feedback through the reference would show as a rise after that.)"""
    rng = np.random.default_rng(0)
    n, ticks = 1000, 300
    errors = simulate_errors(n, ticks, phi, t_df, rng)
    reasons: list = []
    p, _, _, _ = drive(MLMAPolicy(cusum_threshold=THRESHOLD), errors, rng,
                       simulate_errors(n, ticks, phi, t_df, rng), retrain=False, reasons=reasons)
    alarms = _cusum_alarms(reasons)
    tested = np.isfinite(p)
    rate = alarms.sum() / tested.sum()
    assert rate <= bound + binomial_tolerance(bound, tested.sum()), rate
    assert alarms.sum() > 0  # the trigger is live
    middle = alarms[100:200].sum() / tested[100:200].sum()
    last = alarms[200:].sum() / tested[200:].sum()
    assert last <= middle + 2 * binomial_tolerance(max(rate, 1e-4), tested[200:].sum()), (middle, last)


@pytest.mark.slow
def test_with_the_cusum_the_no_change_target_still_holds():
    """The issue's no-change target in the agent's loop (200 streams, AR(1) t(4), challengers from the same
    process judged on the next tick, lost ones re-based), run for 300 ticks: re-trainings at most 0.005 per
    stream-tick, and the triggered ones (tests and CUSUM) plus the backstop's steady 1 / 365 too (measured
    0.0011 + 0.0027); not rising from ticks 100-199 to 200-299 beyond noise (measured 0.0015, 0.0014; the
    first hundred, 0.0005, are lower because every statistic starts at 0)."""
    rng = np.random.default_rng(3)
    n, ticks = 200, 300
    errors = simulate_errors(n, ticks, 0.5, 4, rng)
    policy = MLMAPolicy(cusum_threshold=THRESHOLD)
    at_once: list = []
    _, _, retrains, _ = drive(policy, errors, rng, at_once=at_once)
    triggered = retrains & ~np.array(at_once)
    rate = triggered.mean()
    assert retrains.mean() <= 0.005, retrains.mean()
    assert rate + 1 / policy.max_age <= 0.005, rate
    assert triggered.sum() > 0  # the CUSUM is live here (the tests alone trigger 0.0001)
    middle, last = triggered[100:200].mean(), triggered[200:].mean()
    assert last <= middle + 2 * binomial_tolerance(max(rate, 1e-3), n * 100), (middle, last)


@pytest.mark.slow
def test_a_sustained_rise_by_half_is_found_in_time_by_its_size():
    """The loss of a tenth of 2,000 streams rises by half at tick 30 and stays; the tests are made inert (a
    tiny alpha), so what is found is the CUSUM's. At threshold 8 the statistic gains about 0.45 a tick from
    0 (18 ticks), sooner where it already stood above 0 when the rise began (measured: median 13 ticks, 99 %
    within 30). Asserted: at least 90 % of the affected streams alarm within 30 ticks, at most 20 % within
    5 (it is the accumulation that finds a rise of this size, not one tick: under no change 1.5 % of the
    streams alarm within 5 ticks), and the unaffected streams alarm at the no-change rate of this threshold
    (0.0036 per stream-tick measured)."""
    rng = np.random.default_rng(8)
    n, pre, post = 2000, 30, 30
    errors = simulate_errors(n, pre + post, 0.5, 4, rng)
    hit = np.arange(n) < n // 10
    errors[hit, pre:] *= 1.5
    policy = MLMAPolicy(cusum_threshold=8.0, alpha=1e-12, max_age=0)
    first = first_retrains(policy, errors, pre)
    n_hit = int(hit.sum())
    found = first[hit]
    within_30 = (found > 0).mean()
    within_5 = ((found > 0) & (found <= 5)).mean()
    # 200 affected streams, one first alarm each: independent, so plain binomial standard errors.
    assert within_30 >= 0.9 - binomial_tolerance(0.9, n_hit, clusters=1.0), within_30
    assert within_5 <= 0.2 + binomial_tolerance(0.2, n_hit, clusters=1.0), within_5
    n_other = int((~hit).sum()) * post
    false = ((first > 0) & ~hit).sum() / n_other
    assert false <= 0.006 + binomial_tolerance(0.006, n_other), false


@pytest.mark.parametrize("value", ["no", 1, None])
def test_cusum_at_once_must_be_a_boolean(value):
    with pytest.raises(ValueError, match="cusum_at_once must be True or False"):
        MLMAPolicy(cusum_threshold=24, cusum_at_once=value)


@pytest.mark.parametrize("key, value", [("cusum_threshold", "nan"), ("cusum_threshold", "inf"),
                                        ("cusum_threshold", "-1.0"), ("skill_margin", "nan"),
                                        ("page_hinkley", "nan"), ("page_hinkley", "-200.0"),
                                        ("page_hinkley", "inf"), ("delta", "inf"), ("delta", "nan")])
def test_the_triggers_settings_in_mlma_toml_are_checked_with_the_file_and_key_named(tmp_path, key, value):
    from mlma.project import CONFIG_NAME, ConfigError, init_project, load_config

    root = tmp_path / "p"
    init_project(root)
    toml = (root / CONFIG_NAME).read_text()
    toml = toml.replace("[monitor]", f"[monitor]\n{key} = {value}", 1)
    toml = "\n".join(line for line in toml.splitlines()
                     if not (line.startswith(f"{key} =") and not line.startswith(f"{key} = {value}")))
    (root / CONFIG_NAME).write_text(toml)
    with pytest.raises(ConfigError, match=rf"mlma.toml: \[monitor\] {key} must be a finite number"):
        load_config(root)
