"""What a person can do to the fleet, in one place: the CLI, the REST API and the web page all call this.

:class:`Operations` is the engineer's side of the agent. Every method takes ``by`` (``'user:<name>'``) and
an optional ``reason`` and writes one entry to the append-only audit log, in the same transaction as the
change itself, so that "who did what, when and why" is never missing for a change that happened.

Actions fall in three kinds, by when they take effect:

- **Now**: rolling back or promoting a model version moves the registry's champion alias at once (the next
  tick serves it and starts its reference afresh); escalations are acknowledged, resolved or silenced at once.
- **From the next tick on, as settings**: pinning (no automatic re-training or promotion until unpinned or until a
  date), requiring approval of promotions, per-stream monitoring parameters (``delta``, ``cooldown_ticks``),
  and abnormal periods (kept out of references and training windows, never a reason to re-train). These are
  stored on the streams (``streams.overrides``) or in ``abnormal_periods`` and read by every tick.
- **Queued for the next tick**: forcing a re-training, resetting or re-basing a reference, approving or
  rejecting a pending promotion. They wait in ``stream_actions`` as ``pending``; the tick that carries them
  out marks them ``applied`` with the outcome, in its own transaction. A stream no model serves yet is left
  out of a re-training or reset (refused when none of the chosen streams has a model): no tick could carry
  it out before the agent fits the stream's first model.

A *group* selects streams by their attributes (``mlma attributes FILE``, or
:meth:`mlma.store.Store.set_attributes`): ``{"city": "Berlin"}`` is every stream whose attribute ``city``
is ``Berlin``. The audit log names the group as the target (``group:city=Berlin``), so one action on 40 zones
is one entry.

Examples
--------
>>> import pandas as pd
>>> from mlma.store import Store
>>> store = Store.create("sqlite://")
>>> frame = pd.DataFrame({"unique_id": ["a", "a", "b", "b"], "ds": pd.to_datetime(["2025-01-01", "2025-01-02"] * 2),
...                       "y": [1.0, 2.0, 3.0, 4.0]})
>>> _ = store.ingest_frame(frame, "example")
>>> store.set_attributes({"a": {"city": "Berlin"}, "b": {"city": "Paris"}})
>>> ops = Operations(store)
>>> ops.pin(group={"city": "Berlin"}, by="user:ana", reason="holiday next week").streams
['a']
>>> ops.force_retrain(["b"], by="user:ana", reason="new promotion")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mlma.control.ActionError: stream 'b' has no model yet: the agent fits a stream's first model once it has enough ...
>>> store.audit_log()["action"].tolist()  # the refused re-training wrote nothing
['pin']
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlma.params import (PARAMETERS, ParameterError, check_future, check_params, data_time, future_instant,
                         row_ids)
from mlma.store import Store
from mlma.store.errors import StoreError
from mlma.store.overrides import FOREVER, pin_stamp
from mlma.store.records import audited_ids, check_actor, check_reason, listed_ids
from mlma.store.schema import STREAM_ACTION_STATUSES

if TYPE_CHECKING:
    from mlma.store.transaction import Transaction

log = logging.getLogger(__name__)

#: Monitoring parameters a stream may override, with their bounds (one table: :data:`mlma.params.PARAMETERS`).
OVERRIDABLE = PARAMETERS

#: What ``Operations`` can do, for the CLI's and the API's help texts.
ACTIONS = {
    "retrain": ("force a re-training at the next tick (the challenger check still applies unless direct); it "
                "replaces a challenger in shadow or waiting for approval"),
    "pin": "no automatic re-training or promotion until unpinned or until a date; monitoring goes on",
    "unpin": "automatic re-training again",
    "rollback": "put an earlier model version back in service now",
    "promote": "put a chosen model version in service now",
    "reset-reference": "drop the reference; the serving model's next losses build a new one",
    "rebase-reference": "take the recent losses as the reference at the next tick (accept a new normal)",
    "mark-abnormal": "keep a period out of references and training windows, never a reason to re-train",
    "cancel-abnormal": "take back an abnormal period",
    "silence": "hide an escalation until a given time",
    "acknowledge": "an escalation is being looked at",
    "resolve": "an escalation is dealt with",
    "reopen": "an escalation needs attention again",
    "require-approval": "promotions of re-trained models wait for a person's approval",
    "approve": "promote the challenger that waits for approval, at the next tick",
    "reject": "drop the challenger that waits for approval, at the next tick",
    "set-params": "override monitoring parameters (delta, cooldown_ticks) for streams",
}


class ActionError(ValueError):
    """An action cannot be done as asked; the message says which stream, value or rule is the problem."""


@dataclass(frozen=True)
class ActionResult:
    """What an action did: the streams it touched, rows queued or changed, and its audit entry."""

    action: str
    streams: list[str] = field(default_factory=list)
    queued: int = 0
    changed: int = 0
    audit_id: int | None = None
    detail: dict = field(default_factory=dict)


def group_label(group: Mapping[str, Any]) -> str:
    """How a group is named in the audit log.

    >>> group_label({"city": "Berlin", "kind": "zone"})
    'group:city=Berlin,kind=zone'
    """
    return "group:" + ",".join(f"{k}={v}" for k, v in sorted(group.items()))


class Operations:
    """The engineer's actions on a store; see the module docstring.

    Parameters
    ----------
    store
        The project's store.
    registry
        The model registry (for roll-backs and promotions); built on ``store`` when not given, with
        ``artifacts`` as its artifact folder.
    """

    def __init__(self, store: Store, registry=None, *, artifacts=None) -> None:
        self.store = store
        if registry is None and artifacts is not None:
            from mlma.registry import ModelRegistry

            registry = ModelRegistry(store, artifacts)
        self.registry = registry

    # -- choosing streams -----------------------------------------------------------------------------------
    def select(self, streams: Sequence[int | str] | None = None, *,
               group: Mapping[str, Any] | None = None) -> tuple[np.ndarray, str]:
        """Stream ids and the audit target for explicit ``streams`` or a ``group`` (exactly one of them)."""
        if (streams is None) == (group is None):
            raise ActionError("name either streams or a group (e.g. {'city': 'Berlin'}), not both or neither")
        if streams is not None:
            items = list(streams)
            if not items:
                raise ActionError("no streams given")
            try:
                ids = np.unique(self.store.resolve_many(items))
            except KeyError as exc:
                raise ActionError(exc.args[0]) from None
            names = self.store.unique_ids(ids)
            target = f"stream:{names[0]}" if len(ids) == 1 else f"streams:{len(ids)}"
            return ids, target
        if not isinstance(group, Mapping) or not group:
            raise ActionError(f"a group is a mapping of attribute to value, e.g. {{'city': 'Berlin'}}; got {group!r}")
        table = self.store.streams()
        attributes = table["attributes"].tolist()
        match = np.ones(len(table), dtype=bool)
        for key, value in group.items():
            # Compared as Python objects: a pandas column of the values made a stream without the key NaN,
            # whose text "nan" matched a group value "nan" (every stream lacking the attribute was chosen).
            match &= np.fromiter((bool(a) and a.get(key) is not None and str(a[key]) == str(value)
                                  for a in attributes), dtype=bool, count=len(attributes))
        if not match.any():
            raise ActionError(f"no stream has the attributes {dict(group)}")
        return table["id"].to_numpy(dtype=np.int64)[match], group_label(group)

    # -- settings read by every tick ------------------------------------------------------------------------
    def pin(self, streams=None, *, group=None, until: Any = None, by: str, reason: str | None = None) -> ActionResult:
        """No automatic re-training for the streams until :meth:`unpin` or until ``until`` (an instant).

        A refused ``until`` names the streams the pin was for (the first three and how many), after the reason,
        so that a script pinning group after group says which pin failed."""
        ids, target = self.select(streams, group=group)
        try:
            value = FOREVER if until is None else pin_stamp(future_instant(until, "until"))
        except ParameterError as exc:
            names = self.store.unique_ids(ids[:3]).tolist()
            listed = ", ".join(names) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            group_of = f"{target}, " if target.startswith("group:") else ""
            raise ParameterError(f"{exc}; nothing was pinned ({group_of}{len(ids)} stream"
                                 f"{'' if len(ids) == 1 else 's'}: {listed})") from None
        return self._write_overrides("pin", ids, target, {"pinned_until": value}, by, reason)

    def unpin(self, streams=None, *, group=None, by: str, reason: str | None = None) -> ActionResult:
        return self._override("unpin", streams, group, {"pinned_until": None}, by, reason)

    def require_approval(self, streams=None, *, group=None, required: bool = True, by: str,
                         reason: str | None = None) -> ActionResult:
        """Promotions of re-trained models for the streams wait for :meth:`approve` (or stop waiting)."""
        return self._override("require-approval", streams, group, {"needs_approval": True if required else None},
                              by, reason)

    def set_params(self, streams=None, *, group=None, params: Mapping[str, Any], by: str,
                   reason: str | None = None) -> ActionResult:
        """Override monitoring parameters for the streams; a value of None restores the project's default.

        Values are checked against :data:`mlma.params.PARAMETERS` before anything is written.
        """
        if not params:
            raise ParameterError(f"no parameters given; overridable: {', '.join(OVERRIDABLE)}")
        ids, target = self.select(streams, group=group)
        clean = check_params(dict(params), self._described(ids, target))
        return self._write_overrides("set-params", ids, target, clean, by, reason)

    def _described(self, ids: np.ndarray, target: str) -> str:
        """How an error message names the chosen streams: the group, or up to three unique_ids."""
        if target.startswith("group:"):
            return target
        names = self.store.unique_ids(ids[:3]).tolist()
        more = f" and {len(ids) - 3} more" if len(ids) > 3 else ""
        return ("stream " if len(ids) == 1 else "streams ") + ", ".join(names) + more

    def _override(self, action, streams, group, changes, by, reason) -> ActionResult:
        ids, target = self.select(streams, group=group)
        return self._write_overrides(action, ids, target, changes, by, reason)

    def _write_overrides(self, action, ids, target, changes, by, reason) -> ActionResult:
        """Merge ``changes`` into the overrides of the streams ``ids``, with one audit entry for ``target``.

        ``changed`` counts the streams that were not so already; when none changed (an unpin of unpinned
        streams, a retried pin) nothing is written or audited, as for a retried promotion."""
        check_actor(by)
        with self.store.transaction() as tx:
            changed = tx.merge_overrides({int(i): changes for i in ids})
            audit_id = (tx.audit(by, action, target, {"streams": len(ids), **changes}, reason, streams=ids)
                        if changed else None)
        detail = dict(changes) | ({} if changed else {"note": "every stream was so already: nothing changed"})
        return ActionResult(action, self.store.unique_ids(ids).tolist(), changed=len(changed), audit_id=audit_id,
                            detail=detail)

    def mark_abnormal(self, start: Any, end: Any, streams=None, *, group=None, by: str,
                      reason: str | None = None) -> ActionResult:
        """Mark ``start <= ds < end`` abnormal for the streams (neither streams nor group: the whole fleet).

        Works ahead of time (a holiday next week: pro-active) and afterwards (an outage yesterday:
        retrospective). The ticks read the periods when they build references and training windows.
        ``start`` and ``end`` are data times in ISO 8601 (or datetimes), with a UTC offset exactly when the
        project's timestamps came with one (:func:`mlma.params.data_time`).
        """
        check_actor(by)
        zones = self.store.time_zones()  # the project's kind of timestamps, as its data files must have
        lo, hi = data_time(start, "start", time_zones=zones), data_time(end, "end", time_zones=zones)
        if hi <= lo:
            raise ActionError(f"an abnormal period must end after it starts; got start={lo}, end={hi}")
        if streams is None and group is None:
            ids, target = [None], "fleet"
        else:
            ids, target = self.select(streams, group=group)
        with self.store.transaction() as tx:
            new = tx.add_abnormal_periods(ids, lo.to_pydatetime(), hi.to_pydatetime(), by=by, reason=reason)
            audit_id = (tx.audit(by, "mark-abnormal", target, {"start": str(lo), "end": str(hi), "streams": len(new)},
                                 reason, streams=None if target == "fleet" else new) if new else None)
        names = [] if target == "fleet" else self.store.unique_ids(ids).tolist()
        detail = {"start": str(lo), "end": str(hi), "scope": "fleet" if target == "fleet" else "streams"}
        if not new:
            detail["note"] = "this period was marked already: nothing changed"
        return ActionResult("mark-abnormal", names, changed=len(new), audit_id=audit_id, detail=detail)

    def cancel_abnormal(self, period_ids: Sequence[int], *, by: str, reason: str | None = None) -> ActionResult:
        return self._cancel("cancel-abnormal", period_ids, "abnormal period ids", "abnormal",
                            lambda tx, ids: tx.cancel_abnormal_periods(ids), "abnormal period", "active", by, reason)

    def abnormal_periods(self, *, active_only: bool = True) -> pd.DataFrame:
        """Abnormal periods: id, unique_id (None: whole fleet), start, end, created_at, created_by, reason
        (:meth:`mlma.store.Store.abnormal_periods`)."""
        return self.store.abnormal_periods(active_only=active_only)

    # -- queued for the next tick ---------------------------------------------------------------------------
    def force_retrain(self, streams=None, *, group=None, direct: bool = False, by: str,
                      reason: str | None = None) -> ActionResult:
        """Re-train the streams at the next tick, e.g. before a known event.

        By default the re-trained model must still beat the serving one in shadow before it is promoted
        (the same check as automatic re-trainings); ``direct=True`` promotes it at once, for when the
        engineer knows the serving model is wrong (e.g. after a product launch changed the stream).

        A stream whose last re-training is still in shadow or waits for approval is re-trained all the same:
        the new model replaces that challenger, which is dropped without its check (its check says so), unless
        the person approves or rejects it, or puts a version in service, for the same tick. The answer's
        ``detail["note"]`` names the challengers it will replace.
        """
        return self._queue("retrain", streams, group, {"direct": bool(direct)}, by, reason,
                           note=self._replaced_note)

    def _replaced_note(self, ids: np.ndarray) -> str | None:
        """The challengers (in shadow or waiting for approval) a forced re-training of ``ids`` will replace, in
        words; None: none of the streams has one."""
        from mlma.store.registry_tables import RegistryTables

        wanted = set(ids.tolist())
        # A large selection asks about every stream at once (one statement, no list of ids to bound).
        undecided = RegistryTables(self.store).undecided_versions(None if len(wanted) > 10_000 else sorted(wanted))
        found = {uid: (version, "waits for approval" if result == "awaiting-approval" else "in shadow")
                 for s, uid, version, result in undecided if s in wanted}
        if not found:
            return None
        shown = ", ".join(f"{uid}: version {version} {where}" for uid, (version, where) in list(found.items())[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        one = len(found) == 1
        return (f"{len(found)} stream{'' if one else 's'} {'has a challenger' if one else 'have challengers'} "
                f"({shown}{more}): the re-training replaces {'it' if one else 'them'}, dropped without "
                f"{'its' if one else 'their'} check, unless a person approves, rejects or puts a version in "
                "service for the same tick")

    def reset_reference(self, streams=None, *, group=None, rebase: bool = False, by: str,
                        reason: str | None = None) -> ActionResult:
        """Reset (start the reference afresh from the next losses) or re-base (take the recent losses as the
        reference: the stream's new normal is accepted) at the next tick."""
        return self._queue("reset-reference", streams, group, {"rebase": bool(rebase)}, by, reason,
                           action="rebase-reference" if rebase else "reset-reference")

    def approve(self, stream, *, by: str, reason: str | None = None) -> ActionResult:
        """Promote the stream's challenger that waits for approval (at the next tick). The approval is of that
        version: if a forced re-training replaces it before the tick, the tick does not carry it out (it would
        promote a model the person never saw) and its outcome says so."""
        version = self._check_something_waits(stream, "approve")
        return self._queue("approve", [stream], None, {"version": version}, by, reason)

    def reject(self, stream, *, by: str, reason: str | None = None) -> ActionResult:
        """Drop the stream's challenger that waits for approval (at the next tick); the champion stays. Like an
        approval, it is of the version that waits now."""
        version = self._check_something_waits(stream, "reject")
        return self._queue("reject", [stream], None, {"version": version}, by, reason)

    def _check_something_waits(self, stream, action: str) -> int:
        """The version an approval or rejection is about: the stream's newest version waiting for approval or in
        shadow (whose check, at the next tick, may make it wait). Refused when there is none: it would be
        queued, then do nothing."""
        from mlma.store.registry_tables import RegistryTables

        try:
            sid = self.store.resolve(stream)
        except KeyError:
            raise ActionError(f"unknown stream {stream!r}") from None
        # Only versions made after the serving one can still wait: an older "pending" check is a challenger a
        # person put in service or dropped before its check ended (recorded so by older mlma versions).
        waiting = [version for _, _, version, _ in RegistryTables(self.store).undecided_versions([sid])]
        if not waiting:
            raise ActionError(f"stream {stream!r} has no model waiting for approval and no challenger in shadow: "
                              f"nothing to {action} (its versions and their checks: `mlma versions {stream}`)")
        return int(max(waiting))

    def _queue(self, kind, streams, group, params, by, reason, action=None,
               note: Callable[[np.ndarray], str | None] | None = None) -> ActionResult:
        """Queue ``kind`` for the chosen streams with its audit entry; ``note(ids)``, when given, may add a
        ``note`` to the answer's detail (what the action will do besides, read once it is queued)."""
        check_actor(by)
        check_reason(reason)  # before the streams: a refused reason is refused whichever streams were chosen
        ids, target = self.select(streams, group=group)
        ids, left_out = self._with_a_model(ids, target, action or kind)
        if len(left_out) and not target.startswith("group:"):  # named as the streams acted on
            target = f"stream:{self.store.unique_ids(ids)[0]}" if len(ids) == 1 else f"streams:{len(ids)}"
        with self.store.transaction() as tx:
            tx.queue_actions(ids, kind, params, by=by, reason=reason)
            audit_id = tx.audit(by, action or kind, target, {"streams": len(ids), **params}
                                | ({"left_out_no_model": len(left_out)} if len(left_out) else {}),
                                reason, streams=ids)
        detail = dict(params)
        said = [self._left_out_note(left_out, len(ids) + len(left_out))] if len(left_out) else []
        if note is not None:
            try:
                said.append(note(ids))
            except Exception:  # noqa: BLE001 - the action is queued: an answer saying it failed would be retried
                log.exception("%s queued for %d stream(s); its note could not be read", kind, len(ids))
        said = [text for text in said if text]
        if said:
            detail["note"] = "; ".join(said)
        return ActionResult(action or kind, self.store.unique_ids(ids).tolist(), queued=len(ids),
                            audit_id=audit_id, detail=detail)

    def _with_a_model(self, ids: np.ndarray, target: str, action: str) -> tuple[np.ndarray, np.ndarray]:
        """The chosen streams a model serves, and those left out because none does yet: a re-training or a
        reset of a stream with no model is something no tick can carry out. Refused (nothing written) when no
        chosen stream has a model; of a selection of several, the others are acted on and the answer says which
        were left out (a group or ``--all`` would otherwise fail for the one stream that arrived yesterday)."""
        from mlma.store.registry_tables import RegistryTables

        served = np.isin(ids, RegistryTables(self.store).serving_versions()[0])
        if not served.any():
            if len(ids) == 1:
                which = f"stream {self.store.unique_ids(ids)[0]!r} has no"
            else:
                listed = ", ".join(self.store.unique_ids(ids[:3]).tolist()) + (
                    f" and {len(ids) - 3:,} more" if len(ids) > 3 else "")
                named = target if target.startswith("group:") else listed
                which = f"none of the {len(ids):,} streams ({named}) has a"
            raise ActionError(f"{which} model yet: the agent fits a stream's first model once it has enough "
                              f"history (a season), and a queued {action} would do nothing; nothing was queued")
        return ids[served], ids[~served]

    def _left_out_note(self, left_out: np.ndarray, chosen: int) -> str:
        """The answer's note on the streams :meth:`_with_a_model` left out: how many, the first five, and why."""
        names = self.store.unique_ids(left_out[:5]).tolist()
        more = f" and {len(left_out) - 5:,} more" if len(left_out) > 5 else ""
        return (f"{len(left_out):,} of the {chosen:,} streams left out ({', '.join(names)}{more}): no model yet, the "
                "agent fits a stream's first model once it has enough history (a season)")

    def cancel_action(self, action_ids: Sequence[int], *, by: str, reason: str | None = None) -> ActionResult:
        """Take back queued actions that no tick has carried out yet. Refused (nothing cancelled) for actions
        a running tick has taken up: its re-trainings may be under way, and it carries them out when it
        commits; undo their effect afterwards (e.g. roll the stream back). A tick whose agent is gone (its lease
        ran out, or its process on this host no longer runs: what ``mlma status`` says) is not running: its
        actions can be cancelled, and its next attempt leaves them out
        (:meth:`mlma.store.transaction.Transaction.actions_taken_up`)."""

        def cancel(tx, ids: list[int]) -> list[int]:
            taken = tx.actions_taken_up(ids)
            if taken:
                which = sorted(taken)
                raise ActionError(f"action(s) {which} were taken up by tick {taken[which[0]]}, which is running: "
                                  "they can no longer be cancelled (nothing was); once it commits, undo what they "
                                  "did (e.g. `mlma rollback STREAM`)")
            return tx.cancel_actions(ids)

        return self._cancel("cancel-action", action_ids, "action ids", "actions", cancel, "action", "pending", by,
                            reason)

    def _cancel(self, action: str, given: Sequence[int], what: str, target: str,
                cancel: Callable[[Transaction, list[int]], list[int]], row: str, active: str, by: str,
                reason: str | None) -> ActionResult:
        """Cancel the rows among the ids ``given`` that are still ``active`` (``cancel`` does it in the
        transaction and returns their ids) and audit it as ``action`` on ``target:ids``, naming those cancelled.
        An error, with nothing cancelled, when an id has no ``row`` (a typo cancels nothing silently) or when
        none was active; the answer names the ids that were no longer active (done or cancelled before)."""
        check_actor(by)
        ids = list(dict.fromkeys(row_ids(given, what)))  # an id given twice is cancelled, and audited, once
        table = {"actions": "stream_actions", "abnormal": "abnormal_periods"}[target]
        with self.store.transaction() as tx:
            unknown = tx.unknown_ids(table, ids)
            if unknown:
                raise ActionError(f"no {row} with id(s) {listed_ids(unknown)}; nothing was cancelled")
            cancelled = cancel(tx, ids)
            if not cancelled:
                raise ActionError(f"no {active} {row} with id(s) {listed_ids(ids)}")
            # Found by each stream's audit (`audit?stream=`): the streams the cancelled rows were about; a
            # fleet-wide abnormal period is about every stream, as its marking was (target "fleet").
            streams, fleet = tx.streams_of(table, cancelled)
            what, params = audited_ids(target, cancelled)
            if fleet:
                what, params = "fleet", {**params, target: what}
            audit_id = tx.audit(by, action, what, params, reason, streams=streams)
        done = sorted(set(ids) - set(cancelled))
        return ActionResult(action, changed=len(cancelled), audit_id=audit_id,
                            detail={f"not_{active}": done} if done else {})

    def pending_actions(self, streams=None) -> pd.DataFrame:
        """Queued actions: id, stream_id, unique_id, kind, params, created_at, created_by, reason."""
        return self.actions(status="pending", streams=streams)

    def actions(self, *, status: str | None = None, streams=None, limit: int | None = None) -> pd.DataFrame:
        """Stream actions, newest first, optionally of one status and for some streams."""
        if status is not None and status not in STREAM_ACTION_STATUSES:
            raise ActionError(f"status must be one of {STREAM_ACTION_STATUSES}, got {status!r}")
        ids = None if streams is None else self.select(streams)[0].tolist()
        return self.store.stream_actions(status=status, stream_ids=ids, limit=limit)

    # -- now -------------------------------------------------------------------------------------------------
    def rollback(self, stream, to_version: int | None = None, *, by: str, reason: str | None = None,
                 from_version: int | None = None) -> ActionResult:
        """Put an earlier version of the stream back in service now (default: the one before the current).
        ``from_version``: the version the caller saw serving, so that a retried request changes nothing
        (:meth:`mlma.registry.ModelRegistry.roll_back`)."""
        registry = self._registry()
        if to_version is not None:
            (to_version,) = _version_numbers([to_version])
        if from_version is not None:
            (from_version,) = _version_numbers([from_version])
        try:
            outcome = registry.roll_back(stream, to_version, by=check_actor(by), reason=reason,
                                         from_version=from_version)
        except KeyError as exc:
            raise ActionError(str(exc.args[0]) if exc.args else str(exc)) from None
        except (ValueError, StoreError) as exc:  # StoreError: the version's artifact does not verify
            raise ActionError(str(exc)) from None
        return self._moved("rollback", stream, outcome)

    def promote(self, stream, version: int, *, by: str, reason: str | None = None,
                from_version: int | None = None) -> ActionResult:
        """Put a chosen version of the stream in service now (``changed`` 0 and nothing audited when it already
        serves: a retried request changes nothing). ``from_version``: the version the caller saw serving (0:
        none), so that a promotion asked on a stale view is refused
        (:meth:`mlma.registry.ModelRegistry.put_in_service`)."""
        registry = self._registry()
        (version,) = _version_numbers([version])
        if from_version is not None and from_version != 0:
            (from_version,) = _version_numbers([from_version])
        try:
            outcome = registry.put_in_service(stream, version, by=check_actor(by), reason=reason,
                                              from_version=from_version)
        except KeyError as exc:
            raise ActionError(str(exc.args[0]) if exc.args else str(exc)) from None
        except (ValueError, StoreError) as exc:  # another version was put in service first (ChampionMoved), or
            raise ActionError(str(exc)) from None  # the version's artifact does not verify (StoreError)
        return self._moved("promote", stream, outcome)

    def _moved(self, action: str, stream, outcome) -> ActionResult:
        """The result of a roll-back or promotion: ``changed`` 0, a note and no audit entry when the version
        served already."""
        return ActionResult(action, [self.store.unique_ids([self.store.resolve(stream)])[0]],
                            changed=int(outcome.moved), audit_id=outcome.audit_id,
                            detail={"version": outcome.version} | ({} if outcome.moved else
                                                                   {"note": "it already served"}))

    def _registry(self):
        if self.registry is None:
            raise ActionError("this action needs the model registry: build Operations with registry= or artifacts=")
        return self.registry

    def acknowledge(self, escalation_ids: Sequence[int], *, by: str, reason: str | None = None) -> ActionResult:
        return self._escalations("acknowledged", escalation_ids, by, reason)

    def resolve(self, escalation_ids: Sequence[int], *, by: str, reason: str | None = None) -> ActionResult:
        return self._escalations("resolved", escalation_ids, by, reason)

    def reopen(self, escalation_ids: Sequence[int], *, by: str, reason: str | None = None) -> ActionResult:
        return self._escalations("open", escalation_ids, by, reason)

    def silence(self, escalation_ids: Sequence[int], until: Any, *, by: str, reason: str | None = None) -> ActionResult:
        """Hide escalations until ``until`` (an instant, or a duration such as ``"4h"`` from now)."""
        return self._escalations("silenced", escalation_ids, by, reason, until=_until(until))

    def _escalations(self, status, ids, by, reason, until=None) -> ActionResult:
        ids = list(dict.fromkeys(row_ids(ids, "escalation ids")))  # `mlma ack 1 1`: escalation 1, once
        if not ids:
            raise ActionError("no escalation ids given")
        try:
            changed, audit_id = self.store.set_escalation_status(ids, status, by=by, reason=reason,
                                                                 silenced_until=until)
        except LookupError as exc:
            raise ActionError(str(exc)) from None
        return ActionResult({"acknowledged": "acknowledge", "resolved": "resolve", "open": "reopen",
                             "silenced": "silence"}[status], changed=changed, audit_id=audit_id,
                            detail={} if until is None else {"until": until.isoformat()})


# -- parsing --------------------------------------------------------------------------------------------------
def _until(value: Any) -> dt.datetime:
    """An instant in the future, or a duration from now (``"4h"``, ``"2d"``, ``"1h30min"``, ``"P2D"``)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ActionError(f"until must be a duration such as 4h or 2d, or a date-time, got {value!r}")
        # A signed number and a unit is a duration whatever its size; other text that is no date (no -, : or /,
        # not all digits) may be one too ("1h30min", "2 days 4 hours", "P2D").
        maybe_date = text.isdigit() or (any(c in text for c in "-:/") and not _DURATION.match(text))
        if not maybe_date:
            delta = _duration(text)
            if delta is not None:
                if delta <= pd.Timedelta(0):
                    raise ActionError(f"a silence must last a positive time, got {value!r}")
                now = dt.datetime.now(dt.timezone.utc)
                try:
                    return check_future(now + delta.to_pytimedelta(), "until", value, now)
                except OverflowError:
                    raise ActionError(f"a silence of {text!r} is too long; silence for days or weeks, or until a "
                                      "date-time") from None
            if _CALENDAR_UNIT.match(text):
                raise ActionError(f"{text!r}: months and years have no fixed length; give days (e.g. 90d, "
                                  "365d) or a date-time such as 2026-12-24T00:00")
            if _DURATION.match(text):
                raise ActionError(f"{text!r} is not a duration such as 4h or 2d")
            try:
                return future_instant(value, "until")
            except (ActionError, ParameterError):
                raise ActionError(f"until must be a duration such as 4h, 2d or 1h30min or an ISO 8601 date-time such "
                                  f"as 2026-12-24T00:00, got {text!r}") from None
    return future_instant(value, "until")


def _duration(text: str) -> pd.Timedelta | None:
    """``text`` as a duration (None when it is not one); ActionError when it is one too long to be a silence."""
    try:
        # "2d" is what people write; pandas is retiring the lower-case unit in favour of "2D".
        delta = pd.Timedelta(re.sub(r"(?<=\d)\s*d(?![a-z])", "D", text))
    except (OverflowError, pd.errors.OutOfBoundsTimedelta):
        raise ActionError(f"a silence of {text!r} is too long; silence for days or weeks, or until a "
                          "date-time") from None
    except ValueError:
        return None
    return None if pd.isna(delta) else delta


# A duration as people write one: a signed number and a unit ("4h", "2d", "-4h", "1.5 days", "90min").
_DURATION = re.compile(r"^\s*[-+]?\d+(\.\d+)?\s*[a-zA-Z]+\s*$")
# A duration in months or years ("10 years", "6mo", "1y"), which pandas cannot take: say what can.
_CALENDAR_UNIT = re.compile(r"^\s*[-+]?\d+(\.\d+)?\s*(y|yr|yrs|years?|mo|mos|months?)\s*$", re.IGNORECASE)


def _version_numbers(values) -> list[int]:
    """Model version numbers as the store holds them (64-bit), or an :class:`ActionError` naming the bound."""
    try:
        return row_ids(values, "model versions")
    except ParameterError as exc:
        raise ActionError(str(exc)) from None
