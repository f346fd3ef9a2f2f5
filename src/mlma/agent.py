"""The agent's tick: score, decide, re-train, check, promote, forecast.

One :class:`Agent` serves one fleet under one :class:`~mlma.policy.Policy`. At the end of tick ``k`` it

1. scores the forecasts it issued for tick ``k`` against the actuals that arrived (a loss batch per stream),
2. asks the policy which streams re-train (the policy may test losses against references, count ticks, ...),
3. re-trains them through the :class:`~mlma.training.ModelService`; when the policy asks for it, each
   re-trained *challenger* must first prove itself against the serving *champion* on data neither was
   fitted on, and a challenger that loses is not promoted,
4. brings up models for streams that have none yet (new streams) and retries fall-back models,
5. issues forecasts for tick ``k + 1`` from each stream's champion.

The backtest drives this with a simulated clock; live operation drives the very same method with the wall
clock. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlma.escalations import Escalation
from mlma.fleet import FleetData
from mlma.policy import Decision, Policy, TickObservation, Verdict
from mlma.training import ModelKey, ModelService

NO_MODEL = -1


@dataclass
class AgentSettings:
    """Knobs of the agent that are not the policy's.

    Parameters
    ----------
    silence_ticks
        A stream with no actuals for this many ticks in a row gets no forecasts until data returns.
    challenger_margin
        A challenger is promoted unless its mean loss is worse than the champion's by more than this
        relative margin (0.0: it must not be worse), judged by a paired test.
    challenger_alpha
        Significance level of that paired test.
    cold_min_seasons
        A new stream gets its first model after this many seasons of history (before that: no forecast).
    """

    silence_ticks: int = 3
    challenger_margin: float = 0.0
    challenger_alpha: float = 0.05
    cold_min_seasons: float = 1.0


@dataclass
class TickReport:
    """What happened in one tick, arrays over all streams."""

    tick: int
    actuals: np.ndarray
    forecasts: np.ndarray
    losses: np.ndarray
    decision: Decision
    retrained: np.ndarray
    promoted: np.ndarray
    initial_fit: np.ndarray
    retrain_seconds: np.ndarray
    initial_seconds: np.ndarray
    escalations: list[Escalation] = field(default_factory=list)


class Agent:
    """Keeps one fleet's models good under one policy; see the module docstring for the tick."""

    def __init__(self, policy: Policy, service: ModelService, *, season_length: int,
                 scale: np.ndarray, settings: AgentSettings | None = None) -> None:
        self.policy = policy
        self.service = service
        self.fleet: FleetData = service.fleet
        self.settings = settings or AgentSettings()
        self.season_length = season_length
        self.scale = np.where(np.isfinite(scale) & (scale > 0), scale, np.nan)
        n = self.fleet.n_streams
        self.champion = np.full(n, NO_MODEL, dtype=np.int64)
        self.version = np.zeros(n, dtype=np.int64)
        self.is_fallback = np.zeros(n, dtype=bool)
        self.fallback_rows = np.zeros(n, dtype=np.int64)
        self.silent_for = np.zeros(n, dtype=np.int64)
        self.forecast: np.ndarray | None = None
        policy.reset(n, season_length, self.fleet.steps_in_tick(0))

    # -- the tick -------------------------------------------------------------------------------------------
    def start(self, first_tick: int) -> TickReport:
        """Fit initial models on the history before ``first_tick`` and forecast ``first_tick``."""
        n = self.fleet.n_streams
        empty = np.zeros(n, dtype=bool)
        zeros = np.zeros(n)
        initial, initial_seconds = self._bring_up(first_tick - 1)
        self._issue_forecasts(first_tick - 1)
        nan = np.full((n, 0), np.nan)
        return TickReport(first_tick - 1, nan, nan, nan, Decision.nothing(n), empty, empty, initial,
                          zeros, initial_seconds)

    def tick(self, k: int) -> TickReport:
        """Process the actuals of tick ``k`` and forecast tick ``k + 1``."""
        fleet = self.fleet
        actuals = fleet.actuals(k)
        forecasts = self.forecast if self.forecast is not None else np.full_like(actuals, np.nan)
        losses = np.abs(actuals - forecasts)
        observed = fleet.observed_in_tick(k)
        self.silent_for = np.where(observed > 0, 0, self.silent_for + 1)

        has_model = self.champion != NO_MODEL
        obs = TickObservation(
            tick=k,
            actuals=actuals,
            losses=losses,
            scaled_losses=losses / self.scale[:, None],
            has_model=has_model,
            ticks_since_fit=np.where(has_model, k - self.champion, 0),
            observed=observed,
        )
        decision = self.policy.decide(obs)
        retrain = decision.retrain & has_model
        escalations = list(decision.escalations)

        retrain_seconds = np.zeros(fleet.n_streams)
        promoted = np.zeros(fleet.n_streams, dtype=bool)
        streams = np.flatnonzero(retrain)
        if len(streams):
            if self.policy.checks_challenger:
                winners, seconds, lost = self._challenge(streams, k, losses, actuals)
                retrain_seconds[streams] += seconds
                escalations.extend(lost)
            else:
                winners = streams
            if len(winners):
                fitted = self.service.fit([ModelKey(int(s), k) for s in winners])
                for s, fm in zip(winners, fitted):
                    retrain_seconds[s] += fm.seconds
                    self._serve(s, fm)
                promoted[winners] = True
                self.policy.on_new_model(winners, k)

        initial, initial_seconds = self._bring_up(k)
        if k + 1 < fleet.n_ticks:
            self._issue_forecasts(k)
        else:
            self.forecast = None
        return TickReport(k, actuals, forecasts, losses, decision, retrain, promoted, initial,
                          retrain_seconds, initial_seconds, escalations)

    # -- steps ----------------------------------------------------------------------------------------------
    def _challenge(self, streams: np.ndarray, k: int, champion_losses: np.ndarray, actuals: np.ndarray):
        """Check re-trained challengers against champions on tick ``k``, which neither was fitted on.

        The challenger for the check is trained on the window that ends where tick ``k`` starts, so tick
        ``k`` is out of sample for both; if it is not worse, the stream is re-trained on the window that
        includes tick ``k`` and that model is promoted (validate the recipe, then refit on all the data).
        """
        from mlma.monitor.challenger import paired_noninferiority_test

        fitted = self.service.fit([ModelKey(int(s), k - 1) for s in streams])
        seconds = np.array([fm.seconds for fm in fitted])
        steps = actuals.shape[1]
        challenger_losses = np.full((len(streams), steps), np.nan)
        for i, s in enumerate(streams):
            y_hat = self.service.predict(ModelKey(int(s), k - 1), k)
            challenger_losses[i] = np.abs(actuals[s] - y_hat)
        result = paired_noninferiority_test(challenger_losses, champion_losses[streams],
                                            margin=self.settings.challenger_margin,
                                            alpha=self.settings.challenger_alpha)
        promote = np.asarray(result.promote, dtype=bool)
        lost = [
            Escalation(stream=int(s), tick=k, kind="challenger-lost", severity=2,
                       message=(f"re-trained model lost to the serving one: mean loss "
                                f"{result.challenger_mean[i]:.4g} vs {result.champion_mean[i]:.4g}"))
            for i, s in enumerate(streams) if not promote[i]
        ]
        if hasattr(self.policy, "on_challenger_lost"):
            self.policy.on_challenger_lost(streams[~promote], k)
        return streams[promote], seconds, lost

    def _serve(self, s: int, fm) -> None:
        self.champion[s] = fm.key.end_tick
        self.version[s] += 1
        self.is_fallback[s] = fm.fallback_reason is not None
        self.fallback_rows[s] = fm.n_train

    def _bring_up(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """First models for new streams, and another try for streams on a fall-back model."""
        fleet = self.fleet
        rows = fleet.n_rows_before(k + 1)
        min_rows = max(int(self.settings.cold_min_seasons * self.season_length), 2)
        cold = (self.champion == NO_MODEL) & (rows >= min_rows)
        # A fall-back model is retried once a season of new history has arrived since its fit.
        retry = self.is_fallback & (rows >= self.fallback_rows + self.season_length) & (self.silent_for == 0)
        todo = np.flatnonzero(cold | retry)
        seconds = np.zeros(fleet.n_streams)
        initial = np.zeros(fleet.n_streams, dtype=bool)
        if len(todo):
            fitted = self.service.fit([ModelKey(int(s), k) for s in todo])
            for s, fm in zip(todo, fitted):
                seconds[s] = fm.seconds
                self._serve(s, fm)
                # A retried fall-back keeps its place in the row count even when it falls back again.
                self.fallback_rows[s] = max(self.fallback_rows[s], int(rows[s]))
            initial[todo] = True
            self.policy.on_new_model(todo, k)
        return initial, seconds

    def _issue_forecasts(self, k: int) -> None:
        """Forecast tick ``k + 1`` from each live stream's champion."""
        fleet = self.fleet
        steps = fleet.steps_in_tick(k + 1)
        forecast = np.full((fleet.n_streams, steps), np.nan)
        serving = np.flatnonzero((self.champion != NO_MODEL) & (self.silent_for < self.settings.silence_ticks))
        for s in serving:
            forecast[s] = self.service.predict(ModelKey(int(s), int(self.champion[s])), k + 1)
        self.forecast = forecast

    def models_in_use(self) -> set[ModelKey]:
        return {ModelKey(int(s), int(t)) for s, t in enumerate(self.champion) if t != NO_MODEL}

    def verdict_counts(self, decision: Decision) -> dict[str, int]:
        values, counts = np.unique(decision.verdict, return_counts=True)
        return {Verdict(int(v)).label: int(c) for v, c in zip(values, counts)}
