"""The local API's framing: newline-delimited JSON objects, one per line, without I/O.

Client to daemon, a request: ``{"id": 7, "op": "register", "name": ..., ...}``.
Daemon to client, a reply carrying the request's id:
``{"id": 7, "ok": true, ...}`` or ``{"id": 7, "ok": false, "error": {"code", "message"}}``,
and unsolicited watch events: ``{"event": "added", "watch": "_x11._tcp", "service": {...}}``.

JSON lines were chosen because every language and ``socat`` speak them, a human can type
them, and a line is a frame: a bad request is detected at its newline, answered with an error
carrying its id (``null`` when the id cannot be read, as JSON-RPC does), and the next line is
read as usual. Only a request line longer than ``max_line`` ends the connection, since its end
cannot be found without buffering it. Replies have no length cap (a lookup answer grows with
the services known); ``LineSplitter`` cuts them without rescanning what it has seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from discovery import schema

MAX_LINE = 64 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not a request; the connection is to be closed."""


@dataclass(frozen=True)
class Message:
    body: dict[str, Any]


@dataclass(frozen=True)
class Invalid:
    """A bad request: ``id`` is its id when one could be read, for the error reply; ``fatal``
    when the stream cannot be read further (the daemon closes the connection)."""

    message: str
    id: Any = None
    code: str = "bad-request"
    fatal: bool = False


class LineSplitter:
    """Cut a byte stream into lines (without their newline). Each byte is searched once, so a
    line arriving in many pieces costs time in proportion to its length. ``max_line``: the
    longest line the caller accepts (``overflow`` turns true past it), or ``None``."""

    def __init__(self, max_line: int | None = None) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._scanned = 0
        self.overflow = False

    def receive_data(self, data: bytes) -> list[bytes]:
        if self.overflow:
            return []
        buf = self._buf
        buf += data
        out: list[bytes] = []
        start = 0
        while True:
            nl = buf.find(b"\n", max(start, self._scanned))
            if nl < 0:
                break
            if self.max_line is not None and nl - start > self.max_line:
                return self._overflow(out)
            out.append(bytes(buf[start:nl]))
            start = nl + 1
        del buf[:start]
        self._scanned = len(buf)  # no newline in what is left
        if self.max_line is not None and len(buf) > self.max_line:
            return self._overflow(out)
        return out

    def _overflow(self, out: list[bytes]) -> list[bytes]:
        self.overflow = True
        self._buf.clear()
        return out


class LineDecoder:
    """Feed bytes with ``receive_data``; get a ``Message`` or an ``Invalid`` per request line.

    After a fatal ``Invalid`` (a line over ``max_line``) the decoder is spent: there is no
    safe way to find the next frame boundary in a stream that broke the rules.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._lines = LineSplitter(max_line)
        self.failed = False

    def receive_data(self, data: bytes) -> list[Message | Invalid]:
        if self.failed:
            return []
        out: list[Message | Invalid] = [decode_line(line) for line in self._lines.receive_data(data) if line.strip()]
        if self._lines.overflow:
            self.failed = True
            out.append(Invalid(f"request line longer than {self.max_line} bytes; closing the connection", fatal=True))
        return out


def decode_line(line: bytes) -> Message | Invalid:
    """One request line: JSON, an object, valid per ``schema``.

    JSON nested deeper than the parser's recursion limit (about 1,000 levels) is refused as it
    is found, without harm: the parser checks its depth, and a line is at most ``max_line``
    bytes. Anything shallower that is not what ``schema`` declares (no request needs more than
    3 levels) is refused by type, so deep values never reach a handler."""
    try:
        body = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return Invalid("request is not UTF-8")
    except RecursionError:
        return Invalid("request nests arrays or objects too deeply")
    except ValueError as e:
        return Invalid(f"request is not JSON: {e}")
    if not isinstance(body, dict):
        return Invalid("request must be a JSON object")
    id_ = body.get("id")
    if id_ is not None and (isinstance(id_, bool) or not isinstance(id_, (int, str))):
        return Invalid("request id must be an integer or a string")
    refusal = schema.check(body)
    if refusal is not None:
        return Invalid(refusal.message, id_, refusal.code)
    return Message(body)


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def ok(id_: Any, **fields: Any) -> bytes:
    return encode({"id": id_, "ok": True, **fields})


def error(id_: Any, code: str, message: str) -> bytes:
    return encode({"id": id_, "ok": False, "error": {"code": code, "message": message}})
