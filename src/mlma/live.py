"""Live operation: the agent's tick on a persistent store, one process run at a time.

:class:`LiveAgent` runs :meth:`mlma.agent.Agent.tick`, the same method a backtest runs, against a
:class:`~mlma.store.Store` and a :class:`~mlma.registry.ModelRegistry`. A tick is one short-lived step:

1. take the store's tick lock (two agents never run a tick at once; a lock left by a process that died on
   this host is taken over, one whose lease ran out is taken over anywhere);
2. find the next tick whose actuals are in (the newest observation reaches the tick's last timestamp);
3. mark it ``running`` (committed, so a crash leaves a visible trace);
4. load the saved per-stream state of the previous tick, the observations of the training window (never
   anything after the tick: replaying history does not peek ahead), the serving models from the registry
   (each artifact verified against its SHA-256; a stream whose model cannot be loaded falls back to an
   earlier version or is re-fitted, and is escalated, while the rest of the fleet ticks on), the engineer's
   settings and queued actions;
5. run the tick: score, decide, re-train through the executor, judge challengers, forecast;
6. write each new model's artifact (content-addressed, written to a temporary file and renamed, so there
   is never a half-written model), then commit everything the tick produced in **one transaction**:
   verdicts, forecasts, escalations, new versions, champion moves, applied actions, the new state, and
   the tick's ``done`` mark.

Killed at any point, the store holds either the whole tick or none of it; the next run does the tick
again from the same saved state and the same data, and the fits are deterministic, so it reaches the same
result: no lost actuals, no double promotion. Artifacts written by a killed run are either reused (same
content, same hash) or unreferenced files that :meth:`~mlma.registry.ModelRegistry.collect_garbage` removes.

The tick clock is the data's (:class:`mlma.calendar.TickClock`): tick ``k`` covers
``[origin + k ticks, origin + (k + 1) ticks)``, aligned to the calendar. The frequency and tick length are
frozen by the first ingest (``Store.clock()``), the origin by the oldest observation; all three are kept in
the state from the first tick on, so later data never renumbers ticks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from mlma.agent import NO_MODEL, Agent, AgentSettings, Controls, TickReport
from mlma.calendar import TickClock
from mlma.data import FrequencyPending, infer_frequency
from mlma.escalations import Escalation
from mlma.fleet import FleetData
from mlma.heap import LongLivedHeap
from mlma.lock_holder import agent_identity
from mlma.lock_holder import holder_is_dead as _holder_is_dead
from mlma.models import ForecastContext, fitting_train_window, make_forecaster, spec_name
from mlma.models.base import DriversChanged, driver_view
from mlma.policy import Verdict
from mlma.project import CONFIG_NAME, ConfigError, ProjectConfig
from mlma.registry import ArtifactMissing, ModelRegistry
from mlma.silence import usual_silence
from mlma.store import LockLost, StateCorrupted, Store, TickAlreadyDone, forecast_frame
from mlma.store.engine import shown_url, unreachable_reason
from mlma.store.glance import NextTick
from mlma.store.lock import Lease
from mlma.store.ingest import check_clock_settings
from mlma.store.records import ChampionMove, TickRecord, TickSummary, VersionCheck
from mlma.store.state import StateEncoding
from mlma.store.window import ObservationWindow
from mlma.training import (FittedModel, ModelKey, ModelService, executor_usable, make_executor,
                           terminate_executor)

if TYPE_CHECKING:
    from mlma.alerts import Notifier

log = logging.getLogger(__name__)

#: The fleet's clock (frequency, tick length, origin) is :class:`mlma.calendar.TickClock`; ``Timing`` is its
#: name in this module's signatures.
Timing = TickClock


class NotReady(RuntimeError):
    """There is no tick to run yet: the store lacks data, or the next tick's actuals are not all in (or not
    enough of them yet: :meth:`LiveAgent.check_late_actuals`)."""


class LateActuals(NotReady):
    """The newest tick waits for the rest of its actuals (:meth:`LiveAgent.check_late_actuals`).

    Attributes
    ----------
    tick
        Which tick waits.
    got, expected
        The observations its served streams reported in it, and those they reported in tick ``reference``
        (per timestamp of the tick: the number it is compared with); ``got / expected`` is the share in.
    reference
        The tick it is compared with (the tick before, or the one a day or a week before).
    deadline, now
        When it runs at the latest whatever comes in, and when this was decided: both by the store's clock,
        UTC without a time zone.
    """

    def __init__(self, message: str, *, tick: int, got: int, expected: float, reference: int,
                 deadline: pd.Timestamp, now: pd.Timestamp) -> None:
        super().__init__(message)
        self.tick, self.got, self.expected, self.reference = tick, got, expected, reference
        self.deadline, self.now = deadline, now


@dataclass(frozen=True)
class _TickView:
    """What the checks before a tick read: the streams with a serving model, and the observations up to the
    tick as :class:`FleetData` from its first tick ``first_tick``."""

    served: np.ndarray
    fleet: FleetData
    first_tick: int
    #: Per stream, whether no actuals in the tick would be its rhythm (:func:`mlma.silence.usual_silence`: a
    #: shop's weekend), from the state saved after the tick before; all False when that state is not at hand.
    usual_silence: np.ndarray


class TickHeld(RuntimeError):
    """The next tick would find no data for nearly all served streams; it waits for a person's say-so.

    Attributes
    ----------
    tick
        The tick that is held.
    missing, served
        How many of the streams with a serving model have no data in it, of how many.
    """

    def __init__(self, message: str, *, tick: int, missing: int, served: int) -> None:
        super().__init__(message)
        self.tick, self.missing, self.served = tick, missing, served


@dataclass
class TickResult:
    """What one live tick did (``start=True`` for the start-up step that fits the first models)."""

    tick: int
    start: bool
    n_streams: int
    summary: TickSummary
    escalation_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    #: What else the tick did that a person should know, e.g. that it took up a changed ``[agent] policy``
    #: (also in the audit log, ``policy-changed``).
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        """The line `mlma tick` prints (and the tick's notes, one per line); failed forecasts are named only when
        there are some."""
        s = self.summary
        failed = f", {s.forecast_failures} failed forecasts" if s.forecast_failures else ""
        notes = "".join(f"\n  note: {note}" for note in self.notes)
        if self.start:
            # A first fit that failed leaves its stream without a model or a forecast: said here, not only in the
            # audit log.
            unfitted = (f", {s.fit_failures} failed fits (no model, so no forecast, for those streams yet)"
                        if s.fit_failures else "")
            return (f"start-up (tick {self.tick}): {s.initial_fits} first models for {self.n_streams} "
                    f"streams{unfitted}, forecasts for tick {self.tick + 1} issued{failed} ({self.seconds:.1f} s)"
                    f"{notes}")
        return (f"tick {self.tick}: {self.n_streams} streams, {s.verdicts.get('degraded', 0)} degraded, "
                f"{s.retrains} re-trained, {s.promoted} promoted, {s.rejected} rejected, {s.fit_failures} failed "
                f"fits{failed}, {len(self.escalation_ids)} escalations, {s.escalations_resolved} resolved "
                f"({self.seconds:.1f} s){notes}")


class LiveAgent:
    """Runs the project's ticks against its store; see the module docstring.

    Parameters
    ----------
    config
        The project (``mlma.toml``).
    store
        An open store (default: open the project's).
    executor
        Where fits run; default: the project's ``[agent] executor``. An executor passed in is not shut down.
    notifier
        Sends alerts on new escalations after each committed tick (:mod:`mlma.alerts`); default: the
        project's configured receivers, if any.
    """

    def __init__(self, config: ProjectConfig, *, store: Store | None = None, executor=None,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self._own_store = store is None
        self.store = store or Store.open(config.store_url)
        self.registry = ModelRegistry(self.store, config.artifacts_dir)
        self._executor_spec = executor if executor is not None else config.agent.executor
        self._own_executor = executor is None or isinstance(executor, str)
        self._executor = None
        #: The executor may hold a fit that ran past its timeout, or was stopped: made afresh after the tick.
        self._executor_dirty = False
        #: The last tick this agent committed (None: none yet), set as its transaction returns.
        self.last_committed: int | None = None
        self._loaded: dict[tuple[int, int], FittedModel] = {}
        #: Registry versions whose artifact could not be loaded (missing, altered, unpicklable), with the error.
        self._broken: dict[tuple[int, int], str] = {}
        #: Those of them whose artifact file is absent from the folder (not damaged), with the artifact's sha256.
        self._absent: dict[tuple[int, int], str] = {}
        #: The declared drivers (future, historical) every model in service was last checked against, and the
        #: versions loaded since, whose drivers are not checked yet (:meth:`_refit_for_drivers`).
        self._drivers_checked: tuple | None = None
        self._said_drivers_unused = False
        self._unchecked_loads: set[tuple[int, int]] = set()
        self.notifier = notifier if notifier is not None else _project_notifier(config, self.store)
        from mlma.mlflow_sync import project_sync  # does not import mlflow itself

        #: The MLflow mirror of the registry (None without an ``[mlflow]`` section in mlma.toml), and the
        #: thread of its last sync (:meth:`_mirror`).
        self.mlflow = project_sync(config)
        self._mirroring: threading.Thread | None = None
        self.holder = agent_identity()
        #: The lease of this agent's last tick while it is not known to be given up: a fault of the store that
        #: stopped the tick may have stopped its release too, and the lock would then read as held by this very
        #: process until its lease ran out (every round of `mlma run` skipped, "another agent is working").
        self._lease: Lease | None = None
        #: Every stream's recent observations, kept between ticks (see _window_fleet).
        self._window: ObservationWindow | None = None
        #: The training window worked out for a clock, ((frequency, tick), ticks): see _train_window.
        self._window_ticks: tuple[tuple[str, str], int | None] | None = None
        #: Every stream's unique_id by id, kept between ticks (see _stream_names).
        self._names = np.empty(0, dtype=object)
        #: What a tick leaves in memory (models, the window) is frozen out of the garbage collector's scans.
        self._heap = LongLivedHeap()
        #: The overrides of the streams that have any, and the store's count of override changes when read.
        self._overrides: tuple[int, dict] | None = None
        #: (saved state's sha256, count of champion moves): that state's serving versions agree with the
        #: registry's champions as of that count, so a tick continuing from it need not compare 10,000 of them
        #: while nobody moved one (see _controls).
        self._champions_agree: tuple[str, int] | None = None
        #: ``[store] keep`` was found shorter than what the ticks read (said once: see apply_retention).
        self._retention_capped = False
        #: The last done tick after which ``[registry] keep_versions`` was applied (see apply_version_retention).
        self._versions_pruned_after: int | None = None
        #: The training window was found reaching before the kept data (said once: see _warn_if_pruned_into).
        self._pruned_window_said = False
        #: mlma.toml's [data] freq and tick were checked against the project's fixed clock (see timing).
        self._clock_checked = False

    # -- the clock ------------------------------------------------------------------------------------------
    def timing(self) -> TickClock:
        """The saved clock, or the one the data implies when no tick ran yet. A ``[data] freq`` or ``tick`` in
        mlma.toml that is not the project's fixed clock is refused (:class:`ConfigError`), as an ingest refuses
        it: the ticks would otherwise run on the stored clock, the setting passed over in silence."""
        if not self._clock_checked:
            fixed = self.store.clock()
            if fixed is not None:
                try:
                    check_clock_settings(fixed, self.config.data.freq, self.config.data.tick)
                except ValueError as exc:
                    raise ConfigError(f"{self.config.root / CONFIG_NAME}: {exc}") from None
            self._clock_checked = True
        state = self._latest_state()
        if state is not None and "meta.freq" in state.arrays:
            return TickClock.from_arrays(state.arrays)
        first, _ = self._data_span()
        if first is None:
            raise NotReady("the store has no observations yet: run `mlma ingest FILE` first")
        clock = self.store.clock()  # fixed by the first ingest that could tell it (mlma ingest)
        if clock is not None:
            freq, tick = clock.freq, clock.tick
        else:
            # Not fixed yet: the first files held one timestamp per stream (a daily panel fed a day per file;
            # `mlma ingest` reports the frequency as pending), or the data was written by Store.ingest_frame,
            # which trusts its caller and fixes no clock.
            freq = self.config.data.freq or self._inferred_frequency()
            tick = self.config.data.tick
        return TickClock.covering(freq, tick, first)

    def _inferred_frequency(self) -> str:
        """The frequency the stored data implies; :class:`NotReady` while it cannot tell (every stream has a
        single timestamp so far), as no tick can run before the frequency is known."""
        try:
            return infer_frequency(self._sample()).alias
        except FrequencyPending:
            raise NotReady(f"the frequency is not known yet: every stream has a single timestamp so far; it is "
                           f"fixed by the first ingested file that, with the rows already stored, gives a stream "
                           f"two timestamps (or set freq in the data section of {CONFIG_NAME}), so no tick can run "
                           f"until a later file") from None

    def _latest_state(self):
        """The newest saved state; its clock is read before every tick, so it is not decoded twice."""
        newest = self.store.newest_state_tick()
        cached = getattr(self, "_state_cache", None)
        if newest is None:
            return None
        if cached is None or cached.tick != newest:
            try:
                self._state_cache = cached = self.store.load_state(int(newest))
            except StateCorrupted as exc:
                intact = [tick for tick, error in self.saved_states() if error is None]
                raise StateCorrupted(
                    f"the saved agent state of tick {int(newest)} is damaged ({exc}); the agent does not continue "
                    f"from a damaged state. Intact saved states: "
                    f"{', '.join(f'tick {t}' for t in intact) or 'none'}. Restore the store from a backup taken "
                    f"after tick {int(newest)} (docs/operations.md, 'Backup and restore')") from None
        return cached

    def saved_states(self) -> list[tuple[int, str | None]]:
        """Every saved agent state, newest first: its tick, and None if its bytes match their recorded
        SHA-256, else why not."""
        return self.store.saved_states()

    def _data_span(self) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """The oldest observation and the newest one the clock may reach: never later than now plus
        ``[data] max_future``, so that rows dated in the future (stored before the ingest boundary refused
        them, or by a trusted writer) cannot make ticks due."""
        # Two scalar queries: each is one step down the ds index, where min and max together make SQLite
        # scan the whole index (measured 1.3 s at 10,000 streams).
        lo = self.store.oldest_ds()
        if lo is None:
            return None, None
        hi = self.store.newest_ds(until=self._clock_limit())
        return pd.Timestamp(lo), (pd.Timestamp(lo) if hi is None else hi)

    def _clock_limit(self) -> pd.Timestamp | None:
        future = self.config.ingest_limits().max_future
        return None if future is None else pd.Timestamp.now(tz="UTC").tz_localize(None) + future

    def _with_drivers(self, frame: pd.DataFrame, drivers, start, end) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """The observations with the declared drivers' values in force (observed, else known in advance)
        joined on, and the values for timestamps without an observation (the tick to forecast)."""
        if not drivers:
            return frame, None
        values = self.store.driver_values(drivers.columns, start, end)
        merged = frame.merge(values, on=["stream_id", "ds"], how="left", sort=False)
        ahead = values.merge(frame[["stream_id", "ds"]], on=["stream_id", "ds"], how="left", indicator=True)
        future = ahead.loc[ahead["_merge"] == "left_only"].drop(columns="_merge")
        return merged, future

    def _window_fleet(self, freq: str, boundaries, base: int, lo, k: int, ids: np.ndarray,
                      drivers) -> FleetData:
        """The tick's :class:`FleetData`: built on the observation window's matrix itself (no flat copy of the
        training window), or, for a project with ``drivers``, from its rows with the drivers joined on."""
        end = boundaries[k + 1 - base]
        if not drivers:
            values, first = self._window_for(freq).matrix(lo, end, n_streams=len(ids))
            return FleetData.from_matrix(values, first, freq, boundaries, ids=ids, first_tick=base)
        frame = self._window_frame(freq, lo, end, len(ids))
        frame, future = self._with_drivers(frame, drivers, lo, boundaries[k + 2 - base])
        return FleetData(frame, freq, boundaries, ids=ids, first_tick=base, drivers=drivers, future=future)

    def _window_for(self, freq: str) -> ObservationWindow:
        if self._window is None or self._window.freq != freq:
            if self._window is not None:
                self._window.close()
            # Saved in the background: the file is written while the tick works on the values.
            self._window = ObservationWindow(self.store, freq, self.window_path, save_in_background=True)
        return self._window

    def _window_frame(self, freq: str, start, end, n_streams: int) -> pd.DataFrame:
        """``stream_id, ds, y`` of the observations with ``start <= ds < end`` (``start`` None: all), sorted by
        stream then time, from the kept :class:`~mlma.store.window.ObservationWindow`: a tick reads only the rows
        that changed since the last one (new actuals, revisions), not its whole training window again."""
        sid, ds, y = self._window_for(freq).rows(start, end, n_streams=n_streams)
        return pd.DataFrame({"stream_id": sid, "ds": ds, "y": y}, copy=False)

    @property
    def window_path(self) -> Path | None:
        """Where the observation window is saved between runs (a cache; see docs/operations.md), or None for
        an in-memory store."""
        if self.store.in_memory:
            return None
        return Path(self.config.root) / "cache" / "observations.window"

    def _sample(self) -> pd.DataFrame:
        ids = self.store.streams(columns=("id",))["id"].to_numpy()[:200]
        return self.store.observations(streams=[int(i) for i in ids])

    def next_tick(self, timing: Timing | None = None) -> tuple[int, bool]:
        """The next tick to run and whether it is the start-up step; :class:`NotReady` if none is due."""
        timing = timing or self.timing()
        _, last_ds = self._data_span()
        if last_ds is None:
            raise NotReady("the store has no observations yet: run `mlma ingest FILE` first")
        done = self.store.last_done_tick()
        complete = timing.complete_ticks(last_ds)
        if done is None:
            first = self.config.agent.initial_ticks or complete
            if complete < max(first, 1):
                raise NotReady(f"the data holds {complete} complete tick(s) of {timing.tick}; the agent starts "
                               f"after {max(first, 1)} (set [agent] initial_ticks)")
            return first - 1, True
        k = done + 1
        if k >= complete:
            raise NotReady(_next_tick(timing, k).not_complete(last_ds))
        return k, False

    def due_tick(self) -> tuple[int, bool]:
        """:meth:`next_tick`, unless it waits for its late actuals (:class:`LateActuals`, a :class:`NotReady`):
        the tick a run would take now, for ``mlma status``. Held ticks (:meth:`check_no_data`) are returned."""
        timing = self.timing()
        k, start = self.next_tick(timing)
        if not start:
            self.check_late_actuals(k, timing)
        return k, start

    # -- running --------------------------------------------------------------------------------------------
    def step(self, *, allow_no_data: tuple[str, str | None] | None = None, wait: bool = True) -> TickResult:
        """Run the next due tick under the lock; raises :class:`NotReady` when there is none (or it waits for its
        late actuals: :meth:`check_late_actuals`; ``wait=False`` runs it with what it has) and
        :class:`TickHeld` when it would find no data for nearly all served streams (see
        :meth:`check_no_data`; ``allow_no_data=(by, reason)`` is a person's say-so to run it anyway)."""
        with self._lock() as lease:
            k, start, timing = self._due(lease, allow_no_data, wait=wait)
            result = self._run(k, start, timing, lease)
        self._mirror()
        return result

    def catch_up(self, max_ticks: int | None = None, *, on_tick=None,
                 allow_no_data: tuple[str, str | None] | None = None, stopping=lambda: False,
                 wait: bool = True) -> list[TickResult]:
        """Run every due tick (at most ``max_ticks``), holding the lock throughout.

        ``on_tick(result)`` is called as each tick commits (progress for a long catch-up); ``stopping()`` is
        asked before each tick, and a true answer ends the catch-up there (a service told to stop finishes
        the running tick, not the backlog). A tick that would
        find no data for nearly all served streams stops the catch-up with :class:`TickHeld` (the ticks before
        it are committed) unless ``allow_no_data=(by, reason)`` allows it. The newest tick may wait for its late
        actuals (:meth:`check_late_actuals`; ``wait=False``: it runs with what it has): the catch-up ends there.
        """
        results = []
        with self._lock() as lease:
            while (max_ticks is None or len(results) < max_ticks) and not stopping():
                try:
                    due = self._due(lease, allow_no_data, none_when_idle=True, wait=wait)
                except NotReady:
                    if not results:
                        raise
                    break  # the ticks before it ran: the waiting one is said by the next call
                if due is None:
                    break
                k, start, timing = due
                results.append(self._run(k, start, timing, lease))
                if on_tick is not None:
                    on_tick(results[-1])
        if results:
            self._mirror()
        return results

    def _mirror(self) -> None:
        """Mirror the registry into MLflow (``[mlflow]``), after the ticks' commits and outside the tick lock,
        waiting at most ``max_seconds`` (+5 s): a sync still running then goes on in the background, and the
        next one is skipped while it does. Never raises (what fails is offered again next time). An MLflow
        server that does not answer held the tick's process and its lock for 4 to 20 minutes before."""
        if self.mlflow is None:
            return
        running = self._mirroring
        if running is not None and running.is_alive():
            log.warning("the last MLflow sync is still running (a server that answers slowly?); this one is "
                        "skipped: the next tick offers what is left")
            return
        self._mirroring = threading.Thread(target=self.mlflow.sync, args=(self.registry,), name="mlma-mlflow-sync",
                                           daemon=True)
        self._mirroring.start()
        self._mirroring.join(self.mlflow.settings.max_seconds + 5.0)
        if self._mirroring.is_alive():
            log.warning("the MLflow sync is not done after max_seconds=%g; it goes on in the background (an "
                        "MLflow server that answers slowly?)", self.mlflow.settings.max_seconds)

    def _due(self, lease, allow_no_data, *, none_when_idle: bool = False,
             wait: bool = True) -> tuple[int, bool, Timing] | None:
        """The next tick to run, its start-up flag and clock, once it may run (:meth:`check_late_actuals`, unless
        not ``wait``, and :meth:`check_no_data`); with ``none_when_idle``, None when no tick is due instead of
        :class:`NotReady` (a clock that cannot start yet, or a tick waiting for its late actuals, still raises
        it). An error on the way (a damaged saved state, the database) is that tick's
        failure, recorded and escalated as one inside it is (:meth:`_record_failure`); nothing due and a held
        tick are not failures."""
        k = None
        try:
            timing = self.timing()
            try:
                k, start = self.next_tick(timing)
            except NotReady:
                if none_when_idle:
                    return None
                raise
            if not start:
                view = self._tick_view(k, timing)
                if wait:
                    self.check_late_actuals(k, timing, view=view)
                self.check_no_data(k, timing, allow=allow_no_data, view=view)
        except (NotReady, TickHeld):
            raise
        except BaseException as exc:
            self._record_failure(k, exc, lease)
            raise
        return k, start, timing

    def _record_failure(self, k: int | None, exc: BaseException, lease) -> None:
        """Mark tick ``k`` failed and escalate it (``tick-failed``, posted to the alert receivers at once); with
        ``k`` None (the clock could not be read), escalate it as the tick after the last done, unmarked, and
        audit it (``tick-start-failed``, target ``tick:K``: what :mod:`mlma.metrics` counts it by). Never
        raises: the tick's own error matters more."""
        # Escalated, so that a person hears the agent is stuck: not a stop (Ctrl-C, SIGTERM), nor a lease
        # another agent took over, nor a tick another agent committed (those ticks run on).
        escalate = isinstance(exc, Exception) and not isinstance(exc, (LockLost, TickAlreadyDone))
        try:
            known = k is not None
            if not known:  # which tick is not known (the clock could not be read): escalated, no tick marked
                done = self.store.last_done_tick()
                k = 0 if done is None else done + 1
            # A stop is not an error: said as what it was, with no empty "KeyboardInterrupt:" for a message.
            error = exc if isinstance(exc, Exception) else (
                f"stopped ({type(exc).__name__}: Ctrl-C or a signal) before the commit; nothing of it was written "
                "and it runs again whole")
            self.store.fail_tick(k, error, escalate=escalate, lease=lease, mark=known)
            if not known and escalate and (lease is None or not lease.lost):
                # An unmarked failure leaves no tick row, and its tick-failed item is only updated while it is
                # unresolved: this entry is what counts it, one per failure (mlma_tick_failures_total, whose
                # MlmaTickFailing and MlmaTickFailingRepeatedly rules named this case but never saw it).
                first = (f"{type(exc).__name__}: {exc}".strip().splitlines() or [""])[0]
                self.store.add_audit("agent", "tick-start-failed", f"tick:{k}", {"tick": k}, first[:500])
        except Exception as record_error:  # noqa: BLE001 - the original error matters more
            # One line: a full disk or a lost database fails this too, and the tick's own error follows.
            log.error("could not record the failure of tick %s: %s: %s", k, type(record_error).__name__,
                      (str(record_error).strip().splitlines() or [""])[0])
        else:
            if escalate:
                self._notify(k)

    def _tick_view(self, k: int, timing: Timing) -> _TickView | None:
        """The streams with a serving model and the observations of the ticks up to ``k`` (the window the tick
        reads next anyway: the refresh happens here instead of there); None before the first models, or when
        the training span cannot be laid (the tick says so itself, and is recorded as failed: :meth:`_run`)."""
        state = self._latest_state()
        if state is None or "agent.champion" not in state.arrays:
            return None
        served = np.flatnonzero(np.asarray(state.arrays["agent.champion"]) != NO_MODEL)
        if not len(served):
            return None
        try:
            base, boundaries, start = self._training_span(k, False, timing)
        except ConfigError:
            return None
        names = self._stream_names()
        # One probe of the store per stream cost 25 ms a tick at 10,000 streams: the window's matrix instead.
        values, first = self._window_for(timing.frequency.alias).matrix(start, boundaries[k + 1 - base],
                                                                        n_streams=len(names))
        fleet = FleetData.from_matrix(values, first, timing.frequency.alias, boundaries, ids=names, first_tick=base)
        usual = np.zeros(len(names), dtype=bool)
        if state.tick == k - 1 and "agent.silence_recent" in state.arrays:
            recent = np.asarray(state.arrays["agent.silence_recent"])
            launched = np.asarray(state.arrays.get("agent.silence_launched", np.ones(len(recent), dtype=bool)))
            usual[:len(recent)] = usual_silence(timing.tick_season, recent, launched)
        return _TickView(served, fleet, base, usual)

    def check_late_actuals(self, k: int, timing: Timing, *, view: _TickView | None = None) -> None:
        """Wait (raise :class:`NotReady`) while tick ``k`` is the newest tick the data have reached the end of, its
        actuals are few against the tick before's, and they arrived lately (``[agent] wait_for_share`` and
        ``max_wait``).

        The clock calls a tick complete once *any* stream reports past its end, which one feed that is earlier
        than the others does (or one stream whose clock is ahead). Run then, the tick would score every other
        stream on part of its tick, call their short batches broken data, and never score the rest of their
        actuals. So a tick at the front of the data whose served streams have reported fewer than
        ``wait_for_share`` times the observations they reported in the tick before (or, if fewer, in the tick a
        day or a week before) waits for the rest, at most ``max_wait`` after the first actual past its end was
        ingested (by the store's clock; a revision of it later does not count anew); then it runs with what it
        has, as before. A tick that the fleet's later data have passed (at least half of the streams that
        reported in it reported after it: a catch-up), or whose actuals were ingested long after it ended (a
        replay of history), never waits: there is nothing more to wait for. A tick that only a few streams' later
        rows passed (a stream's clock days ahead, with ``[data] max_future`` off) is still the fleet's front: it
        waits, from the first of its streams reaching its end (or from now, while none has). A fleet that really
        shrank waits once, for ``max_wait``.
        """
        share, max_wait = self.config.agent.wait_for_share, self.config.late_actuals_wait()
        if share <= 0 or max_wait <= pd.Timedelta(0):
            return
        _, last_ds = self._data_span()
        newest = None if last_ds is None else timing.complete_ticks(last_ds) - 1
        if newest is None or k > newest:
            return
        ahead = k < newest
        if ahead:
            # Later data passed this tick: a catch-up, if the fleet's did. A few streams' rows dated days ahead
            # (one stream's clock, with [data] max_future off) pass it alone: the tick is still the fleet's
            # front, and waits as one (it ran on a part of its actuals, and so did each tick after it).
            reached, passed = self.store.streams_past(timing.boundary(k), timing.boundary(k + 1))
            if 2 * passed >= reached:
                return
        view = view if view is not None else self._tick_view(k, timing)
        if view is None:
            return
        got = int(view.fleet.observed_in_tick(k)[view.served].sum())
        # Compared with the tick before, and with the ticks a day and a week before it (the same hours, the same
        # weekday) where the window holds them: the one with the fewest, per timestamp of the data's grid. Actuals
        # that follow the time of day or the week (rows only when a count is not zero, a quiet Sunday) are then
        # compared with a like tick, not only with the busier one before; a February of daily data has 28 rows.
        steps, reference = timing.steps_in_tick(k), None
        for j in sorted({k - 1, *(timing.tick_of(timing.boundary(k) - pd.Timedelta(days=d)) for d in (1, 7))},
                        reverse=True):
            if j < view.first_tick:
                continue
            count = int(view.fleet.observed_in_tick(j)[view.served].sum())
            expected = count * steps / timing.steps_in_tick(j)
            if reference is None or expected < reference[2]:
                reference = (j, count, expected)
        if reference is None or got >= share * reference[2]:
            return
        end = timing.boundary(k + 1)
        found = self.store.first_arrival(timing.last_timestamp(k), until=self._clock_limit())
        if found is None:
            return
        if ahead:
            # The rows ahead may have come before this tick's own: the wait counts from the first of its streams
            # reaching its last timestamp (its own end, as the newest tick's), or from now while none has.
            own = self.store.first_arrival(timing.last_timestamp(k), until=timing.last_timestamp(k))
            found = (found[1], found[1]) if own is None else (max(found[0], own[0]), own[1])
        # Both times by the store's clock (the PostgreSQL server's: the agent's host may be set differently).
        arrived, now = (pd.Timestamp(t).tz_convert("UTC").tz_localize(None) for t in found)
        # Actuals ingested more than a tick (and a day, for time zones: ds is read as UTC, as [data] max_future
        # reads it) after the tick ended are history being replayed, not a feed running late.
        if arrived - end > (timing.boundary(k + 2) - end) + pd.Timedelta(days=1):
            return
        deadline = arrived + max_wait
        if now >= deadline:
            return
        j, before, expected = reference
        span = timing.boundary(k) - timing.boundary(j)
        which = ("the tick before" if j == k - 1 else
                 "the tick a week before" if span >= pd.Timedelta(days=7) else "the tick a day before")
        raise LateActuals(f"tick {k} ({timing.boundary(k)} to {end}) waits for the rest of its actuals: its served "
                          f"streams reported {got:,} observation(s) in it, {got / max(expected, 1):.0%} of the "
                          f"{before:,} of tick {j} ({which}; [agent] wait_for_share = {share:g}); it runs once they "
                          f"reach that share, or at {deadline:%Y-%m-%d %H:%M:%S} UTC ([agent] max_wait = "
                          f"{self.config.agent.max_wait!r} after its first actual past its end came in), or now with "
                          f"`mlma tick --no-wait`", tick=k, got=got, expected=expected, reference=j, deadline=deadline,
                          now=now)

    def check_no_data(self, k: int, timing: Timing, *, allow: tuple[str, str | None] | None = None,
                      view: _TickView | None = None) -> None:
        """Hold tick ``k`` (raise :class:`TickHeld`) when at least ``[agent] hold_no_data_share`` of the streams
        with a serving model have no observation in it, unless that is the fleet's rhythm or a person allowed it.

        The fleet's rhythm (:func:`mlma.silence.usual_silence`, from the state saved after tick ``k - 1``): at
        most ``1 - hold_no_data_share`` of the served streams report at such a tick (the others were silent at
        it in each of the last three seasons: a fleet of shops closed on Sundays), or fewer than that share of
        those that do report at such a tick have no data.

        Such a tick is almost never a real fleet-wide silence: a feed broke, or the clock was moved by rows
        dated far ahead. Committing it would record a no-data verdict for every stream and move on, and the
        actuals that arrive later for it would never be scored. The hold escalates (one fleet-wide
        ``data-quality`` escalation per held tick). ``allow=(by, reason)`` (``mlma tick --allow-no-data``)
        runs it anyway; the decision is audited (``allow-no-data-tick``, target ``tick:K``) and holds for
        that tick from then on, also if the run is retried.
        """
        view = view if view is not None else self._tick_view(k, timing)
        if view is None:
            return
        served = view.served
        lo, hi = timing.boundaries(k, k + 1)
        # Stored values are finite, so a stream reported in the tick exactly when its columns of it hold a value.
        silent = view.fleet.observed_in_tick(k)[served] == 0
        missing = int(silent.sum())
        # Unless the silence is the fleet's rhythm (mlma.silence): a tick at which most of the served streams are
        # usually silent (a fleet of shops closed on Sundays) is no sign of a broken feed, nor is one whose
        # streams that do report at such a tick mostly did. So the hold only ever holds less than by the share
        # alone: a Saturday outage of the streams open on Saturdays is held while they are a fair part of the
        # fleet, and one stream's Saturday among a thousand closed then holds nothing.
        share = self.config.agent.hold_no_data_share
        usual = view.usual_silence[served]
        expected = int((~usual).sum())
        missing_expected = int((silent & ~usual).sum())
        rhythm = expected <= (1 - share) * len(served) or missing_expected < share * expected
        held = self.store.fleet_escalation_ids("data-quality", k)
        if missing < share * len(served) or rhythm:
            if held:  # the actuals came in after all
                self.store.set_escalation_status(held, "resolved", by="agent",
                                                 reason=f"tick {k} has data now ({len(served) - missing:,} of "
                                                        f"{len(served):,} served streams reported)")
            return
        target = f"tick:{k}"
        if len(self.store.audit_log(action="allow-no-data-tick", target=target)):
            return
        numbers = {"tick": k, "start": str(lo), "end": str(hi), "served_streams": len(served),
                   "streams_without_data": missing, "usually_silent_streams": len(served) - expected}
        if allow is not None:
            by, reason = allow
            self.store.add_audit(by, "allow-no-data-tick", target, numbers, reason)
            if held:
                self.store.set_escalation_status(held, "resolved", by=by,
                                                 reason=f"tick {k} allowed to run without data: {reason or ''}")
            return
        usually = (f"; {len(served) - expected:,} of them are usually silent at such a tick, and {missing_expected:,} "
                   f"of the other {expected:,} have no data either" if expected < len(served) else "")
        message = (f"tick {k} ({lo} to {hi}) is held: {missing:,} of the {len(served):,} streams with a serving model "
                   f"have no data in it{usually} (hold_no_data_share = {share:g}). A feed "
                   f"may have stopped, or rows dated far ahead moved the clock. Ingest the missing actuals, or, if "
                   f"the fleet really was silent, let it run: mlma tick --allow-no-data --reason '...'")
        if not held:
            self.store.add_escalations([Escalation(-1, k, "data-quality", 3, message)])
        raise TickHeld(message, tick=k, missing=missing, served=len(served))

    def close(self) -> None:
        if self._mirroring is not None:
            self._mirroring.join(5.0)  # a sync under way gets a moment to finish its delivery (else: next run)
        self._heap.release()
        if self._window is not None:
            self._window.close()
        if self.notifier is not None:
            self.notifier.close(timeout=10)
        if self._executor is not None and self._own_executor:
            if self._executor_dirty:
                terminate_executor(self._executor)
            elif hasattr(self._executor, "shutdown"):
                self._executor.shutdown()
            self._executor = None
        if self._own_store:
            self.store.close()

    def __enter__(self) -> LiveAgent:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _lock(self):
        """The tick lock; one left by an agent process that died on this host is broken (audited) first."""
        ttl = self.config.agent.lock_ttl_seconds
        if self._lease is not None:
            self._lease.release()  # a store still at fault says so here, in place of "held by" this agent itself
            self._lease = None
        holder = (self.store.lock_holder() or {}).get("holder", "")
        if holder and _holder_is_dead(holder):
            self.store.break_lock(by="agent", reason=f"the holder {holder} is no longer running on this host")
        with self.store.tick_lock(self.holder, ttl) as lease:
            self._lease = lease
            yield lease
        self._lease = None

    def executor(self):
        """The executor of this agent's fits (made at first use). One it made itself that can no longer take
        work is made again: a Dask client closed after its scheduler was lost for a while (the cluster may be
        back), a process pool that broke."""
        if self._executor is not None and self._own_executor and not executor_usable(self._executor):
            log.warning("the executor %r can no longer take work (its cluster was lost, or its pool broke): "
                        "making a new one", self._executor_spec)
            terminate_executor(self._executor)
            self._executor = None
        if self._executor is None:
            self._executor = make_executor(self._executor_spec)
        return self._executor

    def _renew_executor(self):
        """A fresh process pool in place of one that broke (:attr:`ModelService.renew_executor`)."""
        terminate_executor(self._executor)
        self._executor = None
        return self.executor()

    # -- one tick -------------------------------------------------------------------------------------------
    def _run(self, k: int, start: bool, timing: Timing, lease) -> TickResult:
        started = time.perf_counter()
        self.registry.sign_artifacts()  # its models are there, new or not: another project's gc must see them
        bounds = timing.boundaries(k, k + 1)
        self.store.begin_tick(k, start=bounds[0], end=bounds[1], lease=lease, take_up_actions=not start)
        _checkpoint("after-begin")
        try:
            with threadpool_limits(limits=1):
                result = self._compute_and_write(k, start, timing, lease, started)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # Ctrl-C or a signal: the pool's workers ignore SIGINT and would finish their fits before the
                # process could exit; they are killed at close instead.
                self._executor_dirty = True
            self._record_failure(k, exc, lease)
            raise
        if self._executor_dirty and self._own_executor and self._executor is not None:
            # A timed-out fit may still occupy a worker: the next tick gets a fresh pool.
            terminate_executor(self._executor)
            self._executor, self._executor_dirty = None, False
        # Every tick, not only ticks with new escalations: reminders and retries of failed deliveries too.
        self._notify(k)
        self._heap.settle()
        return result

    def _notify(self, k: int) -> None:
        """Hand the open escalations to the alert receivers (in the background; never raises)."""
        if self.notifier is None:
            return
        try:
            self.notifier.notify(tick=k)
        except Exception:  # noqa: BLE001 - alerts never fail a tick, nor hide the error of a failed one
            log.exception("alerts for tick %s could not be queued", k)

    def notify_due(self) -> None:
        """Between ticks (a service's round that committed none, ``mlma run``): send what is due now, deliveries
        that failed, reminders and a held tick's escalation (:meth:`mlma.alerts.Notifier.notify_due`, in the
        background; skipped while an earlier notification is still under way; never raises). Else a receiver
        that was down at the moment of a tick waited for the next tick, a day with daily ticks."""
        if self.notifier is None:
            return
        try:
            self.notifier.notify_due()
        except Exception:  # noqa: BLE001 - alerts never stop the service
            log.exception("alerts due between ticks could not be queued")

    def _compute_and_write(self, k: int, start: bool, timing: Timing, lease, started: float) -> TickResult:
        cfg = self.config
        freq = timing.frequency
        state = None if start else self._latest_state()
        if state is not None and state.tick != k - 1:
            state = self.store.load_state(k - 1)
        if not start and state is None:
            raise RuntimeError(f"no saved state for tick {k - 1}: the store's agent_state was lost; restore a "
                               "backup or start a new project")
        names = self._stream_names()
        n = len(names)
        window = self._train_window(timing)
        base, boundaries, lo = self._training_span(k, start, timing)
        self._warn_if_pruned_into(lo)
        drivers = cfg.drivers()
        fleet = self._window_fleet(freq.alias, boundaries, base, lo, k, names, drivers)
        fleet.mark_abnormal(self._abnormal_periods())
        ctx = self._forecast_context(timing)
        executor = self.executor()
        timeout = cfg.agent.fit_timeout_seconds or None
        # Only work handed to an executor can be timed out: with a timeout, even one fit goes to the pool.
        inline = type(executor).__name__ == "InlineExecutor"
        # The spec and the window were checked by _train_window (a ConfigError naming [model]).
        service = ModelService(fleet, cfg.model.spec, ctx, train_window_ticks=window, executor=executor,
                               fit_timeout=timeout, parallel_threshold=1 if timeout and not inline else None,
                               model_params=cfg.model_params(), window_steps=timing.most_steps,
                               stores_models=True, driver_range_factor=cfg.ingest_limits().value_range_factor,
                               renew_executor=self._renew_executor if self._own_executor and not inline else None,
                               fit_suspects=[] if state is None else state.arrays.get("live.fit_suspects", []))
        if drivers and not service.wants_drivers and not self._said_drivers_unused:
            self._said_drivers_unused = True  # once per process
            log.warning("the model %r takes no drivers: the drivers declared in mlma.toml ([data] drivers %s, "
                        "historical_drivers %s) are not used by its forecasts, and event drivers are not discounted "
                        "from its losses; use a model that takes them (ridge, lightgbm, docs/models.md)",
                        cfg.model.spec, list(drivers.future), list(drivers.historical))
        try:
            policy = cfg.build_policy()
        except ValueError as exc:
            # The spec's own settings (mlma:alpha=0.1) are checked here: checking them when the file is read
            # would load the statistics stack for every command (`mlma status` too).
            raise ConfigError(f"{cfg.root / CONFIG_NAME}: [agent] policy {cfg.agent.policy!r}: {exc}") from exc
        # The MASE scale is kept in the state; it is computed only while some stream has none yet.
        scale = self._scale(fleet, state, n, freq.season_length, k, base)
        agent = Agent(policy, service, season_length=freq.season_length, scale=scale, settings=AgentSettings(),
                      tick_season=timing.tick_season)
        live = {"champion_version": np.full(n, -1, np.int64), "challenger_version": np.full(n, -1, np.int64),
                "awaiting_version": np.full(n, -1, np.int64)}
        # Which policy, with which settings, the state is saved for: a change in mlma.toml is seen by the next
        # tick, which keeps or restarts the policy's state (see _policy_change).
        policy_meta = _policy_meta(cfg)
        change = None
        model_meta, model_change = _model_meta(cfg), None
        if state is not None:
            model_change = _model_change(state.arrays, model_meta)
            fresh_scale = agent.scale.copy()
            arrays, change = _policy_change(state.arrays, agent.policy, policy_meta)
            agent.load_state_arrays(arrays)
            agent.scale = np.where(np.isfinite(agent.scale), agent.scale, fresh_scale)
            if change is not None and change.fresh:
                # The new policy meets the serving models as it meets a new stream's first model: its references
                # warm up from the next ticks' losses.
                served = np.flatnonzero(agent.champion != NO_MODEL)
                if len(served):
                    agent.policy.on_new_model(served, k - 1)
            for name in live:
                saved = state.arrays[f"live.{name}"]
                live[name][:len(saved)] = saved
        repair = _Repair()
        if state is not None and not agent.policy.checks_challenger:
            self._drop_unjudged(k, agent, live, repair, change)
        self._broken.clear()  # an artifact restored since the last tick loads again
        self._absent.clear()
        if state is not None:
            self._load_models(service, agent, live, repair)
        # The versions that issued the forecasts this tick scores (the verdicts name them), and those waiting
        # for approval, before a person's move is adopted below.
        scored_by = live["champion_version"].copy()
        waited = live["awaiting_version"].copy()
        controls, actions, approvers, seen, champions_read, stale, yielded = self._controls(
            k, n, agent, live, service, repair, None if state is None else state.sha256)
        self._fall_back(k, agent, live, service, controls, repair)
        self._refit_for_drivers(k, agent, live, service, controls, repair)
        shadow_before = live["challenger_version"].copy()
        _checkpoint("before-tick")

        # The state's blob is made in a thread while the tick goes on (compressing it took longer than writing
        # the tick's rows): the agent's arrays after its tick, the registry versions before the commit. The
        # policy's arrays, most of the state, are final before the fleet is forecast: the store starts saving
        # them then (on PostgreSQL apart, on a connection of its own: writing them took a quarter of a ridge
        # tick at 10,000 streams), and the blob names them.
        encoding = StateEncoding()
        try:
            # The tick's agent and policy are dropped after it: their arrays are handed over, not copied.
            agent.on_policy_settled = lambda arrays: encoding.add_part(
                self.store.stage_state_part(k, arrays, copy=False))
            report = agent.start(k + 1) if start else agent.tick(k, controls)
            if service.timed_out:
                self._executor_dirty = True  # a timed-out fit may hold a worker: the next tick gets a fresh pool
            _checkpoint("after-fit")
            encoding.add({name: value for name, value in (agent.state_arrays() | timing.to_arrays()).items()
                          if name not in encoding.arrays}, copy=False)
            encoding.add({"meta.policy": np.array(json.dumps(policy_meta, sort_keys=True)),
                          "meta.model": np.array(json.dumps(model_meta, sort_keys=True))})
            # From here on the tick is recorded from its report alone.
            # The challengers a person's forced re-training replaced, by registry version (read before
            # _versions moves the slots).
            replaced = _replaced_versions(report, live)
            try:
                with self.registry.artifacts.batch():  # the tick's new artifacts reach the disk in one flush
                    new_versions, expected, moves, checks = self._versions(k, report, fleet,
                                                                           service.train_window_ticks, live,
                                                                           approvers, repair.refit, replaced)
            except OSError as exc:
                # A folder that cannot be made or written (a file in the way, no permission) is the
                # configuration's fault; a full or read-only disk is said as the store says it.
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM):
                    raise
                raise ConfigError(f"{cfg.root / CONFIG_NAME}: [store] artifacts = {cfg.store.artifacts!r}: the "
                                  f"model files cannot be written into {self.registry.artifacts.root} "
                                  f"({exc.strerror or exc}: {exc.filename}); nothing of the tick was committed. Point "
                                  f"[store] artifacts at a folder this agent can create and write") from None
            self.registry.sign_artifacts()  # the folder exists now, if the tick wrote its first models
            # A stream the tick moves itself (a new version served at once, a promoted challenger) needs no
            # repair move back to a version that loads: its own move replaces the broken one, and two moves of
            # one stream in one commit are refused (every tick failed on it).
            moving = {int(m.stream) for m in moves} | {int(v.stream) for v in new_versions if v.promote}
            moves += [move for s, move in repair.moves.items() if int(s) not in moving]
            checks += [VersionCheck(*check) for check in repair.checks]
            report.escalations.extend(Escalation(s, k, "artifact-broken", severity, message)
                                      for s, severity, message in repair.escalations)
            # The agent names a model by its training tick; the engineer finds it by its registry version.
            report.escalations[:] = name_model_versions(report.escalations, {"champion": live["champion_version"],
                                                                             "challenger": shadow_before})
            _checkpoint("after-artifacts")
            # A challenger in shadow when the tick began whose check made it wait for approval this tick: an
            # approval queued before the tick decided it in the same tick.
            for st, check in report.checks.items():
                if check.result == "awaiting-approval" and waited[st] < 0 and shadow_before[st] >= 0:
                    waited[st] = shadow_before[st]
            applied = {} if start else _outcomes(actions, report, live, waited, controls.adopt, replaced, stale,
                                                 yielded)
            verdicts = None if start else _verdicts(report, scored_by)
            forecasts = (forecast_frame(report.issued, fleet.tick_timestamps(k + 1), live["champion_version"])
                         if report.issued is not None else None)
            audit = [{"actor": "agent", "action": "fit-failed", "target": f"stream:{fleet.ids[s]}",
                      "params": {"tick": k, "failures_in_a_row": report.failures_in_a_row[s]}, "reason": error}
                     for s, error in report.failed.items()]
            # A failed forecast names the registry version that failed: the serving one, or the challenger in shadow.
            audit += [{"actor": "agent", "action": "forecast-failed", "target": f"stream:{fleet.ids[s]}",
                       "params": {"tick": k, "version": int(versions[s]), "slot": slot}, "reason": error}
                      for slot, failed, versions in (("champion", report.forecast_failed, live["champion_version"]),
                                                     ("challenger", report.shadow_failed, shadow_before))
                      for s, error in failed.items()]
            audit += [{"actor": "agent", "action": "artifact-broken", "target": f"stream:{fleet.ids[s]}",
                       "params": {"tick": k, "version": version, "slot": slot}, "reason": message}
                      for s, version, slot, message in repair.audit]
            audit += repair.agent_audit
            notes = list(repair.notes)
            causes = [(nm.stream, nm.fitted.fallback_reason, nm.fitted.fallback_cause) for nm in report.new_models]
            for cause, why_it, advice in (
                    ("fit failed", "the model's fit failed", "check [model] spec in mlma.toml"),
                    ("short history", "their history is shorter than the model needs",
                     "they are fitted again as history grows; a model that needs less history serves them better")):
                fell_back = [(s, why) for s, why, c in causes if c == cause]
                if len(fell_back) * 2 >= len(report.new_models) > 0 and fell_back:
                    # A model that fails on most streams (a wrong option in [model] spec), or needs more history
                    # than most have (MSTL with a yearly season on months of data), serves seasonal naive in its
                    # place: said with the tick, not only on each stream's page (a few streams' fall-backs are not
                    # news every tick of a large fleet).
                    s, why = fell_back[0]
                    notes.append(f"{len(fell_back):,} of the {len(report.new_models):,} models fitted this tick run "
                                 f"on a fall-back because {why_it} (e.g. {fleet.ids[s]}: {why}); {advice} "
                                 "(`mlma versions STREAM` shows each)")
            if change is not None:
                # Committed with the tick: a crash before the commit finds the old state again and does the same.
                audit.append({"actor": "agent", "action": "policy-changed", "target": "mlma.toml:agent.policy",
                              "params": {"tick": k, "from": change.before, "to": change.after,
                                         "state": change.state, "challengers_dropped": change.dropped},
                              "reason": change.message})
                notes.append(change.message)
                log.warning("tick %s: %s", k, change.message)
            if model_change is not None:
                before, message = model_change
                audit.append({"actor": "agent", "action": "model-changed", "target": "mlma.toml:model",
                              "params": {"tick": k, "from": before, "to": model_meta}, "reason": message})
                notes.append(message)
                log.warning("tick %s: %s", k, message)
            filled = None
            if drivers.future:
                # Future driver values the forecasts of tick k + 1 needed but nobody ingested: filled by the
                # fallback of FleetData.future_driver_values (same time a season earlier, else the last value).
                filled = int(service.driver_fills.get(k + 1, 0))
                if filled:  # naming the drivers and streams: whose feed to mend
                    log.warning("tick %s: %s", k, service.driver_fill_message(k + 1))
            # The next tick's bounds go in the summary for `mlma status`'s quick path (mlma.store.glance).
            summary = _summary(report, n, start, time.perf_counter() - started, filled, _next_tick(timing, k + 1))
            # Streams whose next fit runs alone (ModelService.suspects): the next tick may be another process.
            encoding.add({f"live.{name}": v for name, v in live.items()}
                         | {"live.fit_suspects": np.array([s for s in service.suspects if s < n], np.int64)})
            record = TickRecord(k, verdicts=verdicts, forecasts=forecasts, escalations=report.escalations,
                                resolve_escalations={} if start else report.cleared, new_versions=new_versions,
                                expected_versions=expected, champion_moves=moves, version_checks=checks, audit=audit,
                                applied_actions=applied, state=encoding, summary=summary, seen_changes=seen,
                                champions_read=champions_read)
            _checkpoint("before-commit")
            written = self.store.write_tick(record, lease=lease)
            self.last_committed = k  # a stop from here on finds the tick done (what mlma tick says)
            if repair.drivers_checked is not None:
                self._drivers_checked = repair.drivers_checked[0]
                self._unchecked_loads -= repair.drivers_checked[1]
            _checkpoint("after-commit")
            if written.state is not None:  # the state just saved, as the next tick would read it back
                self._state_cache = written.state
            if written.moves_left_out:
                # A person moved these streams while the tick ran: their choice stands, the next tick adopts it.
                shown = ", ".join(f"{fleet.ids[m.stream]} (version {m.version})" for m in written.moves_left_out[:5])
                note = (f"{len(written.moves_left_out)} champion move(s) of this tick left out because a person "
                        f"moved the stream while it ran (their choice stands): {shown}")
                notes.append(note)
                log.warning("tick %s: %s", k, note)
            # The saved state's champions are the registry's, unless someone moved one while the tick ran.
            self._champions_agree = (None if written.state is None or "champions" in written.unseen_changes
                                     else (written.state.sha256, written.changes["champions"]))
            self._keep_models(k, report, expected, live)
            summary = replace(summary, escalations_resolved=sum(written.resolved.values()),
                              promoted=max(0, summary.promoted - len(written.moves_left_out)))
            return TickResult(k, start, n, summary, list(written.escalation_ids), time.perf_counter() - started,
                              notes)
        finally:
            encoding.close()

    # -- pieces of the tick ---------------------------------------------------------------------------------
    def _forecast_context(self, timing: Timing) -> ForecastContext:
        """What every model of the fleet knows of the clock: frequency, season, horizon and the drivers."""
        freq = timing.frequency
        return ForecastContext(freq=freq.alias, season_length=freq.season_length, horizon=timing.horizon(),
                               drivers=self.config.drivers())

    def _train_window(self, timing: Timing) -> int | None:
        """The training window in ticks: ``[model] train_window_ticks``, else the frequency's default lengthened
        to what the model needs (:func:`mlma.models.fitting_train_window`); a window set too short for the model
        is a :class:`ConfigError` naming the key, and so is a model spec that cannot be built. Worked out once
        per clock (it builds the model once)."""
        key = (timing.frequency.alias, timing.tick)
        if self._window_ticks is None or self._window_ticks[0] != key:
            cfg = self.config
            ctx = self._forecast_context(timing)
            try:
                window = fitting_train_window(make_forecaster(cfg.model.spec, ctx, **cfg.model_params()), ctx,
                                              cfg.model.train_window_ticks or None, timing.train_window(),
                                              name=spec_name(cfg.model.spec), steps_in=timing.most_steps)
            except ValueError as exc:
                raise ConfigError(f"{cfg.root / CONFIG_NAME}: [model] {exc}") from exc
            self._window_ticks = (key, window)
        return self._window_ticks[1]

    def _training_span(self, k: int, start: bool, timing: Timing) -> tuple[int, list, pd.Timestamp | None]:
        """What tick ``k`` reads: the first tick of its training window, the boundaries from there to tick
        ``k + 2``, and the window's first timestamp (None: the whole history). The start-up fits and forecasts
        at the end of tick k = first - 1 on the whole history; a tick fits at its end too."""
        window = self._train_window(timing)
        base = 0 if (start or window is None) else max(0, k - window)
        boundaries = timing.boundaries(base, k + 2)
        return base, boundaries, (boundaries[0] if base > 0 else None)

    @staticmethod
    def _scale(fleet: FleetData, state, n: int, season_length: int, k: int, base: int) -> np.ndarray:
        """The MASE scale for this tick's agent: kept in the state, so computed only for the streams that have
        none yet (new streams, streams without a season's worth of pairs so far), from the pairs of the
        training window known at tick ``k`` (:meth:`FleetData.scale_known_at`, as the backtest does); NaN for
        the others, whose saved scale the agent's state brings back (:meth:`Agent.load_state_arrays`)."""
        if state is None:
            return fleet.scale_known_at(season_length, k, base)
        saved = np.full(n, np.nan)
        kept = np.asarray(state.arrays["agent.scale"], dtype=np.float64)[:n]
        saved[:len(kept)] = kept
        missing = ~(np.isfinite(saved) & (saved > 0))
        if not missing.any():
            return saved
        return fleet.scale_known_at(season_length, k, base, streams=np.flatnonzero(missing))

    def _keep_models(self, k: int, report: TickReport, expected: list[int], live: dict) -> None:
        """After the commit: keep the tick's new models in memory under their registry versions, so the next
        tick of this process does not read back the artifacts it just wrote; forget the versions that no
        longer serve, shadow or wait (a roll-back to one reads it again)."""
        for new, version in zip(report.new_models, expected):
            fm = new.fitted
            if fm.key == ModelKey(new.stream, k):
                self._loaded[(new.stream, int(version))] = FittedModel(fm.key, fm.model, 0.0, fm.fallback_reason,
                                                                       int(fm.n_train), fm.short_history)
        held = {(int(s), int(v)) for name in ("champion_version", "challenger_version", "awaiting_version")
                for s, v in zip(np.flatnonzero(live[name] >= 0), live[name][live[name] >= 0])}
        self._loaded = {pair: fm for pair, fm in self._loaded.items() if pair in held}

    def _abnormal_periods(self) -> pd.DataFrame:
        return self.store.abnormal_periods(active_only=True)[["unique_id", "start", "end"]]

    def _model(self, stream: int, version: int) -> FittedModel | None:
        """A registry version as the service's fitted model, loaded once per process and verified; None when
        its artifact cannot be loaded (the error is in ``self._broken``)."""
        if (stream, version) not in self._loaded:
            self._load_versions([(stream, version)])
        return self._loaded.get((stream, version))

    def _load_versions(self, pairs: list[tuple[int, int]], *, log_absent: bool = True) -> None:
        """Load registry versions not loaded yet: their rows in one query per 10,000, then each artifact
        (verified against its SHA-256; models that share an artifact are read once).

        An artifact that is missing, altered or cannot be unpickled is not an error of the whole tick: the
        versions that use it are put in ``self._broken`` with the reason, and the tick isolates their streams
        (:meth:`_fall_back`). ``log_absent=False`` leaves the log line of a missing file to the caller (see
        :meth:`_load_models`: a wrong folder is one error, not one line per model)."""
        missing = sorted({p for p in pairs if p not in self._loaded and p not in self._broken})
        if not missing:
            return
        wanted = set(missing)
        rows = self.registry.tables.versions(sorted({s for s, _ in missing}))
        found = {(r.stream_id, r.version): r for r in rows if (r.stream_id, r.version) in wanted}
        absent = wanted - set(found)
        if absent:
            s, v = sorted(absent)[0]
            raise RuntimeError(f"the state names version {v} of stream {s}, which the registry does not have")
        objects: dict[str, object] = {}
        errors: dict[str, str] = {}
        absent: set[str] = set()
        for (s, v), row in found.items():
            sha = row.artifact_sha256
            if sha not in objects and sha not in errors:
                try:
                    objects[sha] = self.registry.artifacts.load(sha)
                except Exception as exc:  # noqa: BLE001 - any unloadable artifact is isolated to its streams
                    errors[sha] = _artifact_error(exc)
                    if isinstance(exc, ArtifactMissing):
                        absent.add(sha)
                    if log_absent or sha not in absent:
                        log.error("model version %s of stream %s cannot be loaded: %s", v, s, errors[sha])
            if sha in errors:
                self._broken[(s, v)] = errors[sha]
                if sha in absent:
                    self._absent[(s, v)] = sha
                continue
            metrics = row.metrics or {}
            self._unchecked_loads.add((s, v))
            # Identical artifacts (byte for byte) share one object: a fitted model is not changed by predict.
            self._loaded[(s, v)] = FittedModel(ModelKey(s, int(row.created_tick)), objects[sha], 0.0,
                                               metrics.get("fallback_reason"), int(metrics.get("n_train", 0)),
                                               bool(metrics.get("short_history", False)))

    def _load_models(self, service: ModelService, agent: Agent, live: dict, repair: _Repair) -> None:
        """Put the serving, shadow and waiting models of the saved state into the service; models whose artifact
        cannot be loaded go to ``repair`` instead."""
        slots = ((agent.champion, "champion_version"), (agent.challenger, "challenger_version"),
                 (agent.awaiting, "awaiting_version"))
        pairs = []
        for slot, name in slots:
            for s in np.flatnonzero(slot != NO_MODEL):
                version = int(live[name][s])
                if version < 0:
                    raise RuntimeError(f"state names a model for stream {s} but no registry version")
                pairs.append((int(s), version))
        new = sorted({pair for pair in pairs if pair not in self._loaded})
        self._load_versions(pairs, log_absent=False)
        self._check_artifacts_folder(new)
        for s, v in new:
            if (s, v) in self._absent:  # a loss of these streams' files, not a wrong folder
                log.error("model version %s of stream %s cannot be loaded: %s", v, s, self._broken[(s, v)])
        for slot, name in slots:
            for s in np.flatnonzero(slot != NO_MODEL):
                pair = (int(s), int(live[name][s]))
                if pair in self._broken:
                    repair.broken.setdefault(name, {})[int(s)] = pair[1]
                    continue
                fitted = self._loaded[pair]
                if fitted.key.end_tick != int(slot[s]):
                    raise RuntimeError(f"stream {s}: registry version {int(live[name][s])} was fitted at tick "
                                       f"{fitted.key.end_tick}, the state says {int(slot[s])}")
                service._models[fitted.key] = fitted

    def _drop_unjudged(self, k: int, agent: Agent, live: dict, repair: _Repair,
                       change: _PolicyChange | None) -> None:
        """Drop the challengers in shadow that the policy will never judge: a policy that does not check
        challengers (the baselines) took over from one that does. Kept, each would leave its stream waiting for a
        verdict for good (never re-trained, a person's re-training never done). Their version checks say why;
        models waiting for a person's approval stay (approving and rejecting do not need the policy)."""
        shadow = np.flatnonzero((agent.challenger != NO_MODEL) & (agent.awaiting == NO_MODEL))
        if not len(shadow):
            return
        why = f"dropped without a verdict: the policy {self.config.agent.policy.strip()!r} does not judge challengers"
        for s in shadow:
            version = int(live["challenger_version"][s])
            if version >= 0:
                repair.checks.append((int(s), version, {"result": "rejected", "why": why}))
            live["challenger_version"][s] = -1
        agent.drop_challengers(shadow, k)
        if change is not None:
            change.message += f"; {len(shadow):,} challenger(s) in shadow {why}"
            change.dropped = [str(name) for name in self._names[shadow]] if len(self._names) else []

    def _check_artifacts_folder(self, read: list[tuple[int, int]]) -> None:
        """Refuse the tick (:class:`ConfigError`, nothing written) when ``[store] artifacts`` points at the wrong
        folder: the registry versions the tick just read (``read``: the saved state's serving, shadow and waiting
        models this process did not hold yet) have artifacts, and not one of their files is in the folder
        (it does not exist, or holds none of them).

        Re-fitting every such stream, as :meth:`_fall_back` does for a stream whose artifact is lost, would
        replace the whole fleet's models because of a typo, and fixing the typo would not undo it. A file that
        is there but damaged is a real fault of that stream, and as long as one of the files is there, the
        missing ones are a partial loss: both stay with their streams. A stream whose loss a person
        acknowledged by queueing ``mlma retrain`` for it is not counted (the way out when the folder is right
        and every file the tick needs was lost, e.g. the one model of a one-stream project).
        """
        if not read or any(pair not in self._absent for pair in read):
            return
        queued = self.store.stream_actions(status="pending")
        acknowledged = {int(s) for s in queued.loc[queued["kind"] == "retrain", "stream_id"]}
        lost = [pair for pair in read if pair[0] not in acknowledged]
        if not lost:
            return
        folder = self.registry.artifacts.root
        names = self._names
        shown = ", ".join(f"version {v} of {names[s] if s < len(names) else s}" for s, v in lost[:3])
        more = f" and {len(lost) - 3:,} more" if len(lost) > 3 else ""
        where = "does not exist" if not folder.is_dir() else f"holds none of {'them' if len(lost) > 1 else 'it'}"
        s0, v0 = lost[0]
        raise ConfigError(
            f"{self.config.root / CONFIG_NAME}: [store] artifacts = {self.config.store.artifacts!r}: the tick needs "
            f"the model files of {len(lost):,} registry version(s) ({shown}{more}; the first is expected at "
            f"{self.registry.artifacts.path(self._absent[(s0, v0)])}), and the folder {folder} {where}. The tick "
            f"did not run: no model was re-fitted, no champion moved. Point [store] artifacts at the folder that "
            f"holds the model files (the default is \"artifacts\", in the project folder). If this is the right "
            f"folder and the files were lost, restore them from a backup, or queue `mlma retrain --all` (or `mlma "
            f"retrain STREAM ...`) to re-fit those streams on their training windows")

    def _fall_back(self, k: int, agent: Agent, live: dict, service: ModelService, controls: Controls,
                   repair: _Repair) -> None:
        """Isolate the streams whose models could not be loaded, so that the rest of the fleet ticks on.

        A challenger or a model waiting for approval that cannot be loaded is dropped. A serving model that
        cannot be loaded is replaced by the newest earlier champion whose artifact loads (a roll-back by the
        agent, recorded with the tick); a stream with no such version gets no model for a moment and the tick
        fits a new one on its training window (as for a new stream). Either way the stream is escalated
        (``artifact-broken``) and the audit log names the version and the error. A person's own move this
        tick (a roll-back or promotion to a version that loads) takes precedence.
        """
        for name, what in (("challenger_version", "challenger"), ("awaiting_version", "model waiting for approval")):
            slot = agent.challenger if name == "challenger_version" else agent.awaiting
            for s, version in repair.broken.get(name, {}).items():
                error = self._broken[(s, version)]
                if slot[s] != NO_MODEL:
                    agent.drop_challengers([s], k)
                live[name][s] = -1
                repair.checks.append((s, version, {"result": "rejected",
                                                   "why": f"artifact cannot be loaded: {error}"}))
                repair.note(s, version, what, 2,
                            f"the {what} (version {version}) cannot be loaded and was dropped: {error}")
        for s, version in repair.broken.get("champion_version", {}).items():
            if s in controls.adopt:
                continue  # a person put another (loadable) version in service this tick
            error = self._broken[(s, version)]
            # Its challenger was judged against the broken model's forecasts; the stream starts afresh.
            agent.drop_challengers([s], k)
            live["challenger_version"][s] = live["awaiting_version"][s] = -1
            good = self._good_version(s, exclude={version})
            if good is not None:
                previous, fitted = good
                service._models[fitted.key] = fitted
                controls.restore[s] = fitted.key  # the agent's own repair: a re-training a person queued goes on
                live["champion_version"][s] = previous
                reason = (f"the serving version {version} cannot be loaded ({error}); rolled back to version "
                          f"{previous}, the newest earlier one that loads")
                repair.moves[s] = ChampionMove(s, previous, "agent", reason, "rollback")
                repair.note(s, version, "champion", 3, reason)
            else:
                reason = (f"the serving version {version} cannot be loaded ({error}) and no earlier version "
                          "loads; re-fitted on the stream's training window")
                repair.refit_from_window(agent, s, reason)
                repair.note(s, version, "champion", 3, reason)

    def _refit_for_drivers(self, k: int, agent: Agent, live: dict, service: ModelService, controls: Controls,
                           repair: _Repair) -> None:
        """Fit again the streams whose model uses a driver that mlma.toml no longer declares, or declares of the
        other kind (:class:`~mlma.models.base.DriversChanged`): it cannot forecast. A driver added, or the list
        re-ordered, needs nothing: such a model gets its own columns by name (:func:`~mlma.models.base.driver_view`)
        and the new drivers at its next re-training.

        A challenger or a model waiting for approval is dropped; a serving model is replaced by one the tick
        fits on the stream's training window, as for a new stream (a person's roll-back to such a model this
        tick too). A person changed the configuration, so this is one audit entry (``drivers-changed``), a note
        of the tick and a log line, not an escalation per stream. Models are checked when the declared drivers
        differ from the last check, and when loaded from the registry."""
        drivers = service.ctx.drivers
        declared = (drivers.future, drivers.historical)
        every = declared != self._drivers_checked
        loaded = set(self._unchecked_loads)
        # Taken as checked once the tick commits (a tick that fails is redone from its saved state, whose models
        # must be checked again).
        repair.drivers_checked = (declared, loaded)
        slots = ((agent.awaiting, "awaiting_version"), (agent.challenger, "challenger_version"),
                 (agent.champion, "champion_version"))
        if every:
            candidates = [(int(s), slot, name) for slot, name in slots for s in np.flatnonzero(slot != NO_MODEL)]
        else:
            candidates = [(s, slot, name) for s, v in sorted(loaded) for slot, name in slots
                          if s < len(slot) and slot[s] != NO_MODEL and live[name][s] == v]
        # A person's move this tick, or a version put back in place of a broken one.
        put_in_service = controls.adopt | controls.restore
        candidates += [(s, None, "champion_version") for s in put_in_service]
        stale: dict[tuple[int, str], tuple[int, str]] = {}
        for s, slot, name in candidates:
            key = put_in_service[s] if slot is None else ModelKey(s, int(slot[s]))
            fitted = service.fitted(key)
            if fitted is None or (s, name) in stale:
                continue
            try:
                driver_view(fitted.model, service.ctx)
            except DriversChanged as exc:
                stale[(s, name)] = (int(live[name][s]) if slot is not None else -1, str(exc))
        if not stale:
            return
        dropped = refitted = 0
        for (s, name), (version, error) in stale.items():  # challengers first (slots' order), then champions
            if name != "champion_version":
                if live[name][s] >= 0:
                    agent.drop_challengers([s], k)
                    live[name][s] = -1
                    repair.checks.append((s, version, {"result": "dropped", "why": error}))
                    dropped += 1
                continue
            agent.drop_challengers([s], k)
            for other in ("challenger_version", "awaiting_version"):
                if live[other][s] >= 0:
                    repair.checks.append((s, int(live[other][s]), {"result": "dropped", "why": error}))
                    live[other][s] = -1
                    dropped += 1
            controls.adopt.pop(s, None)
            controls.restore.pop(s, None)
            repair.refit_from_window(agent, s, f"the serving model cannot forecast: {error}; re-fitted on the "
                                               "stream's training window")
            refitted += 1
        example = next(iter(stale.values()))[1]
        message = (f"the drivers in mlma.toml ([data] drivers, historical_drivers) changed: {refitted:,} serving "
                   f"model(s) used a driver no longer declared and are re-fitted this tick, {dropped:,} challenger(s) "
                   f"dropped (e.g. {example})")
        repair.notes.append(message)
        repair.agent_audit.append({"actor": "agent", "action": "drivers-changed", "target": "mlma.toml:data.drivers",
                                   "params": {"tick": k, "future": list(drivers.future),
                                              "historical": list(drivers.historical), "refitted": refitted,
                                              "challengers_dropped": dropped}, "reason": message})
        log.warning("tick %s: %s", k, message)

    def _good_version(self, stream: int, exclude: set[int]) -> tuple[int, FittedModel] | None:
        """The newest version that served the stream before (other than ``exclude``) and loads, or None."""
        served = [change.version for change in reversed(self.registry.history(stream))]
        pruned = {v.version for v in self.registry.versions(stream) if v.pruned}  # version retention took their files
        for version in dict.fromkeys(served):
            if version in exclude or version in pruned:
                continue
            fitted = self._model(stream, version)
            if fitted is not None:
                return version, fitted
        return None

    def _stream_names(self) -> np.ndarray:
        """Every stream's unique_id by id (a new array when streams were added). Kept between ticks: ids are
        dense and never change, so a tick reads only the streams added since, and the last one it knew again,
        as a check that the store is still the one the names came from (else all are read again)."""
        known = self._names
        first = max(len(known) - 1, 0)
        rows = self.store.streams(columns=("id", "unique_id"), first_id=first)
        ids = rows["id"].to_numpy()
        if len(known) and (not len(ids) or ids[0] != first or rows["unique_id"].iat[0] != known[-1]):
            log.info("the store's streams are not the ones this process read before (restored or replaced?); "
                     "reading them all again")
            known, first = known[:0], 0
            rows = self.store.streams(columns=("id", "unique_id"))
            ids = rows["id"].to_numpy()
        if (ids != np.arange(first, first + len(ids))).any():
            raise RuntimeError("stream ids are not dense 0..n-1; the store is damaged")
        if len(ids) != 1 or not len(known):
            self._names = np.concatenate([known[:first], rows["unique_id"].to_numpy(dtype=object)])
        return self._names

    def _controls(self, k, n: int, agent: Agent, live: dict, service: ModelService, repair: _Repair,
                  state_sha256: str | None):
        """The engineer's settings and queued actions as this tick's :class:`Controls`, the queued actions,
        who asked for each approval or rejection (by stream), and the store's change counts they were read at.

        ``state_sha256`` names the saved state ``live`` came from (None: none).
        """
        now = pd.Timestamp.now(tz="UTC")
        # Read first: a change after this read is seen by the next tick (or, for champions, by write_tick).
        counts = self.store.change_counts()
        carrier = int(agent.executor_outage[0])
        if 0 <= carrier < n:
            # The fleet's executor-failed item, resolved by a person while the outage may go on: raised again if
            # this tick's fits fail too (else nothing would say so: such failures count against no stream).
            unresolved = self.store.escalations(["open", "acknowledged", "silenced"], streams=[carrier])
            if not (unresolved["kind"] == "executor-failed").any():
                agent.executor_outage[0] = -1
        pinned, approval = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        delta, cooldown = np.full(n, np.nan), np.full(n, -1, dtype=np.int32)
        # Only the few streams with overrides are looked at, and read again only after one changed. (A pin's
        # end is a time: pinned_at is asked every tick.)
        if self._overrides is None or self._overrides[0] != counts["overrides"]:
            self._overrides = (counts["overrides"], self.store.stream_overrides())
        for s, o in self._overrides[1].items():
            if s < n:
                pinned[s] = o.pinned_at(now)
                approval[s] = o.needs_approval
                delta[s] = np.nan if o.delta is None else o.delta
                cooldown[s] = -1 if o.cooldown_ticks is None else o.cooldown_ticks
        agent.policy.set_overrides(delta=delta, cooldown_ticks=cooldown)
        controls = Controls(pinned=pinned, needs_approval=approval)
        # The actions this tick took up when it began (no longer cancellable), in the order they were queued.
        actions = self.store.taken_up_actions(k)[
            ["id", "stream_id", "kind", "params", "created_by", "created_at", "reason"]].reset_index(drop=True)
        masks = {name: np.zeros(n, dtype=bool) for name in ("force_retrain", "force_direct", "reset_reference",
                                                            "rebase_reference", "approve", "reject")}
        approvers, deciding = {}, {}  # by stream: who made, and which action is, the decision that stands
        # Approvals and rejections of a version that no longer waits nor runs in shadow (a forced re-training
        # replaced it after they were queued), by action id: (that version, the stream's pending one or -1).
        stale: dict[int, tuple[int, int]] = {}
        for row in actions.itertuples(index=False):
            s, params = int(row.stream_id), row.params or {}
            if row.kind == "retrain":
                masks["force_retrain"][s] = True  # how (direct, why) once the person's choices are known, below
            elif row.kind == "reset-reference":
                # A reset and a re-base queued for one stream: the later stands, as for approvals (_outcomes).
                rebase = _rebases(row)
                masks["reset_reference" if rebase else "rebase_reference"][s] = False
                masks["rebase_reference" if rebase else "reset_reference"][s] = True
            elif row.kind in ("approve", "reject"):
                meant = params.get("version")
                pending, _ = _undecided_version(live, s)
                if meant is not None and int(meant) != pending:
                    stale[int(row.id)] = (int(meant), pending)   # the person decided about another model
                    continue
                # Both queued for one stream before a tick: the later decision stands (a person who changed
                # their mind), whatever the order; the earlier one's outcome says so (_outcomes).
                masks["reject" if row.kind == "approve" else "approve"][s] = False
                masks[row.kind][s] = True
                approvers[s] = row.created_by
                deciding[s] = int(row.id)
        for name, mask in masks.items():
            setattr(controls, name, mask)
        # The approvals that may put a version in service this tick: the stream's decision that stands (not one a
        # later rejection overrode, nor a stale one). A challenger in shadow is served by it if its check ends
        # in this tick.
        approving = {s: i for s, i in deciding.items() if masks["approve"][s]}
        # A champion moved in the registry by a person (roll-back, promotion) is adopted by the agent. Nobody
        # moved one since the state this tick continues from was saved: nothing to compare.
        unmoved = state_sha256 is not None and self._champions_agree == (state_sha256, counts["champions"])
        sid, ver, by, since = ((np.empty(0, np.int64),) * 4 if unmoved
                               else self.registry.tables.serving_versions())
        # The champions as read now: the tick's own moves are made only where they still serve at its commit.
        read = live["champion_version"].copy()
        if not unmoved:
            read[:] = -1
            inside = sid < n
            read[sid[inside]] = ver[inside]
        if len(sid):
            moved = ver != live["champion_version"][sid]
            for s, v, who in zip(sid[moved], ver[moved], by[moved]):
                fitted = self._model(int(s), int(v))
                if fitted is None:
                    # Moved to by a person, then damaged: the agent's serving model stays (if it loads).
                    kept = int(live["champion_version"][s])
                    reason = (f"version {int(v)} put in service by {who} cannot be loaded "
                              f"({self._broken[(int(s), int(v))]}); ")
                    if kept >= 0:
                        repair.moves[int(s)] = ChampionMove(int(s), kept, "agent", reason + f"version {kept} "
                                                            "keeps serving", "rollback")
                    repair.note(int(s), int(v), "champion", 3, reason + (f"version {kept} keeps serving"
                                                                          if kept >= 0 else "no model serves"))
                    continue
                service._models[fitted.key] = fitted
                controls.adopt[int(s)] = fitted.key
                # A challenger in shadow or waiting for approval is dropped with the person's choice: its check
                # says so (not "awaiting-approval" for ever).
                for slot in ("challenger_version", "awaiting_version"):
                    dropped = int(live[slot][s])
                    if dropped >= 0 and dropped != int(v):
                        repair.checks.append((int(s), dropped, {"result": "dropped",
                                                                "why": f"{who} put version {int(v)} in service"}))
                    elif dropped == int(v):  # the person promoted the challenger itself before its check ended
                        repair.checks.append((int(s), dropped, {"result": "promoted", "promoted_by": who,
                                                                "why": "put in service by a person before the "
                                                                       "agent's check ended"}))
                live["champion_version"][s] = v
                live["challenger_version"][s] = -1
                live["awaiting_version"][s] = -1
        controls.force_after_choice, yielded = _forced_after_choice(actions, n, {
            int(s): pd.Timestamp(t) for s, t in zip(sid, since) if int(s) in controls.adopt}, approving)
        # A re-training that yields to a later choice of the serving model adds neither its `direct` nor its
        # reason to one queued after that choice. (Without one, it is carried out only where an approval it
        # yielded to served nothing, its challenger having lost its check: then as queued.)
        for row in actions[actions["kind"] == "retrain"].itertuples(index=False):
            s = int(row.stream_id)
            if int(row.id) not in yielded or not controls.force_after_choice[s]:
                controls.force_direct[s] |= bool((row.params or {}).get("direct"))
                controls.reasons[s] = f"forced by {row.created_by}" + (f": {row.reason}" if row.reason else "")
        return controls, actions, approvers, counts, read, stale, yielded

    def _versions(self, k: int, report: TickReport, fleet: FleetData, window: int | None, live: dict,
                  approvers: dict, refit: dict[int, str], replaced: dict[int, tuple[int, str]] | None = None):
        """Registry writes of this tick: new versions (artifacts written now), champion moves and checks; the
        map from the agent's model keys to registry versions (``live``) follows them. ``replaced``: the
        versions a person's forced re-training replaced (:func:`_replaced_versions`), checked as dropped."""
        replaced = replaced or {}
        latest = self.store.latest_versions([m.stream for m in report.new_models])
        new_versions, expected = [], []
        checks, moves = [], []
        spec = str(self.config.model.spec)
        # Earlier challengers judged this tick, and approvals.
        for s, check in report.checks.items():
            version = int(live["challenger_version"][s])
            if version < 0:
                continue  # a challenger fitted in this very tick is recorded below
            checks.append(VersionCheck(s, version, check.as_dict()))
            if check.result == "promoted":
                # The rule is "not worse" (within the challenger margin), so a tie promotes too: say what it was.
                better = check.challenger_mean_loss < check.champion_mean_loss
                moves.append(ChampionMove(s, version, "agent",
                                          f"{'beat' if better else 'was within the challenger margin of'} the "
                                          f"serving model in "
                                          f"shadow: mean loss {check.challenger_mean_loss:.4g} vs "
                                          f"{check.champion_mean_loss:.4g}"))
                live["champion_version"][s] = version
            elif check.result == "awaiting-approval":
                live["awaiting_version"][s] = version
            live["challenger_version"][s] = -1
        for s in np.flatnonzero(report.promoted):
            s = int(s)
            if s in approvers and live["awaiting_version"][s] >= 0 and not report.awaiting[s]:
                version = int(live["awaiting_version"][s])
                moves.append(ChampionMove(s, version, approvers[s], "approved"))
                checks.append(VersionCheck(s, version, {"result": "promoted", "approved_by": approvers[s]}))
                live["champion_version"][s] = version
                live["awaiting_version"][s] = -1
        for s, who in approvers.items():
            if report.rejected is not None and report.rejected[s] and live["awaiting_version"][s] >= 0:
                checks.append(VersionCheck(s, int(live["awaiting_version"][s]),
                                           {"result": "rejected", "rejected_by": who}))
                live["awaiting_version"][s] = -1
        # A challenger a person's forced re-training replaced leaves its slot before the new model takes one.
        for s in replaced:
            live["challenger_version"][s] = live["awaiting_version"][s] = -1
        for new in report.new_models:
            s, fm = new.stream, new.fitted
            latest[s] = latest.get(s, 0) + 1
            challenger = new.role == "challenger"
            reason = refit[s] if s in refit and report.initial_fit[s] else new.reason
            history = fleet.history(s, k, window)
            new_versions.append(self.registry.prepare(
                s, fm.model, spec=spec,
                train_start=history.ds[0] if len(history) else None,
                train_end=history.ds[-1] if len(history) else None,
                params={"train_window_ticks": window, "tick": k},
                metrics={"fit_seconds": round(float(fm.seconds), 6), "n_train": int(fm.n_train),
                         "fallback_reason": fm.fallback_reason, "short_history": bool(fm.short_history)},
                check={"result": "pending"} if challenger else {"result": "not-checked", "why": reason},
                promote=not challenger, by="agent", reason=reason))
            expected.append(latest[s])
            live["challenger_version" if challenger else "champion_version"][s] = latest[s]
        # Its check says why it was dropped (not "pending" or "awaiting-approval" for ever), naming the person and
        # the version that replaced it (a replacing fit that failed left the challenger in its place).
        for s, (version, _) in replaced.items():
            why = f"replaced by version {latest[s]}, a re-training {report.decision.reason[s]}"
            checks.append(VersionCheck(s, version, {"result": "dropped", "why": why}))
        return new_versions, expected, moves, checks

    # -- retention ------------------------------------------------------------------------------------------
    def earliest_prune_time(self) -> pd.Timestamp:
        """The latest time the store can be pruned to (:meth:`prune`): the first timestamp of the next tick's
        training window, the oldest data a tick still reads (later ticks read later data only), or earlier
        where the ingest's check of each stream's value range reads further back (the newest data less
        :data:`mlma.store.ingest.RANGE_TICKS` ticks, which matters for a window shorter than that). Raises
        :class:`NotReady` before the first tick and while the window still reaches back to the first tick, and
        :class:`ConfigError` when the model trains on all history (``[model] train_window_ticks`` 0 on data
        whose default window is the whole history)."""
        from mlma.store.ingest import RANGE_TICKS

        done = self.store.last_done_tick()
        if done is None:
            raise NotReady("no tick has run yet: nothing can be pruned before the agent knows its windows")
        timing = self.timing()
        window = self._train_window(timing)
        if window is None:
            raise ConfigError(f"{CONFIG_NAME}: [model] train_window_ticks: the model trains on all history, so no "
                              "observation can be pruned; set a window in ticks to keep less")
        k = done + 1
        _, _, first = self._training_span(k, False, timing)
        if first is None:
            raise NotReady(f"the next tick's training window ({window} ticks) still starts at the first tick: "
                           f"nothing can be pruned before tick {window} has run")
        # The ingest's own reach (store/ingest.py), from the newest data, which only ever moves later.
        newest = self.store.newest_ds()
        checked = newest - RANGE_TICKS * pd.tseries.frequencies.to_offset(timing.tick) if newest is not None else first
        return min(first, checked)

    def prune(self, before: pd.Timestamp | None = None, *, keep: pd.Timedelta | None = None, by: str,
              reason: str | None = None, dry_run: bool = False):
        """Prune the store (:meth:`mlma.store.Store.prune`) before ``before``, or keeping ``keep`` of data time
        before the end of the last done tick; refused (ValueError, nothing deleted) when that would take rows a
        tick still reads (:meth:`earliest_prune_time`)."""
        limit = self.earliest_prune_time()  # first: it says when no tick has run yet
        if keep is not None:
            before = self._last_tick_end() - keep
        if before is None or pd.isna(before):
            raise ValueError(f"prune needs a data time: the data before it is deleted (got {before!r})")
        if before > limit:
            raise ValueError(f"pruning before {before} would delete data the next ticks read (their training window, "
                             f"or the values new data is checked against): the latest time to prune to is {limit}")
        return self.store.prune(before, by=by, reason=reason, dry_run=dry_run)

    def apply_retention(self):
        """Prune by ``[store] keep`` (:meth:`mlma.project.ProjectConfig.retention`), as ``mlma run`` and
        ``mlma tick`` do after their ticks: the data older than ``keep`` before the end of the last done tick,
        but never what a tick still reads (:meth:`earliest_prune_time`: the store then keeps more than
        ``keep``, said once in the log). Returns the :class:`~mlma.store.records.PruneReport`, or None when
        nothing is to go: no ``keep``, no tick yet, a window still at the first tick, or nothing new since the
        last prune (no audit entry then; a prune stopped part way, whose rows before the kept time are still
        there, is finished). :class:`ConfigError` when the model trains on all history."""
        keep = self.config.retention()
        if keep is None:
            return None
        try:
            limit = self.earliest_prune_time()
        except NotReady:
            return None
        before = self._last_tick_end() - keep
        if before > limit:
            if not self._retention_capped:
                log.warning("[store] keep = %r is shorter than the data the next ticks read: the store keeps the "
                            "data from %s on (the training window, or the values new data is checked against)",
                            self.config.store.keep, limit)
                self._retention_capped = True
            before = limit
        kept = self.store.kept_from()
        if kept is not None and before <= kept:
            if not self.store.prune_unfinished():
                return None
            before = kept  # a prune stopped part way (the kept time is recorded first) is finished now
        return self.store.prune(before, by="agent", reason=f"[store] keep = {self.config.store.keep!r}")

    def prune_versions(self, keep: int, *, by: str, reason: str | None = None, dry_run: bool = False):
        """Delete the artifacts of each stream's versions older than its newest ``keep``, never of a version in use
        (:meth:`mlma.registry.ModelRegistry.prune_versions`), nor of one the newest saved state names (serving,
        in shadow or waiting: the next tick loads them); holds the tick lock as this agent. Returns the
        :class:`~mlma.store.records.VersionPruneReport`."""
        return self.registry.prune_versions(keep, by=by, reason=reason, dry_run=dry_run,
                                            protect=self._versions_in_state(), holder=self.holder)

    def apply_version_retention(self):
        """Prune by ``[registry] keep_versions`` (:meth:`prune_versions`), as ``mlma run`` and ``mlma tick`` do
        after their ticks: once per new done tick in this process (only a tick adds versions). Returns the
        :class:`~mlma.store.records.VersionPruneReport`, or None when the setting is 0 (keep all), no tick is
        done, or nothing was to go (no audit entry then). :class:`~mlma.store.LockHeld` while a tick runs."""
        keep = self.config.version_retention()
        done = self.store.last_done_tick()
        if keep is None or done is None or done == self._versions_pruned_after:
            return None
        report = self.prune_versions(keep, by="agent", reason=f"[registry] keep_versions = {keep}")
        self._versions_pruned_after = done
        return report if report.versions or report.files else None

    def _versions_in_state(self) -> set[tuple[int, int]]:
        """``(stream_id, version)`` of the registry versions the newest saved state serves, shadows or holds
        for approval."""
        state = self._latest_state()
        if state is None:
            return set()
        pairs = set()
        for name in ("champion_version", "challenger_version", "awaiting_version"):
            saved = np.asarray(state.arrays.get(f"live.{name}", ()), dtype=np.int64)
            pairs.update((int(s), int(saved[s])) for s in np.flatnonzero(saved >= 0))
        return pairs

    def _warn_if_pruned_into(self, window_start: pd.Timestamp | None) -> None:
        """Say once per process when the training window reaches before the data the store keeps (a window
        lengthened after a prune): the models then train on less history than the window asks for."""
        if self._pruned_window_said:
            return
        kept = self.store.kept_from()
        if kept is not None and (window_start is None or window_start < kept):
            log.warning("the training window starts at %s, before the data the store keeps (pruned before %s): "
                        "the models train on the data from %s on", "the first tick" if window_start is None
                        else window_start, kept, kept)
            self._pruned_window_said = True

    def _last_tick_end(self) -> pd.Timestamp:
        """The data time at which the last done tick ends (there must be one)."""
        done = self.store.last_done_tick()
        return self.timing().boundaries(done, done + 1)[1]

    # -- the project's history, for a backtest ---------------------------------------------------------------
    def history(self, *, sample: int | None = None, seed: int = 0, model: str | None = None) -> ProjectHistory:
        """The stored history and the project's settings as :func:`mlma.backtest.run_backtest` replays them
        (``mlma backtest --project``): would a schedule have done better on this fleet at equal compute?

        The observations (as the store keeps them: a pruned store replays what is left) with the values in force
        of the declared drivers; the streams' attributes (the queue's groups) and the active abnormal periods;
        the clock, model (with ``[model] holidays``), training window and drivers of ``mlma.toml``, and its policy
        with the ``[monitor]`` settings. Per-stream overrides (``mlma set-params``), pins and the actions people
        took are not replayed. ``sample``: that many streams drawn at random (``seed``), for a large fleet (only
        their rows are read). ``model``: another model spec than the project's (its ``[model] holidays`` then
        does not apply).
        """
        from mlma.model_names import BUILTIN_MODELS

        store, cfg = self.store, self.config
        timing = self.timing()
        chosen = None
        if sample is not None:
            if sample < 1:
                raise ValueError(f"sample must be a number of streams >= 1, got {sample}")
            known = sorted(store.streams(("unique_id",))["unique_id"].astype(str))
            if sample < len(known):
                chosen = sorted(np.random.default_rng(seed).choice(known, size=sample, replace=False).tolist())
        frame = store.observations(streams=chosen, with_ids=True)
        if frame.empty:
            raise NotReady("the store has no observations yet: run `mlma ingest FILE` first")
        names = sorted({str(u) for u in frame["unique_id"].unique()})
        drivers = cfg.drivers()
        declared = list(dict.fromkeys([*drivers.future, *drivers.historical]))
        if declared:
            ids = None if chosen is None else frame["stream_id"].unique().tolist()
            frame = frame.merge(store.driver_values(declared, streams=ids), on=["stream_id", "ds"], how="left")
        data = frame.drop(columns="stream_id").reset_index(drop=True)
        streams = store.streams(("unique_id", "attributes"))
        streams = streams[streams["unique_id"].isin(names)]
        rows = [{"unique_id": u, **a} for u, a in zip(streams["unique_id"], streams["attributes"]) if a]
        attributes = pd.DataFrame(rows) if rows else None
        abnormal = self._abnormal_periods()
        abnormal = abnormal[abnormal["unique_id"].isna() | abnormal["unique_id"].isin(names)]
        model = model.strip() if model is not None else cfg.model.spec.strip()
        if cfg.model.holidays and model == cfg.model.spec.strip():
            if model.partition(":")[0].lower().replace("_", "-") not in BUILTIN_MODELS:
                raise ConfigError(f"{cfg.root / CONFIG_NAME}: [model] holidays = {cfg.model.holidays!r} is given to "
                                  f"the built-in models in a backtest, not to {model!r}; backtest without it, or "
                                  "with --model")
            model = f"{model}:holidays={cfg.model.holidays}"
        # The policy as a spec of its own: the [monitor] settings that differ from mlma's defaults written in it,
        # so that the backtest's tables name what the project runs ("mlma:budget=0.05"), beside plain "mlma".
        defaults = ProjectConfig(root=cfg.root).policy_params()
        own = {key: value for key, value in cfg.monitor_settings().items() if value != defaults[key]}
        policy = cfg.agent.policy.strip() + "".join(
            f":{key}={'none' if value is None else value}" for key, value in own.items())
        return ProjectHistory(
            data=data, attributes=attributes, abnormal=abnormal.reset_index(drop=True),
            settings=dict(model=model, freq=timing.frequency.alias, tick=timing.tick,
                          train_window_ticks=cfg.model.train_window_ticks or None, drivers=drivers),
            policy=policy)

    # -- exports --------------------------------------------------------------------------------------------
    def forecasts(self) -> pd.DataFrame:
        """The forecasts issued by the last done tick: unique_id, ds, y_hat, model_version."""
        tick = self.store.last_done_tick()
        if tick is None:
            raise NotReady("no tick has run yet: run `mlma tick` first")
        return self.store.forecasts(tick)


@dataclass(frozen=True)
class ProjectHistory:
    """A project's stored history and settings, as a backtest replays them (:meth:`LiveAgent.history`).

    Attributes
    ----------
    data
        ``unique_id, ds, y`` and a column per declared driver (its values in force), long format.
    attributes, abnormal
        The streams' attributes (``unique_id`` and one column each; None without any) and the active abnormal
        periods (``unique_id`` (None: the fleet), ``start``, ``end``).
    settings
        :class:`mlma.backtest.BacktestConfig` keywords from ``mlma.toml`` and the clock: ``model``, ``freq``,
        ``tick``, ``train_window_ticks``, ``drivers``.
    policy
        ``[agent] policy`` as a spec with the ``[monitor]`` settings that differ from the defaults
        (``"mlma:budget=0.05"``).
    """

    data: pd.DataFrame
    attributes: pd.DataFrame | None
    abnormal: pd.DataFrame
    settings: dict
    policy: str


def open_agent(config: ProjectConfig, *, executor=None, stopping=lambda: False, first_delay: float = 1.0,
               max_delay: float = 60.0) -> LiveAgent | None:
    """Open the project's agent, retrying with back-off (``first_delay`` doubling up to ``max_delay`` seconds)
    while its database cannot be reached, with a log line per attempt; None if ``stopping()`` became true.

    For a service (``mlma run``) that starts before its database, or while the database restarts.
    """
    delay, attempt = first_delay, 0
    while True:
        attempt += 1
        try:
            return LiveAgent(config, executor=executor)
        except Exception as exc:  # noqa: BLE001 - only a database that cannot be reached is retried
            reason = unreachable_reason(exc)
            if reason is None:
                raise
            log.warning("the store %s cannot be reached (attempt %d: %s); retrying in %.3g s",
                        shown_url(config.store_url), attempt, reason, delay)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if stopping():
                return None
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, max_delay)


# -- helpers ----------------------------------------------------------------------------------------------------
@dataclass
class _Repair:
    """What a tick did about models that could not be loaded or cannot forecast: recorded with the tick."""

    #: slot name ('champion_version', ...) -> {stream: version} whose artifact cannot be loaded
    broken: dict = field(default_factory=dict)
    #: champion moves back to a version that loads, by stream
    moves: dict = field(default_factory=dict)
    #: streams re-fitted from their window, with the reason recorded on the new version
    refit: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)
    escalations: list = field(default_factory=list)
    audit: list = field(default_factory=list)
    #: the agent's audit entries (dicts) and the tick's notes about the fleet as a whole (drivers changed)
    agent_audit: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    #: the declared drivers and the loaded versions the models in service were checked against (taken as
    #: checked when the tick commits)
    drivers_checked: tuple | None = None

    def refit_from_window(self, agent: Agent, stream: int, reason: str) -> None:
        """The stream gets no model for a moment: the tick fits a first one on its training window, as for a
        new stream, promoted as it is recorded, with ``reason``."""
        agent.champion[stream] = NO_MODEL
        agent.is_fallback[stream] = False
        agent.fallback_since[stream] = NO_MODEL  # a fall-back of the re-fit starts a run of its own
        self.moves.pop(stream, None)
        self.refit[stream] = reason

    def note(self, stream: int, version: int, slot: str, severity: int, message: str) -> None:
        self.escalations.append((stream, severity, message))
        self.audit.append((stream, version, slot, message))


def _policy_meta(config: ProjectConfig) -> dict:
    """The project's policy as the saved state records it (``meta.policy``, JSON): its kind, its spec and, for
    the MLMA policy, the ``[monitor]`` settings it is built with."""
    from mlma.policy import policy_kind

    spec = config.agent.policy.strip()
    return {"kind": policy_kind(spec), "spec": spec, "settings": config.monitor_settings()}


def _model_meta(config: ProjectConfig) -> dict:
    """The project's ``[model]`` settings as the saved state records them (``meta.model``, JSON)."""
    m = config.model
    return {"spec": m.spec.strip(), "train_window_ticks": m.train_window_ticks, "holidays": m.holidays}


def _model_change(arrays, meta: dict) -> tuple[dict, str] | None:
    """The ``[model]`` settings the state was saved with and what a person should know, when they differ from the
    project's: the serving models were fitted with the old ones and keep serving until each is re-trained, which
    may be a year away under the age backstop (nothing said it: a changed spec looked taken up at once). None
    when unchanged, and for a state saved before the settings were recorded.

    >>> old = {"meta.model": np.array('{"spec": "ridge", "train_window_ticks": 56, "holidays": ""}')}
    >>> _model_change(old, {"spec": "ridge", "train_window_ticks": 56, "holidays": ""}) is None
    True
    >>> print(_model_change(old, {"spec": "lightgbm", "train_window_ticks": 56, "holidays": ""})[1])
    ... # doctest: +NORMALIZE_WHITESPACE
    the model settings in mlma.toml (model.spec, ...) changed (spec 'ridge' -> 'lightgbm'): new streams and
    every re-training from now on use it, while the models serving now stay until each is re-trained; `mlma
    retrain --all --reason ...` re-fits them all at the next tick
    """
    raw = arrays["meta.model"] if "meta.model" in arrays else None
    if raw is None:
        return None
    before = json.loads(str(np.asarray(raw)[()]))
    if before == meta:
        return None
    changed = _changed_settings(before, meta)
    # Without brackets: `mlma tick` prints notes through rich, which takes them for markup.
    return before, (f"the model settings in mlma.toml (model.spec, ...) changed ({changed}): new streams and every "
                    "re-training from now on use "
                    "it, while the models serving now stay until each is re-trained; `mlma retrain --all --reason "
                    "...` re-fits them all at the next tick")


def _differs(before: dict, after: dict) -> bool:
    """Whether the recorded policy differs from the project's: its kind, its spec, or a setting recorded in both
    (a ``[monitor]`` key added by a later mlma is not in states saved before it, and is no change)."""
    if before["kind"] != after["kind"] or before["spec"] != after["spec"]:
        return True
    saved = before["settings"]
    return any(saved[key] != value for key, value in after["settings"].items() if key in saved)


def _describe_policy(meta: dict | None, kind: str | None = None) -> str:
    """The policy a state was saved for, in words; ``kind`` tells a state saved before policies were recorded
    (``meta`` None) by its arrays: ``"mlma"``, or None for a baseline."""
    if meta is not None:
        return repr(meta["spec"])
    if kind == "mlma":
        return "the MLMA policy (its settings were not recorded then)"
    return "a baseline policy (never, always or periodic:K)"


def _changed_settings(before: dict, after: dict) -> str:
    """The settings recorded in both that changed, in words (as :func:`_differs` compares them)."""
    return ", ".join(f"{key} {before[key]!r} -> {after[key]!r}" for key in sorted(set(before) & set(after))
                     if before[key] != after[key])


@dataclass
class _PolicyChange:
    """``[agent] policy`` (or the MLMA policy's ``[monitor]`` settings) differ from those the state was saved
    with."""

    before: dict | None
    after: dict
    #: "kept": the saved state carries on; "started afresh": the policy starts its own state for every stream;
    #: "none": the new policy keeps no state.
    state: str
    message: str
    #: Streams whose challenger in shadow was dropped: the new policy does not judge challengers.
    dropped: list = field(default_factory=list)

    @property
    def fresh(self) -> bool:
        return self.state == "started afresh"


def _unfitting_state(policy, saved: dict) -> str | None:
    """Why a saved array does not fit ``policy`` (freshly reset) in shape, e.g. a longer reference ring; None
    when they fit, and when a required one is missing: that state was saved by an incompatible version, and
    :meth:`~mlma.policy.Policy.load_state_arrays` refuses it, naming the array, rather than it being replaced."""
    optional = policy.optional_state()
    fresh = policy.state_arrays()
    for name in policy.STATE:
        if name not in saved:
            if name in optional:
                continue
            return None
        have, want = np.shape(saved[name]), np.shape(fresh[name])
        if have[1:] != want[1:] or have[0] > want[0]:
            return f"{name!r} has shape {have}, the policy now needs {want}"
    return None


def _policy_change(arrays, policy, meta: dict) -> tuple[dict, _PolicyChange | None]:
    """The saved state's arrays to load into an agent running ``policy`` (built from ``meta``), and the policy
    change the tick takes up, if any.

    A change of ``[agent] policy`` in mlma.toml is a supported operation. A policy of another kind than the one
    that saved the state (``never`` to ``mlma``, ``mlma`` to ``periodic:7`` and back) starts its own state afresh
    for the existing streams, as it would for new ones (the MLMA policy's references warm up again); so does a
    policy of the same kind whose saved arrays no longer fit its settings (e.g. ``reference_ticks``). Otherwise
    (``budget``, ``alpha``, ``periodic:7`` to ``periodic:14``...) the state is kept. The rest of the state
    (models, champions, forecasts, counters) is untouched either way. A state saved before the policy was
    recorded (``meta.policy``) tells a stateful policy's state (MLMA's) by its arrays.

    A saved MLMA state that lacks some of its arrays while the policy and its settings are unchanged is left to
    fail to load as before: it was saved by an incompatible version of mlma, and is not silently replaced.
    """
    raw = arrays["meta.policy"] if "meta.policy" in arrays else None
    before = json.loads(str(np.asarray(raw)[()])) if raw is not None else None
    saved = {name[len("policy."):]: value for name, value in arrays.items() if name.startswith("policy.")}
    # Before meta.policy was saved: only the MLMA policy keeps per-stream state of its own.
    was = before["kind"] if before is not None else ("mlma" if saved else None)
    # What the audit log records as "from": for a state saved before policies were recorded, what its arrays tell.
    recorded = before if before is not None else {"kind": was or "baseline", "spec": None, "settings": None}
    if before is not None:
        changed = _differs(before, meta)
    else:
        changed = was != meta["kind"] and not (was is None and not policy.STATE)
    if not policy.STATE:
        if not changed:
            return arrays, None
        return arrays, _PolicyChange(recorded, meta, "none", f"{_what_changed(before, meta, was)}; the new policy "
                                     f"keeps no state of its own (models, champions and forecasts carry on)")
    fresh_why = None
    if was != meta["kind"]:
        fresh_why = "it is another policy"
    else:
        problem = _unfitting_state(policy, saved)
        if problem is not None and (changed or before is None):
            fresh_why = f"its saved state does not fit the new settings ({problem})"
    if fresh_why is None:
        if not changed:
            return arrays, None
        return arrays, _PolicyChange(recorded, meta, "kept", f"{_what_changed(before, meta, was)}; its saved state "
                                     f"carries on")
    kept = {name: value for name, value in arrays.items() if not name.startswith("policy.")}
    kept |= {f"policy.{name}": value for name, value in policy.state_arrays().items()}
    message = (f"{_what_changed(before, meta, was)}; {fresh_why}, so it starts its own state afresh for the existing "
               f"streams, as for new streams (references warm up again); models, champions and forecasts carry on")
    return kept, _PolicyChange(recorded, meta, "started afresh", message)


def _what_changed(before: dict | None, after: dict, was: str | None = None) -> str:
    """The policy change in words (without brackets: `mlma tick` prints it through rich, which takes them for
    markup)."""
    if before is not None and before["spec"] == after["spec"]:
        what = _changed_settings(before["settings"], after["settings"])
        return (f"the policy {after['spec']!r} (mlma.toml, agent.policy) runs with changed monitor settings"
                + (f" ({what})" if what else ""))
    return (f"the policy in mlma.toml (agent.policy) changed from {_describe_policy(before, was)} to "
            f"{after['spec']!r}")


def _artifact_error(exc: Exception) -> str:
    """One line on why an artifact cannot be loaded."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _replaced_versions(report: TickReport, live: dict) -> dict[int, tuple[int, str]]:
    """The registry versions a person's forced re-training replaced this tick (:attr:`TickReport.replaced`),
    by stream, with where each was (``"in shadow"``, ``"waiting for approval"``), read from the version map
    ``live`` as the tick began (before :meth:`LiveAgent._versions` moves it)."""
    return {int(s): _undecided_version(live, int(s)) for s in report.replaced}


def _undecided_version(live: dict, s: int) -> tuple[int, str]:
    """The stream's version whose check is not over in the version map ``live``, with where it is: the one
    waiting for approval, else the one in shadow (-1 when neither slot holds one)."""
    waiting = int(live["awaiting_version"][s])
    return (waiting, "waiting for approval") if waiting >= 0 else (int(live["challenger_version"][s]), "in shadow")


def _forced_after_choice(actions: pd.DataFrame, n: int, moved_at: dict[int, pd.Timestamp],
                         approving: dict[int, int]) -> tuple[np.ndarray, set[int]]:
    """Forced re-trainings against a person's choice of the serving model that this tick carries out: the move
    of a stream's champion (``moved_at``: when, by stream) or the approval that serves its undecided version
    (``approving``: the action's id, by stream; not an approval a later rejection overrode, nor one of a version
    no longer undecided). A re-training queued before the choice yields to it; one
    queued after it is meant for the model chosen, and runs on top of it. Returns the streams with a re-training
    queued after their choice (``Controls.force_after_choice``) and the ids of the re-trainings that yield.

    >>> actions = pd.DataFrame({"id": [1, 2, 3, 4, 5], "stream_id": [0, 0, 1, 2, 2],
    ...                         "kind": ["approve", "retrain", "retrain", "retrain", "retrain"],
    ...                         "created_at": pd.to_datetime(["2026-01-01 10:00", "2026-01-01 10:05",
    ...                                                       "2026-01-01 10:00", "2026-01-01 10:00",
    ...                                                       "2026-01-01 12:00"], utc=True)})
    >>> after, yielded = _forced_after_choice(actions, 4, {1: pd.Timestamp("2026-01-01 11:00", tz="UTC"),
    ...                                                    2: pd.Timestamp("2026-01-01 11:00", tz="UTC")}, {0: 1})
    >>> after.tolist(), sorted(yielded)
    ([True, False, True, False], [3, 4])
    """
    after, yielded = np.zeros(n, dtype=bool), set()
    for row in actions[actions["kind"] == "retrain"].itertuples(index=False):
        s = int(row.stream_id)
        moved, approved = moved_at.get(s), approving.get(s)
        if moved is None and approved is None:
            continue  # no choice of the serving model this tick: nothing to yield to
        if (approved is None or int(row.id) > approved) and (moved is None or pd.Timestamp(row.created_at) > moved):
            after[s] = True
        else:
            yielded.add(int(row.id))
    return after, yielded


def _outcomes(actions: pd.DataFrame, report: TickReport, live: dict, waited: np.ndarray,
              adopted: dict, replaced: dict[int, tuple[int, str]] | None = None,
              stale: dict[int, tuple[int, int]] | None = None, yielded: set[int] | None = None) -> dict[int, str]:
    """What this tick did with each queued action, for ``stream_actions.outcome``: ``waited`` holds each
    stream's version that waited for approval when the tick began or came to wait in it, ``adopted`` the
    streams a person moved, ``replaced`` the versions a forced re-training replaced (:func:`_replaced_versions`),
    ``stale`` the approvals and rejections of a version that no longer waited, ``yielded`` the re-trainings
    queued before a person's choice of the serving model this tick (:meth:`LiveAgent._controls`)."""
    out = {}
    replaced, stale = replaced or {}, stale or {}
    challengers = set(report.challengers)
    decisions = actions[actions["kind"].isin(["approve", "reject"])]
    last_decision = dict(zip(decisions["stream_id"].astype(int), decisions.itertuples(index=False)))
    resets = actions[actions["kind"] == "reset-reference"]
    last_reset = dict(zip(resets["stream_id"].astype(int), resets.itertuples(index=False)))
    for row in actions.itertuples(index=False):
        s = int(row.stream_id)
        later = last_decision.get(s) if row.kind in ("approve", "reject") else None
        reset = last_reset.get(s) if row.kind == "reset-reference" else None
        if int(row.id) in stale:
            meant, pending = stale[int(row.id)]
            text = (f"not carried out: version {meant} no longer waits" + (
                f"; version {pending} took its place (a forced re-training replaced it): {row.kind} that one anew "
                "if you mean it" if pending >= 0 else ""))
        elif later is not None and later.id != row.id and later.kind != row.kind:
            text = f"not carried out: a later {later.kind} (action {later.id} by {later.created_by}) replaced it"
        elif reset is not None and _rebases(reset) != _rebases(row):
            what = "re-base" if _rebases(reset) else "reset"
            text = (f"not carried out: a later {what} of the reference (action {reset.id} by {reset.created_by}) "
                    "replaced it")
        elif row.kind == "retrain":
            version, where = replaced.get(s, (-1, ""))
            chosen = report.chosen_by_person is not None and bool(report.chosen_by_person[s])
            if int(row.id) in (yielded or ()) and chosen:  # the person's choice it yielded to was carried out
                text = ("not re-trained: a person put "
                        + ("another version" if report.retrained[s] else f"version {int(live['champion_version'][s])}")
                        + " in service after this re-training was queued (a roll-back, a promotion or an approval), "
                        "and their choice stands" + (
                            "; a re-training queued after that choice was carried out" if report.retrained[s]
                            else "; queue the re-training again to re-train from that version"))
            elif report.initial_fit[s] and not report.retrained[s]:
                text = f"re-fitted on the stream's window (version {int(live['champion_version'][s])})"
            elif s in report.failed:
                text = f"re-training failed: {report.failed[s]}"
                kept, where = _undecided_version(live, s)
                if kept >= 0:
                    text += f"; version {kept}, {where}, stays in its place"
            elif not report.retrained[s]:
                if not report.serving[s]:
                    text = "no model yet: the first one comes when the stream has enough history"
                elif report.promoted[s]:
                    text = (f"not re-trained: a person put version {int(live['champion_version'][s])} in service "
                            "after this re-training was queued (a roll-back, a promotion or an approval), and "
                            "their choice stands; queue the re-training again to re-train from that version")
                else:
                    text = ("not re-trained: its challenger is still in shadow, and the approval or rejection queued "
                            "for it comes first; queue the re-training again to replace it")
            else:
                text = ("re-trained; the challenger runs in shadow before promotion" if s in challengers
                        else f"re-trained and promoted (version {int(live['champion_version'][s])})")
                if version >= 0:
                    text += f"; it replaced version {version}, which was {where}"
        elif row.kind == "reset-reference":
            if not report.serving[s] and s not in adopted:
                text = "nothing to reset: no model serves the stream yet (its reference starts with its first model)"
            else:
                text = "reference re-based on the recent losses" if _rebases(row) else "reference reset"
        else:  # approve, reject: of the version that waited
            text = _approval_outcome(row.kind, int(waited[s]) if s < len(waited) else -1,
                                     int(live["champion_version"][s]), s in adopted,
                                     report.rejected is not None and bool(report.rejected[s]))
        out[int(row.id)] = text
    return out


def _rebases(action) -> bool:
    """Whether a queued ``reset-reference`` action re-bases the reference (else it resets it)."""
    return bool((action.params or {}).get("rebase"))


def _approval_outcome(kind: str, waiting: int, serving: int, moved_by_a_person: bool, rejected: bool) -> str:
    """What an ``approve`` or ``reject`` did with the version that waited for approval (``waiting``, -1: none).

    >>> _approval_outcome("approve", 3, 3, False, False)
    'approved: version 3 serves'
    >>> _approval_outcome("approve", 3, 1, True, False)
    'not carried out: a person put version 1 in service, which dropped version 3 that waited for approval'
    >>> _approval_outcome("reject", -1, 2, False, False)
    'nothing waited for approval'
    """
    if waiting < 0:
        return "nothing waited for approval"
    if moved_by_a_person and serving != waiting:
        return (f"not carried out: a person put version {serving} in service, which dropped version {waiting} "
                "that waited for approval")
    if kind == "approve":
        return f"approved: version {waiting} serves" if serving == waiting else \
            f"not carried out: version {waiting} was not promoted (version {serving} serves)"
    if serving == waiting:
        return f"not carried out: version {waiting} serves (approved, or put in service by a person)"
    return f"rejected: version {waiting} is dropped" if rejected else f"version {waiting} no longer waited"


def _verdicts(report: TickReport, serving: np.ndarray) -> pd.DataFrame:
    """The tick's verdicts as the store records them: the decision, each stream's mean loss and the reference
    it was judged against, and the registry version that made the scored forecasts (``serving``)."""
    d = report.decision
    n = len(d.verdict)
    reason = np.asarray(d.reason, dtype=object).copy()
    for s, error in report.failed.items():
        reason[s] = f"re-training failed: {error}"
    nan = np.full(n, np.nan)
    return pd.DataFrame({
        "stream_id": np.arange(n), "verdict": d.verdict, "p_value": nan if d.p_value is None else d.p_value,
        "effect": nan if d.effect is None else d.effect, "retrain": d.retrain, "reason": reason,
        "loss": report.stream_loss[:n], "reference_loss": report.reference_loss[:n],
        "model_version": np.where(serving >= 0, serving, -1),
    }).assign(model_version=lambda f: f["model_version"].where(f["model_version"] >= 0))


def _next_tick(timing: Timing, k: int) -> NextTick:
    """Tick ``k``'s bounds and the timestamp whose actual completes it."""
    lo, hi = timing.boundaries(k, k + 1)
    return NextTick(k, str(lo), str(hi), str(timing.last_timestamp(k)))


def name_model_versions(escalations: list[Escalation], versions: dict[str, np.ndarray]) -> list[Escalation]:
    """``escalations`` with the registry version named in each one about a model (:attr:`Escalation.slot`).

    ``versions`` maps a slot to the registry version of each stream's model in it (-1: none); an escalation
    whose model has no version is left as it is.

    >>> from mlma.escalations import Escalation
    >>> failed = Escalation(1, 5, "forecast-failed", 2, "the re-trained model failed", slot="challenger")
    >>> out = name_model_versions([failed, Escalation(0, 5, "silent", 1, "no actuals")],
    ...                           {"champion": np.array([3, 4]), "challenger": np.array([-1, 9])})
    >>> [e.message for e in out]
    ['registry version 9: the re-trained model failed', 'no actuals']
    """
    named = []
    for e in escalations:
        version = -1 if e.slot is None or e.stream < 0 else int(versions[e.slot][e.stream])
        named.append(e.naming_version(version) if version >= 0 else e)
    return named


def _summary(report: TickReport, n: int, start: bool, seconds: float, driver_values_filled: int | None,
             next_tick: NextTick | None = None) -> TickSummary:
    """The tick's :class:`~mlma.store.records.TickSummary`. The loss ratio compares the streams' losses with
    the references they were judged against (the references at the start of the tick). ``promoted`` counts the
    agent's promotions (:attr:`~mlma.agent.TickReport.promotions`): the models a person put in service in the
    registry, which the agent serves from this tick, are not among them (the audit log has those)."""
    verdicts = {v.label: 0 for v in Verdict}
    if not start:
        counts = np.bincount(report.decision.verdict.astype(np.int64), minlength=len(Verdict))
        verdicts = {v.label: int(counts[v]) for v in Verdict}
    finite = np.isfinite(report.losses)
    stream_loss, ref = report.stream_loss[:n], report.reference_loss[:n]
    scored = np.isfinite(stream_loss)
    both = scored & np.isfinite(ref) & (ref > 0)
    return TickSummary(
        n_streams=n,
        verdicts=verdicts,
        retrains=int(report.retrained.sum()),
        promoted=int(report.promotions),
        rejected=int(report.rejected.sum()) if report.rejected is not None else 0,
        initial_fits=int(report.initial_fit.sum()),
        fit_failures=len(report.failed),
        forecast_failures=len(report.forecast_failed) + len(report.shadow_failed),
        compute_seconds=round(float(report.retrain_seconds.sum() + report.initial_seconds.sum()), 4),
        loss=float(report.losses[finite].mean()) if finite.any() else None,
        policy_loss=float(stream_loss[scored].mean()) if scored.any() else None,
        reference_loss=float(ref[both].mean()) if both.any() else None,
        loss_ratio=float(stream_loss[both].sum() / ref[both].sum()) if both.any() else None,
        escalations=len(report.escalations),
        awaiting_approval=int(report.awaiting.sum()),
        pinned=int((report.decision.verdict == Verdict.PINNED).sum()) if not start else 0,
        duration_seconds=round(seconds, 3),
        driver_values_filled=driver_values_filled,
        next_tick=None if next_tick is None else next_tick.to_summary(),
    )


def _checkpoint(name: str) -> None:
    """Test hook: with ``MLMA_PAUSE_AT=name`` the process writes ``MLMA_PAUSE_FILE`` and waits there, so
    that a crash test can SIGKILL it at a known point of the tick."""
    if os.environ.get("MLMA_PAUSE_AT") != name:
        return
    marker = os.environ.get("MLMA_PAUSE_FILE")
    if marker:
        Path(marker).write_text(str(os.getpid()))
    while True:  # pragma: no cover - ended by the test's SIGKILL
        signal.pause() if hasattr(signal, "pause") else time.sleep(3600)


def _project_notifier(config: ProjectConfig, store: Store):
    receivers = getattr(config, "alert_receivers", None)
    if not receivers:
        return None
    from mlma.alerts import Notifier  # noqa: PLC0415 - optional part, loaded only when configured

    return Notifier(store, receivers, **getattr(config, "alert_options", {}))


