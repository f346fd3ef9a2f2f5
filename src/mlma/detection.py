"""Scoring a policy's re-training triggers against the simulator's ground-truth events.

A *relevant* event is a real change a model should adapt to (level shift, drift, changed daily profile,
campaign; see :mod:`mlma.simulate`). A trigger (a re-training request) on a stream is a true positive when it
falls within ``window_ticks`` ticks after the start of a relevant event on that stream; every other trigger
is a false one, including triggers caused by one-off shocks and data outages, which re-training cannot help.

- precision: true triggers / all triggers;
- recall: relevant events with at least one trigger in their window / relevant events scored;
- delay: ticks from the event's start tick to its first trigger, averaged over detected events.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


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
