"""The relay's buffered reads (relay.ReadBuffers): bytes are framed and written on from the
buffer they were read into. What must hold: every byte leaves once and in order; the pieces
of an unfinished request leave together, in one write; a buffer whose bytes a transport kept
(unsent, as a view) is never read into again; idle clients share one buffer.

The transports here are fakes with the TransportShim surface (raw_write, backlog, ...); the
same code runs on uvloop's transports in test_serve, under real X clients."""

from __future__ import annotations

import os
import random
import socket

import pytest
from twisted.internet import defer, task

from testing import x11wire as wire
from testing.x11wire import COOKIE, MIT, REAL
from xproxy.relay.proxy import DELIVER_DELAY, READ_SIZE, ClientSide, ProxyFactory
from xproxy.x11.connection import AuthPolicy, Watch
from xproxy.x11.extensions import ExtensionPolicy


class FakeShim:
    """An asyncio transport seen through TransportShim, over one end of a real socket pair
    whose other end nobody reads until `drain` (so the relay's direct writes fill it and
    come up short). What the transport's own write queues is kept apart, as a transport
    does, and reaches the peer after everything written on the socket before it."""

    def __init__(self) -> None:
        self.socket, self.peer = socket.socketpair()
        for sock in (self.socket, self.peer):
            sock.setblocking(False)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        self.queue: list[bytes] = []
        self.received = bytearray()
        self.direct = 0  # bytes that went straight to the socket
        self.producer = None
        self.paused = False
        self.closed = False
        self.t = self  # (for is_closing)

    def raw_write(self, data) -> None:  # type: ignore[no-untyped-def]
        assert type(data) is bytes  # never a view of the relay's buffer: it would be reused
        self._read_peer()
        self.queue.append(data)

    write = raw_write

    def backlog(self) -> int:
        return sum(map(len, self.queue))

    def is_closing(self) -> bool:
        return self.closed

    def _read_peer(self) -> None:
        while True:
            try:
                data = self.peer.recv(1 << 20)
            except BlockingIOError:
                return
            self.direct += len(data)
            self.received += data

    def drain(self) -> None:
        """The peer reads everything: first what is on the socket, then the queue."""
        self._read_peer()
        for data in self.queue:
            self.received += data
        self.queue.clear()

    def writeSequence(self, parts) -> None:  # type: ignore[no-untyped-def]
        self.raw_write(b"".join(parts))

    def loseConnection(self) -> None:
        self.closed = True

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def registerProducer(self, producer, streaming) -> None:  # type: ignore[no-untyped-def]
        self.producer = producer

    def sent(self) -> bytes:
        self.drain()
        return bytes(self.received)


class FakeUpstream:
    def __init__(self, shim: FakeShim) -> None:
        self.shim = shim

    def connect(self, factory) -> defer.Deferred:  # type: ignore[no-untyped-def]
        proto = factory.buildProtocol(None)
        proto.makeConnection(self.shim)
        return defer.succeed(proto)


def relay(e: str = "<", observers=None, clock=None) -> tuple[ClientSide, FakeShim, FakeShim]:  # type: ignore[no-untyped-def]
    to_client, to_server = FakeShim(), FakeShim()
    factory = ProxyFactory(FakeUpstream(to_server), ":0", AuthPolicy(COOKIE, MIT, REAL),  # type: ignore[arg-type]
                           ExtensionPolicy(), observers=observers, clock=clock)
    client = factory.buildProtocol(None)
    client.makeConnection(to_client)  # type: ignore[arg-type]
    assert not client.ready and not to_client.paused  # upstream only once the cookie passed
    read(client, wire.setup_request(e))
    assert client.ready and not to_client.paused
    read(client.server, wire.setup_success(e))  # type: ignore[arg-type]
    assert to_server.sent() == wire.setup_request(e, MIT, REAL)
    assert to_client.sent() == wire.setup_success(e)
    to_client.received.clear()
    to_server.received.clear()
    return client, to_client, to_server


def read(proto, data: bytes) -> None:  # type: ignore[no-untyped-def]
    """What the event loop does when `data` arrives: reads into the protocol's buffer."""
    while data:
        buf = proto.get_buffer(-1)
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        proto.buffer_updated(n)
        data = data[n:]


@pytest.fixture
def writes(monkeypatch) -> list[tuple[int, type, bytes]]:  # type: ignore[no-untyped-def]
    """The relay's own write(2) calls: (fd, type of what it wrote, the bytes)."""
    calls = []
    real = os.write

    def write(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        calls.append((fd, type(data), bytes(data)))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    return calls


def test_a_large_request_read_in_pieces_leaves_in_one_write_from_the_buffer(writes) -> None:
    client, _, to_server = relay()
    writes.clear()
    to_server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    buffers = client.buffers
    shared = buffers.shared
    noop = wire.request("<", 127)
    put = wire.request("<", 72, 2, body=bytes(range(256)) * 156)
    read(client, noop)
    for piece in (put[:16000], put[16000:32000], put[32000:] + noop):
        read(client, piece)
    fd = to_server.socket.fileno()
    assert writes == [(fd, memoryview, noop), (fd, memoryview, put + noop)]
    assert to_server.sent() == noop + put + noop
    assert client.own is None and client.fill == 0
    assert buffers.shared is not shared and buffers.spares == [shared]  # it came back


def test_idle_clients_share_one_buffer() -> None:
    clients = [relay()[0] for i in range(50)]
    for c in clients:
        shared = c.buffers.shared
        assert c.get_buffer(-1) is shared  # a read that found nothing (EAGAIN)
        assert c.server.get_buffer(-1) is shared  # type: ignore[union-attr]
        assert c.buffers.spares == [] and c.own is None


def test_bytes_behind_queued_bytes_queue_behind_them(writes) -> None:
    client, _, to_server = relay()
    writes.clear()
    to_server.queue.append(b"earlier")
    noop = wire.request("<", 127)
    read(client, noop)
    assert writes == [] and to_server.queue == [b"earlier", noop]


def test_a_closing_transport_is_not_written_to(writes) -> None:
    """Its socket may be closed already (and the number reused): its connection_lost,
    which closes the relay, is on its way."""
    client, _, to_server = relay()
    writes.clear()
    to_server.closed = True
    read(client, wire.request("<", 127))
    assert writes == [] and to_server.queue == []


def random_requests(rng: random.Random, count: int) -> bytes:
    out = []
    for _ in range(count):
        words = rng.choice([1, 2, 3, 10, 1000, 10000, 30000])
        out.append(wire.request("<", rng.choice([1, 8, 72, 127]), 0,
                                body=rng.randbytes(4 * (words - 1))))
    return b"".join(out)


def random_replies(rng: random.Random, count: int) -> bytes:
    out = []
    for i in range(count):
        if rng.random() < 0.5:
            out.append(wire.event("<", i))
        else:
            out.append(wire.reply("<", i, extra=rng.randbytes(4 * rng.choice([0, 1, 100, 20000]))))
    return b"".join(out)


def pieces(rng: random.Random, data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 3, 4, 31, 32, 4096, 65536, READ_SIZE, 2 * READ_SIZE])
        out.append(data[pos : pos + n])
        pos += n
    return out


def test_every_byte_arrives_once_and_in_order_through_full_sockets() -> None:
    """Both ways at once, in random pieces, into sockets that fill up (so writes come up
    short and the rest queues) and are read now and then."""
    direct = queued = 0
    for seed in range(20):
        rng = random.Random(seed)
        client, to_client, to_server = relay()
        up = random_requests(rng, 40)
        down = random_replies(rng, 40)
        ups, downs = pieces(rng, up), pieces(rng, down)
        while ups or downs:
            if ups and (not downs or rng.random() < 0.5):
                read(client, ups.pop(0))
            else:
                read(client.server, downs.pop(0))
            if rng.random() < 0.2:
                (to_client if rng.random() < 0.5 else to_server).drain()
        assert not client.closed, seed
        assert to_server.sent() == up, seed
        assert to_client.sent() == down, seed
        direct += to_server.direct + to_client.direct
        queued += len(up) + len(down) - to_server.direct - to_client.direct
    assert direct > 100000 and queued > 100000  # both ways out were taken, often


def test_a_protocol_error_in_a_kept_request_closes_only_that_client() -> None:
    client, to_client, to_server = relay()
    other, _, other_server = relay()
    put = wire.request("<", 72, 2, body=bytes(40000))
    read(client, put[:20000])
    read(other, put[:20000])
    assert client.fill == 20000 and other.fill == 20000
    read(client, put[20000:] + b"\x01\x00\x00\x00")  # a request of length 0, no BIG-REQUESTS
    assert client.closed and to_client.closed and to_server.closed
    assert client.own is None and client.fill == 0
    read(other, put[20000:])
    assert not other.closed and other_server.sent() == put


class Watcher:
    """An observer as observe.ClientObserver is one: notes each message as it is framed, and
    checks in `flush` (the slow part: decoding, tracing) that its bytes have been sent."""

    def __init__(self) -> None:
        self.shims: dict[str, FakeShim] = {}
        self.shown = {"up": 0, "down": 0}  # bytes seen by flush, each way
        self.queue: list[tuple[str, int, bytes]] = []
        self.seen: list[tuple[str, bytes]] = []

    def __call__(self, direction: str, seq: int, msg: bytes) -> None:
        self.queue.append((direction, seq, msg))

    def flush(self) -> None:
        queue, self.queue = self.queue, []
        for direction, seq, msg in queue:
            if direction in ("setup", "setup-reply") or not self.shims:
                continue
            way = "up" if direction == "request" else "down"
            shim = self.shims[way]
            shim._read_peer()
            at = self.shown[way]
            assert shim.received[at : at + len(msg)] == msg, (direction, seq)  # sent already
            self.shown[way] = at + len(msg)
            self.seen.append((direction, msg))


def watched_relay(clock=None) -> tuple[ClientSide, FakeShim, FakeShim, Watcher]:  # type: ignore[no-untyped-def]
    watcher = Watcher()
    client, to_client, to_server = relay(observers=lambda number: Watch(watcher), clock=clock)
    watcher.shims.update(up=to_server, down=to_client)
    for shim in (to_server, to_client):
        shim.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    return client, to_client, to_server, watcher


def test_the_observer_finishes_with_each_message_after_its_bytes_have_gone_on() -> None:
    """Decoding and tracing never stand between a request and the server, or a reply and
    the client: the observer's flush comes once the bytes it is shown have been sent."""
    client, _, _, watcher = watched_relay()
    noop = wire.request("<", 127)
    get = wire.request("<", 20, 0, body=bytes(20))  # GetProperty
    put = wire.request("<", 72, 2, body=bytes(range(256)) * 156)
    read(client, noop + get)
    for piece in (put[:16000], put[16000:32000], put[32000:]):  # kept, then sent whole
        read(client, piece)
    reply = wire.reply("<", 2, extra=bytes(64))
    read(client.server, reply[:40])
    read(client.server, reply[40:] + wire.event("<", 3))
    assert watcher.seen == [("request", noop), ("request", get), ("request", put),
                            ("reply", reply), ("event", wire.event("<", 3))]


def test_what_the_server_sent_is_finished_with_at_the_next_request_or_soon_after() -> None:
    """With a clock, the observer finishes with a reply after the client's next request has
    gone to the server (the client does not wait for the reply's decoding), or within
    DELIVER_DELAY when no request comes; everything is finished with when the client goes."""
    clock = task.Clock()
    client, _, _, watcher = watched_relay(clock)
    get = wire.request("<", 20, 0, body=bytes(20))
    read(client, get)
    assert watcher.seen == [("request", get)]
    reply = wire.reply("<", 1, extra=bytes(8))
    read(client.server, reply)
    assert len(watcher.queue) == 1 and len(clock.getDelayedCalls()) == 1
    read(client, get)  # the next request: sent, then both are finished with, in order
    assert watcher.seen[1:] == [("reply", reply), ("request", get)]
    event = wire.event("<", 2)
    read(client.server, event)
    read(client.server, event)
    assert watcher.seen[-1] == ("request", get)
    clock.advance(DELIVER_DELAY)
    assert watcher.seen[-2:] == [("event", event), ("event", event)]
    assert clock.getDelayedCalls() == []  # (the first call, answered by the request, is spent)
    read(client.server, event)
    client.connectionLost(None)
    assert watcher.seen[-1] == ("event", event) and watcher.queue == []
    assert clock.getDelayedCalls() == []
