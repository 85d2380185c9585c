"""The app host's end of a link: one process per display host, shared by every `xproxy run`
that shows programs there (as ssh's ControlMaster shares one connection).

It connects to the export over TLS, checks the display host's key (the advertised fingerprint,
then trust on first use in known_displays), and serves a unix socket in a private directory:
each connection to it becomes one channel of the link, carrying one X connection. It exits
when no connection has used it for `linger` seconds, or when the link is lost for good.

Reconnection: when the TLS connection drops (or goes silent: see link/transport.py), the agent
keeps its local X clients connected and reconnects, after 0.1 s and then at doubling
intervals up to 2 s, for up to `grace` seconds (60 by default, or less if the export keeps
lost sessions for less, as its HELLO says). The export still holds the X server connections
of the session; the agent's HELLO names the session and the export resumes it if the TLS key
is the same, and both ends send again what the other had not received (link/protocol.py).
Meanwhile the X clients just wait: their requests queue in the link until the channel
windows fill, then the local sockets are paused. Survived: connection drops, network blips,
NAT rebinding, a new address on the app host — anything where both processes live on and the
network comes back within the grace period. Not survived: the export or the agent restarting,
the X server resetting, the grace period running out, a display host that answers with
another key; then every X client of the link is closed, with the reason in the agent's log.
Sixty seconds covers a Wi-Fi roam, a VPN or router coming back, a laptop lid closed briefly;
beyond it, a user looking at frozen windows is better served by a clear end (the display host
keeps the windows on screen, frozen, for as long). The round-trip suppression state is per
local connection (the bridge) and is untouched by reconnects.

The agent is where round trips are suppressed (suppress/core.py): it sees every X
connection to one display host, so it holds that host's cache (`DisplayCache`), keyed by the
display host's key and the X server epoch its export announces, and kept on disk under
`$XDG_CACHE_HOME/xtransparency/` between sessions. Counters go to `<socket>.stats.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, protocol
from twisted.internet.endpoints import SSL4ClientEndpoint, UNIXServerEndpoint, connectProtocol
from twisted.logger import Logger

from ..link.protocol import Link
from ..link.tls import ClientContextFactory
from ..link.transport import ChannelTransport, LinkProtocol, LinkSession
from ..suppress.core import DisplayCache, Suppressor
from ..trust.identity import Identity, IdentityError, KeyChanged, KnownDisplays
from ..x11.errors import X11ProtocolError

#: The delay before each reconnection attempt: 0.1 s, doubling up to 2 s, without jitter; the
#: `grace` deadline ends the attempts. Twisted's policy, as `ClientService` takes it; the link's
#: resumption does not fit `ClientService` itself (see `_retry`).
RECONNECT_BACKOFF = backoffPolicy(initialDelay=0.1, factor=2, maxDelay=2.0, jitter=lambda: 0.0)

log = Logger(namespace="xproxy.agent")


class AgentError(Exception):
    """The link cannot be made; the message says why and what to do."""


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
        self.agent.hold()

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
                self.channel = self.agent.session.open_channel({})  # type: ignore[union-attr]
            except Exception as err:  # noqa: BLE001 - any failure closes this one bridge only
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
            waits = self.sup.waits_before_map()
            if waits is not None:  # it mapped a window: what it waited for until then
                self.agent.waits_before_map, self.agent.wait_rounds = waits
        self.agent.save()
        self.agent.release()


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
                 compress_level: int | None = 3, grace: float = 60.0) -> None:
        self.reactor = reactor
        self.host, self.port = host, port
        self.trust_name = trust_name
        self.expected = expected_fingerprint
        self.socket_path = socket_path
        self.identity = identity or Identity.load_or_create()
        self.known = known or KnownDisplays.default()
        self.linger = linger
        self.first_use_grace = first_use_grace
        self.grace = grace
        self.session: LinkSession | None = None
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
        self.waits_before_map: list[tuple[str, str | None]] = []
        self.wait_rounds = 0
        # reconnection
        self.reconnecting = False
        self._deadline = 0.0
        self._lost_at = 0.0
        self._attempts = 0  # failed resumption attempts since the link was lost
        self._retry_call: Any = None
        self._deadline_call: Any = None
        self._last_error = ""

    def _load_cache(self) -> None:
        """The display host's cache, when its export names the X server's epoch (without one,
        answers could outlive a server reset, so nothing is answered)."""
        epoch = self.server_info.get("epoch")
        if not epoch:
            self.suppress = self.verify = False
        if not (self.suppress or self.verify):
            self.cache = DisplayCache(epoch or "")  # in memory: the connections are counted
            return
        fp = (self.session.peer_fingerprint if self.session else None) or self.trust_name
        self.cache_file = cache_path(fp, epoch)
        try:
            with open(self.cache_file) as f:
                cache = DisplayCache.from_json(json.load(f))
            if cache.epoch != epoch:
                raise ValueError("another epoch")
        except (OSError, ValueError, KeyError, TypeError):
            cache = DisplayCache(epoch)
        self.cache = cache
        cache.watch(self.server_info.get("watch"))

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
                session = self.session
                link = session.core if session else None
                _write_json(self.socket_path + ".stats.json", {
                    "suppress": self.suppress, "verify": self.verify,
                    "compress_level": self.compress_level, "epoch": cache.epoch,
                    **vars(cache.stats),
                    "link_wire_out": link.bytes_out if link else 0,
                    "link_raw_out": link.raw_out if link else 0,
                    "link_wire_in": link.bytes_in if link else 0,
                    "link_raw_in": link.raw_in if link else 0,
                    "link_replay_bytes": link.replay_bytes if link else 0,
                    "reconnects": session.reconnects if session else 0,
                    "mismatch_log": cache.mismatch_log[-50:],
                    "wait_rounds_before_map": self.wait_rounds,
                    "waits_before_map": [f"{name} (held behind {held})" if held else name
                                         for name, held in self.waits_before_map],
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
        with open(self.socket_path[: -len(".sock")] + ".pid", "w") as f:  # noqa: ASYNC230 - a few bytes on a local disk
            f.write(f"{os.getpid()}\n")
        return info

    async def start_probe(self) -> dict[str, Any]:
        """Make the link and close it: whether this host may use the display."""
        try:
            return await self._connect()
        finally:
            self._finish("probe")

    def _endpoint(self, timeout: float) -> SSL4ClientEndpoint:
        return SSL4ClientEndpoint(self.reactor, self.host, self.port,
                                  ClientContextFactory(self.identity), timeout=timeout)

    async def _connect(self) -> dict[str, Any]:
        self.session = LinkSession(Link(compress_level=self.compress_level))
        self.session.on_changed = self._display_changed
        link = LinkProtocol(self.reactor, on_handshake=self._check_server,
                            on_hello=self._got_hello, on_lost=self._lost, session=self.session)
        try:
            await connectProtocol(self._endpoint(10), link)
        except Exception as err:
            raise AgentError(f"display host {self.host}:{self.port} is unreachable: {err}") from err
        timeout = self.reactor.callLater(15, self._hello_timeout)
        try:
            info = await self._hello
        finally:
            if timeout.active():
                timeout.cancel()
        if not info.get("ok"):
            raise AgentError(info.get("message") or f"refused: {info.get('error')}")
        self.server_info = info
        sid = info.get("session")
        if isinstance(sid, str) and sid and self.session.core.peer_recon:
            self.session.session_id = sid
        grace = info.get("grace")
        if isinstance(grace, (int, float)) and not isinstance(grace, bool) and grace >= 0:
            self.grace = min(self.grace, float(grace))  # it forgets the session then
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
        assert self.session is not None
        self.session.peer_fingerprint = link.peer_fingerprint
        return {"v": 1, "watch": 1}

    def _got_hello(self, link: LinkProtocol, info: dict[str, Any]) -> None:
        if not self._hello.called:
            self._hello.callback(info)

    def _hello_timeout(self) -> None:
        if not self._hello.called:
            self._hello.errback(AgentError(f"display host {self.host}:{self.port} did not "
                                           "answer the link handshake"))
            session = self.session
            if session is not None and session.conn is not None:
                session.conn.transport.loseConnection()

    def _lost(self, link: LinkProtocol, reason: Any) -> None:
        if not self._hello.called:
            self._hello.errback(AgentError(
                str(self._refusal) if self._refusal else
                f"display host {self.host}:{self.port} closed the link during the handshake"))
        if self.done.called:
            return
        session = self.session
        if session is None or link.session is not session:
            return  # not the connection carrying the session
        if session.ended is not None:
            self._finish(f"link ended: {session.ended}")
            return
        why = link.failure or (reason.getErrorMessage() if reason is not None else "closed")
        if self.reconnecting:
            self._last_error = f"connection lost during the resumption: {why}"
            self._retry()
            return
        if session.session_id is None:  # an export that cannot resume
            session.end("link lost")
            self._finish("link lost")
            return
        if self.cache is not None:  # what the display host says meanwhile is lost
            self.cache.watch(None)
        now = self.reactor.seconds()
        self.reconnecting = True
        self._lost_at = now
        self._deadline = now + self.grace
        self._attempts = 0
        self._last_error = why
        self._deadline_call = self.reactor.callLater(self.grace, self._deadline_passed)
        log.warn("link to {host}:{port} lost ({why}); reconnecting for up to {g:g} s, keeping "
                 "{n} X clients", host=self.host, port=self.port, why=why, g=self.grace,
                 n=len(session.channels))
        self._retry()

    def _display_changed(self, info: dict[str, Any]) -> None:
        """A CHANGED frame: forget the answers it names (all of them if it is not clear)."""
        cache = self.cache
        if cache is None:
            return
        cache.stats.changes += 1
        props, groups = info.get("props", []), info.get("groups", [])
        if "stop" in info:
            cache.watch(None)
        elif isinstance(props, list) and isinstance(groups, list) and not info.get("all") \
                and all(isinstance(p, int) for p in props) \
                and all(isinstance(g, str) for g in groups):
            cache.display_changed(props=frozenset(props), groups=frozenset(groups))
        else:
            cache.display_changed(everything=True)
        self.save()

    def _deadline_passed(self) -> None:
        self._deadline_call = None
        if self.reconnecting:  # an attempt may still be connecting: that is too late now
            self._give_up(f"not resumed within {self.grace:g} s (last: {self._last_error})")

    def _retry(self) -> None:
        """The next reconnection attempt, after the current back-off delay, cut short by the
        deadline. Not a `ClientService`: that counts failed TCP connections and starts over
        on one that succeeds, while here an attempt fails until the display host answers the
        resume HELLO, every attempt's connect timeout shrinks with the time left, and the
        first connection is not retried at all (a refusal is the user's answer)."""
        if self._retry_call is not None and self._retry_call.active():
            return
        now = self.reactor.seconds()
        delay = min(RECONNECT_BACKOFF(self._attempts), max(0.0, self._deadline - now))
        self._attempts += 1
        self._retry_call = self.reactor.callLater(delay, self._attempt)

    def _attempt(self) -> None:
        self._retry_call = None
        session = self.session
        if self.done.called or session is None or session.ended is not None:
            return
        remaining = self._deadline - self.reactor.seconds()
        if remaining <= 0:
            self._give_up(f"not resumed within {self.grace:g} s (last: {self._last_error})")
            return
        link = LinkProtocol(self.reactor, on_handshake=self._check_resume,
                            on_hello=self._got_resume_hello, on_lost=self._lost,
                            session=session)
        d = connectProtocol(self._endpoint(max(1.0, min(10.0, remaining))), link)

        def failed(failure: Any) -> None:
            self._last_error = failure.getErrorMessage()
            self._retry()

        d.addErrback(failed)

    def _check_resume(self, link: LinkProtocol) -> dict[str, Any]:
        session = self.session
        assert session is not None
        if link.peer_fingerprint != session.peer_fingerprint:
            why = (f"display {self.trust_name} presented key {link.peer_fingerprint} on "
                   f"reconnecting, not {session.peer_fingerprint}")
            self.reactor.callLater(0, self._give_up, why)
            raise IdentityError(why)
        return {"v": 1, "watch": 1, "resume": {"session": session.session_id}}

    def _got_resume_hello(self, link: LinkProtocol, info: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        if not info.get("ok"):
            self._give_up(f"the display host refused to resume the link: "
                          f"{info.get('message') or info.get('error')}")
            return
        again = session.core.resume(info.get("received"))  # a LinkProtocolError ends it
        if self.cache is not None:
            self.cache.watch(info.get("watch"))
        session.reconnects += 1
        self.reconnecting = False
        if self._deadline_call is not None and self._deadline_call.active():
            self._deadline_call.cancel()
        self._deadline_call = None
        log.warn("link to {host}:{port} resumed after {t:.1f} s ({again} frames sent again, "
                 "{n} X clients kept; {r} reconnects so far)", host=self.host, port=self.port,
                 t=self.reactor.seconds() - self._lost_at, again=again, n=len(session.channels),
                 r=session.reconnects)
        self.save()

    def _give_up(self, why: str) -> None:
        session = self.session
        if self.done.called or session is None or session.ended is not None:
            return
        log.error("link to {host}:{port} lost: {why}; closing its {n} X clients",
                  host=self.host, port=self.port, why=why, n=len(session.channels))
        session.end(f"link lost: {why}")
        self._finish("link lost")

    def hold(self) -> None:
        """Someone uses the link (an X connection, or a run waiting to open one): no
        lingering out until it lets go."""
        self.active += 1
        self.cancel_linger()

    def release(self) -> None:
        self.active -= 1
        self.maybe_linger()

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
        for call in (self._retry_call, self._deadline_call):
            if call is not None and call.active():
                call.cancel()
        self._retry_call = self._deadline_call = None
        self.reconnecting = False
        self.save()
        if self.listening is not None:
            self.listening.stopListening()  # the port removes its socket file itself
            self.listening = None
            pidfile = self.socket_path[: -len(".sock")] + ".pid"
            if os.path.exists(pidfile):
                os.unlink(pidfile)
        session = self.session
        if session is not None:
            if session.ended is None:
                session.end(why)
            elif session.conn is not None:
                session.conn.transport.loseConnection()
        if not self.done.called:
            self.done.callback(why)
