"""The app host's end of a link: one process per display host, shared by every `xproxy run`
that shows programs there (as ssh's ControlMaster shares one connection).

It connects to the export over TLS, checks the display host's key (the advertised fingerprint,
then trust on first use in known_displays), and serves a unix socket in a private directory:
each connection to it becomes one channel of the link, carrying one X connection. It exits
when the link drops, or when no connection has used it for `linger` seconds.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import SSL4ClientEndpoint, UNIXServerEndpoint, connectProtocol
from twisted.logger import Logger

from .identity import Identity, IdentityError, KeyChanged, KnownDisplays
from .linkconn import ChannelTransport, LinkProtocol
from .tls import ClientContextFactory

log = Logger(namespace="xproxy.agent")


class AgentError(Exception):
    """The link cannot be made; the message says why and what to do."""


def runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = os.path.join(base, "xtransparency") if base else f"/tmp/xtransparency-{os.getuid()}"
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def agent_socket_path(host: str, port: int, trust_name: str) -> str:
    digest = hashlib.sha256(f"{trust_name}\0{host}\0{port}".encode()).hexdigest()[:16]
    return os.path.join(runtime_dir(), f"link-{digest}.sock")


class _Bridge(protocol.Protocol):
    """A local connection to the agent's socket, joined to a new channel of the link."""

    def __init__(self, agent: "LinkAgent") -> None:
        self.agent = agent
        self.channel: ChannelTransport | None = None

    def connectionMade(self) -> None:
        self.agent.active += 1
        self.agent.cancel_linger()

    def dataReceived(self, data: bytes) -> None:
        if self.channel is None:  # the channel opens with the first bytes, so a liveness
            try:  # check that connects and leaves costs the display host nothing
                self.channel = self.agent.link.open_channel({})  # type: ignore[union-attr]
            except Exception as err:
                log.error("cannot open a channel: {err}", err=err)
                self.transport.loseConnection()
                return
            self.channel.attach(_BridgeBack(self))
            self.transport.registerProducer(self.channel, True)
            self.channel.registerProducer(self.transport, True)
        self.channel.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.channel is not None:
            self.channel.loseConnection()
        self.agent.active -= 1
        self.agent.maybe_linger()


class _BridgeBack(protocol.Protocol):
    def __init__(self, bridge: _Bridge) -> None:
        self.bridge = bridge

    def dataReceived(self, data: bytes) -> None:
        self.bridge.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.bridge.transport.loseConnection()


class LinkAgent:
    def __init__(self, reactor, host: str, port: int, trust_name: str,  # type: ignore[no-untyped-def]
                 expected_fingerprint: str | None, socket_path: str,
                 identity: Identity | None = None, known: KnownDisplays | None = None,
                 linger: float = 5.0, first_use_grace: float = 30.0) -> None:
        self.reactor = reactor
        self.host, self.port = host, port
        self.trust_name = trust_name
        self.expected = expected_fingerprint
        self.socket_path = socket_path
        self.identity = identity or Identity.load_or_create()
        self.known = known or KnownDisplays.default()
        self.linger = linger
        self.first_use_grace = first_use_grace
        self.link: LinkProtocol | None = None
        self.active = 0
        self.listening: Any = None
        self.done: defer.Deferred[str] = defer.Deferred()
        self._hello: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._refusal: Exception | None = None
        self._linger_call: Any = None
        self.server_info: dict[str, Any] = {}

    async def start(self) -> dict[str, Any]:
        """Make the link, then serve the local socket."""
        info = await self._connect()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self.listening = await UNIXServerEndpoint(self.reactor, self.socket_path, mode=0o600,
                                                  wantPID=False).listen(
            protocol.Factory.forProtocol(lambda: _Bridge(self)))  # type: ignore[arg-type]
        self._linger_call = self.reactor.callLater(self.first_use_grace, self._idle)
        return info

    async def start_probe(self) -> dict[str, Any]:
        """Make the link and close it: whether this host may use the display."""
        try:
            return await self._connect()
        finally:
            self._finish("probe")

    async def _connect(self) -> dict[str, Any]:
        endpoint = SSL4ClientEndpoint(self.reactor, self.host, self.port,
                                      ClientContextFactory(self.identity), timeout=10)
        link = LinkProtocol(on_handshake=self._check_server, on_hello=self._got_hello,
                            on_lost=self._lost)
        try:
            await connectProtocol(endpoint, link)
        except Exception as err:
            raise AgentError(f"display host {self.host}:{self.port} is unreachable: {err}") from err
        self.link = link
        timeout = self.reactor.callLater(15, self._hello_timeout)
        try:
            info = await self._hello
        finally:
            if timeout.active():
                timeout.cancel()
        if not info.get("ok"):
            raise AgentError(info.get("message") or f"refused: {info.get('error')}")
        self.server_info = info
        return info

    def _check_server(self, link: LinkProtocol) -> dict[str, Any]:
        fp = link.peer_fingerprint or "(no certificate)"
        try:
            if self.expected is not None and fp != self.expected:
                raise IdentityError(
                    f"display {self.trust_name} presented key {fp}, but advertises "
                    f"{self.expected}: refusing (someone may be impersonating it)")
            if not self.known.check(self.trust_name, fp):
                log.info("remembered the key of {name}: {fp}", name=self.trust_name, fp=fp)
        except (IdentityError, KeyChanged) as err:
            self._refusal = err
            if not self._hello.called:
                self._hello.errback(AgentError(str(err)))
            raise
        return {"v": 1}

    def _got_hello(self, link: LinkProtocol, info: dict[str, Any]) -> None:
        if not self._hello.called:
            self._hello.callback(info)

    def _hello_timeout(self) -> None:
        if not self._hello.called:
            self._hello.errback(AgentError(f"display host {self.host}:{self.port} did not "
                                           "answer the link handshake"))
            if self.link is not None:
                self.link.transport.loseConnection()

    def _lost(self, link: LinkProtocol, reason: Any) -> None:
        if not self._hello.called:
            self._hello.errback(AgentError(
                str(self._refusal) if self._refusal else
                f"display host {self.host}:{self.port} closed the link during the handshake"))
        self._finish("link lost")

    def cancel_linger(self) -> None:
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        self._linger_call = None

    def maybe_linger(self) -> None:
        if self.active == 0 and self._linger_call is None:
            self._linger_call = self.reactor.callLater(self.linger, self._idle)

    def _idle(self) -> None:
        self._linger_call = None
        if self.active == 0:
            self._finish("idle")

    def _finish(self, why: str) -> None:
        self.cancel_linger()
        if self.listening is not None:
            self.listening.stopListening()
            self.listening = None
            if os.path.exists(self.socket_path):
                os.unlink(self.socket_path)
        if self.link is not None and not self.link.gone:
            self.link.transport.loseConnection()
        if not self.done.called:
            self.done.callback(why)
