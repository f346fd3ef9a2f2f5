"""Scoring a policy's re-training triggers and its escalations against the simulator's ground-truth events.

A *relevant* event is a real change a model should adapt to (level shift, drift, changed daily profile,
campaign; see :mod:`mlma.simulate`). A trigger (a re-training request) on a stream is a true positive when it
falls within ``window_ticks`` ticks after the start of a relevant event on that stream; every other trigger
is a false one, including triggers caused by one-off shocks and data outages, which re-training cannot help.

- precision: true triggers / all triggers;
- recall: relevant events with at least one trigger in their window / relevant events scored;
- delay: ticks from the event's start tick to its first trigger, averaged over detected events.

Escalations are the labour a policy asks of people (:func:`labour_scores`). They come in two classes:
escalations about the *data* (a stream that went silent, broken actuals, a stream whose fall-back model more
history will not end), where the queue does its job when the data really is in trouble; and escalations about
the *agent's own re-training* (repeated triggers, lost challengers, failed fits, a spent budget), the labour to
cut. Each is counted per 1,000 stream-days scored, and so are the items of the engineer's queue they make
(escalations of one kind, tick and group of streams, :func:`mlma.escalations.queue_items`); with ground truth,
an escalation is *precise* when its stream had an event that needs a person (:data:`NEEDS_A_PERSON`: a data
fault, a closure or a launch) active within ``window_ticks`` ticks before it, up to the end of its tick.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mlma.escalations import queue_items


def detection_scores(triggers: pd.DataFrame, events: pd.DataFrame, fleet, *, window_ticks: int = 7,
                     first_tick: int = 0) -> dict:
    """Precision, recall and mean delay (in ticks) of ``triggers`` against ``events``.

    Parameters
    ----------
    triggers
        Rows with ``unique_id`` and ``tick`` (one per re-training request).
    events
        Ground truth with ``unique_id``, ``start`` and ``relevant``.
    fleet
        Gives the tick boundaries, to place each event in a tick.
    window_ticks
        How many ticks after an event's start a trigger still counts as detecting it.
    first_tick
        Events starting before this tick are not scored (the models were fitted on them).

    Examples
    --------
    >>> class Fleet:
    ...     boundaries = pd.date_range("2025-01-01", periods=11, freq="D")
    >>> events = pd.DataFrame({"unique_id": ["a", "b"], "start": pd.to_datetime(["2025-01-03", "2025-01-05"]),
    ...                        "relevant": [True, True]})
    >>> triggers = pd.DataFrame({"unique_id": ["a", "a", "c"], "tick": [3, 8, 4]})
    >>> detection_scores(triggers, events, Fleet(), window_ticks=2)
    {'detection_precision': 0.3333, 'detection_recall': 0.5, 'detection_delay_ticks': 1.0, 'relevant_events': 2}
    """
    bounds = pd.DatetimeIndex(getattr(fleet.boundaries, "index", fleet.boundaries))
    relevant = events[events["relevant"].astype(bool)].copy()
    relevant["start_tick"] = np.searchsorted(bounds.values, pd.to_datetime(relevant["start"]).values,
                                             side="right") - 1
    relevant = relevant[(relevant["start_tick"] >= first_tick) & (relevant["start_tick"] < len(bounds) - 1)]
    relevant = relevant.drop_duplicates(["unique_id", "start_tick"])

    true_trigger = np.zeros(len(triggers), dtype=bool)
    delays: list[int] = []
    # Per stream: the positions of its triggers in ``triggers`` and their ticks.
    groups = triggers.reset_index(drop=True).groupby("unique_id").groups
    positions = {uid: rows.to_numpy() for uid, rows in groups.items()}
    tick_of = triggers["tick"].to_numpy()
    for uid, start in zip(relevant["unique_id"], relevant["start_tick"]):
        rows = positions.get(uid)
        if rows is None:
            continue
        ticks = tick_of[rows]
        hit = (ticks >= start) & (ticks <= start + window_ticks)
        if hit.any():
            delays.append(int(ticks[hit].min() - start))
            true_trigger[rows[hit]] = True
    n_triggers = len(triggers)
    return {
        "detection_precision": round(float(true_trigger.sum() / n_triggers), 4) if n_triggers else None,
        "detection_recall": round(len(delays) / len(relevant), 4) if len(relevant) else None,
        "detection_delay_ticks": round(float(np.mean(delays)), 3) if delays else None,
        "relevant_events": int(len(relevant)),
    }


#: Escalation kinds about the data; every other kind is about the agent's own re-training.
DATA_ESCALATIONS = frozenset({"data-quality", "silent", "cold"})

#: Simulator event kinds a person has to act on: re-training cannot fix them (data faults), or the stream's
#: existence changed (closure, launch).
NEEDS_A_PERSON = frozenset({"outage_zeros", "outage_missing", "closure", "launch"})


def escalation_class(kind: str) -> str:
    """``"data"`` or ``"retraining"``.

    >>> escalation_class("silent"), escalation_class("repeated-trigger")
    ('data', 'retraining')
    """
    return "data" if kind in DATA_ESCALATIONS else "retraining"


def labour_scores(escalations: pd.DataFrame, stream_days: float, *, events: pd.DataFrame | None = None,
                  boundaries=None, window_ticks: int = 7, groups: Mapping | None = None) -> dict:
    """Escalations per 1,000 stream-days, all and by class, the engineer's queue items they make, and (with
    ``events``) the precision of both.

    Parameters
    ----------
    escalations
        Rows with ``unique_id``, ``tick`` and ``kind`` (one per escalation).
    stream_days
        Days of scored data summed over streams: the exposure the rate is per.
    events
        Ground truth with ``unique_id``, ``kind``, ``start`` and ``end`` (simulator), or ``None``.
    boundaries
        The tick boundaries (tick ``k`` covers ``[boundaries[k], boundaries[k + 1])``); needed with events.
    window_ticks
        How many ticks before an escalation an event may have been active and still explain it.
    groups
        Each stream's value of the queue's grouping attribute (``unique_id -> city``); streams not in it, or
        every stream when it is None, share the value None. Escalations of one kind, tick and group are one
        item of the queue (:func:`mlma.escalations.queue_items`): ``queue_items_per_1k_stream_days`` counts
        those, the labour a person meets. An item's precision is the share of its escalations that match an
        event; ``queue_item_precision`` is the mean over items.

    Examples
    --------
    >>> bounds = pd.date_range("2025-01-01", periods=21, freq="D")
    >>> events = pd.DataFrame({"unique_id": ["a"], "kind": ["outage_missing"],
    ...                        "start": [pd.Timestamp("2025-01-03")], "end": [pd.Timestamp("2025-01-04")]})
    >>> esc = pd.DataFrame({"unique_id": ["a", "a", "b"], "tick": [4, 15, 4],
    ...                     "kind": ["silent", "silent", "repeated-trigger"]})
    >>> labour_scores(esc, 2000.0, events=events, boundaries=bounds)  # doctest: +NORMALIZE_WHITESPACE
    {'escalations_per_1k_stream_days': 1.5, 'data_escalations_per_1k_stream_days': 1.0,
     'retraining_escalations_per_1k_stream_days': 0.5, 'queue_items_per_1k_stream_days': 1.5,
     'escalation_precision': 0.3333, 'data_escalation_precision': 0.5, 'retraining_escalation_precision': 0.0,
     'queue_item_precision': 0.3333}
    >>> esc = pd.DataFrame({"unique_id": ["a", "b", "c"], "tick": [4, 4, 4], "kind": ["silent"] * 3})
    >>> cities = {"a": "Berlin", "b": "Berlin", "c": "Paris"}
    >>> labour_scores(esc, 2000.0, groups=cities)["queue_items_per_1k_stream_days"]
    1.0
    """
    classes = escalations["kind"].map(escalation_class) if len(escalations) else pd.Series(dtype=object)
    per_1k = (lambda count: round(1000.0 * count / stream_days, 4)) if stream_days > 0 else (lambda count: None)
    uids = escalations["unique_id"] if len(escalations) else pd.Series(dtype=object)
    items = queue_items(escalations["kind"] if len(escalations) else [],
                        escalations["tick"] if len(escalations) else [],
                        uids.map(dict(groups)) if groups is not None else [None] * len(escalations))
    out = {
        "escalations_per_1k_stream_days": per_1k(len(escalations)),
        "data_escalations_per_1k_stream_days": per_1k(int((classes == "data").sum())),
        "retraining_escalations_per_1k_stream_days": per_1k(int((classes == "retraining").sum())),
        "queue_items_per_1k_stream_days": per_1k(int(np.unique(items).size)),
    }
    if events is None or boundaries is None:
        return out
    bounds = pd.DatetimeIndex(getattr(boundaries, "index", boundaries))
    person = events[events["kind"].isin(NEEDS_A_PERSON)]
    start = pd.to_datetime(person["start"])
    end = pd.to_datetime(person["end"]).fillna(start) if "end" in person else start
    by_stream: dict = {}
    for uid, s0, s1 in zip(person["unique_id"], start, end):
        by_stream.setdefault(uid, []).append((s0, max(s0, s1)))
    ticks = escalations["tick"].to_numpy(dtype=int) if len(escalations) else np.empty(0, dtype=int)
    hit = np.zeros(len(escalations), dtype=bool)
    for i, (uid, k) in enumerate(zip(escalations.get("unique_id", []), ticks)):
        lo = bounds[max(0, min(k - window_ticks, len(bounds) - 1))]
        hi = bounds[min(k + 1, len(bounds) - 1)]
        hit[i] = any(s0 < hi and s1 >= lo for s0, s1 in by_stream.get(uid, ()))

    def precision(mask) -> float | None:
        mask = np.asarray(mask, dtype=bool)
        return round(float(hit[mask].mean()), 4) if mask.any() else None

    out["escalation_precision"] = precision(np.ones(len(escalations), dtype=bool))
    out["data_escalation_precision"] = precision(classes == "data")
    out["retraining_escalation_precision"] = precision(classes == "retraining")
    out["queue_item_precision"] = (round(float(pd.Series(hit).groupby(items).mean().mean()), 4) if len(items)
                                   else None)
    return out
