"""`xproxy serve --movable`: a proxy display whose clients can be moved to another X server
while they run (the Twisted adapter around move/client.py; it only moves bytes and runs the
steps the planner gives it).

Each client gets one upstream connection to the current target, made by the proxy with the
client's byte order and the target's cookie. The proxy answers the client's setup with the
first server's setup reply, so until a move every value is that server's and only the tracker
costs anything. A move (`MovableDisplay.move`) stops reading the clients, opens a new upstream
connection per client to the target, checks it can take them (else changes nothing and says
why), reads what it must from the old server, makes everything again on the new one, swaps,
then closes the old connection; requests that arrived meanwhile are queued and sent after it.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from ..relay.proxy import ReadPauses
from ..relay.server import ProxyServer, ServeOptions, client_endpoint
from ..x11 import opcodes as op
from ..x11.connection import AuthPolicy
from ..x11.display import parse_display
from ..x11.errors import X11ProtocolError
from ..x11.framing import HOLD, PASS, Buffer, RequestFramer, ServerFramer
from ..x11.setup import STATUS_SUCCESS, SetupRequest, parse_setup_request, setup_failed
from . import fields as f
from . import planner
from .client import VirtualClient
from .mapping import MASK32, Ext, Mapping
from .tracker import _HANDLERS

if TYPE_CHECKING:
    from ..relay.proxy import _IRelayTransport

log = Logger(namespace="xproxy")

#: Why reading a client is paused.
_MOVING = 1  # a reason to pause reading a client (ReadPauses; 2 is the server backed up)
#: How long a move waits for a client to finish sending a request it has begun, and for
#: the servers to answer what it asks to move one client.
BOUNDARY_TIMEOUT = 10.0
MOVE_TIMEOUT = 60.0


@dataclass
class MoveResult:
    """What a move did: ok, how many clients moved and in how long, or why not."""

    ok: bool
    clients: int = 0
    seconds: float = 0.0
    error: str = ""


class _Requests(RequestFramer):
    """The client's stream. Before the client's first move (identity mapping) a request
    the tracker does not need passes through as it comes (a PutImage streams, counted but
    not copied); every other one is held whole and goes to `MovableClient.held`, which says
    what to send in its place. During a move, and after one, every request is held."""

    def __init__(self, client: MovableClient) -> None:
        super().__init__()
        self.client = client
        self.bigreq_major = -1

    def _request(self, buf: Buffer, pos: int, opcode: int, size: int, big: bool) -> int:
        if opcode == self.bigreq_major:
            self.big_requests = True  # the client sends big requests only after its Enable
        c = self.client
        vc = c.vc
        if (vc is not None and vc.mapping.identity and opcode not in TRACKED
                and not c.display.moving and not c.queue
                and (opcode < op.FIRST_EXTENSION_OPCODE or opcode not in vc.mapping.exts)):
            vc.seq += 1
            return PASS
        return HOLD

    def _message(self, msg: bytes) -> bytes:
        if self.in_setup:
            self.in_setup = False
            self.client.setup_received(msg)
            return b""
        return self.client.held(msg)


#: Requests held whole even before a move: the tracker notes them, or their replies are
#: rewritten (extensions hidden).
TRACKED = frozenset(_HANDLERS) | {op.QUERY_EXTENSION, op.LIST_EXTENSIONS}


class _Messages(ServerFramer):
    """The server's stream cut into whole messages with their widened sequence numbers
    (-1 for the setup reply)."""

    def __init__(self, endian: str) -> None:
        super().__init__()
        self.expect_setup(endian)
        self.out: list[tuple[bytes, int]] = []

    def _sequenced(self, buf: Buffer, pos: int, kind: int, seq: int) -> int:
        return HOLD

    def _unsequenced(self, buf: Buffer, pos: int, kind: int) -> int:
        return HOLD

    def _message(self, msg: bytes) -> bytes:
        if self.in_setup:
            self.in_setup = False
            self.out.append((msg, -1))
        else:
            self.out.append((msg, self.last_seq))
        return b""


class Upstream(protocol.Protocol):
    """One client's connection to one real server. Requests the proxy makes itself are
    counted (`sent`), so the client's sequence numbers are worked out from the server's:
    `segments` holds, from each real sequence number on, what to add to it."""

    transport: _IRelayTransport

    def __init__(self, endian: str, auth: tuple[bytes, bytes]) -> None:
        self.endian = endian
        self.auth = auth
        self.frames = _Messages(endian)
        self._u16 = struct.Struct(endian + "H").unpack_from
        self.setup: defer.Deferred[bytes] = defer.Deferred()
        self.sent = 0
        self.segments: deque[tuple[int, int]] = deque([(0, 0)])
        self.calls: dict[int, defer.Deferred[bytes | None]] = {}
        self.client: MovableClient | None = None  # set while it is the client's current one
        self.early: list[bytes] = []  # events of a connection not yet current
        self.errors = 0
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.watch: Callable[[bytes], bool] | None = None
        self.closed = False

    def connectionMade(self) -> None:
        name, data = self.auth
        self.transport.write(SetupRequest(0x6C if self.endian == "<" else 0x42, 11, 0,
                                          name, data).to_bytes())

    def dataReceived(self, data: bytes) -> None:
        try:
            self.frames.feed(data)
        except X11ProtocolError as err:
            log.error("protocol error from server: {e}", e=err)
            self.transport.loseConnection()
            return
        out, self.frames.out = self.frames.out, []
        for msg, seq in out:
            if seq < 0:
                if not self.setup.called:
                    self.setup.callback(msg)
                continue
            if msg[0] != op.KEYMAP_NOTIFY:
                # Widened from the requests sent, as xcb does: a client may send more than
                # 65536 requests before the server says anything.
                seq16 = self._u16(msg, 2)[0]
                seq = self.sent - ((self.sent - seq16) & 0xFFFF)
            self._message(msg, seq)

    def _message(self, msg: bytes, seq: int) -> None:
        kind = msg[0]
        if kind <= op.REPLY:
            d = self.calls.pop(seq, None)
            if d is not None:
                if not d.called:  # (else cancelled: the move gave up waiting)
                    d.callback(msg if kind == op.REPLY else None)
                return
        elif self.watch is not None and self.watch(msg):
            return
        client = self.client
        if client is not None:
            client.from_server(msg, self.virtual_seq(seq))
        elif kind == op.ERROR:
            self.errors += 1
            log.debug("error {c} for request {m}.{n} (value 0x{v:x}) while making a client "
                      "again", c=msg[1], m=msg[10], n=msg[8],
                      v=struct.unpack_from(self.endian + "I", msg, 4)[0])
        elif kind != op.REPLY:
            self.early.append(msg)

    def virtual_seq(self, real: int) -> int:
        s = self.segments
        while len(s) > 1 and s[1][0] <= real:
            s.popleft()
        return real + s[0][1]

    def send(self, data: bytes | memoryview, requests: int = 1) -> None:
        """Bytes of the client's requests: `requests` of them start in `data`."""
        self.sent += requests
        if data:
            self.transport.write(bytes(data) if isinstance(data, memoryview) else data)

    def send_own(self, data: bytes) -> None:
        """A request of the proxy's own, not counted by the client."""
        self.sent += 1
        self.segments.append((self.sent + 1, self.segments[-1][1] - 1))
        self.transport.write(data)

    def call(self, data: bytes) -> defer.Deferred[bytes | None]:
        """A request of the proxy's own with a reply: fires with it, or None on an error."""
        self.send_own(data)
        d: defer.Deferred[bytes | None] = defer.Deferred()
        self.calls[self.sent] = d
        return d

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True
        calls, self.calls = self.calls, {}
        for d in calls.values():
            if not d.called:
                d.errback(ConnectionError("the X server closed the connection"))
        if not self.setup.called:
            self.setup.errback(ConnectionError("the X server closed the connection"))
        if self.client is not None:
            self.client.upstream_lost(self)
        self.lost.callback(None)


@dataclass
class _Prepared:
    """A client made again on the target, ready to swap in."""

    client: MovableClient
    upstream: Upstream
    mapping: Mapping
    setup: planner.ServerSetup


@implementer(IPushProducer)
class _ServerReading:
    """The producer of a client's transport: when the client does not read what it is sent,
    the proxy stops reading its server (so what is kept for it stays bounded), except
    while a move needs the server's answers."""

    def __init__(self, client: MovableClient) -> None:
        self.client = client
        self.paused = False

    def apply(self) -> None:
        up = self.client.upstream
        if up is not None and up.transport is not None and not up.closed:
            if self.paused and not self.client.display.moving:
                up.transport.pauseProducing()
            else:
                up.transport.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True
        self.apply()

    def resumeProducing(self) -> None:
        self.paused = False
        self.apply()

    def stopProducing(self) -> None:
        self.client.disconnect()


@implementer(IPushProducer)
class MovableClient(ReadPauses, protocol.Protocol):
    """One X client of a movable display."""

    transport: _IRelayTransport

    def __init__(self, display: MovableDisplay, number: int) -> None:
        self.display = display
        self.number = number
        self.frames = _Requests(self)
        self.queue: deque[bytes] = deque()
        self._boundary: defer.Deferred[None] | None = None
        self.vc: VirtualClient | None = None
        self.upstream: Upstream | None = None
        self.setup_request: SetupRequest | None = None
        self.server_setup: planner.ServerSetup | None = None  # the current server's
        self.paused = 0
        self.closed = False

    # flow control (ReadPauses): reading the client stops while the server's socket is
    # backed up, or while a move is under way
    def stopProducing(self) -> None:
        self.disconnect()

    def connectionMade(self) -> None:
        self.display.clients[self.number] = self
        self.reading = _ServerReading(self)
        self.transport.registerProducer(self.reading, True)

    def dataReceived(self, data: bytes) -> None:
        vc = self.vc
        before = vc.seq if vc is not None else 0
        try:
            out = self.frames.feed(data)
        except X11ProtocolError as err:
            log.error("client {n} disconnected: protocol error from client: {e}",
                      n=self.number, e=err)
            self.disconnect()
            return
        if vc is not None and self.upstream is not None and not self.closed:
            self.upstream.send(out, vc.seq - before)
        if self._boundary is not None and not self.frames.unfinished:
            d, self._boundary = self._boundary, None
            d.callback(None)

    def held(self, msg: bytes) -> bytes:
        """A request the framer held whole: what to send in its place (b"" when queued)."""
        if self.vc is None or self.display.moving or self.queue or self.upstream is None:
            self.queue.append(msg)
            return b""
        return self.vc.request(msg)

    def at_boundary(self, timeout: float) -> defer.Deferred[None]:
        """Fires once no request is half passed on (a move may then start)."""
        if not self.frames.unfinished or self.closed:
            return defer.succeed(None)
        if self._boundary is None:
            self._boundary = defer.Deferred()
        d: defer.Deferred[None] = defer.Deferred()
        self._boundary.chainDeferred(d)
        return d.addTimeout(timeout, self.display.reactor)

    def flush(self) -> None:
        """Send what was queued (during a move, or before the upstream connection was up)."""
        while self.queue and self.vc is not None and self.upstream is not None \
                and not self.display.moving and not self.closed:
            self.upstream.send(self.vc.request(self.queue.popleft()))

    def setup_received(self, msg: bytes) -> None:
        try:
            setup = parse_setup_request(msg)
        except X11ProtocolError as err:
            log.warn("client {n}: bad setup: {e}", n=self.number, e=err)
            self.disconnect()
            return
        self.setup_request = setup
        why = self.display.auth().check(setup)
        if why is not None:
            log.warn("client {n} refused: {why}", n=self.number, why=why)
            self.transport.write(setup_failed(setup.endian, why))
            self.disconnect()
            return
        if self.display.moving:
            self.display.waiting.append(self)
            return
        defer.ensureDeferred(self.connect_first())

    async def connect_first(self) -> None:
        assert self.setup_request is not None
        endian = self.setup_request.endian
        try:
            upstream, reply = await self.display.open_upstream(self.display.shown_on, endian)
        except Exception as err:  # noqa: BLE001 - any failure is told to the client
            why = f"xproxy: cannot reach {self.display.shown_on}: {err}"
            if not self.closed:
                self.transport.write(setup_failed(endian, why))
                self.disconnect()
            return
        if self.closed:
            upstream.transport.loseConnection()
            return
        if reply[0] != STATUS_SUCCESS:
            self.transport.write(reply)
            upstream.transport.loseConnection()
            self.disconnect()
            return
        self.vc = VirtualClient(endian, planner.parse_server_setup(reply, endian))
        self.server_setup = self.vc.setup
        self.frames.max_big_request = self.vc.max_request_bytes
        self._attach(upstream)
        self.transport.write(reply)
        self.flush()

    def _attach(self, upstream: Upstream) -> None:
        self.upstream = upstream
        upstream.client = self
        upstream.transport.registerProducer(self, True)
        self.reading.apply()

    def from_server(self, msg: bytes, vseq: int) -> None:
        assert self.vc is not None
        out = self.vc.server_message(msg, vseq)
        if msg[0] == op.REPLY:
            if self.frames.bigreq_major < 0:
                self.frames.bigreq_major = next((x.vmajor for x in self.vc.mapping.exts.values()
                                                 if x.name == f.BIG_REQUESTS), -1)
            self.frames.max_big_request = self.vc.max_request_bytes
        if not self.closed:
            self.transport.write(out)

    def upstream_lost(self, upstream: Upstream) -> None:
        if upstream is self.upstream:
            self.disconnect()

    def disconnect(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.transport.loseConnection()
        if self.upstream is not None:
            self.upstream.client = None
            self.upstream.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.disconnect()
        self.display.clients.pop(self.number, None)
        self.queue.clear()

    # -- moving -----------------------------------------------------------------------------
    async def prepare(self, target: str) -> _Prepared | str:
        """Make this client again on `target`: the prepared connection, or why not."""
        vc, old = self.vc, self.upstream
        assert vc is not None and old is not None
        e = vc.endian
        b = planner.Builder(e)
        try:
            new, reply = await self.display.open_upstream(target, e)
        except Exception as err:  # noqa: BLE001 - the reason goes to the user
            return f"cannot reach {target}: {err}"
        ok = False
        try:
            if reply[0] != STATUS_SUCCESS:
                return f"{target} refused the connection: " + reply[8 : 8 + reply[1]].decode(
                    "latin-1", "replace")
            target_setup = planner.parse_server_setup(reply, e)
            exts: dict[str, tuple[int, int, int]] = {}
            for name in f.MOVABLE_EXTENSIONS:
                raw = name.encode()
                answer = await new.call(b.request(op.QUERY_EXTENSION, 0, b.pack(
                    "H2x", len(raw)) + raw))
                if answer is not None and answer[8]:
                    exts[name] = (answer[9], answer[10], answer[11])
            visuals = planner.match_visuals(vc.setup, target_setup)
            reasons = planner.refusals(vc.tracker, vc.setup, target_setup, set(exts), visuals)
            if reasons:
                return "; ".join(reasons)
            mapping = vc.mapping
            # Everything the client asked for has been answered once this is.
            await old.call(b.request(op.GET_INPUT_FOCUS, 0, b""))
            if vc.tracker.xi_used and f.XI in exts:
                reasons = await _xi_refusals(old, new, mapping, exts[f.XI][0], vc, b)
                if reasons:
                    return "; ".join(reasons)
            known = dict(mapping.names)
            known.update(vc.tracker.atom_names)
            wanted = (vc.tracker.atoms_used | set(mapping.atoms) | set(known))
            unnamed = {a for a in wanted - set(known) if a > f.LAST_PREDEFINED_ATOM}
            shape = next((x.vmajor for x in mapping.exts.values() if x.name == f.SHAPE), None)
            xfixes = next((x.vmajor for x in mapping.exts.values() if x.name == f.XFIXES),
                          None)
            queries = planner.queries(vc.tracker, shape, unnamed, xfixes)
            answers = [old.call(mapping.request(q.request)) for q in queries]
            results: dict[tuple, bytes | None] = {}
            for q, d in zip(queries, answers, strict=True):
                answer = await d
                if answer is not None:
                    buf = bytearray(answer)
                    mapping.reply(buf, q.opcode, q.minor)
                    answer = bytes(buf)
                results[q.key] = answer
            for key, answer in results.items():
                if key[0] == "atom" and answer is not None:
                    known[key[1]] = planner.atom_name(answer, e)
            known = {a: n for a, n in known.items() if a > f.LAST_PREDEFINED_ATOM and n}
            interned = [(a, new.call(b.request(op.INTERN_ATOM, 0, b.pack("H2x", len(n)) + n)))
                        for a, n in known.items()]
            atoms = {}
            for a, d in interned:
                answer = await d
                if answer is not None:
                    atoms[a] = struct.unpack_from(e + "I", answer, 8)[0]
            old_now = await _server_time(old, mapping, vc, b)
            virtual_now = mapping.time_to_virtual(old_now) if old_now else 0
            new_exts = {}
            for x in mapping.exts.values():
                if x.name in exts:
                    rmajor, revent, rerror = exts[x.name]
                    new_exts[x.vmajor] = Ext(x.name, x.vmajor, x.vevent, x.verror, rmajor,
                                             revent, rerror, x.events, x.errors)
            formats = await _match_formats(old, new, mapping, exts, b)
            setup0 = vc.setup
            new_mapping = Mapping(e, setup0.base, setup0.mask, target_setup.base,
                                  target_setup.mask, identity=False,
                                  special={setup0.root: target_setup.root,
                                           setup0.colormap: target_setup.colormap},
                                  visuals=visuals, atoms=atoms, exts=new_exts, names=known,
                                  formats=formats)
            new_now = await _server_time(new, new_mapping, vc, b)
            if virtual_now and new_now:
                new_mapping.time_offset = (virtual_now - new_now) & MASK32
            scratch = _scratch_ids(new_mapping)
            bigreq = next((x.vmajor for x in new_exts.values() if x.name == f.BIG_REQUESTS),
                          None)
            render = next((x.vmajor for x in new_exts.values() if x.name == f.RENDER), None)
            xi = next((x.vmajor for x in new_exts.values() if x.name == f.XI), None)
            plan = planner.recreate(vc.tracker, results, target_setup, scratch, shape, bigreq,
                                    self.server_setup, render,
                                    xfixes if xfixes in new_exts else None,
                                    any(x.name == f.XKB for x in new_exts.values()), xi)
            if plan.reasons:
                return "; ".join(plan.reasons)
            for request in plan.requests:
                new.send_own(new_mapping.request(request))
            await new.call(b.request(op.GET_INPUT_FOCUS, 0, b""))
            if new.errors:
                log.info("client {n}: {k} errors while making it again on {t}", n=self.number,
                         k=new.errors, t=target)
            ok = True
            return _Prepared(self, new, new_mapping, target_setup)
        except ConnectionError as err:
            return f"lost a connection during the move: {err}"
        finally:
            if not ok:
                new.transport.loseConnection()

    def commit(self, prepared: _Prepared) -> None:
        """Swap to the prepared connection, then let the old one go."""
        vc, old, new = self.vc, self.upstream, prepared.upstream
        assert vc is not None and old is not None
        vc.mapping = prepared.mapping
        self.server_setup = prepared.setup
        new.segments = deque([(0, vc.seq - new.sent)])
        old.client = None
        self._attach(new)
        early, new.early = new.early, []
        for msg in early:
            if msg[0] & op.EVENT_CODE_MASK == op.MAP_NOTIFY:
                # (of a window made again: mapped all along for the client, and GTK 4 trips
                # over a second MapNotify)
                continue
            self.from_server(msg, new.virtual_seq(new.sent))
        old.transport.loseConnection()


async def _xi_refusals(old: Upstream, new: Upstream, mapping: Mapping, target_major: int,
                       vc: VirtualClient, b: planner.Builder) -> list[str]:
    """Asks the target the XInputExtension versions the client asked the old server (which
    also tells the target the version the client speaks), and both servers their devices."""
    tracker = vc.tracker
    versions: dict[int, tuple[bytes, bytes | None]] = {}
    for minor, (raw, given) in tracker.xi_versions.items():
        answer = await new.call(b.request(target_major, minor, raw[4:]))
        versions[minor] = (given, answer[8:12] if answer is not None else None)
    if f.XI_QUERY_VERSION not in tracker.xi_versions:
        return planner.xi_refusals(b.e, versions, [], [])  # (no XI 2: no device ids held)
    vmajor = next(x.vmajor for x in mapping.exts.values() if x.name == f.XI)
    every = b.pack("H2x", 0)
    old_reply = await old.call(mapping.request(b.request(vmajor, f.XI_QUERY_DEVICE, every)))
    new_reply = await new.call(b.request(target_major, f.XI_QUERY_DEVICE, every))
    return planner.xi_refusals(
        b.e, versions, planner.xi_devices(old_reply, b.e) if old_reply is not None else None,
        planner.xi_devices(new_reply, b.e) if new_reply is not None else None)


async def _match_formats(old: Upstream, new: Upstream, mapping: Mapping,
                         exts: dict[str, tuple[int, int, int]],
                         b: planner.Builder) -> dict[int, int]:
    """The client's RENDER PictFormats (virtual) -> the target's, matched by description."""
    render = next((x for x in mapping.exts.values() if x.name == f.RENDER), None)
    if render is None or f.RENDER not in exts:
        return {}
    query = b.request(render.rmajor, f.RENDER_QUERY_PICT_FORMATS, b"")
    old_reply = await old.call(query)
    new_reply = await new.call(b.request(exts[f.RENDER][0], f.RENDER_QUERY_PICT_FORMATS, b""))
    if old_reply is None or new_reply is None:
        return {}
    virtual = {mapping.rformats.get(fid, fid): kind
               for fid, kind in planner.pict_formats(old_reply, b.e).items()}
    return planner.match_formats(virtual, planner.pict_formats(new_reply, b.e))


async def _server_time(upstream: Upstream, mapping: Mapping, vc: VirtualClient,
                       b: planner.Builder) -> int:
    """The server's time now (real), from a PropertyNotify on a window of the proxy's own."""
    wid = next(_scratch_ids(mapping))
    real = mapping.res_to_real(wid)
    seen: list[int] = []
    e = vc.endian

    def watch(msg: bytes) -> bool:
        if msg[0] & op.EVENT_CODE_MASK == op.PROPERTY_NOTIFY and struct.unpack_from(
                e + "I", msg, 4)[0] == real:
            seen.append(struct.unpack_from(e + "I", msg, 12)[0])
            return True
        return False

    upstream.watch = watch
    try:
        upstream.send_own(mapping.request(b.request(op.CREATE_WINDOW, 0, b.pack(
            "IIhhHHHHII", wid, vc.setup.root, -10, -10, 1, 1, 0, 2, 0, 1 << 11)
            + b.pack("I", 1 << 22))))
        upstream.send_own(mapping.request(b.request(op.CHANGE_PROPERTY, 2, b.pack(
            "IIIB3xI", wid, 39, 31, 8, 0))))
        upstream.send_own(mapping.request(b.request(op.DESTROY_WINDOW, 0, b.pack("I", wid))))
        await upstream.call(b.request(op.GET_INPUT_FOCUS, 0, b""))
        return seen[0] if seen else 0
    finally:
        upstream.watch = None


def _scratch_ids(mapping: Mapping):  # type: ignore[no-untyped-def]
    """Free ids of the client's range for the proxy's own use, from the top down."""
    while True:
        v = mapping._next_alias
        mapping._next_alias -= 1
        yield v


class _ClientFactory(protocol.Factory):
    def __init__(self, display: MovableDisplay) -> None:
        self.display = display
        self.numbers = itertools.count(1)
        self.noisy = False

    def buildProtocol(self, addr: Any) -> MovableClient:  # type: ignore[override]
        return MovableClient(self.display, next(self.numbers))


@dataclass
class _Totals:
    """What ProxyServer.stop and drain look at: the clients still connected."""

    active: dict[int, MovableClient] = field(default_factory=dict)

    def summary(self) -> str:
        return f"{len(self.active)} clients connected"


class MovableDisplay(ProxyServer):
    """A proxy display whose clients can be moved (`move`)."""

    def __init__(self, reactor: Any, options: ServeOptions) -> None:
        if options.target.startswith("/") and options.upstream_endpoint is None:
            options = dataclasses.replace(options, upstream_endpoint=f"unix:path={options.target}")
        super().__init__(reactor, options)
        #: where the clients are shown: a display name, or an X server's unix socket path
        self.shown_on = options.target
        #: the authorization to present at targets given as socket paths (else: Xauthority)
        self.path_auth: dict[str, tuple[bytes, bytes]] = {}
        if options.upstream_auth is not None:
            self.path_auth[options.target] = options.upstream_auth
        self.since = reactor.seconds()
        self.totals = _Totals()
        self.clients = self.totals.active
        self.moving = False
        self.waiting: list[MovableClient] = []
        self.target_setup: planner.ServerSetup | None = None
        self._auth_policy = AuthPolicy(self.cookie)

    def auth(self) -> AuthPolicy:
        return self._auth_policy

    def start(self) -> defer.Deferred:
        self.factory = _ClientFactory(self)  # type: ignore[assignment]
        self.factory.totals = self.totals  # type: ignore[union-attr]
        return defer.ensureDeferred(self._listen())

    def _endpoint(self, target: str) -> tuple[Any, tuple[bytes, bytes]]:
        """Where `target` (a display name, or a unix socket path) is, and its cookie."""
        from ..trust import xauthfile

        if target.startswith("/"):
            auth = self.path_auth.get(target)
            number = re.fullmatch(r"/tmp/\.X11-unix/X(\d+)", target)
            if auth is None and number is not None:  # a local X server's own socket
                found = xauthfile.lookup_for_display(parse_display(":" + number[1]),
                                                     self.xauthority)
                auth = (found.name, found.data) if found is not None else None
            return (client_endpoint(self.reactor, None, f"unix:path={target}"),
                    auth or (b"", b""))
        display = parse_display(target)
        found = xauthfile.lookup_for_display(display, self.xauthority)
        auth = (found.name, found.data) if found is not None else (b"", b"")
        return client_endpoint(self.reactor, display), auth

    async def open_upstream(self, target: str, endian: str) -> tuple[Upstream, bytes]:
        endpoint, auth = self._endpoint(target)
        upstream = Upstream(endian, auth)
        factory = protocol.Factory.forProtocol(lambda: upstream)  # type: ignore[arg-type]
        factory.noisy = False
        await endpoint.connect(factory)
        reply = await upstream.setup
        if reply[0] == STATUS_SUCCESS and self.target_setup is None:
            self.target_setup = planner.parse_server_setup(reply, endian)
        return upstream, reply

    async def move(self, target: str, auth: tuple[bytes, bytes] | None = None) -> MoveResult:
        """Move every client to `target` (a display name, or an X server's unix socket path
        with `auth` to present there: (name, data), e.g. a link agent's display). All or
        none: when one client cannot go, none goes and the reasons are returned."""
        if self.moving:
            return MoveResult(False, error="a move is already under way")
        if auth is not None:
            self.path_auth[target] = auth
        started = self.reactor.seconds()
        try:
            self._endpoint(target)
        except ValueError as err:
            return MoveResult(False, error=str(err))
        self.moving = True
        clients = [c for c in self.clients.values() if c.vc is not None and not c.closed]
        prepared: list[_Prepared] = []
        try:
            reasons = []
            for c in clients:
                try:
                    await c.at_boundary(BOUNDARY_TIMEOUT)
                except defer.TimeoutError:
                    reasons.append(f"client {c.number} has sent half a request and no more "
                                   f"for {BOUNDARY_TIMEOUT:g} s")
            for c in clients:
                c.pause(_MOVING)
                c.reading.apply()  # (the move needs the old server's answers)
            if reasons:
                return MoveResult(False, error="; ".join(reasons))
            for c in clients:
                try:
                    result = await defer.ensureDeferred(c.prepare(target)).addTimeout(
                        MOVE_TIMEOUT, self.reactor)
                except defer.TimeoutError:
                    result = f"no answer within {MOVE_TIMEOUT:g} s"
                except Exception as err:  # noqa: BLE001 - a bug here must not strand the others
                    log.failure("moving client {n}", n=c.number)
                    result = f"{type(err).__name__}: {err}"
                if isinstance(result, str):
                    if not c.closed:
                        reasons.append(f"client {c.number}: {result}")
                else:
                    prepared.append(result)
            if reasons:
                for p in prepared:
                    p.upstream.transport.loseConnection()
                return MoveResult(False, error="; ".join(reasons))
            for p in prepared:
                if not p.client.closed:
                    p.client.commit(p)
                else:
                    p.upstream.transport.loseConnection()
            if prepared:
                self.target_setup = prepared[0].setup
            self.shown_on = target
            self.since = self.reactor.seconds()
            return MoveResult(True, len(prepared), self.reactor.seconds() - started)
        finally:
            self.moving = False
            for c in clients:
                c.flush()
                c.resume(_MOVING)
                c.reading.apply()
            waiting, self.waiting = self.waiting, []
            for c in waiting:
                if not c.closed:
                    defer.ensureDeferred(c.connect_first())

    async def describe(self) -> dict[str, Any]:
        """What the control socket's `describe` answers."""
        setup = self.target_setup
        clients = []
        for c in list(self.clients.values()):
            if c.vc is None or c.upstream is None:
                continue
            clients.append(dict(id=c.number, **await _client_names(c)))
        return {"ok": True, "display": self.display_name, "target": self.shown_on,
                "since": self.since, "clients": clients,
                "geometry": [setup.width, setup.height] if setup else None,
                "depth": setup.root_depth if setup else None}


async def _client_names(c: MovableClient) -> dict[str, Any]:
    """WM_CLASS, _NET_WM_PID and WM_NAME of the client's first top-level window with them."""
    vc, up = c.vc, c.upstream
    assert vc is not None and up is not None
    e = vc.endian
    b = planner.Builder(e)
    out: dict[str, Any] = {"wm_class": None, "pid": None, "name": None}
    pid_atom = next((a for a, n in vc.tracker.atom_names.items() if n == b"_NET_WM_PID"), None)
    for w in list(vc.tracker.windows.values()):
        if w.parent in vc.tracker.windows or 67 not in w.properties:
            continue
        for key, atom in (("wm_class", 67), ("name", 39), ("pid", pid_atom)):
            if atom is None or atom not in w.properties or c.frames.unfinished:
                continue  # (the proxy's own request may not go in the middle of the client's)
            try:
                answer = await up.call(vc.mapping.request(b.request(op.GET_PROPERTY, 0, b.pack(
                    "IIIII", w.wid, atom, 0, 0, 1024))))
            except ConnectionError:
                return out
            if answer is None:
                continue
            (n,) = struct.unpack_from(e + "I", answer, 16)
            data = answer[32 : 32 + n * max(answer[1], 8) // 8]
            if key == "pid" and answer[1] == 32 and n:
                out["pid"] = struct.unpack_from(e + "I", data)[0]
            elif key == "wm_class":
                parts = data.split(b"\0")
                out["wm_class"] = (parts[1] if len(parts) > 1 else parts[0]).decode(
                    "latin-1")
            elif key == "name":
                out["name"] = data.decode("utf-8", "replace")
        break
    return out
