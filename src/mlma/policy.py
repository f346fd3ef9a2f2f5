"""Re-training policies: given one tick's scored losses for the whole fleet, which streams re-train?

A policy sees a :class:`TickObservation` (arrays over all streams) and returns a :class:`Decision` (arrays
over all streams). Policies are pure decision logic plus a little per-stream state; fitting models, checking
challengers and promoting them is the agent's job (:mod:`mlma.agent`). The same policy object therefore runs
unchanged in a backtest and in live operation.

The baselines that need no monitoring live here: :class:`NeverRetrain`, :class:`PeriodicRetrain` and
:class:`AlwaysRetrain`. Build any policy from its name with :func:`make_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class Verdict(IntEnum):
    """The outcome of one stream's check in one tick."""

    OK = 0
    DEGRADED = 1
    WARMING_UP = 2
    COOLING_DOWN = 3
    PINNED = 4
    NO_DATA = 5
    UNMONITORED = 6
    COLD = 7
    ABNORMAL = 8

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass
class TickObservation:
    """What a policy sees at the end of tick ``tick``: arrays over all streams of the fleet.

    ``losses`` and ``scaled_losses`` are ``(n_streams, steps)`` with NaN where a timestamp had no actual
    or no forecast.
    """

    tick: int
    actuals: np.ndarray
    losses: np.ndarray
    scaled_losses: np.ndarray
    has_model: np.ndarray
    ticks_since_fit: np.ndarray
    observed: np.ndarray
    abnormal: np.ndarray | None = None
    #: Signed errors (actual - forecast), ``(n_streams, steps)``, NaN like ``losses``; None when unknown.
    errors: np.ndarray | None = None

    @property
    def n_streams(self) -> int:
        return self.losses.shape[0]

    @property
    def scored(self) -> np.ndarray:
        """Streams with at least one scored loss this tick."""
        return np.isfinite(self.losses).any(axis=1)


@dataclass
class Decision:
    """A policy's answer for one tick, arrays over all streams."""

    retrain: np.ndarray
    verdict: np.ndarray
    reason: np.ndarray
    p_value: np.ndarray | None = None
    effect: np.ndarray | None = None
    escalations: list = field(default_factory=list)

    @classmethod
    def nothing(cls, n_streams: int, verdict: Verdict = Verdict.UNMONITORED) -> "Decision":
        return cls(
            retrain=np.zeros(n_streams, dtype=bool),
            verdict=np.full(n_streams, int(verdict), dtype=np.int8),
            reason=np.full(n_streams, "", dtype=object),
        )


class Policy:
    """Base class: decides from a :class:`TickObservation` which streams re-train.

    Subclasses set ``name`` and implement :meth:`decide`. ``checks_challenger`` says whether a re-trained
    model must beat the champion before promotion (the monitoring policy does; the naive baselines promote
    blindly, as they do in practice).
    """

    name: str = "policy"
    checks_challenger: bool = False
    #: Names of the per-stream numpy arrays (first axis: streams) that make up the policy's state.
    STATE: tuple[str, ...] = ()

    def reset(self, n_streams: int, season_length: int, steps_per_tick: int) -> None:
        """Prepare per-stream state for a fleet of ``n_streams`` streams."""
        self.n_streams = n_streams
        self.season_length = season_length
        self.steps_per_tick = steps_per_tick

    def decide(self, obs: TickObservation) -> Decision:
        raise NotImplementedError

    def grow(self, n_streams: int) -> None:
        """Make room for streams that appeared since :meth:`reset` (live operation)."""
        self.n_streams = n_streams

    def on_new_model(self, streams: np.ndarray, tick: int) -> None:
        """Called after a new model version starts serving on ``streams`` (promotion or first fit)."""

    def on_challenger_lost(self, streams: np.ndarray, tick: int) -> None:
        """Called when the challengers of ``streams`` were rejected (the champion keeps serving)."""

    def on_challenger_judged(self, streams: np.ndarray, tick: int, challenger_loss: np.ndarray,
                             champion_loss: np.ndarray) -> None:
        """Called with the mean losses (in :meth:`challenger_loss`'s units) of every challenger judged this
        tick and of its champion on the same timestamps, won or lost: what the re-trainings paid."""

    def challenger_loss(self, errors: np.ndarray) -> np.ndarray:
        """The loss a challenger is judged on, from signed errors; the policy's own loss when it has one."""
        return np.abs(errors)

    def reset_reference(self, streams: np.ndarray, tick: int, *, rebase: bool = False) -> None:
        """Start the streams' references afresh; policies without references have nothing to do."""

    def set_overrides(self, **overrides) -> None:
        """Per-stream monitoring parameters; policies without parameters ignore them."""

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The per-stream state, for saving (see :attr:`STATE`)."""
        return {name: getattr(self, name) for name in self.STATE}

    def load_state_arrays(self, arrays) -> None:
        """Restore saved state into a policy :meth:`reset` for at least as many streams as were saved.

        Streams that appeared since the state was saved keep their fresh (reset) values.
        """
        for name in self.STATE:
            if name not in arrays:
                raise ValueError(f"saved policy state lacks {name!r}; it was saved by another policy or version")
            target, saved = getattr(self, name), np.asarray(arrays[name])
            if saved.shape[1:] != target.shape[1:] or saved.shape[0] > target.shape[0]:
                raise ValueError(f"saved policy state {name!r} has shape {saved.shape}, which does not fit "
                                 f"{target.shape}: the tick length or the policy's settings changed")
            target[:saved.shape[0]] = saved

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class NeverRetrain(Policy):
    """Fit once, never re-train: the cheapest baseline and what unmonitored fleets do."""

    name = "never"

    def decide(self, obs: TickObservation) -> Decision:
        return Decision.nothing(obs.n_streams)


class PeriodicRetrain(Policy):
    """Re-train every stream whose model is ``every`` ticks old or older (e.g. weekly for daily ticks).

    >>> policy = PeriodicRetrain(every=7)
    >>> policy.name
    'periodic:7'
    """

    def __init__(self, every: int) -> None:
        if not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"periodic re-training needs a whole number of ticks >= 1, got {every!r}")
        self.every = int(every)
        self.name = f"periodic:{self.every}"

    def decide(self, obs: TickObservation) -> Decision:
        decision = Decision.nothing(obs.n_streams)
        due = obs.has_model & obs.scored & (obs.ticks_since_fit >= self.every)
        decision.retrain = due
        decision.reason[due] = f"scheduled: every {self.every} ticks"
        return decision


class AlwaysRetrain(Policy):
    """Re-train every stream with new data at every tick: the accuracy ceiling of naive policies."""

    name = "always"

    def decide(self, obs: TickObservation) -> Decision:
        decision = Decision.nothing(obs.n_streams)
        decision.retrain = obs.has_model & obs.scored
        decision.reason[decision.retrain] = "scheduled: every tick"
        return decision


def available_policies() -> list[str]:
    """Names accepted by :func:`make_policy` (``periodic`` takes ``:k``)."""
    return ["never", "periodic:K", "always", "mlma", "adwin", "page-hinkley"]


def make_policy(spec: str, **params) -> Policy:
    """Build a policy from its name, e.g. ``"never"``, ``"periodic:7"``, ``"always"``, ``"mlma"``.

    >>> make_policy("periodic:3").every
    3
    >>> make_policy("sometimes")
    Traceback (most recent call last):
    ...
    ValueError: unknown policy 'sometimes'; choose from never, periodic:K, always, mlma, adwin, page-hinkley
    """
    name, _, arg = spec.strip().partition(":")
    name = name.lower()
    if name == "never":
        return NeverRetrain()
    if name == "always":
        return AlwaysRetrain()
    if name == "periodic":
        try:
            every = int(arg) if arg else 7
        except ValueError:
            raise ValueError(f"periodic policy needs a whole number of ticks, as in 'periodic:7'; got {spec!r}")
        return PeriodicRetrain(every)
    if name == "mlma":
        from mlma.mlma_policy import MLMAPolicy

        return MLMAPolicy(**params)
    if name in ("adwin", "page-hinkley", "pagehinkley", "ph"):
        from mlma.drift_policy import DriftDetectorPolicy

        return DriftDetectorPolicy("adwin" if name == "adwin" else "page-hinkley")
    raise ValueError(f"unknown policy {spec!r}; choose from {', '.join(available_policies())}")
