"""The agent's tick: score, decide, re-train, check, promote, forecast.

One :class:`Agent` serves one fleet under one :class:`~mlma.policy.Policy`. At the end of tick ``k`` it

1. scores the forecasts it issued for tick ``k`` against the actuals that arrived (a loss batch per stream),
2. asks the policy which streams re-train (the policy may test losses against references, count ticks, ...),
3. re-trains them through the :class:`~mlma.training.ModelService`; when the policy asks for it, each
   re-trained *challenger* runs in shadow and must prove itself against the serving *champion* on the next
   tick(s), data neither was fitted on, before it is promoted; one that does not is rejected and escalated,
4. brings up models for streams that have none yet (new streams) and retries fall-back models,
5. issues forecasts for tick ``k + 1`` from each stream's champion. A model whose forecast fails (raises,
   or returns NaN, infinite values or the wrong length) costs only its own stream's forecast: the stream has
   none for that tick, is escalated once (``forecast-failed``) and tried again at the next tick; a
   challenger that cannot forecast in shadow is rejected.

The backtest drives this with a simulated clock; live operation drives the very same method with the wall
clock. Nothing here does I/O. Everything a tick did is in the :class:`TickReport` it returns, also which
escalations' conditions cleared (:func:`mlma.escalations.cleared_conditions`), so that the live shell records
the report without asking the agent anything else, and the backtest resolves escalations by the same rule.

A model is named by its :class:`~mlma.training.ModelKey` ``(stream, end_tick)``: a stream is fitted at most
once per tick. The registry numbers versions per stream; live operation keeps the map between the two
(see docs/architecture.md, "Model identity").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mlma.escalations import Escalation, cleared_conditions
from mlma.explained import DEFAULT_POWER, ExplainedScale
from mlma.fleet import FleetData
from mlma.models.base import model_driver_effects
from mlma.policy import Decision, Policy, TickObservation, Verdict
from mlma.silence import Silence
from mlma.training import FittedModel, ModelKey, ModelService

NO_MODEL = -1
_PINNED = Verdict.PINNED


@dataclass
class AgentSettings:
    """Knobs of the agent that are not the policy's.

    Parameters
    ----------
    silence_ticks
        A stream with no actuals for this many ticks in a row gets no forecasts until data returns. Ticks
        without actuals that are the stream's rhythm (silent at the same place in each of the last three seasons
        of ticks, seasons in which it reported: a shop's weekends on daily ticks, the agent's ``tick_season``)
        do not count (:class:`mlma.silence.Silence`).
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
    fit_failure_limit
        A stream whose re-training failed (an error, a lost worker, a timeout) this many times in a row is
        escalated; each failure is recorded and the champion keeps serving.
    challenger_lost_limit
        A stream whose challengers lost to the champion this many times in a row is escalated. One lost
        challenger is routine (the champion keeps serving, the stream cools down and is tested again) and
        is recorded with the version, not put in the engineer's queue.
    explained_power
        Exponent of the explained ratio that discounts the monitor's loss where the fleet's declared event
        drivers (:attr:`mlma.models.Drivers.events`) run: the serving model also forecasts such a tick with
        the events at 0, and the policy divides the tick's errors by ``(served / counterfactual) ** power``
        (:class:`mlma.explained.ExplainedScale`; 1 by default, measured in docs/results-drivers.md; 0: off).
        Without declared events nothing is forecast twice and nothing changes.
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
        if not self.fleet_loss_ratio > 1:
            raise ValueError(f"fleet_loss_ratio must be > 1, got {self.fleet_loss_ratio!r}")
        ExplainedScale(self.explained_power)  # validates it, naming the setting
        for name in ("fit_failure_limit", "challenger_lost_limit", "fleet_loss_min_judged"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {getattr(self, name)!r}")
    cold_min_seasons: float = 1.0
    fit_failure_limit: int = 3
    challenger_lost_limit: int = 3
    fleet_loss_min_judged: int = 10
    fleet_loss_ratio: float = 1.2
    explained_power: float = DEFAULT_POWER


@dataclass
class Controls:
    """What people asked of one tick (see :mod:`mlma.control`), boolean arrays over streams; None: nothing.

    ``adopt`` maps a stream to the model a person put in service outside the tick (a roll-back or a manual
    promotion in the registry): the agent serves it from this tick's forecasts on and starts its reference
    afresh. A person's choice of the serving model this tick (that, or an approval) stands against a forced
    re-training queued before it; ``force_after_choice`` marks the forced re-trainings queued after it, which
    are carried out on top of it.

    ``restore`` maps a stream to the model the agent's shell puts back in service itself because the serving
    one cannot be loaded (live: an artifact that does not load): served like an adoption, but neither a
    person's choice nor a promotion, so a forced re-training queued for the stream is carried out on top of it.
    """

    force_retrain: np.ndarray | None = None
    force_direct: np.ndarray | None = None
    force_after_choice: np.ndarray | None = None
    pinned: np.ndarray | None = None
    needs_approval: np.ndarray | None = None
    reset_reference: np.ndarray | None = None
    rebase_reference: np.ndarray | None = None
    approve: np.ndarray | None = None
    reject: np.ndarray | None = None
    adopt: dict = field(default_factory=dict)
    restore: dict = field(default_factory=dict)
    reasons: dict = field(default_factory=dict)

    def mask(self, name: str, n: int) -> np.ndarray:
        value = getattr(self, name)
        if value is None:
            return np.zeros(n, dtype=bool)
        value = np.asarray(value, dtype=bool)
        if len(value) < n:
            value = np.concatenate([value, np.zeros(n - len(value), dtype=bool)])
        return value


@dataclass(frozen=True)
class ChallengerCheck:
    """The verdict on one challenger after its shadow ticks (``result``: promoted, rejected or
    awaiting-approval), with the mean losses it was judged on and the paired test's p-value."""

    result: str
    looks: int
    challenger_mean_loss: float
    champion_mean_loss: float
    p_value: float

    def as_dict(self) -> dict:
        """The check as it is recorded with the model version (``model_versions.check_result``)."""
        return {"result": self.result, "looks": self.looks, "challenger_mean_loss": self.challenger_mean_loss,
                "champion_mean_loss": self.champion_mean_loss, "p_value": self.p_value}


@dataclass(frozen=True)
class NewModel:
    """A model fitted in this tick: it serves from the next forecasts on (``role="champion"``) or runs in shadow
    as a challenger (``role="challenger"``); ``reason`` says why it was fitted."""

    fitted: FittedModel
    role: str
    reason: str

    @property
    def key(self) -> ModelKey:
        return self.fitted.key

    @property
    def stream(self) -> int:
        return self.fitted.key.stream


@dataclass
class TickReport:
    """What happened in one tick, arrays over all streams: everything a shell needs to record the tick."""

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
    #: Streams whose fit failed this tick, with the error.
    failed: dict = field(default_factory=dict)
    #: Streams whose challenger won but waits for a person's approval (after the tick).
    awaiting: np.ndarray | None = None
    #: Challengers judged this tick, by stream.
    checks: dict[int, ChallengerCheck] = field(default_factory=dict)
    #: For each stream whose fit failed this tick: its failures in a row so far.
    failures_in_a_row: dict[int, int] = field(default_factory=dict)
    #: Models fitted this tick, by stream order.
    new_models: list[NewModel] = field(default_factory=list)
    #: Escalation kind -> stream ids whose condition cleared this tick (resolved by the shell's record).
    cleared: dict[str, np.ndarray] = field(default_factory=dict)
    #: Each stream's mean loss over the tick's scored timestamps (NaN: none scored).
    stream_loss: np.ndarray | None = None
    #: Each stream's mean reference loss at the start of the tick, what its losses were judged against.
    reference_loss: np.ndarray | None = None
    #: Streams whose data the policy flags as broken (data-quality), after the tick.
    flagged: np.ndarray | None = None
    #: Streams with a serving model, after the tick.
    serving: np.ndarray | None = None
    #: The forecasts issued at the end of the tick for the next one (streams x steps; None after the last tick).
    issued: np.ndarray | None = None
    #: Streams whose serving model failed to forecast the next tick, with the error: no forecast for that tick.
    forecast_failed: dict[int, str] = field(default_factory=dict)
    #: Streams whose challenger failed to forecast in shadow, with the error: the challenger was rejected.
    shadow_failed: dict[int, str] = field(default_factory=dict)
    #: Streams whose challenger (in shadow, or waiting for approval) a person's forced re-training replaced this
    #: tick, with the dropped model: dropped without a verdict before the challengers were judged, and the
    #: stream re-trained (the fit may still have failed: ``failed``).
    replaced: dict[int, ModelKey] = field(default_factory=dict)
    #: Streams whose new serving model a person chose this tick (an approval, a roll-back or promotion in the
    #: registry), as opposed to the agent's own check promoting its challenger.
    chosen_by_person: np.ndarray | None = None
    #: New models the agent put in service this tick: challengers promoted by their check or by a person's
    #: approval, re-trainings served at once; not a model a person put in service in the registry (a roll-back),
    #: even on a stream the agent then re-trained in the same tick (``promoted`` marks streams, and would lose it).
    promotions: int = 0

    @property
    def challengers(self) -> list[int]:
        """Streams whose model fitted this tick went into shadow."""
        return [m.stream for m in self.new_models if m.role == "challenger"]


class Agent:
    """Keeps one fleet's models good under one policy; see the module docstring for the tick.

    ``season_length``: steps of the data in one season; ``tick_season``: ticks in one season of the tick clock
    (:attr:`mlma.calendar.TickClock.tick_season`: 7 for daily ticks), the rhythm against which a stream's ticks without
    actuals are judged (1: none)."""

    def __init__(self, policy: Policy, service: ModelService, *, season_length: int,
                 scale: np.ndarray, settings: AgentSettings | None = None, tick_season: int = 1) -> None:
        self.policy = policy
        self.service = service
        self.fleet: FleetData = service.fleet
        self.settings = settings or AgentSettings()
        self.season_length = season_length
        self.scale = np.where(np.isfinite(scale) & (scale > 0), scale, np.nan)
        n = self.fleet.n_streams
        self.champion = np.full(n, NO_MODEL, dtype=np.int64)
        # Row counts of the tick being run, keyed by what they count (read by the policy and the bring-up).
        self._rows_cache: dict = {}
        self.is_fallback = np.zeros(n, dtype=bool)
        self.fallback_rows = np.zeros(n, dtype=np.int64)
        # The tick a stream's run of fall-back models began (NO_MODEL while a regular model serves), and
        # whether that run was escalated ("cold"), so it is escalated once.
        self.fallback_since = np.full(n, NO_MODEL, dtype=np.int64)
        self.cold_escalated = np.zeros(n, dtype=bool)
        # Retries in a row that fell back again for a reason more history does not end (a constant series, a
        # failed fit): each doubles the history the next retry waits for (_retry_gap).
        self.fallback_retries = np.zeros(n, dtype=np.int64)
        # Ticks without actuals that the stream's weekly (seasonal) rhythm does not explain: a shop closed at
        # weekends is not silent on Sunday (mlma.silence).
        self.silence = Silence(tick_season)
        self.silence.reset(n)
        self.forecast: np.ndarray | None = None
        # The divisors of the issued forecasts' errors for the monitor (None: the fleet declares no events).
        self.explained: np.ndarray | None = None
        self.explained_scale = ExplainedScale(self.settings.explained_power)
        self.events = tuple(self.fleet.drivers.events) if self.explained_scale.active else ()
        self.challenger = np.full(n, NO_MODEL, dtype=np.int64)
        self.awaiting = np.full(n, NO_MODEL, dtype=np.int64)
        self.fit_failures = np.zeros(n, dtype=np.int64)
        # The model (its end tick) whose failed forecasts were escalated, NO_MODEL while the stream forecasts:
        # one escalation per failing model, not one per tick.
        self.forecast_broken = np.full(n, NO_MODEL, dtype=np.int64)
        self.challenger_losses = np.zeros(n, dtype=np.int64)
        self.shadow: dict[int, list] = {}
        #: Called during :meth:`tick` with the policy's state arrays (:meth:`policy_state_arrays`) as soon as
        #: they are final for the tick, before the forecasts are issued: the live agent starts saving them
        #: then, while the fleet is forecast. None: nobody is told.
        self.on_policy_settled: Callable[[dict[str, np.ndarray]], None] | None = None
        # One flag for the fleet (kept as an array so that it is saved with the state): the last tick's
        # re-trainings lost fleet-wide, already escalated.
        self.fleet_losing = np.zeros(1, dtype=bool)
        # One for the fleet too: the stream that carries the open `executor-failed` escalation (-1: none). Fits
        # the executor failed (a lost cluster, no workers) are escalated once, not counted against each stream.
        self.executor_outage = np.full(1, -1, dtype=np.int64)
        # The fleet prior of the future drivers' effects: each stream's latest estimate from a fit whose window
        # saw the driver vary (NaN: none yet); their median goes to the next fits and to the served models'
        # forecasts of the drivers their windows did not see vary (ForecastContext.driver_prior).
        self.driver_beta = np.full((n, len(self.fleet.drivers.future)), np.nan)
        policy.reset(n, season_length, self.fleet.steps_in_tick(self.fleet.tick_base))
        # Schedules follow the stream's identity, not its index, which differs between backtest and live.
        policy.identify_streams(self.fleet.ids)

    @property
    def silent_for(self) -> np.ndarray:
        """Per stream, the ticks without actuals since its last actuals that its rhythm does not explain."""
        return self.silence.run

    @property
    def silence_recent(self) -> np.ndarray:
        """Per stream, which of the last ticks had actuals (bits; :class:`mlma.silence.Silence`)."""
        return self.silence.recent

    @property
    def silence_launched(self) -> np.ndarray:
        """Per stream, whether it has launched (reported, or had a model), for :class:`mlma.silence.Silence`."""
        return self.silence.launched

    # -- state ----------------------------------------------------------------------------------------------
    #: The agent's own per-stream arrays (the policy has its own, see Policy.STATE).
    STATE = ("champion", "is_fallback", "fallback_rows", "fallback_since", "cold_escalated", "fallback_retries",
             "silent_for", "silence_recent", "silence_launched",
             "challenger", "awaiting",
             "fit_failures", "challenger_losses", "scale", "fleet_losing", "executor_outage", "forecast_broken",
             "driver_beta")

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to carry on at the next tick in another process, as plain numpy arrays."""
        arrays = {f"agent.{name}": getattr(self, name) for name in self.STATE}
        arrays |= self.policy_state_arrays()
        if self.forecast is not None:
            arrays["agent.forecast"] = self.forecast
        if self.explained is not None:
            arrays["agent.explained"] = self.explained
        # Which driver each column of driver_beta is: a restart with the drivers reordered or replaced maps the
        # estimates by name, never by position.
        arrays["agent.driver_names"] = np.array(self.fleet.drivers.future, dtype=np.str_)
        pending = np.array(sorted(self.shadow), dtype=np.int64)
        looks = np.array([len(self.shadow[int(s)]) for s in pending], dtype=np.int64)
        width = max((len(c) for s in pending for c, _ in self.shadow[int(s)]), default=0)
        depth = int(looks.max()) if len(looks) else 0
        ch = np.full((len(pending), depth, width), np.nan)
        cp = np.full((len(pending), depth, width), np.nan)
        for i, s in enumerate(pending):
            for j, (c, p) in enumerate(self.shadow[int(s)]):
                ch[i, j, :len(c)], cp[i, j, :len(p)] = c, p
        arrays |= {"shadow.streams": pending, "shadow.looks": looks, "shadow.challenger": ch, "shadow.champion": cp}
        return arrays

    def policy_state_arrays(self) -> dict[str, np.ndarray]:
        """The policy's part of :meth:`state_arrays` (names prefixed ``policy.``)."""
        return {f"policy.{name}": value for name, value in self.policy.state_arrays().items()}

    def load_state_arrays(self, arrays) -> None:
        """Restore :meth:`state_arrays` (saved for the same or fewer streams) into this fresh agent."""
        for name in self.STATE:
            if f"agent.{name}" not in arrays:
                continue  # a counter added by a later version of mlma starts from its initial value
            saved = np.asarray(arrays[f"agent.{name}"])
            if name == "driver_beta":
                self._load_driver_beta(saved, arrays.get("agent.driver_names"))
                continue
            getattr(self, name)[:len(saved)] = saved
        self.scale = np.where(np.isfinite(self.scale) & (self.scale > 0), self.scale, np.nan)
        self._pass_driver_prior()
        self.policy.load_state_arrays({name[len("policy."):]: value for name, value in arrays.items()
                                       if name.startswith("policy.")})
        if "agent.forecast" in arrays:
            saved = np.asarray(arrays["agent.forecast"])
            self.forecast = np.full((self.fleet.n_streams, saved.shape[1]), np.nan)
            self.forecast[:len(saved)] = saved
        # The scale of forecasts issued before a restart; none when the project no longer declares events.
        if "agent.explained" in arrays and self.events:
            saved = np.asarray(arrays["agent.explained"])
            self.explained = np.ones((self.fleet.n_streams, saved.shape[1]))
            self.explained[:len(saved)] = saved
        self.shadow = {}
        for i, s in enumerate(np.asarray(arrays.get("shadow.streams", []), dtype=np.int64)):
            looks = []
            for j in range(int(arrays["shadow.looks"][i])):
                c, p = arrays["shadow.challenger"][i, j], arrays["shadow.champion"][i, j]
                keep = ~(np.isnan(c) & np.isnan(p))
                last = int(np.flatnonzero(keep)[-1]) + 1 if keep.any() else 0
                looks.append((c[:last].copy(), p[:last].copy()))
            self.shadow[int(s)] = looks

    # -- the tick -------------------------------------------------------------------------------------------
    def start(self, first_tick: int) -> TickReport:
        """Fit initial models on the history before ``first_tick`` and forecast ``first_tick``."""
        n = self.fleet.n_streams
        k = first_tick - 1
        # The streams' rhythm of silent ticks (a shop's weekends) from the history's last seasons; what the
        # history went without is not news, so no stream starts silent.
        for h in range(max(self.fleet.tick_base, first_tick - self.silence.memory), first_tick):
            self.silence.update(self.fleet.observed_in_tick(h) > 0)
        self.silence.run[:] = 0
        empty = np.zeros(n, dtype=bool)
        zeros = np.zeros(n)
        new_models: list[NewModel] = []
        # The start-up's fits are the fleet's first: a fall-back among them for the data's sake (a constant
        # series, too short a history) is not news, but one because the model's own fit failed is (a user's
        # model that raises on some streams; a model built for another clock): those "cold" escalations stay.
        unreported: list[Escalation] = []
        failed: dict[int, str] = {}
        reference = self.policy.reference_mean()
        initial, initial_seconds = self._bring_up(k, unreported, failed, new_models=new_models)
        fit_failed = {m.stream for m in new_models if m.fitted.fallback_cause == "fit failed"}
        escalations: list[Escalation] = [e for e in unreported if e.kind == "cold" and e.stream in fit_failed]
        self._pool_driver_effects(new_models)
        self._refit_with_prior(new_models, initial_seconds)
        forecast_failed = self._issue_forecasts(k, escalations)
        nan = np.full((n, 0), np.nan)
        return TickReport(k, nan, nan, nan, Decision.nothing(n), empty, empty, initial, zeros, initial_seconds,
                          escalations, empty.copy(), failed, self.awaiting != NO_MODEL, forecast_failed=forecast_failed,
                          failures_in_a_row={s: int(self.fit_failures[s]) for s in failed},
                          new_models=sorted(new_models, key=lambda m: m.stream),
                          stream_loss=np.full(n, np.nan), reference_loss=reference,
                          flagged=self.policy.flagged_streams(), serving=self.champion != NO_MODEL,
                          issued=self.forecast)

    def tick(self, k: int, controls: Controls | None = None) -> TickReport:
        """Process the actuals of tick ``k`` and forecast tick ``k + 1``, doing what ``controls`` ask."""
        fleet = self.fleet
        n = fleet.n_streams
        controls = controls or Controls()
        ran_before = self.service.fits_on_executor
        actuals = fleet.actuals(k)
        forecasts = self.forecast if self.forecast is not None else np.full_like(actuals, np.nan)
        errors = actuals - forecasts
        losses = np.abs(errors)
        observed = fleet.observed_in_tick(k)
        has_model = self.champion != NO_MODEL
        self.silence.update(observed > 0, known=has_model)  # a stream with a model has launched
        adopted = np.zeros(n, dtype=bool)
        adopted[[s for s in controls.adopt if 0 <= s < n]] = True
        restored = np.zeros(n, dtype=bool)
        restored[[s for s in controls.restore if 0 <= s < n]] = True
        forced = controls.mask("force_retrain", n) & has_model
        # A person's forced re-training replaces the stream's challenger (in shadow or waiting for approval): it
        # is not judged this tick, the stream is re-trained below, and the challenger is dropped once the new
        # model is fitted (a fit that fails leaves it in its place, its check going on). Not when the person
        # also approved or rejected that challenger for this tick (their decision about it is carried out
        # first), nor when they put another model in service (which drops it anyway).
        decided = controls.mask("approve", n) | controls.mask("reject", n)
        pending = (self.challenger != NO_MODEL) | (self.awaiting != NO_MODEL)
        replacing = forced & pending & ~adopted & ~decided
        old_keys = {int(s): ModelKey(int(s), int(max(self.challenger[s], self.awaiting[s])))
                    for s in np.flatnonzero(replacing)}
        replaced: dict[int, ModelKey] = {}
        replaced_waiting = np.zeros(n, dtype=bool)
        # A stream whose serving model a person chose this tick (a roll-back, a promotion in the registry) drops
        # its challenger before the judging: judged, it would be promoted or lost (a `challenger-lost`
        # escalation, a re-based reference) for a model the person's choice put out of the running.
        self.drop_challengers(np.flatnonzero(adopted & pending), k)
        # Streams not re-trained this tick whatever the policy says: a re-trained model still being judged (in
        # shadow or waiting for approval), or a model a person put in service now.
        # A model put back in place of one that cannot be loaded is not re-trained on the broken one's evidence
        # either (a person's forced re-training is carried out all the same).
        busy = (self.challenger != NO_MODEL) | (self.awaiting != NO_MODEL) | adopted | restored
        reference = self.policy.reference_mean()
        obs = TickObservation(
            tick=k,
            actuals=actuals,
            losses=losses,
            scaled_losses=losses / self.scale[:, None],
            has_model=has_model,
            ticks_since_fit=np.where(has_model, k - self.champion, 0),
            observed=observed,
            silent_for=self.silent_for,
            silence_rhythm=self.silence.memory > 0,
            abnormal=fleet.abnormal_in_tick(k),
            errors=errors,
            forecasts=forecasts,
            explained=self.explained if self.explained is not None and self.explained.shape == actuals.shape
            else None,
            train_rows=self._train_rows(k) if self._counts_train_rows() else None,
            busy=busy,
        )
        decision = self.policy.decide(obs)
        # "no-data" for a stream whose actuals came but had no forecast to be scored against (its model's
        # forecast failed last tick, escalated as forecast-failed): say so, or it reads as a silent stream.
        unscored = (decision.verdict == int(Verdict.NO_DATA)) & (observed > 0) & ~np.isfinite(forecasts).any(axis=1)
        decision.reason[unscored & (decision.reason == "")] = "actuals came, but no forecast was served for them"
        escalations = list(decision.escalations)
        retrain_seconds = np.zeros(n)
        promoted = np.zeros(n, dtype=bool)
        rejected = np.zeros(n, dtype=bool)
        failed: dict[int, str] = {}
        new_models: list[NewModel] = []
        checks: dict[int, ChallengerCheck] = {}
        shadow_failed: dict[int, str] = {}
        # A pinned stream keeps its model: a challenger that wins its check (re-trained before the pin, or
        # forced by a person) is not promoted but stays in shadow, judged again once the pin ends.
        pinned = controls.mask("pinned", n) & has_model
        if self.policy.checks_challenger:
            checks = self._judge_challengers(k, actuals, errors, promoted, rejected, escalations,
                                             controls.mask("needs_approval", n), shadow_failed, obs.explained,
                                             skip=replacing, pinned=pinned)
        judged_promoted = promoted.copy()
        self._decide_approvals(k, controls, promoted, rejected)
        # The agent's own promotions (its checks, a person's approval of its challenger), counted before a
        # person's move in the registry marks its streams promoted too.
        promotions = int(promoted.sum())
        promoted[self._put_in_service(k, controls.adopt)] = True
        self._put_in_service(k, controls.restore)  # not a promotion, nor a person's choice
        # A model a person put in service this tick (an approval, a roll-back, a promotion): their choice stands,
        # against a forced re-training they queued before it, not one queued after it.
        by_person_served = adopted | (promoted & ~judged_promoted)
        by_person = by_person_served & ~controls.mask("force_after_choice", n)

        # Nor is it re-trained automatically: the verdict says what the policy would have done.
        held = pinned & decision.retrain
        decision.retrain = decision.retrain & ~pinned
        decision.reason[held] = [f"pinned; would re-train: {r}" for r in decision.reason[held]]
        decision.verdict[pinned & obs.scored] = int(_PINNED)
        direct = forced & controls.mask("force_direct", n)
        if decision.serve_at_once is not None:
            direct = direct | (decision.serve_at_once & ~pinned)
        for s in np.flatnonzero(forced):
            decision.reason[s] = controls.reasons.get(int(s), "forced by a person")
        # A stream whose challenger is still being judged, or was just judged, waits for the verdict (the
        # policy was told, `busy`). A person's forced re-training does not wait: its challenger is replaced, or
        # was just judged; it yields only to a model a person put in service this tick, and to a challenger the
        # person's own approval or rejection left in shadow (its check not over).
        idle = (self.challenger == NO_MODEL) & (self.awaiting == NO_MODEL)
        retrain = has_model & ((decision.retrain & ~(busy | promoted | rejected))
                               | (forced & (idle | replacing) & ~by_person))
        decision.retrain = retrain
        streams = np.flatnonzero(retrain)
        if len(streams):
            fitted = self.service.fit([ModelKey(int(s), k) for s in streams], on_error="skip")
            # A re-training whose own fit failed fell back to seasonal naive or the mean: where a real model
            # serves, that is a failed re-training (the serving model stays; escalated after fit_failure_limit
            # in a row), not a new model served or judged in its place.
            fell_back = {int(s): f"re-training fell back: {fm.fallback_reason}" for s, fm in zip(streams, fitted)
                         if fm is not None and not self.is_fallback[s] and fm.fallback_cause == "fit failed"}
            fitted = [None if int(s) in fell_back else fm for s, fm in zip(streams, fitted)]
            made = streams[[fm is not None for fm in fitted]]
            # The replaced challengers leave their slots for the new models (those whose fit failed stay), and the
            # policy hears of the drop before it hears of the new models.
            swapped = made[replacing[made]]
            replaced = {int(s): old_keys[int(s)] for s in swapped}
            replaced_waiting[swapped] = self.awaiting[swapped] != NO_MODEL
            self.drop_challengers(swapped, k)
            self._models_fitted(k, made)
            served = []
            for s, fm in zip(streams, fitted):
                if fm is None:
                    failed[int(s)] = fell_back.get(int(s)) or self.service.failures.get(ModelKey(int(s), k),
                                                                                         "fit failed")
                    continue
                self.fit_failures[s] = 0
                retrain_seconds[s] += fm.seconds
                reason = str(decision.reason[s]) or "re-trained"
                if self.policy.checks_challenger and not direct[s]:
                    self.challenger[s] = k
                    self.shadow[int(s)] = []
                    new_models.append(NewModel(fm, "challenger", reason))
                else:
                    self._serve(s, fm)
                    served.append(s)
                    new_models.append(NewModel(fm, "champion", reason))
            if served:
                promoted[served] = True
                promotions += len(served)
                self.policy.on_new_model(np.array(served), k)
        self._record_failures(k, failed, escalations)

        resets = controls.mask("reset_reference", n) | controls.mask("rebase_reference", n)
        if resets.any():
            rebase = controls.mask("rebase_reference", n)
            self.policy.reset_reference(np.flatnonzero(resets & ~rebase), k)
            self.policy.reset_reference(np.flatnonzero(resets & rebase), k, rebase=True)

        # Not retried on a fall-back: a stream whose model changed this tick, or a pinned one (never re-trained
        # automatically, a young stream on its fall-back too).
        initial, initial_seconds = self._bring_up(k, escalations, failed,
                                                  promoted | rejected | retrain | pinned | restored,
                                                  new_models=new_models)
        # The policy's arrays do not change from here to the end of the tick.
        if self.on_policy_settled is not None:
            self.on_policy_settled(self.policy_state_arrays())
        self._pool_driver_effects(new_models)
        forecasted = np.zeros(n, dtype=bool)
        forecast_failed: dict[int, str] = {}
        if k + 1 < fleet.n_ticks:
            forecast_failed = self._issue_forecasts(k, escalations)
            forecasted = np.isfinite(self.forecast).any(axis=1)
        else:
            self.forecast = None
        flagged = self.policy.flagged_streams()
        serving = self.champion != NO_MODEL
        cleared = cleared_conditions(
            promoted=promoted, rejected=rejected, fitted=retrain & ~np.isin(np.arange(n), list(failed)),
            initial_fit=initial, reported=observed > 0, flagged=flagged, on_model=serving & ~self.is_fallback,
            forecasted=forecasted, dropped=replaced_waiting,
            executor_back=self._watch_executor(k, failed, ran_before, escalations))
        return TickReport(k, actuals, forecasts, losses, decision, retrain, promoted, initial,
                          retrain_seconds, initial_seconds, escalations, rejected, failed,
                          self.awaiting != NO_MODEL, checks=checks,
                          failures_in_a_row={s: int(self.fit_failures[s]) for s in failed},
                          new_models=sorted(new_models, key=lambda m: m.stream), cleared=cleared,
                          stream_loss=(stream_mean_loss(losses) if decision.loss is None else decision.loss),
                          reference_loss=reference, flagged=flagged,
                          serving=serving, issued=self.forecast, forecast_failed=forecast_failed,
                          shadow_failed=shadow_failed, replaced=replaced,
                          chosen_by_person=by_person_served, promotions=promotions)

    def _decide_approvals(self, k: int, controls: Controls, promoted: np.ndarray, rejected: np.ndarray) -> None:
        """Serve or drop challengers that waited for a person's approval."""
        n = self.fleet.n_streams
        waiting = self.awaiting != NO_MODEL
        approve = np.flatnonzero(controls.mask("approve", n) & waiting)
        reject = np.flatnonzero(controls.mask("reject", n) & waiting & ~controls.mask("approve", n))
        for s in approve:
            self._serve(s, self.service.get(ModelKey(int(s), int(self.awaiting[s]))))
        self.awaiting[approve] = NO_MODEL
        self.awaiting[reject] = NO_MODEL
        promoted[approve] = True
        rejected[reject] = True
        if len(approve):
            self.policy.on_new_model(approve, k)
        if len(reject):
            self.policy.on_challenger_lost(reject, k)

    def _put_in_service(self, k: int, models: dict) -> np.ndarray:
        """Serve ``models`` (stream -> model key) chosen outside this tick's decisions: a person's move in the
        registry (``Controls.adopt``) or a version put back for one that cannot be loaded (``Controls.restore``);
        returns their streams."""
        streams = np.array(sorted(models), dtype=np.int64)
        if len(streams):
            self.drop_challengers(streams, k)
            for s in streams:
                self._serve(int(s), self.service.get(models[int(s)]))
            self.policy.on_new_model(streams, k)
        return streams

    def drop_challengers(self, streams, k: int) -> None:
        """Drop the challengers (in shadow or waiting for approval) of ``streams`` without a verdict, at tick
        ``k``: a person put another model in service or forced a re-training that replaces them, or (live) their
        artifact cannot be loaded. The policy is told (:meth:`Policy.on_challenger_dropped`) for the streams that
        had one."""
        streams = np.asarray(streams, dtype=np.int64)
        had = streams[(self.challenger[streams] != NO_MODEL) | (self.awaiting[streams] != NO_MODEL)]
        self.challenger[streams] = NO_MODEL
        self.awaiting[streams] = NO_MODEL
        for s in streams:
            self.shadow.pop(int(s), None)
        if len(had):
            self.policy.on_challenger_dropped(had, k)

    def _record_failures(self, k: int, failed: dict, escalations: list) -> None:
        """Count failed fits; escalate a stream whose fits failed ``fit_failure_limit`` times in a row. A fit the
        executor failed (:attr:`ModelService.executor_failures`: a cluster lost or without workers) is not the
        stream's doing and is not counted: :meth:`_watch_executor` escalates it once for the fleet."""
        for s, error in failed.items():
            if ModelKey(int(s), k) in self.service.executor_failures:
                continue
            self.fit_failures[s] += 1
            if self.fit_failures[s] == self.settings.fit_failure_limit:
                what = ("re-training failed {n} times in a row; the serving model stays" if self.champion[s] != NO_MODEL
                        else "fitting its first model failed {n} times in a row; no model serves it, so it gets "
                             "no forecast")
                escalations.append(Escalation(
                    int(s), k, "fit-failed", 3,
                    what.format(n=self.fit_failures[s]) + f". Last error: {error}"))

    def _watch_executor(self, k: int, failed: dict, ran_before: int, escalations: list) -> np.ndarray:
        """Escalate once, for the fleet, when the executor failed fits of tick ``k`` (``executor-failed`` on the
        first such stream; not again while later ticks fail the same way); return a mask of the stream whose
        escalation clears, once a tick's fits run on the executor again (``ran_before``: its fit count at the
        start of the tick)."""
        n = self.fleet.n_streams
        lost = [int(s) for s in failed if ModelKey(int(s), k) in self.service.executor_failures]
        cleared = np.zeros(n, dtype=bool)
        carrier = int(self.executor_outage[0])
        if lost and carrier < 0:
            s = lost[0]
            escalations.append(Escalation(
                s, k, "executor-failed", 3,
                f"{len(lost)} fit(s) of this tick could not run on the executor, through no fault of their streams "
                f"(this stream's error: {failed[s]}). The serving models stay; the fits are tried again at the "
                "next tick and do not count towards fit_failure_limit. Look at the cluster (its scheduler, its "
                "workers); resolved by the agent once fits run on it again"))
            self.executor_outage[0] = s
        elif not lost and carrier >= 0 and self.service.fits_on_executor > ran_before:
            if carrier < n:
                cleared[carrier] = True
            self.executor_outage[0] = -1
        return cleared

    # -- steps ----------------------------------------------------------------------------------------------
    def _judge_challengers(self, k: int, actuals: np.ndarray, champion_errors: np.ndarray,
                           promoted: np.ndarray, rejected: np.ndarray, escalations: list,
                           needs_approval: np.ndarray | None = None,
                           shadow_failed: dict | None = None,
                           explained: np.ndarray | None = None,
                           skip: np.ndarray | None = None,
                           pinned: np.ndarray | None = None) -> dict[int, ChallengerCheck]:
        """Compare each pending challenger with its champion on tick ``k``, which neither was fitted on.

        A challenger fitted at the end of tick ``j`` runs in shadow from tick ``j + 1``: its forecasts are
        scored like the champion's but not served. After each tick with data the paired non-inferiority test
        looks at all pairs so far (at level ``alpha / check_ticks``, so that the repeated looks keep the
        false-promotion rate at ``alpha``). Promoted when the test says it is not worse than the champion by
        more than the margin; rejected, and escalated, when ``check_ticks`` looks did not show that.

        Both are scored on the policy's loss (:meth:`~mlma.policy.Policy.challenger_loss`), and the policy
        hears every verdict's mean losses (what the re-training paid). When most re-trainings judged in a
        tick lose, across the fleet, the cause is shared (bad data in the training window, a model that
        cannot fit it): that is escalated once, not re-tried stream by stream. A challenger whose forecast
        fails (see :meth:`_issue_forecasts`) is rejected at once and escalated (``forecast-failed``); the
        error goes to ``shadow_failed``. Returns the verdicts, by stream. Streams in ``skip`` (a mask) are
        neither scored nor judged this tick: a person's forced re-training is replacing their challenger. A
        winner on a stream in ``needs_approval`` (a mask) waits for a person's approval; one on a stream in
        ``pinned`` stays in shadow, its shadow ticks adding up, and is judged on them all once the pin ends (a
        loser is rejected, pin or not).
        """
        from mlma.monitor import paired_noninferiority_test

        judged = self.challenger != NO_MODEL
        pending = np.flatnonzero(judged if skip is None else judged & ~skip)
        if not len(pending):
            return {}
        keys = [ModelKey(int(s), int(self.challenger[s])) for s in pending]
        shadow_forecasts = self.service.predict_many(keys, k, on_error="skip")
        broken = {int(pending[i]): error for i, error in self.service.forecast_failures_of(keys, k).items()}
        dropped = self._drop_broken_challengers(k, broken, rejected, escalations)
        if shadow_failed is not None:
            shadow_failed |= broken
        keep = ~np.isin(pending, list(broken))
        pending, shadow_forecasts = pending[keep], shadow_forecasts[keep]
        for s, y_hat in zip(pending, shadow_forecasts):
            if np.isfinite(actuals[s]).any():
                # Both on the serving model's forecasts as the common level (for a relative loss), and on
                # its explained scale as the common divisor.
                served = actuals[s] - champion_errors[s]
                # (The scale only by keyword, and only when there is one: a policy written before it existed
                # overrides challenger_loss with three arguments and keeps working for fleets without events.)
                extra = {} if explained is None else {"explained": explained[s]}
                self.shadow[int(s)].append((self.policy.challenger_loss(actuals[s] - y_hat, served, int(s), **extra),
                                            self.policy.challenger_loss(champion_errors[s], served, int(s), **extra)))
        looked = np.array([len(self.shadow[int(s)]) > 0 for s in pending], dtype=bool)
        pending = pending[looked]
        if not len(pending):
            return dropped
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
        if pinned is not None:
            # The pin keeps the serving model: a winner waits in shadow (a version waiting for approval would
            # keep the stream from being re-trained after the pin, until someone decided).
            win = win & ~pinned[pending]
        held = np.zeros(len(pending), dtype=bool)
        if needs_approval is not None:
            held = win & needs_approval[pending]
        checks = {int(pending[i]): ChallengerCheck("awaiting-approval" if held[i] else
                                                   "promoted" if win[i] else "rejected",
                                                   int(looks[i]), float(result.challenger_mean[i]),
                                                   float(result.champion_mean[i]), float(result.p_value[i]))
                  for i in np.flatnonzero(win | lose)} | dropped
        for i in np.flatnonzero(held):
            s = int(pending[i])
            self.awaiting[s] = self.challenger[s]
            escalations.append(Escalation(
                stream=s, tick=k, kind="approval-needed", severity=2,
                message=(f"a re-trained model beat the serving one (mean loss {result.challenger_mean[i]:.4g} vs "
                         f"{result.champion_mean[i]:.4g}) and waits for approval")))
        win = win & ~held
        for i in np.flatnonzero(win):
            s = int(pending[i])
            self._serve(s, self.service.get(ModelKey(s, int(self.challenger[s]))))
        self.challenger_losses[pending[win | held]] = 0
        for i in np.flatnonzero(lose):
            s = int(pending[i])
            self.challenger_losses[s] += 1
            if self.challenger_losses[s] != self.settings.challenger_lost_limit:
                continue
            escalations.append(Escalation(
                stream=s, tick=k, kind="challenger-lost", severity=2,
                message=(f"{self.challenger_losses[s]} re-trained models in a row lost to the serving one; the "
                         f"last in {looks[i]} shadow tick(s): mean loss {result.challenger_mean[i]:.4g} vs "
                         f"{result.champion_mean[i]:.4g} (paired test p={result.p_value[i]:.2g}). The serving "
                         f"model stays; re-training does not seem to help this stream")))
        done = pending[win | lose | held]
        for s in done:
            self.challenger[s] = NO_MODEL
            self.shadow.pop(int(s), None)
        promoted[pending[win]] = True
        rejected[pending[lose]] = True
        judged = win | lose
        if judged.any():
            self.policy.on_challenger_judged(pending[judged], k, np.asarray(result.challenger_mean)[judged],
                                             np.asarray(result.champion_mean)[judged])
            self._check_fleet_wide_losses(k, pending[judged], np.asarray(result.challenger_mean)[judged],
                                          np.asarray(result.champion_mean)[judged], escalations)
        if win.any():
            self.policy.on_new_model(pending[win], k)
        if lose.any():
            self.policy.on_challenger_lost(pending[lose], k)
        return checks

    def _drop_broken_challengers(self, k: int, broken: dict[int, str], rejected: np.ndarray,
                                 escalations: list) -> dict[int, ChallengerCheck]:
        """Reject the challengers whose forecasts failed in shadow: a model that cannot forecast must not
        serve. Each is escalated (``forecast-failed``, severity 2: the champion keeps serving)."""
        checks = {}
        for s, error in broken.items():
            looks = len(self.shadow.pop(s, []))
            checks[s] = ChallengerCheck("rejected", looks, float("nan"), float("nan"), float("nan"))
            escalations.append(Escalation(
                s, k, "forecast-failed", 2,
                f"the re-trained model (trained through tick {int(self.challenger[s])}) failed to forecast in "
                f"shadow and is rejected; the serving model stays. Error: {error}", slot="challenger"))
            self.challenger[s] = NO_MODEL
            rejected[s] = True
        if broken:
            self.policy.on_challenger_lost(np.array(sorted(broken), dtype=np.int64), k)
        return checks

    def _check_fleet_wide_losses(self, k: int, streams: np.ndarray, challenger_mean: np.ndarray,
                                 champion_mean: np.ndarray, escalations: list) -> None:
        """Escalate once when this tick's re-trainings, together, made the fleet clearly worse.

        "Clearly worse": at least ``fleet_loss_min_judged`` challengers judged, and their summed mean loss
        ``fleet_loss_ratio`` times the champions' or more. The escalation is not repeated while later ticks
        stay that bad; a tick where the re-trainings do not lose together ends the episode.
        """
        settings = self.settings
        ok = np.isfinite(challenger_mean) & np.isfinite(champion_mean)
        if ok.sum() < settings.fleet_loss_min_judged:
            return
        total_champion = float(champion_mean[ok].sum())
        ratio = float(challenger_mean[ok].sum()) / total_champion if total_champion > 0 else 1.0
        lost = float(np.mean(challenger_mean[ok] > champion_mean[ok]))
        harmful = ratio >= settings.fleet_loss_ratio
        if harmful and not self.fleet_losing[0]:
            worst = int(streams[ok][np.argmax(challenger_mean[ok] / np.maximum(champion_mean[ok], 1e-12))])
            escalations.append(Escalation(
                stream=worst, tick=k, kind="fleet-retraining-lost", severity=3,
                message=(f"re-trainings lose fleet-wide: {lost:.0%} of the {int(ok.sum())} challengers judged "
                         f"this tick lost, their loss {ratio:.2f}x the serving models'; the serving models stay. "
                         f"Look for a shared cause (broken data in the training window, a feature the window "
                         f"cannot estimate). This stream lost worst")))
        self.fleet_losing[0] = harmful

    def _pool_driver_effects(self, new_models: list[NewModel]) -> None:
        """Take this tick's fits' estimates of the future drivers' effects into the fleet prior and pass it to
        the next fits and to the forecasts issued from now on (a served model forecasts a driver its window did
        not see vary with the current prior, :meth:`mlma.models.BaseForecaster.for_context`). Fleet-wide: per-stream windows see too few campaigns for a prior per group (a city
        holds a few streams). The median, not an information-weighted mean: a few large streams do not set
        the effect of all, and a stream whose estimate leans on the prior counts once, as one vote."""
        if not self.driver_beta.shape[1]:
            return
        for nm in new_models:
            effects = model_driver_effects(nm.fitted.model)
            if effects is None:
                continue
            beta, information = effects
            learnt = (information > 0) & np.isfinite(beta)
            self.driver_beta[nm.stream, learnt] = beta[learnt]
        self._pass_driver_prior()

    def _refit_with_prior(self, new_models: list[NewModel], seconds: np.ndarray) -> None:
        """At start-up every stream is fitted in the same tick, before the fleet has a prior: the streams whose
        window did not see a driver vary that now has a fleet estimate are fitted again with it (once; later
        fits take the prior of the tick before). Their forecasts of such a driver take the fleet's current
        prior in any case (:meth:`mlma.models.BaseForecaster.for_context`); the refit gives their registered
        model that prior too, and shrinks the drivers their window did see vary toward the fleet's estimate."""
        prior = self.service.ctx.driver_prior
        if prior is None:
            return
        has_prior = np.isfinite(np.asarray(prior))
        redo = {}
        for i, nm in enumerate(new_models):
            effects = model_driver_effects(nm.fitted.model)
            if effects is not None and ((effects[1] == 0) & has_prior).any():
                redo[nm.key] = i
        if not redo:
            return
        for fm in self.service.refit(list(redo)):
            if fm is None:
                continue  # the first fit stands
            i = redo[fm.key]
            new_models[i] = NewModel(fm, new_models[i].role, new_models[i].reason)
            seconds[fm.key.stream] += fm.seconds
            if self.champion[fm.key.stream] == fm.key.end_tick:
                self._serve(fm.key.stream, fm)

    def _load_driver_beta(self, saved: np.ndarray, names) -> None:
        """Restore the per-stream driver estimates column by column, by driver name: a driver no longer
        declared is dropped, a new one starts without estimates (a state saved without names is used only
        if its drivers are the same in number, as it was written by this version's predecessor)."""
        ours = list(self.fleet.drivers.future)
        if names is None:
            if saved.shape[1:] == self.driver_beta.shape[1:]:
                self.driver_beta[:len(saved)] = saved
            return
        for j, name in enumerate(np.asarray(names).tolist()):
            if name in ours and j < saved.shape[1]:
                self.driver_beta[:len(saved), ours.index(name)] = saved[:, j]

    def _pass_driver_prior(self) -> None:
        known = np.isfinite(self.driver_beta)
        if not self.driver_beta.shape[1] or not known.any():
            return
        prior = np.full(self.driver_beta.shape[1], np.nan)
        for j in np.flatnonzero(known.any(axis=0)):
            prior[j] = float(np.median(self.driver_beta[known[:, j], j]))
        self.service.set_driver_prior(prior)

    def _serve(self, s: int, fm) -> None:
        self.champion[s] = fm.key.end_tick
        self.is_fallback[s] = fm.fallback_reason is not None
        self.fallback_rows[s] = fm.n_train
        if fm.fallback_reason is None:
            self.fallback_since[s] = NO_MODEL
            self.cold_escalated[s] = False
            self.fallback_retries[s] = 0
        elif self.fallback_since[s] == NO_MODEL:
            self.fallback_since[s] = fm.key.end_tick

    def _tick_rows(self, what: str, k: int, count) -> np.ndarray:
        """``count()``, kept for tick ``k`` (of this fleet) under ``what``: a count of rows is read several
        times a tick and costs a pass over the loaded rows."""
        key = (k, id(self.fleet), self.fleet.n_streams)
        if self._rows_cache.get("tick") != key:
            self._rows_cache = {"tick": key}
        if what not in self._rows_cache:
            self._rows_cache[what] = count()
        return self._rows_cache[what]

    def _rows_through(self, k: int) -> np.ndarray:
        """Rows each stream has through tick ``k``."""
        return self._tick_rows("through", k, lambda: self.fleet.n_rows_before(k + 1))

    def _models_fitted(self, k: int, streams: np.ndarray) -> None:
        """Tell the policy which streams got a new model at the end of tick ``k``, and on how many rows."""
        if len(streams):
            rows = (self._train_rows(k)[streams] if self._counts_train_rows()
                    else np.full(len(streams), np.nan))
            self.policy.on_models_fitted(np.asarray(streams, dtype=np.int64), k, rows)

    def _counts_train_rows(self) -> bool:
        """Whether the policy is told the rows of the training window: only when it reads them and the window
        is capped. With all history as the window every re-training uses more rows than the last, so "a
        model fitted on part of its window" (the growth trigger) has no meaning there."""
        return self.policy.needs_train_rows and bool(self.service.train_window_ticks)

    def _train_rows(self, k: int) -> np.ndarray:
        """Rows a model fitted at the end of tick ``k`` would train on: those of its (capped) training window's
        ticks outside periods marked abnormal; read only when :meth:`_counts_train_rows`. Live operation loads
        the window's ticks, so it counts the same."""
        def count() -> np.ndarray:
            rows = (self._rows_through(k) - self.fleet.marked_rows_before(k + 1)).astype(np.float64)
            start = k + 1 - self.service.train_window_ticks
            if start > self.fleet.tick_base:
                rows = rows - self.fleet.n_rows_before(start, trainable=True)
            return rows

        return self._tick_rows("train", k, count)

    def _bring_up(self, k: int, escalations: list, failed: dict, changed: np.ndarray | None = None, *,
                  new_models: list) -> tuple[np.ndarray, np.ndarray]:
        """First models for new streams, and another try for streams on a fall-back model; failures go to
        ``failed`` (and may escalate), the new models to ``new_models``."""
        fleet = self.fleet
        rows = self._rows_through(k)
        min_rows = max(int(self.settings.cold_min_seasons * self.season_length), 2)
        cold = (self.champion == NO_MODEL) & (rows >= min_rows)
        # A fall-back model is retried once a season of new history has arrived since its fit (more, after
        # retries that fell back for a reason more history does not end: _retry_gap).
        retry = self.is_fallback & (rows >= self.fallback_rows + self._retry_gap(k)) & (self.silent_for == 0)
        # Not a stream whose new model is already in shadow or waiting: one fit per stream and tick.
        retry &= (self.challenger == NO_MODEL) & (self.awaiting == NO_MODEL) & (self.champion != k)
        if changed is not None:
            retry &= ~changed
        todo = np.flatnonzero(cold | retry)
        seconds = np.zeros(fleet.n_streams)
        initial = np.zeros(fleet.n_streams, dtype=bool)
        if failed:
            todo = todo[~np.isin(todo, list(failed))]
        if len(todo):
            fitted = self.service.fit([ModelKey(int(s), k) for s in todo], on_error="skip")
            done = np.array([fm is not None for fm in fitted], dtype=bool)
            errors = {int(s): self.service.failures.get(ModelKey(int(s), k), "fit failed")
                      for s, ok in zip(todo, done) if not ok}
            if errors:
                self._record_failures(k, errors, escalations)
                failed.update(errors)
            todo, fitted = todo[done], [fm for fm in fitted if fm is not None]
            self._models_fitted(k, todo)
            for s, fm in zip(todo, fitted):
                seconds[s] = fm.seconds
                first = self.champion[s] == NO_MODEL
                if not first and fm.fallback_reason is not None and not fm.short_history:
                    self.fallback_retries[s] += 1
                new_models.append(NewModel(fm, "champion", "first model" if first else "retry of a fall-back model"))
                self._serve(s, fm)
                self._escalate_lasting_fallback(k, int(s), fm, escalations)
                # A retried fall-back keeps its place in the row count even when it falls back again.
                self.fallback_rows[s] = max(self.fallback_rows[s], int(rows[s]))
            initial[todo] = True
            if len(todo):
                self.policy.on_new_model(todo, k)
        return initial, seconds

    #: With all history as the training window, the longest wait between retries of a fall-back, in ticks (the
    #: default window of hourly data in daily ticks).
    MAX_RETRY_TICKS = 28

    def _retry_gap(self, k: int) -> np.ndarray:
        """Rows of new history a stream on a fall-back model waits for before it is fitted again: a season, so
        that a new stream short of history gets its model as soon as it has enough. Where a season is a tick or
        less (hourly data in daily ticks), that retried a fall-back for another reason (a constant series, a
        failed fit), which more history ends only if the data change, every tick, with an identical new version
        each time: there each retry in a row that fell back so doubles the wait, up to the rows of a training
        window (by then the fit sees none of the rows the last one saw; :data:`MAX_RETRY_TICKS` ticks with all
        history as the window). Coarser clocks (monthly data: a season is a year of ticks) keep a season."""
        steps = self.fleet.steps_in_tick(k)
        if self.season_length > steps:
            return np.full(len(self.fallback_retries), float(self.season_length))
        window = self.service.train_window_ticks or self.MAX_RETRY_TICKS
        gap = self.season_length * np.exp2(np.minimum(self.fallback_retries, 30))
        return np.minimum(gap, max(window * steps, self.season_length))

    def _escalate_lasting_fallback(self, k: int, s: int, fm, escalations: list) -> None:
        """Escalate (``cold``, once per run of fall-backs) a stream whose fall-back more history will not end.

        A new stream only short of history is expected to fall back, and a retry once its history is long
        enough ends that without a person (the stream page names the fall-back meanwhile): not escalated. A
        fall-back for another reason (a constant series, a failed fit) is, and so is one still short of
        history once the training window has moved a whole window past the run's start: the window then holds
        all it ever will (a sparse stream; a window too short for the model on every stream is refused when the
        model service is built, :func:`mlma.models.check_train_window`). The start-up's fits go
        through here too, but their escalations are not reported (:meth:`start`): a stream that is known to
        be unfittable then is not news later either.
        """
        if fm.fallback_reason is None or self.cold_escalated[s]:
            return
        window = self.service.train_window_ticks
        full = window is not None and k - self.fallback_since[s] >= window
        if fm.short_history and not full:
            return
        self.cold_escalated[s] = True
        why = f"; its {window}-tick training window is full" if fm.short_history else ""
        escalations.append(Escalation(s, k, "cold", 1, "the stream runs on a fall-back model that more history "
                                      f"will not end: {fm.fallback_reason}{why}"))

    def _issue_forecasts(self, k: int, escalations: list) -> dict[int, str]:
        """Forecast tick ``k + 1`` from each live stream's champion; returns the streams whose forecast failed.

        One stream's failure never stops the others (:meth:`ModelService.predict_many`): a stream whose
        champion raises, or returns infinite values, the wrong length or NaN from a history that holds values
        (:func:`mlma.models.base.unusable_forecast`), gets no forecast for tick
        ``k + 1`` (nothing is scored or written for it) and is tried again at the next tick. The first
        failure of a model is escalated (``forecast-failed``, severity 3, naming the model and the error);
        repeats of the same model are not, and the escalation clears once the stream forecasts again.
        """
        fleet = self.fleet
        steps = fleet.steps_in_tick(k + 1)
        forecast = np.full((fleet.n_streams, steps), np.nan)
        serving = np.flatnonzero((self.champion != NO_MODEL) & (self.silent_for < self.settings.silence_ticks))
        failed: dict[int, str] = {}
        if len(serving):
            # One fleet-wide call (in shards on a Dask cluster), not one call per stream.
            keys = [ModelKey(int(s), int(self.champion[s])) for s in serving]
            forecast[serving] = self.service.predict_many(keys, k + 1, on_error="skip")
            failed = {int(serving[i]): error for i, error in self.service.forecast_failures_of(keys, k + 1).items()}
        for s, error in failed.items():
            if self.forecast_broken[s] != self.champion[s]:
                escalations.append(Escalation(
                    s, k, "forecast-failed", 3,
                    f"the serving model (trained through tick {int(self.champion[s])}) failed to forecast tick "
                    f"{k + 1}; the stream has no forecast until it succeeds (tried again every tick). Error: "
                    f"{error}", slot="champion"))
            self.forecast_broken[s] = self.champion[s]
        ok = np.setdiff1d(serving, list(failed))
        self.forecast_broken[ok] = NO_MODEL
        self.forecast = forecast
        self.explained = self._explained(k + 1, ok, forecast) if self.events else None
        return failed

    def _explained(self, target_tick: int, streams: np.ndarray, forecast: np.ndarray) -> np.ndarray:
        """The explained scale of tick ``target_tick``'s forecasts (see :class:`mlma.explained.ExplainedScale`):
        the ``streams`` whose champion forecast it are forecast again with the event drivers at 0; the
        service skips those with no event in the tick (their scale is 1)."""
        counterfactual = np.full_like(forecast, np.nan)
        if len(streams):
            keys = [ModelKey(int(s), int(self.champion[s])) for s in streams]
            counterfactual[streams] = self.service.predict_at_baseline(keys, target_tick, self.events)
        return self.explained_scale.of(forecast, counterfactual)

    def models_in_use(self) -> set[ModelKey]:
        keys = set()
        for slots in (self.champion, self.challenger, self.awaiting):
            keys |= {ModelKey(int(s), int(t)) for s, t in enumerate(slots) if t != NO_MODEL}
        return keys


def stream_mean_loss(losses: np.ndarray) -> np.ndarray:
    """Each stream's mean loss over a tick's scored timestamps (NaN for a stream with none).

    >>> stream_mean_loss(np.array([[1.0, 3.0], [np.nan, np.nan]]))
    array([ 2., nan])
    """
    finite = np.isfinite(losses)
    counts = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.where(finite, losses, 0.0).sum(axis=1) / np.maximum(counts, 1), np.nan)
