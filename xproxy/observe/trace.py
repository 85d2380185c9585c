"""The tracer: one line per X11 message, as text (like xtrace) or JSON Lines.

Text lines read `CCC:D:SSSS: SIZE: Kind Name field=value ...`: client number, `<` for what the
client sent and `>` for what the server sent, the full sequence number, the message size, the
kind and name, and the fields; resource ids in hex, atoms with their names where the
connection has seen them (InternAtom, GetAtomName) or they are predefined. JSON Lines carry
`client`, `seq`, `dir`, `name`, `fields`, `time`, `size`, and `atoms` (id -> name) when any
field's atom is known. The server's setup answer is a `reply` named `Setup`.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import orjson
from twisted.logger import Logger

from ..x11.decode.decoder import Decoded, Want
from ..x11.decode.fields import ATOM_FIELDS, RESOURCE_FIELDS

__all__ = ["NameFilter", "Tracer", "format_json", "format_text"]

_DIR = {"setup": "setup", "setup-reply": "reply", "request": "request", "reply": "reply",
        "event": "event", "error": "error"}
_KIND = {"setup": "Setup", "setup-reply": "Reply", "request": "Request", "reply": "Reply",
         "event": "Event", "error": "Error"}
_ARROW = {"setup": "<", "request": "<"}

log = Logger()


class NameFilter:
    """`--only` and `--skip`: comma-separated message names or shell patterns (`RENDER:*`)."""

    def __init__(self, only: Iterable[str] = (), skip: Iterable[str] = ()) -> None:
        self.only = _split(only)
        self.skip = _split(skip)
        self._cache: dict[str, bool] = {}

    @property
    def everything(self) -> bool:
        """True when no name is filtered out."""
        return not self.only and not self.skip

    def __call__(self, name: str) -> bool:
        hit = self._cache.get(name)
        if hit is None:
            hit = (not self.only or _match(name, self.only)) and not _match(name, self.skip)
            if len(self._cache) < 4096:
                self._cache[name] = hit
        return hit


def _split(names: Iterable[str]) -> list[str]:
    return [n.strip() for item in names for n in item.split(",") if n.strip()]


def _match(name: str, patterns: list[str]) -> bool:
    return any(p == name or fnmatch.fnmatchcase(name, p) for p in patterns)


def _atoms_in(fields: dict[str, Any], atoms: dict[int, str],
              found: dict[str, str] | None = None) -> dict[str, str] | None:
    """The names of the atoms in `fields` (nested dicts too) that `atoms` knows, or None."""
    for k, v in fields.items():
        if type(v) is dict:
            found = _atoms_in(v, atoms, found)
        elif k in ATOM_FIELDS:
            for a in v if type(v) is list else (v,):
                name = atoms.get(a) if type(a) is int else None
                if name is not None:
                    if found is None:
                        found = {}
                    found[str(a)] = name
    return found


#: The standard library's encoder, for what orjson refuses (an int beyond 64 bits, a string
#: that is not valid Unicode); one for every such line (json.dumps builds one per call).
_encode = json.JSONEncoder(separators=(",", ":"), default=repr, check_circular=False).encode
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def format_json(client: int, d: Decoded, time: float, atoms: dict[int, str]) -> str:
    fields = d.fields
    obj: dict[str, Any] = {"client": client, "seq": d.seq, "dir": _DIR.get(d.direction,
                           d.direction), "name": d.name, "fields": fields, "time": time,
                           "size": d.size}
    if d.latency is not None:
        obj["latency"] = d.latency
    named = _atoms_in(fields, atoms)
    if named:
        obj["atoms"] = named
    try:
        return orjson.dumps(obj, default=repr, option=_ORJSON_OPTIONS).decode()  # ~10x json's
    except TypeError:  # (orjson.JSONEncodeError is one)
        return _encode(obj)


def format_text(client: int, d: Decoded, atoms: dict[int, str]) -> str:
    arrow = _ARROW.get(d.direction, ">")
    kind = _KIND.get(d.direction, d.direction)
    parts = [f"{client:03d}:{arrow}:{d.seq:04d}:{d.size:5d}: {kind} {d.name}"]
    named = _NAMED
    for k, v in d.fields.items():
        if type(v) is int and k not in named:  # most fields: a plain number
            parts.append(f"{k}={v}")
        else:
            parts.append(f"{k}={_value(k, v, atoms)}")
    return " ".join(parts)


#: Fields whose numbers the text trace shows otherwise than as decimals (atoms, resources).
_NAMED = ATOM_FIELDS | RESOURCE_FIELDS


def _value(key: str, v: Any, atoms: dict[int, str]) -> str:
    t = type(v)
    if t is int:
        if key in ATOM_FIELDS:
            name = atoms.get(v)
            return f'{v}("{name}")' if name is not None else str(v)
        if key in RESOURCE_FIELDS:
            return f"0x{v:08x}"
        return str(v)
    if t is str:
        return _quote(v)
    if t is bool or v is None:
        return str(v)
    if isinstance(v, int):
        return _value(key, int(v), atoms)
    if isinstance(v, str):
        return _quote(str(v))
    if isinstance(v, dict):
        return "{" + " ".join(f"{k}={_value(k, x, atoms)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_value(key, x, atoms) for x in v) + "]"
    return repr(v)


def _quote(v: str) -> str:
    """A string as JSON writes it (quoted, escaped, not limited to ASCII)."""
    try:
        return orjson.dumps(v).decode()
    except TypeError:  # not valid Unicode (a lone surrogate)
        return json.dumps(v, ensure_ascii=False)


class Tracer:
    """Writes the trace of all clients of a proxy to one file. `clock` gives `time`
    (the reactor's `seconds`)."""

    def __init__(self, out: TextIO, fmt: str = "text", names: NameFilter | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"trace format {fmt!r}: text or json")
        self.out = out
        self.json = fmt == "json"
        self.wants = names or NameFilter()
        #: what the decoder is told about fields: all, or only for the names the filter keeps
        self.fields: Want = self.wants.everything or self.wants
        self.clock = clock
        self.lines = 0
        #: why the trace file could not be written (tracing stopped then; the relay goes on)
        self.failed: str | None = None

    def emit(self, client: int, d: Decoded, now: float, atoms: dict[int, str]) -> None:
        if self.failed is not None or (self.fields is not True and not self.wants(d.name)):
            return
        if self.json:
            line = format_json(client, d, now, atoms)
        else:
            line = format_text(client, d, atoms)
        try:
            self.out.write(line + "\n")
        except (OSError, ValueError) as err:
            self._stop(err)
            return
        self.lines += 1

    def flush(self) -> None:
        if self.failed is not None:
            return
        try:
            self.out.flush()
        except (OSError, ValueError) as err:
            self._stop(err)

    def close(self) -> None:
        try:
            self.out.close()
        except (OSError, ValueError) as err:  # (the file is closed all the same)
            if self.failed is None:
                self._stop(err)

    def _stop(self, err: Exception) -> None:
        self.failed = f"{type(err).__name__}: {err}"
        self.fields = False  # nothing more to decode fields for
        name = getattr(self.out, "name", "the trace file")
        log.error("cannot write the trace to {name} ({why}): tracing stopped after {n} lines; "
                  "the proxy goes on relaying", name=name, why=self.failed, n=self.lines)
