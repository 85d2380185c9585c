"""The relay's sockets as asyncio transports on the reactor's own event loop.

Twisted's asyncio reactor drives its socket transports from Python callbacks (add_reader, then
Twisted's read machinery); on uvloop, asyncio's own transports do the reading, buffering and
writing in C (libuv), and a write goes out at once when nothing is queued. Measured here on
x11perf -prop round trips, same run: a plain Twisted relay on uvloop 0.66x direct, the same
relay on uvloop's transports 0.78x (socat, in C: 0.74x). So the relay's sockets use them,
while everything else (TLS links, discovery, timers) stays Twisted's on the same loop.

The relay's protocols (proxy.ClientSide / ServerSide) are Twisted protocols; `TransportShim`
gives them the Twisted transport and producer/consumer interface over an asyncio transport, so
they run unchanged on either kind of socket. On these transports they also read into buffers
of their own (asyncio's BufferedProtocol, see relay.ReadBuffers) and write slices of them on.
The loop under the reactor comes from `twisted_internals.event_loop`.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer, error, protocol
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.interfaces import (
    IAddress,
    IProtocolFactory,
    IPushProducer,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(ITransport, IPushProducer)
class TransportShim:
    """A Twisted-style transport over an asyncio transport."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.t = transport
        #: The transport's own write, for callers that stop writing once they have closed
        #: the connection themselves (the relay); `write` checks that for everyone else.
        self.raw_write = transport.write
        #: Bytes written and not yet sent. A memoryview written while any are pending (or
        #: not all sent at once) is kept by the transport as a view, not copied.
        self.backlog = transport.get_write_buffer_size
        self.producer: Any = None
        self.connected = True
        self.disconnecting = False
        self.socket = transport.get_extra_info("socket")

    def write(self, data: bytes) -> None:
        if not self.disconnecting:
            self.t.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        if not self.disconnecting:
            self.t.writelines(data)  # one writev on uvloop, no join

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self.t.close()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self.t.abort()

    def pauseProducing(self) -> None:
        if not self.t.is_closing():
            self.t.pause_reading()

    def resumeProducing(self) -> None:
        if not self.t.is_closing():
            self.t.resume_reading()

    def stopProducing(self) -> None:
        self.loseConnection()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def getPeer(self) -> Any:
        return self.t.get_extra_info("peername")

    def getHost(self) -> Any:
        return self.t.get_extra_info("sockname")


class _Adapter(asyncio.BaseProtocol):
    """Runs a Twisted protocol on an asyncio transport.

    Received bytes go straight to the protocol (bound in the subclasses, before the loop
    looks up its read callbacks), paused or not: a read can race a pause, and the protocol
    keeps what it cannot use yet (proxy.ClientSide.early; a paused ServerSide's one late read
    is simply relayed, flow control bounds it)."""

    def __init__(self, proto: protocol.Protocol) -> None:
        self.proto = proto
        self.shim: TransportShim | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.shim = TransportShim(transport)  # type: ignore[arg-type]
        self.proto.makeConnection(self.shim)

    def eof_received(self) -> bool:
        return False  # close: X has no half-closed connections

    def connection_lost(self, exc: Exception | None) -> None:
        if self.shim is not None:
            self.shim.connected = False
        why = error.ConnectionDone() if exc is None else error.ConnectionLost(str(exc))
        self.proto.connectionLost(Failure(why))

    def pause_writing(self) -> None:
        if self.shim is not None and self.shim.producer is not None:
            self.shim.producer.pauseProducing()

    def resume_writing(self) -> None:
        if self.shim is not None and self.shim.producer is not None:
            self.shim.producer.resumeProducing()


class ProtocolAdapter(_Adapter, asyncio.Protocol):
    """Reads arrive as bytes, in the protocol's dataReceived."""

    def __init__(self, proto: protocol.Protocol) -> None:
        super().__init__(proto)
        self.data_received = proto.dataReceived  # type: ignore[method-assign]


class BufferedAdapter(_Adapter, asyncio.BufferedProtocol):
    """Reads go into the protocol's own buffer (its get_buffer / buffer_updated): the
    kernel copies straight into it, with no bytes object made per read."""

    def __init__(self, proto: protocol.Protocol) -> None:
        super().__init__(proto)
        self.get_buffer = proto.get_buffer  # type: ignore[attr-defined, method-assign]
        self.buffer_updated = proto.buffer_updated  # type: ignore[attr-defined, method-assign]


def adapter_for(proto: protocol.Protocol) -> _Adapter:
    """The adapter for `proto`: buffered reads when it has get_buffer and buffer_updated."""
    if hasattr(proto, "buffer_updated"):
        return BufferedAdapter(proto)
    return ProtocolAdapter(proto)


@implementer(IStreamClientEndpoint)
class ClientEndpoint:
    """Like a Twisted client endpoint (`connect(factory) -> Deferred[protocol]`), for a unix
    path or a TCP host and port, on the loop's own transports."""

    def __init__(self, loop: asyncio.AbstractEventLoop, path: str | None = None,
                 host: str | None = None, port: int = 0) -> None:
        self.loop, self.path, self.host, self.port = loop, path, host, port

    def connect(self, factory: IProtocolFactory) -> defer.Deferred:
        address: IAddress = UNIXAddress(self.path) if self.path is not None \
            else IPv4Address("TCP", self.host or "", self.port)
        proto = factory.buildProtocol(address)
        adapter = adapter_for(proto)  # type: ignore[arg-type]

        async def go() -> protocol.Protocol:
            if self.path is not None:
                await self.loop.create_unix_connection(lambda: adapter, self.path)
            else:
                assert self.host is not None
                await self.loop.create_connection(lambda: adapter, self.host, self.port)
            return proto  # type: ignore[return-value]

        return defer.Deferred.fromFuture(asyncio.ensure_future(go(), loop=self.loop))


class ListeningPort:
    """What a Twisted listen() returns, enough for the proxy: stopListening and getHost."""

    def __init__(self, server: asyncio.Server, path: str | None) -> None:
        self.server = server
        self.path = path

    def stopListening(self) -> defer.Deferred:
        self.server.close()
        if self.path is not None and os.path.exists(self.path):
            os.unlink(self.path)
        return defer.Deferred.fromFuture(asyncio.ensure_future(self.server.wait_closed(),
                                                               loop=self.server.get_loop()))

    def getHost(self) -> Any:
        return self.server.sockets[0].getsockname() if self.server.sockets else None


def listen_unix(loop: asyncio.AbstractEventLoop, path: str, factory: protocol.Factory,
                mode: int = 0o777) -> defer.Deferred:
    """A Deferred firing with a ListeningPort (Twisted coroutines cannot await asyncio's
    futures directly)."""

    async def go() -> ListeningPort:
        server = await loop.create_unix_server(
            lambda: adapter_for(factory.buildProtocol(None)), path)  # type: ignore[arg-type]
        os.chmod(path, mode)
        return ListeningPort(server, path)

    return defer.Deferred.fromFuture(asyncio.ensure_future(go(), loop=loop))


def listen_tcp(loop: asyncio.AbstractEventLoop, port: int, factory: protocol.Factory,
               interface: str) -> defer.Deferred:
    async def go() -> ListeningPort:
        server = await loop.create_server(
            lambda: adapter_for(factory.buildProtocol(None)),  # type: ignore[arg-type]
            interface or None, port, family=socket.AF_INET, reuse_address=True)
        return ListeningPort(server, None)

    return defer.Deferred.fromFuture(asyncio.ensure_future(go(), loop=loop))
