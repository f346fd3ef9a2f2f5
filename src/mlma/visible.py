r"""Text shown to a person as it is: the characters that reorder or hide text are written as ``\uXXXX``.

A stream id ``zone\u202eevil.exe`` (a right-to-left override) reads ``zoneexe.live`` where it is printed raw, and
an escape sequence in a reason (``\x1b[2J``) clears the terminal of whoever reads the audit log. The alerts
(Slack, e-mail subjects), the CLI's tables and the dashboard (``HIDDEN_CHARS`` in ``mlma/api/static/app.js``)
show them the same way.
"""

from __future__ import annotations

import re

#: Control characters (C0, DEL, C1), bidi controls and marks, zero-width characters, line and paragraph
#: separators, and the byte-order mark.
HIDDEN_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def visible(text: str) -> str:
    r"""``text`` with the characters of :data:`HIDDEN_CHARS` shown as ``\uXXXX``.

    >>> print(visible("zone\u202eevil.exe"), visible("a\tb\u200bc"), visible("Zürich"))
    zone\u202Eevil.exe a\u0009b\u200Bc Zürich
    """
    return HIDDEN_CHARS.sub(lambda m: f"\\u{ord(m.group()):04X}", text)
