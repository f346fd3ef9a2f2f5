r"""Text shown to a person as it is: the characters that reorder or hide text are written as ``\uXXXX``.

A stream id ``zone\u202eevil.exe`` (a right-to-left override) reads ``zoneexe.live`` where it is printed raw, and
an escape sequence in a reason (``\x1b[2J``) clears the terminal of whoever reads the audit log. The alerts
(Slack, e-mail subjects), the CLI's tables and the dashboard (``HIDDEN_CHARS`` in ``mlma/api/static/app.js``)
show them the same way.
"""

from __future__ import annotations

import re

#: Control characters: C0 (NUL, tab, line breaks, escape), DEL and C1; a character class's body.
_CONTROL = "\x00-\x1f\x7f-\x9f"
#: Lone surrogates: not text in UTF-8 (a store cannot keep them); Python makes them of a command line's or an
#: environment variable's bytes that are not UTF-8.
_SURROGATES = "\ud800-\udfff"

#: Characters no stored name (a stream id, a column's, a person's) may hold: control characters (PostgreSQL's text
#: takes no NUL; a line break or a tab breaks every listing, an escape sequence plays in a reader's terminal) and
#: lone surrogates.
UNSTORABLE_IN_NAME = re.compile(f"[{_CONTROL}{_SURROGATES}]")
#: The same for free text (a reason), which may hold tabs and line breaks.
UNSTORABLE_IN_TEXT = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_SURROGATES}]")

#: Characters that take no room on screen: the Arabic letter mark, zero-width spaces and joiners, left-to-right and
#: right-to-left marks, line and paragraph separators, bidi embeddings, overrides and isolates, the word joiner and
#: invisible operators, and the byte-order mark; a character class's body.
_INVISIBLE = "\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff"

#: Control characters and the invisible ones: what :func:`visible` shows as ``\uXXXX``.
HIDDEN_CHARS = re.compile(f"[{_CONTROL}{_INVISIBLE}]")

#: What surrounds a name without being part of it: white space, and the invisible characters an export or a copy
#: leaves at a line's start or a cell's end (a byte-order mark of files joined together, a zero-width space, a
#: direction mark or isolate pasted from a right-to-left page). Only at either end: inside a name they are kept (a
#: Persian name's zero-width non-joiner is part of it). ``mlma.data.stream_id_text`` removes them from stream ids.
NAME_EDGES = re.compile(f"^[\\s{_INVISIBLE}]+|[\\s{_INVISIBLE}]+$")


def unstorable(char: str) -> str:
    r"""What a character :data:`UNSTORABLE_IN_NAME` or :data:`UNSTORABLE_IN_TEXT` found is, for an error message.

    >>> unstorable("\x1b"), unstorable("\udcff"), unstorable("\ud800")
    ("a control character ('\\x1b')", 'a byte that is not UTF-8 (\\xff)', 'a lone surrogate (\\ud800)')
    """
    if not "\ud800" <= char <= "\udfff":
        return f"a control character ({char!r})"
    # Written as storable() writes it: the byte a command line or a file name held, else the surrogate's escape.
    return f"a byte that is not UTF-8 ({_written_out(char)})" if _is_byte(char) else \
        f"a lone surrogate ({_written_out(char)})"


def storable(text: str) -> str:
    r"""``text`` with its lone surrogates written out, so that a store can keep it and a terminal show it.

    Python reads a file name in bytes that are not UTF-8 (``donn\xe9es.csv`` from a Latin-1 system) as lone
    surrogates (``donn\udce9es.csv``); such a name is kept as the bytes it names. A surrogate of no byte (JSON's
    ``"\ud800"``) is written as its escape.

    >>> print(storable("donn\udce9es.csv"), storable("a\ud800b"), storable("Zürich"))
    donn\xe9es.csv a\ud800b Zürich
    """
    return _SURROGATE.sub(lambda found: _written_out(found.group()), text)


_SURROGATE = re.compile(f"[{_SURROGATES}]")


def _is_byte(char: str) -> bool:
    """Whether a lone surrogate is how Python reads a byte that is not UTF-8 (surrogateescape: U+DC80-U+DCFF)."""
    return 0xDC80 <= ord(char) <= 0xDCFF


def _written_out(char: str) -> str:
    return f"\\x{ord(char) - 0xDC00:02x}" if _is_byte(char) else f"\\u{ord(char):04x}"


def visible(text: str) -> str:
    r"""``text`` with the characters of :data:`HIDDEN_CHARS` shown as ``\uXXXX``.

    >>> print(visible("zone\u202eevil.exe"), visible("a\tb\u200bc"), visible("Zürich"))
    zone\u202Eevil.exe a\u0009b\u200Bc Zürich
    """
    return HIDDEN_CHARS.sub(lambda m: f"\\u{ord(m.group()):04X}", text)
