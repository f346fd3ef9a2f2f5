"""The engineer's commands: ``mlma serve``, ``mlma token ...`` and one command per action.

``register(app)`` adds them to the main ``mlma`` command. They work on the project in the current folder or
on ``--project DIR`` and call :class:`mlma.control.Operations` directly, like the REST API and the web
page, so every action is audited the same way. The actor is ``--by NAME``, else the ``MLMA_USER``
environment variable, else the login name, written as ``user:<name>``. Being on the project's folder is
the local bootstrap: ``mlma token create ana --role admin`` needs no token.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlma.visible import visible

# Text from people and the store (reasons, messages, stream ids, "[store] keep") is printed as it is: markup is
# off, and the few styled lines ask for it themselves with their variable parts escaped.
console = Console(markup=False)
if not console.is_terminal:
    console.width = 140

PROJECT_HELP = "Project folder (default: the current folder)."
BY_HELP = "Who acts, for the audit log (default: $MLMA_USER, else the login name)."
GROUP_HELP = "Act on every stream with this attribute, e.g. --group city=Berlin (repeat to narrow)."


def _row(table: Table, *cells: str) -> None:
    """A row of ``table`` with each cell's hidden characters shown (:func:`mlma.visible.visible`): a reason or a
    stream id holding an escape sequence reached the reader's terminal as one."""
    table.add_row(*(visible(cell) for cell in cells))


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code=2)


def actor(by: Optional[str]) -> str:
    """``user:<name>`` from ``--by``, ``$MLMA_USER`` or the login name.

    >>> actor("ana"), actor("user:bo")
    ('user:ana', 'user:bo')
    >>> try:
    ...     actor("  ")
    ... except typer.BadParameter as exc:
    ...     print(exc)
    --by names nobody; give a name, or leave --by out for $MLMA_USER or the login name
    """
    if by is not None and not by.strip().removeprefix("user:").strip():
        # Said, not taken for the login name: the audit would name someone the person did not mean.
        raise typer.BadParameter("--by names nobody; give a name, or leave --by out for $MLMA_USER or the login "
                                 "name")
    name = by or os.environ.get("MLMA_USER") or _login_name()
    name = name.strip()
    if not name.removeprefix("user:").strip():
        raise typer.BadParameter("give --by NAME (or set MLMA_USER)")
    from mlma.store.records import check_actor  # here: `mlma status` imports this module, and stays light

    who = name if name.startswith("user:") else f"user:{name}"
    try:
        return check_actor(who, "--by")
    except ValueError as exc:  # control characters: the name is printed in the audit log
        raise typer.BadParameter(str(exc)) from None


def _login_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return ""


def _config(project: Optional[Path]):
    from mlma.project import ConfigError, load_config

    try:
        return load_config(project or Path.cwd())
    except ConfigError as exc:
        _fail(str(exc))


@contextlib.contextmanager
def _operations(project: Optional[Path]) -> Iterator:
    from mlma.control import Operations
    from mlma.store import Store

    config = _config(project)
    store = Store.open(config.store_url)
    try:
        yield Operations(store, artifacts=config.artifacts_dir)
    finally:
        store.close()


def _group(items: Optional[list[str]]) -> Optional[dict[str, str]]:
    if not items:
        return None
    from mlma.store.queries import QueryError, parse_attributes

    try:
        return parse_attributes(items, "--group")
    except QueryError as exc:
        raise typer.BadParameter(str(exc)) from None


def _target(streams: Optional[list[str]], group: Optional[list[str]]) -> dict:
    chosen = _group(group)
    if bool(streams) == bool(chosen):
        _fail("name streams (arguments) or a group (--group key=value), not both or neither")
    return {"streams": list(streams)} if streams else {"group": chosen}


def _run(project: Optional[Path], call) -> None:
    from mlma.control import ActionError

    with _operations(project) as ops:
        try:
            result = call(ops)
        except (ActionError, ValueError) as exc:
            _fail(str(exc))
    names = result.streams
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    what = f"{len(names)} stream{'s' if len(names) != 1 else ''} ({shown})" if names else f"{result.changed} item(s)"
    extra = f"; {result.queued} queued for the next tick" if result.queued else ""
    # A queued action's flag reads as its name when set ("; direct") and not at all when not; other values
    # (a parameter set to false) as they are.
    detail = "".join(("" if not v else f"; {k}") if k in _ACTION_FLAGS else f"; {k} {v}"
                     for k, v in result.detail.items())
    audit = f" [audit #{result.audit_id}]" if result.audit_id is not None else ""
    console.print(f"{result.action}: {what}{extra}{detail}{audit}", highlight=False)


#: Options of queued actions that are flags (``mlma retrain --direct``, ``mlma reset-reference --rebase``).
_ACTION_FLAGS = frozenset({"direct", "rebase"})


def _print_json(payload) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


# -- the commands ---------------------------------------------------------------------------------------------
token_app = typer.Typer(help="API tokens for the REST API and the web page (roles: viewer < operator < admin).",
                        no_args_is_help=True)
abnormal_app = typer.Typer(help="Periods kept out of references and training windows (holidays, outages).",
                           no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``token`` and the action and read commands to the ``mlma`` Typer app."""
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")
    app.add_typer(abnormal_app, name="abnormal")
    for name, function in (("pin", pin), ("unpin", unpin), ("retrain", retrain), ("rollback", rollback),
                           ("promote", promote), ("reset-reference", reset_reference), ("silence", silence),
                           ("ack", ack), ("resolve", resolve), ("reopen", reopen), ("approve", approve),
                           ("reject", reject), ("require-approval", require_approval), ("set-params", set_params),
                           ("cancel-action", cancel_action), ("escalations", escalations), ("audit", audit),
                           ("actions", actions), ("versions", versions)):
        app.command(name)(function)


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface; put TLS in front)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port."),
    project: Optional[Path] = typer.Option(None, help=PROJECT_HELP),
    group_by: Optional[str] = typer.Option(None, help="Stream attribute that groups escalations in the queue; '' "
                                           "for none. Default: mlma.toml's [queue] group_by (city)."),
    public_metrics: bool = typer.Option(False, help="Serve /metrics without a token."),
    secure_cookies: bool = typer.Option(False, help="Mark session cookies Secure (when served over HTTPS)."),
    max_body_mb: float = typer.Option(8.0, min=0.001, max=1024.0,
                                      help="Largest request body accepted, in MiB (413 beyond)."),
) -> None:
    """Run the REST API and the web dashboard (uvicorn)."""
    import uvicorn

    from mlma.api.app import create_app
    from mlma.api.auth import list_tokens

    if not host.strip():  # "" would listen on every interface: `--host "$MLMA_HOST"` with the variable unset
        _fail(f"--host must name the address to listen on (127.0.0.1; 0.0.0.0 for every interface), got {host!r}")
    config = _config(project)
    grouping = config.queue.grouping() if group_by is None else group_by.strip() or None
    try:
        app = create_app(config, group_by=grouping, public_metrics=public_metrics, secure_cookies=secure_cookies,
                         max_body_bytes=max(1024, int(max_body_mb * 1024 * 1024)))
    except ValueError as exc:  # a session key file that holds no key, named
        _fail(str(exc))
    if not list_tokens(app.state.mlma.store):
        console.print("no API token yet: create one with [bold]mlma token create NAME --role admin[/]", highlight=False,
                      markup=True)
    listening = _listening_socket(host, port)
    console.print(f"mlma dashboard on http://{host}:{port}/ (project {config.root}, store {config.store_url})",
                  highlight=False)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info")).run(sockets=[listening])


def _listening_socket(host: str, port: int):
    """A socket bound to ``host:port``, made before the dashboard is announced: a port in use, or an address this
    machine does not have, is one line and exit 2 (uvicorn said it after the announcement and exited 3, the code
    of "no tick due")."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        _fail(f"--host {host!r} is not an address or a name this machine can listen on ({exc.strerror})")
    except UnicodeError as exc:  # a name the IDNA codec refuses (an empty label, one too long)
        _fail(f"--host {host!r} is not an address or a name this machine can listen on ({exc})")
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a restart need not wait
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        why = ("another program (or another mlma serve) listens there; choose another --port"
               if exc.errno == errno.EADDRINUSE else "this machine has no such address; check --host"
               if exc.errno == errno.EADDRNOTAVAIL else exc.strerror or str(exc))
        _fail(f"cannot listen on {host}:{port}: {why}")
    return sock


@token_app.command("create")
def token_create(
    name: str = typer.Argument(..., help="Whose token (a person or a system); actions are audited as user:NAME."),
    role: str = typer.Option("viewer", help="viewer, operator or admin."),
    by: Optional[str] = typer.Option(None, help=BY_HELP),
    project: Optional[Path] = typer.Option(None, help=PROJECT_HELP),
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from mlma.api.auth import create_token

    with _operations(project) as ops:
        try:
            info, plain = create_token(ops.store, name, role, by=actor(by))
        except ValueError as exc:
            _fail(str(exc))
    console.print(f"token {info.name} ({info.role}) created; it is shown only now, keep it safe:", highlight=False)
    typer.echo(plain)


@token_app.command("list")
def token_list(
    all_: bool = typer.Option(False, "--all", help="Include revoked tokens."),
    project: Optional[Path] = typer.Option(None, help=PROJECT_HELP),
) -> None:
    """List tokens (never their secrets)."""
    from mlma.api.auth import list_tokens

    with _operations(project) as ops:
        tokens = list_tokens(ops.store, include_revoked=all_)
    table = Table("name", "role", "created", "by", "last used", "state")
    for t in tokens:
        _row(table, t.name, t.role, f"{t.created_at:%Y-%m-%d %H:%M}", t.created_by,
                      "-" if t.last_used_at is None else f"{t.last_used_at:%Y-%m-%d %H:%M}",
                      "active" if t.revoked_at is None else f"revoked {t.revoked_at:%Y-%m-%d %H:%M}")
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    name: str = typer.Argument(..., help="The token's name."),
    reason: Optional[str] = typer.Option(None, help="Why (kept in the audit log)."),
    last_admin: bool = typer.Option(False, "--last-admin",
                                    help="Revoke it even if it is the last active admin token (create another "
                                         "with 'mlma token create NAME --role admin')."),
    by: Optional[str] = typer.Option(None, help=BY_HELP),
    project: Optional[Path] = typer.Option(None, help=PROJECT_HELP),
) -> None:
    """Revoke a token; its web sessions end too."""
    from mlma.api.auth import revoke_token

    with _operations(project) as ops:
        try:
            revoked = revoke_token(ops.store, name, by=actor(by), reason=reason, last_admin=last_admin)
        except ValueError as exc:  # the last admin token; a reason too long for the audit log, named
            _fail(str(exc))
        if not revoked:
            _fail(f"no active token named {name!r} (mlma token list)")
    console.print(f"revoked token {name}", highlight=False)


STREAMS_ARG = typer.Argument(None, help="unique_ids of the streams (or use --group).", show_default=False)
GROUP_OPT = typer.Option(None, "--group", "-g", help=GROUP_HELP, show_default=False)
REASON_OPT = typer.Option(None, "--reason", "-r", help="Why (kept in the audit log).")
BY_OPT = typer.Option(None, "--by", help=BY_HELP)
PROJECT_OPT = typer.Option(None, "--project", help=PROJECT_HELP)


def pin(streams: Optional[list[str]] = STREAMS_ARG, group: Optional[list[str]] = GROUP_OPT,
        until: Optional[str] = typer.Option(None, help="When the pin ends (ISO date-time, UTC); default: never."),
        reason: Optional[str] = REASON_OPT, by: Optional[str] = BY_OPT, project: Optional[Path] = PROJECT_OPT) -> None:
    """Pin streams: no automatic re-training or promotion until unpinned (or --until); monitoring goes on."""
    target = _target(streams, group)
    _run(project, lambda ops: ops.pin(**target, until=until, by=actor(by), reason=reason))


def unpin(streams: Optional[list[str]] = STREAMS_ARG, group: Optional[list[str]] = GROUP_OPT,
          reason: Optional[str] = REASON_OPT, by: Optional[str] = BY_OPT,
          project: Optional[Path] = PROJECT_OPT) -> None:
    """Unpin streams: automatic re-training again."""
    target = _target(streams, group)
    _run(project, lambda ops: ops.unpin(**target, by=actor(by), reason=reason))


def retrain(streams: Optional[list[str]] = STREAMS_ARG, group: Optional[list[str]] = GROUP_OPT,
            all_streams: bool = typer.Option(False, "--all", help="Every stream of the fleet (e.g. after the model "
                                             "files were lost: docs/operations.md)."),
            direct: bool = typer.Option(False, help="Promote the new model at once, without the challenger check."),
            reason: Optional[str] = REASON_OPT, by: Optional[str] = BY_OPT,
            project: Optional[Path] = PROJECT_OPT) -> None:
    """Force a re-training at the next tick."""
    if all_streams:
        if streams or group:
            _fail("--all re-trains every stream: name no streams and no --group with it")

        def every_stream(ops):
            names = ops.store.streams(("id", "unique_id"))["unique_id"].tolist()
            if not names:
                _fail("the project has no streams yet")
            return ops.force_retrain(streams=names, direct=direct, by=actor(by), reason=reason)

        _run(project, every_stream)
        return
    target = _target(streams, group)
    _run(project, lambda ops: ops.force_retrain(**target, direct=direct, by=actor(by), reason=reason))


def rollback(stream: str = typer.Argument(..., help="unique_id"),
             to_version: Optional[int] = typer.Option(None, help="Version to serve (default: the previous one)."),
             from_version: Optional[int] = typer.Option(
                 None, help="The version you saw serving; with it, running the command again changes nothing."),
             reason: Optional[str] = REASON_OPT, by: Optional[str] = BY_OPT,
             project: Optional[Path] = PROJECT_OPT) -> None:
    """Put an earlier model version back in service now."""
    _run(project, lambda ops: ops.rollback(stream, to_version, by=actor(by), reason=reason,
                                           from_version=from_version))


def promote(stream: str = typer.Argument(..., help="unique_id"), version: int = typer.Argument(..., help="Version."),
            from_version: Optional[int] = typer.Option(
                None, help="The version you saw serving (0: none); refused if another serves by then."),
            reason: Optional[str] = REASON_OPT, by: Optional[str] = BY_OPT,
            project: Optional[Path] = PROJECT_OPT) -> None:
    """Put a chosen model version in service now."""
    _run(project, lambda ops: ops.promote(stream, version, by=actor(by), reason=reason, from_version=from_version))


def reset_reference(streams: Optional[list[str]] = STREAMS_ARG, group: Optional[list[str]] = GROUP_OPT,
                    rebase: bool = typer.Option(False, help="Take the recent losses as the reference (a new normal)."),
                    reason: Optional[str] = REASON_OPT, by: Optional[str] = BY_OPT,
                    project: Optional[Path] = PROJECT_OPT) -> None:
    """Reset (or --rebase) the streams' reference at the next tick."""
    target = _target(streams, group)
    _run(project, lambda ops: ops.reset_reference(**target, rebase=rebase, by=actor(by), reason=reason))


@abnormal_app.command("mark")
def abnormal_mark(start: str = typer.Argument(..., help="Start (data time, inclusive), e.g. 2026-12-24."),
                  end: str = typer.Argument(..., help="End (data time, exclusive), e.g. 2026-12-27."),
                  streams: Optional[list[str]] = typer.Argument(None, help="unique_ids; none and no --group: the "
                                                                           "whole fleet.", show_default=False),
                  group: Optional[list[str]] = GROUP_OPT, reason: Optional[str] = REASON_OPT,
                  by: Optional[str] = BY_OPT, project: Optional[Path] = PROJECT_OPT) -> None:
    """Mark a period abnormal for streams, a group, or the whole fleet."""
    chosen = _group(group)
    if streams and chosen:
        _fail("name streams or a group, not both (neither: the whole fleet)")
    _run(project, lambda ops: ops.mark_abnormal(start, end, list(streams) if streams else None, group=chosen,
                                                by=actor(by), reason=reason))


@abnormal_app.command("cancel")
def abnormal_cancel(ids: list[int] = typer.Argument(..., help="Abnormal period ids (mlma abnormal list)."),
                    reason: Optional[str] = REASON_OPT, by: Optional[str] = BY_OPT,
                    project: Optional[Path] = PROJECT_OPT) -> None:
    """Take back abnormal periods."""
    _run(project, lambda ops: ops.cancel_abnormal(ids, by=actor(by), reason=reason))


@abnormal_app.command("list")
def abnormal_list(all_: bool = typer.Option(False, "--all", help="Include cancelled periods."),
                  stream: Optional[str] = typer.Option(None, help="Only this stream's periods and the fleet's."),
                  limit: int = typer.Option(50, min=1, max=500, help="Periods per page (newest first)."),
                  page: int = typer.Option(1, min=1, help="Which page."),
                  as_json: bool = typer.Option(False, "--json", help="Print JSON."),
                  project: Optional[Path] = PROJECT_OPT) -> None:
    """List abnormal periods, newest first."""
    from mlma.store.queries import QueryError, abnormal_periods

    with _operations(project) as ops:
        try:
            found = abnormal_periods(ops.store, active=not all_, stream=stream, page=page, per_page=limit)
        except QueryError as exc:
            _fail(str(exc))
    periods = found["items"]
    if found["pages"] > 1:  # on stderr, so that --json stays a list a script reads
        typer.echo(f"note: the newest {len(periods)} of {found['total']:,} periods (page {page} of "
                   f"{found['pages']}): --page, --limit", err=True)
    if as_json:
        return _print_json(periods)
    table = Table("id", "scope", "stream", "start", "end", "by", "reason", "cancelled",
                  title=f"abnormal periods: {len(periods)} of {found['total']:,}"
                        + (f" (page {page} of {found['pages']}: --page, --limit)" if found["pages"] > 1 else ""))
    for p in periods:
        _row(table, str(p["id"]), p["scope"], p["unique_id"] or "-", p["start"], p["end"], p["created_by"],
                      p["reason"] or "", p["cancelled_at"] or "")
    console.print(table)


def silence(ids: list[int] = typer.Argument(..., help="Escalation ids."),
            for_: Optional[str] = typer.Option(None, "--for", help="How long, e.g. 4h, 2d."),
            until: Optional[str] = typer.Option(None, help="Or until when (ISO date-time, UTC)."),
            reason: Optional[str] = REASON_OPT, by: Optional[str] = BY_OPT,
            project: Optional[Path] = PROJECT_OPT) -> None:
    """Hide escalations for a while."""
    if for_ is not None and until is not None:
        _fail("give --for DURATION (e.g. 4h) or --until TIME, not both")
    if for_ is None and until is None:
        _fail("give --for DURATION (e.g. 4h) or --until TIME")
    _run(project, lambda ops: ops.silence(ids, for_ or until, by=actor(by), reason=reason))


def ack(ids: list[int] = typer.Argument(..., help="Escalation ids."), reason: Optional[str] = REASON_OPT,
        by: Optional[str] = BY_OPT, project: Optional[Path] = PROJECT_OPT) -> None:
    """Acknowledge escalations: someone is looking at them."""
    _run(project, lambda ops: ops.acknowledge(ids, by=actor(by), reason=reason))


def resolve(ids: list[int] = typer.Argument(..., help="Escalation ids."), reason: Optional[str] = REASON_OPT,
            by: Optional[str] = BY_OPT, project: Optional[Path] = PROJECT_OPT) -> None:
    """Resolve escalations: dealt with."""
    _run(project, lambda ops: ops.resolve(ids, by=actor(by), reason=reason))


def reopen(ids: list[int] = typer.Argument(..., help="Escalation ids."), reason: Optional[str] = REASON_OPT,
           by: Optional[str] = BY_OPT, project: Optional[Path] = PROJECT_OPT) -> None:
    """Re-open escalations."""
    _run(project, lambda ops: ops.reopen(ids, by=actor(by), reason=reason))


def approve(stream: str = typer.Argument(..., help="unique_id"), reason: Optional[str] = REASON_OPT,
            by: Optional[str] = BY_OPT, project: Optional[Path] = PROJECT_OPT) -> None:
    """Approve the stream's challenger that waits for approval (promoted at the next tick)."""
    _run(project, lambda ops: ops.approve(stream, by=actor(by), reason=reason))


def reject(stream: str = typer.Argument(..., help="unique_id"), reason: Optional[str] = REASON_OPT,
           by: Optional[str] = BY_OPT, project: Optional[Path] = PROJECT_OPT) -> None:
    """Reject the stream's challenger that waits for approval (dropped at the next tick)."""
    _run(project, lambda ops: ops.reject(stream, by=actor(by), reason=reason))


def require_approval(streams: Optional[list[str]] = STREAMS_ARG, group: Optional[list[str]] = GROUP_OPT,
                     off: bool = typer.Option(False, "--off", help="Stop requiring approval."),
                     reason: Optional[str] = REASON_OPT, by: Optional[str] = BY_OPT,
                     project: Optional[Path] = PROJECT_OPT) -> None:
    """Make promotions of re-trained models wait for a person's approval (or, with --off, stop that)."""
    target = _target(streams, group)
    _run(project, lambda ops: ops.require_approval(**target, required=not off, by=actor(by), reason=reason))


def _number(text: Optional[str], kind, option: str):
    if text is None or text == "default":
        return text
    try:
        return kind(text)
    except ValueError:
        raise typer.BadParameter(f"{option} takes a {'whole ' if kind is int else ''}number or 'default', "
                                 f"got {text!r}") from None


def set_params(streams: Optional[list[str]] = STREAMS_ARG, group: Optional[list[str]] = GROUP_OPT,
               delta: Optional[str] = typer.Option(None, help="Relevance margin >= 0, or 'default'."),
               cooldown_ticks: Optional[str] = typer.Option(None, help="Ticks without a new trigger after a "
                                                                       "re-training, or 'default'."),
               reason: Optional[str] = REASON_OPT, by: Optional[str] = BY_OPT,
               project: Optional[Path] = PROJECT_OPT) -> None:
    """Override the streams' monitoring parameters ('default' restores the project's value)."""
    params = {}
    for key, text, kind, option in (("delta", delta, float, "--delta"),
                                    ("cooldown_ticks", cooldown_ticks, int, "--cooldown-ticks")):
        value = _number(text, kind, option)
        if value is not None:
            params[key] = None if value == "default" else value
    if not params:
        _fail("give --delta and/or --cooldown-ticks")
    target = _target(streams, group)
    _run(project, lambda ops: ops.set_params(**target, params=params, by=actor(by), reason=reason))


def cancel_action(ids: list[int] = typer.Argument(..., help="Queued action ids (mlma actions --status pending)."),
                  reason: Optional[str] = REASON_OPT, by: Optional[str] = BY_OPT,
                  project: Optional[Path] = PROJECT_OPT) -> None:
    """Take back queued actions that no tick has carried out yet."""
    _run(project, lambda ops: ops.cancel_action(ids, by=actor(by), reason=reason))


# -- reads ---------------------------------------------------------------------------------------------------
def escalations(status: str = typer.Option("open", help="open, acknowledged, silenced or resolved (comma-separated)."),
                group_by: Optional[str] = typer.Option(None, help="Attribute that groups streams; '' for none. "
                                                       "Default: mlma.toml's [queue] group_by (city), as the "
                                                       "dashboard's queue."),
                limit: int = typer.Option(20, min=1, max=500, help="Items to show."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON."),
                project: Optional[Path] = PROJECT_OPT) -> None:
    """The engineer's queue: escalations grouped (same kind, tick and group) and ranked by severity and size."""
    from mlma.store.queries import QueryError, escalation_queue

    grouping = _config(project).queue.grouping() if group_by is None else group_by.strip() or None
    with _operations(project) as ops:
        try:
            queue = escalation_queue(ops.store, status=[s.strip() for s in status.split(",") if s.strip()],
                                     group_by=grouping, per_page=limit, members=5)
        except QueryError as exc:
            _fail(str(exc))
    if as_json:
        return _print_json(queue)
    table = Table("sev", "kind", "scope", "streams", "size", "tick", "ids", "top members / message",
                  title=f"{queue['total']} {'/'.join(queue['status'])} item(s)")
    for item in queue["items"]:
        ids = item["ids"]
        members = ", ".join(m["unique_id"] or "fleet" for m in item["members"]) + (
            f" +{item['more']}" if item["more"] else "")
        _row(table, str(item["severity"]), item["kind"], item["scope"], str(item["count"]),
                      f"{item['size']:.4g}" if item["size"] is not None else "-", str(item["tick"]),
                      ",".join(map(str, ids[:6])) + ("..." if len(ids) > 6 else ""),
                      f"{members}: {item['message']}" + (
                          f" (+{item['other_messages']} other message(s); --json gives each member's)"
                          if item["other_messages"] else ""))
    console.print(table)


def audit(limit: int = typer.Option(20, min=1, max=500, help="Entries to show (newest first)."),
          actor_: Optional[str] = typer.Option(None, "--actor", help="Only this actor, e.g. user:ana or agent."),
          action: Optional[str] = typer.Option(None, help="Only this action, e.g. pin."),
          target: Optional[str] = typer.Option(None, help="Only this target, e.g. stream:zone-417."),
          stream: Optional[str] = typer.Option(None, help="Only entries about this stream: alone, or among the "
                                                           "streams or group an action touched."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON."),
          project: Optional[Path] = PROJECT_OPT) -> None:
    """The audit log: who did what, when and why."""
    from mlma.store.queries import QueryError, audit_page

    with _operations(project) as ops:
        try:
            page = audit_page(ops.store, actor=actor_, action=action, target=target, stream=stream,
                              per_page=max(1, min(limit, 500)))
        except QueryError as exc:
            _fail(str(exc))
    if as_json:
        return _print_json(page["items"])
    table = Table("#", "when (UTC)", "who", "action", "target", "parameters", "reason",
                  title=f"audit log: {page['total']} entries")
    for a in page["items"]:
        _row(table, str(a["id"]), a["at"][:19].replace("T", " "), a["actor"], a["action"], a["target"] or "",
                      json.dumps(a["params"]), a["reason"] or "")
    console.print(table)


def versions(stream: str = typer.Argument(..., help="unique_id"),
             as_json: bool = typer.Option(False, "--json", help="Print JSON."),
             project: Optional[Path] = PROJECT_OPT) -> None:
    """A stream's model versions, the one serving marked, with their training data and challenger checks: what
    `mlma rollback --to-version` and `mlma promote` choose from."""
    with _operations(project) as ops:
        try:
            found = ops.registry.versions(stream)
            serving = ops.registry.champion(stream)
        except KeyError as exc:
            _fail(str(exc.args[0]) if exc.args else str(exc))
    serving = None if serving is None else serving.version
    if as_json:
        return _print_json([{"version": v.version, "serving": v.version == serving, "created_at": str(v.created_at),
                             "created_tick": v.created_tick, "spec": v.spec, "train_start": str(v.train_start),
                             "train_end": str(v.train_end), "check": dict(v.check),
                             "fallback_reason": v.metrics.get("fallback_reason"),
                             "artifact_pruned_at": None if v.artifact_pruned_at is None else str(v.artifact_pruned_at)}
                            for v in found])
    table = Table("version", "serving", "created (UTC)", "tick", "model", "trained on", "challenger check",
                  title=f"{stream}: {len(found)} model version(s)")
    for v in found:
        check = dict(v.check)
        verdict = check.get("result") or ""
        mine, theirs = check.get("challenger_mean_loss"), check.get("champion_mean_loss")
        losses = (f" (mean loss {mine:.4g} vs {theirs:.4g})"
                  if isinstance(mine, (int, float)) and isinstance(theirs, (int, float)) else "")
        # A fall-back says so: the version is named after the requested model, but serves a simpler one.
        fell_back = v.metrics.get("fallback_reason")
        model = f"{v.spec} (fell back: {fell_back})" if fell_back else v.spec
        if v.artifact_pruned_at is not None:  # version retention ([registry] keep_versions): history only
            model += f" (artifact pruned {v.artifact_pruned_at:%Y-%m-%d})"
        _row(table, str(v.version), "yes" if v.version == serving else "", f"{v.created_at:%Y-%m-%d %H:%M}",
                      "" if v.created_tick is None else str(v.created_tick), model,
                      f"{v.train_start} to {v.train_end}" if v.train_end is not None else "", verdict + losses)
    console.print(table)


def actions(status: Optional[str] = typer.Option(None, help="pending, applied or cancelled."),
            stream: Optional[str] = typer.Option(None, help="Only this stream."),
            limit: int = typer.Option(20, min=1, max=500, help="Actions to show (newest first)."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON."),
            project: Optional[Path] = PROJECT_OPT) -> None:
    """Queued and carried-out stream actions (re-trainings, reference resets, approvals)."""
    from mlma.store.queries import QueryError, actions_page

    with _operations(project) as ops:
        try:
            page = actions_page(ops.store, status=status, stream=stream, per_page=max(1, min(limit, 500)))
        except QueryError as exc:
            _fail(str(exc))
    if as_json:
        return _print_json(page["items"])
    table = Table("id", "stream", "kind", "parameters", "status", "by", "reason", "outcome",
                  title=f"{page['total']} action(s)")
    for a in page["items"]:
        _row(table, str(a["id"]), a["unique_id"], a["kind"], json.dumps(a["params"]),
                      a["status"] + (f" (tick {a['applied_tick']})" if a["applied_tick"] is not None else ""),
                      a["created_by"], a["reason"] or "", a["outcome"] or "")
    console.print(table)
