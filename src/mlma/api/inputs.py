"""What the API accepts as text and numbers, checked before any of it reaches the database.

The databases refuse some values that JSON and URLs can carry: PostgreSQL has no NUL character in text,
neither back-end can store a lone UTF-16 surrogate (``"\\ud800"`` is valid JSON but not valid UTF-8), and
integer columns hold 64 bits. Such values are answered with 422 and a message naming the field, instead
of failing inside the database with a 500.

Examples
--------
>>> text_problem("zone-1") is None, text_problem("a\\x00b"), text_problem("a\\ud800")
(True, 'contains a NUL character (\\\\x00)', 'contains a lone surrogate (\\\\ud800), which is not valid Unicode text')
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

#: The largest integer a database column holds (64-bit signed).
MAX_INT64 = 2**63 - 1
#: A row id (escalation, action, abnormal period) or a version number.
RowId = Annotated[int, Field(ge=1, le=MAX_INT64)]


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None if it can."""
    if "\x00" in text:
        return "contains a NUL character (\\x00)"
    for ch in text:
        if "\ud800" <= ch <= "\udfff":
            return f"contains a lone surrogate ({ch.encode('unicode_escape', 'backslashreplace').decode()}), " \
                   f"which is not valid Unicode text"
    return None


def _walk(value: Any, where: str) -> None:
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            raise ValueError(f"{where} {problem}")
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(key, f"{where}: a key")
            _walk(item, f"{where}.{key}" if isinstance(key, str) and not text_problem(key) else where)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _walk(item, f"{where}[{i}]")


class Body(BaseModel):
    """A request body: unknown fields are refused, no string in it may hold NUL or a lone surrogate, and values
    are taken only as the JSON type their field has (strict): ``"direct": "yes"`` is not true, ``"to_version":
    true`` is not version 1 and ``"delta": "0.1"`` is not a number, each a 422 naming the field. A person's
    mistyped action is refused, not guessed at."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _storable_names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                _walk(key, "a field name")
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, value: Any, info: ValidationInfo) -> Any:
        # A field's own validator, not the model's: its error's loc is the field's (["body", "reason"]), as
        # FastAPI's other 422s are, where a model validator's would be ["body"] alone.
        _walk(value, info.field_name)
        return value


def check_request_text(request: Request) -> None:
    """A dependency: query and path parameters must be storable text (422 naming the parameter otherwise)."""
    for name, value in request.query_params.multi_items():
        problem = text_problem(name) or text_problem(value)
        if problem:
            raise HTTPException(422, [{"type": "value_error", "loc": ["query", name],
                                       "msg": f"query parameter {name!r} {problem}"}])
    for name, value in request.path_params.items():
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                raise HTTPException(422, [{"type": "value_error", "loc": ["path", name],
                                           "msg": f"path parameter {name!r} {problem}"}])


def check_known_query(request: Request) -> None:
    """A dependency: every query parameter is one the route takes (422 naming it otherwise). A misspelled
    filter (``?verdit=degraded``) was ignored, and the answer looked like a filtered one that found everything.
    Bodies refuse unknown fields the same way (:class:`Body`)."""
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    unknown = sorted(set(request.query_params) - _query_names(route.dependant))
    if unknown:
        takes = ", ".join(sorted(_query_names(route.dependant))) or "no query parameters"
        raise HTTPException(422, [{"type": "extra_forbidden", "loc": ["query", unknown[0]],
                                   "msg": f"unknown query parameter {unknown[0]!r}; this endpoint takes: {takes}"}])


def _query_names(dependant) -> set[str]:
    """The query parameters a route's function and its dependencies take, by the names a URL gives them."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
