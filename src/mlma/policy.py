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

#: The losses the MLMA policy can test (see ``MLMAPolicy``'s ``loss``); here, in this light module, because
#: the project's configuration checks ``[monitor] loss`` without loading the statistics stack.
LOSSES = ("absolute", "squared", "relative")


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
    #: Per stream, the ticks without actuals since its last actuals that its own rhythm does not explain
    #: (:class:`mlma.silence.Silence`: a shop's weekends do not count); None when unknown (a policy then
    #: counts every tick without actuals).
    silent_for: np.ndarray | None = None
    #: Whether :attr:`silent_for` leaves a rhythm out (the tick clock's season is one the agent keeps a rhythm
    #: for: :attr:`mlma.silence.Silence.memory`); False: it counts every tick without actuals.
    silence_rhythm: bool = False
    #: Signed errors (actual - forecast), ``(n_streams, steps)``, NaN like ``losses``; None when unknown.
    errors: np.ndarray | None = None
    #: The served forecasts of the tick, ``(n_streams, steps)``, NaN where none (also where the actual is
    #: missing); None when unknown (a policy needing them then uses ``actuals - errors``).
    forecasts: np.ndarray | None = None
    #: Divisors of the tick's errors, ``(n_streams, steps)``: the level change the serving model attributes
    #: to the declared event drivers (:class:`mlma.explained.ExplainedScale`), 1 where no event runs; None
    #: when the fleet declares no events. The MLMA policy's absolute and squared losses divide by it.
    explained: np.ndarray | None = None
    #: Rows of history a model fitted at the end of this tick would train on, per stream: the rows of the
    #: training window's ticks (at most its ticks times the tick's steps), leaving out rows in periods marked
    #: abnormal, which the fit leaves out; None when unknown, and when the training window is all history
    #: (no window caps it).
    train_rows: np.ndarray | None = None
    #: Streams the agent re-trains in no case this tick: a re-trained model of theirs is still being judged (in
    #: shadow, or waiting for approval), whose verdict comes first, or a person put a model in service for
    #: them this tick (a roll-back). (Not a stream whose challenger a person's forced re-training replaces: it is
    #: re-trained this tick.) A policy should not choose them, nor count their evidence as a trigger acted on;
    #: None when unknown.
    busy: np.ndarray | None = None

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
    #: Re-trainings to serve at once, without a challenger check (a scheduled refresh, as a schedule serves
    #: its fits); None: every re-training of a policy that checks challengers is checked.
    serve_at_once: np.ndarray | None = None
    #: Each stream's mean loss of the tick in the policy's own loss, the units of its reference
    #: (:meth:`Policy.reference_mean`); None: the mean absolute error.
    loss: np.ndarray | None = None

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
    #: Whether :meth:`decide` reads :attr:`TickObservation.train_rows` (the agent counts them only then).
    needs_train_rows: bool = False
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

    def identify_streams(self, ids) -> None:
        """The streams' stable identities (their ``unique_id``), in index order; the agent gives them after
        :meth:`reset`. A stream's index depends on the run (a backtest sorts the ids, a live store numbers
        streams as they arrive), its identity does not: a policy that schedules streams (a phase, a stagger)
        uses the identity, so that the backtest and live operation schedule each stream alike."""

    def on_new_model(self, streams: np.ndarray, tick: int) -> None:
        """Called after a new model version starts serving on ``streams`` (promotion or first fit)."""

    def on_challenger_lost(self, streams: np.ndarray, tick: int) -> None:
        """Called when the challengers of ``streams`` were rejected (the champion keeps serving)."""

    def on_challenger_dropped(self, streams: np.ndarray, tick: int) -> None:
        """Called when the challengers (in shadow or waiting for approval) of ``streams`` were dropped without a
        verdict: their artifact cannot be loaded, or a person put another model in service. Nothing was
        learnt about re-training those streams."""

    def on_models_fitted(self, streams: np.ndarray, tick: int, train_rows: np.ndarray) -> None:
        """Called after new models of ``streams`` were fitted at the end of ``tick`` (re-trainings and first
        models, whether they serve at once or go into shadow; failed fits are not), before
        :meth:`on_new_model`; ``train_rows[i]`` is the rows of history the model of ``streams[i]`` was fitted
        on, in the units of :attr:`TickObservation.train_rows` (NaN when the policy does not read them or the
        training window is all history)."""

    def on_challenger_judged(self, streams: np.ndarray, tick: int, challenger_loss: np.ndarray,
                             champion_loss: np.ndarray) -> None:
        """Called with the mean losses (in :meth:`challenger_loss`'s units) of every challenger judged this
        tick and of its champion on the same timestamps, won or lost: what the re-trainings paid."""

    def challenger_loss(self, errors: np.ndarray, forecasts: np.ndarray | None = None,
                        stream: int | None = None, explained: np.ndarray | None = None) -> np.ndarray:
        """The loss a challenger is judged on, from signed errors; the policy's own loss when it has one.

        ``forecasts`` are the serving model's forecasts of the same timestamps and ``stream`` the stream's
        index, for a loss relative to the forecast's level; ``explained`` the serving model's explained
        scale of those timestamps (:attr:`TickObservation.explained`), a common divisor for the challenger
        and the champion. The absolute error here ignores them."""
        return np.abs(errors)

    def reset_reference(self, streams: np.ndarray, tick: int, *, rebase: bool = False) -> None:
        """Start the streams' references afresh; policies without references have nothing to do."""

    def set_overrides(self, **overrides) -> None:
        """Per-stream monitoring parameters; policies without parameters ignore them."""

    def reference_mean(self) -> np.ndarray:
        """Each stream's mean reference loss (NaN while it has none); policies without references: all NaN."""
        return np.full(self.n_streams, np.nan)

    def flagged_streams(self) -> np.ndarray:
        """Streams whose recent data the policy holds for broken (data-quality); none for policies that do not
        look at the data."""
        return np.zeros(self.n_streams, dtype=bool)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The per-stream state, for saving (see :attr:`STATE`)."""
        return {name: getattr(self, name) for name in self.STATE}

    @classmethod
    def optional_state(cls) -> frozenset[str]:
        """The arrays of :attr:`STATE` a saved state may lack (:meth:`load_state_arrays` starts them fresh);
        none by default: any missing array means the state was saved by another policy or version."""
        return frozenset()

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


_GOLDEN = (5 ** 0.5 - 1) / 2


class PeriodicRetrain(Policy):
    """Re-train every stream every ``every`` ticks (e.g. weekly for daily ticks).

    Staggered by default: stream ``s`` is due at the ticks ``k`` with ``k % every == phase[s]``, so each
    stream keeps its own phase and about one ``every``-th of the fleet re-trains at each tick, as a sensible
    cron spreads its load. The phases are the golden-ratio (Weyl) sequence ``floor(frac(s * 0.618...) *
    every)``: spread evenly over the whole period for any fleet size (each phase holds ``n / every`` streams
    give or take two, and a period longer than the fleet is still covered, not just its first ``n`` ticks),
    and fixed by the stream's index alone, so a stream has the same phase in every run and in live operation
    (streams keep their index; new ones are appended). A stream that had no data at its due tick re-trains at
    its next tick with data, then returns to its phase.
    ``stagger=False`` re-trains every stream whose model is ``every`` ticks old or older: after a common
    first fit, the whole fleet at once (``periodic:K:sync``).

    >>> PeriodicRetrain(every=7).name, PeriodicRetrain(every=7, stagger=False).name
    ('periodic:7', 'periodic:7:sync')
    """

    #: The longest period: a million ticks (over a century of hourly ticks) is "never"; larger ones overflowed
    #: the phases' 64-bit integers and re-trained nothing without a word.
    MAX_EVERY = 1_000_000

    def __init__(self, every: int = 7, stagger: bool = True) -> None:
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or not 1 <= every <= self.MAX_EVERY:
            raise ValueError(f"periodic re-training needs a whole number of ticks from 1 to {self.MAX_EVERY:,} "
                             f"(a longer period is `never`), got {every!r}")
        self.every = int(every)
        self.stagger = bool(stagger)
        self.name = f"periodic:{self.every}" + ("" if self.stagger else ":sync")

    def phase(self, n_streams: int) -> np.ndarray:
        """Each stream's phase: it is due at ticks ``k`` with ``k % every == phase``.

        >>> PeriodicRetrain(every=4).phase(6).tolist()
        [0, 2, 0, 3, 1, 0]
        """
        return np.floor((np.arange(n_streams) * _GOLDEN % 1.0) * self.every).astype(np.int64)

    def decide(self, obs: TickObservation) -> Decision:
        decision = Decision.nothing(obs.n_streams)
        if self.stagger:
            on_phase = self.phase(obs.n_streams) == obs.tick % self.every
            # Older than a full period: its due tick passed without data, so catch up now.
            due = on_phase | (obs.ticks_since_fit > self.every)
        else:
            due = obs.ticks_since_fit >= self.every
        due = due & obs.has_model & obs.scored
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
    """Names accepted by :func:`make_policy` (``periodic`` takes ``:K``, any policy ``:key=value``)."""
    return ["never", "periodic:K", "periodic:K:sync", "always", "mlma", "adwin", "page-hinkley"]


@dataclass(frozen=True)
class PolicySpec:
    """A parsed policy spec ``name[:arg...][:key=value...]``.

    >>> PolicySpec.parse("mlma:alpha=0.1:budget=20")
    PolicySpec(name='mlma', args=(), params=(('alpha', '0.1'), ('budget', '20')))
    >>> PolicySpec.parse(" Periodic:7:sync ").canonical
    'periodic:7:sync'
    """

    name: str
    args: tuple[str, ...] = ()
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "PolicySpec":
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"a policy spec must be a non-empty string such as 'periodic:7', got {spec!r}")
        name, *parts = [part.strip() for part in spec.strip().split(":")]
        args, params, seen = [], [], set()
        for part in parts:
            key, eq, value = part.partition("=")
            key = key.strip()
            if not eq:
                if params:
                    raise ValueError(f"policy spec {spec!r}: {part!r} comes after key=value settings; put plain "
                                     f"arguments first, as in 'periodic:7:sync'")
                args.append(part.lower())
                continue
            if not key or not value.strip():
                raise ValueError(f"policy spec {spec!r}: {part!r} is not of the form key=value")
            if key in seen:
                raise ValueError(f"policy spec {spec!r} sets {key!r} twice")
            seen.add(key)
            params.append((key, value.strip()))
        return cls(name.lower(), tuple(args), tuple(params))

    @property
    def canonical(self) -> str:
        """The spec written back: the policy's name in results."""
        return ":".join([self.name, *self.args, *(f"{k}={v}" for k, v in self.params)])


def expand_grid(grid: str) -> list[str]:
    """The policy specs of a sweep: every ``key=v1,v2,...`` setting takes each of its values in turn.

    >>> expand_grid("adwin:delta=0.001,0.01")
    ['adwin:delta=0.001', 'adwin:delta=0.01']
    >>> expand_grid("mlma:alpha=0.1,0.2:budget=5,10")
    ['mlma:alpha=0.1:budget=5', 'mlma:alpha=0.1:budget=10', 'mlma:alpha=0.2:budget=5', 'mlma:alpha=0.2:budget=10']
    """
    import itertools

    parsed = PolicySpec.parse(grid)
    choices = []
    for key, values in parsed.params:
        options = [v.strip() for v in values.split(",")]
        if not all(options):
            raise ValueError(f"sweep {grid!r}: {key}={values!r} has an empty value")
        choices.append([(key, v) for v in options])
    return [PolicySpec(parsed.name, parsed.args, tuple(combo)).canonical for combo in itertools.product(*choices)]


def parameter_types(target) -> dict[str, tuple[tuple, object]]:
    """The keyword parameters of a class or callable: name -> (accepted types, default).

    Types come from the annotations, else from the default's type; ``*args``/``**kwargs`` are left out.

    >>> parameter_types(PeriodicRetrain)
    {'every': ((<class 'int'>,), 7), 'stagger': ((<class 'bool'>,), True)}
    """
    import inspect
    import typing

    init = target.__init__ if isinstance(target, type) else target
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - annotations that cannot be evaluated: fall back to the defaults
        hints = {}
    out = {}
    for name, param in inspect.signature(target).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        hint = hints.get(name)
        if hint is None and isinstance(param.annotation, str):
            hint = {"int": int, "float": float, "str": str, "bool": bool}.get(param.annotation)
        if hint is not None:
            types = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UnionType) else (hint,)
        elif param.default is not inspect.Parameter.empty and param.default is not None:
            types = (type(param.default),)
        else:
            types = (str,)
        default = None if param.default is inspect.Parameter.empty else param.default
        if param.default is None and type(None) not in types:
            types = (*types, type(None))
        out[name] = (tuple(types), default)
    return out


try:  # ``int | None`` annotations
    from types import UnionType as _UnionType
except ImportError:  # pragma: no cover - Python < 3.10
    _UnionType = type(None)


def convert_params(policy: str, raw: dict[str, str], accepted: dict[str, tuple[tuple, object]]) -> dict:
    """Convert ``key=value`` strings to the types ``accepted`` gives (see :func:`parameter_types`).

    >>> convert_params("mlma", {"alpha": "0.1", "budget": "none"},
    ...                {"alpha": ((float,), 0.2), "budget": ((int, type(None)), None)})
    {'alpha': 0.1, 'budget': None}
    >>> convert_params("adwin", {"delt": "0.1"}, {"delta": ((float,), 0.002)})
    Traceback (most recent call last):
    ...
    ValueError: policy adwin has no parameter 'delt'; its parameters are: delta
    """
    out = {}
    for key, text in raw.items():
        if key not in accepted:
            raise ValueError(f"policy {policy} has no parameter {key!r}; its parameters are: "
                             f"{', '.join(accepted) or '(none)'}")
        types, _ = accepted[key]
        out[key] = _convert(policy, key, text, types)
    return out


def _convert(policy: str, key: str, text: str, types: tuple) -> object:
    if not isinstance(text, str):
        return text
    lowered = text.strip().lower()
    if type(None) in types and lowered in ("none", "null"):
        return None
    for kind in types:
        if kind is bool:
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
        elif kind is int:
            try:
                return int(lowered)
            except ValueError:
                pass
        elif kind is float:
            try:
                return float(lowered)
            except ValueError:
                pass
        elif kind is str:
            return text.strip()
    wanted = " or ".join("none" if t is type(None) else getattr(t, "__name__", str(t)) for t in types)
    raise ValueError(f"policy {policy}: parameter {key}={text!r} must be {wanted}")


_KINDS = {"never": "never", "always": "always", "periodic": "periodic", "mlma": "mlma", "adwin": "adwin",
          "page-hinkley": "page-hinkley", "pagehinkley": "page-hinkley", "ph": "page-hinkley"}


def policy_kind(spec: str) -> str:
    """Check a policy name and say which kind it is, without building the policy.

    Project files are checked by every command, ``mlma status`` included, and building ``mlma`` would import
    SciPy; this check costs nothing.

    >>> policy_kind("Periodic:3"), policy_kind("ph"), policy_kind("mlma")
    ('periodic', 'page-hinkley', 'mlma')
    >>> policy_kind("periodic:0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: periodic re-training needs a whole number of ticks from 1 to 1,000,000 (...), got 0
    """
    kind = _KINDS.get(PolicySpec.parse(spec).name)
    if kind is None:
        raise ValueError(f"unknown policy {spec!r}; choose from {', '.join(available_policies())}")
    if kind == "periodic":
        make_policy(spec)  # cheap to build, and its own checks are the ones that count
    return kind


def make_policy(spec: str, **params) -> Policy:
    """Build a policy from its spec: a name, plain arguments, then ``key=value`` settings.

    ``"never"``, ``"always"``, ``"periodic:7"`` (staggered), ``"periodic:7:sync"``, ``"mlma:alpha=0.1"``,
    ``"adwin:delta=0.01"``, ``"page-hinkley:threshold=20"``. Values are converted to the types of the
    policy's constructor; an unknown key is an error that lists the valid ones. ``params`` are further
    settings given as Python values (e.g. from a project file); the spec's own settings take precedence only
    when the two do not overlap. The policy is named by its spec, so two settings of one policy can run side
    by side in a backtest.

    >>> make_policy("periodic:3").every
    3
    >>> make_policy("sometimes")
    Traceback (most recent call last):
    ...
    ValueError: unknown policy 'sometimes'; choose from never, periodic:K, periodic:K:sync, always, mlma, adwin, page-hinkley
    >>> make_policy("periodic:7:often")
    Traceback (most recent call last):
    ...
    ValueError: policy periodic: unexpected argument 'often' in 'periodic:7:often'; use 'periodic:K' or 'periodic:K:sync'
    >>> make_policy("periodic:7:sync:sync")
    Traceback (most recent call last):
    ...
    ValueError: policy periodic: unexpected argument 'sync' in 'periodic:7:sync:sync'; use 'periodic:K' or 'periodic:K:sync'
    >>> make_policy("periodic:\u00b2")
    Traceback (most recent call last):
    ...
    ValueError: policy periodic: unexpected argument '²' in 'periodic:²'; use 'periodic:K' or 'periodic:K:sync'
    >>> make_policy("periodic")
    Traceback (most recent call last):
    ...
    ValueError: policy 'periodic' needs its period in ticks: write it 'periodic:K' (staggered) or ...
    """
    parsed = PolicySpec.parse(spec)
    name = {"pagehinkley": "page-hinkley", "ph": "page-hinkley"}.get(parsed.name, parsed.name)
    raw = dict(parsed.params)
    overlap = sorted(set(raw) & set(params))
    if overlap:
        raise ValueError(f"policy {spec!r}: {', '.join(overlap)} given both in the spec and as a setting")

    def build(factory, accepted, positional: dict | None = None):
        values = convert_params(name, raw, accepted)
        for key, value in (positional or {}).items():
            if key in values:
                raise ValueError(f"policy {spec!r}: {key} given twice")
            values[key] = value
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(f"policy {name} has no parameter {unknown[0]!r}; its parameters are: "
                             f"{', '.join(accepted) or '(none)'}")
        return factory(**values, **params)

    if name == "periodic":
        positional: dict = {}
        for arg in parsed.args:
            # Each once ('periodic:7:sync:sync' was taken), digits of ASCII only ('periodic:²' failed in int()).
            if arg == "sync" and "stagger" not in positional:
                positional["stagger"] = False
            elif arg.isascii() and arg.isdigit() and "every" not in positional:
                positional["every"] = int(arg)
            else:
                raise ValueError(f"policy periodic: unexpected argument {arg!r} in {spec!r}; use 'periodic:K' or "
                                 f"'periodic:K:sync'")
        if "every" not in positional and "every" not in raw and "every" not in params:
            # A bare 'periodic' would silently be PeriodicRetrain's default of 7: the period is the policy.
            raise ValueError(f"policy {spec!r} needs its period in ticks: write it 'periodic:K' (staggered) or "
                             f"'periodic:K:sync', e.g. 'periodic:7'")
        policy = build(PeriodicRetrain, parameter_types(PeriodicRetrain), positional)
    else:
        if parsed.args:
            raise ValueError(f"policy {name}: unexpected argument {parsed.args[0]!r} in {spec!r}; settings are "
                             f"written key=value, as in '{name}:key=value'")
        if name == "never":
            policy = build(NeverRetrain, {})
        elif name == "always":
            policy = build(AlwaysRetrain, {})
        elif name == "mlma":
            from mlma.mlma_policy import MLMAPolicy

            policy = build(MLMAPolicy, parameter_types(MLMAPolicy))
        elif name in ("adwin", "page-hinkley"):
            from mlma.drift_policy import DriftDetectorPolicy, detector_parameters

            policy = build(lambda **kw: DriftDetectorPolicy(name, **kw), detector_parameters(name))
        else:
            raise ValueError(f"unknown policy {spec!r}; choose from {', '.join(available_policies())}")
    if name != "periodic" and parsed.params:
        policy.name = ":".join([name, *(f"{k}={v}" for k, v in parsed.params)])
    return policy
