"""The explained scale (issue 13): under the default absolute loss, the MLMA policy divides a tick's errors by
the level change the serving model attributes to the declared event drivers (``Drivers(events=...)``), so a
campaign the model knows about does not trigger re-trainings; a change it did not forecast still does; a fleet
without events (or with events that never run) is monitored bit for bit as before."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlma.agent import Agent, AgentSettings
from mlma.backtest import BacktestConfig, run_backtest
from mlma.explained import ExplainedScale
from mlma.fleet import FleetData
from mlma.mlma_policy import MLMAPolicy
from mlma.models import Drivers, ForecastContext
from mlma.policy import TickObservation, Verdict
from mlma.training import ModelKey, ModelService

STEPS = 24
N_STREAMS = 200
N_TICKS = 220
# A per-test level (no multiplicity control) makes the trigger rate a plain binomial rate.
SETTINGS = dict(alpha=0.05, fdr="none", cooldown_ticks=0, max_age=0)


def tolerance(rate: float, n: int) -> float:
    """Three binomial standard errors of a rate measured on ``n`` stream-ticks (at least one event's worth)."""
    rate = max(rate, 1.0 / n)
    return 3.0 * np.sqrt(rate * (1 - rate) / n)


def campaigns(seed: int) -> np.ndarray:
    """Each stream's campaigns: 4 days at +40 % every 25 days, at a phase of its own, from day 30."""
    rng = np.random.default_rng(seed)
    phase = rng.integers(0, 25, N_STREAMS)
    day = np.arange(N_TICKS)
    on = ((day[None, :] - phase[:, None]) % 25 < 4) & (day[None, :] >= 30)
    return np.where(on, 1.4, 1.0)


def count_fleet(seed: int, uplift: np.ndarray | None = None, known: bool = True):
    """Hourly negative-binomial counts (mean 3-30 an hour with a daily shape, variance 1.5 x the mean), one
    tick a day. Returns the actuals, the served forecast (a perfect multiplicative model: the true mean, with
    the campaigns' lift when ``known``) and its counterfactual with no campaign (the mean without lift; NaN
    where no campaign is announced, as :meth:`ModelService.predict_at_baseline` gives it)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(3.0, 30.0, N_STREAMS)[:, None, None]
    shape = 1.0 + 0.6 * np.sin(2 * np.pi * np.arange(STEPS) / STEPS)
    calm = np.broadcast_to(base * shape[None, None, :], (N_STREAMS, N_TICKS, STEPS)).copy()
    mean = calm if uplift is None else calm * uplift[:, :, None]
    forecast = mean.copy() if known else calm.copy()
    counterfactual = np.full_like(calm, np.nan)
    if uplift is not None and known:
        announced = uplift > 1.0
        counterfactual[announced] = calm[announced]
    p = 1.0 / 1.5
    actuals = rng.negative_binomial(mean * p / (1 - p), p).astype(np.float64)
    return actuals, forecast, counterfactual


def replay(policy: MLMAPolicy, actuals, forecast, counterfactual=None, scale=None) -> np.ndarray:
    """The policy over the ticks without re-training (the reference keeps rolling), given the explained scale
    of ``counterfactual`` (None: no events declared); the ``(n_streams, n_ticks)`` trigger flags."""
    n, ticks, _ = actuals.shape
    policy.reset(n, STEPS, STEPS)
    scale = scale or ExplainedScale()
    triggered = np.zeros((n, ticks), dtype=bool)
    for k in range(ticks):
        y, f = actuals[:, k], forecast[:, k]
        errors = y - f
        explained = None if counterfactual is None else scale.of(f, counterfactual[:, k])
        decision = policy.decide(TickObservation(
            k, actuals=y, losses=np.abs(errors), scaled_losses=np.abs(errors), has_model=np.ones(n, bool),
            ticks_since_fit=np.full(n, k), observed=np.full(n, STEPS), errors=errors, forecasts=f,
            explained=explained))
        triggered[:, k] = decision.verdict == Verdict.DEGRADED
    return triggered


@pytest.mark.parametrize("seed", [0, 1])
def test_a_known_campaign_does_not_raise_the_trigger_rate_under_the_absolute_loss(seed):
    """200 streams x 220 days of overdispersed counts, campaigns lifting demand by 40 % that a perfect
    multiplicative model knows (1,000+ campaign stream-ticks). With the explained scale the default absolute
    loss triggers in campaign stream-ticks no more often than the same fleet without campaigns (within three
    binomial standard errors of each rate); without it, more than twice as often (a perfect forecast's absolute
    error grows with the volume), which shows that the test can tell."""
    uplift = campaigns(seed)
    on = uplift > 1.0
    calm_y, calm_f, _ = count_fleet(seed)
    camp_y, camp_f, camp_c = count_fleet(seed, uplift)
    calm = replay(MLMAPolicy(**SETTINGS), calm_y, calm_f)[:, 30:]
    explained = replay(MLMAPolicy(**SETTINGS), camp_y, camp_f, camp_c)[on]
    plain = replay(MLMAPolicy(**SETTINGS), camp_y, camp_f)[on]
    no_change, n_calm, n_on = calm.mean(), calm.size, int(on.sum())
    assert n_on > 1000
    assert no_change <= 0.05 + tolerance(0.05, n_calm)
    assert explained.mean() <= no_change + tolerance(no_change, n_on) + tolerance(no_change, n_calm), \
        (explained.mean(), no_change)
    assert plain.mean() > 2 * no_change and plain.mean() > no_change + 5 * tolerance(no_change, n_on), \
        (plain.mean(), no_change)


def test_an_unforecast_campaign_still_triggers():
    """The same campaigns, unknown to the model: nothing is announced, so no counterfactual, the scale is 1
    and the errors grow as before. With the model told of *other* events (every stream has one running on
    the other days, so the fleet computes a scale every tick) the unforecast campaign triggers as often."""
    uplift = campaigns(3)
    on = uplift > 1.0
    actuals, forecast, counterfactual = count_fleet(3, uplift, known=False)
    assert np.isnan(counterfactual).all()
    alone = replay(MLMAPolicy(**SETTINGS), actuals, forecast, counterfactual)
    assert alone[on].mean() > 0.5
    # A known event of +20 % on every other tick, perfectly forecast, beside the unknown campaigns.
    known = np.where(np.arange(N_TICKS)[None, :] % 2 == 0, 1.2, 1.0) * np.ones((N_STREAMS, 1))
    rng = np.random.default_rng(4)
    mean = forecast * known[:, :, None]
    p = 1.0 / 1.5
    actuals = rng.negative_binomial(mean * uplift[:, :, None] * p / (1 - p), p).astype(np.float64)
    counterfactual = np.where((known > 1)[:, :, None], forecast, np.nan)
    mixed = replay(MLMAPolicy(**SETTINGS), actuals, mean, counterfactual)
    assert mixed[on].mean() > 0.5
    assert mixed[on].mean() >= alone[on].mean() - tolerance(alone[on].mean(), int(on.sum())) * 2


def test_a_scale_of_one_leaves_losses_and_decisions_bit_identical():
    """The explained scale is exactly 1 where no event runs: the policy's decisions and every state array are
    the same bits as with no scale at all (a fleet without declared events), tick after tick."""
    uplift = campaigns(5)
    actuals, forecast, _ = count_fleet(5, uplift, known=False)
    n = N_STREAMS
    states = []
    for explained in (None, np.ones((n, STEPS))):
        policy = MLMAPolicy()
        policy.reset(n, STEPS, STEPS)
        decisions = []
        for k in range(80):
            y, f = actuals[:, k], forecast[:, k]
            errors = y - f
            d = policy.decide(TickObservation(
                k, actuals=y, losses=np.abs(errors), scaled_losses=np.abs(errors), has_model=np.ones(n, bool),
                ticks_since_fit=np.full(n, k), observed=np.full(n, STEPS), errors=errors, forecasts=f,
                explained=explained))
            decisions.append((d.retrain.copy(), d.verdict.copy(), d.p_value.copy(), d.loss.copy()))
        states.append((decisions, policy.state_arrays()))
    (first, state_a), (second, state_b) = states
    assert any(r.any() for r, *_ in first)  # the unforecast campaigns trigger: the runs have decisions to compare
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    for name in state_a:
        np.testing.assert_array_equal(state_a[name], state_b[name], err_msg=name)
    # The challengers' loss too.
    errors = np.array([1.5, -2.0, 0.25])
    assert (MLMAPolicy().challenger_loss(errors, explained=np.ones(3)) == MLMAPolicy().challenger_loss(errors)).all()


def test_the_scale_divides_the_absolute_and_squared_losses_and_the_challengers_alike():
    obs = TickObservation(0, actuals=np.full((1, 2), 10.0), losses=np.array([[2.6, 1.0]]),
                          scaled_losses=np.array([[2.6, 1.0]]), has_model=np.ones(1, bool),
                          ticks_since_fit=np.zeros(1), observed=np.full(1, 2), errors=np.array([[2.6, -1.0]]),
                          forecasts=np.full((1, 2), 10.0), explained=np.array([[1.3, 1.0]]))
    for loss, expected in (("absolute", [2.0, 1.0]), ("squared", [4.0, 1.0])):
        policy = MLMAPolicy(loss=loss)
        policy.reset(1, 2, 2)
        losses, signed = policy._monitored_losses(obs)
        np.testing.assert_allclose(losses, [expected])
        np.testing.assert_allclose(signed, [[2.0, -1.0]])
        np.testing.assert_allclose(policy.challenger_loss(obs.errors[0], explained=obs.explained[0]), expected)
    # The relative loss's level already moves with the forecast: it ignores the scale.
    policy = MLMAPolicy(loss="relative")
    policy.reset(1, 2, 2)
    with_scale, _ = policy._monitored_losses(obs)
    obs.explained = None
    np.testing.assert_array_equal(with_scale, policy._monitored_losses(obs)[0])


def test_the_scale_guards_against_unclear_ratios_and_validates_its_settings():
    scale = ExplainedScale()
    served = np.array([[2.0, -1.0, np.nan, 0.0]])
    counterfactual = np.array([[1.0, 1.0, 1.0, 0.0]])
    # A negative or missing forecast, or a zero one below the floor: no discount there.
    out = scale.of(served, counterfactual)
    assert out[0, 0] == pytest.approx(2.0) and (out[0, 1:] == 1.0).all()
    # The floor: a counterfactual near zero at one step cannot make the ratio explode.
    out = scale.of(np.array([[10.0, 20.0]]), np.array([[0.01, 19.99]]))
    assert out[0, 0] == pytest.approx(10.0)  # 10 / (0.1 x mean 10)
    assert ExplainedScale(power=0).of(np.array([[3.0]]), np.array([[1.0]]))[0, 0] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        scale.of(np.ones((1, 2)), np.ones((1, 3)))
    for bad in (-0.5, 1.5, True, "1"):
        with pytest.raises(ValueError, match="power"):
            ExplainedScale(power=bad)
    with pytest.raises(ValueError, match="floor"):
        ExplainedScale(floor=1.0)
    with pytest.raises(ValueError, match="power"):
        AgentSettings(explained_power=2.0)
    with pytest.raises(ValueError, match="event driver 'promo' must also be a future driver"):
        Drivers(future=("temperature",), events=("promo",))


# -- the agent: counterfactual forecasts and bit-identity without events ---------------------------------------
def promo_panel(n_streams: int = 6, days: int = 70, seed: int = 3, promo_from: int = 0) -> pd.DataFrame:
    """Hourly Poisson demand with a daily profile; promotion days (30 %, from day ``promo_from``) lift it 80 %."""
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2025-03-03", periods=24 * days, freq="h")
    hour = ds.hour.to_numpy()
    profile = 1.0 + 3.0 * np.exp(-0.5 * ((hour - 19) / 2.0) ** 2)
    frames = []
    for s in range(n_streams):
        promo_days = (rng.random(days) < 0.3) & (np.arange(days) >= promo_from)
        promo = np.repeat(promo_days, 24).astype(float)
        mu = 5.0 * (1 + s) * profile * (1 + 0.8 * promo)
        frames.append(pd.DataFrame({"unique_id": f"s{s}", "ds": ds, "y": rng.poisson(mu).astype(float),
                                    "promo": promo}))
    return pd.concat(frames, ignore_index=True)


def test_the_counterfactual_is_forecast_only_for_streams_with_an_event_ahead():
    panel = promo_panel(days=35)
    bounds = pd.date_range("2025-03-03", periods=36, freq="D")
    drivers = Drivers(future=("promo",), events=("promo",))
    fleet = FleetData(panel, "h", bounds, drivers=drivers)
    ctx = ForecastContext("h", 24, 24, drivers=drivers)
    service = ModelService(fleet, "ridge", ctx, train_window_ticks=28)
    keys = [ModelKey(s, 30) for s in range(fleet.n_streams)]
    service.fit(keys)
    served = service.predict_many(keys, 31)
    counterfactual = service.predict_at_baseline(keys, 31, ("promo",))
    promo_ahead = np.array([panel[(panel.unique_id == u) & (panel.ds >= bounds[31]) & (panel.ds < bounds[32])]
                            .promo.any() for u in fleet.ids])
    assert promo_ahead.any() and not promo_ahead.all()
    assert np.isnan(counterfactual[~promo_ahead]).all()
    assert np.isfinite(counterfactual[promo_ahead]).all()
    # The model learnt the 80 % lift: its forecast without the promotion is clearly lower.
    ratio = served[promo_ahead].sum(axis=1) / counterfactual[promo_ahead].sum(axis=1)
    assert (ratio > 1.4).all(), ratio
    with pytest.raises(ValueError, match="not future drivers"):
        service.predict_at_baseline(keys, 31, ("rain",))


def _backtest(panel, drivers, **settings):
    return run_backtest(panel, BacktestConfig(policies=["mlma", "never"], model="ridge", executor="inline",
                                              drivers=drivers, agent=AgentSettings(**settings)))


def _same(a, b):
    pd.testing.assert_frame_equal(a.forecasts, b.forecasts)
    pd.testing.assert_frame_equal(a.retrain_log, b.retrain_log)
    pd.testing.assert_frame_equal(a.per_tick, b.per_tick)
    timing = ("compute_seconds", "initial_compute_seconds")
    assert [{k: v for k, v in s.items() if k not in timing} for s in a.summary] == \
        [{k: v for k, v in s.items() if k not in timing} for s in b.summary]


def test_events_that_never_run_or_a_scale_switched_off_change_nothing(monkeypatch):
    """A backtest with the promotion declared an event, on data where no promotion ever runs, gives the same
    bits as without the declaration (the scale is 1 everywhere); so does ``explained_power=0`` on data with
    promotions; and without declared events no counterfactual is ever asked for."""
    quiet = promo_panel(days=45, promo_from=10 ** 6)
    plain = Drivers(future=("promo",))
    events = Drivers(future=("promo",), events=("promo",))
    base = _backtest(quiet, plain)
    _same(base, _backtest(quiet, events))
    busy = promo_panel(days=45)
    off = _backtest(busy, events, explained_power=0)

    def refuse(*args, **kwargs):
        raise AssertionError("a counterfactual was forecast without declared events")

    monkeypatch.setattr(ModelService, "predict_at_baseline", refuse)
    _same(_backtest(busy, plain), off)


def test_the_agent_passes_the_scale_of_its_issued_forecasts_and_keeps_it_in_its_state():
    panel = promo_panel(days=40)
    bounds = pd.date_range("2025-03-03", periods=41, freq="D")
    drivers = Drivers(future=("promo",), events=("promo",))
    fleet = FleetData(panel, "h", bounds, drivers=drivers)
    service = ModelService(fleet, "ridge", ForecastContext("h", 24, 24, drivers=drivers), train_window_ticks=28)
    seen = []

    class Recording(MLMAPolicy):
        def decide(self, obs):
            seen.append(obs.explained.copy())
            return super().decide(obs)

    agent = Agent(Recording(), service, season_length=24, scale=np.ones(fleet.n_streams))
    agent.start(29)
    for k in range(29, 39):
        agent.tick(k)
    promo = panel.pivot(index="ds", columns="unique_id", values="promo")[list(fleet.ids)].to_numpy()
    for i, k in enumerate(range(29, 39)):
        on = promo[24 * k:24 * (k + 1)].T > 0
        assert (seen[i][~on] == 1.0).all()
        assert (seen[i][on] > 1.3).all(), (k, seen[i][on].min())
    arrays = agent.state_arrays()
    np.testing.assert_array_equal(arrays["agent.explained"], agent.explained)
    restored = Agent(MLMAPolicy(), service, season_length=24, scale=np.ones(fleet.n_streams))
    restored.load_state_arrays(arrays)
    np.testing.assert_array_equal(restored.explained, agent.explained)
    # Restarted after the project stopped declaring the event: the saved scale is not applied.
    plain = Drivers(future=("promo",))
    plain_fleet = FleetData(panel, "h", bounds, drivers=plain)
    undeclared = Agent(MLMAPolicy(), ModelService(plain_fleet, "ridge", ForecastContext("h", 24, 24, drivers=plain),
                                                  train_window_ticks=28),
                       season_length=24, scale=np.ones(fleet.n_streams))
    undeclared.load_state_arrays(arrays)
    assert undeclared.explained is None


# -- live operation ---------------------------------------------------------------------------------------------
LIVE_FIRST = 28


def live_project(root, event_drivers: str):
    import re

    from mlma.project import init_project

    init_project(root, model="ridge")
    text = (root / "mlma.toml").read_text().replace('executor = "process"', 'executor = "inline"')
    text = text.replace("initial_ticks = 0", f"initial_ticks = {LIVE_FIRST}")
    for key, value in (("drivers", '["promo"]'), ("event_drivers", event_drivers)):
        text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert found == 1
    (root / "mlma.toml").write_text(text)
    return root


def run_live(root, panel: pd.DataFrame, plan) -> tuple[pd.DataFrame, dict]:
    """History, then day by day: the day's actuals and the next day's promotion plan (``plan(rows)`` gives
    the plan's values), a tick each. Returns the verdicts and the issued forecasts by tick."""
    from mlma.live import LiveAgent
    from mlma.project import load_config
    from mlma.store import Store

    config = load_config(root)
    day0 = panel["ds"].min().normalize()
    days = ((panel["ds"] - day0) // pd.Timedelta("1D")).to_numpy()
    issued = {}
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        store.ingest_frame(panel[days < LIVE_FIRST], "history")
        for day in range(LIVE_FIRST, int(days.max()) + 1):
            rows = panel.loc[days == day, ["unique_id", "ds", "promo"]]
            path = root / f"plan-{day}.csv"
            rows.assign(promo=plan(rows)).to_csv(path, index=False)
            store.ingest_future(path)
            tick = live.step().tick
            issued[tick + 1] = store.forecasts(tick).sort_values(["stream_id", "ds"])
            if day < int(days.max()):
                store.ingest_frame(panel[days == day], f"day-{day}")
        return store.verdicts(), issued


def test_live_operation_discounts_the_events_its_models_forecast(tmp_path):
    """Three live projects on the same promotion panel: the promotion a plain future driver, declared an
    event, and a third told every promotion plan is 0 (its forecasts are the counterfactual of the others':
    same history, same models). The event project's recorded loss of a promotion day is the mean of
    ``|y - forecast| / (forecast / counterfactual)``; on other days it is the plain project's, bit for bit."""
    panel = promo_panel(days=34)
    plain, plain_issued = run_live(live_project(tmp_path / "plain", "[]"), panel, lambda rows: rows["promo"])
    events, events_issued = run_live(live_project(tmp_path / "events", '["promo"]'), panel,
                                     lambda rows: rows["promo"])
    _, quiet_issued = run_live(live_project(tmp_path / "quiet", "[]"), panel, lambda rows: 0.0)
    actual = panel.set_index(["unique_id", "ds"])
    checked = {"promotion": 0, "other": 0}
    for tick in range(LIVE_FIRST, LIVE_FIRST + 5):
        f, cf = events_issued[tick], quiet_issued[tick]
        np.testing.assert_array_equal(f["y_hat"].to_numpy(), plain_issued[tick]["y_hat"].to_numpy())
        for uid in sorted(panel["unique_id"].unique()):
            mine = f[f["unique_id"] == uid]
            rows = actual.loc[uid].loc[mine["ds"].to_numpy()]
            served = mine["y_hat"].to_numpy()
            counterfactual = cf[cf["unique_id"] == uid]["y_hat"].to_numpy()
            loss_events = events[(events["tick"] == tick) & (events["unique_id"] == uid)]["loss"].item()
            loss_plain = plain[(plain["tick"] == tick) & (plain["unique_id"] == uid)]["loss"].item()
            errors = np.abs(rows["y"].to_numpy() - served)
            if rows["promo"].any():
                assert served.sum() > 1.3 * counterfactual.sum()  # the models learnt the lift
                expected = np.mean(errors / (served / counterfactual))
                assert loss_events == pytest.approx(expected, rel=1e-9)
                assert loss_events < loss_plain / 1.3
                checked["promotion"] += 1
            else:
                assert loss_events == loss_plain
                checked["other"] += 1
    assert checked["promotion"] >= 5 and checked["other"] >= 5, checked


def test_the_project_declares_event_drivers_and_names_a_bad_one(tmp_path):
    from mlma.project import ConfigError, load_config

    root = live_project(tmp_path / "p", '["promo"]')
    assert load_config(root).drivers() == Drivers(future=("promo",), events=("promo",))
    assert load_config(root).drivers().events == ("promo",)
    text = (root / "mlma.toml").read_text()
    (root / "mlma.toml").write_text(text.replace('event_drivers = ["promo"]', 'event_drivers = ["campaign"]'))
    with pytest.raises(ConfigError, match=r"\[data\] drivers: event driver 'campaign' must also be a future"):
        load_config(root)
