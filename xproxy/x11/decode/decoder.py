"""Decoding X11 messages to names and named fields, in either byte order.

Theory of operation: one `Decoder` per connection sees every message the connection's observer
sees, in order. It keeps what the meaning of later messages depends on: the byte order (from
the setup), the requests still waiting for replies by full sequence number (so each reply is
decoded with its request's layout and carries its name; multi-reply requests such as
ListFontsWithInfo stay pending until a later sequence number shows up), the extensions from
QueryExtension replies (major opcode, first event, first error: never constants), and the
atom names learned from InternAtom and GetAtomName.

Field layouts are python-xlib's `rq.Struct` declarations (`tables.py`), interpreted by
`layouts.py` rather than by python-xlib's parser. Framing is not redone: a message is whatever the framer cut, and a BIG-REQUESTS
request has its extended length removed before its layout is applied.

`decode` never raises: a message whose content does not fit its layout decodes to its name
with an `error` field and the raw length. With `fields=False` only names (and the state
above) are computed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from Xlib.protocol import request as xrequest
from Xlib.protocol import rq

from ..opcodes import (
    EVENT_CODE_MASK,
    FIRST_EXTENSION_OPCODE,
    GENERIC_EVENT,
    GET_ATOM_NAME,
    INTERN_ATOM,
    QUERY_EXTENSION,
)
from .layouts import parse
from .tables import (
    CORE_ERRORS,
    CORE_EVENTS,
    CORE_REQUESTS,
    EXTENSION_ERROR,
    EXTENSIONS,
    MULTI_REPLY,
    PREDEFINED_ATOMS,
    ExtensionSpec,
    may_reply,
    request_name,
)

__all__ = ["MAX_PENDING", "Decoded", "Decoder", "Want"]


@dataclass(frozen=True, slots=True)
class Decoded:
    """One message: `direction` as the observer said it (`setup`, `setup-reply`, `request`,
    `reply`, `error`, `event`), the full sequence number, the name (a reply carries its
    request's name) and the fields (JSON-ready values). For the first reply to a request,
    `latency` is the time since the request was seen (in the clock passed to `decode`)."""

    direction: str
    seq: int
    name: str
    fields: dict[str, Any]
    size: int
    latency: float | None = None

#: Whether to decode a message's fields: always, never, or as a filter on its name says.
Want = bool | Callable[[str], bool]

#: Requests awaiting replies that are remembered, the oldest forgotten first (its reply is
#: then named UnknownReply): a client that sends faster than it reads cannot grow this.
#: The server's 16-bit sequence numbers cannot tell further ones apart anyway.
MAX_PENDING = 1 << 16


@dataclass(slots=True)
class _Pending:
    name: str
    reply: rq.Struct | None
    time: float
    detail: Any = None
    replied: bool = False


@dataclass(frozen=True, slots=True)
class _Ext:
    name: str
    major: int
    first_event: int
    first_error: int
    spec: ExtensionSpec | None


class Decoder:
    """Per-connection decoding state; see the module docstring."""

    def __init__(self, endian: str = "<") -> None:
        self.endian = endian
        self.pending: dict[int, _Pending] = {}
        self.by_major: dict[int, _Ext] = {}
        self.extensions: dict[str, _Ext] = {}
        self._event_bases: list[_Ext] = []
        self._error_bases: list[_Ext] = []
        self.atoms: dict[int, str] = dict(PREDEFINED_ATOMS)

    # -- public ------------------------------------------------------------------------------

    def add_extension(self, name: str, major: int, first_event: int = 0,
                      first_error: int = 0) -> None:
        ext = _Ext(name, major, first_event, first_error, EXTENSIONS.get(name))
        self.extensions[name] = ext
        self.by_major[major] = ext
        if first_event:
            self._event_bases = sorted(
                (e for e in self.extensions.values() if e.first_event), key=lambda e: -e.first_event)
        if first_error:
            self._error_bases = sorted(
                (e for e in self.extensions.values() if e.first_error), key=lambda e: -e.first_error)

    def decode(self, direction: str, seq: int, msg: bytes, now: float = 0.0,
               fields: Want = True) -> Decoded:
        """Name and (when `fields`, or when `fields(name)` says so) fields of one whole
        message. Never raises."""
        try:
            if direction == "request":
                return self._request(seq, msg, now, fields)
            if direction == "reply":
                return self._reply(seq, msg, now, fields)
            if direction == "event":
                return self._event(seq, msg, fields)
            if direction == "error":
                return self._error(seq, msg, fields)
            if direction == "setup":
                return self._setup(msg, fields)
            if direction == "setup-reply":
                return self._setup_reply(msg, fields)
            return Decoded(direction, seq, "Unknown", {"length": len(msg)}, len(msg))
        except Exception as err:  # noqa: BLE001 - the decoder must never take the relay down
            return Decoded(direction, seq, "Undecodable",
                           {"error": f"{type(err).__name__}: {err}", "length": len(msg)},
                           len(msg))

    def request_name(self, msg: bytes) -> str:
        op = msg[0]
        ext = self.by_major.get(op)
        return request_name(op, msg[1] if len(msg) > 1 else 0,
                            ext.name if ext is not None else None)

    # -- messages ----------------------------------------------------------------------------

    def _request(self, seq: int, msg: bytes, now: float, want: Want) -> Decoded:
        e = self.endian
        op = msg[0]
        size = len(msg)
        name = self.request_name(msg)
        tracing = want is not False  # (atom names are learned for any trace, filtered or not)
        if type(want) is not bool:
            want = want(name)
        layout: rq.Struct | None = None
        reply: rq.Struct | None = None
        has_reply = False
        if op < FIRST_EXTENSION_OPCODE:
            cls = CORE_REQUESTS.get(op)
            if cls is not None:
                layout = cls._request
                reply = getattr(cls, "_reply", None)
                has_reply = reply is not None
        else:
            ext = self.by_major.get(op)
            minor = msg[1] if size > 1 else 0
            spec = ext.spec if ext is not None else None
            has_reply = may_reply(spec, minor)
            if spec is not None:
                layout, reply = spec.layouts.get(minor, (None, None))
        detail = None
        out: dict[str, Any] = {}
        body = msg
        if size >= 8 and msg[2] == 0 and msg[3] == 0:
            body = msg[:4] + msg[8:]  # BIG-REQUESTS: drop the extended length
            if want:
                out["big_request"] = True
        if op == QUERY_EXTENSION or op == GET_ATOM_NAME or (op == INTERN_ATOM and tracing):
            parsed = self._fields(xrequest.major_codes[op]._request, body, e, "request")
            detail = parsed.get("name") if op != GET_ATOM_NAME else parsed.get("atom")
            if want:
                out.update(parsed)
        elif want:
            if layout is not None:
                out.update(self._fields(layout, body, e, "request"))
            else:
                out["length"] = size
        if has_reply:
            pending = self.pending
            pending[seq] = _Pending(name, reply, now, detail)
            if len(pending) > MAX_PENDING:
                del pending[next(iter(pending))]
        for k in ("opcode", "minor"):
            out.pop(k, None)
        return Decoded("request", seq, name, out, size)

    def _prune(self, seq: int) -> None:
        pending = self.pending
        while pending:
            first = next(iter(pending))
            if first >= seq:
                break
            del pending[first]

    def _reply(self, seq: int, msg: bytes, now: float, want: Want) -> Decoded:
        self._prune(seq)
        p = self.pending.get(seq)
        size = len(msg)
        if p is None:
            want = want if type(want) is bool else want("UnknownReply")
            return Decoded("reply", seq, "UnknownReply", {"length": size} if want else {}, size)
        latency = None
        if not p.replied:
            p.replied = True
            latency = now - p.time
        if p.name == "ListFontsWithInfo":
            if size > 1 and msg[1] == 0:  # the last reply has a name of length 0
                del self.pending[seq]
        elif p.name not in MULTI_REPLY:
            del self.pending[seq]
        out: dict[str, Any] = {}
        name = p.name
        if type(want) is not bool:
            want = want(name)
        if name == "QueryExtension" and size >= 12:
            present, major, first_event, first_error = msg[8], msg[9], msg[10], msg[11]
            if present:
                self.add_extension(str(p.detail), major, first_event, first_error)
            if want:
                out = {"present": bool(present), "major_opcode": major,
                       "first_event": first_event, "first_error": first_error,
                       "name": p.detail}
            return Decoded("reply", seq, name, out, size, latency)
        if want or name in ("InternAtom", "GetAtomName"):
            if p.reply is not None:
                out = self._fields(p.reply, msg, self.endian, "reply")
                out.pop("sequence_number", None)
            else:
                out = {"length": size}
            if name == "InternAtom" and out.get("atom") and isinstance(p.detail, str):
                self.atoms[out["atom"]] = p.detail
            elif name == "GetAtomName" and isinstance(p.detail, int) and "name" in out:
                self.atoms[p.detail] = out["name"]
        return Decoded("reply", seq, name, out, size, latency)

    def _event(self, seq: int, msg: bytes, want: Want) -> Decoded:
        self._prune(seq)
        e = self.endian
        code = msg[0] & EVENT_CODE_MASK
        size = len(msg)
        head: dict[str, Any] = {}  # fields before the layout's
        bare: dict[str, Any] = {}  # what stands for the layout's fields when it has none
        body = msg
        layout: rq.Struct | None
        if code == GENERIC_EVENT:
            ext = self.by_major.get(msg[1])
            (evtype,) = struct.unpack_from(e + "H", msg, 8)
            spec = ext.spec if ext is not None else None
            ename = spec.generic.get(evtype) if spec is not None else None
            extname = ext.name if ext is not None else f"Extension{msg[1]}"
            name = f"{extname}:{ename or evtype}"
            layout = spec.generic_layouts.get(evtype) if spec is not None else None
            head = {"evtype": evtype}
            body = msg[10:]
        elif code in CORE_EVENTS:
            cls = CORE_EVENTS[code]
            name, layout = cls.__name__, cls._fields
        else:
            name, layout = self._ext_event(code, msg)
            bare = {"code": code}
        if type(want) is not bool:
            want = want(name)
        out: dict[str, Any] = {}
        if want:
            out = head | (self._fields(layout, body, e, "event") if layout is not None
                          else {**bare, "length": size})
            out.pop("type", None)
            out.pop("sequence_number", None)
            if msg[0] & 0x80:
                out["send_event"] = True
        return Decoded("event", seq, name, out, size)

    def _ext_event(self, code: int, msg: bytes) -> tuple[str, rq.Struct | None]:
        for ext in self._event_bases:
            if code >= ext.first_event:
                offset = code - ext.first_event
                spec = ext.spec
                if spec is None or offset not in spec.events:
                    if spec is not None and spec.events and offset > max(spec.events):
                        break
                    return f"{ext.name}:{offset}", None
                ename = spec.events[offset]
                if isinstance(ename, dict):
                    sub = msg[1]
                    layout = spec.event_layouts.get((offset, sub), spec.event_layouts.get(offset))
                    return f"{ext.name}:{ename.get(sub, f'{offset}.{sub}')}", layout
                return f"{ext.name}:{ename}", spec.event_layouts.get(offset)
        return f"Event{code}", None

    def _error(self, seq: int, msg: bytes, want: Want) -> Decoded:
        self._prune(seq)
        self.pending.pop(seq, None)
        code = msg[1]
        name = None
        if code < len(CORE_ERRORS):
            name = CORE_ERRORS[code]
        else:
            for ext in self._error_bases:
                if code >= ext.first_error:
                    offset = code - ext.first_error
                    errs = ext.spec.errors if ext.spec is not None else []
                    if offset < len(errs):
                        name = f"{ext.name}:{errs[offset]}"
                    elif ext.spec is None:
                        name = f"{ext.name}:Error{offset}"
                    if name is not None:
                        break
            if name is None:
                name = f"Error{code}"
        if type(want) is not bool:
            want = want(name)
        out: dict[str, Any] = {}
        if want:
            f = self._fields(EXTENSION_ERROR, msg, self.endian, "error")
            out = {"code": code, "bad_value": f.get("bad_value"),
                   "minor_opcode": f.get("minor_opcode"), "major_opcode": f.get("major_opcode")}
            major = f.get("major_opcode")
            if isinstance(major, int):
                minor = f.get("minor_opcode") or 0
                out["request"] = self.request_name(bytes((major, minor & 0xFF)))
        return Decoded("error", seq, name, out, len(msg))

    def _setup(self, msg: bytes, want: Want) -> Decoded:
        if msg[:1] == b"B":
            self.endian = ">"
        elif msg[:1] == b"l":
            self.endian = "<"
        out: dict[str, Any] = {}
        if type(want) is not bool:
            want = want("Setup")
        if want and len(msg) >= 12:
            e = self.endian
            major, minor, n, d = struct.unpack_from(e + "HHHH", msg, 2)
            out = {"byte_order": "MSB" if e == ">" else "LSB", "protocol_major": major,
                   "protocol_minor": minor,
                   "auth_name": bytes(msg[12 : 12 + n]).decode("latin-1"),
                   "auth_data_length": d}  # never the cookie itself
        return Decoded("setup", 0, "Setup", out, len(msg))

    def _setup_reply(self, msg: bytes, want: Want) -> Decoded:
        from ..setup import parse_setup_reply

        out: dict[str, Any] = {}
        if type(want) is not bool:
            want = want("Setup")
        if want:
            r = parse_setup_reply(msg, self.endian)
            out = {"status": r.status, "protocol_major": r.major, "protocol_minor": r.minor}
            if r.status == 1:
                out.update(release=r.release, vendor=r.vendor,
                           resource_id_base=r.resource_id_base,
                           resource_id_mask=r.resource_id_mask,
                           max_request_length=r.max_request_length)
                if len(msg) >= 32:
                    out["roots"] = msg[28]
            else:
                out["reason"] = r.reason
        return Decoded("setup-reply", 0, "Setup", out, len(msg))

    # -- layouts -----------------------------------------------------------------------------

    def embedded_event(self, msg: bytes) -> dict[str, Any]:
        """An event carried inside another message (SendEvent's): its name and fields."""
        ev = self._event(0, msg, True)
        return {"name": ev.name, **ev.fields}

    def _fields(self, layout: rq.Struct, data: bytes, e: str, kind: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            parse(layout, data, e, self, out)
        except Exception as err:  # noqa: BLE001 - content that does not fit, whatever the way
            out["error"] = f"{kind} does not fit its layout: {type(err).__name__}: {err}"
            out["length"] = len(data)
        return out
