"""Twisted adapters for the link: a session (`LinkSession`: the core `protocol.Link` and
its channels), a connection (`LinkProtocol`: one TLS connection that feeds the session's core
while it lasts), and a transport per channel (`ChannelTransport`) that X relay protocols
(relay.proxy.ClientSide, the agent's bridge) use as if it were a socket.

A session outlives its connections: when one drops, the channels stay open and writes keep
queueing in the core (windows still apply, so the local sockets get paused by flow control
as on a slow link); the app host's agent reconnects, and the core sends again what the peer
has not received (see link/protocol.py). Who reconnects, and for how long a lost session is
kept, is decided by agent/link_agent.py (app host) and export/server.py (display host).

Survivable: the TCP/TLS connection dropping (a network blip, a relay or NAT box forgetting
it, NAT rebinding, the app host's address changing) for up to the grace period — X clients
see a pause, nothing else. Not survivable: the agent or export process restarting (the
session lives in their memory), the X server resetting, or the grace period running out;
then the X clients see their connection close, as with a server that went away.

Liveness: each connection ticks every `ack_interval` seconds: it sends an ACK if frames came
since the last one, a PING after `keepalive` seconds without a byte from the peer, and drops
the connection after `timeout` seconds without one (a live peer answers the PING; a dead
link, or one whose NAT mapping vanished, says nothing), so a silently dead link is found and
replaced within `timeout` seconds.

Flow control: writing to a channel spends its window; at zero the channel pauses whatever
produces into it (the local socket's transport). Data arriving on a channel is handed to its
protocol, and credit goes back at once unless the channel was paused by its consumer (the
local socket is backed up), in which case the credit waits for resumeProducing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import protocol
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..relay.twisted_internals import nodelay
from .protocol import (
    Bye,
    Closed,
    Credit,
    Data,
    DisplayChanged,
    Event,
    Hello,
    Link,
    LinkProtocolError,
    Opened,
)

log = Logger(namespace="xproxy.link")

KEEPALIVE = 5.0
TIMEOUT = 15.0
ACK_INTERVAL = 1.0


class LinkClosed(Exception):
    """The link went away."""


@implementer(ITransport, IPushProducer)
class ChannelTransport:
    """One channel of a link session, shaped like a stream transport."""

    disconnecting = False
    connected = True

    def __init__(self, session: LinkSession, channel: int) -> None:
        self.session = session
        self.channel = channel
        self.protocol: protocol.Protocol | None = None
        self.producer: Any = None
        self.producer_paused = False
        self.paused = False  # our consumer asked us to stop delivering
        self.held: list[bytes] = []  # data that arrived while paused (bounded by the window)
        self.closed = False

    # -- the transport side, used by the protocol attached to this channel --------------

    def attach(self, proto: protocol.Protocol) -> None:
        self.protocol = proto
        proto.makeConnection(self)  # type: ignore[arg-type]

    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        core = self.session.core
        core.send(self.channel, data)
        self.session.flush()
        if core.window(self.channel) <= 0 and self.producer is not None and not self.producer_paused:
            self.producer_paused = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.closed:
            return
        self.disconnecting = True
        self.session.core.close(self.channel, "closed")
        self.session.flush()
        self._lost(None)

    abortConnection = loseConnection

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer
        self.producer_paused = False

    def unregisterProducer(self) -> None:
        self.producer = None

    def getPeer(self) -> Any:
        return self.session.peer_address

    def getHost(self) -> Any:
        return self.session.host_address

    # -- the producer side: our consumer pauses us when it is backed up ------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self.held and not self.paused and not self.closed:
            self._deliver(self.held.pop(0))
        self.session.flush()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- driven by the session -----------------------------------------------------------

    def _data(self, data: bytes) -> None:
        if self.paused or self.held:
            self.held.append(data)
        else:
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self.protocol is not None:
            self.protocol.dataReceived(data)
        if not self.closed:
            self.session.core.credit(self.channel, len(data))

    def _credit(self) -> None:
        if self.producer is not None and self.producer_paused and \
                self.session.core.window(self.channel) > 0:
            self.producer_paused = False
            self.producer.resumeProducing()

    def _lost(self, reason: str | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.connected = False
        self.session.channels.pop(self.channel, None)
        if self.protocol is not None:
            from twisted.internet.error import ConnectionDone

            self.protocol.connectionLost(Failure(ConnectionDone(reason or "channel closed")))


class LinkSession:
    """A core Link and its channels: what survives when the connection under it drops.
    `conn` is the connection carrying it now, or None between connections. `on_open(self,
    channel, info)` is called for each channel the peer opens."""

    def __init__(self, core: Link,
                 on_open: Callable[[LinkSession, ChannelTransport, dict[str, Any]], None]
                 | None = None) -> None:
        self.core = core
        self.channels: dict[int, ChannelTransport] = {}
        self.on_open = on_open
        self.conn: LinkProtocol | None = None
        self.next_channel = 1
        self.ended: str | None = None  # why the session is over, once it is
        self.session_id: str | None = None  # set when the peer may resume it
        self.peer_fingerprint: str | None = None
        self.peer_address: Any = None
        self.host_address: Any = None
        self.connections = 0  # how many have carried it
        self.reconnects = 0  # how many times it was resumed
        self.expiry: IDelayedCall | None = None  # the display host's grace timer, disconnected
        #: called with a CHANGED frame's object (the display host's watch saw a change)
        self.on_changed: Callable[[dict[str, Any]], None] | None = None

    @property
    def gone(self) -> bool:
        return self.ended is not None

    def attach(self, conn: LinkProtocol) -> None:
        """`conn` carries the session from now on (the previous one, if any, is detached)."""
        if self.conn is not None and self.conn is not conn:
            self.detach(self.conn)
        self.conn = conn
        self.connections += 1
        conn.session = self
        conn.core = self.core
        transport = conn.transport
        if transport is not None:
            self.peer_address = transport.getPeer()
            self.host_address = transport.getHost()

    def detach(self, conn: LinkProtocol) -> bool:
        """`conn` no longer carries the session (it dropped, or a new one replaced it);
        whatever it still reads is ignored."""
        if conn.session is self:
            conn.session = None
            conn.core = Link()  # reads after this point go nowhere
            conn.detached = True
        if self.conn is not conn:
            return False
        self.conn = None
        return True

    def take_over(self, conn: LinkProtocol, hello: dict[str, Any], peer_received: Any) -> int:
        """The display host's side of a resumption: `conn` has read the peer's HELLO with a
        core of its own; carry on over it, answer with `hello` (our count of frames received)
        and send again what the peer has not received. Returns how many frames go again."""
        core = self.core
        core.new_connection()
        core.adopt(conn.core)
        self.attach(conn)
        core.hello(hello)
        again = core.resume(peer_received)
        self.reconnects += 1
        conn.flush()
        return again

    def flush(self) -> None:
        conn = self.conn
        if conn is not None:
            conn.flush()

    def open_channel(self, info: dict[str, Any] | None = None) -> ChannelTransport:
        if self.ended is not None:
            raise LinkClosed(f"the link is closed: {self.ended}")
        channel = self.next_channel
        self.next_channel += 1
        self.core.open(channel, info)
        self.flush()
        transport = ChannelTransport(self, channel)
        self.channels[channel] = transport
        return transport

    def dispatch(self, event: Event) -> None:
        if isinstance(event, Data):
            ch = self.channels.get(event.channel)
            if ch is not None:
                ch._data(event.data)
        elif isinstance(event, Credit):
            ch = self.channels.get(event.channel)
            if ch is not None:
                ch._credit()
        elif isinstance(event, Closed):
            ch = self.channels.get(event.channel)
            if ch is not None:
                ch._lost(event.reason)
        elif isinstance(event, DisplayChanged):
            if self.on_changed is not None:
                self.on_changed(event.info)
        elif isinstance(event, Opened):
            ch = ChannelTransport(self, event.channel)
            self.channels[event.channel] = ch
            if self.on_open is None:
                self.core.close(event.channel, "this end opens no channels")
                self.channels.pop(event.channel)
            else:
                self.on_open(self, ch, event.info)

    def end(self, reason: str, bye: bool = False) -> None:
        """The session is over for good: every channel closes with `reason`. With `bye`, the
        peer is told so (a BYE after the channels' CLOSEs), so that it keeps nothing for a
        resumption."""
        if self.ended is not None:
            return
        self.ended = reason
        if self.expiry is not None and self.expiry.active():
            self.expiry.cancel()
        self.expiry = None
        for ch in list(self.channels.values()):
            self.core.close(ch.channel, reason)  # the peer's clients end now, not at its grace
            ch._lost(reason)
        if bye:
            self.core.bye(reason)
        if self.conn is not None:
            self.flush()
            transport: Any = self.conn.transport
            transport.loseConnection()


@implementer(IHandshakeListener)
class LinkProtocol(protocol.Protocol):
    """One connection of a link, over TLS. `on_handshake(self)` checks the peer once TLS is
    up and returns the HELLO to send, or None to answer the peer's HELLO instead (or raises
    to refuse); `on_hello(self, info)` gets the peer's HELLO; `on_bye(self, reason)` is called
    when the peer ends the session cleanly (BYE; the session has ended by then);
    `on_lost(self, reason)` is called when the connection goes (`self.session` is then the session it carried, or None
    if it carried none or was replaced).

    Given a `session`, the connection carries it from the start (the app host's side, and
    in-memory tests); otherwise it reads with a core of its own until the display host
    decides, on the peer's HELLO, which session it carries (`LinkSession.attach`)."""

    def __init__(
        self,
        clock: IReactorTime,
        on_handshake: Callable[[LinkProtocol], dict[str, Any] | None],
        on_hello: Callable[[LinkProtocol, dict[str, Any]], None] | None = None,
        on_lost: Callable[[LinkProtocol, Failure], None] | None = None,
        session: LinkSession | None = None,
        on_bye: Callable[[LinkProtocol, str], None] | None = None,
        compress_level: int | None = None,
        keepalive: float = KEEPALIVE,
        timeout: float = TIMEOUT,
        ack_interval: float = ACK_INTERVAL,
    ) -> None:
        self.clock = clock
        self.session = session
        self.core = session.core if session is not None else Link(compress_level=compress_level)
        self.on_handshake = on_handshake
        self.on_hello = on_hello
        self.on_lost = on_lost
        self.on_bye = on_bye
        self.keepalive = keepalive
        self.timeout = timeout
        self.ack_interval = ack_interval
        self.gone = False
        self.detached = False
        self.failure: str | None = None  # a protocol error that closed it
        self.peer_fingerprint: str | None = None
        self.last_rx = 0.0
        self._last_ping = 0.0
        self._tick_call: IDelayedCall | None = None

    @property
    def tls(self) -> Any:
        """The TLS transport this connection runs on (once it is made)."""
        return self.transport

    def peer_certificate_fingerprint(self) -> str | None:
        from ..trust.identity import fingerprint_of_certificate

        cert = self.tls.getPeerCertificate()
        if cert is None:
            return None
        return fingerprint_of_certificate(cert.to_cryptography())

    def connectionMade(self) -> None:
        # frames are small and latency is the point: no Nagle (with delayed ACKs it costs
        # up to 40 ms per round trip)
        nodelay(self.transport)
        self.last_rx = self._last_ping = self.clock.seconds()
        if self.session is not None:
            session = self.session
            if session.connections:
                session.core.new_connection()  # a reconnect: wait for the peer's count
            session.attach(self)
        self._tick_call = self.clock.callLater(self.ack_interval, self._tick)

    def handshakeCompleted(self) -> None:
        self.peer_fingerprint = self.peer_certificate_fingerprint()
        try:
            hello = self.on_handshake(self)
        except Exception as err:  # noqa: BLE001 - a refusal: say why in our HELLO, then close
            self.refuse(getattr(err, "code", "refused"), str(err))
            return
        if hello is not None:
            self.core.hello(hello)
            self.flush()

    def refuse(self, code: str, message: str) -> None:
        """Answer with a HELLO that says no, and close."""
        self.core.hello({"ok": False, "error": code, "message": message})
        self.flush()
        self.tls.loseConnection()

    def flush(self) -> None:
        if self.gone or self.detached:
            return
        out = self.core.data_to_send()
        if out:
            self.tls.write(out)

    def open_channel(self, info: dict[str, Any] | None = None) -> ChannelTransport:
        if self.session is None:
            raise LinkClosed("the link is closed")
        return self.session.open_channel(info)

    @property
    def channels(self) -> dict[int, ChannelTransport]:
        return self.session.channels if self.session is not None else {}

    def dataReceived(self, data: bytes) -> None:
        if self.detached:
            return
        self.last_rx = self.clock.seconds()
        try:
            events = self.core.receive_data(data)
            for event in events:
                if self.detached or self.gone:
                    return
                if isinstance(event, Hello):
                    if self.on_hello is not None:
                        self.on_hello(self, event.info)
                elif isinstance(event, Bye):
                    self._bye(event.reason)
                    return
                elif self.session is not None:
                    self.session.dispatch(event)
                else:
                    raise LinkProtocolError("channel frames before the link handshake")
        except LinkProtocolError as err:
            self.fail(str(err))
            return
        self.flush()

    def _bye(self, reason: str) -> None:
        """The peer ended the session: close its channels, tell the owner, and close."""
        session = self.session
        if session is not None:
            session.end(f"ended by the peer: {reason}" if reason else "ended by the peer")
        if self.on_bye is not None:
            self.on_bye(self, reason)
        self.tls.loseConnection()

    def fail(self, why: str) -> None:
        """The peer broke the protocol: log it, end the session (a resumption would replay
        the same frames) and close."""
        log.error("link with {peer}: {err}; closing it", peer=self.tls.getPeer(), err=why)
        self.failure = why
        if self.session is not None:
            self.session.end(f"link protocol error: {why}")
        self.tls.loseConnection()

    def _tick(self) -> None:
        self._tick_call = None
        if self.gone or self.detached:
            return
        now = self.clock.seconds()
        core = self.core
        silent = now - self.last_rx
        if core.peer_recon is not False and silent >= self.timeout:
            # an older peer that does not answer PING may be silent for long; others are not
            transport: Any = self.transport
            log.warn("link with {peer}: nothing heard for {s:.0f} s; dropping the connection",
                     peer=transport.getPeer(), s=silent)
            transport.abortConnection()
            return
        if core.ack_due():
            core.ack()
        if silent >= self.keepalive and now - self._last_ping >= self.keepalive:
            core.ping()
            self._last_ping = now
        self.flush()
        self._tick_call = self.clock.callLater(self.ack_interval, self._tick)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.gone = True
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        self._tick_call = None
        session = self.session
        if session is not None:
            session.detach(self)
            self.session = session  # for on_lost: the session it carried until now
        if self.on_lost is not None:
            self.on_lost(self, reason)

