"""The local API's requests, declared once: every op, its fields, their JSON types.

Pure: a decoded JSON object in, ``None`` or a ``Refusal`` out. ``wire`` checks every request
here before the daemon sees it, so a handler may index its fields and trust their types;
what a well-typed value means (a valid service type, a port in range) stays the registry's
call. ``null`` for an optional field means the field is absent, as in JSON APIs generally;
fields an op does not declare are refused, so a misspelt option is an error, not a no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    """A JSON type a field may have; ``name`` is how error messages say it."""

    name: str
    test: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


STRING = Kind("a string", lambda v: isinstance(v, str))
INTEGER = Kind("an integer", _is_int)
NUMBER = Kind("a number", _is_number)
STRING_MAP = Kind("an object of strings",
                  lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()))
STRING_LIST = Kind("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
NUMBER_LIST = Kind("a list of numbers", lambda v: isinstance(v, list) and all(_is_number(x) for x in v))
ID = Kind("an integer or a string", lambda v: _is_int(v) or isinstance(v, str))


@dataclass(frozen=True)
class Field:
    kind: Kind | Object
    required: bool = False


@dataclass(frozen=True)
class Object:
    """A JSON object with declared fields (a request, or an object inside one)."""

    fields: Mapping[str, Field]
    name: str = "an object"


def _req(kind: Kind | Object) -> Field:
    return Field(kind, required=True)


def _opt(kind: Kind | Object) -> Field:
    return Field(kind)


ON_DEMAND = Object({
    "command": _req(STRING_LIST),
    "max_instances": _opt(INTEGER),
    "rate": _opt(NUMBER_LIST),
    "env": _opt(STRING_MAP),
    "cwd": _opt(STRING),
})

#: Fields every request may carry besides its op's own.
COMMON: Mapping[str, Field] = {"id": _opt(ID), "op": _req(STRING)}

#: Every op of the local API and its fields (docs/discovery.md, "The local API").
OPS: Mapping[str, Object] = {
    "hello": Object({}),
    "ping": Object({}),
    "register": Object({
        "name": _req(STRING),
        "type": _req(STRING),
        "port": _req(INTEGER),
        "txt": _opt(STRING_MAP),
        "on_demand": _opt(ON_DEMAND),
    }),
    "withdraw": Object({"name": _req(STRING), "type": _req(STRING)}),
    "lookup": Object({"type": _req(STRING), "name": _opt(STRING), "wait": _opt(NUMBER)}),
    "watch": Object({"type": _req(STRING)}),
    "unwatch": Object({"type": _req(STRING)}),
    "list": Object({}),
}


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: ``code`` for programs (``bad-request``, ``bad-op``), a message
    for people."""

    code: str
    message: str


def check(body: Mapping[str, Any]) -> Refusal | None:
    """``None`` when ``body`` is a well-typed request of a known op, else why not."""
    problem = _check_fields(body, COMMON, "", allow_more=True)
    if problem:
        return Refusal("bad-request", problem)
    op = body["op"]
    spec = OPS.get(op)
    if spec is None:
        return Refusal("bad-op", f"unknown op {op!r}")
    problem = _check_fields({k: v for k, v in body.items() if k not in COMMON}, spec.fields, "")
    return Refusal("bad-request", f"{op}: {problem}") if problem else None


def _check_fields(obj: Mapping[str, Any], fields: Mapping[str, Field], prefix: str, allow_more: bool = False) -> str | None:
    for name, f in fields.items():
        value = obj.get(name)
        if value is None:
            if f.required:
                return f"missing field '{prefix}{name}'"
            continue
        kind = f.kind
        if isinstance(kind, Object):
            if not isinstance(value, dict):
                return f"field '{prefix}{name}' must be {kind.name}, not {_json_type(value)}"
            problem = _check_fields(value, kind.fields, f"{prefix}{name}.")
            if problem:
                return problem
        elif not kind.test(value):
            return f"field '{prefix}{name}' must be {kind.name}, not {_json_type(value)}"
    if not allow_more:
        extra = sorted(k for k in obj if k not in fields)
        if extra:
            return f"unknown field '{prefix}{extra[0]}'"
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"


__all__ = ["COMMON", "OPS", "Field", "Kind", "Object", "Refusal", "check"]
