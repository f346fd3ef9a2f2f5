"""One serialisation for every JSON value the store writes, valid on SQLite and PostgreSQL alike.

The engine is built with :func:`dumps` and :func:`loads` as its JSON serializer and deserializer, so every
JSON column written through SQLAlchemy (whoever builds the statement) goes through here, and the store's
bulk writer uses :func:`dumps` for its raw ``COPY`` and ``executemany`` paths.

Rules, and why:

- Non-finite numbers (NaN, +-inf, also inside numpy arrays) become ``null``. ``NaN`` and ``Infinity`` are
  not JSON: PostgreSQL's ``jsonb`` refuses them (a tick whose summary held one could never commit) and a
  web client's JSON parser fails on them (``/metrics`` answered 500 from a SQLite store that held one).
- numpy scalars and arrays, pandas and datetime timestamps, sets and tuples become plain JSON values.
- Text loses what PostgreSQL cannot store: a NUL character, and a lone UTF-16 surrogate, become U+FFFD.
- Reading accepts the ``NaN`` / ``Infinity`` tokens an older mlma may have left in a SQLite store, and
  gives ``None`` for them, so such a row no longer breaks whoever reads it.

>>> import numpy as np
>>> dumps({"loss": float("inf"), "n": np.int64(3), "xs": np.array([1.0, np.nan])})
'{"loss": null, "n": 3, "xs": [1.0, null]}'
>>> loads('{"loss": Infinity, "ok": 1}')
{'loss': None, 'ok': 1}
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np

_REPLACEMENT = "\ufffd"


def finite_json(value: Any) -> Any:
    """``value`` as plain JSON-ready Python objects with every non-finite number replaced by None.

    Raises TypeError for objects that have no JSON form (naming the type), rather than storing their repr.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_clean_text(str(k)) if not isinstance(k, str) else _clean_text(k): finite_json(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [finite_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return [finite_json(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return finite_json(value.item())
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if hasattr(value, "isoformat") and hasattr(value, "to_pydatetime"):  # pandas Timestamp
        return value.isoformat()
    if isinstance(value, dt.timedelta) or type(value).__name__ == "Timedelta":
        return str(value)
    raise TypeError(f"value {value!r} of type {type(value).__name__} cannot be stored as JSON")


def dumps(value: Any) -> str:
    """JSON text of ``value`` after :func:`finite_json`: always valid JSON (no NaN, no Infinity)."""
    return json.dumps(finite_json(value), allow_nan=False)


#: One decoder for every call: ``json.loads`` with an option builds a new decoder each time, which cost more
#: than the parse itself for the small documents of a 10,000-row read.
_DECODER = json.JSONDecoder(parse_constant=lambda _token: None)


def loads(text: str | bytes) -> Any:
    """Parse JSON text; the non-standard tokens ``NaN``, ``Infinity`` and ``-Infinity`` read as None.

    >>> loads('{"a": NaN, "b": [1, Infinity]}')
    {'a': None, 'b': [1, None]}
    """
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    if text == "{}":  # most streams' attributes and overrides
        return {}
    return _DECODER.decode(text)


def _clean_text(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", _REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (from a JSON "\\ud800" escape) cannot be stored; pairs are joined first.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        text = "".join(_REPLACEMENT if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text
