"""What the API and the dashboard read: the store's read queries, aggregated and paginated in the database.

Every function here takes a :class:`~mlma.store.Store` and returns plain JSON-able dicts whose keys are the
REST API's (docs/api.md lists them); the API serves them as they are. None of them
loads a whole per-stream table into Python: lists are filtered, sorted and cut into pages by the database,
and fleet-wide numbers come from ``ticks.summary`` (written by each tick) or from one ``GROUP BY``. A
stream's *current* state is its verdict in the last finished tick, joined on the ``verdicts`` primary key
``(tick, stream_id)``, so a page of 50 of 100,000 streams reads about 50 verdict rows.

Examples
--------
>>> from mlma.store import Store
>>> store = Store.create("sqlite://")
>>> _ = store.stream_ids(["zone-1", "zone-2"])
>>> page = list_streams(store, per_page=1)
>>> page["total"], [row["unique_id"] for row in page["items"]]
(2, ['zone-1'])
>>> fleet_summary(store)["n_streams"]
2
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from mlma.escalations import ESCALATION_KINDS
from mlma.policy import Verdict
from mlma.store.records import TickSummary
from mlma.store import packed
from mlma.store import schema as S
from mlma.store.overrides import StreamOverrides, pinned_now
from mlma.store.store import Store, about_stream

#: Verdict codes by label ('ok', 'degraded', ...), and back.
VERDICT_CODES = {v.label: int(v) for v in Verdict}
VERDICT_LABELS = {int(v): v.label for v in Verdict}
#: Sort keys of the stream list and the columns they sort by.
STREAM_SORTS = ("unique_id", "verdict", "p_value", "effect", "loss", "reference_loss", "escalations", "last_ds",
                "model_version", "champion")
MAX_PER_PAGE = 500
#: The largest page number a list accepts (beyond it every page is empty anyway; the offset stays in 64 bits).
MAX_PAGE = 10**9


class QueryError(ValueError):
    """A read was asked with a bad value; ``field`` names the parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# -- small conversions -------------------------------------------------------------------------------------
def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _iso(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def _settings(overrides: Mapping | None, now: dt.datetime) -> dict:
    """The API's view of a stream's overrides: the pin that holds at ``now`` ("forever" or an instant; None for
    none or one run out) and whether promotions wait for approval."""
    parsed = StreamOverrides.parse(overrides)
    return {"pinned_until": parsed.active_pin(now), "needs_approval": parsed.needs_approval}


def _label(code: Any) -> str | None:
    return None if code is None else VERDICT_LABELS.get(int(code), str(code))


#: Actions as the API and CLI name them, and as the audit log records them (a person filtering the log by the
#: action they took finds it either way): the escalation actions, and a reset of the reference, which the log
#: records as a reset or a re-base.
AUDITED_AS = {"acknowledge": ("escalation-acknowledged",), "resolve": ("escalation-resolved",),
              "reopen": ("escalation-open",), "silence": ("escalation-silenced",),
              "reset-reference": ("reset-reference", "rebase-reference")}


def _stream_named(store: Store, stream: str) -> int:
    """The id of the stream a list is filtered by (named as a person names it: ``Store.resolve``); an unknown
    one is a 422 naming ``stream``, not an empty list that looks like "nothing happened to it"."""
    try:
        return store.resolve(stream)
    except KeyError:
        raise QueryError("stream", f"unknown stream {stream!r}") from None


def _page(page: int, per_page: int) -> tuple[int, int]:
    if not 1 <= page <= MAX_PAGE:
        raise QueryError("page", f"page counts from 1 (at most {MAX_PAGE}), got {page}")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise QueryError("per_page", f"per_page must be 1..{MAX_PER_PAGE}, got {per_page}")
    return (page - 1) * per_page, per_page


def _pages(total: int, per_page: int) -> int:
    return max(1, -(-total // per_page))


def _attr(key: str, dialect: str) -> sa.ColumnElement:
    """A stream attribute as text (SQLite: JSON_EXTRACT, PostgreSQL: ->>), comparable with str(value).

    SQLite compares a JSON path's label with the key as it is written in the stored JSON text (escaped, as
    ``json.dumps`` writes it: ``\\u00e4`` for ``ä``) and ends the label at the next double quote, so the
    label is the escaped key, and a key holding a double quote is looked up with ``json_each`` instead.
    """
    if dialect != "sqlite":
        return S.streams.c.attributes[key].as_string()
    label = json.dumps(key)[1:-1]
    if '"' not in label:
        return sa.cast(sa.func.json_extract(S.streams.c.attributes, f'$."{label}"'), sa.Text)
    pairs = sa.func.json_each(S.streams.c.attributes).table_valued("key", "value").alias("kv")
    return sa.select(sa.cast(pairs.c.value, sa.Text)).where(pairs.c.key == key).scalar_subquery()


def last_done_tick(conn: sa.Connection) -> int | None:
    value = conn.execute(sa.select(sa.func.max(S.ticks.c.tick)).where(S.ticks.c.status == "done")).scalar()
    return None if value is None else int(value)


def _open_condition(now: dt.datetime) -> sa.ColumnElement:
    """Escalations that want attention: open, or silenced until a time that has passed."""
    e = S.escalations
    return sa.or_(e.c.status == "open", sa.and_(e.c.status == "silenced", e.c.silenced_until <= now))


def _effective_status(now: dt.datetime) -> sa.ColumnElement:
    e = S.escalations
    return sa.case((sa.and_(e.c.status == "silenced", e.c.silenced_until <= now), "open"), else_=e.c.status)


def parse_attributes(items: Sequence[str] | None, field: str = "attr") -> dict[str, str]:
    """``["city=c03", "kind=zone"]`` -> ``{"city": "c03", "kind": "zone"}``.

    >>> parse_attributes(["city=c03"])
    {'city': 'c03'}
    """
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise QueryError(field, f"{field} takes key=value, e.g. city=Berlin; got {item!r}")
        if key.strip() in out:
            # Streams match every attribute given; two values of one attribute would match none.
            raise QueryError(field, f"{field} names {key.strip()!r} twice ({key.strip()}={out[key.strip()]} and "
                                    f"{item}); give each attribute once")
        out[key.strip()] = value.strip()
    return out


# -- the fleet ---------------------------------------------------------------------------------------------
def fleet_summary(store: Store, ticks: int = 200) -> dict:
    """The latest tick's summary, the summaries of the last ``ticks`` ticks, and the queue's size."""
    if not 1 <= ticks <= 10_000:
        raise QueryError("ticks", f"ticks must be 1..10000, got {ticks}")
    t, e = S.ticks, S.escalations
    with store._read() as conn:
        now = store._now(conn)
        shown = sa.select(t.c.tick, t.c.start_ds, t.c.end_ds, t.c.status, t.c.started_at, t.c.finished_at,
                          t.c.attempts, t.c.error, t.c.summary)
        rows = conn.execute(shown.order_by(t.c.tick.desc()).limit(ticks)).all()
        n_streams = conn.execute(sa.select(sa.func.count()).select_from(S.streams)).scalar_one()
        done = last_done_tick(conn)
        counts = None
        latest_row = next((r for r in rows if r.status == "done"), None)
        if latest_row is None and done is not None:  # the newest ticks shown failed or run: the done one still counts
            latest_row = conn.execute(shown.where(t.c.tick == done)).first()
        latest_summary = _parsed_summary(latest_row.summary) if latest_row is not None else None
        if latest_summary is not None and latest_summary.verdicts:
            counts = dict(latest_summary.verdicts)
        elif done is not None:
            v = S.verdicts
            counts = {_label(code): int(n) for code, n in conn.execute(
                sa.select(v.c.verdict, sa.func.count()).where(v.c.tick == done).group_by(v.c.verdict))}
        by_severity = dict(conn.execute(sa.select(e.c.severity, sa.func.count()).where(_open_condition(now))
                                        .group_by(e.c.severity)).all())
        # Grouped over a subquery: PostgreSQL does not see two copies of an expression with bound
        # parameters as the same GROUP BY key.
        statuses = sa.select(_effective_status(now).label("status")).select_from(e).subquery()
        status_counts = dict(conn.execute(sa.select(statuses.c.status, sa.func.count())
                                          .group_by(statuses.c.status)).all())
        pending = conn.execute(sa.select(sa.func.count()).select_from(S.stream_actions)
                               .where(S.stream_actions.c.status == "pending")).scalar_one()
        a = S.abnormal_periods
        abnormal = conn.execute(sa.select(sa.func.count()).select_from(a)
                                .where(a.c.cancelled_at.is_(None))).scalar_one()
        pinned = conn.execute(sa.select(sa.func.count()).select_from(S.streams).where(pinned_now(now))).scalar_one()
    series = [_tick_json(r) for r in reversed(rows)]
    return {
        "n_streams": int(n_streams),
        "last_tick": done,
        "latest": None if latest_row is None else _tick_json(latest_row),
        "running": next((_tick_json(r) for r in rows if r.status == "running"), None),
        # Every label, zeros included, once a tick is done: a script reads counts["degraded"] without a guard.
        "verdicts": {} if counts is None else {label: int(counts.get(label, 0)) for label in VERDICT_LABELS.values()},
        "escalations": {"open": int(sum(by_severity.values())),
                        "open_by_severity": {str(int(k)): int(n) for k, n in sorted(by_severity.items())},
                        "acknowledged": int(status_counts.get("acknowledged", 0)),
                        "silenced": int(status_counts.get("silenced", 0))},
        "pending_actions": int(pending),
        "abnormal_periods": int(abnormal),
        "pinned_streams": int(pinned),
        "agent": store.lock_holder(),
        "series": series,
    }


def _tick_json(row) -> dict:
    return {"tick": int(row.tick), "status": row.status, "start_ds": _iso(row.start_ds), "end_ds": _iso(row.end_ds),
            "started_at": _iso(row.started_at), "finished_at": _iso(row.finished_at),
            "attempts": int(row.attempts), "error": row.error, "summary": _summary_json(row.summary)}


def _parsed_summary(stored) -> TickSummary | None:
    """A tick's stored summary through its typed parse; None when there is none or it does not parse."""
    try:
        return TickSummary.parse(stored)
    except (TypeError, ValueError):
        return None


def _summary_json(stored) -> dict | None:
    summary = _parsed_summary(stored)
    return None if summary is None else summary.to_json()


# -- streams -----------------------------------------------------------------------------------------------
def list_streams(store: Store, *, verdict: Sequence[str] | None = None, attributes: Mapping[str, str] | None = None,
                 q: str | None = None, pinned: bool | None = None, sort: str = "unique_id", page: int = 1,
                 per_page: int = 50) -> dict:
    """One page of streams with their current verdict (the last finished tick's), filtered and sorted in SQL.

    Parameters
    ----------
    verdict
        Labels to keep (``ok``, ``degraded``, ...; ``none``: no verdict in the last tick).
    attributes
        Attribute values to match, e.g. ``{"city": "c03"}``.
    q
        A part of ``unique_id`` (case-insensitive).
    pinned
        Only pinned (True) or unpinned (False) streams.
    sort
        One of :data:`STREAM_SORTS`, with ``-`` in front for descending; missing values sort last.
    """
    offset, limit = _page(page, per_page)
    descending = sort.startswith("-")
    key = sort[1:] if descending else sort  # one "-" only: "--loss" is refused below
    if key not in STREAM_SORTS:
        raise QueryError("sort", f"sort must be one of {', '.join(STREAM_SORTS)} (prefix - for descending), "
                                 f"got {sort!r}")
    codes: list[int] = []
    want_none = False
    for label in verdict or ():
        if label == "none":
            want_none = True
        elif label in VERDICT_CODES:
            codes.append(VERDICT_CODES[label])
        else:
            raise QueryError("verdict", f"verdict must be among {', '.join([*VERDICT_CODES, 'none'])}, got {label!r}")
    s, v, ch, e = S.streams, S.verdicts, S.champions, S.escalations
    with store._read() as conn:
        now = store._now(conn)
        tick = last_done_tick(conn)
        on_tick = sa.and_(v.c.stream_id == s.c.id, v.c.tick == (tick if tick is not None else -1))
        esc = (sa.select(e.c.stream_id, sa.func.count().label("n"), sa.func.max(e.c.severity).label("severity"))
               .where(_open_condition(now), e.c.stream_id.is_not(None)).group_by(e.c.stream_id).subquery("esc"))
        where = []
        if codes or want_none:
            parts = [v.c.verdict.in_(codes)] if codes else []
            if want_none:
                parts.append(v.c.verdict.is_(None))
            where.append(sa.or_(*parts))
        for name, value in (attributes or {}).items():
            where.append(_attr(name, store.dialect) == str(value))
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(s.c.unique_id.ilike(pattern, escape="\\"))
        if pinned is not None:
            where.append(pinned_now(now, pinned))
        count = sa.select(sa.func.count()).select_from(s.outerjoin(v, on_tick) if (codes or want_none) else s)
        total = conn.execute(count.where(*where)).scalar_one()
        columns = {"unique_id": s.c.unique_id, "verdict": v.c.verdict, "p_value": v.c.p_value, "effect": v.c.effect,
                   "loss": v.c.loss, "reference_loss": v.c.reference_loss,
                   "escalations": sa.func.coalesce(esc.c.n, 0), "last_ds": s.c.last_ds,
                   # the version the verdict scored, and the one that serves now (a person may have moved it)
                   "model_version": v.c.model_version, "champion": ch.c.version}
        order = columns[key].desc() if descending else columns[key].asc()
        query = (sa.select(s.c.id, s.c.unique_id, s.c.attributes, s.c.overrides, s.c.last_ds, v.c.verdict,
                           v.c.p_value, v.c.effect, v.c.loss, v.c.reference_loss, v.c.model_version, v.c.retrain,
                           v.c.reason, ch.c.version.label("champion"), sa.func.coalesce(esc.c.n, 0).label("n_open"),
                           esc.c.severity)
                 .select_from(s.outerjoin(v, on_tick).outerjoin(ch, ch.c.stream_id == s.c.id)
                              .outerjoin(esc, esc.c.stream_id == s.c.id))
                 .where(*where).order_by(order.nulls_last(), s.c.id).offset(offset).limit(limit))
        rows = conn.execute(query).all()
    items = [{
        "id": int(r.id), "unique_id": r.unique_id, "attributes": r.attributes or {},
        "verdict": _label(r.verdict), "p_value": _num(r.p_value), "effect": _num(r.effect), "loss": _num(r.loss),
        "reference_loss": _num(r.reference_loss),
        "model_version": None if r.model_version is None else int(r.model_version),
        "champion": None if r.champion is None else int(r.champion), "retrain": bool(r.retrain) if r.retrain is not None
        else None, "reason": r.reason, "last_ds": _iso(r.last_ds),
        **_settings(r.overrides, now),
        "overrides": r.overrides or {}, "open_escalations": int(r.n_open),
        "max_severity": None if r.severity is None else int(r.severity)} for r in rows]
    return {"tick": tick, "total": int(total), "page": page, "per_page": per_page,
            "pages": _pages(int(total), per_page), "sort": sort, "items": items}


def attribute_values(store: Store, limit: int = 200) -> dict[str, list[dict]]:
    """Every attribute key with its values and how many streams have each (for group pickers)."""
    if store.dialect == "postgresql":
        sql = ("SELECT kv.key, kv.value, count(*) FROM streams, jsonb_each_text(streams.attributes) AS kv "
               "GROUP BY kv.key, kv.value ORDER BY kv.key, count(*) DESC, kv.value")
    else:
        sql = ("SELECT j.key, CAST(j.value AS TEXT), count(*) FROM streams, json_each(streams.attributes) AS j "
               "GROUP BY j.key, CAST(j.value AS TEXT) ORDER BY j.key, count(*) DESC, 2")
    out: dict[str, list[dict]] = {}
    with store._read() as conn:
        for key, value, n in conn.exec_driver_sql(sql):
            values = out.setdefault(key, [])
            if len(values) < limit:
                values.append({"value": value, "streams": int(n)})
    return out


def _latest_forecasts(issue_rows: Sequence, since: Any, stream: int
                      ) -> list[tuple[dt.datetime, float, int, int | None]]:
    """``(ds, y_hat, issued_tick, model_version)`` per forecast timestamp of ``stream`` from ``since`` on, in
    time order.

    A timestamp may have been forecast by several ticks (horizons longer than a tick): the chart shows the
    latest issue, which is the one that was scored. ``issue_rows`` are packed rows of the stream's block in
    issuing order.
    """
    latest: dict[int, tuple[float, int, int | None]] = {}
    floor = None if since is None else int(pd.Timestamp(since).value // 1000)
    for r in issue_rows:
        part = packed.stream_part(r.stream_ids, r.steps, r.model_versions, r.ds_packed, r.y_hat_packed, stream)
        if part is None:
            continue
        ds, y, version = part
        for us, value in zip((ds.astype("datetime64[us]").astype("int64")).tolist(), y.tolist()):
            if floor is None or us >= floor:
                latest[us] = (value, int(r.issued_tick), version)
    return [(pd.Timestamp(us, unit="us").to_pydatetime(), *latest[us]) for us in sorted(latest)]


#: The most actuals a stream's page gets (the newest): 35 days of minute data.
MAX_ACTUALS = 50_000


def stream_detail(store: Store, stream: str, *, ticks: int = 30, defaults: Mapping[str, Any] | None = None) -> dict:
    """One stream: its state, the last ``ticks`` ticks of actuals, forecasts, losses against the reference,
    p-values and verdicts, its model versions and every move of its champion with who and why, and its
    escalations, queued actions, abnormal periods and audit entries.

    Raises ``KeyError`` for an unknown stream.
    """
    if not 1 <= ticks <= 2000:
        raise QueryError("ticks", f"ticks must be 1..2000, got {ticks}")
    s, t, v = S.streams, S.ticks, S.verdicts
    sid = store.resolve(str(stream))  # the ids' one rule, as the actions find it (" zone-1" names zone-1)
    with store._read() as conn:
        now = store._now(conn)
        row = conn.execute(sa.select(s).where(s.c.id == sid)).first()
        if row is None:
            raise KeyError(f"unknown stream {stream!r}")
        window = conn.execute(sa.select(t.c.tick, t.c.start_ds, t.c.end_ds, t.c.status)
                              .where(t.c.status == "done").order_by(t.c.tick.desc()).limit(ticks)).all()[::-1]
        tick_bounds = {int(w.tick): (w.start_ds, w.end_ds) for w in window}
        verdict_rows = []
        if window:
            # By primary key, one (tick, stream) lookup per tick shown: verdicts have no index by stream.
            verdict_rows = conn.execute(sa.select(v).where(v.c.tick.in_([int(w.tick) for w in window]),
                                                           v.c.stream_id == sid).order_by(v.c.tick)).all()
        starts = [w.start_ds for w in window if w.start_ds is not None]
        since = min(starts) if starts else None
        if since is None and row.last_ds is not None:
            since = row.last_ds - dt.timedelta(days=14)
        o, f = S.observations, S.forecasts
        obs_query = sa.select(o.c.ds, o.c.y).where(o.c.stream_id == sid)
        fc_query = (sa.select(f.c.issued_tick, f.c.stream_ids, f.c.steps, f.c.model_versions, f.c.ds_packed,
                              f.c.y_hat_packed).where(f.c.block == packed.block_of(sid)))
        if since is not None:
            obs_query = obs_query.where(o.c.ds >= since)
            fc_query = fc_query.where(f.c.last_ds >= since)
        # The newest actuals when there are more than the page can draw (minute data over many ticks): the
        # forecasts are cut to the same span below, so the chart does not show an outage that is not there.
        actual_rows = conn.execute(obs_query.order_by(o.c.ds.desc()).limit(MAX_ACTUALS)).all()[::-1]
        # One packed row of the stream's block per issuing tick (mlma.store.packed): the newest 5,000 at most.
        issue_rows = conn.execute(fc_query.order_by(f.c.issued_tick.desc()).limit(5_000)).all()[::-1]
        mv, ch, h = S.model_versions, S.champions, S.champion_history
        versions = conn.execute(sa.select(mv).where(mv.c.stream_id == sid).order_by(mv.c.version.desc())
                                .limit(100)).all()[::-1]
        champion = conn.execute(sa.select(ch).where(ch.c.stream_id == sid)).first()
        history = conn.execute(sa.select(h).where(h.c.stream_id == sid).order_by(h.c.at.desc(), h.c.id.desc())
                               .limit(200)).all()[::-1]
        e = S.escalations
        escalations = conn.execute(sa.select(e, _effective_status(now).label("effective"))
                                   .where(e.c.stream_id == sid).order_by(e.c.id.desc()).limit(100)).all()
        sa_ = S.stream_actions
        actions = conn.execute(sa.select(sa_).where(sa_.c.stream_id == sid).order_by(sa_.c.id.desc()).limit(100)).all()
        a = S.abnormal_periods
        abnormal = conn.execute(sa.select(a).where(a.c.cancelled_at.is_(None),
                                                   sa.or_(a.c.stream_id == sid, a.c.stream_id.is_(None)))
                                .order_by(a.c.start_ds)).all()
        al = S.audit_log
        audit = conn.execute(sa.select(al).where(about_stream(sid, row.unique_id)).order_by(al.c.id.desc())
                             .limit(100)).all()
    if len(actual_rows) == MAX_ACTUALS:
        since = actual_rows[0].ds
    forecasts = _latest_forecasts(issue_rows, since, sid)
    overrides = row.overrides or {}
    parsed = StreamOverrides.parse(overrides)
    params = dict(defaults or {})
    params.update({k: v for k, v in (("delta", parsed.delta), ("cooldown_ticks", parsed.cooldown_ticks))
                   if v is not None})
    current = verdict_rows[-1] if verdict_rows and verdict_rows[-1].tick == (window[-1].tick if window else None) \
        else None
    return {
        "id": sid, "unique_id": row.unique_id, "attributes": row.attributes or {}, "overrides": overrides,
        "params": params, "first_ds": _iso(row.first_ds), "last_ds": _iso(row.last_ds),
        "first_seen": _iso(row.first_seen), "last_seen": _iso(row.last_seen),
        "verdict": None if current is None else _label(current.verdict),
        **_settings(overrides, now),
        "champion": None if champion is None else {
            "version": int(champion.version), "since": _iso(champion.since), "moved_by": champion.moved_by,
            "reason": champion.reason, "tick": champion.tick},
        "ticks": [{"tick": int(r.tick), "start_ds": _iso(tick_bounds.get(int(r.tick), (None, None))[0]),
                   "end_ds": _iso(tick_bounds.get(int(r.tick), (None, None))[1]), "verdict": _label(r.verdict),
                   "p_value": _num(r.p_value), "effect": _num(r.effect), "loss": _num(r.loss),
                   "reference_loss": _num(r.reference_loss),
                   "model_version": None if r.model_version is None else int(r.model_version),
                   "retrain": bool(r.retrain), "reason": r.reason} for r in verdict_rows],
        "actuals": {"ds": [_iso(r.ds) for r in actual_rows], "y": [_num(r.y) for r in actual_rows]},
        "forecasts": {"ds": [_iso(ds) for ds, _, _, _ in forecasts], "y_hat": [_num(y) for _, y, _, _ in forecasts],
                      "issued_tick": [tick for _, _, tick, _ in forecasts],
                      "model_version": [version for _, _, _, version in forecasts]},
        "versions": [{"version": int(m.version), "created_at": _iso(m.created_at), "created_tick": m.created_tick,
                      "train_start": _iso(m.train_start), "train_end": _iso(m.train_end), "spec": m.spec,
                      "params": m.params, "metrics": m.metrics, "check": m.check_result,
                      "serving": champion is not None and int(champion.version) == int(m.version),
                      "artifact_pruned_at": _iso(m.artifact_pruned_at)} for m in versions],
        "champion_history": [{"version": int(c.version), "previous_version": c.previous_version, "action": c.action,
                              "moved_by": c.moved_by, "reason": c.reason, "at": _iso(c.at), "tick": c.tick}
                             for c in history],
        "escalations": [_escalation_json(r, r.effective, row.unique_id) for r in escalations],
        "actions": [_action_json(r, row.unique_id) for r in actions],
        "abnormal_periods": [{"id": int(p.id), "scope": "fleet" if p.stream_id is None else "stream",
                              "start": _iso(p.start_ds), "end": _iso(p.end_ds), "created_by": p.created_by,
                              "created_at": _iso(p.created_at), "reason": p.reason} for p in abnormal],
        "audit": [_audit_json(r) for r in audit],
    }


def _escalation_json(r, status: str, unique_id: str | None) -> dict:
    return {"id": int(r.id), "stream_id": None if r.stream_id is None else int(r.stream_id), "unique_id": unique_id,
            "tick": r.tick, "kind": r.kind, "severity": int(r.severity), "message": r.message, "status": status,
            "created_at": _iso(r.created_at), "updated_at": _iso(r.updated_at),
            "silenced_until": _iso(r.silenced_until)}


def _action_json(r, unique_id: str) -> dict:
    return {"id": int(r.id), "stream_id": int(r.stream_id), "unique_id": unique_id, "kind": r.kind,
            "params": r.params or {}, "status": r.status, "created_at": _iso(r.created_at), "created_by": r.created_by,
            "reason": r.reason, "applied_tick": r.applied_tick if r.status == "applied" else None,
            "applied_at": _iso(r.applied_at),
            "outcome": r.outcome}


def _audit_json(r) -> dict:
    return {"id": int(r.id), "at": _iso(r.at), "actor": r.actor, "action": r.action, "target": r.target,
            "params": r.params or {}, "reason": r.reason}


# -- the engineer's queue ----------------------------------------------------------------------------------
def escalation_queue(store: Store, *, status: Sequence[str] = ("open",), group_by: str | None = "city",
                     page: int = 1, per_page: int = 25, members: int = 20) -> dict:
    """Escalations grouped and ranked: the engineer's queue.

    Escalations of the same kind raised in the same tick by streams that share the ``group_by`` attribute
    (e.g. every zone of one city) are one item, with a count, the ids (to act on all of them at once), the
    largest ``members`` streams with their messages, and the largest one's message with the number of other
    messages among the item's escalations (each stream's forecast or fit may have failed its own way).
    Fleet-wide escalations are items of their own. Items are ranked by their highest severity, then by
    business size: the sum over member streams of the reference loss (the loss the stream's model normally
    makes, in the target's units: bigger zones have bigger losses), then by count.

    ``status`` is matched on the effective status: a silence that has run out counts as ``open``.
    """
    offset, limit = _page(page, per_page)
    statuses = list(status)
    bad = [x for x in statuses if x not in S.ESCALATION_STATUSES]
    if bad or not statuses:
        raise QueryError("status", f"status must be among {', '.join(S.ESCALATION_STATUSES)}, got {bad or statuses}")
    if not 1 <= members <= 1000:
        raise QueryError("members", f"members must be 1..1000, got {members}")
    if group_by is not None and not group_by.strip():
        group_by = None
    e, s, v = S.escalations, S.streams, S.verdicts
    with store._read() as conn:
        now = store._now(conn)
        tick = last_done_tick(conn)
        effective = _effective_status(now)
        size = sa.func.coalesce(v.c.reference_loss, v.c.loss, 0.0)
        gval = _attr(group_by, store.dialect) if group_by else sa.null()
        fleet = sa.case((e.c.stream_id.is_(None), 1), else_=0)
        base = (e.outerjoin(s, s.c.id == e.c.stream_id)
                .outerjoin(v, sa.and_(v.c.stream_id == e.c.stream_id, v.c.tick == (tick if tick is not None else -1))))
        # Derived columns are computed once in a subquery and grouped on there: PostgreSQL does not take
        # two copies of an expression with bound parameters (the attribute's key) as one GROUP BY key.
        q = (sa.select(e.c.id, e.c.stream_id, s.c.unique_id, e.c.kind, e.c.tick, gval.label("gval"),
                       fleet.label("fleet"), e.c.severity, e.c.message, effective.label("status"), e.c.created_at,
                       size.label("size"), v.c.verdict)
             .select_from(base).where(effective.in_(statuses)).subquery("q"))
        keys = (q.c.kind, q.c.tick, q.c.gval, q.c.fleet)
        # The total number of items rides along as a window count, saving a pass over the escalations.
        grouped = (sa.select(*keys, sa.func.count().label("n"), sa.func.max(q.c.severity).label("severity"),
                             sa.func.sum(q.c.size).label("size"), sa.func.min(q.c.created_at).label("first"),
                             sa.func.max(q.c.created_at).label("last"), sa.func.max(q.c.id).label("newest"),
                             sa.func.count().over().label("total"))
                   .group_by(*keys))
        groups = conn.execute(grouped.order_by(sa.desc("severity"), sa.desc("size"), sa.desc("n"), sa.desc("newest"))
                              .offset(offset).limit(limit)).all()
        if groups:
            total = int(groups[0].total)
        else:
            total = conn.execute(sa.select(sa.func.count()).select_from(grouped.subquery())).scalar_one()
        member_rows = []
        if groups:
            def same(row):
                parts = [q.c.kind == row.kind, q.c.fleet == row.fleet]
                parts.append(q.c.tick.is_(None) if row.tick is None else q.c.tick == row.tick)
                if group_by:
                    parts.append(q.c.gval.is_(None) if row.gval is None else q.c.gval == row.gval)
                return sa.and_(*parts)

            # One pass over the page's escalations gives every id (to act on a whole item) and, ranked by
            # size within each item, the members to list.
            rank = sa.func.row_number().over(partition_by=keys, order_by=(q.c.size.desc(), q.c.id)).label("rank")
            member_rows = conn.execute(sa.select(q, rank).where(sa.or_(*[same(g) for g in groups]))).all()

    def key_of(row) -> tuple:
        return (row.kind, row.tick, row.gval if group_by else None, int(row.fleet))

    ids: dict[tuple, list[int]] = {}
    listed: dict[tuple, list[dict]] = {}
    messages: dict[tuple, set] = {}  # the item's distinct messages: its header shows one
    for r in sorted(member_rows, key=lambda r: r.rank):
        ids.setdefault(key_of(r), []).append(int(r.id))
        messages.setdefault(key_of(r), set()).add(r.message)
        if r.rank > members:
            continue
        listed.setdefault(key_of(r), []).append({
            "id": int(r.id), "stream_id": None if r.stream_id is None else int(r.stream_id),
            "unique_id": r.unique_id, "severity": int(r.severity), "message": r.message, "status": r.status,
            "size": _num(r.size), "verdict": _label(r.verdict), "created_at": _iso(r.created_at)})
    items = []
    for g in groups:
        k = key_of(g)
        member_list = listed.get(k, [])
        if g.fleet:
            scope = "fleet"
        elif group_by and g.gval is not None:
            scope = f"{group_by}={g.gval}"
        elif int(g.n) == 1 and member_list:
            scope = f"stream:{member_list[0]['unique_id']}"
        else:
            scope = "streams"
        items.append({
            "key": "|".join("" if x is None else str(x) for x in k), "kind": g.kind,
            "kind_text": ESCALATION_KINDS.get(g.kind, ""), "tick": g.tick, "group_by": group_by,
            "group_value": g.gval if group_by else None, "scope": scope, "count": int(g.n),
            "severity": int(g.severity), "size": _num(g.size), "first_created_at": _iso(g.first),
            "last_created_at": _iso(g.last), "message": member_list[0]["message"] if member_list else None,
            "other_messages": max(0, len(messages.get(k, ())) - 1),
            "ids": sorted(ids.get(k, [])), "members": member_list, "more": int(g.n) - len(member_list)})
    # The data dates of the items' ticks: on a replayed or delayed project they differ from the wall clock.
    item_ticks = sorted({int(i["tick"]) for i in items if i["tick"] is not None})
    bounds = {}
    if item_ticks:
        with store._read() as conn:
            bounds = {int(r.tick): r.start_ds for r in conn.execute(
                sa.select(S.ticks.c.tick, S.ticks.c.start_ds).where(S.ticks.c.tick.in_(item_ticks)))}
    for item in items:
        item["tick_start_ds"] = _iso(bounds.get(item["tick"])) if item["tick"] is not None else None
    return {"tick": tick, "status": statuses, "group_by": group_by, "total": int(total), "page": page,
            "per_page": per_page, "pages": _pages(int(total), per_page), "items": items}


def escalation_items(store: Store, *, status: Sequence[str] | None = None, stream: str | None = None,
                     kind: str | None = None, page: int = 1, per_page: int = 50) -> dict:
    """Escalations one by one, newest first (effective status, as in the queue)."""
    offset, limit = _page(page, per_page)
    e, s = S.escalations, S.streams
    # As every list's filter: a stream named as a person names it, an unknown one a 422 (an empty list read as
    # "no escalations" for a mistyped id).
    stream_id = None if stream is None else _stream_named(store, stream)
    if kind is not None and kind not in ESCALATION_KINDS:
        raise QueryError("kind", f"kind must be one of {', '.join(ESCALATION_KINDS)}, got {kind!r}")
    with store._read() as conn:
        now = store._now(conn)
        effective = _effective_status(now)
        where = []
        if status:
            bad = [x for x in status if x not in S.ESCALATION_STATUSES]
            if bad:
                raise QueryError("status", f"status must be among {', '.join(S.ESCALATION_STATUSES)}, got {bad}")
            where.append(effective.in_(list(status)))
        if stream_id is not None:
            where.append(e.c.stream_id == stream_id)
        if kind is not None:
            where.append(e.c.kind == kind)
        joined = e.outerjoin(s, s.c.id == e.c.stream_id)
        total = conn.execute(sa.select(sa.func.count()).select_from(joined).where(*where)).scalar_one()
        rows = conn.execute(sa.select(e, s.c.unique_id, effective.label("effective")).select_from(joined)
                            .where(*where).order_by(e.c.id.desc()).offset(offset).limit(limit)).all()
    return {"total": int(total), "page": page, "per_page": per_page, "pages": _pages(int(total), per_page),
            "items": [_escalation_json(r, r.effective, r.unique_id) for r in rows]}


# -- actions, audit, abnormal periods ----------------------------------------------------------------------
def actions_page(store: Store, *, status: str | None = None, stream: str | None = None, page: int = 1,
                 per_page: int = 50) -> dict:
    """Queued (pending) and carried-out (applied, cancelled) stream actions, newest first."""
    offset, limit = _page(page, per_page)
    t, s = S.stream_actions, S.streams
    where = []
    if status is not None:
        if status not in S.STREAM_ACTION_STATUSES:
            raise QueryError("status", f"status must be one of {', '.join(S.STREAM_ACTION_STATUSES)}, got {status!r}")
        where.append(t.c.status == status)
    if stream is not None:
        where.append(t.c.stream_id == _stream_named(store, stream))
    joined = t.join(s, s.c.id == t.c.stream_id)
    with store._read() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(joined).where(*where)).scalar_one()
        rows = conn.execute(sa.select(t, s.c.unique_id).select_from(joined).where(*where)
                            .order_by(t.c.id.desc()).offset(offset).limit(limit)).all()
    return {"total": int(total), "page": page, "per_page": per_page, "pages": _pages(int(total), per_page),
            "items": [_action_json(r, r.unique_id) for r in rows]}


def audit_page(store: Store, *, actor: str | None = None, action: str | None = None, target: str | None = None,
               q: str | None = None, stream: str | None = None, page: int = 1, per_page: int = 50) -> dict:
    """The audit log, newest first; ``target`` matches exactly, ``q`` a part of the target or reason,
    ``stream`` the entries about that stream (alone, or among the many an action touched)."""
    offset, limit = _page(page, per_page)
    al = S.audit_log
    where = []
    for column, value in (("actor", actor), ("target", target)):
        if value:
            where.append(al.c[column] == value)
    if action:
        where.append(al.c.action.in_(AUDITED_AS.get(action, (action,))))
    if stream is not None:
        sid = _stream_named(store, stream)
        where.append(about_stream(sid, str(store.unique_ids([sid])[0])))
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(sa.or_(al.c.target.ilike(pattern, escape="\\"), al.c.reason.ilike(pattern, escape="\\")))
    with store._read() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(al).where(*where)).scalar_one()
        rows = conn.execute(sa.select(al).where(*where).order_by(al.c.id.desc()).offset(offset).limit(limit)).all()
    return {"total": int(total), "page": page, "per_page": per_page, "pages": _pages(int(total), per_page),
            "items": [_audit_json(r) for r in rows]}


def abnormal_periods(store: Store, *, active: bool = True, stream: str | None = None, page: int = 1,
                     per_page: int = 50) -> dict:
    """Abnormal periods, newest first, with the stream's unique_id (None: the whole fleet), paginated in SQL:
    a city's holiday marked on 600 zones is 600 periods. ``stream``: that stream's and the fleet's."""
    offset, limit = _page(page, per_page)
    a, s = S.abnormal_periods, S.streams
    where = [a.c.cancelled_at.is_(None)] if active else []
    if stream is not None:
        sid = _stream_named(store, stream)
        where.append(sa.or_(a.c.stream_id == sid, a.c.stream_id.is_(None)))
    joined = a.outerjoin(s, s.c.id == a.c.stream_id)
    with store._read() as conn:
        total = int(conn.execute(sa.select(sa.func.count()).select_from(a).where(*where)).scalar_one())
        rows = conn.execute(sa.select(a, s.c.unique_id).select_from(joined).where(*where)
                            .order_by(a.c.id.desc()).offset(offset).limit(limit)).all()
    return {"total": total, "page": page, "per_page": per_page, "pages": _pages(total, per_page),
            "items": [{"id": int(r.id), "unique_id": r.unique_id, "scope": "fleet" if r.stream_id is None else "stream",
                       "start": _iso(r.start_ds), "end": _iso(r.end_ds), "created_at": _iso(r.created_at),
                       "created_by": r.created_by, "reason": r.reason, "cancelled_at": _iso(r.cancelled_at)}
                      for r in rows]}
