"""Twisted adapters around `X11Connection`: they only move bytes.

Connecting: as OpenSSH does for X11 forwarding, the proxy reads the client's setup and checks
its cookie before it connects upstream, so a client that has not authenticated never takes
one of the X server's client slots. A setup must be complete within `setup_timeout` seconds,
and at most `max_setups` connections may be unfinished at a time (ProxyFactory); past that,
new connections are closed at once and the proxy logs it.

Flow control: as in twisted.protocols.portforward, each side's transport pauses reading the
other when its writes back up, so a client flooding a slow server is paused instead of growing
the proxy's memory. A client that does not read its replies is not read either while its
replies are queued past the transport's window, and a client whose rewritten replies
(QueryExtension, ListExtensions) are awaited past `max_held` is not read until half have come:
whatever a client sends, what the proxy keeps for it is bounded.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer, protocol
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..x11.connection import AuthPolicy, Watch, X11Connection
from ..x11.errors import X11ProtocolError
from ..x11.extensions import ExtensionPolicy
from ..x11.setup import setup_failed
from ..x11.traffic import ConnectionMetrics
from .twisted_internals import direct_writer, fast_reads, nodelay

if TYPE_CHECKING:
    from twisted.internet.interfaces import IConsumer, ITransport

    from .aiotransport import TransportShim

    class _IRelayTransport(ITransport, IPushProducer, IConsumer):
        """What the relay's sockets provide (Twisted's TCP and unix transports, and
        aiotransport.TransportShim): the protocols below are each other's producers."""

log = Logger(namespace="xproxy")

#: Defaults of ProxyFactory's limits on connections that have not completed their setup.
SETUP_TIMEOUT = 10.0
MAX_SETUPS = 64
#: The log says at most once in this many seconds that max_setups is reached.
CAP_LOG_EVERY = 10.0
#: Default of ProxyFactory's max_held: at most this many requests whose replies the proxy
#: rewrites may await them; past it the client is not read until half have been answered.
MAX_HELD = 4096
#: Why reading a client is paused (ClientSide.paused): waiting for the upstream connection,
#: the server's socket backed up, the client's own socket backed up, max_held reached.
_UPSTREAM, _SERVER_FULL, _CLIENT_FULL, _HELD_FULL = 1, 2, 4, 8


@dataclass
class Totals:
    """What all connections of one proxy did, for the summary on exit: how many came, were
    refused or broke the protocol, and their traffic summed (`traffic`)."""

    clients: int = 0
    refused: int = 0
    failed: int = 0
    traffic: ConnectionMetrics = field(default_factory=ConnectionMetrics)
    active: dict[int, ClientSide] = field(default_factory=dict)

    def add(self, conn: X11Connection) -> None:
        self.traffic.add(ConnectionMetrics.of_connection(0, conn))

    def summary(self) -> str:
        t = self.traffic
        k = t.kinds
        return (
            f"{self.clients} clients ({self.refused} refused, {self.failed} protocol errors); "
            f"{t.bytes_from_client} bytes from clients, {t.bytes_from_server} from the "
            f"server; {k['request']} requests, {k['reply']} replies, {k['event']} events, "
            f"{k['error']} errors"
        )


#: At most this many bytes of an unfinished message wait for the rest of it (see _Outbox).
COALESCE_MAX = 256 * 1024


class _Outbox:
    """Writes to one side, holding back the bytes of a message that has not all arrived yet.

    The kernel hands a large request over in pieces (a 40 KB PutImage arrives as two or three
    reads), and writing each piece on wakes the X server for a request it cannot act on until
    the last piece is there. So pieces of an unfinished message wait (up to COALESCE_MAX, so
    a huge request still streams) and go out with the piece that finishes it, in one
    gathering write (writev, no copy into one buffer): one write and one wake-up of the other
    side per message. Nothing waits that the other side could use.

    Only requests are held so (x11perf -putimage100: proxy CPU per request 47 -> 29 µs). The
    server's messages are not: holding the header of a small reply for its last bytes cost
    -prop round trips about a tenth of their rate, measured side by side."""

    __slots__ = ("parts", "size", "write", "writelines")

    def __init__(self, write: Callable[[bytes | memoryview], None],
                 writelines: Callable[[list[bytes | memoryview]], None]) -> None:
        self.write = write
        self.writelines = writelines
        self.parts: list[bytes | memoryview] = []
        self.size = 0

    def send(self, data: bytes | memoryview, unfinished: int) -> None:
        if unfinished and self.size + len(data) < COALESCE_MAX:
            self.parts.append(data)
            self.size += len(data)
            return
        if self.parts:
            self.parts.append(data)
            self.flush()
        else:
            self.write(data)

    def flush(self) -> None:
        if self.parts:
            parts = self.parts
            self.parts = []
            self.size = 0
            self.writelines(parts)


#: At most this long (s) between the server's bytes going to the client and the observer
#: (a tracer) finishing with them (ClientSide.deliver_soon).
DELIVER_DELAY = 0.002

#: Size of a read buffer (ReadBuffers); a connection keeps an unfinished request in its
#: buffer only while this much room is left after it for the next read.
READ_SIZE = 256 * 1024
KEEP_ROOM = 64 * 1024
SPARES = 4


class ReadBuffers:
    """The buffers that the relay's buffered reads go into (asyncio transports only, see
    aiotransport.BufferedAdapter): the kernel copies received bytes into one of these, the
    framer reads them there, and the relay writes slices of it on (_ViewWriter), so a byte
    is copied twice on its way through (into and out of the kernel), not three times. On
    x11perf -putimage100, a byte relay that reads so ran at 0.74x direct against 0.64x with
    a bytes object per read (7 rounds, same run).

    One shared buffer serves every connection, and is free again as soon as a read has been
    handled, so idle clients cost no memory. A client that keeps the start of an unfinished
    request where it was read (ClientSide) takes the shared buffer for itself (`claim`), a
    spare takes its place, and the buffer comes back (`give_back`) once the request has
    gone."""

    __slots__ = ("shared", "spares")

    def __init__(self) -> None:
        self.shared = memoryview(bytearray(READ_SIZE))
        self.spares: list[memoryview] = []

    def claim(self) -> memoryview:
        view = self.shared
        self.shared = self.spares.pop() if self.spares else memoryview(bytearray(READ_SIZE))
        return view

    def give_back(self, view: memoryview) -> None:
        if len(self.spares) < SPARES:
            self.spares.append(view)


class _ViewWriter:
    """Writes slices of a read buffer to an asyncio transport (TransportShim) without ever
    leaving the transport a view of it: when nothing is queued, the bytes go to the socket
    here (the same write(2) the transport would make), and only what the socket did not
    take is copied into the transport's queue. (Handed a memoryview, uvloop keeps the view
    of what it cannot send at once, and the buffer could then not be read into again; an
    X server busy with PutImage leaves its socket full often enough that a fresh buffer
    each time cost -putimage100 a seventh of its rate.)"""

    __slots__ = ("backlog", "closing", "fd", "write")

    def __init__(self, shim: TransportShim) -> None:
        self.write = shim.raw_write
        self.backlog = shim.backlog
        self.closing = shim.t.is_closing
        self.fd = shim.socket.fileno()

    @classmethod
    def of(cls, transport: object) -> _ViewWriter | None:
        """One for `transport`, or None when it takes only bytes (Twisted's transports,
        link channels)."""
        if getattr(transport, "socket", None) is None or not hasattr(transport, "backlog"):
            return None
        return cls(cast("TransportShim", transport))

    def send(self, view: memoryview | bytes) -> None:
        if self.closing():
            return  # it is going: its connection_lost closes the relay
        if self.backlog():
            self.write(bytes(view))  # behind queued bytes
            return
        try:
            sent = os.write(self.fd, view)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # the transport's own write meets the error and reports it
        if sent < len(view):
            self.write(bytes(view[sent:]))


@implementer(IPushProducer)
class ServerSide(protocol.Protocol):
    """The upstream connection to the real X server. As the client transport's producer it
    is paused when the client does not read: then neither the server nor the client is read
    (see the module docstring)."""

    transport: _IRelayTransport

    def __init__(self, client: ClientSide) -> None:
        self.client: ClientSide | None = client
        self.buffers = client.buffers

    def connectionMade(self) -> None:
        nodelay(self.transport)
        fast_reads(self.transport)
        # (writeSequence is typed for bytes; Twisted's transports and TransportShim join or
        # send views as well)
        writelines = cast("Callable[[list[bytes | memoryview]], None]",
                          self.transport.writeSequence)
        self.outbox = _Outbox(direct_writer(self.transport), writelines)
        self.client.upstream_ready(self)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        client = self.client
        if client is None:
            return
        out = client.framed_from_server(data)
        if out:
            client.write(out)  # (replies are not held: see _Outbox)
        if client.paused & _HELD_FULL:
            client.held_answered()
        if client.observing:
            client.deliver_soon()

    # Buffered reads (aiotransport.BufferedAdapter): see ReadBuffers.
    def get_buffer(self, hint: int) -> memoryview:
        return self.buffers.shared

    def buffer_updated(self, n: int) -> None:
        client = self.client
        chunk = self.buffers.shared[:n]
        if client is None or client.to_client is None:
            self.dataReceived(bytes(chunk))
            return
        out = client.framed_from_server(chunk)
        if out:
            client.to_client.send(out)
        if client.paused & _HELD_FULL:
            client.held_answered()
        if client.observing:
            client.deliver_soon()

    # The producer of the client's transport.
    def pauseProducing(self) -> None:
        self.transport.pauseProducing()
        if self.client is not None:
            self.client.pause(_CLIENT_FULL)

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()
        if self.client is not None:
            self.client.resume(_CLIENT_FULL)

    def stopProducing(self) -> None:
        if self.client is not None:
            self.client.disconnect()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.upstream_lost()
        outbox = getattr(self, "outbox", None)
        if outbox is not None:  # (its writers refer to the transport)
            outbox.write = outbox.writelines = _dropped


def _dropped(data: object) -> None:
    """What a closed relay writes to."""


class ReadPauses:
    """Reading a client's socket stops while any reason to hold it holds (one bit each) and
    starts again when the last is gone; as the producer of the server's transport, that
    socket backed up is one reason (bit 2)."""

    paused: int
    closed: bool
    transport: Any

    def pause(self, why: int) -> None:
        """Stop reading the client, for reason `why` (until `resume(why)`)."""
        if not self.paused and not self.closed:
            self.transport.pauseProducing()
        self.paused |= why

    def resume(self, why: int) -> None:
        if self.paused & why:
            self.paused &= ~why
            if not self.paused and not self.closed:
                self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        self.pause(_SERVER_FULL)

    def resumeProducing(self) -> None:
        self.resume(_SERVER_FULL)


@implementer(IPushProducer)
class ClientSide(ReadPauses, protocol.Protocol):
    """One accepted X client. As the server transport's producer it is paused when the
    server's socket backs up."""

    transport: _IRelayTransport

    def __init__(self, factory: ProxyFactory, number: int) -> None:
        self.factory = factory
        self.number = number
        watch = factory.watch_for(number)
        self.conn = X11Connection(factory.auth(), factory.policy, watch.observer, watch.tally)
        self.observing = self.conn.observer is not None
        self._deliver_call = None  # (see deliver_soon)
        self.feed_client = self.conn.client.feed
        self.feed_server = self.conn.server.feed
        self.framer = self.conn.client
        self.server: ServerSide | None = None
        self.outbox: _Outbox | None = None
        self.early: list[bytes] = []  # framed before the upstream connection was made
        self.buffers = factory.buffers
        self.own: memoryview | None = None  # a read buffer of our own (see ReadBuffers)
        self.fill = 0  # bytes of an unfinished request kept at the start of `own`
        self.to_client: _ViewWriter | None = None
        self.to_server: _ViewWriter | None = None
        self.upstream_error: str | None = None
        self.closed = False
        self.ready = False  # relaying: upstream connected, not closed
        self.connecting = False  # the setup passed: upstream connection asked for
        self.paused = 0  # why reading is paused (_UPSTREAM, _SERVER_FULL, ...), 0 if not
        self.in_setup = False  # counted among the factory's unfinished setups
        self._setup_call = None  # the setup timeout
        self.turned_away = False  # closed at once: too many unfinished setups

    def connectionMade(self) -> None:
        nodelay(self.transport)
        fast_reads(self.transport)
        self.write = direct_writer(self.transport)
        self.to_client = _ViewWriter.of(self.transport)
        factory = self.factory
        factory.totals.clients += 1
        factory.totals.active[self.number] = self
        if not factory.setup_started():
            self.turned_away = True
            self._close(None)
            return
        self.in_setup = True
        if factory.clock is not None:
            self._setup_call = factory.clock.callLater(factory.setup_timeout, self._setup_late)

    def _setup_late(self) -> None:
        self._setup_call = None
        log.info("client {n}: no setup within {t:g} s; closed", n=self.number,
                 t=self.factory.setup_timeout)
        self._close(None)

    def _setup_over(self) -> None:
        """The client is no longer an unfinished setup: it passed, or it has gone."""
        if self._setup_call is not None:
            if self._setup_call.active():
                self._setup_call.cancel()
            self._setup_call = None
        if self.in_setup:
            self.in_setup = False
            self.factory.setup_finished()

    def _before_relay(self, data: bytes) -> None:
        """Bytes before the relay runs: the setup goes through the framer, which checks the
        cookie, and only a client that passed gets an upstream connection."""
        if self.closed or self.upstream_error is not None:
            return
        out = self._framed(data)
        if out is None:
            return
        if self.conn.closing is not None:
            self._refused()
            return
        if out:
            self.early.append(bytes(out))
        if self.conn.setup is not None and not self.connecting:
            self.connecting = True
            self._setup_over()
            self.pause(_UPSTREAM)
            d = self.factory.connect_upstream(lambda: ServerSide(self))
            d.addErrback(self._upstream_failed)

    def _upstream_failed(self, failure: Failure) -> None:
        self.upstream_error = f"xproxy: cannot reach {self.factory.target_name}: " + (
            failure.getErrorMessage()
        )
        log.warn("client {n}: {why}", n=self.number, why=self.upstream_error)
        if not self.closed:
            self.transport.write(setup_failed(self.conn.endian, self.upstream_error))
            self._close(None)

    def upstream_ready(self, server: ServerSide) -> None:
        self.server = server
        if self.closed:
            server.transport.loseConnection()
            return
        self.outbox = server.outbox
        self.to_server = _ViewWriter.of(server.transport)
        self.ready = True
        self.transport.registerProducer(server, True)
        server.transport.registerProducer(self, True)
        early, self.early = self.early, []
        if early:
            self.outbox.send(b"".join(early), self.framer._stream)
        self.resume(_UPSTREAM)

    def stopProducing(self) -> None:
        self._close(None)

    def _held_check(self) -> None:
        """After a read whose output is not its input (a request may have been held)."""
        if len(self.conn.pending) > self.factory.max_held:
            self.pause(_HELD_FULL)

    def held_answered(self) -> None:
        if len(self.conn.pending) <= self.factory.max_held // 2:
            self.resume(_HELD_FULL)

    def dataReceived(self, data: bytes) -> None:
        if not self.ready:
            self._before_relay(data)
            return
        out = self._framed(data)
        if out:
            self.outbox.send(out, self.framer._stream)  # type: ignore[union-attr]
            if out is not data:
                self._held_check()
        if self.observing:
            self.conn.deliver()
        if self.conn.closing is not None:
            self._refused()

    # Buffered reads (aiotransport.BufferedAdapter): see ReadBuffers. The pieces of an
    # unfinished request stay where they were read, and the request leaves in one write
    # once its last piece is in, as with _Outbox, with no copy.
    def get_buffer(self, hint: int) -> memoryview:
        own = self.own
        return own[self.fill :] if own is not None else self.buffers.shared

    def buffer_updated(self, n: int) -> None:
        try:
            self._relay_read(n)
        finally:
            if self.observing:
                self.conn.deliver()  # after the bytes have gone on (see X11Connection)

    def _relay_read(self, n: int) -> None:
        own = self.own
        view = own if own is not None else self.buffers.shared
        start = self.fill
        end = start + n
        chunk = view[start:end]
        sink = self.to_server
        if sink is None or not self.ready or self.outbox.parts:  # type: ignore[union-attr]
            self.dataReceived(bytes(chunk))  # (nothing is kept in `own` then)
            return
        out = self._framed(chunk)
        if out is None:
            return  # closed
        if out is chunk:
            if self.framer._stream and len(view) - end >= KEEP_ROOM:
                if own is None:
                    self.own = self.buffers.claim()
                self.fill = end
                return
            sink.send(view[:end])
        else:
            if start:
                sink.send(view[:start])
            if out:
                sink.send(out)
            self._held_check()
        if own is not None:
            self.buffers.give_back(own)
            self.own = None
            self.fill = 0
        if self.conn.closing is not None:
            self._refused()

    def deliver_soon(self) -> None:
        """The observer finishes with what the server sent a little later: after the client's
        next read (once it has read a reply it usually sends its next request, and that goes
        to the server first), or within DELIVER_DELAY. Decoding a reply right away would make
        the client's next request wait for it."""
        clock = self.factory.clock
        if clock is None:
            self.conn.deliver()
        elif self._deliver_call is None:
            self._deliver_call = clock.callLater(DELIVER_DELAY, self._deliver_later)

    def _deliver_later(self) -> None:
        self._deliver_call = None
        self.conn.deliver()

    def _framed(self, data: bytes | memoryview) -> bytes | memoryview | None:
        """The client's bytes through the framer: what to send on, or None (closed)."""
        try:
            return self.feed_client(data)
        except X11ProtocolError as err:
            self.factory.totals.failed += 1
            self._close(f"protocol error from client: {err}")
            return None

    def _refused(self) -> None:
        self.transport.write(self.conn.take_to_client())
        self.factory.totals.refused += 1
        log.warn("client {n} refused: {why}", n=self.number, why=self.conn.closing)
        self._close(None)

    def framed_from_server(self, data: bytes | memoryview) -> bytes | memoryview | None:
        """The server's bytes through the framer: what to send to the client, or None."""
        if self.closed:
            return None
        try:
            return self.feed_server(data)
        except X11ProtocolError as err:
            self._close(f"protocol error from server: {err}")
            return None

    def upstream_lost(self) -> None:
        self._close(None)

    def disconnect(self) -> None:
        """Close this client and its upstream connection (the proxy is stopping)."""
        self._close(None)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._close(None)
        if self._deliver_call is not None:
            if self._deliver_call.active():
                self._deliver_call.cancel()
            self._deliver_call = None
        if self.observing:
            self.conn.deliver()  # all of it, before the client's summary
        self.factory.totals.active.pop(self.number, None)
        self.factory.totals.add(self.conn)
        self.factory.client_done(self)
        self._release()

    def _release(self) -> None:
        """Drop what the connection holds and the references that would make a cycle of it,
        so its memory goes now, not at the cycle collector's next full run."""
        self.conn.release()
        self.early = []
        self.server = self.outbox = self.to_client = self.to_server = None
        self.write = _dropped

    def _close(self, why: str | None) -> None:
        if why is not None:
            log.error("client {n} disconnected: {why}", n=self.number, why=why)
        if self.closed:
            return
        self.closed = True
        self.ready = False
        self._setup_over()
        self.transport.loseConnection()
        if self.server is not None:
            self.server.outbox.flush()
            if self.fill:
                self.server.transport.write(bytes(self.own[: self.fill]))  # type: ignore[index]
            self.server.transport.loseConnection()
        self.own = None
        self.fill = 0


class ProxyFactory(protocol.Factory):
    """Accepts X clients for one proxy display and relays each to the target.

    `auth` is the AuthPolicy, or a function called for each new client that returns it
    (so the upstream cookie can be looked up again). A client must complete its setup within
    `setup_timeout` seconds (with a `clock`), and at most `max_setups` clients may be
    unfinished at a time: past that, new connections are closed at once (logged). A client
    with more than `max_held` requests whose replies the proxy rewrites awaiting them is not
    read until half have been answered."""

    def __init__(
        self,
        upstream: IStreamClientEndpoint,
        target_name: str,
        auth: AuthPolicy | Callable[[], AuthPolicy],
        policy: ExtensionPolicy,
        on_client_done: Callable[[ClientSide], None] | None = None,
        observers: Callable[[int], Watch] | None = None,
        clock: IReactorTime | None = None,
        setup_timeout: float = SETUP_TIMEOUT,
        max_setups: int = MAX_SETUPS,
        max_held: int = MAX_HELD,
    ) -> None:
        self.upstream = upstream
        self.target_name = target_name
        self._auth = auth
        self.policy = policy
        self.totals = Totals()
        self.numbers = itertools.count(1)
        self.on_client_done = on_client_done
        self.observers = observers
        #: for ClientSide.deliver_soon; without one, observers finish each read at once
        self.clock = clock
        self.buffers = ReadBuffers()
        self.noisy = False
        self.setup_timeout = setup_timeout
        self.max_setups = max_setups
        self.max_held = max_held
        self.unfinished = 0  # connections whose setup has not passed yet
        self.setups_refused = 0  # connections closed at once: too many unfinished
        self._cap_logged: float | None = None
        self._cap_unlogged = 0

    def setup_started(self) -> bool:
        """A new connection: whether it may go on (fewer than max_setups are unfinished)."""
        if self.unfinished < self.max_setups:
            self.unfinished += 1
            return True
        self.setups_refused += 1
        self._cap_unlogged += 1
        now = self.clock.seconds() if self.clock is not None else None
        if self._cap_logged is None or now is None or now - self._cap_logged >= CAP_LOG_EVERY:
            log.warn("{n} connections to {d} have not completed their setup (--max-setups): "
                     "closing new ones; {r} closed since this was last said",
                     n=self.max_setups, d=self.target_name, r=self._cap_unlogged)
            self._cap_logged = now if now is not None else 0.0
            self._cap_unlogged = 0
        return False

    def setup_finished(self) -> None:
        self.unfinished -= 1

    def auth(self) -> AuthPolicy:
        return self._auth() if callable(self._auth) else self._auth

    def watch_for(self, number: int) -> Watch:
        """What watches client `number`'s messages (a tracer, metrics); with neither, the
        relay only frames."""
        return self.observers(number) if self.observers is not None else Watch()

    def buildProtocol(self, addr: IAddress | None) -> ClientSide:
        return ClientSide(self, next(self.numbers))

    def connect_upstream(self, make: Callable[[], ServerSide]) -> defer.Deferred[IProtocol]:
        factory = protocol.Factory.forProtocol(make)
        factory.noisy = False
        return self.upstream.connect(factory)

    def client_done(self, client: ClientSide) -> None:
        c = client.conn
        if not client.turned_away:  # (those are counted in setup_started's warning)
            log.info(
                "client {n} closed: {req} requests, {rep} replies, {ev} events, {err} errors; "
                "{cb} bytes in, {sb} bytes out",
                n=client.number, req=c.stats.requests, rep=c.stats.replies, ev=c.stats.events,
                err=c.stats.errors, cb=c.client.bytes, sb=c.server.bytes,
            )
        if self.on_client_done is not None:
            self.on_client_done(client)
