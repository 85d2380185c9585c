"""Twisted adapters for the link: a protocol that feeds `protocol.link.Link`, and a transport
per channel that X relay protocols (relay.ClientSide / ServerSide) use as if it were a socket.

Flow control: writing to a channel spends its window; at zero the channel pauses whatever
produces into it (the local socket's transport). Data arriving on a channel is handed to its
protocol, and credit goes back at once unless the channel was paused by its consumer (the
local socket is backed up), in which case the credit waits for resumeProducing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import protocol
from twisted.internet.interfaces import IHandshakeListener, IPushProducer, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .protocol.link import Closed, Credit, Data, Hello, Link, LinkProtocolError, Opened

log = Logger(namespace="xproxy.link")


class LinkClosed(Exception):
    """The link went away."""


@implementer(ITransport, IPushProducer)
class ChannelTransport:
    """One channel of a link, shaped like a stream transport."""

    disconnecting = False
    connected = True

    def __init__(self, link: LinkProtocol, channel: int) -> None:
        self.link = link
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
        core = self.link.core
        core.send(self.channel, data)
        self.link.flush()
        if core.window(self.channel) <= 0 and self.producer is not None and not self.producer_paused:
            self.producer_paused = True
            self.producer.pauseProducing()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.closed:
            return
        self.disconnecting = True
        self.link.core.close(self.channel, "closed")
        self.link.flush()
        self._lost(None)

    abortConnection = loseConnection

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer
        self.producer_paused = False

    def unregisterProducer(self) -> None:
        self.producer = None

    def getPeer(self) -> Any:
        return self.link.transport.getPeer()

    def getHost(self) -> Any:
        return self.link.transport.getHost()

    # -- the producer side: our consumer pauses us when it is backed up ------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self.held and not self.paused and not self.closed:
            self._deliver(self.held.pop(0))
        self.link.flush()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- driven by the link --------------------------------------------------------------

    def _data(self, data: bytes) -> None:
        if self.paused or self.held:
            self.held.append(data)
        else:
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self.protocol is not None:
            self.protocol.dataReceived(data)
        if not self.closed:
            self.link.core.credit(self.channel, len(data))

    def _credit(self) -> None:
        if self.producer is not None and self.producer_paused and \
                self.link.core.window(self.channel) > 0:
            self.producer_paused = False
            self.producer.resumeProducing()

    def _lost(self, reason: str | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.connected = False
        self.link.channels.pop(self.channel, None)
        if self.protocol is not None:
            from twisted.internet.error import ConnectionDone

            self.protocol.connectionLost(Failure(ConnectionDone(reason or "channel closed")))


@implementer(IHandshakeListener)
class LinkProtocol(protocol.Protocol):
    """One link over a TLS connection. `on_handshake(self)` checks the peer once TLS is up
    and returns the HELLO to send (or raises to refuse); `on_open(self, channel, info)` is
    called for each channel the peer opens; `on_hello(self, info)` for the peer's HELLO."""

    def __init__(
        self,
        on_handshake: Callable[[LinkProtocol], dict[str, Any]],
        on_hello: Callable[[LinkProtocol, dict[str, Any]], None] | None = None,
        on_open: Callable[[LinkProtocol, ChannelTransport, dict[str, Any]], None] | None = None,
        on_lost: Callable[[LinkProtocol, Failure], None] | None = None,
        compress_level: int | None = None,
    ) -> None:
        self.core = Link(compress_level=compress_level)
        self.channels: dict[int, ChannelTransport] = {}
        self.on_handshake = on_handshake
        self.on_hello = on_hello
        self.on_open = on_open
        self.on_lost = on_lost
        self.next_channel = 1
        self.gone = False
        self.peer_fingerprint: str | None = None

    def peer_certificate_fingerprint(self) -> str | None:
        from .identity import fingerprint_of_certificate

        cert = self.transport.getPeerCertificate()  # type: ignore[attr-defined]
        if cert is None:
            return None
        return fingerprint_of_certificate(cert.to_cryptography())

    def connectionMade(self) -> None:
        # frames are small and latency is the point: no Nagle (with delayed ACKs it costs
        # up to 40 ms per round trip)
        _nodelay(self.transport)

    def handshakeCompleted(self) -> None:
        self.peer_fingerprint = self.peer_certificate_fingerprint()
        try:
            hello = self.on_handshake(self)
        except Exception as err:  # a refusal: say why in our HELLO, then close
            self.core.hello({"ok": False, "error": getattr(err, "code", "refused"),
                             "message": str(err)})
            self.flush()
            self.transport.loseConnection()
            return
        self.core.hello(hello)
        self.flush()

    def flush(self) -> None:
        out = self.core.data_to_send()
        if out and not self.gone:
            self.transport.write(out)

    def open_channel(self, info: dict[str, Any] | None = None) -> ChannelTransport:
        if self.gone:
            raise LinkClosed("the link is closed")
        channel = self.next_channel
        self.next_channel += 1
        self.core.open(channel, info)
        self.flush()
        transport = ChannelTransport(self, channel)
        self.channels[channel] = transport
        return transport

    def dataReceived(self, data: bytes) -> None:
        try:
            events = self.core.receive_data(data)
        except LinkProtocolError as err:
            log.error("link from {peer}: {err}; closing it", peer=self.transport.getPeer(), err=err)
            self.transport.loseConnection()
            return
        for event in events:
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
            elif isinstance(event, Opened):
                ch = ChannelTransport(self, event.channel)
                self.channels[event.channel] = ch
                if self.on_open is None:
                    self.core.close(event.channel, "this end opens no channels")
                    self.channels.pop(event.channel)
                else:
                    self.on_open(self, ch, event.info)
            elif isinstance(event, Hello) and self.on_hello is not None:
                self.on_hello(self, event.info)
        self.flush()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.gone = True
        for ch in list(self.channels.values()):
            ch._lost("link lost")
        if self.on_lost is not None:
            self.on_lost(self, reason)


def _nodelay(transport: Any) -> None:
    import socket

    for t in (transport, getattr(transport, "transport", None)):
        sock = getattr(t, "socket", None)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            return
