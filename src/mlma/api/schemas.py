"""The shapes of the API's answers: one pydantic model per JSON object the API sends.

The reads are built as plain dicts by :mod:`mlma.store.queries` (and the actions' answers by
:mod:`mlma.api.routers.actions`); each endpoint declares its model here as its ``response_model``, so that
``/openapi.json`` documents every answer and FastAPI checks each answer against it before sending it. Every
model forbids keys it does not declare: a key that a query adds and a model forgets is a 500 in the tests
(a ``ResponseValidationError``), not a key silently dropped from the answer.

Conventions of the values:

- times are ISO 8601 text, as the store gives them (``2026-12-24T00:00:00`` for data times,
  ``2026-12-24T05:49:00+00:00`` for instants);
- a number that is missing, or was NaN or infinite, is ``null``;
- parts whose keys are open (a model version's ``params``, ``metrics`` and ``check``, an audit entry's
  ``params``, an action's ``detail``, a stream's ``attributes`` and ``overrides``) are free-form objects.

Examples
--------
>>> Page[AttributeValue].model_validate({"total": 1, "page": 1, "per_page": 50, "pages": 1,
...                                      "items": [{"value": "c03", "streams": 40}]}).items[0].streams
40
>>> from pydantic import ValidationError
>>> try:
...     Me.model_validate({"name": "ana", "role": "viewer", "actor": "user:ana", "token": "x"})
... except ValidationError as exc:
...     print(exc.errors()[0]["type"], exc.errors()[0]["loc"])
extra_forbidden ('token',)
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, RootModel, WithJsonSchema

T = TypeVar("T")

#: A datetime object in an answer (only the agent's lease: ``Store.lock_holder`` gives datetimes, not text),
#: written as ``datetime.isoformat()`` writes it (``+00:00``), as the API always did; pydantic would write ``Z``.
IsoDateTime = Annotated[dt.datetime, PlainSerializer(dt.datetime.isoformat, return_type=str),
                        WithJsonSchema({"type": "string", "format": "date-time"})]
#: An open JSON object (see the module's docstring).
JsonObject = dict[str, Any]
TickStatus = Literal["running", "done", "failed"]
EscalationStatus = Literal["open", "acknowledged", "resolved", "silenced"]


class Schema(BaseModel):
    """The base of every answer's model: a key the model does not declare is an error."""

    model_config = ConfigDict(extra="forbid")


class Page(Schema, Generic[T]):
    """One page of a list, cut by the database."""

    total: int = Field(description="Rows that match the filters, over all pages.")
    page: int = Field(description="This page's number, from 1.")
    per_page: int
    pages: int = Field(description="How many pages there are (1 when nothing matches).")
    items: list[T]


class Problem(Schema):
    """An error answer other than 422: what went wrong, in words."""

    detail: str


# -- meta and access ---------------------------------------------------------------------------------------
class Health(Schema):
    """The server is up and its store answers."""

    status: Literal["ok"]
    # Named schema_ in Python (BaseModel has a schema() method) and "schema" in the JSON.
    schema_: str | None = Field(alias="schema", description="The store's schema revision (None: no mlma schema).")


class Me(Schema):
    """Whom the request's token belongs to."""

    name: str = Field(description="The token's name.")
    role: str = Field(description="viewer, operator or admin.")
    actor: str = Field(description="How the audit log names this token's actions: user:<name>.")
    session: str | None = Field(None, description="For a session cookie: the session's tag, which the web page "
                                                  "sends back in X-MLMA-Session (409 once the browser has logged "
                                                  "in again elsewhere); None for a bearer token.")
    csrf_cookie: str | None = Field(None, description="For a session cookie: the name of the cookie holding its "
                                                      "CSRF secret (per server); None for a bearer token.")


class Session(Schema):
    """A web session started: its cookies are set."""

    name: str
    role: str
    actor: str = Field(description="How the audit log names this session's actions: user:<name>.")
    csrf: str = Field(description="The session's CSRF secret, to send back in the X-CSRF-Token header.")
    csrf_cookie: str = Field(description="The name of the cookie that holds the CSRF secret (per server).")
    session: str = Field(description="The session's tag, to send back in X-MLMA-Session (see /api/me).")


class LoggedOut(Schema):
    """Whether a session ended: false for a bearer request, which has none (revoke its token to stop it)."""

    logged_out: bool


class Token(Schema):
    """An API token as listed: never its secret."""

    id: int
    name: str = Field(description="Its owner; a revoked token is renamed <name>#<id>.")
    role: str
    created_at: str
    created_by: str
    last_used_at: str | None = Field(description="Updated at most once a minute.")
    revoked_at: str | None
    active: bool = Field(description="Not revoked.")


class CreatedToken(Token):
    """A token just created, with its secret: this answer is the only place it is shown."""

    token: str = Field(description="The plain token, to send as 'Authorization: Bearer <token>'.")


class Revoked(Schema):
    """A token revoked (its web sessions ended too)."""

    revoked: str = Field(description="The name the token had.")


# -- the fleet ---------------------------------------------------------------------------------------------
class NextTick(Schema):
    """The tick after one that was done, as that tick recorded it (``mlma.store.glance.NextTick``)."""

    tick: int
    start: str
    end: str
    complete_at: str = Field(description="The data time whose actual completes the tick.")


def _none(value: Any) -> bool:
    return value is None


class TickSummary(Schema):
    """What one tick did fleet-wide (``mlma.store.records.TickSummary``): the dashboard's time series."""

    n_streams: int
    verdicts: dict[str, int] = Field(description="Streams per verdict label.")
    retrains: int
    promoted: int
    rejected: int
    initial_fits: int
    fit_failures: int
    forecast_failures: int
    compute_seconds: float = Field(description="Seconds spent fitting, summed over streams.")
    loss: float | None = Field(description="Fleet mean loss of the tick's scored timestamps.")
    policy_loss: float | None = Field(description="Fleet mean of the streams' mean losses in the policy's loss.")
    reference_loss: float | None = Field(description="Fleet mean of the streams' reference losses.")
    loss_ratio: float | None = Field(description="Summed stream losses over summed references.")
    escalations: int
    escalations_resolved: int
    awaiting_approval: int
    pinned: int
    duration_seconds: float
    # These two keys are left out of the stored summary when they are None: so they are here too.
    driver_values_filled: int | None = Field(
        None, exclude_if=_none,
        description="Future driver values filled in (absent: the project has no future drivers).")
    next_tick: NextTick | None = Field(None, exclude_if=_none,
                                       description="Absent for a tick written by an mlma that did not record it.")


class Tick(Schema):
    """One tick: its data window, its run and its summary."""

    tick: int
    status: TickStatus
    start_ds: str | None = Field(description="The tick's first data time.")
    end_ds: str | None = Field(description="The data time the tick ends at (exclusive).")
    started_at: str
    finished_at: str | None
    attempts: int
    error: str | None
    summary: TickSummary | None


class FleetEscalations(Schema):
    """The queue's size."""

    open: int = Field(description="Open escalations, silences that ran out included.")
    open_by_severity: dict[str, int] = Field(description="Open escalations by severity (\"1\", \"2\", ...).")
    acknowledged: int
    silenced: int


class AgentLease(Schema):
    """The agent's live lease on the tick lock."""

    holder: str
    acquired_at: IsoDateTime
    heartbeat_at: IsoDateTime
    expires_at: IsoDateTime


class Fleet(Schema):
    """The fleet at a glance, and the recent ticks' summaries."""

    n_streams: int
    last_tick: int | None = Field(description="The last finished tick.")
    latest: Tick | None = Field(description="The last finished tick.")
    running: Tick | None = Field(description="A tick under way among those shown.")
    verdicts: dict[str, int] = Field(description="Streams per verdict label in the last finished tick, every "
                                                 "label with zeros included (empty before the first tick).")
    escalations: FleetEscalations
    pending_actions: int
    abnormal_periods: int = Field(description="Active abnormal periods.")
    pinned_streams: int = Field(description="Streams whose pin holds now.")
    agent: AgentLease | None = Field(description="None: no agent holds the lock.")
    series: list[Tick] = Field(description="The recent ticks, oldest first.")


# -- streams -----------------------------------------------------------------------------------------------
class StreamRow(Schema):
    """A stream in the list, with its verdict in the last finished tick."""

    id: int
    unique_id: str
    attributes: JsonObject
    verdict: str | None = Field(description="None: no verdict in the last finished tick.")
    p_value: float | None
    effect: float | None
    loss: float | None
    reference_loss: float | None
    model_version: int | None = Field(description="The version the verdict scored.")
    champion: int | None = Field(description="The version serving now.")
    retrain: bool | None
    reason: str | None
    last_ds: str | None = Field(description="The newest actual's data time.")
    pinned_until: str | None = Field(description="\"forever\" or an instant; None: not pinned now.")
    needs_approval: bool
    overrides: JsonObject
    open_escalations: int
    max_severity: int | None = Field(description="The highest severity of its open escalations.")


class StreamPage(Page[StreamRow]):
    """A page of streams."""

    tick: int | None = Field(description="The last finished tick, whose verdicts are shown.")
    sort: str


class Champion(Schema):
    """The version serving a stream, and how it came to."""

    version: int
    since: str
    moved_by: str
    reason: str | None
    tick: int | None


class StreamTick(Schema):
    """A stream's verdict in one tick."""

    tick: int
    start_ds: str | None
    end_ds: str | None
    verdict: str | None
    p_value: float | None
    effect: float | None
    loss: float | None
    reference_loss: float | None
    model_version: int | None
    retrain: bool
    reason: str | None


class Actuals(Schema):
    """The stream's actuals, as parallel arrays."""

    ds: list[str | None]
    y: list[float | None]


class Forecasts(Schema):
    """The latest forecast of each data time (the one that was scored), as parallel arrays."""

    ds: list[str | None]
    y_hat: list[float | None]
    issued_tick: list[int]
    model_version: list[int | None]


class ModelVersion(Schema):
    """One of the stream's model versions."""

    version: int
    created_at: str
    created_tick: int | None
    train_start: str | None
    train_end: str | None
    spec: str
    params: JsonObject
    metrics: JsonObject
    check: JsonObject = Field(description="The challenger check's result.")
    serving: bool
    artifact_pruned_at: str | None = Field(
        description="When version retention ([registry] keep_versions, mlma prune --versions) deleted the version's "
                    "model file; the version is history only then (a roll-back or promotion to it is refused). "
                    "None: its model file is kept.")


class ChampionMove(Schema):
    """A promotion or roll-back of the stream's champion."""

    version: int
    previous_version: int | None
    action: Literal["promote", "rollback"]
    moved_by: str
    reason: str | None
    at: str
    tick: int | None


class Escalation(Schema):
    """One escalation."""

    id: int
    stream_id: int | None = Field(description="None: a fleet-wide escalation.")
    unique_id: str | None
    tick: int | None
    kind: str
    severity: int
    message: str
    status: EscalationStatus = Field(description="The effective status: a silence that ran out is open.")
    created_at: str
    updated_at: str
    silenced_until: str | None


class StreamAction(Schema):
    """An action queued for a stream, carried out by a tick."""

    id: int
    stream_id: int
    unique_id: str
    kind: Literal["retrain", "reset-reference", "approve", "reject"]
    params: JsonObject
    status: Literal["pending", "applied", "cancelled"]
    created_at: str
    created_by: str
    reason: str | None
    applied_tick: int | None
    applied_at: str | None
    outcome: str | None


class AuditEntry(Schema):
    """An entry of the audit log."""

    id: int
    at: str
    actor: str
    action: str
    target: str | None = Field(description="e.g. stream:zone-417, group:city=c03, streams:40")
    params: JsonObject
    reason: str | None


class StreamAbnormalPeriod(Schema):
    """An active abnormal period that covers the stream (its own or the fleet's)."""

    id: int
    scope: Literal["fleet", "stream"]
    start: str
    end: str = Field(description="Exclusive.")
    created_by: str
    created_at: str
    reason: str | None


class StreamDetail(Schema):
    """One stream: its state, recent history, models, and what people and the agent did about it."""

    id: int
    unique_id: str
    attributes: JsonObject
    overrides: JsonObject
    params: dict[str, int | float] = Field(
        description="The monitoring parameters in force: the project's, with the stream's overrides.")
    first_ds: str | None
    last_ds: str | None
    first_seen: str | None
    last_seen: str | None
    verdict: str | None = Field(description="The verdict in the last finished tick.")
    pinned_until: str | None = Field(description="\"forever\" or an instant; None: not pinned now.")
    needs_approval: bool
    champion: Champion | None
    ticks: list[StreamTick]
    actuals: Actuals
    forecasts: Forecasts
    versions: list[ModelVersion] = Field(description="The newest 100, oldest first.")
    champion_history: list[ChampionMove]
    escalations: list[Escalation]
    actions: list[StreamAction]
    abnormal_periods: list[StreamAbnormalPeriod]
    audit: list[AuditEntry]


class AttributeValue(Schema):
    """One value of an attribute and how many streams have it."""

    value: str | None
    streams: int


class Attributes(RootModel[dict[str, list[AttributeValue]]]):
    """Every attribute key with its values, the most common first (``limit``, 200 by default, at most per key); with
    ``q``, only the key=value pairs containing it, searched among all values."""


# -- the engineer's queue ----------------------------------------------------------------------------------
class QueueMember(Schema):
    """A stream's escalation listed in a queue item."""

    id: int
    stream_id: int | None
    unique_id: str | None
    severity: int
    message: str
    status: EscalationStatus
    size: float | None = Field(description="The stream's reference loss (else loss) in the last tick.")
    verdict: str | None
    created_at: str


class QueueItem(Schema):
    """Escalations of one kind, raised in one tick, by streams of one group (or fleet-wide)."""

    key: str = Field(description="Identifies the item: kind|tick|group value|fleet.")
    kind: str
    kind_text: str = Field(description="What the kind means, in words.")
    tick: int | None
    group_by: str | None
    group_value: str | None
    scope: str = Field(description="fleet, <group_by>=<value>, stream:<unique_id> or streams.")
    count: int
    severity: int = Field(description="The highest severity among the item's escalations.")
    size: float | None = Field(description="The members' summed reference loss: what ranks items.")
    first_created_at: str
    last_created_at: str
    message: str | None = Field(description="The largest member's message.")
    other_messages: int = Field(description="How many other messages the item's escalations carry (each member's "
                                            "own is in `members`, or in /api/escalations/items).")
    ids: list[int] = Field(description="Every escalation of the item, to act on them all at once.")
    members: list[QueueMember] = Field(description="The largest members.")
    more: int = Field(description="Members not listed.")
    tick_start_ds: str | None = Field(description="The tick's first data time.")


class EscalationQueue(Page[QueueItem]):
    """A page of the engineer's queue, ranked by severity, then size, then count."""

    tick: int | None = Field(description="The last finished tick.")
    status: list[EscalationStatus]
    group_by: str | None


# -- actions and abnormal periods --------------------------------------------------------------------------
class AbnormalPeriod(Schema):
    """A period marked abnormal for a stream or the fleet."""

    id: int
    unique_id: str | None = Field(description="None: the whole fleet.")
    scope: Literal["fleet", "stream"]
    start: str
    end: str = Field(description="Exclusive.")
    created_at: str
    created_by: str
    reason: str | None
    cancelled_at: str | None


class AbnormalPeriodPage(Page[AbnormalPeriod]):
    """A page of abnormal periods, with the project's kind of data times, which a new period's must follow."""

    time_zones: Literal["zoned", "naive"] | None = Field(description=(
        "How the project's data times came (mlma.store.Store.time_zones), which the start and end of an abnormal "
        "period must follow: \"zoned\" (its actuals carried UTC offsets: data times are kept and shown in UTC, "
        "and mark-abnormal's start and end must carry an offset, e.g. 2026-12-24T06:00Z), \"naive\" (on the "
        "clock of its data files: no offset), null before any checked file of actuals (no offset, as naive)."))


class ActionAnswer(Schema):
    """What an action did."""

    action: str
    by: str = Field(description="The actor in the audit log: user:<token name>.")
    n_streams: int = Field(description="Streams the action touched.")
    streams: list[str] = Field(description="Their unique_ids (the first 200).")
    queued: int = Field(description="Actions queued for the next tick.")
    changed: int = Field(description="Rows changed now (streams or escalations not so already).")
    audit_id: int | None = Field(description="The audit entry written; None: nothing changed, nothing audited.")
    detail: JsonObject
