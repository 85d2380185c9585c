"""The app host's end of a link: one process per display host, shared by every `xproxy run`
that shows programs there (as ssh's ControlMaster shares one connection).

It connects to the export over TLS, checks the display host's key (the advertised fingerprint,
then trust on first use in known_displays), and serves a unix socket in a private directory:
each connection to it becomes one channel of the link, carrying one X connection. It exits
when the link drops, or when no connection has used it for `linger` seconds.

The agent is where round trips are suppressed (protocol/suppress.py): it sees every X
connection to one display host, so it holds that host's cache (`DisplayCache`), keyed by the
display host's key and the X server epoch its export announces, and kept on disk under
`$XDG_CACHE_HOME/xtransparency/` between sessions. Counters go to `<socket>.stats.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import SSL4ClientEndpoint, UNIXServerEndpoint, connectProtocol
from twisted.logger import Logger

from .identity import Identity, IdentityError, KeyChanged, KnownDisplays
from .linkconn import ChannelTransport, LinkProtocol
from .protocol.errors import X11ProtocolError
from .protocol.suppress import DisplayCache, Suppressor
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


def agent_socket_path(host: str, port: int, trust_name: str, mode: str = "") -> str:
    """One agent per display host and mode (suppression on/off/verify, compression)."""
    key = f"{trust_name}\0{host}\0{port}" + (f"\0{mode}" if mode else "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(runtime_dir(), f"link-{digest}.sock")


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "xtransparency")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def cache_path(fingerprint: str, epoch: str) -> str:
    digest = hashlib.sha256(f"{fingerprint}\0{epoch}".encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), f"xcache-{digest}.json")


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class _Bridge(protocol.Protocol):
    """A local connection to the agent's socket, joined to a new channel of the link."""

    def __init__(self, agent: LinkAgent) -> None:
        self.agent = agent
        self.channel: ChannelTransport | None = None
        self.sup: Suppressor | None = None

    def connectionMade(self) -> None:
        self.agent.active += 1
        self.agent.cancel_linger()

    def dataReceived(self, data: bytes) -> None:
        if self.sup is None and self.agent.cache is not None:
            self.agent.numbers += 1
            self.sup = Suppressor(self.agent.cache, self.agent.numbers, verify=self.agent.verify,
                                  enabled=self.agent.suppress)
        if self.sup is not None:
            try:
                data, back = self.sup.from_client(data)
            except X11ProtocolError as err:
                log.error("X client: {err}; closing it", err=err)
                self.transport.loseConnection()
                return
            if back:
                self.transport.write(back)
        self._forward(data)

    def from_server(self, data: bytes) -> None:
        if self.sup is not None:
            try:
                data = self.sup.from_server(data)
            except X11ProtocolError as err:
                log.error("X server: {err}; closing the client", err=err)
                self.transport.loseConnection()
                return
        if data:
            self.transport.write(data)

    def _forward(self, data: bytes) -> None:
        if not data:
            return
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
        if self.sup is not None:
            self.sup.close()
        self.agent.active -= 1
        self.agent.save()
        self.agent.maybe_linger()


class _BridgeBack(protocol.Protocol):
    def __init__(self, bridge: _Bridge) -> None:
        self.bridge = bridge

    def dataReceived(self, data: bytes) -> None:
        self.bridge.from_server(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.bridge.transport.loseConnection()


class LinkAgent:
    def __init__(self, reactor, host: str, port: int, trust_name: str,  # type: ignore[no-untyped-def]
                 expected_fingerprint: str | None, socket_path: str,
                 identity: Identity | None = None, known: KnownDisplays | None = None,
                 linger: float = 5.0, first_use_grace: float = 30.0,
                 suppress: bool = True, verify: bool = False,
                 compress_level: int | None = 3) -> None:
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
        self.suppress = suppress
        self.verify = verify
        self.compress_level = compress_level
        self.cache: DisplayCache | None = None
        self.cache_file: str | None = None
        self.numbers = 0

    def _load_cache(self) -> None:
        """The display host's cache, when its export names the X server's epoch (without one,
        answers could outlive a server reset, so nothing is answered)."""
        epoch = self.server_info.get("epoch")
        if not epoch:
            self.suppress = self.verify = False
        if not (self.suppress or self.verify):
            self.cache = DisplayCache(epoch or "")  # in memory: the connections are counted
            return
        fp = (self.link.peer_fingerprint if self.link else None) or self.trust_name
        self.cache_file = cache_path(fp, epoch)
        try:
            with open(self.cache_file) as f:
                cache = DisplayCache.from_json(json.load(f))
            if cache.epoch != epoch:
                raise ValueError("another epoch")
        except (OSError, ValueError, KeyError, TypeError):
            cache = DisplayCache(epoch)
        self.cache = cache

    def save(self) -> None:
        """Write the cache (if it learnt something) and the counters."""
        cache = self.cache
        if cache is None:
            return
        try:
            if self.cache_file and cache.changed:
                _write_json(self.cache_file, cache.to_json())
                cache.changed = False
            if self.socket_path:
                link = self.link.core if self.link else None
                _write_json(self.socket_path + ".stats.json", {
                    "suppress": self.suppress, "verify": self.verify,
                    "compress_level": self.compress_level, "epoch": cache.epoch,
                    **vars(cache.stats),
                    "link_wire_out": link.bytes_out if link else 0,
                    "link_raw_out": link.raw_out if link else 0,
                    "link_wire_in": link.bytes_in if link else 0,
                    "link_raw_in": link.raw_in if link else 0,
                    "mismatch_log": cache.mismatch_log[-50:],
                })
        except OSError as err:
            log.warn("cannot save the X cache: {err}", err=err)

    async def start(self) -> dict[str, Any]:
        """Make the link, then serve the local socket."""
        info = await self._connect()
        self._load_cache()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self.listening = await UNIXServerEndpoint(self.reactor, self.socket_path, mode=0o600,
                                                  wantPID=False).listen(
            protocol.Factory.forProtocol(lambda: _Bridge(self)))  # type: ignore[arg-type]
        self._linger_call = self.reactor.callLater(self.first_use_grace, self._idle)
        with open(self.socket_path[: -len(".sock")] + ".pid", "w") as f:
            f.write(f"{os.getpid()}\n")
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
                            on_lost=self._lost, compress_level=self.compress_level)
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
        self.save()
        if self.listening is not None:
            self.listening.stopListening()
            self.listening = None
            if os.path.exists(self.socket_path):
                os.unlink(self.socket_path)
            pidfile = self.socket_path[: -len(".sock")] + ".pid"
            if os.path.exists(pidfile):
                os.unlink(pidfile)
        if self.link is not None and not self.link.gone:
            self.link.transport.loseConnection()
        if not self.done.called:
            self.done.callback(why)
