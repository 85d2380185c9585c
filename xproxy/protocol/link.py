"""The link between an app host and a display host: many X connections over one stream.

Theory of operation: the stream (TLS in practice) carries frames, each `type (1 byte),
channel (4 bytes), length (4 bytes, big-endian)` then the payload. Channel 0 is the link
itself (HELLO); the app host opens channels, one per X client. Flow control is per channel,
as in SSH's connection protocol: a sender may have at most `window` unacknowledged payload
bytes in flight on a channel; the receiver returns CREDIT once it has handed data on, so one
busy channel cannot buffer without bound or starve the others.

    HELLO  ch 0   JSON object          both ends, first frame
    OPEN   ch N   JSON object          app host: a new X connection
    DATA   ch N   bytes                either end
    CREDIT ch N   u32                  either end: the peer may send that many more bytes
    CLOSE  ch N   UTF-8 reason         either end: no more data on N

Compression: a HELLO whose JSON carries `"z": "zstd"` says that everything its sender sends
after it is one zstandard stream, flushed at the end of each `data_to_send` (so no frame
waits for more input). Each direction decides for itself; `bytes_out`/`bytes_in` count the
wire, `raw_out`/`raw_in` the frames before compression and after decompression.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Union

from .errors import X11ProtocolError

try:
    import zstandard
except ImportError:  # pragma: no cover - a dependency; a link without it just does not compress
    zstandard = None  # type: ignore[assignment]

HELLO, OPEN, DATA, CREDIT, CLOSE = 1, 2, 3, 4, 5
HEADER = struct.Struct(">BII")
MAX_PAYLOAD = 256 * 1024
INITIAL_WINDOW = 1024 * 1024
MAX_CHANNELS = 4096


class LinkProtocolError(X11ProtocolError):
    """The peer broke the link protocol; the whole link must be closed."""


@dataclass(frozen=True, slots=True)
class Hello:
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Opened:
    channel: int
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Data:
    channel: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Credit:
    channel: int
    amount: int


@dataclass(frozen=True, slots=True)
class Closed:
    channel: int
    reason: str


Event = Union[Hello, Opened, Data, Credit, Closed]


class Link:
    """One end of a link, without I/O, in the style of h2: `receive_data` returns events,
    the other methods queue frames, and `data_to_send` takes what is queued.

    Channel numbers are never reused, so a frame for a channel this end has closed (the
    peer sent it before our CLOSE reached it) is dropped, and a CLOSE is always answered
    with a CLOSE, after which both ends forget the channel."""

    def __init__(self, window: int = INITIAL_WINDOW, compress_level: int | None = None) -> None:
        self.initial_window = window
        self.compress_level = compress_level if zstandard is not None else None
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._wire: list[bytes] = []  # sent uncompressed ahead of `_out` (our HELLO)
        self._z: Any = None
        self._dz: Any = None
        self.raw_in = 0
        self.raw_out = 0
        self.hello_received: dict[str, Any] | None = None
        self.send_window: dict[int, int] = {}  # channels open, and what we may still send
        self.closing: set[int] = set()  # closed by us, waiting for the peer's CLOSE
        self.bytes_in = 0
        self.bytes_out = 0

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        self.raw_out += len(out)
        if self._z is not None and out:
            out = self._z.compress(out) + self._z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        if self._wire:
            out = b"".join(self._wire) + out
            self.raw_out += sum(map(len, self._wire))
            self._wire.clear()
        self.bytes_out += len(out)
        return out

    # -- sending -------------------------------------------------------------------------

    def _frame(self, kind: int, channel: int, payload: bytes = b"") -> bytes:
        return HEADER.pack(kind, channel, len(payload)) + payload

    def hello(self, info: dict[str, Any]) -> None:
        """Queue our HELLO (first, before any other frame); from here on we compress if
        asked to."""
        if self.compress_level is not None:
            info = dict(info, z="zstd")
        self._wire.extend(self._out)
        self._out.clear()
        self._wire.append(self._frame(HELLO, 0, json.dumps(info).encode()))
        if self.compress_level is not None:
            self._z = zstandard.ZstdCompressor(level=self.compress_level).compressobj()

    def open(self, channel: int, info: dict[str, Any] | None = None) -> None:
        if channel <= 0 or channel in self.send_window or channel in self.closing:
            raise ValueError(f"channel {channel} is not free")
        self.send_window[channel] = self.initial_window
        self._out.append(self._frame(OPEN, channel, json.dumps(info or {}).encode()))

    def send(self, channel: int, data: bytes) -> None:
        """Queue `data` on `channel`; the window may go below zero by this one write (the
        adapter stops reading its source once `window(channel) <= 0`)."""
        if channel not in self.send_window:
            return
        self.send_window[channel] -= len(data)
        if len(data) <= MAX_PAYLOAD:
            self._out.append(self._frame(DATA, channel, data))
            return
        view = memoryview(data)
        for i in range(0, len(data), MAX_PAYLOAD):
            self._out.append(self._frame(DATA, channel, bytes(view[i : i + MAX_PAYLOAD])))

    def credit(self, channel: int, amount: int) -> None:
        if channel in self.send_window and amount > 0:
            self._out.append(self._frame(CREDIT, channel, struct.pack(">I", amount)))

    def close(self, channel: int, reason: str = "") -> None:
        if self.send_window.pop(channel, None) is None:
            return
        self.closing.add(channel)
        self._out.append(self._frame(CLOSE, channel, reason.encode("utf-8", "replace")[:1024]))

    def window(self, channel: int) -> int:
        return self.send_window.get(channel, 0)

    # -- receiving -----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        self.bytes_in += len(data)
        if self._dz is not None:
            data = self._decompress(data)
        self.raw_in += len(data)
        buf = self._buf
        buf += data
        events: list[Event] = []
        pos = 0
        while len(buf) - pos >= HEADER.size:
            kind, channel, length = HEADER.unpack_from(buf, pos)
            if length > MAX_PAYLOAD:
                raise LinkProtocolError(f"frame of {length} bytes exceeds {MAX_PAYLOAD}")
            end = pos + HEADER.size + length
            if len(buf) < end:
                break
            payload = bytes(buf[pos + HEADER.size : end])
            pos = end
            event = self._event(kind, channel, payload)
            if event is not None:
                events.append(event)
                if isinstance(event, Hello) and event.info.get("z") is not None:
                    if event.info["z"] != "zstd" or zstandard is None:
                        raise LinkProtocolError(f"unknown link compression {event.info['z']!r}")
                    self._dz = zstandard.ZstdDecompressor().decompressobj()
                    rest = bytes(buf[pos:])  # what followed the HELLO is compressed
                    del buf[pos:]
                    plain = self._decompress(rest)
                    self.raw_in += len(plain) - len(rest)
                    buf += plain
        del buf[:pos]
        return events

    def _decompress(self, data: bytes) -> bytes:
        try:
            return self._dz.decompress(data)  # type: ignore[no-any-return]
        except zstandard.ZstdError as err:
            raise LinkProtocolError(f"bad compressed data on the link: {err}") from None

    def _event(self, kind: int, channel: int, payload: bytes) -> Event | None:
        if kind in (DATA, CREDIT) and channel not in self.send_window:
            if channel in self.closing:
                return None  # sent before our CLOSE reached the peer
            raise LinkProtocolError(f"frame type {kind} on channel {channel}, which is not open")
        if kind == DATA:
            return Data(channel, payload)
        if kind == CREDIT:
            if len(payload) != 4:
                raise LinkProtocolError("CREDIT frame with a bad payload")
            (amount,) = struct.unpack(">I", payload)
            self.send_window[channel] += amount
            return Credit(channel, amount)
        if kind == CLOSE:
            if channel in self.closing:
                self.closing.discard(channel)
                return None  # the answer to our CLOSE
            if channel not in self.send_window:
                raise LinkProtocolError(f"CLOSE of channel {channel}, which is not open")
            self.close(channel)  # answer it; both ends now forget the channel
            self.closing.discard(channel)
            return Closed(channel, payload.decode("utf-8", "replace"))
        if kind in (HELLO, OPEN):
            try:
                info = json.loads(payload) if payload else {}
            except ValueError as err:
                raise LinkProtocolError(f"bad JSON in a {'HELLO' if kind == HELLO else 'OPEN'} "
                                        f"frame: {err}") from None
            if not isinstance(info, dict):
                raise LinkProtocolError("HELLO/OPEN payload must be a JSON object")
            if kind == HELLO:
                if channel != 0:
                    raise LinkProtocolError("HELLO on a channel other than 0")
                self.hello_received = info
                return Hello(info)
            if channel == 0 or channel in self.send_window or channel in self.closing:
                raise LinkProtocolError(f"OPEN of channel {channel}, which is in use")
            if len(self.send_window) >= MAX_CHANNELS:
                raise LinkProtocolError(f"more than {MAX_CHANNELS} channels")
            self.send_window[channel] = self.initial_window
            return Opened(channel, info)
        raise LinkProtocolError(f"unknown frame type {kind}")
