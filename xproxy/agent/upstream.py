"""Where a run's relay connects upstream inside the link agent: a new channel of the link, with
the round-trip suppressor between the two, in process.

A run's display is a relay (relay/proxy.py: cookie check, extension policy, tracing) whose
upstream connection is an `AgentUpstream` instead of a socket: what the relay writes goes
through the connection's `Suppressor` (suppress/core.py) and on to its link channel; the
suppressor's answers and the server's bytes go back to the relay's `dataReceived` as if read
from a socket. Flow control is the link's: a channel whose window is spent pauses the relay's
client, and a client that does not read pauses the channel (its credit waits).

Each connection's counters also go to its run's `Stats` (`RunCounts`), so a run reports
what its own connections compared and found, not the agent's running total; and a traced
run's wait analysis is told which requests the suppressor answered (`RunCounts.marks`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer, protocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IConsumer,
    IProducer,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..relay.proxy import ServerSide
from ..suppress.core import DisplayCache, Stats, Suppressor
from ..x11.errors import X11ProtocolError

if TYPE_CHECKING:
    from ..link.transport import ChannelTransport

log = Logger(namespace="xproxy.agent")


@dataclass
class RunCounts:
    """What one run's X connections did in the suppressor: its share of the cache's `Stats`,
    and the mismatches they found (at most `MAX_MISMATCHES` kept). `marks`, if set, is told
    (relay client number, sequence number, behind) of each request a connection answered
    (`Suppressor.on_answer`)."""

    stats: Stats = field(default_factory=Stats)
    mismatch_log: list[dict[str, Any]] = field(default_factory=list)
    marks: Callable[[int, int, int], None] | None = None

    MAX_MISMATCHES = 50

    def report(self) -> dict[str, Any]:
        return {**vars(self.stats), "mismatch_log": self.mismatch_log}


class UpstreamHost(Protocol):
    """What an `AgentUpstream` needs of its agent (link_agent.LinkAgent): the cache, the
    suppression mode, a number per connection, a new link channel, and the hooks that keep
    the agent alive while a connection lasts and save the cache when one ends."""

    cache: DisplayCache | None
    suppress: bool
    verify: bool

    def next_number(self) -> int: ...

    def open_channel(self) -> ChannelTransport: ...

    def hold(self) -> None: ...

    def release(self) -> None: ...

    def save(self) -> None: ...


@implementer(IStreamClientEndpoint)
class AgentEndpoint:
    """A client endpoint whose every connection is an `AgentUpstream` of `host`, its
    counters added to `counts` (one run's)."""

    def __init__(self, host: UpstreamHost, counts: RunCounts | None = None) -> None:
        self.host = host
        self.counts = counts

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        if proto is None:
            return defer.fail(ConnectionDone("the factory refused the connection"))
        upstream = AgentUpstream(self.host, proto, self.counts)
        proto.makeConnection(upstream)
        return defer.succeed(proto)


@implementer(ITransport, IPushProducer, IConsumer)
class AgentUpstream:
    """The transport a run's relay writes its client's requests to (see the module
    docstring). The link channel opens with the first bytes, so a connection that sends
    nothing costs the display host nothing."""

    disconnecting = False
    connected = True

    def __init__(self, host: UpstreamHost, proto: IProtocol,
                 counts: RunCounts | None = None) -> None:
        self.host = host
        self.proto: IProtocol | None = proto
        self.counts = counts
        self.channel: ChannelTransport | None = None
        self.producer: IProducer | None = None
        self.closed = False
        self.sup: Suppressor | None = None
        if host.cache is not None:
            self.sup = Suppressor(host.cache, host.next_number(), verify=host.verify,
                                  enabled=host.suppress)
            marks = counts.marks if counts is not None else None
            if marks is not None and isinstance(proto, ServerSide) and proto.client is not None:
                self.sup.on_answer = partial(marks, proto.client.number)
        host.hold()

    # -- the relay writes its client's bytes ----------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        sup = self.sup
        if sup is not None:
            try:
                data, back = self._counted(sup.from_client, data)
            except X11ProtocolError as err:
                log.error("X client: {err}; closing it", err=err)
                self.loseConnection()
                return
            if back:
                self._to_relay(back)
        if data and not self.closed:
            self._forward(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def _forward(self, data: bytes) -> None:
        channel = self.channel
        if channel is None:
            try:
                channel = self.channel = self.host.open_channel()
            except Exception as err:  # noqa: BLE001 - any failure closes this one connection
                log.error("cannot open a channel: {err}", err=err)
                self.loseConnection()
                return
            channel.attach(_ChannelEnd(self))
            if self.producer is not None:
                channel.registerProducer(self.producer, True)
        channel.write(bytes(data))

    # -- the server's bytes, from the channel -------------------------------------------

    def from_server(self, data: bytes) -> None:
        sup = self.sup
        if sup is not None:
            try:
                data = self._counted(sup.from_server, data)
            except X11ProtocolError as err:
                log.error("X server: {err}; closing the client", err=err)
                self.loseConnection()
                return
        if data:
            self._to_relay(data)

    def _to_relay(self, data: bytes) -> None:
        if self.proto is not None and not self.closed:
            self.proto.dataReceived(data)

    def _counted(self, call: Callable[[bytes], Any], data: bytes) -> Any:
        """`call(data)`, adding what it counted in the shared cache to this run's counts."""
        counts = self.counts
        if counts is None:
            return call(data)
        cache = self.sup.cache  # type: ignore[union-attr]
        s = cache.stats
        before = (s.answered, s.held, s.forwarded_replies, s.compared, s.mismatches)
        logged = len(cache.mismatch_log)
        try:
            return call(data)
        finally:
            mine = counts.stats
            mine.answered += s.answered - before[0]
            mine.held += s.held - before[1]
            mine.forwarded_replies += s.forwarded_replies - before[2]
            mine.compared += s.compared - before[3]
            mine.mismatches += s.mismatches - before[4]
            room = RunCounts.MAX_MISMATCHES - len(counts.mismatch_log)
            if room > 0 and len(cache.mismatch_log) > logged:
                counts.mismatch_log.extend(cache.mismatch_log[logged : logged + room])

    # -- flow control ----------------------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """The relay's client: paused while the channel's window is spent."""
        self.producer = producer
        if self.channel is not None:
            self.channel.registerProducer(producer, True)

    def unregisterProducer(self) -> None:
        self.producer = None
        if self.channel is not None:
            self.channel.unregisterProducer()

    def pauseProducing(self) -> None:
        """The relay's client does not read: stop delivering (the channel keeps its credit)."""
        if self.channel is not None:
            self.channel.pauseProducing()

    def resumeProducing(self) -> None:
        if self.channel is not None:
            self.channel.resumeProducing()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- ending ----------------------------------------------------------------------------

    def loseConnection(self) -> None:
        if self.closed:
            return
        self.disconnecting = True
        if self.channel is not None:
            self.channel.loseConnection()  # its end calls _lost
        self._lost(None)

    abortConnection = loseConnection

    def _lost(self, reason: str | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.connected = False
        if self.sup is not None:
            self.sup.close()
        proto, self.proto = self.proto, None
        self.producer = None
        try:
            if proto is not None:
                proto.connectionLost(Failure(ConnectionDone(reason or "closed")))
        finally:
            self.host.save()
            self.host.release()

    def getPeer(self) -> Any:
        return self.channel.getPeer() if self.channel is not None else None

    def getHost(self) -> Any:
        return self.channel.getHost() if self.channel is not None else None


class _ChannelEnd(protocol.Protocol):
    """The protocol on the link channel: the server's bytes back to the upstream."""

    def __init__(self, upstream: AgentUpstream) -> None:
        self.upstream = upstream

    def dataReceived(self, data: bytes) -> None:
        self.upstream.from_server(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.upstream._lost(reason.getErrorMessage() if reason is not None else None)
