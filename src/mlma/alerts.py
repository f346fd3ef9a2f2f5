"""Outgoing alerts: webhooks to Slack-compatible and generic receivers when escalations open.

A tick's escalations are items for the engineer's queue; this module also pushes them out, with the ideas
of Prometheus' Alertmanager so that 40 broken zones in one city make one message, not 40:

- **Groups.** Each receiver groups the open escalations by labels (``group_by``, default ``["kind"]``;
  e.g. ``["kind", "city"]``, where ``city`` is a stream attribute). A group is one message.
- **De-duplication.** A group is sent when it has a member (an escalation id) that the last notification
  sent to that receiver for that group did not list; a group whose members were all notified before is
  sent again only as a reminder, once ``repeat_interval`` has passed. Deliveries are recorded in the
  store's ``alert_notifications`` table, so the next ``mlma tick`` process knows what was sent before.
  There is no ``group_wait``: a tick already is a batch.
- **One sender across processes.** Before posting, a delivery claims its group in the store (a lease listing
  its escalation ids, :meth:`mlma.store.notifications.NotificationLog.claim`), so two processes on one store
  (``mlma run`` between its ticks, an ``mlma tick`` or the API server after theirs) never both post it: the
  second one skips a group whose claim lists all its members, waits for a claim that lacks some (without
  holding a delivery thread), and skips a group found sent meanwhile. The claim is released with the
  outcome recorded; one whose process died lapses after :func:`claim_seconds` (longer than the receiver's
  attempts and waits can take); the process's own leftover claim is taken over at once. A claim that cannot
  be written (the store is down, or busy beyond its timeout) does not hold a page back: it is posted without
  one (a warning is logged; two processes may then both post it).
- **Silences.** Only escalations whose status is ``open`` are sent (a silence whose ``silenced_until``
  has passed counts as open again); acknowledged, resolved and silenced ones are not. The status is read
  from the store when the notifications are planned.
- **Never blocking the tick.** :meth:`Notifier.notify` queues the work and returns at once; background
  threads plan, post (each attempt with a deadline, retried with exponential back-off, honouring
  ``Retry-After`` on 429 and 503) and record. :meth:`Notifier.close` waits a bounded time at the end of
  the process.

HTTP goes through :mod:`urllib.request` (no extra dependency); redirects are not followed, and only
``http`` and ``https`` URLs are accepted. See docs/alerts.md for the ``[[alerts.receivers]]`` section of
``mlma.toml`` and the payloads.

Examples
--------
>>> receivers = parse_receivers([
...     {"name": "ops-slack", "url": "https://hooks.slack.com/services/T0/B0/XYZ", "format": "slack",
...      "group_by": ["kind", "city"], "min_severity": 2, "repeat_interval": "4h"},
...     {"name": "pager", "url_env": "MLMA_PAGER_URL", "kinds": ["data-quality", "silent"]},
... ])
>>> receivers[0]  # doctest: +ELLIPSIS
Receiver(name='ops-slack', target='https://hooks.slack.com/...', format='slack', min_severity=2, kinds=(), ...)
>>> receivers[0].group_by, receivers[0].repeat_interval
(('kind', 'city'), 14400.0)
>>> parse_receivers([{"name": "x", "url": "https://example.org/hook", "min_severty": 2}])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mlma.alerts.AlertConfigError: mlma.toml: [[alerts.receivers]] #1 ('x'): unknown key 'min_severty'; known: name, ...

With a store (the tick process)::

    notifier = Notifier(store, receivers)
    notifier.notify(tick=k)          # after the tick committed; returns at once
    ...
    notifier.close(timeout=10)       # at the end of the process: waits at most 10 s
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import datetime as dt
import email.utils
import hashlib
import http.client
import json
import logging
import math
import operator
import os
import queue
import re
import socket
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlma.escalations import ESCALATION_KINDS
from mlma.store.notifications import Claim, NotificationLog, OpenEscalation
from mlma.visible import HIDDEN_CHARS, UNSTORABLE_IN_NAME, visible

log = logging.getLogger("mlma.alerts")

UTC = dt.timezone.utc
#: Payload formats: Alertmanager-like JSON, or Slack's incoming-webhook JSON (``text`` and ``blocks``).
FORMATS = ("generic", "slack")
#: Escalation severities, low to high.
SEVERITIES = (1, 2, 3)
#: HTTP answers worth another attempt; any other 4xx means the request itself is wrong.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Answers whose ``Retry-After`` header is honoured.
RETRY_AFTER_STATUSES = frozenset({429, 503})
#: Labels every alert has; stream attributes are added as further labels.
BUILTIN_LABELS = ("stream", "kind", "severity")

_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_ERROR_CHARS = 2000
#: Upper bounds of ``timeout_seconds`` and of the back-off settings: an hour for one attempt, a day for one
#: wait. Far beyond them the timers and waits of :mod:`threading` overflow (``threading.TIMEOUT_MAX``).
_MAX_TIMEOUT = 3600.0
_MAX_BACKOFF = 86400.0
#: The shortest ``repeat_interval``, in seconds. A reminder is due once the interval has passed since the group
#: was last sent: with ``"0s"`` every open group was paged again at every ``notify`` (every round of ``mlma run``).
MIN_REPEAT_SECONDS = 60.0
_LINE_CHARS = 300
#: Slack's limits: the text of a text object (a section's, a context element's) and of a header, in characters.
_SLACK_SECTION_CHARS = 3000
_SLACK_HEADER_CHARS = 150
#: Slack's limits for one message: blocks, and characters of ``text`` (it truncates beyond 40,000; kept under).
_SLACK_BLOCKS = 50
_SLACK_TEXT_CHARS = 38_000
#: What a cut of Slack text must not split: an escape, a shown hidden character, a link ``<url|text>`` (in
#: escaped text, ``<`` and ``>`` only come from links).
_SLACK_TOKEN = re.compile(r"&(?:amp|lt|gt);|\\u[0-9A-F]{4}|<[^<>]*>")
#: The same in plain text (a header): a shown hidden character only.
_SHOWN_TOKEN = re.compile(r"\\u[0-9A-F]{4}")
#: Seconds a delivery's claim lives beyond what its attempts and waits can take (resolving the host's name,
#: recording the outcome); see :func:`claim_seconds`.
CLAIM_MARGIN_SECONDS = 60.0
#: How often the deliveries waiting for other processes' claims of their groups look again, in seconds (one read
#: of the store for all of them, in a thread of its own: a waiting delivery holds no delivery thread).
CLAIM_POLL_SECONDS = 0.5
#: A delivery claims its group together with up to this many more groups of its receiver queued to start next,
#: in one store transaction: a fleet-wide event of thousands of groups costs about one write per group (its
#: outcome, which releases its claim), not three.
CLAIM_AHEAD = 31


class AlertConfigError(ValueError):
    """A receiver's configuration is invalid; the message names the source, the receiver and the key."""


# -- configuration ------------------------------------------------------------------------------------------
def parse_duration(value: Any, what: str = "duration") -> float:
    """Seconds from a number of seconds or a text such as ``"4h"``, ``"30m"``, ``"1h30m"``, ``"2d"``.

    >>> parse_duration("1h30m"), parse_duration(90), parse_duration("250ms")
    (5400.0, 90.0, 0.25)
    >>> parse_duration("soon")
    Traceback (most recent call last):
    ...
    mlma.alerts.AlertConfigError: duration must be seconds (a number) or a text such as '4h', '30m', '1h30m', got 'soon'
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise AlertConfigError(f"{what} must be seconds (a number) or a text such as '4h', '30m', '1h30m', "
                                   f"got {value!r}")
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise AlertConfigError(f"{what} must be seconds (a number) or a text such as '4h', '30m', '1h30m', "
                               f"got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise AlertConfigError(f"{what} must be a finite duration >= 0, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Receiver:
    """Where alerts go, and how they are grouped and delivered.

    Parameters
    ----------
    name
        Unique name; the store's ``alert_notifications.receiver``.
    url
        ``http(s)://`` address of the webhook. Leave empty and name ``url_env`` to keep a secret URL (a
        Slack webhook is one) out of ``mlma.toml``: the variable is read at each delivery.
    url_env
        Name of the environment variable that holds the URL.
    format
        ``"generic"`` (Alertmanager-like JSON) or ``"slack"`` (``text`` and ``blocks``; also understood by
        Mattermost and Rocket.Chat).
    min_severity
        Only escalations at least this severe (1 low - 3 high).
    kinds
        Only these escalation kinds (empty: all).
    group_by
        Labels that make a group: ``kind``, ``severity``, ``stream`` or any stream attribute (``city``).
        An empty tuple puts all of a receiver's escalations in one group.
    repeat_interval
        Seconds before a group whose members were all notified is sent again, as a reminder.
    headers
        Extra HTTP headers (e.g. ``Authorization``), of Latin-1 text; never logged or recorded.
    timeout_seconds
        Deadline of each attempt once connected: sending and the whole answer (at most an hour).
        Resolving the host's name is not bounded by it, and connecting takes at most this long for each
        of the host's addresses.
    attempts
        Attempts in all, the first included.
    backoff_seconds, max_backoff_seconds
        The wait after the n-th failed attempt is ``backoff_seconds * 2 ** (n - 1)``, at most
        ``max_backoff_seconds``; a ``Retry-After`` answer (429, 503) replaces it, with the same cap. Both are
        at most a day.
    max_alerts
        Most alerts listed in one message; the payload says how many more there are.
    """

    name: str
    url: str = field(default="", repr=False)
    url_env: str = field(default="", repr=False)
    format: str = "generic"
    min_severity: int = 1
    kinds: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ("kind",)
    repeat_interval: float = 4 * 3600.0
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    timeout_seconds: float = 5.0
    attempts: int = 4
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    max_alerts: int = 50

    def __post_init__(self) -> None:
        def bad(key: str, expected: str, value: Any) -> AlertConfigError:
            return AlertConfigError(f"{key} must be {expected}, got {value!r}")

        if not isinstance(self.name, str) or not self.name.strip():
            raise bad("name", "a non-empty text", self.name)
        if HIDDEN_CHARS.search(self.name) or UNSTORABLE_IN_NAME.search(self.name):
            # Stored with each delivery, served as a /metrics label and logged: a NUL went out as a raw byte.
            raise bad("name", "a text without control, invisible or direction characters", self.name)
        if bool(self.url) == bool(self.url_env):
            raise AlertConfigError("give exactly one of url (the webhook address) and url_env (the environment "
                                   f"variable that holds it); got url={_shown_url(self.url)!r}, "
                                   f"url_env={_shown_env(self.url_env)!r}")
        if self.url:
            object.__setattr__(self, "url", check_url(self.url, "url"))  # spaces around it dropped
        if self.url_env and (not isinstance(self.url_env, str) or not _ENV_NAME.match(self.url_env)):
            if isinstance(self.url_env, str) and re.search(r"[:/@]", self.url_env):
                # The URL itself where its variable's name belongs: its path is the secret, never echo it.
                raise AlertConfigError(f"url_env must be the name of an environment variable such as "
                                       f"MLMA_SLACK_URL, got what looks like an address "
                                       f"({_shown_env(self.url_env)!r}): put the URL in that variable, or "
                                       "give it as url")
            raise bad("url_env", "an environment variable name such as MLMA_SLACK_URL", self.url_env)
        if self.format not in FORMATS:
            raise bad("format", " or ".join(repr(f) for f in FORMATS), self.format)
        if isinstance(self.min_severity, bool) or self.min_severity not in SEVERITIES:
            raise bad("min_severity", "1, 2 or 3", self.min_severity)
        kinds = _as_tuple(self.kinds)
        if kinds is None or not all(isinstance(k, str) for k in kinds):
            raise bad("kinds", "a list of escalation kinds", self.kinds)
        unknown = [k for k in kinds if k not in ESCALATION_KINDS]
        if unknown:
            raise AlertConfigError(f"kinds: unknown escalation kind {unknown[0]!r}; known: "
                                   f"{', '.join(ESCALATION_KINDS)}")
        group_by = _as_tuple(self.group_by)
        if group_by is None or not all(isinstance(g, str) and _LABEL_NAME.match(g) for g in group_by):
            raise bad("group_by", "a list of label names (kind, severity, stream or a stream attribute such as "
                      "city)", self.group_by)
        if len(set(group_by)) != len(group_by):
            raise bad("group_by", "a list without repeats", self.group_by)
        headers = self.headers.items() if isinstance(self.headers, Mapping) else self.headers
        try:
            headers = tuple((str(k), v) for k, v in headers)
        except (TypeError, ValueError):
            raise bad("headers", "a table of header names to texts", "...") from None
        for k, v in headers:
            if not isinstance(v, str) or not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", k) or "\n" in v or "\r" in v:
                raise AlertConfigError(f"headers: {k!r} must be a header name with a one-line text value")
            if k.lower() in _FRAMING_HEADERS:
                # Set by the HTTP client from the request itself: a Content-Length of 5 cut every payload to
                # `{"ver` and a chunked Transfer-Encoding emptied it, each recorded as sent.
                raise AlertConfigError(f"headers: {k!r} is set by mlma for each request (it frames the message or "
                                       f"names the server); leave it out")
            try:
                v.encode("latin-1")
            except UnicodeEncodeError:
                # http.client sends header values as Latin-1: any other character (a pasted '…') failed every
                # delivery with an error naming no header. The value is a secret: it is not echoed.
                raise AlertConfigError(f"headers: {k!r} must have a value of Latin-1 characters (no '…', curly "
                                       "quotes or other pasted typography)") from None
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "group_by", group_by)
        object.__setattr__(self, "headers", headers)
        for key, low, high in (("repeat_interval", MIN_REPEAT_SECONDS, math.inf), ("backoff_seconds", 0, _MAX_BACKOFF),
                               ("max_backoff_seconds", 0, _MAX_BACKOFF)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high:
                if key == "repeat_interval":
                    raise AlertConfigError(_too_soon(value))
                raise bad(key, f"a number of seconds from 0 to {high:g}", value)
            object.__setattr__(self, key, float(value))
        value = self.timeout_seconds
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 < value <= _MAX_TIMEOUT:
            raise bad("timeout_seconds", f"a number > 0 and at most {_MAX_TIMEOUT:g} (seconds)", value)
        object.__setattr__(self, "timeout_seconds", float(value))
        for key, low, high in (("attempts", 1, 100), ("max_alerts", 1, 10_000)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise bad(key, f"a whole number from {low} to {high}", value)

    def __repr__(self) -> str:
        shown = [f"name={self.name!r}", f"target={self.target!r}"]
        shown += [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                  if f.repr and f.name != "name"]
        return f"Receiver({', '.join(shown)})"

    @property
    def target(self) -> str:
        """The URL with its path hidden (webhook paths are secrets), or ``$VARIABLE``; for logs and errors."""
        return f"${self.url_env}" if self.url_env else _shown_url(self.url)

    def resolved_url(self) -> str:
        """The webhook URL; ``url_env`` is read now. Raises :class:`AlertConfigError` if it is unset or invalid."""
        if not self.url_env:
            return self.url
        url = os.environ.get(self.url_env, "").strip()
        if not url:
            raise AlertConfigError(f"receiver {self.name!r}: environment variable {self.url_env} is not set")
        return check_url(url, f"environment variable {self.url_env}")

    def accepts(self, kind: str, severity: int) -> bool:
        """Whether an escalation of this kind and severity goes to this receiver."""
        return severity >= self.min_severity and (not self.kinds or kind in self.kinds)


def _too_soon(value: Any) -> str:
    return (f"repeat_interval must be at least {MIN_REPEAT_SECONDS:g} seconds ('1m'): every open group whose "
            f"interval has passed is sent again at every notify (every round of mlma run), got {value!r}")


def _as_tuple(value: Any) -> tuple | None:
    if isinstance(value, (str, bytes, Mapping)):
        return None
    try:
        return tuple(value)
    except TypeError:
        return None


def _shown_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # out of range, not a number: the address is refused where it is checked
        return "<invalid url>"
    if port:
        host += f":{port}"
    rest = "/..." if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{rest}" if parts.scheme else "<invalid url>"


def _shown_env(value: Any) -> Any:
    """A ``url_env`` value for an error: a name as it is, but what looks like an address (the URL itself put
    where the variable's name belongs) as :func:`_shown_url` shows it."""
    if isinstance(value, str) and re.search(r"[:/@]", value):
        return _shown_url(value)
    return value


#: Headers the HTTP client sets from the request (its body, the URL's host, the connection): a receiver's own would
#: contradict them.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection", "content-encoding",
                              "te", "trailer", "upgrade", "keep-alive"})


def _secrets(url: str, headers: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """The secret texts of a request, each with what it is shown as: the URL itself (as :func:`_shown_url`),
    its path, query, fragment and user info, and the configured header values (``...``).

    A header value counts whole and, after an authentication scheme (``Bearer``, ``Basic``, ``Token`` ...),
    its credentials alone, since a receiver may echo only the token it refused; a Basic credential also as
    the ``user:password`` it decodes to, and that password. Texts shorter than :data:`_MIN_SECRET_CHARS`
    are no secrets worth the name, and cutting them out (``1``, ``ops``) would garble every error text.

    >>> sorted(_secrets("", [("Authorization", "Bearer s3cr3t-token"), ("X-Team", "ops")]).items())
    [('Bearer s3cr3t-token', '...'), ('s3cr3t-token', '...')]
    """
    found: dict[str, str] = {}
    if url:
        try:
            parts = urllib.parse.urlsplit(url)
            hidden = [parts.query, parts.fragment, parts.password or "", parts.username or ""]
        except ValueError:
            return {url: "...", **_header_secrets(headers)}
        if parts.path not in ("", "/"):
            hidden += [parts.path, urllib.parse.unquote(parts.path)]
        found[url] = _shown_url(url)
        found.update({s: "..." for s in hidden if s and s != url})
    return {**_header_secrets(headers), **found}


#: Shortest text taken for a header's secret (see :func:`_secrets`).
_MIN_SECRET_CHARS = 4


def _header_secrets(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    found = []
    for _, value in headers:
        value = value.strip()
        found.append(value)
        scheme, _, credentials = value.partition(" ")
        credentials = credentials.strip()
        if credentials and re.fullmatch(r"[A-Za-z][A-Za-z0-9._~+-]*", scheme):
            found.append(credentials)
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(credentials, validate=True).decode("latin-1")
                except ValueError:  # binascii.Error is one: not base64, so nothing more to hide
                    decoded = ""
                found += [decoded, decoded.partition(":")[2]]
    return {s: "..." for s in found if len(s) >= _MIN_SECRET_CHARS}


def _scrub(text: str, url: str, headers: Sequence[tuple[str, str]] = (), *, limit: int | None = None) -> str:
    """``text`` (an exception's, or a receiver's answer) without the secrets of the request (:func:`_secrets`):
    the URL's path, query, fragment and user info become ``...``, and so do the configured header values.
    Webhook paths and header values are secrets, and error texts end up in the log and in
    ``alert_notifications.error``.

    With ``limit``, only the text's first ``limit`` characters are kept, a secret that starts among them
    replaced whole (``text`` must then run at least the longest secret's length past ``limit`` when it was
    cut short: a secret cut off at its end is not recognised). Secrets that overlap are hidden as one.

    >>> _scrub("Cannot POST /services/T0/s3cret", "https://hooks.example.com/services/T0/s3cret")
    'Cannot POST ...'
    >>> _scrub("invalid token s3cr3t-token", "https://hooks.example.com/h", [("Authorization", "Bearer s3cr3t-token")])
    'invalid token ...'
    """
    secrets = _secrets(url, headers)
    spans: list[list[int]] = []
    for secret in secrets:
        start = text.find(secret)
        while start != -1:
            spans.append([start, start + len(secret)])
            start = text.find(secret, start + 1)
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    end_of_text = len(text) if limit is None else min(len(text), limit)
    out, pos = [], 0
    for start, end in merged:
        if start >= end_of_text:
            break
        out += [text[pos:start], secrets.get(text[start:end], "...")]
        pos = end
    out.append(text[pos:max(pos, end_of_text)])
    return "".join(out)


def _answer_text(exc: urllib.error.HTTPError, url: str, headers: Sequence[tuple[str, str]]) -> str:
    """The first 300 characters of a receiver's error answer, without the request's secrets: a receiver may
    echo the path it was posted to (``Cannot POST /services/...``) or the credential it refused
    (``invalid token ...``). Read far enough past them that a secret starting among them is read whole."""
    longest = max((len(s) for s in _secrets(url, headers)), default=0)
    try:
        # At most 4 bytes a character: what is read holds at least 300 + longest characters when it is cut.
        raw = exc.read(4 * (300 + longest)).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body is only a hint for the error text
        return ""
    return _scrub(raw, url, headers, limit=300).strip()


def _error_text(exc: BaseException, url: str, headers: Sequence[tuple[str, str]] = ()) -> str:
    """``exc`` for the log and ``alert_notifications.error``, without the request's secrets. The text of
    http.client's ``InvalidURL`` (and of the ``ValueError`` of a URL it cannot encode) quotes the whole URL
    in escaped form, which :func:`_scrub` would not find: those are shown as their type and the masked URL."""
    if isinstance(exc, (ValueError, http.client.InvalidURL)):
        return f"{type(exc).__name__} ({_shown_url(url) if url else 'no address'})"
    return f"{type(exc).__name__}: {_scrub(str(exc), url, headers)}"


def _quotes_secret(exc: BaseException, url: str, headers: Sequence[tuple[str, str]] = ()) -> bool:
    """Whether ``exc`` or an exception it was raised from would show a secret of the request (its URL's, a
    header value) in a traceback."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ValueError, http.client.InvalidURL)) or _scrub(str(exc), url, headers) != str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def check_url(url: Any, what: str) -> str:
    """``url`` (without spaces around it) if it is an http(s) address with a host and a usable port, else an
    :class:`AlertConfigError` naming ``what``.

    >>> check_url(" https://hooks.example.com/x ", "url")
    'https://hooks.example.com/x'
    >>> check_url("http://127.0.0.1:99999/hook", "url")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mlma.alerts.AlertConfigError: url must be an http:// or https:// address, got one that cannot be used (Port ...)
    """
    if not isinstance(url, str):
        raise AlertConfigError(f"{what} must be an http:// or https:// address, got {url!r}")
    # Spaces around it (a paste into mlma.toml) are dropped, as urllib drops them. One inside it, or a control
    # character: urlsplit silently drops tabs and newlines, and http.client refused the URL at every delivery
    # with an error that quotes it whole. The URL is a secret: it is not echoed.
    url = url.strip()
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in url):
        raise AlertConfigError(f"{what} must be an http:// or https:// address without spaces or control "
                               "characters (a tab or line break from a paste?)")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        # urlsplit's complaint about the netloc quotes it, user:password@ included.
        detail = "its host part has characters that are not allowed" if "netloc" in str(exc) else str(exc)
        raise AlertConfigError(f"{what} must be an http:// or https:// address, got one that cannot be used "
                               f"({detail})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AlertConfigError(f"{what} must be an http:// or https:// address with a host, got {_shown_url(url)!r}")
    if "@" in parts.netloc:
        # urllib does not send user:password@ as credentials: every delivery failed to resolve the host.
        raise AlertConfigError(f"{what} must be an http:// or https:// address without a user name or password "
                               "(user:password@host); send credentials in headers, e.g. Authorization")
    return url


#: The keys of one ``[[alerts.receivers]]`` table, with the check of each value.
RECEIVER_KEYS: dict[str, tuple[str, Any]] = {
    "name": ("a non-empty text", lambda v: isinstance(v, str)),
    "url": ("an http:// or https:// address", lambda v: isinstance(v, str)),
    "url_env": ("an environment variable name", lambda v: isinstance(v, str)),
    "format": ("'generic' or 'slack'", lambda v: isinstance(v, str)),
    "min_severity": ("1, 2 or 3", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "kinds": ("a list of escalation kinds", lambda v: isinstance(v, (list, tuple))),
    "group_by": ("a list of label names", lambda v: isinstance(v, (list, tuple))),
    "repeat_interval": ("a duration such as '4h' or a number of seconds",
                        lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool)),
    "headers": ("a table of header names to texts", lambda v: isinstance(v, Mapping)),
    "timeout_seconds": ("a number of seconds", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "attempts": ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "backoff_seconds": ("a number of seconds", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "max_backoff_seconds": ("a number of seconds",
                            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "max_alerts": ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
}


def parse_receivers(items: Sequence[Mapping[str, Any]] | None, source: str = "mlma.toml") -> list[Receiver]:
    """Receivers from a list of tables (the ``[[alerts.receivers]]`` of ``mlma.toml``), validated.

    An unknown key, a value of the wrong type or a repeated name raises :class:`AlertConfigError` naming
    ``source``, the receiver's position and name, and the key. ``None`` or an empty list: no receivers.

    >>> [r.name for r in parse_receivers([{"name": "ops", "url": "http://alerts.internal:9093/hook"}])]
    ['ops']
    >>> parse_receivers([{"name": "ops", "url": "http://a.example/h", "timeout_seconds": 0}],
    ...                 source="p/mlma.toml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mlma.alerts.AlertConfigError: p/mlma.toml: [[alerts.receivers]] #1 ('ops'): timeout_seconds must be a number > 0...
    """
    if items is None:
        return []
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise AlertConfigError(f"{source}: [[alerts.receivers]] must be a list of tables, got {type(items).__name__}")
    receivers: list[Receiver] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(items, start=1):
        where = f"{source}: [[alerts.receivers]] #{position}"
        if not isinstance(item, Mapping):
            raise AlertConfigError(f"{where} must be a table of keys, got {type(item).__name__}")
        name = item.get("name")
        if isinstance(name, str) and name:
            where += f" ({name!r})"
        for key, value in item.items():
            if key not in RECEIVER_KEYS:
                raise AlertConfigError(f"{where}: unknown key {key!r}; known: {', '.join(RECEIVER_KEYS)}")
            expected, ok = RECEIVER_KEYS[key]
            if not ok(value):
                shown = "..." if key == "headers" else value
                raise AlertConfigError(f"{where}: {key} must be {expected}, got {shown!r}")
        if "name" not in item:
            raise AlertConfigError(f"{where}: missing key 'name'")
        values = dict(item)
        try:
            if "repeat_interval" in values:
                seconds = parse_duration(values["repeat_interval"], "repeat_interval")
                if seconds < MIN_REPEAT_SECONDS:  # named as written ('0s'), not as seconds
                    raise AlertConfigError(_too_soon(values["repeat_interval"]))
                values["repeat_interval"] = seconds
            for key in ("kinds", "group_by"):
                if key in values:
                    values[key] = tuple(values[key])
            if "headers" in values:
                values["headers"] = tuple(values["headers"].items())
            receiver = Receiver(**values)
        except AlertConfigError as exc:
            raise AlertConfigError(f"{where}: {exc}") from None
        if receiver.name in seen:
            raise AlertConfigError(f"{where}: name {receiver.name!r} is already used by receiver "
                                   f"#{seen[receiver.name]}")
        seen[receiver.name] = position
        receivers.append(receiver)
    return receivers


# -- what is sent ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    """One open escalation as an alert: its labels (``stream``, ``kind``, ``severity``, stream attributes)."""

    escalation_id: int
    stream: str | None
    kind: str
    severity: int
    tick: int | None
    message: str
    created_at: dt.datetime
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Notification:
    """One message to one receiver: the open members of one group, and why it is sent now.

    ``reason`` is ``"new"`` (members that the last notification of this group did not list: ``new_ids``)
    or ``"repeat"`` (all members notified before, ``repeat_interval`` passed). ``alerts`` come new first,
    then the most severe.
    """

    receiver: Receiver
    group_key: str
    group_labels: Mapping[str, str]
    alerts: tuple[Alert, ...]
    reason: str
    tick: int | None
    created_at: dt.datetime
    new_ids: frozenset[int] = frozenset()
    #: When the group's last sent notification that the plan compared with was sent (None: none was). A
    #: delivery that finds a later one sent (by another process) and listing all its members is skipped.
    last_sent_at: dt.datetime | None = field(default=None, repr=False, compare=False)

    @property
    def escalation_ids(self) -> list[int]:
        return sorted(a.escalation_id for a in self.alerts)

    @property
    def n_new(self) -> int:
        return len(self.new_ids)

    def is_new(self, alert: Alert) -> bool:
        return alert.escalation_id in self.new_ids

    def payload(self, external_url: str | None = None) -> dict[str, Any]:
        """The JSON body, in the receiver's format."""
        if self.receiver.format == "slack":
            return slack_payload(self, external_url)
        return generic_payload(self, external_url)


@dataclass(frozen=True)
class Delivery:
    """The outcome of one notification: ``sent`` or ``failed`` after ``attempts``, with the last error; or
    ``skipped`` (nothing posted nor recorded, ``error`` says why): another process claimed the group's
    delivery with all its members, or sent them after the plan.

    ``recorded`` is False if the outcome could not be written to the store (the error is logged), and for a
    skipped one.
    """

    receiver: str
    group_key: str
    escalation_ids: list[int]
    status: str
    attempts: int
    error: str | None
    http_status: int | None
    seconds: float
    recorded: bool = True


#: A group whose deliveries keep failing is tried again after 1 minute, then 2, 4, ... at most an hour apart
#: (each round of `mlma run` tried it, and recorded the failure: 96 rows a day per group at a 15-minute round,
#: one a second at `--every 1s`).
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 60.0, 3600.0


def _retry_due(failures: int, last_failed_at: dt.datetime, last_failed_ids: frozenset[int], ids: frozenset[int],
               now: dt.datetime) -> bool:
    """Whether a group whose last ``failures`` deliveries failed is tried again now: at once when it has members
    the last failed try did not list (a new escalation is said as soon as the receiver takes it), else once its
    back-off has passed.

    >>> t = dt.datetime(2025, 1, 1, 12, 0)
    >>> _retry_due(1, t, frozenset({1}), frozenset({1}), t + dt.timedelta(seconds=30))
    False
    >>> _retry_due(1, t, frozenset({1}), frozenset({1, 2}), t + dt.timedelta(seconds=30))
    True
    >>> _retry_due(3, t, frozenset({1}), frozenset({1}), t + dt.timedelta(minutes=4))
    True
    >>> _retry_due(30, t, frozenset({1}), frozenset({1}), t + dt.timedelta(minutes=59))
    False
    """
    if ids - last_failed_ids:
        return True
    wait = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2.0 ** min(failures - 1, 16))
    return (now - last_failed_at).total_seconds() >= wait


def group_key(group_by: Sequence[str], labels: Mapping[str, str]) -> str:
    """A group's key: its labels in ``group_by`` order, Alertmanager-style.

    >>> group_key(["kind", "city"], {"kind": "data-quality", "city": "Berlin", "stream": "zone-4"})
    '{kind="data-quality",city="Berlin"}'
    """
    return "{" + ",".join(f"{k}={json.dumps(labels.get(k, ''), ensure_ascii=False)}" for k in group_by) + "}"


def _iso(when: dt.datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = dict(maps[0])
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def _annotations(alert: Alert) -> dict[str, str]:
    notes = {"message": alert.message, "description": ESCALATION_KINDS.get(alert.kind, alert.kind),
             "escalation_id": str(alert.escalation_id)}
    if alert.tick is not None:
        notes["tick"] = str(alert.tick)
    return notes


def generic_payload(note: Notification, external_url: str | None = None) -> dict[str, Any]:
    """Alertmanager's webhook shape (version 4), plus an ``mlma`` object with the tick and counts."""
    shown = note.alerts[:note.receiver.max_alerts]
    annotations = [_annotations(a) for a in note.alerts]
    alerts = []
    for a, notes in zip(shown, annotations):
        identity = json.dumps([a.escalation_id, sorted(a.labels.items())], ensure_ascii=False)
        alerts.append({"status": "firing", "labels": dict(a.labels), "annotations": notes,
                       "startsAt": _iso(a.created_at), "endsAt": "0001-01-01T00:00:00Z",
                       "generatorURL": external_url or "",
                       "fingerprint": hashlib.sha256(identity.encode()).hexdigest()[:16]})
    common_annotations = _common([{k: v for k, v in n.items() if k == "description"} for n in annotations])
    return {
        "version": "4",
        "groupKey": note.group_key,
        "truncatedAlerts": len(note.alerts) - len(shown),
        "status": "firing",
        "receiver": note.receiver.name,
        "groupLabels": dict(note.group_labels),
        "commonLabels": _common([a.labels for a in note.alerts]),
        "commonAnnotations": common_annotations,
        "externalURL": external_url or "",
        "alerts": alerts,
        "mlma": {"tick": note.tick, "reason": note.reason, "escalations": len(note.alerts), "new": note.n_new},
    }


def _slack_escape(text: str) -> str:
    """Text for Slack's mrkdwn: hidden characters shown (:func:`~mlma.visible.visible`), ``&``, ``<`` and ``>``
    escaped."""
    return visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int, tokens: re.Pattern = _SLACK_TOKEN) -> str:
    r"""``text`` in at most ``limit`` characters, an ellipsis marking a cut, which never splits an escape
    (``&amp;``), a shown character (``\u202E``) or a link (``<url|dashboard>``): those go as a whole. Plain
    text is cut with ``tokens=_SHOWN_TOKEN``: its ``<`` and ``&`` are the text's own.

    >>> _cut("a &amp; b", 5), _cut("a &amp; b", 8), _cut("ab", 2)
    ('a …', 'a &amp;…', 'ab')
    """
    if len(text) <= limit:
        return text
    end = max(limit - 1, 0)
    for token in tokens.finditer(text):
        if token.end() > end:
            end = min(end, token.start())
            break
    return text[:end] + "…"


def headline(note: Notification) -> str:
    """One line saying what the group is, e.g. ``mlma: 40 open data-quality escalations (40 new) in city=Berlin``."""
    n = len(note.alerts)
    kinds = sorted({a.kind for a in note.alerts})
    what = f"{kinds[0]} escalation" if len(kinds) == 1 else "escalation"
    where = ", ".join(f"{k}={v}" for k, v in note.group_labels.items() if k != "kind" and v)
    new = f"{note.n_new} new" if note.reason == "new" else "reminder"
    text = f"mlma: {n} open {what}{'s' if n != 1 else ''} ({new})"
    return text + (f" in {where}" if where else "")


def _alert_line(alert: Alert, new: bool) -> str:
    subject = alert.stream if alert.stream is not None else "fleet"
    tick = f", tick {alert.tick}" if alert.tick is not None else ""
    mark = "[new] " if new else ""
    line = visible(f"• {mark}{subject} (severity {alert.severity}{tick}): {alert.message}")
    return _cut(line, _LINE_CHARS, _SHOWN_TOKEN)  # not escaped yet


def _fitting_lines(lines: list[str], sections: int, chars: int) -> int:
    """How many of ``lines`` fit in at most ``sections`` sections of :data:`_SLACK_SECTION_CHARS` each and
    ``chars`` characters in all.

    >>> _fitting_lines(["x" * 1000] * 10, sections=2, chars=40_000)
    4
    >>> _fitting_lines(["x" * 10] * 10, sections=5, chars=50)
    4
    """
    used, total, section = 1, 0, 0
    for i, line in enumerate(lines):
        total += len(line) + 1
        if total > chars:
            return i
        section = len(line) if not section else section + 1 + len(line)
        if section > _SLACK_SECTION_CHARS:
            used, section = used + 1, len(line)
            if used > sections:
                return i
    return len(lines)


def slack_payload(note: Notification, external_url: str | None = None) -> dict[str, Any]:
    """Slack's incoming-webhook JSON: a readable ``text`` (also the notification's fallback) and ``blocks``.

    Every text from the store (stream ids, attribute values, messages) is shown with :func:`_slack_escape`, and
    every text object is cut to Slack's limits after escaping (:func:`_cut`): Slack refuses the whole message
    (400) for one text over them, and an attribute value may hold 4,000 characters, five times that escaped.
    """
    shown = note.alerts[:note.receiver.max_alerts]
    title = visible(headline(note))
    kinds = sorted({a.kind for a in note.alerts})
    explain = ESCALATION_KINDS.get(kinds[0], "") if len(kinds) == 1 else ""
    heading = f"*{_cut(_slack_escape(title), _SLACK_SECTION_CHARS - 2)}*"
    explained = [f"_{_slack_escape(explain)}_"] if explain else []
    dashboard = f"<{external_url}|dashboard>" if external_url else ""
    ticked = [f"tick {note.tick}"] if note.tick is not None else []
    # The group's key holds the grouping attributes' values: it is cut to leave room for the tick and the link.
    room = _SLACK_SECTION_CHARS - sum(len(part) + 3 for part in [*ticked, dashboard] if part)
    tail = [_cut(f"group {_slack_escape(note.group_key)}", max(room, 20)), *ticked]
    # Slack takes 50 blocks and about 40,000 characters of text: the lines that fit (in sections of at most
    # 3,000 characters, beside the header, the explanation and the trailer), and "and N more" for the rest.
    most_more = f"… and {len(note.alerts)} more ({dashboard})"
    fixed = sum(len(part) + 1 for part in [heading, *explained, most_more, " · ".join([*tail, dashboard])])
    lines = [_slack_escape(_alert_line(a, note.is_new(a))) for a in shown]
    kept = _fitting_lines(lines, _SLACK_BLOCKS - 4, _SLACK_TEXT_CHARS - fixed)
    lines = lines[:kept]
    more = len(note.alerts) - kept
    if more:
        lines.append(_cut(f"… and {more} more" + (f" ({dashboard})" if dashboard else ""), _SLACK_SECTION_CHARS))
    elif dashboard:
        tail.append(dashboard)
    trailer = _cut(" · ".join(tail), _SLACK_SECTION_CHARS)
    text = "\n".join([heading, *explained, *lines, trailer])
    header = _cut(title, _SLACK_HEADER_CHARS, _SHOWN_TOKEN)
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": header}}]
    if explain:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": explained[0]}]})
    # Slack refuses a section over 3,000 characters: the list goes into as many sections as it needs.
    chunk: list[str] = []
    for line in lines:
        if chunk and len("\n".join([*chunk, line])) > _SLACK_SECTION_CHARS:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(chunk)}})
            chunk = []
        chunk.append(line)
    if chunk:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(chunk)}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": trailer}]})
    return {"text": _cut(text, _SLACK_TEXT_CHARS), "blocks": blocks}


# -- HTTP -------------------------------------------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a GET without the body; a webhook that redirects is misconfigured.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class _Deadline:
    """Ends an HTTP attempt when its time is up, however the receiver trickles its answer.

    urllib's ``timeout`` bounds each socket operation, not the attempt: a receiver that sends a byte every
    few seconds keeps an attempt (and the thread running it) busy for as long as it likes. The attempt's
    sockets are registered here as they are opened; when the deadline passes, a timer shuts them down,
    which ends any read or write blocked on them.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        # Whether the deadline shut a socket down: only then did it end the attempt. A lookup or connection
        # that failed on its own after the deadline keeps its own error.
        self.cut = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        # A timer already shutting the sockets down must finish first: the attempt may have ended the moment
        # its socket was shut, before ``cut`` was set, and would be reported with the error the cut caused.
        self._timer.join()

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired and _shut(sock):
            self.cut = True
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            if _shut(sock):
                self.cut = True


def _shut(sock: socket.socket) -> bool:
    """Shut ``sock`` down; False if it was closed already."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:  # already closed
        return False


def _watched(connection_class: type, deadline: _Deadline) -> type:
    """``connection_class`` (http.client's) whose sockets ``deadline`` can shut down."""

    class Watched(connection_class):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            create = self._create_connection
            self._create_connection = lambda *a, **k: deadline.watch(create(*a, **k))

        def connect(self) -> None:
            super().connect()
            # HTTPS wraps the socket in TLS, which takes over (detaches) the one watched while connecting: the
            # deadline must shut the TLS socket, or a receiver that answers a byte at a time is never cut off.
            deadline.watch(self.sock)

    return Watched


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._connection = _watched(http.client.HTTPConnection, deadline)

    def http_open(self, req):
        return self.do_open(self._connection, req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._connection = _watched(http.client.HTTPSConnection, deadline)

    def https_open(self, req):
        return self.do_open(self._connection, req, context=self._context)


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_NoRedirect(), _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))


@dataclass(frozen=True)
class _Answer:
    ok: bool
    status: int | None
    retryable: bool
    retry_after: float | None
    error: str | None


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date; None if absent
    or unreadable.

    >>> retry_after_seconds("7")
    7.0
    >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now=dt.datetime(2015, 10, 21, 7, 28, tzinfo=UTC))
    30.0
    """
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value)) if math.isfinite(float(value)) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or dt.datetime.now(UTC))).total_seconds())


def post_json(url: str, body: bytes, headers: Sequence[tuple[str, str]], timeout: float) -> _Answer:
    """POST ``body`` as JSON; never raises for network or HTTP failures (they are in the answer).

    Once connected, sending and the whole answer end ``timeout`` seconds after the attempt started, however
    slowly the receiver answers. Resolving the host's name is not bounded by ``timeout`` (the system's
    resolver has its own), and connecting may take ``timeout`` for each of the host's addresses. Errors never
    quote the URL's path, query or user info, nor a value of ``headers`` (see :func:`_secrets`)."""
    with _Deadline(timeout) as deadline:
        answer = _post(url, body, headers, timeout, _opener(deadline))
    if deadline.cut and answer.status is None and not answer.ok:
        return _Answer(False, answer.status, True, None, f"timed out after {timeout:g} s")
    return answer


def _post(url: str, body: bytes, headers: Sequence[tuple[str, str]], timeout: float,
          opener: urllib.request.OpenerDirector) -> _Answer:
    from mlma import __version__

    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("User-Agent", f"mlma/{__version__}")
    for name, value in headers:
        request.add_header(name, value)
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read(65536)
            return _Answer(True, response.status, False, None, None)
    except urllib.error.HTTPError as exc:
        detail = _answer_text(exc, url, headers)
        retry_after = retry_after_seconds(exc.headers.get("Retry-After")) if exc.code in RETRY_AFTER_STATUSES else None
        # The reason phrase is the receiver's too.
        text = _scrub(f"HTTP {exc.code} {exc.reason}", url, headers) + (f": {detail}" if detail else "")
        if 300 <= exc.code < 400:
            text += " (redirects are not followed: configure the final URL)"
        return _Answer(False, exc.code, exc.code in RETRY_STATUSES, retry_after, text)
    except (ValueError, http.client.InvalidURL) as exc:  # an address http.client refuses: retrying will not help
        return _Answer(False, None, False, None, _error_text(exc, url, headers))
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            text = f"timed out after {timeout:g} s"
        else:
            text = (_error_text(reason, url, headers) if isinstance(reason, BaseException)
                    else _scrub(str(reason), url, headers))
        return _Answer(False, None, True, None, text)


# -- the notifier ---------------------------------------------------------------------------------------------
def claim_seconds(receiver: Receiver, margin: float = CLAIM_MARGIN_SECONDS) -> float:
    """How long a delivery's claim of its group lives: longer than a delivery to ``receiver`` can take, all
    attempts (each connecting to up to two of the host's addresses, then sending and reading the answer, each
    within ``timeout_seconds``) and the waits between them (at most ``max_backoff_seconds`` each), plus
    ``margin``. A process that dies while delivering holds the group no longer than this.

    >>> claim_seconds(Receiver("ops", url="https://example.org/hook"))  # 4 attempts of 5 s, waits of 60 s
    300.0
    """
    return (receiver.attempts * 3 * receiver.timeout_seconds + (receiver.attempts - 1) * receiver.max_backoff_seconds
            + margin)


class _DaemonPool:
    """A few daemon threads running submitted calls. ``concurrent.futures.ThreadPoolExecutor`` joins its
    threads when the interpreter exits, so a hanging webhook would hold up the end of the process."""

    def __init__(self, workers: int, name: str) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._workers = workers
        self._name = name
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._tasks.put((future, fn, args))
        with self._lock:
            if len(self._threads) < self._workers:
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self) -> None:
        while True:
            future, fn, args = self._tasks.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)


def _ordered(alerts: Sequence[Alert], fresh: frozenset[int]) -> tuple[Alert, ...]:
    """A notification's alerts: new ones first, then the most severe, then the newest."""
    return tuple(sorted(alerts, key=lambda a: (a.escalation_id not in fresh, -a.severity, -a.escalation_id)))


def _alert(row: OpenEscalation) -> Alert:
    """An open escalation as an alert, labelled with its kind, severity, stream and the stream's attributes
    (those whose names are valid label names and whose values are text, numbers or booleans)."""
    labels = {"kind": row.kind, "severity": str(row.severity)}
    if row.unique_id is not None:
        labels["stream"] = row.unique_id
    for key, value in row.attributes.items():
        key = str(key)
        if key in labels or key in BUILTIN_LABELS or not _LABEL_NAME.match(key):
            continue
        if isinstance(value, bool):
            labels[key] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            labels[key] = str(value)
    return Alert(row.id, row.unique_id, row.kind, row.severity, row.tick, row.message, row.created_at, labels)


class Notifier:
    """Sends webhooks for a store's open escalations, grouped and de-duplicated; see the module docstring.

    Parameters
    ----------
    store
        The project's :class:`~mlma.store.Store`.
    receivers
        :class:`Receiver` objects (see :func:`parse_receivers`). With none, :meth:`notify` does nothing.
    external_url
        The dashboard's address, linked from messages.
    max_workers
        Deliveries that run at once for each receiver (those of one group go one at a time, in the order
        planned). Each receiver has its own delivery threads, and each attempt its deadline
        (``timeout_seconds`` once connected, however slowly the receiver answers), so a slow or hanging
        receiver delays only its own notifications.
    claim_margin
        Seconds a delivery's claim of its group lives beyond the longest the delivery can take
        (:func:`claim_seconds`): after that, a process that died while delivering no longer holds the group.

    Examples
    --------
    >>> from mlma.store import Store
    >>> from mlma.escalations import Escalation
    >>> store = Store.create("sqlite://")
    >>> ids = store.stream_ids(["zone-1", "zone-2"])
    >>> store.set_attributes({"zone-1": {"city": "Berlin"}, "zone-2": {"city": "Berlin"}})
    >>> _ = store.add_escalations([Escalation(int(s), 3, "data-quality", 2, "flat line") for s in ids])
    >>> notifier = Notifier(store, parse_receivers([{"name": "ops", "url": "http://127.0.0.1:9/hook",
    ...                                               "group_by": ["kind", "city"]}]))
    >>> [(n.group_key, n.escalation_ids, n.reason) for n in notifier.plan(tick=3)]
    [('{kind="data-quality",city="Berlin"}', [1, 2], 'new')]
    >>> print(headline(notifier.plan(tick=3)[0]))
    mlma: 2 open data-quality escalations (2 new) in city=Berlin
    """

    def __init__(self, store, receivers: Sequence[Receiver], *, external_url: str | None = None,
                 max_workers: int = 4, claim_margin: float = CLAIM_MARGIN_SECONDS) -> None:
        receivers = list(receivers)
        for r in receivers:
            if not isinstance(r, Receiver):
                raise TypeError(f"receivers must be Receiver objects (see parse_receivers), got {type(r).__name__}")
        names = [r.name for r in receivers]
        if len(set(names)) != len(names):
            raise ValueError(f"receiver names must be unique, got {names}")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a whole number >= 1, got {max_workers!r}")
        if isinstance(claim_margin, bool) or not isinstance(claim_margin, (int, float)) \
                or not 0 <= claim_margin <= _MAX_BACKOFF:
            raise ValueError(f"claim_margin must be a number of seconds from 0 to {_MAX_BACKOFF:g}, "
                             f"got {claim_margin!r}")
        if external_url is not None:
            external_url = check_url(external_url, "external_url")
        self.store = store
        self.claim_margin = float(claim_margin)
        # Who claims this notifier's deliveries, as other processes are told.
        self._holder = f"mlma-alerts@{socket.gethostname()}:{os.getpid()}/{id(self):x}"
        self._log = NotificationLog(store)
        self.receivers = receivers
        self.external_url = external_url
        # One pool per receiver: a receiver that is slow or hangs holds up only its own deliveries.
        self._pools = {r.name: _DaemonPool(max_workers, f"mlma-alerts-{r.name}") for r in receivers}
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None
        self._state = threading.Lock()
        # The in-memory store shares one connection between threads; everyone takes turns.
        self._db = threading.Lock()
        self._closing = threading.Event()
        self._closed = False
        self._deadline: float | None = None
        self._outstanding: set[concurrent.futures.Future] = set()
        # Groups being delivered (or queued behind an earlier delivery of the group), with the newest
        # notification of each: a later plan in this process counts them as notified. Only that notification
        # removes its entry (an older one of the group that ends first must not: the group was sent again
        # while the newer one was still in flight).
        self._inflight: dict[tuple[str, str], Notification] = {}
        # Groups whose deliveries by this notifier failed since its last sent one: how many, when the last was
        # planned and what it listed (_retry_due: tried again with a back-off, not every round of `mlma run`).
        # Kept in memory: a restart (after mending a receiver's settings) tries every group at once.
        self._failing: dict[tuple[str, str], tuple[int, dt.datetime, frozenset[int]]] = {}
        # The last delivery queued for each group: the next one of the group starts when it has ended.
        self._tails: dict[tuple[str, str], concurrent.futures.Future] = {}
        # Deliveries handed to a receiver's threads and not started yet, by receiver and group key (at most one
        # of a group: the next one is handed over once it ended), and the claims taken ahead for some of them,
        # with the monotonic time they were taken and the group's latest sent notification read with them.
        self._ready: dict[str, dict[str, Notification]] = {r.name: {} for r in receivers}
        self._ahead: dict[tuple[str, str], tuple[Claim, float, tuple[frozenset[int], dt.datetime] | None]] = {}
        # Deliveries waiting for another process's claim of their group: (the note, the claim in the way, how
        # to start it again, how to end it). One thread looks at the claims for all of them.
        self._waits: list[tuple[Notification, Claim, Any, Any]] = []
        self._waits_added = threading.Condition(self._state)
        self._watcher: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Notifier({self.store!r}, receivers={[r.name for r in self.receivers]})"

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- planning -----------------------------------------------------------------------------------------
    def plan(self, tick: int | None = None, *, between_ticks: bool = False) -> list[Notification]:
        """The notifications due now, without sending them: for each receiver, each group of open
        escalations (of ticks up to ``tick``, if given) that has a member not listed by the group's last
        sent notification, or whose ``repeat_interval`` has passed. A group being delivered, by this process
        or under another process's live claim, counts as notified with the members that delivery lists.
        ``between_ticks`` (a round of `mlma run` without a tick): a group whose deliveries by this notifier
        failed is tried again only once its back-off has passed, or when it has members its last try did not
        list (:func:`_retry_due`); after a tick every group is tried."""
        if not self.receivers:
            return []
        if tick is not None and (isinstance(tick, bool) or not isinstance(tick, int)):
            raise TypeError(f"tick must be a whole number or None, got {tick!r}")
        # What is in flight is read before the store: a delivery records its outcome before it leaves
        # _inflight, so a group is always found in one of the two. Read after, a delivery ending in between
        # was in neither, and its group was sent again. Likewise the claims (of other processes too) are
        # read before the last notifications sent: a claim is released only once its outcome is recorded.
        with self._state:
            inflight = {k: frozenset(n.escalation_ids) for k, n in self._inflight.items()}
            failing = dict(self._failing)
        with self._db:
            now, rows = self._log.open_escalations(min_severity=min(r.min_severity for r in self.receivers),
                                                   until_tick=tick)
            groups = self._group([_alert(row) for row in rows])
            keys = sorted({key for (_, key) in groups})
            claimed = self._log.claims([r.name for r in self.receivers]) if keys else {}
            last = self._log.last_sent([r.name for r in self.receivers], keys) if keys else {}
        notes = []
        for receiver in self.receivers:
            for (name, key), (labels, members) in sorted(groups.items()):
                if name != receiver.name:
                    continue
                ids = frozenset(a.escalation_id for a in members)
                before, sent_at = last.get((name, key), (frozenset(), None))
                last_sent_at = sent_at
                if (name, key) in inflight:
                    before, sent_at = inflight[(name, key)], now
                elif (name, key) in claimed:  # another process is delivering it
                    before, sent_at = claimed[(name, key)].escalation_ids, now
                fresh = ids - before
                if between_ticks and (name, key) in failing and not _retry_due(*failing[(name, key)], ids, now):
                    continue
                if fresh:
                    reason = "new"
                elif sent_at is not None and (now - sent_at).total_seconds() >= receiver.repeat_interval:
                    reason = "repeat"
                else:
                    continue
                notes.append(Notification(receiver, key, labels, _ordered(members, fresh), reason, tick, now,
                                          frozenset(fresh), last_sent_at))
        return notes

    def _group(self, alerts: list[Alert]) -> dict[tuple[str, str], tuple[dict[str, str], list[Alert]]]:
        groups: dict[tuple[str, str], tuple[dict[str, str], list[Alert]]] = {}
        for receiver in self.receivers:
            by = receiver.group_by
            members: dict[tuple[str, ...], list[Alert]] = {}
            for a in alerts:
                if receiver.accepts(a.kind, a.severity):
                    members.setdefault(tuple(a.labels.get(g, "") for g in by), []).append(a)
            for values, group in members.items():
                labels = dict(zip(by, values))
                groups[(receiver.name, group_key(by, labels))] = (labels, group)
        return groups

    # -- delivering ------------------------------------------------------------------------------------------
    def notify(self, tick: int | Sequence[int] | None = None) -> concurrent.futures.Future:
        """Plan and send in the background; returns at once. Call it after every committed tick, also one
        without new escalations: that is when reminders are due and failed deliveries are tried again.

        Parameters
        ----------
        tick
            The tick that just committed; escalations of later ticks wait (there are none in normal
            operation). A sequence is taken as that tick's new escalation ids (``TickResult.escalation_ids``)
            and means the same as None: what is sent follows from the store's open escalations and
            ``alert_notifications``, whatever the list holds.

        Returns
        -------
        concurrent.futures.Future
            Resolves to the list of :class:`Delivery` outcomes (or the planning error), for those who want
            to wait; the tick does not need to. Errors are also logged to ``mlma.alerts``.
        """
        if tick is not None and not isinstance(tick, bool) and not isinstance(tick, int):
            if isinstance(tick, (str, bytes)) or not hasattr(tick, "__len__"):
                try:
                    tick = operator.index(tick)
                except TypeError:
                    raise TypeError(f"tick must be a whole number, a list of escalation ids or None, "
                                    f"got {tick!r}") from None
            else:
                tick = None
        elif isinstance(tick, bool):
            raise TypeError(f"tick must be a whole number, a list of escalation ids or None, got {tick!r}")
        return self._submit(tick, between_ticks=False)

    def _submit(self, tick: int | None, *, between_ticks: bool) -> concurrent.futures.Future:
        """Queue a plan and its deliveries for the planning thread; ``between_ticks``: a round without a tick
        (:meth:`notify_due`), where groups whose deliveries failed wait out their back-off (:func:`_retry_due`)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._state:
            if self._closed:
                raise RuntimeError("this Notifier is closed")
            if not self.receivers:
                future.set_result([])
                return future
            self._outstanding.add(future)
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(target=self._dispatch, name="mlma-alerts-plan", daemon=True)
                self._dispatcher.start()
        future.add_done_callback(self._forget)
        self._jobs.put((tick, future, between_ticks))
        return future

    def notify_due(self) -> concurrent.futures.Future | None:
        """What is due now, between ticks (a service's round without a tick, ``mlma run``): the groups whose
        last delivery failed, reminders whose ``repeat_interval`` has passed, and escalations raised outside a
        tick (a held tick's). Plans and sends in the background like :meth:`notify` with ``tick=None``, and
        returns its future; or None, queueing nothing, while an earlier notification of this notifier is
        still being planned or delivered. So rounds that come faster than a plan of a long queue, or than a
        receiver's retries, never pile up plans, and a down receiver is tried by one delivery (its
        ``attempts``) at a time, not once more per round.
        """
        with self._state:
            if self._outstanding and not self._closed:
                return None
        return self._submit(None, between_ticks=True)

    def _forget(self, future: concurrent.futures.Future) -> None:
        with self._state:
            self._outstanding.discard(future)

    def _dispatch(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            tick, future, between_ticks = job
            try:
                # A plan after a tick is asked as before (a subclass's plan(tick) still serves it).
                notes = self.plan(tick, between_ticks=True) if between_ticks else self.plan(tick)
            except Exception as exc:  # noqa: BLE001 - a broken store must not kill the thread; logged
                log.exception("alerts: planning the notifications of tick %s failed", tick)
                future.set_exception(exc)
                continue
            if not notes:
                future.set_result([])
                continue
            parts = [self._queue(n) for n in notes]
            self._when_all(parts, future)

    def _queue(self, note: Notification) -> concurrent.futures.Future:
        """Deliver ``note`` once the delivery of its group queued before it, if any, has ended.

        One at a time and in the order planned: the store then records a group's deliveries in that order,
        and the last one recorded, which the next plan (of this process or the next) compares with, is the
        newest. Delivered side by side, an older one that ended last (after retries, say) was taken as the
        last notification, and the newer one's members were sent once more.
        """
        key = (note.receiver.name, note.group_key)
        part: concurrent.futures.Future = concurrent.futures.Future()
        with self._state:
            before = self._tails.get(key)
            self._tails[key] = part
            self._inflight[key] = note

        def finish(delivery: Delivery | None, error: BaseException | None = None) -> None:
            with self._state:
                if self._inflight.get(key) is note:
                    del self._inflight[key]
            if error is not None:
                part.set_exception(error)
            else:
                part.set_result(delivery)
            with self._state:
                if self._tails.get(key) is part:
                    del self._tails[key]

        def ended(attempt: concurrent.futures.Future) -> None:
            error = attempt.exception()
            outcome = None if error is not None else attempt.result()
            if isinstance(outcome, Claim):  # another process's claim lacking members: wait, without a thread
                self._wait(note, outcome, start, finish)
            else:
                finish(outcome, error)

        def start(_=None) -> None:
            with self._state:
                self._ready[note.receiver.name][note.group_key] = note
            self._pools[note.receiver.name].submit(self._attempt, note).add_done_callback(ended)

        if before is None:
            start()
        else:
            before.add_done_callback(start)
        return part

    @staticmethod
    def _when_all(parts: list[concurrent.futures.Future], future: concurrent.futures.Future) -> None:
        remaining = [len(parts)]
        lock = threading.Lock()

        def done(_):
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            errors = [p.exception() for p in parts if p.exception() is not None]
            if errors:
                future.set_exception(errors[0])
            else:
                future.set_result([p.result() for p in parts])

        for p in parts:
            p.add_done_callback(done)

    def _attempt(self, note: Notification) -> Delivery | Claim:
        """Deliver a note handed to a delivery thread; or return the claim of another process that it waits for
        (lacking some of its members), without waiting."""
        with self._state:
            self._ready[note.receiver.name].pop(note.group_key, None)
        return self._deliver_once(note, time.monotonic(), batch=True)

    def _wait(self, note: Notification, claim: Claim, retry, finish) -> None:
        """Hand ``note`` to the thread that looks at other processes' claims (:meth:`_watch_claims`): it starts
        the note again (``retry``) once ``claim`` is gone, or ends it (``finish``) when the notifier closes."""
        with self._state:
            self._waits.append((note, claim, retry, finish))
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch_claims, name="mlma-alerts-claims", daemon=True)
                self._watcher.start()
            self._waits_added.notify()

    def _watch_claims(self) -> None:
        while True:
            with self._state:
                while not self._waits:
                    if self._closed:  # nothing waits and nothing will: the thread ends (a new one if need be)
                        self._watcher = None
                        return
                    self._waits_added.wait()
            in_time = self._pause(CLAIM_POLL_SECONDS)
            with self._state:
                waits, self._waits = self._waits, []
            if not in_time:
                for note, claim, _, finish in waits:
                    finish(Delivery(note.receiver.name, note.group_key, note.escalation_ids, "skipped", 0,
                                    f"gave up waiting for the delivery of {claim.holder}: the notifier was closing",
                                    None, 0.0, False))
                continue
            try:
                with self._db:
                    live = self._log.claims(sorted({note.receiver.name for note, *_ in waits}))
            except Exception:  # noqa: BLE001 - each delivery tries its claim again, and posts without one if need be
                log.warning("alerts: could not read the claims of other processes; trying %d waiting "
                            "notification(s) again", len(waits), exc_info=True)
                live = {}
            still = []
            for waiting in waits:
                note, _, retry, _ = waiting
                found = live.get((note.receiver.name, note.group_key))
                if found is not None and found.holder != self._holder \
                        and not frozenset(note.escalation_ids) <= found.escalation_ids:
                    still.append(waiting)
                else:
                    retry()
            with self._state:
                self._waits[:0] = still

    def deliver(self, note: Notification, *, record: bool = True) -> Delivery:
        """Post one notification now, with retries, and record the outcome (``record=False``: don't).

        A notification to record is first claimed in the store (:meth:`NotificationLog.claim_groups`), and its
        claim released with the outcome recorded (kept until it lapses, or this notifier's next delivery of the
        group takes it over, if recording failed). It is ``skipped`` when another process's live claim of the
        group lists all its members, or when a notification of the group sent after the plan (by another
        process) did; while another's claim lacks some of its members, it waits for that delivery to end, as a
        group's deliveries do within one process (this call waits; a delivery queued by :meth:`notify` waits
        without holding a delivery thread). If the claim cannot be written (the store is down or busy beyond its
        timeout), the notification is posted without one, with a warning: a page is not held back by the store,
        and another process may post it too.
        """
        if not record:
            return self._post(note, record=False)
        started = time.monotonic()
        while True:
            outcome = self._deliver_once(note, started)
            if not isinstance(outcome, Claim):
                return outcome
            if not self._pause(CLAIM_POLL_SECONDS):
                return Delivery(note.receiver.name, note.group_key, note.escalation_ids, "skipped", 0,
                                f"gave up waiting for the delivery of {outcome.holder}: the notifier was closing",
                                None, time.monotonic() - started, False)

    def _deliver_once(self, note: Notification, started: float, *, batch: bool = False) -> Delivery | Claim:
        """Claim, post and record ``note``; or return another process's claim that lacks some of its members
        (nothing posted). ``batch`` (a delivery of a receiver's threads): use the claim taken ahead for it, if
        any, or claim the receiver's groups queued next with it (:meth:`_claim`)."""
        if self._attempt_timeout(1.0) is None:  # closing, past the deadline: nothing is posted, nothing claimed
            with self._db, self._state:
                ahead = self._ahead.pop((note.receiver.name, note.group_key), None) if batch else None
            return self._post(note, record=True, claim=None if ahead is None else ahead[0])
        try:
            claim, claimed = self._claim(note, batch)
        except Exception as exc:  # noqa: BLE001 - a page does not depend on the store: posted without a claim
            log.warning("alerts: could not claim the notification of %s to %s in the store (%s: %s); posting it "
                        "without a claim, so another process may post it too", note.group_key, note.receiver.name,
                        type(exc).__name__, str(exc)[:_ERROR_CHARS])
            claim, claimed = None, note
        if isinstance(claimed, str):
            log.info("alerts: skipped %s to %s: %s", note.group_key, note.receiver.name, claimed)
            return Delivery(note.receiver.name, note.group_key, note.escalation_ids, "skipped", 0, claimed, None,
                            time.monotonic() - started, False)
        if claim is not None and not claim.mine:
            return claim
        return self._post(claimed, record=True, claim=claim)

    def _claim(self, note: Notification, batch: bool) -> tuple[Claim | None, Notification | str]:
        """Claim ``note``'s group: (the claim, the notification to post, re-based on a notification of the group
        sent since the plan), (another process's claim that lacks some of its members, the note), or (None, why
        it is skipped).

        With ``batch``, a claim taken ahead with an earlier delivery's is used if it is fresh (taken less than half
        of ``claim_margin`` ago: the delivery still ends within the claim's lifetime); else the receiver's groups
        queued to start next are claimed with this one, in one transaction. Claims are taken ahead, and found,
        holding ``_db``: a group queued when they were taken had not started, and finds its claim when it does.
        """
        receiver, key = note.receiver, note.group_key
        ids = frozenset(note.escalation_ids)
        with self._db:
            with self._state:
                ahead = self._ahead.pop((receiver.name, key), None) if batch else None
            if ahead is not None and time.monotonic() - ahead[1] < self.claim_margin / 2:
                claim, sent = ahead[0], ahead[2]
            else:
                groups = {key: ids}
                if batch and self.claim_margin > 0:
                    with self._state:
                        for other, queued in self._ready[receiver.name].items():
                            if len(groups) > CLAIM_AHEAD:
                                break
                            if other != key and (receiver.name, other) not in self._ahead:
                                groups[other] = frozenset(queued.escalation_ids)
                claims, last = self._log.claim_groups(receiver.name, groups, holder=self._holder,
                                                      seconds=claim_seconds(receiver, self.claim_margin))
                taken_at = time.monotonic()
                with self._state:
                    for other, taken in claims.items():
                        if other != key and taken.mine:
                            self._ahead[(receiver.name, other)] = (taken, taken_at, last.get(other))
                claim, sent = claims[key], last.get(key)
        if not claim.mine:
            if ids <= claim.escalation_ids:
                return None, f"being sent by {claim.holder} (claimed until {_iso(claim.expires_at)})"
            return claim, note  # it follows that delivery, as one planned behind another in this process
        sent_ids, sent_at = sent or (frozenset(), None)
        # Sent since the plan, by another process; or, for new members, a last notification that already lists
        # them: the plan may have read another's claim (its members as in flight) and, in a later read, the
        # newest sent notification, which that process sent after its claim, with these members new in it.
        if sent_at is not None and (sent_at != note.last_sent_at or note.reason == "new"):
            if ids <= sent_ids:
                self._release(claim)
                return None, f"sent meanwhile (at {_iso(sent_at)}), with all its members"
            fresh = frozenset(ids - sent_ids)
            note = dataclasses.replace(note, alerts=_ordered(note.alerts, fresh), reason="new", new_ids=fresh,
                                       last_sent_at=sent_at)
        return claim, note

    def _release(self, *claims: Claim) -> None:
        try:
            with self._db:
                self._log.release(*claims)
        except Exception:  # noqa: BLE001 - the claims lapse by themselves
            log.exception("alerts: could not release the claim(s) of %s; they lapse by themselves",
                          ", ".join(f"{c.group_key} to {c.receiver}" for c in claims))

    def _post(self, note: Notification, *, record: bool, claim: Claim | None = None) -> Delivery:
        receiver = note.receiver
        started = time.monotonic()
        attempts, status, error, http_status = 0, "failed", None, None
        url: str | None = None
        trace: BaseException | None = None
        try:
            try:
                url = receiver.resolved_url()
                body = json.dumps(note.payload(self.external_url), ensure_ascii=False).encode("utf-8")
            except AlertConfigError as exc:
                url, error = None, str(exc)
            while url is not None and attempts < receiver.attempts:
                timeout = self._attempt_timeout(receiver.timeout_seconds)
                if timeout is None:
                    error = f"{error}; " if error else ""
                    error += "gave up: the notifier was closing"
                    break
                attempts += 1
                answer = post_json(url, body, receiver.headers, timeout)
                http_status = answer.status
                if answer.ok:
                    status, error = "sent", None
                    break
                error = answer.error
                if not answer.retryable or attempts >= receiver.attempts:
                    break
                delay = min(receiver.backoff_seconds * 2 ** (attempts - 1), receiver.max_backoff_seconds)
                if answer.retry_after is not None:
                    delay = min(answer.retry_after, receiver.max_backoff_seconds)
                if not self._pause(delay):
                    error += "; gave up: the notifier was closing"
                    break
        except Exception as exc:  # noqa: BLE001 - a bug or an odd value: it must still be logged and recorded
            # Else it ended in an unobserved future: no log line, no failed row for MlmaAlertDeliveryFailing.
            # The URL is a secret and a traceback shows the exception's text: it is logged only when that
            # quotes none of the URL.
            shown = url or receiver.url
            status, error = "failed", f"unexpected error: {_error_text(exc, shown, receiver.headers)}"
            trace = exc if shown and not _quotes_secret(exc, shown, receiver.headers) else None
        seconds = time.monotonic() - started
        if status == "sent":
            log.info("alerts: sent %s to %s (%d escalations, attempt %d)", note.group_key, receiver.name,
                     len(note.alerts), attempts)
        else:
            log.warning("alerts: could not notify %s (%s) of %s after %d attempt(s): %s", receiver.name,
                        receiver.target, note.group_key, attempts, error, exc_info=trace)
        recorded = self._record(note, status, attempts, error, claim) if record else False
        return Delivery(receiver.name, note.group_key, note.escalation_ids, status, attempts, error, http_status,
                        seconds, recorded)

    def _record(self, note: Notification, status: str, attempts: int, error: str | None,
                claim: Claim | None = None) -> bool:
        """Record the outcome, and release ``claim`` (one's own) in the same transaction."""
        key = (note.receiver.name, note.group_key)
        with self._state:
            if status == "sent":
                self._failing.pop(key, None)
            else:
                failures = self._failing.get(key, (0, note.created_at, frozenset()))[0] + 1
                self._failing[key] = (failures, note.created_at, frozenset(note.escalation_ids))
        try:
            with self._db:
                self._log.record(note.receiver.name, note.group_key, note.escalation_ids, status, attempts,
                                 None if error is None else error[:_ERROR_CHARS], created_at=note.created_at,
                                 release=claim)
            return True
        except Exception as exc:  # noqa: BLE001 - the delivery happened; losing its record must not kill the worker
            from mlma.store.engine import unreachable_reason  # noqa: PLC0415 - the store's word for its driver's

            trouble = unreachable_reason(exc)  # a busy, full or unreachable store: routine, said in a line
            if trouble is not None:
                log.warning("alerts: could not record the %s notification of %s to %s: %s", status, note.group_key,
                            note.receiver.name, trouble)
            else:
                log.exception("alerts: could not record the %s notification of %s to %s", status, note.group_key,
                              note.receiver.name)
            return False

    def _margin(self) -> float:
        # Time kept back before the close deadline to write the outcome.
        return 0.25

    def _attempt_timeout(self, timeout: float) -> float | None:
        deadline = self._deadline
        if deadline is None:
            return timeout
        left = deadline - self._margin() - time.monotonic()
        return None if left < 0.05 else min(timeout, left)

    def _pause(self, seconds: float) -> bool:
        """Wait before the next attempt; False if the close deadline would pass first."""
        end = time.monotonic() + seconds
        while True:
            deadline = self._deadline
            if deadline is not None and end > deadline - self._margin():
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            if self._closing.is_set():
                time.sleep(left)
            else:
                self._closing.wait(left)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop taking work and wait at most ``timeout`` seconds for queued notifications.

        Retries that would end after the deadline are given up and recorded as failed. Returns True if
        everything finished; otherwise the unfinished deliveries are logged and abandoned (they run in
        daemon threads and are not recorded, so the next process sends those groups again: at once those that
        had not started, whose claims taken ahead are released here, and the others once their claims lapse,
        :func:`claim_seconds`).
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        with self._state:
            if not self._closed:
                self._closed = True
                self._deadline = time.monotonic() + timeout
                self._closing.set()
                self._jobs.put(None)
                self._waits_added.notify_all()  # the claims' watcher ends once nothing waits
            waiting = list(self._outstanding)
            deadline = self._deadline
        if waiting:
            concurrent.futures.wait(waiting, timeout=max(0.0, deadline - time.monotonic()))
        with self._state:
            unfinished = [f for f in waiting if not f.done()]
            inflight = sorted(self._inflight)
        # Claimed with an earlier delivery and never started: the next process need not wait for them to lapse.
        if self._ahead and self._db.acquire(timeout=1.0):
            try:
                with self._state:
                    ahead = [claim for claim, _, _ in self._ahead.values()]
                    self._ahead.clear()
                if ahead:
                    self._log.release(*ahead, wait=False)
            except Exception:  # noqa: BLE001 - they lapse by themselves
                log.warning("alerts: could not release %d claim(s) taken for deliveries that did not start; they "
                            "lapse by themselves", len(ahead), exc_info=True)
            finally:
                self._db.release()
        if unfinished:
            log.warning("alerts: closed with %d notification(s) still in flight (%s); they were not recorded and "
                        "will be sent again", len(inflight), ", ".join(f"{n} {k}" for n, k in inflight) or "planning")
        return not unfinished

    def send_test(self, receiver: str) -> Delivery:
        """Post a made-up notification to one receiver now, to check its URL and format; not recorded."""
        chosen = [r for r in self.receivers if r.name == receiver]
        if not chosen:
            raise KeyError(f"no receiver named {receiver!r}; configured: {', '.join(r.name for r in self.receivers)}")
        now = dt.datetime.now(UTC)
        alert = Alert(0, "test-stream", "data-quality", 1, None, "a test message from mlma; nothing is wrong", now,
                      {"kind": "data-quality", "severity": "1", "stream": "test-stream"})
        labels = {g: alert.labels.get(g, "") for g in chosen[0].group_by}
        note = Notification(chosen[0], group_key(chosen[0].group_by, alert.labels), labels, (alert,), "new", None,
                            now, frozenset({0}))
        return self.deliver(note, record=False)


__all__ = ["AlertConfigError", "Alert", "Delivery", "Notification", "Notifier", "Receiver", "FORMATS",
           "RECEIVER_KEYS", "claim_seconds", "generic_payload", "group_key", "headline", "parse_duration",
           "parse_receivers", "post_json", "retry_after_seconds", "slack_payload"]
