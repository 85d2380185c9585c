"""The local API's framing: newline-delimited JSON objects, one per line, without I/O.

Client to daemon, a request: ``{"id": 7, "op": "register", "name": ..., ...}``.
Daemon to client, a reply carrying the request's id:
``{"id": 7, "ok": true, ...}`` or ``{"id": 7, "ok": false, "error": {"code", "message"}}``,
and unsolicited watch events: ``{"event": "added", "watch": "_x11._tcp", "service": {...}}``.

JSON lines were chosen because every language and ``socat`` speak them, a human can type
them, and a line is a frame: a bad frame is detected at its newline (or at ``max_line``
bytes, whichever comes first) without any state left behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_LINE = 64 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not a request; the connection is to be closed."""


@dataclass(frozen=True)
class Message:
    body: dict[str, Any]


@dataclass(frozen=True)
class Invalid:
    """A bad frame: ``id`` is the request id when one could be read, for the error reply."""

    message: str
    id: Any = None


class LineDecoder:
    """Feed bytes with ``receive_data``; get ``Message`` or, once, ``Invalid``.

    After an ``Invalid`` the decoder is spent (the daemon closes the connection): there is
    no safe way to find the next frame boundary in a stream that broke the rules.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self.failed = False

    def receive_data(self, data: bytes) -> list[Message | Invalid]:
        if self.failed:
            return []
        self._buf += data
        out: list[Message | Invalid] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self.max_line:
                    return self._fail(out, f"request line longer than {self.max_line} bytes")
                return out
            if nl > self.max_line:
                return self._fail(out, f"request line longer than {self.max_line} bytes")
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if not line.strip():
                continue
            item = decode_line(line)
            if isinstance(item, Invalid):
                return self._fail(out, item.message, item.id)
            out.append(item)

    def _fail(self, out: list[Message | Invalid], message: str, id_: Any = None) -> list[Message | Invalid]:
        self.failed = True
        self._buf.clear()
        out.append(Invalid(message, id_))
        return out


def decode_line(line: bytes) -> Message | Invalid:
    try:
        body = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return Invalid("request is not UTF-8")
    except ValueError as e:
        return Invalid(f"request is not JSON: {e}")
    if not isinstance(body, dict):
        return Invalid("request must be a JSON object")
    id_ = body.get("id")
    if id_ is not None and (isinstance(id_, bool) or not isinstance(id_, (int, str))):
        return Invalid("request id must be an integer or a string")
    if not isinstance(body.get("op"), str):
        return Invalid("request has no 'op' string", id_)
    return Message(body)


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def ok(id_: Any, **fields: Any) -> bytes:
    return encode({"id": id_, "ok": True, **fields})


def error(id_: Any, code: str, message: str) -> bytes:
    return encode({"id": id_, "ok": False, "error": {"code": code, "message": message}})
