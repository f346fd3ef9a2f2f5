"""Replaying history through the agent's tick under several re-training policies, and measuring the result.

:func:`run_backtest` cuts a long frame into ticks and runs one :class:`~mlma.agent.Agent` per policy over
them in lockstep on a simulated clock: the same ``Agent.tick`` that live operation calls. All agents share
one :class:`~mlma.training.ModelService`, so a fit that two policies both need is done once and charged to
both. Every policy is scored on exactly the same (stream, timestamp) points: those where every policy had a
forecast and an actual arrived.

Metrics per policy: MAE, RMSE, MASE (each stream's MAE divided by its in-sample seasonal-naive error as a live
agent knows it: the history before scoring starts, or for a stream launched later its pairs known at the first
tick with a season's worth of them, :meth:`~mlma.fleet.FleetData.scale_known_at`; then averaged over streams),
the number of re-trainings and their compute seconds, escalations; per stream and per tick too. Escalations
are resolved by the rule live operation applies (an :class:`~mlma.escalations.EscalationBook` over each
tick's ``TickReport.cleared``), so the escalation log says when each was resolved. :func:`write_outputs` writes ``summary.json``, ``per_stream.csv``, ``per_tick.csv``,
``retrains.csv`` and ``report.html``.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from mlma.agent import Agent, AgentSettings, TickReport
from mlma.calendar import TickClock, default_train_window, tick_alias
from mlma.data import (DataError, Frequency, make_tick_grid, read_frame, read_timestamp, stream_id_text,
                       validate)
from mlma.escalations import EscalationBook, queue_items
from mlma.fleet import FleetData
from mlma.models import Drivers, ForecastContext, fitting_train_window, make_forecaster, spec_name
from mlma.policy import Policy, Verdict, make_policy
from mlma.project import MAX_FIT_TIMEOUT_SECONDS
from mlma.training import ModelService, executor_usable, make_executor, terminate_executor

log = logging.getLogger(__name__)


@dataclass
class BacktestConfig:
    """Settings of one backtest; ``None`` means "infer from the data".

    Parameters
    ----------
    policies
        Policy specs, e.g. ``["never", "periodic:7", "always"]``.
    model
        Model spec for every stream (see :func:`mlma.models.make_forecaster`).
    freq
        Pandas offset alias of the data's frequency.
    tick
        Tick length (``"1D"``, ``"7D"``, ``"12MS"``); default: the frequency's natural tick.
    horizon
        Steps per tick; an alternative to ``tick`` (``tick = horizon x freq``).
    train_window_ticks
        Training window in ticks (refused when too short for the model); default by tick length (28 ticks of a
        day or less, 52 of a week or less, all history otherwise; :func:`mlma.calendar.default_train_window`),
        lengthened to what the model needs (:func:`mlma.models.fitting_train_window`).
    initial_ticks
        Ticks of history before the first scored tick; default: the training window, at most half the data.
    executor
        ``"inline"``, ``"process[:N]"`` or ``"dask://host:port"`` for the fits.
    fit_timeout
        Seconds a tick's re-trainings (one call per policy and tick) may take before the fits not back count as
        failed, as ``[agent] fit_timeout_seconds`` does live: a model whose fit hangs then costs that stream its
        re-trainings, not the whole run. Needs a pool or a cluster (``executor``): a fit in this process cannot
        be stopped. ``None`` (default): no limit. A fit that failed so is not stored in ``fit_cache``: a later
        run tries it again. A pool made from a spec is replaced after a timeout (its worker may still be busy);
        an executor object passed in is the caller's and is not: a hung fit keeps one of its workers.
    frontier
        Also run the schedules of the frontier (``never``, staggered ``periodic:K`` for a range of K,
        ``always``; see :mod:`mlma.evaluation`) and give every policy its gap to the frontier at its own
        re-training count. The schedules' fits are a subset of ``always``'s, so they cost forecasts only.
        ``False`` (default) runs just ``policies`` (the gap is then computed only when they hold ``always``
        and another schedule, against that coarser frontier). A list of whole numbers sets the periods K.
    bootstrap
        Bootstrap replicates for the gap's 95 % interval (resampling streams).
    fit_cache
        A folder of fitted models kept across runs (:class:`~mlma.training.FitCache`): a backtest of the same
        data with other policies or settings fits only what no earlier run fitted, with identical results.
    drivers
        Exogenous driver columns of the data fed to the models (:class:`~mlma.models.Drivers`); default none.
        A backtest knows every realised value, so a future driver's forecast is its actual value (a perfect
        weather forecast): an upper bound of what a real forecast of it is worth. See docs/models.md.
    group_by
        The stream attribute (of :func:`run_backtest`'s ``attributes``) that groups escalations into the items
        of the engineer's queue, as a server started with ``--group-by`` does (default ``city``); the labour is
        also counted in those items (:func:`mlma.escalations.queue_items`). ``None``: by kind and tick only.
    """

    policies: list[str] = field(default_factory=lambda: ["never", "periodic:7", "always"])
    model: str = "lightgbm"
    freq: str | None = None
    tick: str | None = None
    horizon: int | None = None
    train_window_ticks: int | None = None
    initial_ticks: int | None = None
    executor: object = None
    fit_timeout: float | None = None
    sample_streams: int = 6
    title: str = "mlma backtest"
    policy_params: dict = field(default_factory=dict)
    agent: AgentSettings = field(default_factory=AgentSettings)
    frontier: bool | list[int] = False
    bootstrap: int = 1000
    fit_cache: str | Path | None = None
    drivers: Drivers | None = None
    group_by: str | None = "city"

    def __post_init__(self) -> None:
        if not self.policies:
            raise ValueError("at least one policy is needed")
        if not isinstance(self.frontier, bool):
            periods = list(self.frontier)
            if not periods or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1
                                  for k in periods):
                raise ValueError(f"frontier periods must be whole numbers >= 1, got {self.frontier!r}")
        from mlma.evaluation import MAX_BOOTSTRAP

        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, (int, np.integer)) \
                or not 0 <= self.bootstrap <= MAX_BOOTSTRAP:
            raise ValueError(f"bootstrap must be a whole number of replicates from 0 to {MAX_BOOTSTRAP:,}, got "
                             f"{self.bootstrap!r}")
        for spec in self.policies:
            make_policy(spec)  # fails early, naming the bad policy, before any data is read
        if self.horizon is not None and self.tick is not None:
            raise ValueError("give either tick or horizon, not both")
        if self.fit_timeout is not None:
            if isinstance(self.fit_timeout, bool) or not isinstance(self.fit_timeout, (int, float, np.number)) \
                    or not 0 < self.fit_timeout <= MAX_FIT_TIMEOUT_SECONDS:  # NaN too
                raise ValueError(f"fit_timeout must be a number of seconds above 0 and at most "
                                 f"{MAX_FIT_TIMEOUT_SECONDS:,} (30 days), or None for no limit, got "
                                 f"{self.fit_timeout!r}")
            if self.executor is None or self.executor == "inline":
                raise ValueError("fit_timeout needs an executor that runs fits elsewhere ('process[:N]' or "
                                 "'dask://host:port'): an inline fit runs in this process and cannot be stopped")
        for name in ("horizon", "train_window_ticks", "initial_ticks"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


@dataclass
class BacktestResult:
    """Everything a backtest measured; see :func:`write_outputs` for the files."""

    summary: list[dict]
    per_stream: pd.DataFrame
    per_tick: pd.DataFrame
    forecasts: pd.DataFrame
    retrain_log: pd.DataFrame
    escalation_log: pd.DataFrame
    events: pd.DataFrame | None
    config: dict
    validation: pd.DataFrame | None = None
    frontier: list[dict] = field(default_factory=list)
    clairvoyant: list[dict] = field(default_factory=list)

    def summary_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.summary)


class _Accumulator:
    """Sums of errors per stream and per tick for one policy."""

    def __init__(self, n_streams: int) -> None:
        self.abs = np.zeros(n_streams)
        self.sq = np.zeros(n_streams)
        self.n = np.zeros(n_streams, dtype=np.int64)
        self.retrains = np.zeros(n_streams, dtype=np.int64)
        self.retrain_seconds = np.zeros(n_streams)
        self.initial_fits = np.zeros(n_streams, dtype=np.int64)
        self.initial_seconds = np.zeros(n_streams)
        self.escalations = 0
        self.escalations_resolved = 0
        #: Models whose forecast failed (see TickReport.forecast_failed and shadow_failed).
        self.forecast_failures = 0
        #: Fits that failed (TickReport.failed): the stream kept its model, or had none.
        self.fit_failures = 0
        #: Of the failed fits, those of streams that had a model (a re-training, a retry of a fall-back): the
        #: stream's model served on and was scored.
        self.failed_refits = 0
        #: The policy's escalations and when each was resolved (as live operation resolves them).
        self.book = EscalationBook()
        self.stream_days = 0.0
        self.promotions = 0
        self.rejected = 0
        self.ticks: list[dict] = []
        #: Stream -> its row of the re-training log while its challenger is in shadow.
        self.open_challenges: dict[int, dict] = {}


#: Streams a driver is missing from, named in the warning (the rest counted).
SHOWN_STREAMS = 5


def _streams_without_drivers(fleet: FleetData, service: ModelService) -> dict[str, dict]:
    """The drivers the model uses that some streams hold no value of, with how many streams and the first few
    (:data:`SHOWN_STREAMS`): those streams are fitted and forecast without the driver, which a backtest should
    not leave unsaid (the column was empty for them: another city's weather feed, a join that missed). Event
    drivers are left out: one nobody gave is 0 by declaration (no event ran)."""
    if not service.wants_drivers:
        return {}
    names = [c for c in fleet.drivers.columns if c not in fleet.drivers.events]
    return {name: {"n_streams": int(len(streams)), "first": [str(fleet.ids[s]) for s in streams[:SHOWN_STREAMS]]}
            for name, streams in fleet.streams_without_values(names).items()}


def driver_gaps_message(name: str, gap: dict, n_streams: int) -> str:
    """The warning for a driver some streams hold no value of (an entry of :func:`_streams_without_drivers`).

    >>> driver_gaps_message("temperature", {"n_streams": 7, "first": ["a", "b"]}, 40)
    'the model uses driver temperature, but 7 of 40 streams hold no value of it (a, b and 5 more): they are \
fitted and forecast without it'
    """
    more = gap["n_streams"] - len(gap["first"])
    return (f"the model uses driver {name}, but {gap['n_streams']:,} of {n_streams:,} streams hold no value of it "
            f"({', '.join(gap['first'])}{f' and {more:,} more' if more > 0 else ''}): they are fitted and forecast "
            "without it")


def run_backtest(data, config: BacktestConfig | None = None, *, events: pd.DataFrame | None = None,
                 abnormal: pd.DataFrame | None = None, attributes: pd.DataFrame | None = None,
                 progress: bool = False, **read_options) -> BacktestResult:
    """Replay ``data`` tick by tick under each policy of ``config`` and measure the result.

    Parameters
    ----------
    data
        A long frame (pandas or polars) or a CSV/Parquet path; see :func:`mlma.data.read_frame`.
    config
        The backtest's settings.
    events
        Ground-truth events of simulated data (from :func:`mlma.simulate.read_events`), for the report and
        for detection precision and recall.
    abnormal
        Periods an engineer marked abnormal in advance or afterwards (``start, end`` and optionally
        ``unique_id``; none means every stream): kept out of training windows and of references, and never a
        reason to re-train.
    attributes
        One row per stream: its id column and descriptive columns (the simulator's ``streams`` table, a file
        for ``mlma attributes``); ``config.group_by`` names the one that groups the queue. Streams not in it
        have no group.
    progress
        Show a progress bar (rich).
    """
    config = config or BacktestConfig()
    if config.drivers is not None:
        config.drivers.check_columns(**{key: read_options[key] for key in ("id_col", "time_col", "target_col")
                                        if key in read_options})
    frame = read_frame(data, **read_options)  # first: a column missing from the data is named as the data's
    groups = _queue_groups(attributes, config.group_by, read_options.get("id_col", "unique_id"))
    source = str(data) if isinstance(data, (str, Path)) else None
    checked = validate(frame, freq=config.freq, source=source, on_bad_rows="drop")
    shifted = [f for f in checked.report.findings if f.code == "shifted-grid"]
    if shifted:  # each stream on its own grid passes validation, but the fleet is replayed on one grid
        raise DataError(f"{source + ': ' if source else ''}{shifted[0].message}", source=source,
                        streams=shifted[0].streams, report=checked.report)
    frame, freq = checked.frame, checked.freq
    tick_offset = _tick_offset(config, freq)
    grid = make_tick_grid(frame, tick_offset, freq=freq)
    frame, grid, incomplete = _without_incomplete_last_tick(frame, grid, freq, tick_offset, source)
    fleet = FleetData(frame, freq.alias, grid.boundaries, drivers=config.drivers)
    # The data's kind of timestamps, as a project's (Store.time_zones): offsets converted to UTC, or none.
    zones = "zoned" if any(f.code == "timezone-converted" for f in checked.report.findings) else "naive"
    fleet.mark_abnormal(_checked_abnormal(abnormal, fleet.ids, zones))
    _warn_of_groups_not_in_data(groups, attributes, fleet.ids)
    if fleet.n_ticks < 2:
        raise ValueError(f"the data spans {fleet.n_ticks} tick(s) of {tick_offset}; a backtest needs at least 2")

    # The horizon of the clock, not of this data's ticks, so that a live agent on the same data agrees.
    clock = TickClock(freq.alias, tick_offset.freqstr, grid.boundaries[0])
    steps = clock.horizon()
    ctx = ForecastContext(freq=freq.alias, season_length=freq.season_length, horizon=steps,
                          drivers=fleet.drivers)
    # The window asked for (refused if too short for the model), else the frequency's default, lengthened to what
    # the model needs.
    window = fitting_train_window(make_forecaster(config.model, ctx), ctx, config.train_window_ticks,
                                  default_train_window(freq, tick_offset), name=spec_name(config.model),
                                  steps_in=clock.most_steps)
    first_tick = config.initial_ticks or max(1, min(window or math.ceil(fleet.n_ticks / 3), fleet.n_ticks // 2))
    if first_tick >= fleet.n_ticks:
        raise ValueError(f"initial_ticks={first_tick} leaves no tick to score (the data has {fleet.n_ticks})")

    executor = make_executor(config.executor)
    owned = config.executor is None or isinstance(config.executor, str)  # a caller's executor is not killed
    service = None
    try:
        def renew() -> Executor:
            # A worker died (a crash in a model, out of memory): the services go on with a fresh pool, as a
            # live agent's do; the streams of the chunks it failed are fitted again one at a time.
            nonlocal executor
            terminate_executor(executor)
            executor = make_executor(config.executor)
            for svc in services:
                svc.executor = executor
            return executor

        services: list[ModelService] = []
        # As live: with a timeout, even one fit goes to the pool, since only work handed over can be timed out.
        timed = {"fit_timeout": config.fit_timeout, "parallel_threshold": 1} if config.fit_timeout else {}
        service = ModelService(fleet, config.model, ctx, train_window_ticks=window, executor=executor,
                               fit_cache=config.fit_cache, window_steps=clock.most_steps,
                               renew_executor=renew if owned and config.executor not in (None, "inline") else None,
                               **timed)
        driver_gaps = _streams_without_drivers(fleet, service)
        drivers_unused = bool(fleet.drivers) and not service.wants_drivers
        if drivers_unused:
            # As the live agent says it: the summary listed the drivers as if the model had used them.
            log.warning("the model %r takes no drivers: the drivers given (%s) are not used by its forecasts, and "
                        "event drivers are not discounted from its losses; use a model that takes them (ridge, "
                        "lightgbm, docs/models.md)", spec_name(config.model), ", ".join(fleet.drivers.columns))
        for name, gap in driver_gaps.items():
            log.warning("%s", driver_gaps_message(name, gap, fleet.n_streams))
        # The start-up's scale, what a live agent knows at its start (the end of tick first_tick - 1); streams with
        # none yet get theirs at the first tick with a season's worth of pairs, from what is known then (below).
        scale = fleet.scale_known_at(freq.season_length, first_tick - 1)
        policies: list[Policy] = []
        given: list[str] = []  # the spec each policy was made from
        for spec in config.policies:
            policy = make_policy(spec, **config.policy_params.get(spec, {}))
            same = next((i for i, p in enumerate(policies) if p.name == policy.name), None)
            if same is not None:  # "periodic:every=3" of a sweep beside "periodic:3": one policy, run once
                first = given[same]
                if config.policy_params.get(first, {}) != config.policy_params.get(spec, {}):
                    raise ValueError(f"policies {first!r} and {spec!r} are both named {policy.name!r} but have "
                                     "different settings (policy_params): write the settings in the specs")
                log.info("policy %r is %s, given already: run once", spec, policies[same].name)
                continue
            policies.append(policy)
            given.append(spec)
        names = [p.name for p in policies]
        requested = set(names)
        if config.frontier is not False:
            from mlma.evaluation import default_periods

            periods = (default_periods(fleet.n_ticks - first_tick) if config.frontier is True
                       else sorted(set(int(k) for k in config.frontier)))
            for spec in ["never", *(f"periodic:{k}" for k in periods), "always"]:
                if spec not in requested:
                    policies.append(make_policy(spec))
            names = [p.name for p in policies]
        # A model whose fits take the fleet's prior of the drivers' effects (ridge's multiplicative drivers with
        # driver_pooling): each agent pools its own prior from its own models (Agent._pool_driver_effects) and
        # passes it to its next fits, so policies cannot share fits (a fit at the same stream and tick differs
        # with the prior); each gets its own service, as it would live. Other models share one.
        services[:] = [service] + [ModelService(fleet, config.model, ctx, train_window_ticks=window,
                                                executor=executor, fit_cache=service.fit_cache,
                                                renew_executor=service.renew_executor, **timed)
                                   for _ in policies[1:]] if service.takes_driver_prior else [service] * len(policies)
        agents = [Agent(p, svc, season_length=freq.season_length, scale=scale, settings=config.agent,
                        tick_season=clock.tick_season)
                  for p, svc in zip(policies, services)]
        accs = [_Accumulator(fleet.n_streams) for _ in agents]
        samples = _pick_samples(fleet, frame, events, config.sample_streams)
        forecast_rows: list[pd.DataFrame] = []
        retrain_rows: list[dict] = []

        def renew_if_timed_out() -> None:
            # A fit past fit_timeout may still hold its pool worker (a cluster's was restarted, but its client
            # is renewed all the same, as live): the next fits get a fresh executor, as a live agent's next tick
            # does, or they would queue behind the hung one and time out in turn.
            if owned and config.executor not in (None, "inline") and any(svc.timed_out for svc in services):
                renew()
                for svc in services:
                    svc.timed_out = False

        for agent, acc in zip(agents, accs):
            started = agent.start(first_tick)
            _record_fits(started, acc)
            acc.book.record(started.tick, started.escalations, {})  # live operation records the start-up's too
            renew_if_timed_out()
        ticks = range(first_tick, fleet.n_ticks)
        with _progress(progress, len(ticks), config.title) as advance, threadpool_limits(limits=1):
            for k in ticks:
                if owned and not executor_usable(executor):
                    # A cluster whose scheduler was lost closes its client, and every later fit failed: a run went
                    # on to its end with 54 of 60 fits failed, its table's MAE that of stale models, exit 0. A new
                    # client, or a stop that names why.
                    try:
                        renew()
                    except ValueError as exc:
                        raise ValueError(f"tick {k}: the executor {config.executor!r} can no longer take work (its "
                                         f"cluster was lost) and no new one could be made: {exc}") from None
                missing = ~(np.isfinite(scale) & (scale > 0))
                if missing.any():
                    since = max(0, k - window) if window else 0  # the live tick's training window
                    known = fleet.scale_known_at(freq.season_length, k, since, streams=np.flatnonzero(missing))
                    scale = np.where(missing, known, scale)
                    # A constant stream's scale is 0: none, as the live agent takes it (Agent's constructor).
                    usable = np.where(known > 0, known, np.nan)
                    for agent in agents:
                        agent.scale = np.where(np.isfinite(agent.scale) & (agent.scale > 0), agent.scale, usable)
                reports = []
                for agent in agents:
                    reports.append(agent.tick(k))
                    renew_if_timed_out()
                scored = np.isfinite(reports[0].actuals)
                for report in reports:
                    scored &= np.isfinite(report.forecasts)
                tick_start = fleet.boundaries[k]
                tick_days = (fleet.boundaries[k + 1] - tick_start) / pd.Timedelta(days=1)
                streams_scored = int(scored.any(axis=1).sum())
                for policy, report, acc in zip(policies, reports, accs):
                    resolved = acc.book.record(k, report.escalations, report.cleared)
                    acc.escalations_resolved += sum(resolved.values())
                    _record_tick(report, acc, scored, tick_start, sum(resolved.values()))
                    acc.stream_days += streams_scored * tick_days
                    _record_fits(report, acc)
                    _record_retrains(report, policy.name, fleet.ids, tick_start, retrain_rows, acc.open_challenges)
                    if len(samples):
                        forecast_rows.append(pd.DataFrame({
                            "policy": policy.name,
                            "unique_id": np.repeat(fleet.ids[samples], report.actuals.shape[1]),
                            "ds": np.tile(fleet.tick_timestamps(k), len(samples)),
                            "y": report.actuals[samples].ravel(),
                            "y_hat": report.forecasts[samples].ravel(),
                        }))
                keep = set().union(*(agent.models_in_use() for agent in agents))
                for svc in {id(svc): svc for svc in services}.values():
                    svc.forget(keep, k)
                advance()
    except BaseException:
        # A failure or Ctrl-C: queued fits are dropped and running ones killed (the pool's workers leave SIGINT
        # to this process), not waited for.
        if owned and executor is not None:
            terminate_executor(executor)
            executor = None
        raise
    finally:
        if owned and executor is not None and hasattr(executor, "shutdown"):
            executor.shutdown()  # a caller's executor stays open for the caller's next run
        if service is not None and service.fit_cache is not None:
            service.fit_cache.close()  # one cache, shared by the services
    events_frame = _events_in_span(events, fleet)
    summary, per_stream, per_tick = _summarise(policies, accs, fleet, scale)
    for row in summary:
        row["frontier_only"] = row["policy"] not in requested
    frontier, clairvoyant = _add_gaps(summary, per_stream, config.bootstrap)
    retrain_log = pd.DataFrame(retrain_rows, columns=RETRAIN_COLUMNS)
    retrain_log["judged_tick"] = retrain_log["judged_tick"].astype("Int64")
    escalation_log = _escalation_log(policies, accs, fleet, groups)
    from mlma.detection import detection_scores, labour_scores

    for row, acc in zip(summary, accs):
        row["stream_days"] = round(acc.stream_days, 3)
        row.update(labour_scores(escalation_log[escalation_log.policy == row["policy"]], acc.stream_days,
                                 events=events_frame, boundaries=fleet.boundaries, groups=groups))
    if events_frame is not None:
        for row in summary:
            row.update(detection_scores(retrain_log[retrain_log.policy == row["policy"]], events_frame, fleet,
                                        first_tick=first_tick))
    forecasts = (pd.concat(forecast_rows, ignore_index=True) if forecast_rows
                 else pd.DataFrame(columns=["policy", "unique_id", "ds", "y", "y_hat"]))
    forecasts = forecasts.dropna(subset=["y", "y_hat"], how="all")
    distinct_services = list({id(svc): svc for svc in services}.values())  # policies may share one
    run_config = {
        "title": config.title,
        "source": str(data) if isinstance(data, (str, Path)) else "in-memory frame",
        "n_streams": fleet.n_streams,
        "n_rows": int(len(frame)),
        "freq": freq.alias,
        "season_length": freq.season_length,
        "tick": getattr(tick_offset, "freqstr", str(tick_offset)),
        "horizon": steps,
        "n_ticks": fleet.n_ticks,
        "first_scored_tick": first_tick,
        "first_scored_at": str(fleet.boundaries[first_tick]),
        "train_window_ticks": window,
        "model": str(config.model),
        "future_drivers": list(fleet.drivers.future),
        "historical_drivers": list(fleet.drivers.historical),
        "event_drivers": list(fleet.drivers.events),
        # False when drivers were given to a model that takes none (said in a warning).
        "drivers_used": bool(fleet.drivers) and not drivers_unused,
        "driver_values_filled": int(sum(service.driver_fills.values())),  # the same for every service
        # Drivers the model uses that some streams hold no value of: {driver: {"n_streams", "first"}}.
        "streams_without_drivers": driver_gaps,
        "policies": names,
        "executor": config.executor or "inline",
        "fits_done": sum(svc.fits_done for svc in distinct_services),
        "fits_from_cache": sum(svc.fits_cached for svc in distinct_services),
        # Fits that fell back to seasonal naive or the mean, by cause: a model the data cannot support is seen.
        "fits_fell_back": dict(sum((svc.fallbacks for svc in distinct_services), collections.Counter())),
        "bootstrap": config.bootstrap,
        # What groups the queue items the labour is counted in, and how many streams had a value of it.
        "queue_group_by": config.group_by,
        "queue_grouped_streams": int(sum(uid in groups for uid in fleet.ids)),
        # The data's last tick, left out because its actuals were not all in (None: the data ends with a tick).
        "incomplete_last_tick": incomplete,
    }
    return BacktestResult(summary, per_stream, per_tick, forecasts, retrain_log, escalation_log, events_frame,
                          run_config, checked.report.to_frame(), frontier, clairvoyant)


def _add_gaps(summary: list[dict], per_stream: pd.DataFrame, n_boot: int) -> list[dict]:
    """Put each policy's gap to the schedule frontier (and its interval) and the clairvoyant bound at its cost
    into its summary row; return the frontier's schedules and the clairvoyant curve."""
    from mlma.evaluation import dominated_by, frontier_gaps

    result = frontier_gaps(per_stream, n_boot=n_boot)
    beaten = dominated_by(summary)
    for row in summary:
        gap = result.get("gaps", {}).get(row["policy"], {})
        for key in ("gap_pct", "gap_low", "gap_high", "frontier_mae", "clairvoyant_mae", "headroom_pct"):
            row[key] = gap.get(key)
        row["dominated_by"] = beaten.get(row["policy"], [])
    return result.get("frontier", []), result.get("clairvoyant", [])


def _tick_offset(config: BacktestConfig, freq: Frequency):
    tick = freq.offset * config.horizon if config.horizon is not None else config.tick
    return pd.tseries.frequencies.to_offset(tick_alias(freq, tick))


def _record_fits(report: TickReport, acc: _Accumulator) -> None:
    acc.retrains += report.retrained
    acc.retrain_seconds += report.retrain_seconds
    acc.initial_fits += report.initial_fit
    acc.initial_seconds += report.initial_seconds
    acc.escalations += len(report.escalations)
    acc.forecast_failures += len(report.forecast_failed) + len(report.shadow_failed)
    acc.fit_failures += len(report.failed)
    acc.failed_refits += sum(1 for s in report.failed if report.serving[s])
    acc.promotions += int(report.promoted.sum())
    if report.rejected is not None:
        acc.rejected += int(report.rejected.sum())


#: The columns of the re-training log (``retrains.csv``): why each re-training was made and what came of it.
#: ``outcome`` is ``served`` (the new model served at once: a schedule's or the age backstop's fit),
#: ``promoted`` / ``rejected`` / ``awaiting-approval`` (a challenger, judged at ``judged_tick`` on the mean losses
#: ``challenger_loss`` and ``champion_loss`` of its shadow ticks, with the paired test's ``p_value``),
#: ``pending`` (a challenger still in shadow when the backtest ended), ``dropped`` (a challenger replaced,
#: without a verdict, by a person's forced re-training at ``judged_tick``: only when the agent is given
#: :class:`~mlma.agent.Controls`, which the backtest's own loop does not) or ``failed`` (the fit failed: the
#: serving model stays; the error is in the escalations when it repeats).
RETRAIN_COLUMNS = ["policy", "unique_id", "tick", "tick_start", "reason", "outcome", "judged_tick",
                   "challenger_loss", "champion_loss", "p_value"]


def _record_retrains(report: TickReport, policy: str, ids, tick_start, rows: list[dict],
                     open_challenges: dict[int, dict]) -> None:
    """Close the rows of the challengers judged this tick, then add a row per re-training of this tick.

    The agent judges (or, for a person's forced re-training, drops) the challengers of earlier ticks before
    it re-trains, so the rows of a stream's earlier challenger are closed before its new one opens;
    ``open_challenges`` maps a stream to its row while its challenger is in shadow.
    """
    for s, check in report.checks.items():
        row = open_challenges.pop(int(s), None)
        if row is not None:
            row.update(outcome=check.result, judged_tick=report.tick, challenger_loss=check.challenger_mean_loss,
                       champion_loss=check.champion_mean_loss, p_value=check.p_value)
    for s in report.replaced:
        row = open_challenges.pop(int(s), None)
        if row is not None:
            row.update(outcome="dropped", judged_tick=report.tick)
    roles = {m.stream: m.role for m in report.new_models}
    for s in np.flatnonzero(report.retrained):
        challenger = roles.get(int(s)) == "challenger"
        outcome = "failed" if int(s) in report.failed else "pending" if challenger else "served"
        row = {"policy": policy, "unique_id": ids[s], "tick": report.tick, "tick_start": tick_start,
               "reason": str(report.decision.reason[s]), "outcome": outcome,
               "judged_tick": None, "challenger_loss": np.nan, "champion_loss": np.nan, "p_value": np.nan}
        rows.append(row)
        if challenger:
            open_challenges[int(s)] = row


def _escalation_log(policies, accs, fleet: FleetData, groups: dict) -> pd.DataFrame:
    """Every policy's escalations, with the tick that resolved each (missing while unresolved at the end) and
    the item of the engineer's queue each joins (numbered per policy)."""
    rows = [{"policy": policy.name, "unique_id": fleet.ids[esc.stream], "tick": esc.tick,
             "tick_start": fleet.boundaries[esc.tick], "kind": esc.kind, "severity": esc.severity,
             "message": esc.message, "resolved_tick": resolved}
            for policy, acc in zip(policies, accs) for esc, resolved in zip(acc.book.items, acc.book.resolved_tick)]
    frame = pd.DataFrame(rows, columns=["policy", "unique_id", "tick", "tick_start", "kind", "severity", "message",
                                        "resolved_tick"])
    frame["resolved_tick"] = frame["resolved_tick"].astype("Int64")
    frame["queue_item"] = np.zeros(len(frame), dtype=np.int64)
    for _, part in frame.groupby("policy", sort=False):
        frame.loc[part.index, "queue_item"] = queue_items(part["kind"], part["tick"], part["unique_id"].map(groups))
    return frame


def _queue_groups(attributes: pd.DataFrame | None, group_by: str | None, id_col: str) -> dict:
    """Each stream's value of the queue's grouping attribute (``unique_id -> value``; missing values left out)."""
    if attributes is None or group_by is None:
        return {}
    source = attributes.attrs.get("source", "attributes")  # the file, when the command line read one
    columns = ", ".join(map(str, attributes.columns))
    if id_col not in attributes.columns:
        raise ValueError(f"{source}: no column {id_col!r} naming the streams; columns: {columns}")
    if group_by not in attributes.columns:
        raise ValueError(f"{source}: no column {group_by!r} to group the queue by (group_by); columns: {columns}")
    ids = stream_id_text(attributes[id_col].astype(str))  # as the data's ids were read
    twice = ids.duplicated()
    if twice.any():
        row = int(twice.to_numpy().argmax())
        raise ValueError(f"{source}: stream {ids.iloc[row]!r} appears twice (row {row + 2}, counting the header "
                         "as row 1); one row per stream")
    values = attributes[group_by]
    return {uid: str(value) for uid, value in zip(ids, values) if not pd.isna(value)}


def not_in_data_message(source: str, what: str, unknown: list, n_unknown: int, n_given: int,
                        consequence: str) -> str:
    """The warning for ``n_unknown`` of ``n_given`` rows of a side table (abnormal periods, attributes) that name
    streams the data does not have, ``unknown`` (their distinct ids).

    >>> not_in_data_message("periods.csv", "abnormal periods", ["z9", "z7", "z8"], 4, 10, "they are ignored")
    'periods.csv: 4 of 10 abnormal periods name streams the data does not have (z7, z8 and 1 more): they are \
ignored'
    """
    first = sorted(map(str, unknown))[:2]
    more = len(unknown) - len(first)
    return (f"{source}: {n_unknown:,} of {n_given:,} {what} name streams the data does not have "
            f"({', '.join(first)}{f' and {more:,} more' if more > 0 else ''}): {consequence}")


#: What an abnormal period's file holds, named where it cannot be read.
ABNORMAL_COLUMNS = "unique_id, start, end"
#: The times an abnormal period's start and end are read as: a data file's (docs/data.md).
_ISO_TIMES = ("ISO 8601, as a data file's timestamps: YYYY-MM-DD with an optional time (2025-02-03 or 2025-02-03 "
              "14:00, with a UTC offset where the data's timestamps carry one)")


def read_abnormal_periods(path: str | Path) -> pd.DataFrame:
    """The abnormal periods of a CSV file (``mlma backtest --abnormal``): ``start``, ``end`` and optionally
    ``unique_id`` (empty: every stream), read as text and checked by :func:`abnormal_periods` (the times read as
    a data file's, ISO 8601 and never guessed), so that a file is refused before the replay, naming itself, the
    row and the column. Its ids stay text ("007" is not "7"); only an empty cell is missing ("NA" is an id).
    Returned as text, so that :func:`run_backtest` checks its UTC offsets against the data's timestamps.

    Raises ValueError naming the file: unreadable, without a start or end column, or with a period that cannot be
    meant (see :func:`abnormal_periods`).
    """
    try:
        periods = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as exc:  # EmptyDataError and UnicodeDecodeError: ValueErrors
        raise ValueError(f"{path}: cannot read it as abnormal periods ({ABNORMAL_COLUMNS}): {exc}") from None
    missing = [column for column in ("start", "end") if column not in periods.columns]
    if missing:
        raise ValueError(f"{path}: cannot read it as abnormal periods ({ABNORMAL_COLUMNS}): Missing column "
                         f"{missing[0]!r}; its columns: {', '.join(map(str, periods.columns))}")
    periods.attrs["source"] = str(path)  # named in errors and warnings about its rows
    abnormal_periods(periods)  # refused now, before the replay; the replay checks its offsets against the data's
    return periods


def abnormal_periods(periods: pd.DataFrame, *, time_zones: str | None = None) -> pd.DataFrame:
    """``periods`` (``start``, ``end`` and optionally ``unique_id``) with their start and end read as a data
    file's timestamps are (:func:`mlma.data.read_timestamp`: ISO 8601 text or datetimes, never guessed; one with
    an offset in UTC, as the data's zoned timestamps are kept), each cell on its own, after refusing a period that
    cannot be meant (no start or end, a time not ISO 8601, an end not after its start), named by its source
    (``periods.attrs["source"]``), row and column. The one reading of abnormal periods given to a backtest, from a
    file (:func:`read_abnormal_periods`) or a frame (:func:`run_backtest`).

    >>> periods = pd.DataFrame({"start": ["2024-03-31 03:00+02:00", "01/02/2025"], "end": ["2024-04-01"] * 2})
    >>> periods.attrs["source"] = "periods.csv"
    >>> abnormal_periods(periods.head(1))
                    start        end
    0 2024-03-31 01:00:00 2024-04-01
    >>> abnormal_periods(periods)  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: periods.csv: row 3 (counting the header as row 1; start '01/02/2025', end '2024-04-01'): its start
    or end is missing or not a time: column 'start' holds '01/02/2025', not ISO 8601, as a data file's timestamps:
    YYYY-MM-DD with an optional time (2025-02-03 or 2025-02-03 14:00, with a UTC offset where the data's timestamps
    carry one); day and month could be swapped ('01/02/2025' is 1 February read day first, 2 January read month
    first)
    """
    source = periods.attrs.get("source", "abnormal periods")
    missing = [column for column in ("start", "end") if column not in periods.columns]
    if missing:
        raise ValueError(f"{source}: no column {missing[0]!r}; an abnormal period has start, end and optionally "
                         f"unique_id (empty: every stream); columns: {', '.join(map(str, periods.columns))}")
    # Each cell on its own: a column parsed at once takes its format from its first row, and refused whole days
    # beside times, offsets that change at summer time, or a start with an offset beside an end without.
    (start, start_why, start_zoned), (end, end_why, end_zoned) = (_period_times(periods[column])
                                                                  for column in ("start", "end"))
    if time_zones in ("zoned", "naive"):
        _check_period_zones(periods, source, time_zones, {"start": start_zoned, "end": end_zoned})
    bad = (start.isna() | end.isna() | (end <= start)).to_numpy()
    if bad.any():
        row = int(bad.argmax())
        stream = periods["unique_id"].iloc[row] if "unique_id" in periods.columns else None
        given = {column: periods[column].iloc[row] for column in ("start", "end")}
        unread = [(column, why[row]) for column, times, why in (("start", start, start_why), ("end", end, end_why))
                  if pd.isna(times.iloc[row]) and not _blank(given[column])]
        problem = ("it ends before or when it starts" if not (pd.isna(start.iloc[row]) or pd.isna(end.iloc[row]))
                   else "its start or end is missing or not a time")
        if unread:
            column, why = unread[0]
            problem += (f": column {column!r} holds {given[column]!r}, not {_ISO_TIMES}"
                        f"{f'; {why}' if why else ''}")
        named = "" if stream is None or pd.isna(stream) else f", stream {stream!r}"
        raise ValueError(f"{source}: row {row + 2} (counting the header as row 1; start "
                         f"{given['start']!r}, end {given['end']!r}{named}): {problem}")
    return periods.assign(start=start, end=end)


def _check_period_zones(periods: pd.DataFrame, source: str, time_zones: str, zoned: dict[str, np.ndarray]) -> None:
    """Refuse a period's start or end written as text whose UTC offset does not fit the data's timestamps, as a
    person's abnormal period in a project is (:func:`mlma.params.data_time`): an offset on data without time zones
    would shift it by the offset against the data's clock, and a time without one on data that came with time
    zones (kept in UTC) would be read as UTC. Datetimes (a project's stored periods, a frame's) are instants."""
    for column in ("start", "end"):
        text = periods[column].map(lambda value: isinstance(value, str) and not _blank(value)).to_numpy(dtype=bool)
        wrong = text & (zoned[column] if time_zones == "naive" else ~zoned[column])
        if wrong.any():
            row = int(wrong.argmax())
            why = ("carries a UTC offset, but the data's timestamps have none (they are on the clock of the data "
                   "file: converted to UTC, the period would move by its offset); write it without"
                   if time_zones == "naive" else
                   "has no UTC offset, but the data's timestamps came with time zones (kept in UTC: read as UTC, a "
                   "local time would move by its offset); write it with its offset, or Z for UTC")
            raise ValueError(f"{source}: row {row + 2} (counting the header as row 1): column {column!r} holds "
                             f"{periods[column].iloc[row]!r}, which {why}")


def _blank(value) -> bool:
    """A missing start or end: an empty cell (or None, NaN, NaT)."""
    return (isinstance(value, str) and not value.strip()) or (not isinstance(value, str) and pd.isna(value))


def _period_times(column: pd.Series) -> tuple[pd.Series, list[str], np.ndarray]:
    """A start or end column read as a data file's timestamps (:func:`mlma.data.read_timestamp`, once per
    distinct value): tz-naive times (one with an offset in UTC, as the data's zoned timestamps are kept), NaT
    where a cell is missing or no ISO 8601 time; and per row why not, when more can be said (a date written day
    or month first, with both its readings; a word for the current time); and per row whether it carried an
    offset.

    >>> times, why, zoned = _period_times(pd.Series(["2024-03-31 03:00+02:00", "2024-03-01", "soon", "03/02/2025",
    ...                                              None]))
    >>> times.tolist()
    [Timestamp('2024-03-31 01:00:00'), Timestamp('2024-03-01 00:00:00'), NaT, NaT, NaT]
    >>> why[3]
    "day and month could be swapped ('03/02/2025' is 3 February read day first, 2 March read month first)"
    """
    codes, uniques = pd.factorize(column.astype(object), use_na_sentinel=True)
    read = [read_timestamp(value) for value in uniques]
    stamps = pd.DatetimeIndex([stamp for stamp, _, _ in read] + [pd.NaT]).as_unit("ns")  # code -1: missing
    reasons = [why for _, _, why in read] + [""]
    zoned = np.array([carried for _, carried, _ in read] + [False], dtype=bool)
    return (pd.Series(stamps[codes], index=column.index, dtype="datetime64[ns]"),
            [reasons[code] for code in codes], zoned[codes])


def _checked_abnormal(periods: pd.DataFrame | None, ids, time_zones: str) -> pd.DataFrame | None:
    """``periods`` (abnormal periods given to :func:`run_backtest`) read and checked by :func:`abnormal_periods`
    (their offsets against the data's ``time_zones``), with their ids read as stream ids are; periods for streams
    the data does not have are ignored, with a warning that names them."""
    if periods is None or not len(periods):
        return periods
    source = periods.attrs.get("source", "abnormal periods")
    periods = abnormal_periods(periods, time_zones=time_zones)
    if "unique_id" not in periods.columns:
        return periods
    named = stream_id_text(periods["unique_id"].astype(object).where(periods["unique_id"].notna()))
    named = named.where(named != "")  # an empty id marks the whole fleet, as a missing one does
    unknown = set(named.dropna()) - set(map(str, ids))
    if unknown:
        log.warning("%s", not_in_data_message(source, "abnormal periods", sorted(unknown),
                                              int(named.isin(unknown).sum()), len(named), "they are ignored"))
    return periods.assign(unique_id=named.to_numpy())


#: Ticks before the last whose data tell where the fleet's data usually end within a tick.
USUAL_END_TICKS = 7


def _without_incomplete_last_tick(frame: pd.DataFrame, grid, freq, tick_offset, source: str | None):
    """The data and its tick grid without its last tick when the data stop part way through it, and what was
    left out (None when the last tick is whole).

    A live agent runs a tick once its actuals are all in; the backtest replayed a data export that stopped part
    way through a day as a tick of 5 hours of 24: every stream was scored on those 5 hours and escalated for
    missing actuals (71 escalations per 1,000 stream-days where the whole data gave none) and the policies'
    decisions at that tick were made on it. Its rows are left out, said in a log warning and in the summary.

    Whole: the data reach the tick's last timestamp (:meth:`TickClock.complete_ticks`, the live rule), or stop
    no earlier before it than they stopped before the end of one of the :data:`USUAL_END_TICKS` ticks before (a
    car park whose sensors report from 08:00 to 16:30 stops 7 hours before each day's end: its last day is
    whole; a shop's February ends as early before its end as its January did, however short the month).
    """
    clock = TickClock(freq.alias, tick_offset.freqstr, grid.boundaries[0])
    last = len(grid.boundaries) - 2
    ends = pd.Timestamp(frame["ds"].max())
    if last < 0 or clock.complete_ticks(ends) > last:
        return frame, grid, None
    start = pd.Timestamp(grid.boundaries[last])
    first = max(0, last - USUAL_END_TICKS)
    recent = frame["ds"][frame["ds"] >= grid.boundaries[first]].to_numpy()
    ticks = first + np.searchsorted(np.asarray(grid.boundaries[first:last + 1], dtype="datetime64[ns]"), recent,
                                    side="right") - 1
    # How long before its last timestamp each earlier tick's data stopped (ticks without data tell nothing).
    short = [clock.last_timestamp(j) - pd.Timestamp(recent[ticks == j].max())
             for j in range(first, last) if (ticks == j).any()]
    if short and clock.last_timestamp(last) - ends <= max(short):
        return frame, grid, None
    kept = frame[frame["ds"] < start]
    dropped = {"start": str(start), "data_ends": str(ends), "until": str(clock.last_timestamp(last)),
               "rows": int(len(frame) - len(kept))}
    log.warning("%sthe data ends at %s, before the end of its last tick (%s to %s): that tick's %s row(s) are left "
                "out of the backtest, as a live agent waits for a tick's actuals to be all in",
                f"{source}: " if source else "", ends, start, clock.last_timestamp(last), f"{dropped['rows']:,}")
    if kept.empty:
        raise ValueError(f"{source + ': ' if source else ''}the data ends at {ends}, before the end of its first "
                         f"tick ({clock.last_timestamp(last)}): it holds no complete tick of {tick_offset.freqstr}")
    return kept, make_tick_grid(kept, tick_offset, freq=freq), dropped


def _warn_of_groups_not_in_data(groups: dict, attributes: pd.DataFrame | None, ids) -> None:
    """Say which streams of the attributes that group the queue the data does not have, and loudly when none of
    the data's streams has a group (ids written otherwise, e.g. ``7`` for ``007``): every item is then one
    stream's."""
    if not groups:
        return
    source = attributes.attrs.get("source", "attributes") if attributes is not None else "attributes"
    known = set(map(str, ids))
    unknown = [uid for uid in groups if uid not in known]
    if len(unknown) == len(groups):
        log.warning("%s: none of its %s streams is in the data (e.g. %s; the data's: %s): the queue items are "
                    "counted per stream, not per group", source, f"{len(groups):,}", sorted(groups)[0],
                    ", ".join(sorted(known)[:2]))
    elif unknown:
        log.warning("%s", not_in_data_message(source, "attribute rows", unknown, len(unknown), len(groups),
                                              "they are ignored"))


def _record_tick(report: TickReport, acc: _Accumulator, scored: np.ndarray, tick_start, resolved: int) -> None:
    err = np.where(scored, report.actuals - report.forecasts, 0.0)
    abs_err = np.abs(err).sum(axis=1)
    sq_err = (err ** 2).sum(axis=1)
    n = scored.sum(axis=1)
    acc.abs += abs_err
    acc.sq += sq_err
    acc.n += n
    total = n.sum()
    verdict = report.decision.verdict
    acc.ticks.append({
        "tick": report.tick,
        "tick_start": tick_start,
        "mae": abs_err.sum() / total if total else np.nan,
        "rmse": math.sqrt(sq_err.sum() / total) if total else np.nan,
        "n_scored": int(total),
        "retrains": int(report.retrained.sum()),
        "compute_seconds": float(report.retrain_seconds.sum()),
        "n_degraded": (float((verdict == Verdict.DEGRADED).sum())
                       if not (verdict == Verdict.UNMONITORED).all() else np.nan),
        "escalations": len(report.escalations),
        "escalations_resolved": resolved,
    })


def _summarise(policies, accs, fleet: FleetData, scale: np.ndarray):
    summary, stream_frames, tick_frames = [], [], []
    for policy, acc in zip(policies, accs):
        with np.errstate(invalid="ignore", divide="ignore"):
            mae_s = np.where(acc.n > 0, acc.abs / np.maximum(acc.n, 1), np.nan)
            rmse_s = np.where(acc.n > 0, np.sqrt(acc.sq / np.maximum(acc.n, 1)), np.nan)
            mase_s = np.where(np.isfinite(scale) & (scale > 0), mae_s / scale, np.nan)
        total = acc.n.sum()
        summary.append({
            "policy": policy.name,
            "mae": float(acc.abs.sum() / total) if total else None,
            "rmse": float(math.sqrt(acc.sq.sum() / total)) if total else None,
            "mase": float(np.nanmean(mase_s)) if np.isfinite(mase_s).any() else None,
            "retrains": int(acc.retrains.sum()),
            "compute_seconds": round(float(acc.retrain_seconds.sum()), 3),
            "initial_fits": int(acc.initial_fits.sum()),
            "initial_compute_seconds": round(float(acc.initial_seconds.sum()), 3),
            "promotions": int(acc.promotions),
            "rejected_challengers": int(acc.rejected),
            "escalations": int(acc.escalations),
            "escalations_resolved": int(acc.escalations_resolved),
            "forecast_failures": int(acc.forecast_failures),
            "fit_failures": int(acc.fit_failures),
            "failed_refits": int(acc.failed_refits),
            "n_streams": int((acc.n > 0).sum()),
            "n_scored": int(total),
        })
        stream_frames.append(pd.DataFrame({
            "policy": policy.name, "unique_id": fleet.ids, "mae": mae_s, "rmse": rmse_s, "mase": mase_s,
            "n_scored": acc.n, "retrains": acc.retrains, "compute_seconds": acc.retrain_seconds,
        }))
        ticks = pd.DataFrame(acc.ticks)
        ticks.insert(0, "policy", policy.name)
        tick_frames.append(ticks)
    return summary, pd.concat(stream_frames, ignore_index=True), pd.concat(tick_frames, ignore_index=True)


def _pick_samples(fleet: FleetData, frame: pd.DataFrame, events, n: int) -> np.ndarray:
    """A few streams worth plotting: ones hit by ground-truth events first, then spread over sizes."""
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    index = {uid: i for i, uid in enumerate(fleet.ids)}
    chosen: list[int] = []
    if events is not None and len(events):
        kinds = events.drop_duplicates("kind") if "kind" in events else events
        for uid in kinds.get("unique_id", pd.Series(dtype=object)):
            if uid in index and index[uid] not in chosen:
                chosen.append(index[uid])
            if len(chosen) >= n:
                break
    if len(chosen) < n:
        level = frame.groupby("unique_id", sort=True)["y"].mean().reindex(fleet.ids).to_numpy()
        order = np.argsort(np.nan_to_num(level, nan=-np.inf))
        for q in np.linspace(0.1, 0.95, n):
            s = int(order[int(q * (len(order) - 1))])
            if s not in chosen:
                chosen.append(s)
            if len(chosen) >= n:
                break
    return np.array(sorted(chosen[:n]), dtype=np.int64)


def _events_in_span(events: pd.DataFrame | None, fleet: FleetData) -> pd.DataFrame | None:
    if events is None or not len(events):
        return None
    events = events.copy()
    for col in ("start", "end"):
        if col in events:
            events[col] = pd.to_datetime(events[col])
    return events


class _progress:
    """A rich progress bar, or nothing."""

    def __init__(self, enabled: bool, total: int, title: str) -> None:
        self.enabled, self.total, self.title = enabled, total, title

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("ticks"), TimeElapsedColumn())
        self._bar.__enter__()
        task = self._bar.add_task(self.title, total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)


#: What :func:`write_outputs` writes into the output folder.
OUTPUT_FILES = ("summary.json", "per_stream.csv", "per_tick.csv", "retrains.csv", "escalations.csv", "report.html")


def check_output_dir(out_dir: str | Path) -> Path:
    """Refuse, before any work, an output folder :func:`write_outputs` could not write: an existing file, a path
    under a file, or a place this user may not write to. Nothing is created.

    Raises
    ------
    ValueError
        Naming the path and the problem.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     check_output_dir(f.name)
    Traceback (most recent call last):
    ...
    ValueError: --out ... is a file, not a folder: give a folder for the backtest's outputs
    """
    import os

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: give a folder for the backtest's outputs")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "write to" if existing == out else f"create folders in {existing} for"
        raise ValueError(f"--out {out}: this user cannot {what} it (permission denied or a read-only file system)")
    # A re-run in a folder another user (a container, a CI job) wrote before: its files must be writable too.
    locked = [name for name in OUTPUT_FILES if (out / name).exists() and not os.access(out / name, os.W_OK)]
    if locked:
        raise ValueError(f"--out {out}: this user cannot overwrite {', '.join(locked)} there (written by another "
                         "user?): give another folder, or remove them")
    return out


#: The files a backtest writes into its output folder (``validation.csv`` only when validation found something).
OUTPUT_FILES = ("summary.json", "per_stream.csv", "per_tick.csv", "retrains.csv", "escalations.csv",
                "validation.csv", "report.html")


def write_outputs(result: BacktestResult, out_dir: str | Path) -> Path:
    """Write ``summary.json``, ``per_stream.csv``, ``per_tick.csv``, ``retrains.csv``, ``escalations.csv``
    and ``report.html`` into ``out_dir`` (created if needed).

    All of them are written into a hidden folder of their own in it first, and moved in only when every one was:
    a failure (a report that cannot be drawn, a full disk) leaves ``out_dir`` as it was, never a new
    ``summary.json`` beside an earlier run's ``report.html``. A ``validation.csv`` of an earlier run in the
    folder is removed when this run has none."""
    import shutil
    import tempfile

    from mlma.report import write_report

    out = check_output_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Inside the folder: the same file system (os.replace cannot cross one: --out a mounted volume) and the
    # permissions check_output_dir checked.
    staging = Path(tempfile.mkdtemp(prefix=".mlma-writing-", dir=out))
    try:
        payload = {"config": result.config, "policies": result.summary, "frontier": result.frontier,
                   "clairvoyant": result.clairvoyant}
        # NaN and infinity are not JSON (json.dumps would write the bare word NaN, which strict readers refuse):
        # a value that could not be computed (a gap in % of an MAE of 0 on constant data) is written null.
        text = json.dumps(_finite_or_null(payload), indent=2, default=_json_default, allow_nan=False)
        (staging / "summary.json").write_text(text + "\n")
        result.per_stream.to_csv(staging / "per_stream.csv", index=False)
        result.per_tick.to_csv(staging / "per_tick.csv", index=False)
        result.retrain_log.to_csv(staging / "retrains.csv", index=False)
        result.escalation_log.to_csv(staging / "escalations.csv", index=False)
        if result.validation is not None and len(result.validation):
            result.validation.to_csv(staging / "validation.csv", index=False)
        write_report(result, staging / "report.html")
        for name in OUTPUT_FILES:
            if (staging / name).exists():
                os.replace(staging / name, out / name)
            elif (out / name).exists():
                (out / name).unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _finite_or_null(value):
    """``value`` with every non-finite float (in dicts, lists and tuples) replaced by ``None``.

    >>> _finite_or_null({"gap": float("nan"), "rows": [1.5, float("inf"), np.float64("nan")], "n": 3})
    {'gap': None, 'rows': [1.5, None, None], 'n': 3}
    """
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if not np.isfinite(value) else float(value)
    return str(value)


# The per-policy results columns (header, summary key, format), for the console table and `mlma table`.
SUMMARY_COLUMNS = [
    ("policy", "policy", "{}"), ("MAE", "mae", "{:.3f}"), ("RMSE", "rmse", "{:.3f}"), ("MASE", "mase", "{:.3f}"),
    ("re-trainings", "retrains", "{:,}"), ("compute s", "compute_seconds", "{:.1f}"),
    ("gap % [95% CI]", "gap_pct", "gap"), ("headroom %", "headroom_pct", "{:.2f}"),
    ("promotions", "promotions", "{:,}"), ("escalations", "escalations", "{:,}"),
    ("esc. / 1k stream-days", "escalations_per_1k_stream_days", "{:.2f}"),
    ("esc. precision", "escalation_precision", "{:.2f}"),
    ("queue items / 1k stream-days", "queue_items_per_1k_stream_days", "{:.2f}"),
    ("item precision", "queue_item_precision", "{:.2f}"),
    ("trigger precision", "detection_precision", "{:.2f}"), ("trigger recall", "detection_recall", "{:.2f}"),
    ("delay (ticks)", "detection_delay_ticks", "{:.1f}"),
]


#: The columns of the console table, which must fit a terminal; `mlma table` and summary.json have them all.
CONSOLE_KEYS = ("policy", "mae", "mase", "retrains", "gap_pct", "headroom_pct", "escalations_per_1k_stream_days",
                "escalation_precision", "queue_items_per_1k_stream_days", "detection_precision", "detection_recall")


def format_cell(row: dict, key: str, fmt: str) -> str:
    """One summary value as text; ``"gap"`` writes the gap with its interval, ``-`` stands for no value.

    >>> format_cell({"gap_pct": 0.41, "gap_low": -0.53, "gap_high": 1.52}, "gap_pct", "gap")
    '+0.41 [-0.53, +1.52]'
    >>> format_cell({"mae": None}, "mae", "{:.3f}")
    '-'
    >>> format_cell({"headroom_pct": float("nan")}, "headroom_pct", "{:.2f}")  # an older summary.json's NaN
    '-'
    """
    value = _number_or_none(row.get(key))
    if value is None:
        return "-"
    if fmt == "gap":
        low, high = _number_or_none(row.get("gap_low")), _number_or_none(row.get("gap_high"))
        interval = f" [{low:+.2f}, {high:+.2f}]" if low is not None and high is not None else ""
        return f"{value:+.2f}{interval}"
    return fmt.format(value)


def _number_or_none(value):
    """``None`` for a value that is no number to show: missing, NaN or infinite (summary.json files written
    before non-finite values became null hold NaN)."""
    if value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(value)):
        return None
    return value


def _ratio(value, base) -> str:
    """``value / base`` as a table cell, ``-`` when either is missing or not finite, or ``base`` is 0."""
    value, base = _number_or_none(value), _number_or_none(base)
    return f"{value / base:.3f}" if value is not None and base else "-"


def summary_rows(summary: list[dict], *, include_frontier: bool = False) -> list[dict]:
    """The rows to show: the policies asked for, and the frontier's added schedules if ``include_frontier``."""
    return [row for row in summary if include_frontier or not row.get("frontier_only")]


def summary_markdown(summary: list[dict], *, include_frontier: bool = False) -> str:
    """The per-policy results as a Markdown table, with MAE and re-trainings relative to ``always``.

    The gap column is each policy's MAE minus the staggered-periodic frontier's at its own re-training count,
    in % of ``always``'s MAE, with its 95 % bootstrap interval over streams (see :mod:`mlma.evaluation`).

    >>> print(summary_markdown([{"policy": "never", "mae": 2.0, "retrains": 0},
    ...                         {"policy": "always", "mae": 1.5, "retrains": 10}]))
    | policy | MAE | MAE / always | re-trainings | re-trainings / always |
    | --- | --- | --- | --- | --- |
    | never | 2.000 | 1.333 | 0 | 0.000 |
    | always | 1.500 | 1.000 | 10 | 1.000 |
    """
    always = next((row for row in summary if row["policy"] == "always"), None)
    summary = summary_rows(summary, include_frontier=include_frontier)
    present = [c for c in SUMMARY_COLUMNS if any(row.get(c[1]) is not None for row in summary)]
    headers, cells = [], []
    for header, key, fmt in present:
        headers.append(header)
        if always is not None and key in ("mae", "retrains"):
            headers.append(f"{header} / always")
    for row in summary:
        line = []
        for _, key, fmt in present:
            value = row.get(key)
            line.append(format_cell(row, key, fmt))
            if always is not None and key in ("mae", "retrains"):
                line.append(_ratio(value, always.get(key)))
        cells.append(line)
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(out)


def _beaten_by(row: dict) -> str:
    """The best policy with no more re-trainings and a lower MAE, and how many such there are."""
    beaten = row.get("dominated_by") or []
    return "-" if not beaten else beaten[0] + (f" (+{len(beaten) - 1})" if len(beaten) > 1 else "")


def pooled_markdown(per_stream: dict[str, pd.DataFrame], *, n_boot: int = 1000,
                    frontier_only: set[str] = frozenset()) -> str:
    """One Markdown table over several backtests' streams together (:func:`mlma.evaluation.pool_runs`): per
    policy every run holds, its streams and re-trainings, MAE relative to ``always``, and its gap to the pooled
    frontier with one bootstrap interval over all streams, and the clairvoyant headroom. Policies in
    ``frontier_only`` (the schedules the backtests added for the frontier) draw the frontier but get no row.
    """
    from mlma.evaluation import frontier_gaps, pool_runs, stream_sums

    pooled, dropped = pool_runs(per_stream)
    result = frontier_gaps(pooled, n_boot=n_boot)
    if not result:
        raise ValueError("the pooled runs need 'always' and another schedule in every run to draw the frontier "
                         "(back-tests with the frontier on, the default)")
    policies, abs_sum, n, retrains = stream_sums(pooled)
    mae = dict(zip(policies, abs_sum.sum(axis=0) / n.sum(axis=0)))
    retrained = dict(zip(policies, retrains.sum(axis=0)))
    streams = pooled.groupby("policy")["unique_id"].nunique()
    headers = ["policy", "runs", "streams", "re-trainings", "MAE / always", "gap % [95% CI]", "headroom %"]
    lines = [f"Pooled over {len(per_stream)} runs ({', '.join(per_stream)}), {pooled['unique_id'].nunique():,} "
             f"streams, {n_boot} bootstrap replicates over streams.", "",
             "| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for policy in policies:
        if policy in frontier_only:
            continue
        gap = result["gaps"].get(policy, {})
        cells = [policy, str(len(per_stream)), f"{streams[policy]:,}",
                 f"{int(retrained[policy]):,}", _ratio(mae[policy], mae["always"]),
                 format_cell(gap, "gap_pct", "gap"), format_cell(gap, "headroom_pct", "{:.2f}")]
        lines.append("| " + " | ".join(cells) + " |")
    if dropped:
        lines += ["", f"Not in every run, left out: {', '.join(dropped)}."]
    return "\n".join(lines)


def runs_markdown(runs: list[tuple[str, list[dict]]], *, include_frontier: bool = False) -> str:
    """One Markdown table over several backtests (e.g. data sets or seeds): per run and policy, MAE and
    re-trainings relative to ``always``, the gap to the frontier with its interval, the clairvoyant headroom
    and the labour.

    >>> print(runs_markdown([("seed-7", [{"policy": "always", "mae": 2.0, "retrains": 10, "gap_pct": 0.0},
    ...                                  {"policy": "mlma", "mae": 2.1, "retrains": 1, "gap_pct": -1.5,
    ...                                   "gap_low": -2.0, "gap_high": -1.0}])]))
    | data | policy | MAE / always | re-trainings / always | gap % [95% CI] | headroom % | beaten by | esc. / 1k stream-days | data / 1k | re-training / 1k | esc. precision | queue items / 1k | item precision |
    | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
    | seed-7 | always | 1.000 | 1.000 | +0.00 | - | - | - | - | - | - | - | - |
    | seed-7 | mlma | 1.050 | 0.100 | -1.50 [-2.00, -1.00] | - | - | - | - | - | - | - | - |
    """
    headers = ["data", "policy", "MAE / always", "re-trainings / always", "gap % [95% CI]", "headroom %",
               "beaten by", "esc. / 1k stream-days", "data / 1k", "re-training / 1k", "esc. precision",
               "queue items / 1k", "item precision"]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for name, summary in runs:
        always = next((row for row in summary if row["policy"] == "always"), {})

        def rel(row: dict, key: str) -> str:
            return _ratio(row.get(key), always.get(key))

        for row in summary_rows(summary, include_frontier=include_frontier):
            cells = [name, row["policy"], rel(row, "mae"), rel(row, "retrains"),
                     format_cell(row, "gap_pct", "gap"), format_cell(row, "headroom_pct", "{:.2f}"),
                     _beaten_by(row), format_cell(row, "escalations_per_1k_stream_days", "{:.2f}"),
                     format_cell(row, "data_escalations_per_1k_stream_days", "{:.2f}"),
                     format_cell(row, "retraining_escalations_per_1k_stream_days", "{:.2f}"),
                     format_cell(row, "escalation_precision", "{:.2f}"),
                     format_cell(row, "queue_items_per_1k_stream_days", "{:.2f}"),
                     format_cell(row, "queue_item_precision", "{:.2f}")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
