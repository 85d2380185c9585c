"""Each private Twisted attribute that xproxy/relay/twisted_internals.py relies on, checked
against the installed Twisted on real sockets: an upgrade that renames or changes one fails
the test named for it, rather than turning a fast path off without a word."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, error, main, protocol, reactor, task
from twisted.internet.abstract import FileDescriptor
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.python.failure import Failure

from xproxy.relay.twisted_internals import (
    READ_SIZE,
    direct_writer,
    event_loop,
    fast_paths_apply,
    fast_reads,
    nodelay,
)

TIMEOUT = 30


class Peer(protocol.Protocol):
    """Collects what it receives; fires `got` once `want` bytes are in, `lost` on close."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.want = 0
        self.got: defer.Deferred[bytes] = defer.Deferred()
        self.made: defer.Deferred[Peer] = defer.Deferred()
        self.lost: defer.Deferred[BaseException] = defer.Deferred()

    def connectionMade(self) -> None:
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.want and len(self.data) >= self.want and not self.got.called:
            self.got.callback(bytes(self.data))

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost.callback(reason.value)  # (a Failure would fire it as an error)

    def expect(self, n: int) -> defer.Deferred[bytes]:
        self.want = n
        if len(self.data) >= n and not self.got.called:
            self.got.callback(bytes(self.data))
        return self.got.addTimeout(TIMEOUT, reactor)


async def connected_pair(kind: str, tmp_path: Path) -> tuple[Peer, Peer, object]:
    """A server-side and a client-side protocol on a real unix or TCP connection."""
    server = Peer()
    factory = protocol.Factory.forProtocol(lambda: server)
    if kind == "unix":
        path = str(tmp_path / "s")
        port = reactor.listenUNIX(path, factory)  # type: ignore[attr-defined]
        client_ep = protocol.ClientCreator(reactor, Peer).connectUNIX(path)
    else:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        client_ep = protocol.ClientCreator(reactor, Peer).connectTCP(
            "127.0.0.1", port.getHost().port)
    client = await client_ep.addTimeout(TIMEOUT, reactor)
    await server.made.addTimeout(TIMEOUT, reactor)
    return server, client, port


async def close(server: Peer, client: Peer, port) -> None:  # type: ignore[no-untyped-def]
    for p in (server, client):
        if p.transport is not None and not p.lost.called:
            p.transport.loseConnection()
    await defer.DeferredList([server.lost, client.lost])
    await port.stopListening()


KINDS = pytest.mark.parametrize("kind", ["unix", "tcp"])


def test_the_asyncio_reactor_keeps_its_loop_in__asyncioEventloop() -> None:
    loop = asyncio.new_event_loop()
    try:
        r = AsyncioSelectorReactor(loop)
        assert event_loop(r) is loop
        r._stopped = True  # (never run)
    finally:
        loop.close()
    assert event_loop(task.Clock()) is None


def test_a_read_handler_ends_a_connection_with_main_s_constants() -> None:
    assert isinstance(main.CONNECTION_LOST, error.ConnectionLost)
    assert isinstance(main.CONNECTION_DONE, error.ConnectionDone)


@KINDS
@pytest_twisted.ensureDeferred
async def test_socket_transports_have_the_attributes_the_fast_paths_read(kind, tmp_path) -> None:
    server, client, port = await connected_pair(kind, tmp_path)
    try:
        t = server.transport
        assert isinstance(t, FileDescriptor)
        assert isinstance(t.socket, socket.socket)
        assert t._tempDataBuffer == [] and t.dataBuffer == b""
        assert t.connected and not t.disconnecting
        assert isinstance(t.bufferSize, int) and callable(t.doRead)
        assert t.protocol is server
        assert fast_paths_apply(t)
    finally:
        await close(server, client, port)


@KINDS
@pytest_twisted.ensureDeferred
async def test_write_queues_in__tempDataBuffer_until_the_reactor_turns(kind, tmp_path) -> None:
    """What `direct_writer` looks at to know that nothing is queued before it sends."""
    server, client, port = await connected_pair(kind, tmp_path)
    try:
        server.transport.write(b"queued")
        assert server.transport._tempDataBuffer == [b"queued"]
        assert await client.expect(6) == b"queued"
        assert server.transport._tempDataBuffer == [] and server.transport.dataBuffer == b""
        server.transport.loseConnection()
        assert server.transport.disconnecting
    finally:
        await close(server, client, port)


@KINDS
@pytest_twisted.ensureDeferred
async def test_direct_writer_sends_at_once_and_queues_behind_a_queue(kind, tmp_path) -> None:
    server, client, port = await connected_pair(kind, tmp_path)
    try:
        write = direct_writer(server.transport)
        write(b"direct")
        assert server.transport._tempDataBuffer == []  # went to the socket, not the queue
        server.transport.write(b"-queued")
        write(b"-after")  # something is queued: this must go behind it
        assert server.transport._tempDataBuffer == [b"-queued", b"-after"]
        assert await client.expect(19) == b"direct-queued-after"
    finally:
        await close(server, client, port)


@KINDS
@pytest_twisted.ensureDeferred
async def test_the_reactor_calls_the_doRead_set_on_the_transport(kind, tmp_path) -> None:
    """`fast_reads` replaces `doRead` on the instance: the reactor must look it up there on
    each readable event, and a return of CONNECTION_DONE must close the connection."""
    server, client, port = await connected_pair(kind, tmp_path)
    try:
        fast_reads(server.transport)
        assert server.transport.bufferSize == READ_SIZE
        ours = server.transport.doRead
        calls = []

        def counted():  # type: ignore[no-untyped-def]
            calls.append(1)
            return ours()

        server.transport.doRead = counted
        client.transport.write(b"x" * 100_000)
        assert len(await server.expect(100_000)) == 100_000
        assert calls
        client.transport.loseConnection()
        reason = await server.lost.addTimeout(TIMEOUT, reactor)
        assert isinstance(reason, error.ConnectionDone)
    finally:
        await close(server, client, port)


@pytest_twisted.ensureDeferred
async def test_nodelay_reaches_a_tcp_transport_s_socket(tmp_path) -> None:
    server, client, port = await connected_pair("tcp", tmp_path)
    try:
        nodelay(server.transport)
        sock = server.transport.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        await close(server, client, port)


def test_other_transports_get_twisted_s_own_behaviour() -> None:
    from twisted.internet.testing import StringTransport

    t = StringTransport()
    assert not fast_paths_apply(t)
    assert direct_writer(t) == t.write
    fast_reads(t)
    nodelay(t)
    assert "doRead" not in vars(t)
