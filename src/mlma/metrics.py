"""Prometheus metrics of a store: what the fleet and the agent are doing, for ``/metrics``.

:func:`render_metrics` reads the store and returns the exposition body and its content type. Every series
is fleet-level with bounded labels (verdict, tick status, escalation kind, status and severity, audited
action, alert receiver); no label carries a stream id, so the number of series does not grow with the
fleet. The numbers are aggregated in SQL (:func:`mlma.store.counts.read_counts`) over the small tables
(``ticks`` with their ``summary``, ``escalations``, ``audit_log``, ``alert_notifications``,
``stream_actions``); the per-stream tables
(``verdicts``, ``forecasts``, ``observations``) are never scanned (the newest observation's time is one step
down the ``ds`` index), so a scrape costs the same at 100 or 100,000 streams. Counters (``_total``) are sums
over the ticks and logs the store keeps, so they only grow, and survive restarts of the process that serves
them.

A fresh :class:`~prometheus_client.CollectorRegistry` is built per call: no global state, and two stores
in one process do not mix.

Examples
--------
>>> from prometheus_client.parser import text_string_to_metric_families
>>> from mlma.store import Store, TickRecord, TickSummary
>>> store = Store.create("sqlite://")
>>> _ = store.write_tick(TickRecord(0, summary=TickSummary(n_streams=3, verdicts={"ok": 2, "degraded": 1}, retrains=1,
...                                                        promoted=1, compute_seconds=0.5, loss_ratio=1.2)))
>>> body, content_type = render_metrics(store)
>>> content_type
'text/plain; version=0.0.4; charset=utf-8'
>>> samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
...            for family in text_string_to_metric_families(body.decode()) for s in family.samples}
>>> samples[("mlma_streams", (("verdict", "degraded"),))], samples[("mlma_retrains_total", ())]
(1.0, 1.0)
>>> samples[("mlma_fleet_loss_ratio", ())]
1.2
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from mlma.escalations import ESCALATION_KINDS
from mlma.store.counts import StoreCounts, read_counts
from mlma.store.schema import ESCALATION_STATUSES, STREAM_ACTION_KINDS, TICK_STATUSES
from mlma.store.records import TickSummary

if TYPE_CHECKING:
    from mlma.alerts import Receiver

#: Verdict labels (``mlma.policy.Verdict``), in code order.
VERDICTS = ("ok", "degraded", "warming-up", "cooling-down", "pinned", "no-data", "unmonitored", "cold", "abnormal")
#: Escalation kinds reported by name; any other kind is counted as ``other``.
KNOWN_KINDS = tuple(dict.fromkeys([*ESCALATION_KINDS, "fit-failed", "approval-needed"]))
SEVERITIES = ("1", "2", "3")
#: Audited actions reported by name, at most; the rarest beyond that are counted as ``other``.
MAX_ACTIONS = 64
#: The per-tick counts of ``ticks.summary`` that become counters: summary key -> (metric, help).
SUMMARY_COUNTERS = {
    "retrains": ("mlma_retrains", "Re-trainings started, summed over completed ticks."),
    "promoted": ("mlma_promotions", "Re-trained models promoted to champion, summed over completed ticks."),
    "rejected": ("mlma_rejected_challengers", "Re-trained challengers rejected (lost to the champion), summed over "
                                              "completed ticks."),
    "initial_fits": ("mlma_initial_fits", "First models fitted for new streams, summed over completed ticks."),
    "fit_failures": ("mlma_fit_failures", "Fits that failed or timed out, summed over completed ticks."),
    "forecast_failures": ("mlma_forecast_failures", "Forecasts that failed (a model raised or gave NaN, infinite "
                                                    "values or the wrong length), summed over completed ticks."),
    "compute_seconds": ("mlma_compute_seconds", "CPU seconds spent fitting models, summed over completed ticks."),
}
#: Gauges from the last completed tick's summary: summary key -> (metric, help).
SUMMARY_GAUGES = {
    "loss_ratio": ("mlma_fleet_loss_ratio", "Fleet mean loss over the fleet mean reference loss, last completed tick."),
    "loss": ("mlma_fleet_loss", "Fleet mean loss of the last completed tick (in the data's units)."),
    "reference_loss": ("mlma_fleet_reference_loss", "Fleet mean reference loss of the last completed tick."),
    "policy_loss": ("mlma_fleet_policy_loss", "Fleet mean of the streams' mean losses in the policy's own loss "
                                              "([monitor] loss), the units of the reference, last completed tick."),
    "n_streams": ("mlma_tick_streams", "Streams the last completed tick looked at."),
    "escalations": ("mlma_tick_escalations", "Escalations the last completed tick raised."),
    "awaiting_approval": ("mlma_streams_awaiting_approval", "Streams whose challenger waits for a person's "
                                                            "approval, at the last completed tick."),
}
_ACTION = re.compile(r"^[a-z][a-z0-9-]{0,47}$")
#: The agent's audit entry for a tick that failed before it could begin (``LiveAgent._record_failure``: the
#: clock or a damaged saved state could not be read). Such a failure marks no tick, so ``ticks.attempts``
#: does not hold it: these entries count it.
TICK_START_FAILED = "tick-start-failed"
#: Outcomes of an alert delivery (``alert_notifications.status``).
NOTIFICATION_STATUSES = ("sent", "failed")


def render_metrics(store, accept: str | None = None, *,
                   receivers: Iterable[str | Receiver] = ()) -> tuple[bytes, str]:
    """The Prometheus exposition of ``store`` and its content type.

    ``accept`` is the scraper's ``Accept`` header: OpenMetrics when it asks for it, else the classic
    text format (0.0.4), which every Prometheus reads. ``receivers``: the configured alert receivers'
    names, whose delivery counters are then served at 0
    before their first delivery (see :class:`StoreCollector`).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, receivers=receivers))
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type


class StoreCollector:
    """A ``prometheus_client`` collector that reads the store at each collection (see the module docstring).

    Register it on a registry of your own to combine it with other metrics; :func:`render_metrics` does
    that with a fresh registry.

    ``receivers`` (the configured alert receivers' names) and every receiver with a recorded delivery
    get both ``mlma_alert_notifications_total`` series, ``sent`` and ``failed``, from 0: Prometheus'
    ``increase()`` cannot see a series appear, so a first failure that made its series appear at 1 never
    fired ``MlmaAlertDeliveryFailing``.
    """

    def __init__(self, store, *, receivers: Iterable[str | Receiver] = ()) -> None:
        from mlma.alerts import Receiver  # noqa: PLC0415 - the alerts' module is needed only here

        self.store = store
        # The receivers as configured (ProjectConfig.alert_receivers) or their names: a receiver's own text was
        # its repr, served as the label {receiver="Receiver(name='ops', target=...)"}.
        self.receivers = tuple(r.name if isinstance(r, Receiver) else str(r) for r in receivers)

    def describe(self) -> list[Metric]:
        # Registering must not query the database; names are unique by construction.
        return []

    def collect(self) -> Iterator[Metric]:
        facts = read_counts(self.store, summary_keys=list(SUMMARY_COUNTERS))
        yield from _families(facts, self.receivers)
        # One step down the observations' ds index, read just after the counts (newest_ds's own read).
        newest = self.store.newest_ds()
        if newest is not None:
            yield GaugeMetricFamily("mlma_newest_observation_timestamp_seconds",
                                    "The newest actual's data time (ds) as Unix time, read as UTC; unlike the "
                                    "last ingest's time, a re-sent or late file of old data does not move it.",
                                    value=_unix(newest))


# -- families ------------------------------------------------------------------------------------------------------
def _summary_json(stored: Any) -> dict[str, Any]:
    """The last tick's summary through its typed parse (:class:`~mlma.store.records.TickSummary`), as a
    mapping for the loops below; empty for a tick without one or with one that does not parse."""
    try:
        summary = TickSummary.parse(stored)
    except (TypeError, ValueError):
        return {}  # a damaged summary costs its gauges, never the whole scrape
    return {} if summary is None else summary.to_json()


def _unix(when: Any) -> float:
    """Unix time of a timestamp; one without a zone is read as UTC (the store's data times are naive)."""
    stamp = pd.Timestamp(when)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).timestamp()


def _families(facts: StoreCounts, receivers: Sequence[str] = ()) -> Iterator[Metric]:
    from mlma import __version__

    info = GaugeMetricFamily("mlma_build_info", "The mlma version serving these metrics (value 1).",
                             labels=["version"])
    info.add_metric([__version__], 1.0)
    yield info

    yield GaugeMetricFamily("mlma_known_streams", "Streams the store knows.", value=float(facts.streams))

    ticks = facts.ticks
    by_status = GaugeMetricFamily("mlma_ticks", "Ticks by their current status (a failed tick that ran again "
                                                "counts as done).", labels=["status"])
    for status in TICK_STATUSES:
        by_status.add_metric([status], float(ticks.get(status, (0, 0))[0]))
    yield by_status
    # A failure before a tick could begin marks no tick: counted by its audit entries, one per failure.
    unstarted = sum(n for action, actor, n in facts.audit_actions if action == TICK_START_FAILED and actor == "agent")
    attempts = sum(a for _, a in ticks.values()) + unstarted
    yield CounterMetricFamily("mlma_tick_attempts", "Attempts to run a tick, the first ones included, and those "
                                                    "that failed before the tick could begin.",
                              value=float(attempts))
    # Every attempt ends done, failed or is still running; so these are the attempts that failed or crashed.
    failed = attempts - ticks.get("done", (0, 0))[0] - ticks.get("running", (0, 0))[0]
    yield CounterMetricFamily("mlma_tick_failures", "Tick attempts that failed or crashed (a crash counts once "
                                                    "its tick is marked failed), those that could not begin "
                                                    "(a damaged saved state) included.",
                              value=float(max(failed, 0)))

    lock = GaugeMetricFamily("mlma_tick_lock_held", "1 while an agent holds an unexpired tick lock.",
                             value=float(facts.tick_lock_held))
    yield lock
    if facts.last_ingest is not None:
        yield GaugeMetricFamily("mlma_last_ingest_timestamp_seconds", "When data was last ingested (Unix time).",
                                value=facts.last_ingest.timestamp())

    sums = facts.summary_sums
    for key, (name, text) in SUMMARY_COUNTERS.items():
        yield CounterMetricFamily(name, text, value=sums[key])

    last = facts.last_done
    if last is not None:
        summary = _summary_json(last.summary)
        yield GaugeMetricFamily("mlma_last_completed_tick", "Number of the last completed tick.",
                                value=float(last.tick))
        if last.finished_at is not None:
            yield GaugeMetricFamily("mlma_last_tick_completed_timestamp_seconds",
                                    "When the last completed tick finished (Unix time).",
                                    value=last.finished_at.timestamp())
        duration = _number(summary.get("duration_seconds"))
        if duration is None and last.finished_at is not None and last.started_at is not None:
            duration = (last.finished_at - last.started_at).total_seconds()
        if duration is not None:
            yield GaugeMetricFamily("mlma_last_tick_duration_seconds", "Wall-clock duration of the last completed "
                                                                       "tick.", value=duration)
        if isinstance(summary.get("verdicts"), dict):
            verdicts = GaugeMetricFamily("mlma_streams", "Streams by verdict in the last completed tick.",
                                         labels=["verdict"])
            counts = {v: 0.0 for v in VERDICTS}
            for label, n in summary["verdicts"].items():
                key = label if label in counts else "other"
                counts[key] = counts.get(key, 0.0) + (_number(n) or 0.0)
            for label, n in counts.items():
                verdicts.add_metric([label], n)
            yield verdicts
        for key, (name, text) in SUMMARY_GAUGES.items():
            value = _number(summary.get(key))
            if value is not None:
                yield GaugeMetricFamily(name, text, value=value)

    yield from _escalation_families(facts.escalations)

    actions = CounterMetricFamily("mlma_actions", "Entries in the audit log by action and by who acted "
                                                  "(agent or user).", labels=["action", "actor"])
    ranked: dict[str, int] = {}
    for action, _, n in facts.audit_actions:
        ranked[action] = ranked.get(action, 0) + n
    named = {a for a in sorted(ranked, key=lambda a: (-ranked[a], a)) if _ACTION.match(a)}
    named = set(sorted(named, key=lambda a: (-ranked[a], a))[:MAX_ACTIONS])
    folded: dict[tuple[str, str], float] = {}
    for action, actor, n in facts.audit_actions:
        key = (action if action in named else "other", actor)
        folded[key] = folded.get(key, 0.0) + n
    for (action, actor), n in sorted(folded.items()):
        actions.add_metric([action, actor], n)
    yield actions

    pending = GaugeMetricFamily("mlma_pending_stream_actions", "Stream actions queued for the next tick, by kind.",
                                labels=["kind"])
    have = {kind: float(n) for kind, n in facts.pending_actions}
    for kind in STREAM_ACTION_KINDS:
        pending.add_metric([kind], have.get(kind, 0.0))
    yield pending

    notes = CounterMetricFamily("mlma_alert_notifications", "Alert notifications by receiver and outcome (sent, "
                                                            "or failed after all attempts).",
                                labels=["receiver", "status"])
    # Both outcomes of every receiver from 0, so that increase() sees a first failure (see StoreCollector).
    counts = {(r, status): 0.0 for r in (*receivers, *(r for r, _, _ in facts.notifications))
              for status in NOTIFICATION_STATUSES}
    for receiver, status, n in facts.notifications:
        counts[(receiver, status)] = counts.get((receiver, status), 0.0) + float(n)
    for (receiver, status), n in sorted(counts.items()):
        notes.add_metric([receiver, status], n)
    yield notes


def _escalation_families(rows: list[tuple[str, str, int, int]]) -> Iterator[Metric]:
    current = {(status, kind, severity): 0.0 for status in ESCALATION_STATUSES for kind in KNOWN_KINDS
               for severity in SEVERITIES}
    created = {kind: 0.0 for kind in KNOWN_KINDS}
    for status, kind, severity, n in rows:
        kind = kind if kind in KNOWN_KINDS else "other"
        severity = str(severity) if str(severity) in SEVERITIES else "other"
        current[(status, kind, severity)] = current.get((status, kind, severity), 0.0) + n
        created[kind] = created.get(kind, 0.0) + n
    gauge = GaugeMetricFamily("mlma_escalations", "Escalations by current status, kind and severity (1 low - 3 "
                                                  "high); an expired silence counts as open.",
                              labels=["status", "kind", "severity"])
    for (status, kind, severity), n in current.items():
        gauge.add_metric([status, kind, severity], n)
    yield gauge
    counter = CounterMetricFamily("mlma_escalations_created", "Escalations raised, by kind.", labels=["kind"])
    for kind, n in created.items():
        counter.add_metric([kind], n)
    yield counter


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


__all__ = ["KNOWN_KINDS", "MAX_ACTIONS", "NOTIFICATION_STATUSES", "SUMMARY_COUNTERS", "SUMMARY_GAUGES",
           "StoreCollector", "TICK_START_FAILED", "VERDICTS", "render_metrics"]
