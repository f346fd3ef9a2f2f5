"""A small, fully synthetic fleet written to a store the way the live tick writes it, to try the dashboard.

The tests, the API benchmark and the screenshot in docs/dashboard.md need a store that looks like one a
live agent filled: streams with a city, hourly actuals, forecasts issued each tick, per-stream verdicts with
losses and p-values, model versions with a champion history, escalations and tick summaries. This module
writes such a store through the store's own public writers (``ingest_frame``, ``write_tick``,
``ModelRegistry``), so every read the API does is exercised on rows shaped exactly like the real ones.

It is *not* the monitoring policy: verdicts follow a simple rule on made-up losses (see
:func:`build_sample_fleet`). What happens, with ``event_tick = E``:

- every stream runs version 1 from the start; ticks ``0..2`` are ``warming-up``;
- from tick ``E`` the demand of every zone in city ``c01`` jumps by 60 %: their loss rises, they are
  ``degraded`` at tick ``E`` and re-trained; at tick ``E + 1`` two in three challengers win and are promoted
  (version 2), the others lose and raise a ``challenger-lost`` escalation (one queue item for the city),
  and their reference is re-based on the new level two ticks later;
- at the last tick two zones of city ``c02`` degrade again (``repeated-trigger``), one zone reports zeros
  (``data-quality``, severity 3) and the fleet-wide re-training budget was hit at tick ``E``.

Examples
--------
>>> import tempfile
>>> from mlma.store import Store
>>> store = Store.create("sqlite://")
>>> fleet = build_sample_fleet(store, tempfile.mkdtemp(), n_streams=12, n_ticks=6)
>>> fleet.degraded_now
['zone-0002', 'zone-0006']
>>> store.last_done_tick()
5
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlma.escalations import Escalation
from mlma.policy import Verdict
from mlma.store import Store, TickRecord, TickSummary

HOURS = 24
WARMUP_TICKS = 3


@dataclass
class SampleFleet:
    """What :func:`build_sample_fleet` wrote, for tests to check against."""

    unique_ids: list[str]
    cities: list[str]
    n_ticks: int
    event_tick: int
    event_city: str
    degraded_now: list[str] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    quality_stream: str = ""
    start: pd.Timestamp = pd.Timestamp("2026-11-01")


def build_sample_fleet(store: Store, artifacts: str | os.PathLike, *, n_streams: int = 24, n_ticks: int = 10,
                       n_cities: int = 4, event_tick: int | None = None, series_streams: int | None = None,
                       start: str = "2026-11-01", seed: int = 0) -> SampleFleet:
    """Fill an empty store with a synthetic fleet of ``n_streams`` hourly zones over ``n_ticks`` daily ticks.

    Parameters
    ----------
    store
        An empty store (its streams get ids ``0..n_streams-1``).
    artifacts
        The model artifact folder of the registry.
    n_streams, n_ticks, n_cities
        Size; zones are ``zone-0000`` ... spread round-robin over cities ``c00`` ...
    event_tick
        The tick at which city ``c01``'s demand jumps (default: the middle tick).
    series_streams
        Write actuals and forecasts for the first ``series_streams`` streams only (default: all); verdicts
        are written for every stream. Large benchmark fleets use this to keep the build short.
    start
        The first tick's day; actuals start ``WARMUP_TICKS`` days earlier.
    seed
        Random seed: the same arguments give the same store.
    """
    from mlma.registry import ModelRegistry
    from mlma.store import NewVersion

    if n_streams < 8 or n_ticks < WARMUP_TICKS + 3 or not 2 <= n_cities <= n_streams:
        raise ValueError(f"a sample fleet needs n_streams >= 8, n_ticks >= {WARMUP_TICKS + 3} and 2 <= n_cities <= "
                         f"n_streams; got {n_streams}, {n_ticks}, {n_cities}")
    if store.stream_count():
        raise ValueError("build_sample_fleet needs an empty store")
    E = n_ticks // 2 if event_tick is None else int(event_tick)
    if not WARMUP_TICKS <= E <= n_ticks - 2:
        raise ValueError(f"event_tick must be in {WARMUP_TICKS}..{n_ticks - 2}, got {E}")
    rng = np.random.default_rng(seed)
    width = max(4, len(str(n_streams - 1)))
    uids = [f"zone-{i:0{width}d}" for i in range(n_streams)]
    cities = [f"c{c:02d}" for c in range(n_cities)]
    city = np.array([cities[i % n_cities] for i in range(n_streams)])
    n_series = n_streams if series_streams is None else min(int(series_streams), n_streams)
    t0 = pd.Timestamp(start)

    # Streams first, so that ids follow the sorted unique_ids, then their cities.
    ids = store.stream_ids(uids)
    store.set_attributes({u: {"city": c} for u, c in zip(uids, city.tolist())})

    # Demand: a zone's level (bigger zones, bigger losses), a daily profile, noise; c01 jumps at tick E.
    level = np.exp(rng.normal(3.0, 0.7, n_streams))
    profile = 0.6 + 0.4 * np.sin(np.linspace(0, 2 * np.pi, HOURS, endpoint=False) - 1.5) ** 2
    event = city == "c01"
    jump = np.ones((n_streams, n_ticks + 1))
    jump[event, E:] = 1.6
    # Ticks 0..n_ticks-1 hold actuals; tick n_ticks is the day forecast at the end of the last tick.
    expected = level[:, None, None] * profile[None, None, :] * jump[:, :, None]           # (n, ticks+1, 24)
    actual = expected[:, :n_ticks] * rng.gamma(40.0, 1 / 40.0, (n_streams, n_ticks, HOURS))
    quality = int(np.flatnonzero(~event)[-1])
    actual[quality, -1, 6:] = 0.0                                                           # sudden zeros

    # Who re-trains at E and whose challenger wins at E + 1.
    degraded_at_event = event.copy()
    winners = degraded_at_event & (np.arange(n_streams) % 3 != 2)
    losers = degraded_at_event & ~winners
    version = np.ones((n_streams, n_ticks + 1), dtype=np.int64)
    version[winners, E + 2:] = 2                                     # serves from the forecasts issued at E + 1
    # Forecasts: the serving model knows the level before the jump; version 2 knows the level after it.
    believed = np.where(version >= 2, 1.6, 1.0)
    forecast = level[:, None, None] * profile[None, None, :] * believed[:, :, None] * 1.02
    loss = np.abs(actual - forecast[:, :n_ticks]).mean(axis=2)                               # (n, ticks)
    reference = np.abs(expected[:, :n_ticks] * (1 - rng.gamma(40.0, 1 / 40.0, (n_streams, n_ticks, HOURS)))
                       ).mean(axis=2).mean(axis=1) * 1.05
    reference = np.broadcast_to(reference[:, None], (n_streams, n_ticks)).copy()
    reference[winners, E + 2:] *= 1.6                                # a new reference for the new version
    # Re-based after the failed re-training: the recent losses become the reference.
    if E + 3 < n_ticks:
        reference[losers, E + 3:] = loss[losers, E + 3:].mean(axis=1, keepdims=True) * 1.05

    repeat = np.flatnonzero(city == "c02")[:2]
    obs = _observations(uids[:n_series], actual[:n_series], t0)
    store.ingest_frame(obs, source="sample-fleet")

    registry = ModelRegistry(store, artifacts)
    v1 = registry.prepare(int(ids[0]), {"sample": True, "version": 1}, spec="seasonal-naive",
                          train_start=t0 - pd.Timedelta(days=28), train_end=t0, promote=True, reason="initial fit")
    registry.register_many([NewVersion(stream=int(s), artifact_sha256=v1.artifact_sha256,
                                       artifact_bytes=v1.artifact_bytes, spec=v1.spec, train_start=v1.train_start,
                                       train_end=v1.train_end, params={"season_length": 24}, promote=True,
                                       reason="initial fit", check={"result": "first model"}) for s in ids])
    v2 = registry.prepare(int(ids[0]), {"sample": True, "version": 2}, spec="seasonal-naive")

    fleet = SampleFleet(uids, cities, n_ticks, E, "c01", start=t0)
    for k in range(n_ticks):
        lo, hi = t0 + pd.Timedelta(days=k), t0 + pd.Timedelta(days=k + 1)
        verdict = np.full(n_streams, int(Verdict.OK), dtype=np.int64)
        effect = loss[:, k] / reference[:, k]
        p = rng.uniform(0.05, 1.0, n_streams)
        reason = np.full(n_streams, None, dtype=object)
        retrain = np.zeros(n_streams, dtype=bool)
        escalations: list[Escalation] = []
        new_versions = []
        if k < WARMUP_TICKS:
            verdict[:] = int(Verdict.WARMING_UP)
            p[:] = np.nan
        if k == E:
            verdict[degraded_at_event] = int(Verdict.DEGRADED)
            p[degraded_at_event] = rng.uniform(1e-6, 1e-3, degraded_at_event.sum())
            retrain[degraded_at_event] = True
            reason[degraded_at_event] = "loss 1.6x the reference (p < 0.001)"
            escalations.append(Escalation(-1, k, "budget", 1, f"re-training budget spent: "
                                          f"{int(degraded_at_event.sum())} re-trainings, none queued"))
        if k == E + 1:
            verdict[degraded_at_event] = int(Verdict.COOLING_DOWN)
            for s in np.flatnonzero(winners):
                new_versions.append(NewVersion(
                    stream=int(ids[s]), artifact_sha256=v2.artifact_sha256, artifact_bytes=v2.artifact_bytes,
                    spec="seasonal-naive", train_start=lo - pd.Timedelta(days=28), train_end=lo, promote=True,
                    params={"season_length": 24}, by="agent",
                    reason=f"challenger beat the champion in shadow: loss ratio {0.55 + 0.1 * (s % 3):.2f}",
                    check={"result": "promoted", "ratio": round(0.55 + 0.1 * (s % 3), 2)}))
            for s in np.flatnonzero(losers):
                new_versions.append(NewVersion(
                    stream=int(ids[s]), artifact_sha256=v2.artifact_sha256, artifact_bytes=v2.artifact_bytes,
                    spec="seasonal-naive", train_start=lo - pd.Timedelta(days=28), train_end=lo, promote=False,
                    params={"season_length": 24}, check={"result": "rejected", "ratio": 1.08}))
                escalations.append(Escalation(int(ids[s]), k, "challenger-lost", 2,
                                              f"{uids[s]}: the re-trained model was worse in shadow (loss ratio 1.08); "
                                              "version 1 keeps serving"))
        if E + 1 < k < E + 3:
            verdict[losers] = int(Verdict.COOLING_DOWN)
        if k == n_ticks - 1:
            verdict[repeat] = int(Verdict.DEGRADED)
            effect[repeat] = [1.9, 2.4]
            loss[repeat, k] = reference[repeat, k] * effect[repeat]
            p[repeat] = [2e-4, 5e-6]
            reason[repeat] = "degraded again 4 ticks after a re-training"
            for s in repeat:
                escalations.append(Escalation(int(ids[s]), k, "repeated-trigger", 2,
                                              f"{uids[s]} degraded again soon after a re-training: re-training does "
                                              "not fix it"))
            verdict[quality] = int(Verdict.NO_DATA)
            escalations.append(Escalation(int(ids[quality]), k, "data-quality", 3,
                                          f"{uids[quality]}: sudden zeros for 18 of 24 hours; no re-training on "
                                          "broken data"))
            fleet.degraded_now = [uids[s] for s in repeat]
        frame = pd.DataFrame({"stream_id": ids, "verdict": verdict, "p_value": p, "effect": effect,
                              "retrain": retrain, "reason": reason, "loss": loss[:, k],
                              "reference_loss": reference[:, k], "model_version": version[:, k]})
        forecasts = _forecasts(ids[:n_series], forecast[:n_series, k + 1], version[:n_series, k + 1], hi)
        labels = pd.Series(verdict).map(lambda c: Verdict(int(c)).label).value_counts()
        counts = {v.label: int(labels.get(v.label, 0)) for v in Verdict}
        promoted = int(sum(1 for v in new_versions if v.promote))
        summary = TickSummary(
            n_streams=n_streams, verdicts=counts, retrains=int(retrain.sum()), promoted=promoted,
            rejected=len(new_versions) - promoted, initial_fits=n_streams if k == 0 else 0, fit_failures=0,
            compute_seconds=round(0.8 * int(retrain.sum()) + 2e-4 * n_streams, 3), loss=float(loss[:, k].sum()),
            policy_loss=float(loss[:, k].mean()),
            reference_loss=float(reference[:, k].sum()), loss_ratio=float(loss[:, k].sum() / reference[:, k].sum()),
            escalations=len(escalations), awaiting_approval=0, pinned=0,
            duration_seconds=round(0.5 + 1e-4 * n_streams, 3))
        store.write_tick(TickRecord(k, verdicts=frame, forecasts=forecasts, escalations=escalations,
                                    new_versions=new_versions, start=lo, end=hi, agent_id="agent@sample",
                                    summary=summary))
    fleet.promoted = [uids[s] for s in np.flatnonzero(winners)]
    fleet.rejected = [uids[s] for s in np.flatnonzero(losers)]
    fleet.quality_stream = uids[quality]
    return fleet


def _observations(uids: list[str], actual: np.ndarray, t0: pd.Timestamp) -> pd.DataFrame:
    """Long frame of the actuals (n, ticks, 24), plus three days of history before the first tick."""
    n, ticks, _ = actual.shape
    history = actual[:, :1, :].repeat(WARMUP_TICKS, axis=1)
    values = np.concatenate([history, actual], axis=1).reshape(n, -1)
    stamps = pd.date_range(t0 - pd.Timedelta(days=WARMUP_TICKS), periods=values.shape[1], freq="h")
    return pd.DataFrame({"unique_id": np.repeat(np.array(uids, dtype=object), values.shape[1]),
                         "ds": np.tile(stamps.to_numpy(), n), "y": np.round(values.ravel(), 3)})


def _forecasts(ids: np.ndarray, y_hat: np.ndarray, version: np.ndarray, day: pd.Timestamp) -> pd.DataFrame:
    stamps = pd.date_range(day, periods=HOURS, freq="h").to_numpy()
    n = len(ids)
    return pd.DataFrame({"stream_id": np.repeat(ids, HOURS), "ds": np.tile(stamps, n),
                         "y_hat": np.round(y_hat.ravel(), 3), "model_version": np.repeat(version, HOURS)})

