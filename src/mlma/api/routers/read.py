"""Reads: the fleet, streams, one stream's history, the engineer's queue, actions, the audit log."""

from __future__ import annotations

import sys
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from mlma.data import MAX_ID_LENGTH
from mlma.store import queries
from mlma.api import auth
from mlma.api.auth import Principal
from mlma.api.deps import AppContext, context, viewer
from mlma.api.inputs import check_known_query, check_request_text
from mlma.api.schemas import (AbnormalPeriodPage, Attributes, AuditEntry, Escalation, EscalationQueue,
                               Fleet, Me, Page, Problem, StreamAction, StreamDetail, StreamPage)
from mlma.store.queries import MAX_PAGE

# Every read needs a token (any role reads): 401 without a valid one.
router = APIRouter(prefix="/api", tags=["read"], dependencies=[Depends(check_request_text), Depends(check_known_query)],
                   responses={401: {"model": Problem}})


def _split(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated values alike: ``?verdict=ok&verdict=degraded`` or ``?verdict=ok,degraded``."""
    out: list[str] = []
    for value in values or ():
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


@router.get("/me", response_model=Me, summary="Who the token belongs to and its role")
def me(request: Request, who: Principal = Depends(viewer), ctx: AppContext = Depends(context)) -> dict:
    session = getattr(request.state, "session", None)   # set for a session cookie, not for a bearer token
    return {"name": who.name, "role": who.role, "actor": who.actor,
            "session": None if session is None else auth.session_tag(session),
            "csrf_cookie": None if session is None else ctx.csrf_cookie}


@router.get("/fleet", response_model=Fleet,
            summary="Fleet summary: the latest tick and the time series of tick summaries")
def fleet(ticks: Annotated[int, Query(ge=1, le=10_000, description="How many recent ticks to return.")] = 200,
          _: Principal = Depends(viewer), ctx: AppContext = Depends(context)) -> dict:
    return queries.fleet_summary(ctx.store, ticks)


@router.get("/streams", response_model=StreamPage,
            summary="Streams with their current verdict: filtered, sorted and paginated in SQL")
# With a trailing slash too: "/streams/" is matched as it is by the stream route below (an empty id), so the
# app's slash tolerance (mlma.api.app.SlashTolerant) never served it as the list.
@router.get("/streams/", response_model=StreamPage, include_in_schema=False)
def streams(
    verdict: Annotated[list[str] | None, Query(description="Verdict labels (ok, degraded, warming-up, cooling-down, "
                                                           "pinned, no-data, unmonitored, cold, abnormal, none); "
                                                           "repeat or comma-separate.")] = None,
    attr: Annotated[list[str] | None,
                    Query(description="Attribute filter key=value, e.g. city=c03; repeatable.")] = None,
    # as long as the longest id: a search for a whole id of 400 characters was refused
    q: Annotated[str | None, Query(max_length=MAX_ID_LENGTH,
                                   description="Part of the unique_id (case-insensitive).")] = None,
    pinned: Annotated[bool | None, Query(description="Only pinned (true) or unpinned (false) streams.")] = None,
    sort: Annotated[str, Query(description=f"One of {', '.join(queries.STREAM_SORTS)}; prefix - for descending.")]
    = "unique_id",
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per_page: Annotated[int, Query(ge=1, le=queries.MAX_PER_PAGE)] = 50,
    _: Principal = Depends(viewer), ctx: AppContext = Depends(context),
) -> dict:
    attributes = queries.parse_attributes(attr)
    found = queries.list_streams(ctx.store, verdict=_split(verdict), attributes=attributes,
                                 q=q, pinned=pinned, sort=sort, page=page, per_page=per_page)
    if attributes and not found["total"]:
        # only then: a stream found has the keys (a read of them all)
        _check_attribute_keys(ctx, "attr", {key: f"attr={key}={value}" for key, value in attributes.items()})
    return found


def _check_attribute_keys(ctx: AppContext, field: str, given: dict[str, str]) -> None:
    """422 on ``field`` for an attribute key no stream has (``given``: key -> how the request said it): a
    misspelt key (``attr=cty=c03``) answered an empty list, which reads as "no stream in c03", and a misspelt
    ``group_by`` a queue of items without groups. An unknown value of a known key is a filter that matches
    nothing: an empty list."""
    known = queries.attribute_values(ctx.store, limit=1)
    unknown = [key for key in given if key not in known]
    if unknown:
        keys = ", ".join(sorted(known)[:50]) or "none: no stream has attributes"
        raise queries.QueryError(field, f"no stream has the attribute {unknown[0]!r} ({given[unknown[0]]}); the "
                                        f"keys are: {keys}")


@router.get("/streams/{unique_id:path}", response_model=StreamDetail, responses={404: {"model": Problem}},
            summary="One stream: actuals, forecasts, losses, p-values, versions, champion history, escalations, "
                    "actions, audit")
# The same read, the same code, with the id in the query: a browser resolves the path segments "." and ".."
# (also written %2e) before it sends a URL, so a stream named "." or ".." cannot be read by its path from a page.
@router.get("/stream", response_model=StreamDetail, responses={404: {"model": Problem}},
            summary="One stream, named in the query (?unique_id=): as /api/streams/{unique_id}, for any id")
def stream(unique_id: str, ticks: Annotated[int, Query(ge=1, le=2000, description="Ticks of history.")] = 30,
           _: Principal = Depends(viewer), ctx: AppContext = Depends(context)) -> dict:
    try:
        return queries.stream_detail(ctx.store, unique_id, ticks=ticks, defaults=ctx.defaults)
    except KeyError:
        raise HTTPException(404, f"unknown stream {unique_id!r}") from None


@router.get("/attributes", response_model=Attributes,
            summary="Attribute keys and values with their stream counts (the groups one can act on)")
def attributes(q: Annotated[str | None, Query(max_length=MAX_ID_LENGTH, description="Only the key=value pairs that "
                                              "contain this text (case-insensitive), of every value, not only "
                                              "the most common: for a group picker's search.")] = None,
               limit: Annotated[int, Query(ge=1, le=1000, description="Values per key, the most common first.")]
               = 200,
               _: Principal = Depends(viewer), ctx: AppContext = Depends(context)) -> dict:
    if not q:
        return queries.attribute_values(ctx.store, limit=limit)
    # searched among all the values (one SQL read of every stream's attributes, as without q)
    needle = q.casefold()
    found = {key: [x for x in values if needle in f"{key}={x['value']}".casefold()][:limit]
             for key, values in queries.attribute_values(ctx.store, limit=sys.maxsize).items()}
    return {key: values for key, values in found.items() if values}


@router.get("/escalations", response_model=EscalationQueue,
            summary="The engineer's queue: escalations grouped and ranked")
def escalation_queue(
    status: Annotated[list[str] | None, Query(description="Effective statuses to include (open, acknowledged, "
                                                          "resolved, silenced); default open.")] = None,
    group_by: Annotated[str | None, Query(description="Attribute that groups streams (default: the server's, "
                                                      "e.g. city); empty: group by kind and tick only.")] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per_page: Annotated[int, Query(ge=1, le=queries.MAX_PER_PAGE)] = 25,
    members: Annotated[int, Query(ge=1, le=1000, description="Member streams listed per item.")] = 20,
    _: Principal = Depends(viewer), ctx: AppContext = Depends(context),
) -> dict:
    if group_by and group_by.strip():  # one asked for (the server's own may name a key no stream has yet)
        _check_attribute_keys(ctx, "group_by", {group_by: f"group_by={group_by}"})
    return queries.escalation_queue(ctx.store, status=_split(status) or ["open"],
                                    group_by=ctx.group_by if group_by is None else group_by, page=page,
                                    per_page=per_page, members=members)


@router.get("/escalations/items", response_model=Page[Escalation],
            summary="Escalations one by one, newest first")
def escalation_items(
    status: Annotated[list[str] | None, Query()] = None, stream: str | None = None, kind: str | None = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per_page: Annotated[int, Query(ge=1, le=queries.MAX_PER_PAGE)] = 50,
    _: Principal = Depends(viewer), ctx: AppContext = Depends(context),
) -> dict:
    return queries.escalation_items(ctx.store, status=_split(status) or None, stream=stream, kind=kind, page=page,
                                    per_page=per_page)


@router.get("/actions", response_model=Page[StreamAction],
            summary="Queued and carried-out stream actions, newest first")
def actions(
    status: Annotated[str | None, Query(description="pending, applied or cancelled")] = None,
    stream: str | None = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per_page: Annotated[int, Query(ge=1, le=queries.MAX_PER_PAGE)] = 50,
    _: Principal = Depends(viewer), ctx: AppContext = Depends(context),
) -> dict:
    return queries.actions_page(ctx.store, status=status, stream=stream, page=page, per_page=per_page)


@router.get("/audit", response_model=Page[AuditEntry], summary="The audit log, newest first")
def audit(
    actor: str | None = None, action: str | None = None,
    target: Annotated[str | None, Query(description="Exact target, e.g. stream:zone-417 or group:city=c03")] = None,
    q: Annotated[str | None, Query(max_length=MAX_ID_LENGTH, description="Part of the target or reason")] = None,
    stream: Annotated[str | None, Query(description="The entries about this stream (unique_id): alone, or among "
                                                    "the streams or group an action touched")] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per_page: Annotated[int, Query(ge=1, le=queries.MAX_PER_PAGE)] = 50,
    _: Principal = Depends(viewer), ctx: AppContext = Depends(context),
) -> dict:
    return queries.audit_page(ctx.store, actor=actor, action=action, target=target, q=q, stream=stream, page=page,
                              per_page=per_page)


@router.get("/abnormal-periods", response_model=AbnormalPeriodPage,
            summary="Periods marked abnormal, newest first (active ones unless active=false)")
def abnormal_periods(
    active: bool = True,
    stream: Annotated[str | None, Query(description="Only this stream's periods and the fleet's")] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per_page: Annotated[int, Query(ge=1, le=queries.MAX_PER_PAGE)] = 50,
    _: Principal = Depends(viewer), ctx: AppContext = Depends(context),
) -> dict:
    # time_zones: the project's kind of data times, which the dashboard's abnormal period forms send
    return {**queries.abnormal_periods(ctx.store, active=active, stream=stream, page=page, per_page=per_page),
            "time_zones": ctx.store.time_zones()}
