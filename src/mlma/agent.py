"""The agent's tick: score, decide, re-train, check, promote, forecast.

One :class:`Agent` serves one fleet under one :class:`~mlma.policy.Policy`. At the end of tick ``k`` it

1. scores the forecasts it issued for tick ``k`` against the actuals that arrived (a loss batch per stream),
2. asks the policy which streams re-train (the policy may test losses against references, count ticks, ...),
3. re-trains them through the :class:`~mlma.training.ModelService`; when the policy asks for it, each
   re-trained *challenger* runs in shadow and must prove itself against the serving *champion* on the next
   tick(s), data neither was fitted on, before it is promoted; one that does not is rejected and escalated,
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
from mlma.policy import Decision, Policy, TickObservation
from mlma.training import ModelKey, ModelService

NO_MODEL = -1


@dataclass
class AgentSettings:
    """Knobs of the agent that are not the policy's.

    Parameters
    ----------
    silence_ticks
        A stream with no actuals for this many ticks in a row gets no forecasts until data returns.
    challenger_rule
        How a challenger in shadow proves itself against the champion on the same timestamps:
        ``"beats"`` (default): its mean loss is at most ``(1 + challenger_margin)`` times the champion's;
        ``"non-inferiority"``: a paired test (:func:`mlma.monitor.paired_noninferiority_test`) rejects
        "worse by more than the margin" at ``challenger_alpha``, the burden of proof on the challenger.
        The strict rule rarely promotes on one or two ticks of noisy losses even when the challenger is
        better (see docs/statistics.md), which leaves a degraded champion serving; the default follows the
        evidence at hand and the test's p-value is kept for the record.
    challenger_margin
        Relative margin on the mean loss (0.0: the challenger must be at least as good).
    challenger_alpha
        Significance level of the paired test; with repeated looks each look uses ``alpha / check_ticks``.
    check_ticks
        How many ticks with data a challenger runs in shadow before the verdict.
    cold_min_seasons
        A new stream gets its first model after this many seasons of history (before that: no forecast).
    """

    silence_ticks: int = 3
    challenger_rule: str = "beats"
    challenger_margin: float = 0.0
    challenger_alpha: float = 0.05
    check_ticks: int = 1

    def __post_init__(self) -> None:
        if self.challenger_rule not in ("beats", "non-inferiority"):
            raise ValueError(f"challenger_rule must be 'beats' or 'non-inferiority', got {self.challenger_rule!r}")
        if self.check_ticks < 1:
            raise ValueError(f"check_ticks must be >= 1, got {self.check_ticks!r}")
        if not self.challenger_margin > -1:
            raise ValueError(f"challenger_margin must be > -1, got {self.challenger_margin!r}")
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
    rejected: np.ndarray | None = None


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
        self.challenger = np.full(n, NO_MODEL, dtype=np.int64)
        self.shadow: dict[int, list] = {}
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
            abnormal=fleet.tick_abnormal[:, k],
        )
        decision = self.policy.decide(obs)
        escalations = list(decision.escalations)
        retrain_seconds = np.zeros(fleet.n_streams)
        promoted = np.zeros(fleet.n_streams, dtype=bool)
        rejected = np.zeros(fleet.n_streams, dtype=bool)
        if self.policy.checks_challenger:
            self._judge_challengers(k, actuals, losses, promoted, rejected, escalations)

        # A stream whose challenger is still being judged, or was just judged, waits for the verdict.
        retrain = decision.retrain & has_model & (self.challenger == NO_MODEL) & ~promoted & ~rejected
        streams = np.flatnonzero(retrain)
        if len(streams):
            fitted = self.service.fit([ModelKey(int(s), k) for s in streams])
            for s, fm in zip(streams, fitted):
                retrain_seconds[s] += fm.seconds
                if self.policy.checks_challenger:
                    self.challenger[s] = k
                    self.shadow[int(s)] = []
                else:
                    self._serve(s, fm)
            if not self.policy.checks_challenger:
                promoted[streams] = True
                self.policy.on_new_model(streams, k)

        initial, initial_seconds = self._bring_up(k, escalations)
        if k + 1 < fleet.n_ticks:
            self._issue_forecasts(k)
        else:
            self.forecast = None
        return TickReport(k, actuals, forecasts, losses, decision, retrain, promoted, initial,
                          retrain_seconds, initial_seconds, escalations, rejected)

    # -- steps ----------------------------------------------------------------------------------------------
    def _judge_challengers(self, k: int, actuals: np.ndarray, champion_losses: np.ndarray,
                           promoted: np.ndarray, rejected: np.ndarray, escalations: list) -> None:
        """Compare each pending challenger with its champion on tick ``k``, which neither was fitted on.

        A challenger fitted at the end of tick ``j`` runs in shadow from tick ``j + 1``: its forecasts are
        scored like the champion's but not served. After each tick with data the paired non-inferiority test
        looks at all pairs so far (at level ``alpha / check_ticks``, so that the repeated looks keep the
        false-promotion rate at ``alpha``). Promoted when the test says it is not worse than the champion by
        more than the margin; rejected, and escalated, when ``check_ticks`` looks did not show that.
        """
        from mlma.monitor import paired_noninferiority_test

        pending = np.flatnonzero(self.challenger != NO_MODEL)
        if not len(pending):
            return
        for s in pending:
            y_hat = self.service.predict(ModelKey(int(s), int(self.challenger[s])), k)
            if np.isfinite(actuals[s]).any():
                self.shadow[int(s)].append((np.abs(actuals[s] - y_hat), champion_losses[s]))
        looked = np.array([len(self.shadow[int(s)]) > 0 for s in pending])
        pending = pending[looked]
        if not len(pending):
            return
        width = max(sum(len(c) for c, _ in self.shadow[int(s)]) for s in pending)
        ch = np.full((len(pending), width), np.nan)
        cp = np.full((len(pending), width), np.nan)
        for i, s in enumerate(pending):
            c = np.concatenate([c for c, _ in self.shadow[int(s)]])
            p = np.concatenate([p for _, p in self.shadow[int(s)]])
            ch[i, :len(c)], cp[i, :len(p)] = c, p
        checks = self.settings.check_ticks
        result = paired_noninferiority_test(ch, cp, margin=self.settings.challenger_margin,
                                            alpha=self.settings.challenger_alpha / checks)
        looks = np.array([len(self.shadow[int(s)]) for s in pending])
        if self.settings.challenger_rule == "beats":
            ratio = np.asarray(result.ratio, dtype=np.float64)
            good = np.nan_to_num(ratio, nan=np.inf) <= 1 + self.settings.challenger_margin
            # Exact ties at zero loss (both perfect) count as beating.
            good |= (np.asarray(result.challenger_mean) == 0) & (np.asarray(result.champion_mean) == 0)
            win = good & (looks >= checks)
        else:
            win = np.asarray(result.promote, dtype=bool)
        lose = ~win & (looks >= checks)
        for i in np.flatnonzero(win):
            s = int(pending[i])
            self._serve(s, self.service.get(ModelKey(s, int(self.challenger[s]))))
        for i in np.flatnonzero(lose):
            s = int(pending[i])
            escalations.append(Escalation(
                stream=s, tick=k, kind="challenger-lost", severity=2,
                message=(f"re-trained model lost to the serving one in {looks[i]} shadow tick(s): mean loss "
                         f"{result.challenger_mean[i]:.4g} vs {result.champion_mean[i]:.4g} (paired test "
                         f"p={result.p_value[i]:.2g}); the serving model stays")))
        done = pending[win | lose]
        for s in done:
            self.challenger[s] = NO_MODEL
            self.shadow.pop(int(s), None)
        promoted[pending[win]] = True
        rejected[pending[lose]] = True
        if win.any():
            self.policy.on_new_model(pending[win], k)
        if lose.any() and hasattr(self.policy, "on_challenger_lost"):
            self.policy.on_challenger_lost(pending[lose], k)

    def _serve(self, s: int, fm) -> None:
        self.champion[s] = fm.key.end_tick
        self.version[s] += 1
        self.is_fallback[s] = fm.fallback_reason is not None
        self.fallback_rows[s] = fm.n_train

    def _bring_up(self, k: int, escalations: list | None = None) -> tuple[np.ndarray, np.ndarray]:
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
                if escalations is not None and self.champion[s] == NO_MODEL and fm.fallback_reason:
                    escalations.append(Escalation(int(s), k, "cold", 1,
                                                  f"new stream runs on a fall-back model: {fm.fallback_reason}"))
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
        keys = {ModelKey(int(s), int(t)) for s, t in enumerate(self.champion) if t != NO_MODEL}
        keys |= {ModelKey(int(s), int(t)) for s, t in enumerate(self.challenger) if t != NO_MODEL}
        return keys
