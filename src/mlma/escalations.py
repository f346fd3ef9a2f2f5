"""Escalations: items for the engineer's queue, things the agent should not or could not fix alone."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

#: Kinds of escalation and what each asks of the engineer.
ESCALATION_KINDS = {
    "challenger-lost": "re-trained models lost to the serving one repeatedly; the champion keeps serving",
    "repeated-trigger": "the stream degraded again and again within a short window; re-training does not fix it",
    "data-quality": "the actuals look broken (outage, flat line, sudden zeros); no re-training on broken data",
    "silent": "the stream stopped reporting",
    "cold": ("the stream runs on a fall-back model that more history will not end (a constant series, a failed "
             "fit, a training window too short for the model); a new stream only short of history falls back "
             "too, but is not escalated: a retry fits its model once the history is long enough"),
    "budget": "re-trainings were queued because the per-tick budget was spent",
    "fit-failed": "re-training failed or timed out repeatedly; the champion keeps serving",
    "approval-needed": "a re-trained model beat the serving one and waits for a person's approval",
    "artifact-broken": "a model file is missing or damaged; the stream fell back to an earlier version or was "
                       "re-fitted on its window",
    "forecast-failed": ("a model failed to forecast (raised, or gave NaN, infinite values or the wrong length): the "
                        "stream has no forecast until it succeeds, or the challenger was rejected"),
    "fleet-retraining-lost": ("most re-trainings of one tick lost to the serving models, fleet-wide: a shared cause "
                              "(broken data in the training window, a feature the window cannot estimate)"),
    "executor-failed": ("fits could not run on the executor (a Dask cluster lost its scheduler, has no workers or "
                        "none that can run mlma; every worker busy past fit_timeout): not the streams' doing, so "
                        "not counted towards their fit_failure_limit; one item for the fleet, resolved by the agent "
                        "once fits run on the executor again"),
    "tick-failed": ("the agent's tick failed (a configuration error, the database, a bug): no stream is scored, "
                    "re-trained or forecast until it runs; resolved by the agent when the tick commits"),
}

#: Which of a stream's models an escalation is about (None: not about one model).
MODEL_SLOTS = (None, "champion", "challenger")


@dataclass(frozen=True)
class Escalation:
    """One item for the engineer: which stream, when, what kind, how severe (1 low - 3 high), and why.

    An escalation about one of the stream's models says which in ``slot`` (``"champion"``: the serving model,
    ``"challenger"``: the re-trained one in shadow). The agent knows its models by the tick they were trained
    through; live operation, which keeps the registry, names the model's registry version with
    :meth:`naming_version` so the engineer can find it (the number ``mlma promote`` and ``mlma rollback`` take).

    >>> e = Escalation(4, 17, "forecast-failed", 3, "the serving model failed to forecast tick 18", slot="champion")
    >>> e.naming_version(7).message
    'registry version 7: the serving model failed to forecast tick 18'
    """

    stream: int
    tick: int
    kind: str
    severity: int
    message: str
    slot: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ESCALATION_KINDS:
            raise ValueError(f"unknown escalation kind {self.kind!r}; known: {', '.join(ESCALATION_KINDS)}")
        if self.slot not in MODEL_SLOTS:
            raise ValueError(f"unknown model slot {self.slot!r} of a {self.kind} escalation; known: champion, "
                             "challenger (or None when the escalation is not about one model)")

    def naming_version(self, version: int) -> Escalation:
        """This escalation with the registry version of its model at the start of the message."""
        if self.slot is None:
            raise ValueError(f"a {self.kind} escalation of stream {self.stream} is not about one model: it has no "
                             "version to name")
        return replace(self, message=f"registry version {int(version)}: {self.message}")


def queue_items(kinds, ticks, groups) -> np.ndarray:
    """The item of the engineer's queue each escalation joins, numbered 0, 1, ... in order of first appearance.

    The queue's grouping rule (:func:`mlma.store.queries.escalation_queue`, which the dashboard, ``mlma
    escalations`` and the API show): escalations of one kind, raised in one tick, by streams with the same value
    of the grouping attribute (``city`` by default; streams without it share the value None) are one item, which
    a person reads and acts on at once. The backtest counts its labour in these items, as a person meets them.
    (The served queue also keeps fleet-wide escalations, which have no stream, apart; the agent raises every
    escalation about a stream, so the backtest has none.)

    >>> queue_items(["silent", "silent", "silent", "cold", "silent"], [5, 5, 5, 5, 6],
    ...             ["Berlin", "Berlin", "Paris", "Berlin", None]).tolist()
    [0, 0, 1, 2, 3]
    """
    # By position: a Series argument's index (a slice of a larger frame) must not align the three.
    columns = {name: np.asarray(list(values), dtype=object)
               for name, values in (("kind", kinds), ("tick", ticks), ("group", groups))}
    sizes = {name: len(values) for name, values in columns.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"queue_items needs one kind, tick and group per escalation, got lengths {sizes}")
    frame = pd.DataFrame(columns)
    if frame.empty:
        return np.empty(0, dtype=np.int64)
    return frame.groupby(["kind", "tick", "group"], dropna=False, sort=False).ngroup().to_numpy(dtype=np.int64)


def cleared_conditions(*, promoted: np.ndarray, rejected: np.ndarray, fitted: np.ndarray, initial_fit: np.ndarray,
                       reported: np.ndarray, flagged: np.ndarray, on_model: np.ndarray,
                       forecasted: np.ndarray | None = None,
                       dropped: np.ndarray | None = None,
                       executor_back: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Escalation kinds whose condition cleared in a tick, with the stream ids, from boolean arrays over streams.

    The one rule for resolving escalations without a person, applied by the live agent (through the store) and
    by the backtest (:class:`EscalationBook`) alike:

    - ``challenger-lost``, ``repeated-trigger``: a new model serves (promoted);
    - ``approval-needed``: a new model serves, or the waiting one was rejected or ``dropped`` (replaced by a
      person's forced re-training);
    - ``fit-failed``: a fit succeeded (``fitted``: re-trained without failure, or a first fit);
    - ``silent``: the stream reported; ``data-quality``: it reported and the policy no longer flags its data;
    - ``cold``: a regular (not fall-back) model serves it after a new model came in;
    - ``forecast-failed``: the stream's forecast for the next tick was issued (``forecasted``);
    - ``executor-failed``: fits ran on the executor again (``executor_back``: the stream carrying the fleet's
      item).

    Kinds a person or the shell resolves (``artifact-broken``, ``budget``, ``fleet-retraining-lost``) are not
    here. Kinds with no stream are left out (the store resolves ``tick-failed`` when a tick commits).

    >>> no, yes = np.zeros(2, dtype=bool), np.array([True, False])
    >>> cleared = cleared_conditions(promoted=no, rejected=no, fitted=no, initial_fit=no, reported=yes,
    ...                              flagged=no, on_model=yes)
    >>> {kind: streams.tolist() for kind, streams in cleared.items()}
    {'silent': [0], 'data-quality': [0]}
    """
    masks = {
        "challenger-lost": promoted, "repeated-trigger": promoted, "approval-needed": promoted | rejected,
        "fit-failed": fitted | initial_fit, "silent": reported, "data-quality": reported & ~flagged,
        "cold": on_model & (promoted | initial_fit),
    }
    if forecasted is not None:
        masks["forecast-failed"] = forecasted
    if dropped is not None:
        masks["approval-needed"] = masks["approval-needed"] | dropped
    if executor_back is not None:
        masks["executor-failed"] = executor_back
    return {kind: np.flatnonzero(mask) for kind, mask in masks.items() if mask.any()}


class EscalationBook:
    """A fleet's escalations in memory, resolved by the rule the store applies (the backtest's queue).

    Each tick first resolves the unresolved escalations whose condition cleared (every one of that kind for
    the stream, as :meth:`mlma.store.Store.write_tick` does), then adds the tick's new ones: an escalation
    raised in a tick is not resolved by that same tick.

    >>> book = EscalationBook()
    >>> book.record(5, [Escalation(0, 5, "silent", 1, "no actuals")], {})
    {}
    >>> book.record(6, [], {"silent": np.array([0, 1])})
    {'silent': 1}
    >>> book.resolved_tick
    [6]
    """

    def __init__(self) -> None:
        self.items: list[Escalation] = []
        #: Per item (same order): the tick that resolved it, or None while it is unresolved.
        self.resolved_tick: list[int | None] = []
        self._open: dict[tuple[str, int], list[int]] = {}

    def record(self, tick: int, new: list[Escalation], cleared: dict[str, np.ndarray]) -> dict[str, int]:
        """Resolve what ``cleared`` names, then add ``new``; returns how many were resolved, by kind."""
        counts: dict[str, int] = {}
        for kind, streams in cleared.items():
            for s in np.asarray(streams, dtype=np.int64).tolist():
                for i in self._open.pop((kind, s), []):
                    self.resolved_tick[i] = int(tick)
                    counts[kind] = counts.get(kind, 0) + 1
        for item in new:
            self._open.setdefault((item.kind, int(item.stream)), []).append(len(self.items))
            self.items.append(item)
            self.resolved_tick.append(None)
        return counts

    @property
    def n_open(self) -> int:
        """Escalations not resolved."""
        return sum(len(v) for v in self._open.values())
