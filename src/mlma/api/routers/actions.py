"""Actions: every endpoint calls :class:`mlma.control.Operations`, which checks the request and audits it.

Each action is ``POST /api/actions/<name>`` with a JSON body. Streams are named by ``unique_id``; a
*group* is a mapping of attributes, e.g. ``{"city": "c03"}``, and stands for every stream that has them.
The actor written to the audit log is the token's name: ``user:<name>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from mlma.api.auth import Principal
from mlma.api.deps import AppContext, context, operator
from mlma.api.inputs import Body, RowId, check_known_query, check_request_text
from mlma.api.schemas import ActionAnswer, Problem
from mlma.control import ActionError, ActionResult
from mlma.params import ParameterError, data_time_as_given, instant
from mlma.store.records import MAX_REASON

# Every action needs an operator token: 401 without a valid one, 403 for a viewer's (or a cookie request
# without its CSRF header).
router = APIRouter(prefix="/api/actions", tags=["actions"],
                   dependencies=[Depends(check_request_text), Depends(check_known_query)],
                   responses={401: {"model": Problem}, 403: {"model": Problem}})
#: The answer of a roll-back or promotion when the server has no model registry.
NO_REGISTRY = {503: {"model": Problem, "description": "The server was started without the artifact folder."}}
#: How many stream names an action's answer lists (a group may have thousands).
LISTED_STREAMS = 200


class FieldError(ValueError):
    """Bad input in the body's ``field``: answered with 422, shaped like FastAPI's validation errors."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RegistryMissing(RuntimeError):
    """The server was started without a model registry, so versions cannot be moved."""


# What ActionError's messages are about, so that the 422 names the field (first match wins).
_FIELD_OF_MESSAGE = [
    (re.compile(r"^until must|silence must"), "until"),
    (re.compile(r"^start must"), "start"),
    (re.compile(r"^end must|must end after it starts"), "end"),
    (re.compile(r"^parameter (\w+) "), "params.{0}"),
    (re.compile(r"unknown parameter|no parameters given"), "params"),
    (re.compile(r"no stream has the attributes|a group is a mapping"), "group"),
    (re.compile(r"^version \d+ does not serve stream"), "from_version"),
    (re.compile(r"has no model version|only one champion"), "version"),
    (re.compile(r"^cannot (roll back|promote) .*'s artifact was pruned on "), "version"),  # version retention
    (re.compile(r"no escalation with id|no active abnormal period|no pending action|no escalation ids|"
                r"ids are whole numbers|^no (action|abnormal period) with id"), "ids"),
]
#: A quoted value in a message (Python's repr of a stream id or a value given): the patterns above are matched
#: with these left out, since a stream named "silence must" would otherwise point the 422 at ``until``. A quote
#: after a letter or digit is an apostrophe ("version 3's artifact"), not a value's.
_QUOTED = re.compile(r"(?<!\w)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")(?!\w)")


def _date_form(check: Callable[[Any, str], Any]) -> AfterValidator:
    """A date field checked in form by ``check`` (:mod:`mlma.params`: ISO 8601, as a data file's timestamps) as
    the body is read, so that a refusal is a 422 on that field. What depends on the project (its time zones) or
    on the clock (a pin ends in the future) is checked by :class:`~mlma.control.Operations`, through the same
    functions."""
    def validate(value: str, info: ValidationInfo) -> str:
        check(value, info.field_name)  # a ParameterError is a ValueError: pydantic's 422 for the field
        return value

    return AfterValidator(validate)


#: A data time in ISO 8601 (2025-02-01, 2025-02-01T06:00, 2025-02-01 06:00:00), kept as given.
DataTimeText = Annotated[str, _date_form(data_time_as_given)]
#: A wall-clock instant in ISO 8601 (UTC unless it carries an offset), kept as given.
InstantText = Annotated[str, _date_form(instant)]


class _Body(Body):
    reason: str | None = Field(None, max_length=MAX_REASON, description="Why: kept in the audit log.")


class Streams(_Body):
    """Either ``streams`` (unique_ids) or ``group`` (attributes, e.g. ``{"city": "c03"}``)."""

    streams: list[str] | None = Field(None, max_length=100_000, description="unique_ids of the streams")
    group: dict[str, str | int | float] | None = Field(None, description="attributes every chosen stream has")

    @field_validator("streams")
    @classmethod
    def _not_empty(cls, value):
        if value is not None and not value:
            raise ValueError("name at least one stream")
        return value

    def target(self) -> dict[str, Any]:
        if (self.streams is None) == (self.group is None):
            raise FieldError("streams", "give either 'streams' (a list of unique_ids) or 'group' (attributes such "
                                        "as {\"city\": \"c03\"}), not both or neither")
        if self.group is not None and not self.group:
            raise FieldError("group", "a group needs at least one attribute, e.g. {\"city\": \"c03\"}")
        return {"streams": self.streams} if self.streams is not None else {"group": dict(self.group)}


class Retrain(Streams):
    direct: bool = Field(False, description="promote the re-trained model at once, without the challenger check")


class Pin(Streams):
    until: InstantText | None = Field(None, description="ISO 8601 date-time (UTC unless it carries an offset, e.g. "
                                      "2026-12-24T00:00) when the pin ends; omit to pin until unpinned")


class ResetReference(Streams):
    rebase: bool = Field(False, description="take the recent losses as the new reference instead of starting afresh")


class RequireApproval(Streams):
    required: bool = Field(True, description="false: promotions no longer wait for approval")


class SetParams(Streams):
    params: dict[str, float | int | bool | None] = Field(
        ..., description="delta (>= 0), cooldown_ticks (whole number >= 0); null restores the project default")


class MarkAbnormal(_Body):
    start: DataTimeText = Field(..., description="data time the period starts (inclusive), ISO 8601: 2026-12-24 or "
                                                 "2026-12-24 06:00 (with a UTC offset when the project's data came "
                                                 "with time zones)")
    end: DataTimeText = Field(..., description="data time the period ends (exclusive), ISO 8601 as start")
    streams: list[str] | None = Field(None, description="unique_ids; with neither streams nor group: the fleet")
    group: dict[str, str | int | float] | None = None


class Ids(_Body):
    ids: list[RowId] = Field(..., min_length=1, max_length=100_000)


class Silence(Ids):
    until: str = Field(..., description="a duration from now (4h, 2d) or an ISO date-time (UTC)")


class OneStream(_Body):
    stream: str = Field(..., min_length=1, description="unique_id")


class Rollback(OneStream):
    to_version: RowId | None = Field(None, description="default: the version that served before the current")
    from_version: RowId | None = Field(
        None, description="the version you saw serving: give it when the request may be sent again (a retry "
                          "then changes nothing; a roll-back after another move came between is refused)")


class Promote(OneStream):
    version: RowId
    from_version: int | None = Field(
        None, ge=0, le=2**63 - 1,
        description="the version you saw serving (0: none): a promotion after another version was put in service "
                    "meanwhile is refused instead of replacing a model you have not seen")


def _run(call: Callable[[], ActionResult], who: Principal, default_field: str) -> dict:
    try:
        result = call()
    except (ActionError, ParameterError) as exc:
        message = str(exc)
        if "needs the model registry" in message:
            raise RegistryMissing(message) from None
        unquoted = _QUOTED.sub("''", message)
        for pattern, name in _FIELD_OF_MESSAGE:
            match = pattern.search(unquoted)
            if match:
                raise FieldError(name.format(*match.groups()), message) from None
        raise FieldError(default_field, message) from None
    except ValueError as exc:
        raise FieldError(default_field, str(exc)) from None
    return {"action": result.action, "by": who.actor, "n_streams": len(result.streams),
            "streams": result.streams[:LISTED_STREAMS], "queued": result.queued, "changed": result.changed,
            "audit_id": result.audit_id, "detail": result.detail}


def _stream_field(body: Streams) -> str:
    return "streams" if body.streams is not None else "group"


@router.post("/retrain", response_model=ActionAnswer,
             summary="Force a re-training at the next tick (one stream, several, or a group)")
def retrain(body: Retrain, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    target = body.target()
    return _run(lambda: ctx.operations.force_retrain(**target, direct=body.direct, by=who.actor, reason=body.reason),
                who, _stream_field(body))


@router.post("/pin", response_model=ActionAnswer, summary="No automatic re-training until unpinned or until a date")
def pin(body: Pin, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    target = body.target()
    return _run(lambda: ctx.operations.pin(**target, until=body.until, by=who.actor, reason=body.reason), who,
                _stream_field(body))


@router.post("/unpin", response_model=ActionAnswer, summary="Automatic re-training again")
def unpin(body: Streams, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    target = body.target()
    return _run(lambda: ctx.operations.unpin(**target, by=who.actor, reason=body.reason), who, _stream_field(body))


@router.post("/reset-reference", response_model=ActionAnswer,
             summary="Reset (or, with rebase, re-base) the reference at the next tick")
def reset_reference(body: ResetReference, who: Principal = Depends(operator),
                    ctx: AppContext = Depends(context)) -> dict:
    target = body.target()
    return _run(lambda: ctx.operations.reset_reference(**target, rebase=body.rebase, by=who.actor,
                                                       reason=body.reason), who, _stream_field(body))


@router.post("/require-approval", response_model=ActionAnswer,
             summary="Promotions of re-trained models wait for a person's approval")
def require_approval(body: RequireApproval, who: Principal = Depends(operator),
                     ctx: AppContext = Depends(context)) -> dict:
    target = body.target()
    return _run(lambda: ctx.operations.require_approval(**target, required=body.required, by=who.actor,
                                                        reason=body.reason), who, _stream_field(body))


@router.post("/set-params", response_model=ActionAnswer,
             summary="Override monitoring parameters (delta, cooldown_ticks) for streams")
def set_params(body: SetParams, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    target = body.target()
    # A parameter's refusal names its field (_FIELD_OF_MESSAGE); anything else is about the streams chosen.
    return _run(lambda: ctx.operations.set_params(**target, params=body.params, by=who.actor, reason=body.reason),
                who, _stream_field(body))


@router.post("/mark-abnormal", response_model=ActionAnswer,
             summary="Mark a period abnormal for streams, a group or the whole fleet")
def mark_abnormal(body: MarkAbnormal, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    if body.streams is not None and body.group is not None:
        raise FieldError("streams", "give streams, a group, or neither (the whole fleet), not both")
    if body.streams is not None and not body.streams:
        raise FieldError("streams", "name at least one stream, or leave streams out for the whole fleet")
    if body.group is not None and not body.group:
        raise FieldError("group", "a group needs at least one attribute, e.g. {\"city\": \"c03\"}")
    return _run(lambda: ctx.operations.mark_abnormal(body.start, body.end, body.streams, group=body.group,
                                                     by=who.actor, reason=body.reason),
                who, "group" if body.group is not None else "streams")


@router.post("/cancel-abnormal", response_model=ActionAnswer, summary="Take back abnormal periods by id")
def cancel_abnormal(body: Ids, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    return _run(lambda: ctx.operations.cancel_abnormal(body.ids, by=who.actor, reason=body.reason), who, "ids")


@router.post("/cancel-action", response_model=ActionAnswer,
             summary="Take back queued actions that no tick has carried out yet")
def cancel_action(body: Ids, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    return _run(lambda: ctx.operations.cancel_action(body.ids, by=who.actor, reason=body.reason), who, "ids")


@router.post("/rollback", response_model=ActionAnswer, responses=NO_REGISTRY,
             summary="Put an earlier model version back in service now")
def rollback(body: Rollback, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    try:
        return _run(lambda: ctx.operations.rollback(body.stream, body.to_version, by=who.actor, reason=body.reason,
                                                       from_version=body.from_version),
                    who, "stream")
    except FieldError as exc:
        raise FieldError("to_version" if exc.field == "version" else exc.field, str(exc)) from None


@router.post("/promote", response_model=ActionAnswer, responses=NO_REGISTRY,
             summary="Put a chosen model version in service now")
def promote(body: Promote, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    return _run(lambda: ctx.operations.promote(body.stream, body.version, by=who.actor, reason=body.reason,
                                               from_version=body.from_version), who, "stream")


@router.post("/approve", response_model=ActionAnswer,
             summary="Promote the challenger that waits for approval, at the next tick")
def approve(body: OneStream, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    return _run(lambda: ctx.operations.approve(body.stream, by=who.actor, reason=body.reason), who, "stream")


@router.post("/reject", response_model=ActionAnswer,
             summary="Drop the challenger that waits for approval, at the next tick")
def reject(body: OneStream, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    return _run(lambda: ctx.operations.reject(body.stream, by=who.actor, reason=body.reason), who, "stream")


@router.post("/silence", response_model=ActionAnswer, summary="Hide escalations for a duration or until a time")
def silence(body: Silence, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    return _run(lambda: ctx.operations.silence(body.ids, body.until, by=who.actor, reason=body.reason), who, "until")


@router.post("/acknowledge", response_model=ActionAnswer, summary="Escalations are being looked at")
def acknowledge(body: Ids, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    return _run(lambda: ctx.operations.acknowledge(body.ids, by=who.actor, reason=body.reason), who, "ids")


@router.post("/resolve", response_model=ActionAnswer, summary="Escalations are dealt with")
def resolve(body: Ids, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    return _run(lambda: ctx.operations.resolve(body.ids, by=who.actor, reason=body.reason), who, "ids")


@router.post("/reopen", response_model=ActionAnswer, summary="Escalations need attention again")
def reopen(body: Ids, who: Principal = Depends(operator), ctx: AppContext = Depends(context)) -> dict:
    return _run(lambda: ctx.operations.reopen(body.ids, by=who.actor, reason=body.reason), who, "ids")
