"""The relative loss (``MLMAPolicy(loss="relative")``, issue 13): a level rise the model forecast does not
trigger re-trainings on count data, where the absolute error of a perfect forecast grows with the volume;
a change the model did not forecast still does. Also the loss's parts: the level and its floor, challengers
judged on a common denominator, the spec and project settings."""

from __future__ import annotations

import numpy as np
import pytest

from mlma.mlma_policy import MLMAPolicy
from mlma.monitor.losses import absolute_loss, forecast_level, relative_loss
from mlma.policy import TickObservation, Verdict, make_policy

STEPS = 24
N_STREAMS = 200
N_TICKS = 220


def tolerance(rate: float, n: int) -> float:
    """Three binomial standard errors of a rate measured on ``n`` stream-ticks (at least one event's worth)."""
    rate = max(rate, 1.0 / n)
    return 3.0 * np.sqrt(rate * (1 - rate) / n)


def count_fleet(seed: int, *, uplift=None, drop_at=None, drop=1.0, known=True):
    """Hourly negative-binomial counts (mean 3-30 an hour with a daily shape, variance 1.5 x the mean), one
    tick a day, and a perfect forecast (the true mean). ``uplift``: ``(n_streams, n_ticks)`` multipliers of
    the mean (campaigns), in the forecast too when ``known``. ``drop``: from tick ``drop_at`` on the mean is
    multiplied by it and the forecast does not know."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(3.0, 30.0, N_STREAMS)[:, None, None]
    shape = 1.0 + 0.6 * np.sin(2 * np.pi * np.arange(STEPS) / STEPS)
    mean = np.broadcast_to(base * shape[None, None, :], (N_STREAMS, N_TICKS, STEPS)).copy()
    forecast = mean.copy()
    if uplift is not None:
        mean *= uplift[:, :, None]
        if known:
            forecast = mean.copy()
    if drop_at is not None:
        mean[:, drop_at:] *= drop
    # Negative binomial with variance 1.5 x the mean: overdispersed counts.
    p = 1.0 / 1.5
    actuals = rng.negative_binomial(mean * p / (1 - p), p).astype(np.float64)
    return actuals, forecast


def replay(policy: MLMAPolicy, actuals: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """Run the policy over the ticks without re-training (the reference keeps rolling); the ``(n_streams,
    n_ticks)`` trigger flags (False while warming up)."""
    n, ticks, _ = actuals.shape
    policy.reset(n, STEPS, STEPS)
    triggered = np.zeros((n, ticks), dtype=bool)
    for k in range(ticks):
        y, f = actuals[:, k], forecast[:, k]
        errors = y - f
        decision = policy.decide(TickObservation(
            k, actuals=y, losses=np.abs(errors), scaled_losses=np.abs(errors), has_model=np.ones(n, bool),
            ticks_since_fit=np.full(n, k), observed=np.full(n, STEPS), errors=errors, forecasts=f))
        triggered[:, k] = decision.verdict == Verdict.DEGRADED
    return triggered


def campaigns(seed: int) -> np.ndarray:
    """Each stream's campaigns: 4 days at +40 % every 25 days, at a phase of its own."""
    rng = np.random.default_rng(seed)
    phase = rng.integers(0, 25, N_STREAMS)
    day = np.arange(N_TICKS)
    on = ((day[None, :] - phase[:, None]) % 25 < 4) & (day[None, :] >= 30)
    return np.where(on, 1.4, 1.0)


# A per-test level (no multiplicity control) makes the trigger rate a plain binomial rate.
SETTINGS = dict(alpha=0.05, fdr="none", cooldown_ticks=0, max_age=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_forecast_campaign_does_not_raise_the_trigger_rate_with_the_relative_loss(seed):
    """200 streams x 220 days of overdispersed counts, campaigns lifting demand by 40 % that the forecast
    knows. With the relative loss, campaign stream-ticks trigger no more often than the same fleet without
    campaigns (within three binomial standard errors); with the absolute loss they do (the mechanism:
    the noise of counts grows with their volume, so a perfect forecast's absolute error rises ~18 %)."""
    uplift = campaigns(seed)
    on = uplift > 1.0
    calm_y, calm_f = count_fleet(seed)
    camp_y, camp_f = count_fleet(seed, uplift=uplift)
    rates = {}
    for loss in ("relative", "absolute"):
        calm = replay(MLMAPolicy(loss=loss, **SETTINGS), calm_y, calm_f)[:, 30:]
        with_campaigns = replay(MLMAPolicy(loss=loss, **SETTINGS), camp_y, camp_f)
        rates[loss] = (calm.mean(), with_campaigns[on].mean(), calm.size, int(on.sum()))
    no_change, campaign, n_calm, n_on = rates["relative"]
    assert no_change <= 0.05 + tolerance(0.05, n_calm)
    assert campaign <= no_change + tolerance(no_change, n_on) + tolerance(no_change, n_calm), rates
    no_change_abs, campaign_abs, _, _ = rates["absolute"]
    assert campaign_abs > 2 * no_change_abs and campaign_abs > no_change_abs + 5 * tolerance(no_change_abs, n_on), \
        rates


@pytest.mark.parametrize("drop", [0.6, 0.8])
def test_an_unforecast_level_drop_is_detected_with_the_relative_loss(drop):
    """Demand falls by 40 % or 20 % at day 60 and the forecast keeps its old level: with the default
    policy's settings (BH at 0.01) and the relative loss, streams trigger within a week as often as with the
    absolute loss (the forecast's level, the denominator, does not move): 94 % and 20 % of them here (a 20 %
    drop of counts this small is near the tests' power at q = 0.01), while before the drop almost none do."""
    actuals, forecast = count_fleet(5, drop_at=60, drop=drop)
    found = {}
    for loss in ("relative", "absolute"):
        triggered = replay(MLMAPolicy(loss=loss, max_age=0), actuals, forecast)
        found[loss] = triggered[:, 60:67].any(axis=1).mean()
        assert triggered[:, 20:60].mean() < 0.005
    assert found["relative"] > (0.9 if drop == 0.6 else 0.1), found
    assert found["relative"] >= found["absolute"] - tolerance(found["absolute"], N_STREAMS), found


def test_an_unforecast_campaign_still_triggers_with_the_relative_loss():
    """The same campaigns, not in the forecast: the relative loss sees them (the forecast's level, the
    denominator, stays where it was while the error grows)."""
    uplift = campaigns(3)
    actuals, forecast = count_fleet(3, uplift=uplift, known=False)
    triggered = replay(MLMAPolicy(loss="relative", **SETTINGS), actuals, forecast)
    assert triggered[uplift > 1].mean() > 0.5


def test_forecast_level_floor_keeps_near_zero_forecasts_of_intermittent_streams_finite():
    """A tick forecast at zero on a stream that usually sells 0.2 an hour: the floor (a tenth of the usual
    level) bounds its relative loss; without a usual level and with a zero forecast, no loss (NaN)."""
    y = np.array([[0.0, 1.0, 0.0, 0.0]])
    np.testing.assert_allclose(relative_loss(y, np.zeros((1, 4)), floor=0.02), [[0.0, 50.0, 0.0, 0.0]])
    assert np.isnan(relative_loss(y, np.zeros((1, 4)))).all()
    np.testing.assert_allclose(forecast_level(np.array([[-2.0, 2.0]])), [2.0])
    # Where the forecast is above the floor, the floor changes nothing.
    np.testing.assert_allclose(relative_loss(y, np.full((1, 4), 0.5), floor=0.02), absolute_loss(y, 0.5) / 0.5)


def test_relative_loss_policy_uses_its_floor_from_the_usual_level():
    policy = MLMAPolicy(loss="relative")
    policy.reset(2, STEPS, STEPS)
    policy.typical_level[:] = [5.0, np.nan]
    errors = np.ones((2, STEPS))
    obs = TickObservation(0, actuals=errors.copy(), losses=errors.copy(), scaled_losses=errors.copy(),
                          has_model=np.ones(2, bool), ticks_since_fit=np.zeros(2), observed=np.full(2, STEPS),
                          errors=errors.copy(), forecasts=np.zeros((2, STEPS)))
    losses, signed = policy._monitored_losses(obs)
    np.testing.assert_allclose(losses[0], 2.0)  # 1 / (0.1 x 5)
    # No usual level yet: the floor comes from the tick's own actuals (mean 1), not 0 (which left a stream
    # forecast at zero without any loss, so without a clean tick to learn its usual level from).
    np.testing.assert_allclose(losses[1], 10.0)
    obs.actuals = np.zeros((2, STEPS))
    losses, signed = policy._monitored_losses(obs)
    assert np.isnan(losses[1]).all() and np.isnan(signed[1]).all()
    obs.actuals = errors.copy()
    # Without forecasts the policy takes them from actuals - errors.
    obs.forecasts = None
    np.testing.assert_allclose(policy._monitored_losses(obs)[0][0], 2.0)
    obs.errors = None
    with pytest.raises(ValueError, match="loss='relative' needs the served forecasts"):
        policy._monitored_losses(obs)


def test_challengers_are_judged_relative_to_the_serving_models_level():
    """Both sides divided by the serving forecast's level: the ranking is the absolute loss's within a tick,
    and a challenger that merely forecasts higher does not gain by it."""
    policy = MLMAPolicy(loss="relative")
    served = np.array([10.0, 10.0, 10.0])
    actuals = np.array([12.0, 8.0, 10.0])
    champion = policy.challenger_loss(actuals - served, served)
    high = policy.challenger_loss(actuals - 2 * served, served)
    np.testing.assert_allclose(champion, np.abs(actuals - served) / 10.0)
    assert high.mean() > champion.mean()
    with pytest.raises(ValueError, match="serving model's forecasts"):
        policy.challenger_loss(actuals - served)
    # Absolute and squared losses ignore the forecasts.
    np.testing.assert_allclose(MLMAPolicy().challenger_loss(np.array([-2.0]), served[:1], 0), [2.0])


def test_relative_loss_from_a_spec_and_a_clear_error_for_an_unknown_loss():
    policy = make_policy("mlma:loss=relative")
    assert policy.loss == "relative" and policy.name == "mlma:loss=relative"
    with pytest.raises(ValueError, match="loss must be one of 'absolute', 'squared', 'relative', got 'mape'"):
        MLMAPolicy(loss="mape")


@pytest.mark.parametrize("spec", ["mlma:loss=relative", "mlma:loss=squared", "mlma"])
def test_the_agent_reports_each_streams_loss_in_the_units_of_its_reference(spec):
    """The tick report's stream loss and reference loss (the dashboard's loss chart and loss ratio) are
    both in the policy's loss: their ratio is near 1 on simulated data. Before, the stream loss was always
    the absolute error, hundreds of times the squared reference or a multiple of the relative one. The
    served forecasts reach the policy (a relative loss from them is finite) and challengers are judged."""
    from test_backtest import ridge_agent_reports

    _, _, _, reports = ridge_agent_reports(make_policy(spec, alpha=0.2))
    ratios = np.concatenate([r.stream_loss / r.reference_loss for r in reports[1:]])
    ratios = ratios[np.isfinite(ratios)]
    assert len(ratios) > 100 and 0.7 < np.median(ratios) < 1.5, np.median(ratios)
    assert any(r.checks for r in reports)


def test_the_project_file_sets_the_loss_and_rejects_an_unknown_one(tmp_path):
    from mlma.project import ConfigError, load_config

    (tmp_path / "mlma.toml").write_text('[monitor]\nloss = "relative"\n')
    assert load_config(tmp_path).build_policy().loss == "relative"
    (tmp_path / "mlma.toml").write_text('[agent]\npolicy = "mlma:loss=squared"\n[monitor]\nloss = "relative"\n')
    assert load_config(tmp_path).build_policy().loss == "squared"  # the spec's own setting wins
    (tmp_path / "mlma.toml").write_text('[monitor]\nloss = "mape"\n')
    with pytest.raises(ConfigError, match=r"\[monitor\] loss must be absolute, squared, relative, got 'mape'"):
        load_config(tmp_path)
