"""The fleet prior of the drivers' effects (ridge's ``driver_pooling``, on by default).

A per-stream model whose window never saw a campaign cannot estimate its lift; the agent pools the lift the
fleet's other models estimated (:meth:`mlma.agent.Agent._pool_driver_effects`) and passes it to the next fits
(``ForecastContext.driver_prior``), where ridge's factor is shrunk toward it rather than toward no effect. These
tests check that a zero prior is exactly no prior, that the never-seen streams' campaign forecasts improve
(statistically, over many streams), that the prior survives the agent's saved state, and that a live replay
with it equals the backtest.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlma.agent import Agent
from mlma.backtest import BacktestConfig, run_backtest
from mlma.fleet import FleetData
from mlma.models import Drivers, ForecastContext, RidgeForecaster
from mlma.models.multiplier import DriverMultiplier
from mlma.policy import make_policy
from mlma.training import ModelService

LIFT = 1.4
FIRST = 28
CAMPAIGN = Drivers(future=("campaign",))


def fleet_panel(n_streams: int = 40, days: int = 42, seed: int = 11) -> tuple[pd.DataFrame, np.ndarray]:
    """Hourly Poisson demand of ``n_streams`` zones of different levels. The even streams ran campaigns on
    days 10-12 and 20-22 (inside the first 28-day training window), the odd ones none; every stream runs one
    on days 36-38. Returns the panel (with the 0/1 ``campaign`` column) and its true mean."""
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2025-03-03", periods=24 * days, freq="h")
    hour = ds.hour.to_numpy()
    day = np.arange(ds.size) // 24
    profile = 1.0 + 2.0 * np.exp(-0.5 * ((hour - 18) / 2.5) ** 2)
    frames, means = [], []
    for s in range(n_streams):
        on = (day >= 36) & (day <= 38)
        if s % 2 == 0:
            on |= ((day >= 10) & (day <= 12)) | ((day >= 20) & (day <= 22))
        mu = 4.0 * (1 + s % 5) * profile * np.where(on, LIFT, 1.0)
        frames.append(pd.DataFrame({"unique_id": f"z{s:02d}", "ds": ds, "y": rng.poisson(mu).astype(float),
                                    "campaign": on.astype(float)}))
        means.append(pd.DataFrame({"unique_id": f"z{s:02d}", "ds": ds, "mu": mu}))
    return pd.concat(frames, ignore_index=True), pd.concat(means, ignore_index=True)


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


def test_a_live_replay_with_the_fleet_prior_issues_the_backtests_forecasts(tmp_path):
    """Live, each tick runs in a fresh service whose prior comes back with the agent's saved state; the
    campaign plan of the next day is ingested ahead (``mlma ingest --future``). The issued forecasts and the
    re-trainings equal the backtest's, and the prior is in force (the never-seen streams' forecasts of the
    last campaign differ from a run without pooling)."""
    import re

    from mlma.live import LiveAgent
    from mlma.project import init_project, load_config
    from mlma.store import Store

    panel, _ = fleet_panel(n_streams=10)
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
