"""The fleet prior of the drivers' effects (ridge's ``driver_pooling``, on by default).

A per-stream model whose window never saw a campaign cannot estimate its lift; the agent pools the lift the
fleet's other models estimated (:meth:`mlma.agent.Agent._pool_driver_effects`) and passes it to the next fits
(``ForecastContext.driver_prior``), where ridge's factor is shrunk toward it rather than toward no effect. These
tests check that a zero prior is exactly no prior, that the never-seen streams' campaign forecasts improve
(statistically, over many streams), that the prior survives the agent's saved state, and that a live replay
with it equals the backtest. A served model forecasts a driver its window never saw vary with the fleet's
*current* prior, not the one of its fit (``BaseForecaster.for_context``): tested on one model, and
statistically on models fitted under an early, low prior.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from campaign_panels import campaign_panel
from mlma.agent import Agent
from mlma.backtest import BacktestConfig, run_backtest
from mlma.fleet import FleetData
from mlma.models import Drivers, ForecastContext, RidgeForecaster
from mlma.models.multiplier import DriverMultiplier
from mlma.policy import make_policy
from mlma.training import ModelKey, ModelService

LIFT = 1.4
FIRST = 28
CAMPAIGN = Drivers(future=("campaign",))


def fleet_panel(n_streams: int = 40, days: int = 42, seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hourly Poisson demand of ``n_streams`` zones of different levels. The even streams ran campaigns on
    days 10-12 and 20-22 (inside the first 28-day training window), the odd ones none; every stream runs one
    on days 36-38. Returns the panel (with the 0/1 ``campaign`` column) and its true mean."""
    def campaigns(s: int, day: np.ndarray):
        on = (day >= 36) & (day <= 38)
        if s % 2 == 0:
            on |= ((day >= 10) & (day <= 12)) | ((day >= 20) & (day <= 22))
        return (np.where(on, LIFT, 1.0),), on.astype(float)

    return campaign_panel(campaigns, n_streams, days, seed)


def test_a_zero_prior_is_bit_for_bit_no_prior():
    rng = np.random.default_rng(0)
    base = rng.uniform(5, 50, 2000)
    D = np.column_stack([(rng.random(2000) < 0.1).astype(float), np.full(2000, 0.7), rng.normal(size=2000)])
    y = rng.poisson(base * np.exp(0.3 * D[:, 0] + 0.1 * D[:, 2])).astype(float)
    plain = DriverMultiplier().fit(D, base, y)
    zero = DriverMultiplier(prior=np.zeros(3)).fit(D, base, y)
    np.testing.assert_array_equal(plain.beta_, zero.beta_)
    future = np.column_stack([np.ones(5), np.linspace(0, 2, 5), rng.normal(size=5)])
    np.testing.assert_array_equal(plain.factor(future), zero.factor(future))

    panel, _ = fleet_panel(n_streams=2)
    for uid in ("z00", "z01"):   # a window with campaigns and one without
        rows = panel[panel.unique_id == uid]
        ds, y, X = rows.ds.to_numpy(), rows.y.to_numpy(), rows[["campaign"]].to_numpy()
        n = 24 * 36
        forecasts = []
        for ctx, pooling in ((ForecastContext("h", 24, 24, drivers=CAMPAIGN), True),
                             (ForecastContext("h", 24, 24, drivers=CAMPAIGN, driver_prior=(0.0,)), True),
                             (ForecastContext("h", 24, 24, drivers=CAMPAIGN, driver_prior=(0.3,)), False)):
            model = RidgeForecaster(ctx, driver_pooling=pooling).fit(ds[:n], y[:n], X[:n])
            forecasts.append(model.predict(ds[:n], y[:n], ds[n:n + 24], X[:n], X[n:n + 24]))
        np.testing.assert_array_equal(forecasts[0], forecasts[1])
        np.testing.assert_array_equal(forecasts[0], forecasts[2])


def test_a_driver_the_window_never_saw_vary_takes_the_prior():
    panel, _ = fleet_panel(n_streams=2)
    rows = panel[panel.unique_id == "z01"]    # no campaign before day 36
    ds, y, X = rows.ds.to_numpy(), rows.y.to_numpy(), rows[["campaign"]].to_numpy()
    n = 24 * 36
    ctx = ForecastContext("h", 24, 24, drivers=CAMPAIGN, driver_prior=(math.log(LIFT),))
    model = RidgeForecaster(ctx).fit(ds[:n], y[:n], X[:n])
    on = model.predict(ds[:n], y[:n], ds[n:n + 24], X[:n], np.ones((24, 1)))
    off = model.predict(ds[:n], y[:n], ds[n:n + 24], X[:n], np.zeros((24, 1)))
    np.testing.assert_allclose(on / off, LIFT, rtol=1e-9)
    beta, information = model.driver_effects()
    assert information.tolist() == [0.0] and beta[0] == pytest.approx(math.log(LIFT))
    assert RidgeForecaster(ctx, driver_pooling=False).fit(ds[:n], y[:n], X[:n]).driver_effects() is None


def test_bad_priors_and_pooling_options_are_named():
    with pytest.raises(ValueError, match="driver_pooling must be True or False"):
        RidgeForecaster(ForecastContext("h", 24, 24, drivers=CAMPAIGN), driver_pooling="no")
    with pytest.raises(ValueError, match=r"one finite number \(or NaN\) per future driver \['campaign'\]"):
        ForecastContext("h", 24, 24, drivers=CAMPAIGN, driver_prior=(0.1, 0.2))
    with pytest.raises(ValueError, match="finite numbers or NaN"):
        DriverMultiplier(prior=[np.inf])
    with pytest.raises(ValueError, match="prior has 2 value"):
        DriverMultiplier(prior=[0.1, 0.2]).fit(np.zeros((5, 1)), np.ones(5), np.ones(5))


def campaign_errors(result, means: pd.DataFrame, policy: str) -> pd.Series:
    """Per stream: the mean absolute error of the forecast against the true mean on the last campaign's days."""
    f = result.forecasts[result.forecasts.policy == policy].merge(means, on=["unique_id", "ds"])
    day = (f.ds - f.ds.min().normalize()) // pd.Timedelta("1D") + FIRST
    f = f[(day >= 36) & (day <= 38)]
    return (f.y_hat - f.mu).abs().groupby(f.unique_id).mean()


@pytest.fixture(scope="module")
def pooled_runs():
    panel, means = fleet_panel()
    runs = {}
    for spec in ("ridge", "ridge:driver_pooling=false"):
        runs[spec] = run_backtest(panel, BacktestConfig(policies=["never", "always"], model=spec, executor="inline",
                                                        initial_ticks=FIRST, drivers=CAMPAIGN, sample_streams=400))
    return runs, means


@pytest.mark.parametrize("policy", ["never", "always"])
def test_streams_that_never_saw_a_campaign_forecast_it_with_the_fleets_lift(pooled_runs, policy):
    """Half the streams saw two campaigns in their window, half none; the never-seen streams' error against the true
    mean during a later campaign falls with pooling, by more than three standard errors of the mean per-stream
    difference. "never" keeps the start-up's models (refitted once the first fits gave a prior), "always"
    re-trains each tick with the prior of the tick before."""
    runs, means = pooled_runs
    pooled = campaign_errors(runs["ridge"], means, policy)
    alone = campaign_errors(runs["ridge:driver_pooling=false"], means, policy)
    never_seen = [u for u in pooled.index if int(u[1:]) % 2 == 1]
    seen = [u for u in pooled.index if int(u[1:]) % 2 == 0]
    # The backtest keeps the forecasts of streams spread over levels: most of the 40 (not the smallest).
    assert len(never_seen) >= 15 and len(seen) >= 15
    gain = (alone - pooled)[never_seen]
    assert gain.mean() > 3 * gain.std(ddof=1) / math.sqrt(len(gain)), gain.describe()
    # Without the prior the never-seen streams miss most of the 40 % lift; with it, most of it is forecast.
    assert pooled[never_seen].mean() < 0.5 * alone[never_seen].mean()
    # Streams that saw the campaigns are no worse for being shrunk toward the fleet's lift (under "never" their
    # start-up models are the same: fitted before the fleet had a prior, and not refitted since they learnt).
    change = (alone - pooled)[seen]
    assert change.mean() >= -3 * change.std(ddof=1) / math.sqrt(len(change)), change.describe()


def test_a_fleet_without_drivers_gives_no_prior_and_the_pooled_fleet_one_near_the_lift(pooled_runs):
    panel, _ = fleet_panel(n_streams=10)
    bounds = pd.date_range("2025-03-03", periods=43, freq="D")
    fleet = FleetData(panel, "h", bounds, drivers=CAMPAIGN)
    ctx = ForecastContext("h", 24, 24, drivers=CAMPAIGN)

    def agent(service):
        scale = service.fleet.seasonal_naive_scale(24, before_tick=FIRST)
        return Agent(make_policy("always"), service, season_length=24, scale=scale)

    first = agent(ModelService(fleet, "ridge", ctx, train_window_ticks=28))
    first.start(FIRST)
    for k in range(FIRST, FIRST + 3):
        first.tick(k)
    prior = first.service.ctx.driver_prior
    # Five streams saw 6 campaign days of 100-500 orders an hour at the peak: the median is within 0.1 of log 1.4.
    assert prior is not None and abs(prior[0] - math.log(LIFT)) < 0.1
    assert np.isfinite(first.driver_beta[0::2]).all() and np.isnan(first.driver_beta[1::2]).all()
    # The state carries it: a fresh agent on a fresh service (a live restart) passes the same prior.
    second = agent(ModelService(fleet, "ridge", ctx, train_window_ticks=28))
    second.load_state_arrays(first.state_arrays())
    assert second.service.ctx.driver_prior == prior
    np.testing.assert_array_equal(second.driver_beta, first.driver_beta)
    # Restarted with another driver declared before the campaign: the estimates follow the campaign's name,
    # not its column, and the new driver starts without any.
    reordered = Drivers(future=("temperature", "campaign"))
    panel_t = panel.assign(temperature=10.0)
    fleet_t = FleetData(panel_t, "h", bounds, drivers=reordered)
    third = agent(ModelService(fleet_t, "ridge", ForecastContext("h", 24, 24, drivers=reordered),
                               train_window_ticks=28))
    third.load_state_arrays(first.state_arrays())
    np.testing.assert_array_equal(third.driver_beta[:, 1], first.driver_beta[:, 0])
    assert np.isnan(third.driver_beta[:, 0]).all()
    assert np.isnan(third.service.ctx.driver_prior[0]) and third.service.ctx.driver_prior[1] == prior[0]

    plain = FleetData(panel.drop(columns="campaign"), "h", bounds)
    service = ModelService(plain, "ridge", ForecastContext("h", 24, 24), train_window_ticks=28)
    no_drivers = agent(service)
    no_drivers.start(FIRST)
    no_drivers.tick(FIRST)
    assert service.ctx.driver_prior is None and no_drivers.driver_beta.shape == (10, 0)


@pytest.mark.parametrize("announce", ["flag", "planned"])
def test_a_live_replay_with_the_fleet_prior_issues_the_backtests_forecasts(tmp_path, announce):
    """Live, each tick runs in a fresh service whose prior comes back with the agent's saved state; the
    campaign plan of the next day is ingested ahead (``mlma ingest --future``). The issued forecasts and the
    re-trainings equal the backtest's, and the prior is in force (the never-seen streams' forecasts of the
    last campaign differ from a run without pooling). "planned": the campaigns announced with a planned
    intensity, 0.3 in the first window and 0.45 for the last one (beyond the range the windows saw, where the
    fleet's effect per unit acts; tests/test_campaign_intensity.py)."""
    import re

    from mlma.live import LiveAgent
    from mlma.project import init_project, load_config
    from mlma.store import Store

    panel, _ = fleet_panel(n_streams=10)
    if announce == "planned":
        days = (panel["ds"] - panel["ds"].min().normalize()) // pd.Timedelta("1D")
        panel["campaign"] *= np.where(days >= 36, 0.45, 0.3)
    root = tmp_path / "p"
    init_project(root, model="ridge")
    text = (root / "mlma.toml").read_text().replace('executor = "process"', 'executor = "inline"')
    text = text.replace("initial_ticks = 0", f"initial_ticks = {FIRST}")
    for key, value in (("drivers", '["campaign"]'), ("policy", '"always"')):
        text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert found == 1
    (root / "mlma.toml").write_text(text)
    config = load_config(root)
    day = ((panel["ds"] - panel["ds"].min().normalize()) // pd.Timedelta("1D")).to_numpy()
    issued = []
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        store.ingest_frame(panel[day < FIRST], "history")
        for d in range(FIRST, int(day.max()) + 1):
            plan = root / f"plan-{d}.csv"
            panel.loc[day == d, ["unique_id", "ds", "campaign"]].to_csv(plan, index=False)
            store.ingest_future(plan)
            tick = live.step().tick
            issued.append(store.forecasts(tick)[["unique_id", "ds", "y_hat"]])
            store.ingest_frame(panel[day == d], f"day-{d}")
        verdicts = store.verdicts()
    issued = pd.concat(issued, ignore_index=True)
    backtests = {spec: run_backtest(panel, BacktestConfig(policies=["always"], model=spec, executor="inline",
                                                          initial_ticks=FIRST, drivers=CAMPAIGN, sample_streams=400))
                 for spec in ("ridge", "ridge:driver_pooling=false")}
    result = backtests["ridge"]
    both = result.forecasts.merge(issued, on=["unique_id", "ds"], suffixes=("", "_live"))
    assert len(both) == len(result.forecasts) > 24 * 10 * 5
    np.testing.assert_allclose(both["y_hat_live"].to_numpy(), both["y_hat"].to_numpy(), rtol=1e-12)
    live_retrains = set(map(tuple, verdicts.loc[verdicts["retrain"], ["unique_id", "tick"]].to_numpy().tolist()))
    log = result.retrain_log[result.retrain_log.tick < int(day.max())]   # the last day's actuals come after the
    assert live_retrains == set(map(tuple, log[["unique_id", "tick"]].to_numpy().tolist()))  # last live tick
    alone = backtests["ridge:driver_pooling=false"].forecasts
    start = pd.Timestamp("2025-03-03")
    late = both[(both.ds >= start + pd.Timedelta("36D")) & (both.ds < start + pd.Timedelta("37D"))
                & (both.unique_id == "z01")]   # the last campaign's first day, in a stream that saw none before
    other = alone.merge(late, on=["unique_id", "ds"], suffixes=("_alone", ""))
    assert len(other) == 24 and (other["y_hat"] > 1.2 * other["y_hat_alone"]).all()


# -- the fleet's current prior at forecast time ------------------------------------------------------------------


def test_a_served_model_forecasts_a_driver_it_never_saw_vary_with_the_current_prior():
    """A model fitted under an early, low prior; then the fleet's estimate moves. The forecast of a stream whose
    window never saw the campaign follows the current prior, the stream that saw campaigns keeps its own
    estimate bit for bit, and the fitted models (the registry's artifacts) are not changed."""
    import pickle

    panel, _ = fleet_panel(n_streams=2)
    bounds = pd.date_range("2025-03-03", periods=43, freq="D")
    fleet = FleetData(panel, "h", bounds, drivers=CAMPAIGN)
    service = ModelService(fleet, "ridge", ForecastContext("h", 24, 24, drivers=CAMPAIGN), train_window_ticks=28)
    early, late = math.log(1.1), math.log(LIFT)
    service.set_driver_prior([early])
    seen, never = service.fit([ModelKey(0, 35), ModelKey(1, 35)])   # day 36 is a campaign for both
    artifacts = [pickle.dumps(fm.model) for fm in (seen, never)]
    keys = [seen.key, never.key]
    under_early = service.predict_many(keys, 36)
    baseline = service.predict_at_baseline(keys, 36, ("campaign",))
    np.testing.assert_allclose(under_early[1] / baseline[1], 1.1, rtol=1e-9)

    service.set_driver_prior([late])
    under_late = service.predict_many(keys, 36)
    np.testing.assert_allclose(under_late[1] / service.predict_at_baseline(keys, 36, ("campaign",))[1], LIFT,
                               rtol=1e-9)
    np.testing.assert_array_equal(under_late[0], under_early[0])       # its own estimate, whatever the fleet's
    assert [pickle.dumps(fm.model) for fm in (seen, never)] == artifacts
    assert never.model.multiplier_.beta_[0] == pytest.approx(early)   # the fit keeps the prior of its fit
    # A model loaded from its artifact forecasts the same under the same prior (what a live tick does).
    loaded = ModelService(fleet, "ridge", service.ctx, train_window_ticks=28)
    for fm, blob in zip((seen, never), artifacts):
        loaded._models[fm.key] = dataclasses.replace(fm, model=pickle.loads(blob))
    np.testing.assert_array_equal(loaded.predict_many(keys, 36), under_late)
    # No estimate for the driver yet (NaN): the prior of the fit stands.
    service.set_driver_prior([np.nan])
    np.testing.assert_array_equal(service.predict_many(keys, 36), under_early)


def test_for_context_keeps_what_it_must_and_names_bad_contexts():
    panel, _ = fleet_panel(n_streams=2)
    rows = panel[panel.unique_id == "z01"]
    ds, y, X = rows.ds.to_numpy(), rows.y.to_numpy(), rows[["campaign"]].to_numpy()
    n = 24 * 36
    ctx = ForecastContext("h", 24, 24, drivers=CAMPAIGN)
    model = RidgeForecaster(ctx).fit(ds[:n], y[:n], X[:n])
    assert model.for_context(ctx) is model                                        # no prior: the model itself
    assert model.for_context(dataclasses.replace(ctx, driver_prior=(0.0,))) is model  # a zero prior is none
    moved = model.for_context(dataclasses.replace(ctx, driver_prior=(0.3,)))
    assert moved is not model and moved.multiplier_.beta_.tolist() == [0.3] and model.multiplier_.beta_[0] == 0
    alone = RidgeForecaster(ctx, driver_pooling=False).fit(ds[:n], y[:n], X[:n])
    assert alone.for_context(dataclasses.replace(ctx, driver_prior=(0.3,))) is alone   # pooling off: as fitted
    with pytest.raises(ValueError, match="ctx must be a ForecastContext"):
        model.for_context("h")
    other = ForecastContext("h", 24, 24, drivers=Drivers(future=("price",)), driver_prior=(0.3,))
    with pytest.raises(ValueError, match=r"prior is of the future drivers \['price'\]"):
        model.for_context(other)
    with pytest.raises(ValueError, match="prior has 2 value"):
        model.multiplier_.with_prior([0.1, 0.2])
    # A factor pickled before varied_ was kept reads it from its clipping bounds.
    old = model.multiplier_.with_prior([0.0])
    old.__dict__.pop("varied_", None)
    assert old.varied_ is None and old.with_prior([0.3]).beta_.tolist() == [0.3]


def moving_prior_panel(n_streams: int = 40, days: int = 40, seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hourly Poisson demand. The even streams ran a weak campaign (x 1.1) on days 10-12 and a strong one
    (x ``LIFT``) on days 29-31; the odd streams none until days 36-38, a strong one. (A fit on the 28 days
    ending with day k trains on days k - 19 to k: the first eight days are its features' look-back.)"""
    def campaigns(s: int, day: np.ndarray):
        weak = (s % 2 == 0) & (day >= 10) & (day <= 12)
        strong = ((s % 2 == 0) & (day >= 29) & (day <= 31)) | ((s % 2 == 1) & (day >= 36) & (day <= 38))
        return (np.where(weak, 1.1, 1.0), np.where(strong, LIFT, 1.0)), (weak | strong).astype(float)

    return campaign_panel(campaigns, n_streams, days, seed)


def test_models_fitted_under_an_early_prior_forecast_a_new_campaign_with_the_fleets_current_lift():
    """The start-up's prior rests on a weak campaign (x 1.1); the even streams re-train after a strong one
    (x 1.4), which moves the fleet's prior; the odd streams, never re-trained and whose windows never saw a
    campaign, then meet a strong campaign. Their forecasts follow the current prior: their error against the
    true mean on those days falls, against the same models forecasting with the prior of their fit, by more
    than three standard errors of the mean per-stream difference."""
    from mlma.agent import Controls

    panel, means = moving_prior_panel()
    n = panel.unique_id.nunique()
    bounds = pd.date_range("2025-03-03", periods=41, freq="D")
    fleet = FleetData(panel, "h", bounds, drivers=CAMPAIGN)
    service = ModelService(fleet, "ridge", ForecastContext("h", 24, 24, drivers=CAMPAIGN), train_window_ticks=28)
    agent = Agent(make_policy("never"), service, season_length=24,
                  scale=fleet.seasonal_naive_scale(24, before_tick=FIRST))
    agent.start(FIRST)
    start_prior = service.ctx.driver_prior[0]
    even = np.arange(n) % 2 == 0
    for k in range(FIRST, 36):
        # The even streams re-train once their training rows hold the strong campaign but no longer the weak one.
        controls = Controls(force_retrain=even, force_direct=even) if k == 33 else None
        agent.tick(k, controls)
    current = service.ctx.driver_prior[0]
    assert abs(start_prior - math.log(1.1)) < 0.1 and abs(current - math.log(LIFT)) < 0.1
    odd = np.flatnonzero(~even)
    assert (agent.champion[odd] == FIRST - 1).all()          # the start-up's models serve the odd streams
    keys = [ModelKey(int(s), FIRST - 1) for s in odd]
    truth = means.set_index(["unique_id", "ds"])["mu"]
    errors = {}
    for name, prior in (("current", current), ("of the fit", start_prior)):
        service.set_driver_prior([prior])
        per_stream = []
        for s, key in zip(odd, keys):
            y_hat = np.concatenate([service.predict(key, t) for t in (36, 37, 38)])
            ds = np.concatenate([fleet.tick_timestamps(t) for t in (36, 37, 38)])
            mu = truth.loc[[(fleet.ids[s], t) for t in pd.DatetimeIndex(ds)]].to_numpy()
            per_stream.append(np.abs(y_hat - mu).mean())
        errors[name] = np.array(per_stream)
    gain = errors["of the fit"] - errors["current"]
    assert gain.mean() > 3 * gain.std(ddof=1) / math.sqrt(gain.size), (gain.mean(), gain.std(ddof=1))
    assert errors["current"].mean() < 0.6 * errors["of the fit"].mean()
