"""The link between an app host and a display host: many X connections over one stream.

Theory of operation: the stream (TLS in practice) carries frames, each `type (1 byte),
channel (4 bytes), length (4 bytes, big-endian)` then the payload. Channel 0 is the link
itself (HELLO, ACK, PING, PONG, BYE); the app host opens channels, one per X client. Flow control
is per channel, as in SSH's connection protocol: a sender may have at most `window`
unacknowledged payload bytes in flight on a channel; the receiver returns CREDIT once it has
handed data on, so one busy channel cannot buffer without bound or starve the others.

    HELLO  ch 0   JSON object          both ends, first frame of each connection
    OPEN   ch N   JSON object          app host: a new X connection
    DATA   ch N   bytes                either end
    CREDIT ch N   u32                  either end: the peer may send that many more bytes
    CLOSE  ch N   UTF-8 reason         either end: no more data on N
    ACK    ch 0   u64                  either end: I have received that many frames
    PING   ch 0   up to 64 bytes       either end: answer with a PONG (keepalive)
    PONG   ch 0   the PING's payload
    BYE    ch 0   UTF-8 reason         either end, last frame: the session ends cleanly; the
                                       peer closes its channels and keeps nothing to resume
    CHANGED ch 0  JSON object          display host, to an app host whose HELLO said
                                       `"watch": 1`: answers it may remember changed
                                       (export/watch.py says what the object holds)

Compression: a HELLO whose JSON carries `"z": "zstd"` says that everything its sender sends
after it on this connection is one zstandard stream, flushed at the end of each
`data_to_send` (so no frame waits for more input). Each direction decides for itself;
`bytes_out`/`bytes_in` count the wire, `raw_out`/`raw_in` the frames before compression and
after decompression.

Resumption (waypipe's "recon", mosh's idea of a reliable state independent of the
connection): OPEN, DATA, CREDIT and CLOSE are *sequenced* — each carries an implicit number,
the count of sequenced frames its sender sent before it. A `Link` is one end of a link
*session*, which may outlive its connections. It keeps every sequenced frame it sent
(uncompressed) in a replay queue until the peer acknowledges it: an end that says `"recon": 1`
in its HELLO sends ACK (the count of sequenced frames it has received) once 64 frames or
256 KB arrived since its last ACK, and whenever its adapter asks (`ack_due`/`ack`, on an
idle timer). Its HELLO also says `"received": N`. When a connection is lost, both ends call
`new_connection()` and exchange HELLOs on the next one; each then calls `resume(n)` with the
peer's `received`, drops what that acknowledges and sends the rest again, in order, after
its new HELLO (a new connection starts new compression streams: HELLO is never compressed).
So each sequenced frame reaches the peer exactly once, in order, whatever the connections did.
Which session a new connection resumes, and who may resume it, is the adapters' business
(`SessionTable` below keeps the display host's sessions, with injected time).

Memory: the replay queue holds what the peer has not acknowledged. DATA in it is bounded by
the channel windows (a sender stops at the window; credit comes back only for data the peer
received, and the peer ACKs within 64 frames or 256 KB of receiving) — about one window per
channel in flight plus one window not yet acknowledged, plus 256 KB. CREDIT, OPEN and CLOSE are
small and follow from DATA and channels. While no connection is up, writes still queue here,
and the windows stop the sources as they do on a slow connection. A peer that gives credit but
never acknowledges is a protocol error once MAX_UNACKED bytes wait.
"""

from __future__ import annotations

import json
import secrets
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..x11.errors import X11ProtocolError

try:
    import zstandard
except ImportError:  # pragma: no cover - a dependency; a link without it just does not compress
    zstandard = None  # type: ignore[assignment]

HELLO, OPEN, DATA, CREDIT, CLOSE, ACK, PING, PONG, BYE = 1, 2, 3, 4, 5, 6, 7, 8, 9
CHANGED = 10  # not sequenced: an end that loses its connection forgets what it was told
SEQUENCED = frozenset((OPEN, DATA, CREDIT, CLOSE))
HEADER = struct.Struct(">BII")
U64 = struct.Struct(">Q")
MAX_PAYLOAD = 256 * 1024
MAX_PING = 64
INITIAL_WINDOW = 1024 * 1024
MAX_CHANNELS = 4096
#: ACK once this many sequenced frames, or bytes of them, arrived since the last ACK.
ACK_FRAMES = 64
#: A peer that leaves this much of what we sent unacknowledged (it would have to give credit
#: for data it never acknowledges) is broken or hostile: the link is closed, not our memory.
MAX_UNACKED = 64 * 1024 * 1024
ACK_BYTES = 256 * 1024


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


@dataclass(frozen=True, slots=True)
class Bye:
    """The peer ends the session cleanly: it will not resume it."""

    reason: str


@dataclass(frozen=True, slots=True)
class DisplayChanged:
    info: dict[str, Any]


Event = Hello | Opened | Data | Credit | Closed | Bye | DisplayChanged


class Link:
    """One end of a link session, without I/O, in the style of h2: `receive_data` returns
    events, the other methods queue frames, and `data_to_send` takes what is queued.

    Channel numbers are never reused, so a frame for a channel this end has closed (the
    peer sent it before our CLOSE reached it) is dropped, and a CLOSE is always answered
    with a CLOSE, after which both ends forget the channel.

    `recon` (the default) announces in our HELLO that we ACK and answer PING, and keeps the
    replay queue; a peer whose HELLO does not announce it gets no ACK or PING from us, and we
    keep nothing for it (its session cannot be resumed)."""

    def __init__(self, window: int = INITIAL_WINDOW, compress_level: int | None = None,
                 recon: bool = True) -> None:
        self.initial_window = window
        self.compress_level = compress_level if zstandard is not None else None
        self.recon = recon
        self._buf = bytearray()
        self._pending: list[bytes] = []  # sequenced frames not yet on this connection's wire
        self._replay: deque[bytes] = deque()  # on the wire, not yet acknowledged
        self.replay_bytes = 0
        self.acked = 0  # sequenced frames the peer has acknowledged (the replay queue's first)
        self._out: list[bytes] = []  # link frames (ACK, PING, PONG): never replayed
        self._bye: bytes | None = None  # our BYE, sent after everything else
        self._wire: list[bytes] = []  # sent uncompressed ahead of everything (our HELLO)
        self._held = False  # a new connection: no sequenced frame goes out until `resume`
        self._z: Any = None
        self._dz: Any = None
        self.raw_in = 0
        self.raw_out = 0
        self.hello_received: dict[str, Any] | None = None
        self.peer_recon: bool | None = None  # unknown until the peer's HELLO
        self.received = 0  # sequenced frames received
        self._ack_sent = 0  # `received` as of our last ACK (or HELLO)
        self._bytes_since_ack = 0
        self.send_window: dict[int, int] = {}  # channels open, and what we may still send
        self.closing: set[int] = set()  # closed by us, waiting for the peer's CLOSE
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def sent(self) -> int:
        """Sequenced frames queued so far (on the wire or not)."""
        return self.acked + len(self._replay) + len(self._pending)

    def data_to_send(self) -> bytes:
        if self._held:
            out = b""
        else:
            pending = self._pending
            if pending and self.peer_recon is not False:
                self._replay.extend(pending)
                self.replay_bytes += sum(map(len, pending))
            out = b"".join(self._out) + b"".join(pending)
            self._out.clear()
            self._pending = []
            if self._bye is not None:
                out += self._bye
                self._bye = None
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
        """Queue our HELLO, first on this connection; from here on we compress if asked to.
        With `recon`, it says so and how many sequenced frames we have received."""
        if self.compress_level is not None:
            info = dict(info, z="zstd")
        if self.recon:
            info = dict(info, recon=1, received=self.received)
            self._ack_sent = self.received
            self._bytes_since_ack = 0
        self._wire.append(self._frame(HELLO, 0, json.dumps(info).encode()))
        if self.compress_level is not None:
            self._z = zstandard.ZstdCompressor(level=self.compress_level).compressobj()

    def open(self, channel: int, info: dict[str, Any] | None = None) -> None:
        if channel <= 0 or channel in self.send_window or channel in self.closing:
            raise ValueError(f"channel {channel} is not free")
        self.send_window[channel] = self.initial_window
        self._pending.append(self._frame(OPEN, channel, json.dumps(info or {}).encode()))

    def send(self, channel: int, data: bytes) -> None:
        """Queue `data` on `channel`; the window may go below zero by this one write (the
        adapter stops reading its source once `window(channel) <= 0`)."""
        if channel not in self.send_window:
            return
        self.send_window[channel] -= len(data)
        if len(data) <= MAX_PAYLOAD:
            self._pending.append(self._frame(DATA, channel, data))
            return
        view = memoryview(data)
        for i in range(0, len(data), MAX_PAYLOAD):
            self._pending.append(self._frame(DATA, channel, bytes(view[i : i + MAX_PAYLOAD])))

    def credit(self, channel: int, amount: int) -> None:
        if channel in self.send_window and amount > 0:
            self._pending.append(self._frame(CREDIT, channel, struct.pack(">I", amount)))

    def close(self, channel: int, reason: str = "") -> None:
        if self.send_window.pop(channel, None) is None:
            return
        self.closing.add(channel)
        self._pending.append(self._frame(CLOSE, channel,
                                         reason.encode("utf-8", "replace")[:1024]))

    def bye(self, reason: str = "") -> None:
        """Queue a BYE, sent after every frame queued before or after it on this connection:
        the session ends here, and the peer need not keep it for a resumption."""
        self._bye = self._frame(BYE, 0, reason.encode("utf-8", "replace")[:1024])

    def window(self, channel: int) -> int:
        return self.send_window.get(channel, 0)

    # -- acknowledgement, keepalive and resumption ----------------------------------------

    def ack_due(self) -> bool:
        """Whether we received sequenced frames the peer has not heard us acknowledge (the
        adapter's idle timer calls `ack` then)."""
        return bool(self.peer_recon) and not self._held and self.received > self._ack_sent

    def ack(self) -> None:
        if self.peer_recon and not self._held:
            self._out.append(self._frame(ACK, 0, U64.pack(self.received)))
            self._ack_sent = self.received
            self._bytes_since_ack = 0

    def changed(self, info: dict[str, Any]) -> None:
        """Queue a CHANGED frame (the display host's watch saw a change), ahead of the
        channels' data queued with it; nothing while no connection is up."""
        if not self._held:
            self._out.append(self._frame(CHANGED, 0, json.dumps(info).encode()[:MAX_PAYLOAD]))

    def ping(self, payload: bytes = b"") -> None:
        """Queue a PING (only to a peer that announced `recon`: older ends do not know it)."""
        if self.peer_recon and not self._held:
            self._out.append(self._frame(PING, 0, payload[:MAX_PING]))

    def new_connection(self) -> None:
        """The connection is gone (or about to be replaced): forget its wire state. Sequenced
        frames keep queueing; none goes out until `resume` says where the peer is."""
        self._buf = bytearray()
        self._out.clear()
        self._wire.clear()
        self._z = self._dz = None
        self.hello_received = None
        self._held = True

    def adopt(self, fresh: Link) -> None:
        """Take over the receiving side of a new connection whose first frames a `fresh`
        Link has read (the display host reads a HELLO before it knows which session it
        resumes). Nothing sequenced may have come before our answer."""
        if fresh.received or fresh.send_window or fresh.closing:
            raise LinkProtocolError("frames before the resumption was answered")
        self._buf = fresh._buf
        self._dz = fresh._dz
        self.hello_received = fresh.hello_received
        self.peer_recon = fresh.peer_recon
        self.bytes_in += fresh.bytes_in
        self.raw_in += fresh.raw_in
        self.bytes_out += fresh.bytes_out
        self.raw_out += fresh.raw_out

    def resume(self, peer_received: Any) -> int:
        """The peer has received `peer_received` of our sequenced frames (its HELLO says so):
        drop those, send the rest again after our HELLO. Returns how many go again."""
        if self.peer_recon is False:
            # the peer keeps no replay, so a resumption could lose frames either way
            raise LinkProtocolError("a resumption with a peer that does not announce recon")
        sent_on_wire = self.acked + len(self._replay)
        if not isinstance(peer_received, int) or isinstance(peer_received, bool) \
                or not self.acked <= peer_received <= sent_on_wire:
            raise LinkProtocolError(
                f"the peer says it received {peer_received!r} frames; we sent {sent_on_wire}, "
                f"of which it had acknowledged {self.acked}")
        self._drop_acked(peer_received)
        again = len(self._replay)
        self._pending[:0] = self._replay
        self._replay.clear()
        self.replay_bytes = 0
        self._held = False
        return again

    def _drop_acked(self, upto: int) -> None:
        replay = self._replay
        for _ in range(upto - self.acked):
            self.replay_bytes -= len(replay.popleft())
        self.acked = upto

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
            if kind in SEQUENCED:
                self.received += 1
                self._bytes_since_ack += HEADER.size + length
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
        if self.received - self._ack_sent >= ACK_FRAMES or self._bytes_since_ack >= ACK_BYTES:
            self.ack()
        if self.replay_bytes > MAX_UNACKED:
            raise LinkProtocolError(f"the peer left {self.replay_bytes} bytes unacknowledged "
                                    f"(more than {MAX_UNACKED})")
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
        if kind == BYE:
            if channel != 0:
                raise LinkProtocolError(f"BYE on channel {channel}")
            if len(payload) > 1024:
                raise LinkProtocolError(f"BYE of {len(payload)} bytes")
            return Bye(payload.decode("utf-8", "replace"))
        if kind in (ACK, PING, PONG):
            if channel != 0:
                raise LinkProtocolError(f"link frame type {kind} on channel {channel}")
            if kind == ACK:
                self._receive_ack(payload)
            elif kind == PING:
                if len(payload) > MAX_PING:
                    raise LinkProtocolError(f"PING of {len(payload)} bytes")
                self._out.append(self._frame(PONG, 0, payload))
            return None
        if kind in (HELLO, OPEN, CHANGED):
            what = {HELLO: "HELLO", OPEN: "OPEN", CHANGED: "CHANGED"}[kind]
            try:
                info = json.loads(payload) if payload else {}
            except ValueError as err:
                raise LinkProtocolError(f"bad JSON in a {what} frame: {err}") from None
            if not isinstance(info, dict):
                raise LinkProtocolError(f"{what} payload must be a JSON object")
            if kind == CHANGED:
                if channel != 0:
                    raise LinkProtocolError(f"CHANGED frame on channel {channel}")
                return DisplayChanged(info)
            if kind == HELLO:
                if channel != 0:
                    raise LinkProtocolError("HELLO on a channel other than 0")
                if self.hello_received is not None:
                    raise LinkProtocolError("a second HELLO on one connection")
                self.hello_received = info
                self.peer_recon = bool(self.recon and info.get("recon") == 1)
                if not self.peer_recon:  # nobody will ACK: keep nothing
                    self._drop_acked(self.acked + len(self._replay))
                return Hello(info)
            if channel == 0 or channel in self.send_window or channel in self.closing:
                raise LinkProtocolError(f"OPEN of channel {channel}, which is in use")
            if len(self.send_window) >= MAX_CHANNELS:
                raise LinkProtocolError(f"more than {MAX_CHANNELS} channels")
            self.send_window[channel] = self.initial_window
            return Opened(channel, info)
        raise LinkProtocolError(f"unknown frame type {kind}")

    def _receive_ack(self, payload: bytes) -> None:
        if len(payload) != U64.size:
            raise LinkProtocolError("ACK frame with a bad payload")
        (count,) = U64.unpack(payload)
        sent_on_wire = self.acked + len(self._replay)
        if count > sent_on_wire:
            raise LinkProtocolError(f"ACK of {count} frames; only {sent_on_wire} were sent")
        if count < self.acked:
            raise LinkProtocolError(f"ACK of {count} frames after one of {self.acked}")
        self._drop_acked(count)


V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    value: V
    fingerprint: str
    lost_at: float | None = None  # when its connection went; None while one is up


class ResumeRefused(Exception):
    """A HELLO asked to resume a session that cannot be resumed; the message says why."""

    code = "resume-refused"


class SessionTable(Generic[V]):
    """The display host's link sessions by id, for resumption: an id is a 128-bit secret
    handed to the app host in our HELLO; a session may be resumed by the same peer key only,
    and only until `grace` seconds after its connection went. Time is passed in."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._entries: dict[str, _Entry[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> list[V]:
        return [e.value for e in self._entries.values()]

    def new(self, value: V, fingerprint: str) -> str:
        sid = secrets.token_hex(16)
        self._entries[sid] = _Entry(value, fingerprint)
        return sid

    def lost(self, sid: str, now: float) -> bool:
        """Its connection went at `now`: it may be resumed until `now + grace`. False if the
        session is not (or no longer) in the table."""
        entry = self._entries.get(sid)
        if entry is None:
            return False
        entry.lost_at = now
        return True

    def claim(self, sid: Any, fingerprint: str, now: float) -> V:
        """The session a HELLO's `resume` names, now on a new connection; or ResumeRefused."""
        entry = self._entries.get(sid) if isinstance(sid, str) else None
        if entry is None:
            raise ResumeRefused("the display host does not know this link session (it was "
                                "restarted, or the session ended)")
        if not secrets.compare_digest(entry.fingerprint, fingerprint):
            raise ResumeRefused("the link session belongs to another app host key")
        if entry.lost_at is not None and now >= entry.lost_at + self.grace:
            del self._entries[sid]
            raise ResumeRefused(f"the link session expired ({self.grace:g} s grace)")
        entry.lost_at = None
        return entry.value

    def expired(self, now: float) -> list[V]:
        """Remove and return the sessions whose grace has run out."""
        gone = [sid for sid, e in self._entries.items()
                if e.lost_at is not None and now >= e.lost_at + self.grace]
        return [self._entries.pop(sid).value for sid in gone]

    def remove(self, sid: str) -> None:
        self._entries.pop(sid, None)
