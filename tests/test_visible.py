"""One set of characters that reorder or hide text, shown as \\uXXXX wherever mlma shows text to a person: the
dashboard writes it in JavaScript (app.js), the alerts and the CLI in Python (mlma.visible). They were written
twice with nothing keeping them equal."""

from __future__ import annotations

import re
from pathlib import Path

from mlma.data import id_text, stream_id_text
from mlma.visible import HIDDEN_CHARS, UNSTORABLE_IN_NAME, visible

APP_JS = Path(__file__).parents[1] / "src" / "mlma" / "api" / "static" / "app.js"


def _characters(char_class: str) -> set[str]:
    """The characters a regular expression's class of single characters and ranges holds."""
    found, i = set(), 0
    while i < len(char_class):
        low = char_class[i]
        if i + 2 < len(char_class) and char_class[i + 1] == "-":
            found |= {chr(c) for c in range(ord(low), ord(char_class[i + 2]) + 1)}
            i += 3
        else:
            found.add(low)
            i += 1
    return found


def test_the_dashboard_shows_the_same_characters_as_the_alerts_and_the_cli():
    source = APP_JS.read_text(encoding="utf-8")
    (js_class,) = re.findall(r"const HIDDEN_CHARS = /\[(.*?)\]/g;", source)
    js = _characters(re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), js_class))
    python = _characters(HIDDEN_CHARS.pattern[1:-1])
    assert js == python, sorted(f"U+{ord(c):04X}" for c in js ^ python)
    assert len(python) > 70  # the class was read, not an empty match
    for c in python:
        assert visible(f"a{c}b") == f"a\\u{ord(c):04X}b"
    assert visible("Zürich, 東京 — zone 4") == "Zürich, 東京 — zone 4"  # the rest as it is


def test_every_invisible_character_around_a_stream_id_is_not_part_of_it():
    """The edge rule of stream ids took a hand-written subset of the invisible characters: a bidi isolate (U+2066,
    pasted from a right-to-left page) or the Arabic letter mark around ``z0`` made a new stream beside it."""
    invisible = {c for c in _characters(HIDDEN_CHARS.pattern[1:-1]) if not UNSTORABLE_IN_NAME.search(c)}
    assert {"\u061c", "\u2066", "\u2069", "\u202e", "\u200b", "\ufeff"} <= invisible
    for c in sorted(invisible):
        shown = f"U+{ord(c):04X}"
        assert id_text(f"{c}z0{c}") == "z0", shown
        assert id_text(f"z{c}0") == f"z{c}0", shown  # inside an id it is part of it
    ids = stream_id_text(["\u2066z0\u2069", "z0", "\u061cz1", "z1 \u2069"])
    assert ids.tolist() == ["z0", "z0", "z1", "z1"]
