"""The app host's end of a link: one process per display host, shared by every `xproxy run`
that shows programs there (as ssh's ControlMaster shares one connection).

It connects to the export over TLS, checks the display host's key (the advertised fingerprint,
then trust on first use in known_displays), and serves runs on its control socket (agent/runservice.py): each X connection of a run's
display becomes one channel of the link, in process (agent/upstream.py). It exits when
nothing has used it for `linger` seconds, when the link is lost for good, or on SIGTERM; a
clean stop tells the export (a BYE), which then keeps nothing for a resumption.

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
X connection (agent/upstream.py) and is untouched by reconnects.

The agent is where round trips are suppressed (suppress/core.py): it sees every X
connection to one display host, so it holds that host's cache (`DisplayCache`), keyed by the
display host's key and the X server epoch its export announces, and kept on disk under
`$XDG_CACHE_HOME/xtransparency/` between sessions. Counters go to `<socket>.stats.json`.

The jobs are separate objects, so the constructor reads like the list above: where the
display host is (`DisplayHost`), how the agent behaves (`AgentOptions`), whom it trusts
(`DisplayTrust`), its files (`AgentFiles`) and its idle timer (`Linger`); reconnection is
the agent's own state machine (`_lost`, `_retry`, `_attempt`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..link.protocol import Link
from ..link.tls import ClientContextFactory
from ..link.transport import ChannelTransport, LinkProtocol, LinkSession
from ..reactor_types import ILinkReactor
from ..relay.drain import drain
from ..suppress.core import DisplayCache
from ..trust.identity import Identity, IdentityError, KeyChanged, KnownDisplays
from .upstream import AgentEndpoint, RunCounts

#: The delay before each reconnection attempt: 0.1 s, doubling up to 2 s, without jitter; the
#: `grace` deadline ends the attempts. Twisted's policy, as `ClientService` takes it; the link's
#: resumption does not fit `ClientService` itself (see `_retry`).
RECONNECT_BACKOFF = backoffPolicy(initialDelay=0.1, factor=2, maxDelay=2.0, jitter=lambda: 0.0)
#: How long a stopping agent waits for its BYE and CLOSEs to leave before it exits.
STOP_FLUSH_TIMEOUT = 1.0

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


@dataclass(frozen=True)
class DisplayHost:
    """Where the export is, and the name its key is remembered by (`@office`, or HOST:PORT)."""

    host: str
    port: int
    trust_name: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class AgentOptions:
    """How an agent behaves: idle times, suppression and compression, reconnection."""

    linger: float = 5.0  # seconds without a user before it exits
    first_use_grace: float = 30.0  # the same, before the first user came
    suppress: bool = True  # answer from the cache
    verify: bool = False  # compare every answer, give the server's
    compress_level: int | None = 3
    grace: float = 60.0  # seconds to try resuming a lost link (or the export's, if less)


class DisplayTrust:
    """Whom the agent trusts to be the display host: the key it advertises (`expected`),
    else the one remembered in known_displays (trust on first use), as ssh does. Also this
    host's own identity, which the export checks."""

    def __init__(self, trust_name: str, expected: str | None = None,
                 identity: Identity | None = None, known: KnownDisplays | None = None) -> None:
        self.trust_name = trust_name
        self.expected = expected
        self.identity = identity or Identity.load_or_create()
        self.known = known or KnownDisplays.default()

    def check(self, fingerprint: str) -> None:
        """Raise IdentityError (or KeyChanged) unless `fingerprint` is the display host's."""
        if self.expected is not None and fingerprint != self.expected:
            raise IdentityError(
                f"display {self.trust_name} presented key {fingerprint}, but advertises "
                f"{self.expected}: refusing (someone may be impersonating it)")
        if not self.known.check(self.trust_name, fingerprint):
            log.info("remembered the key of {name}: {fp}", name=self.trust_name, fp=fingerprint)


class AgentFiles:
    """An agent's files, named after its socket path (run/paths.py): the pidfile, the
    counters (`<socket>.stats.json`) and the cache files. Without a path (a probe), only
    the cache is kept."""

    def __init__(self, socket_path: str = "") -> None:
        self.socket_path = socket_path

    @property
    def pidfile(self) -> str | None:
        return self.socket_path[: -len(".sock")] + ".pid" if self.socket_path else None

    @property
    def stats_file(self) -> str | None:
        return self.socket_path + ".stats.json" if self.socket_path else None

    def write_pid(self) -> None:
        if self.pidfile is not None:
            with open(self.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")

    def remove_pid(self) -> None:
        if self.pidfile is not None and os.path.exists(self.pidfile):
            os.unlink(self.pidfile)

    def cache_file(self, fingerprint: str, epoch: str) -> str:
        return cache_path(fingerprint, epoch)

    def write_stats(self, data: dict[str, Any]) -> None:
        if self.stats_file is not None:
            _write_json(self.stats_file, data)


class Linger:
    """Counts the link's users (X connections, runs waiting for one) and calls `on_idle`
    once there has been none for `linger` seconds (`first_use` before the first came)."""

    def __init__(self, clock: IReactorTime, linger: float, on_idle: Any) -> None:
        self.clock = clock
        self.linger = linger
        self.on_idle = on_idle
        self.active = 0
        self._call: IDelayedCall | None = None

    def start(self, first_use: float) -> None:
        self.cancel()
        self._call = self.clock.callLater(first_use, self._idle)

    def hold(self) -> None:
        self.active += 1
        self.cancel()

    def release(self) -> None:
        self.active -= 1
        if self.active == 0 and self._call is None:
            self._call = self.clock.callLater(self.linger, self._idle)

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _idle(self) -> None:
        self._call = None
        if self.active == 0:
            self.on_idle()


class LinkAgent:
    """The app host's end of the link to one display host (see the module docstring).
    `files` None: a probe, which keeps no files but the cache."""

    def __init__(self, reactor: ILinkReactor, display: DisplayHost,
                 options: AgentOptions | None = None, trust: DisplayTrust | None = None,
                 files: AgentFiles | None = None) -> None:
        self.reactor = reactor
        self.display = display
        self.options = options = options or AgentOptions()
        self.trust = trust or DisplayTrust(display.trust_name)
        self.files = files or AgentFiles()
        self.linger = Linger(reactor, options.linger, lambda: self._finish("idle"))
        self.grace = options.grace
        self.suppress = options.suppress
        self.verify = options.verify
        self.session: LinkSession | None = None
        self.done: defer.Deferred[str] = defer.Deferred()
        self._hello: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._refusal: Exception | None = None
        self.server_info: dict[str, Any] = {}
        self.cache: DisplayCache | None = None
        self.cache_file: str | None = None
        self.numbers = 0  # X connections so far (each one's number in the cache)
        # reconnection
        self.reconnecting = False
        self._deadline = 0.0
        self._lost_at = 0.0
        self._attempts = 0  # failed resumption attempts since the link was lost
        self._retry_call: IDelayedCall | None = None
        self._deadline_call: IDelayedCall | None = None
        self._last_error = ""

    # -- what runs use (agent/upstream.UpstreamHost, agent/runservice.RunService) ---------

    def endpoint(self, counts: RunCounts | None = None) -> AgentEndpoint:
        """Where a run's display connects: a new channel of the link for each X
        connection, suppressed, with its counters added to `counts`."""
        return AgentEndpoint(self, counts)

    def next_number(self) -> int:
        self.numbers += 1
        return self.numbers

    def open_channel(self) -> ChannelTransport:
        if self.session is None:
            raise AgentError("the link is not up")
        return self.session.open_channel({})

    def hold(self) -> None:
        """Someone uses the link (an X connection, or a run waiting to open one): no
        lingering out until it lets go."""
        self.linger.hold()

    def release(self) -> None:
        self.linger.release()

    def _load_cache(self) -> None:
        """The display host's cache, when its export names the X server's epoch (without one,
        answers could outlive a server reset, so nothing is answered)."""
        epoch = self.server_info.get("epoch")
        if not isinstance(epoch, str) or not epoch:
            epoch = ""
            self.suppress = self.verify = False
        if not (self.suppress or self.verify):
            self.cache = DisplayCache(epoch)  # in memory: the connections are counted
            return
        fp = (self.session.peer_fingerprint if self.session else None) or self.display.trust_name
        self.cache_file = self.files.cache_file(fp, epoch)
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
            session = self.session
            link = session.core if session else None
            self.files.write_stats({
                "suppress": self.suppress, "verify": self.verify,
                "compress_level": self.options.compress_level, "epoch": cache.epoch,
                **vars(cache.stats),
                "link_wire_out": link.bytes_out if link else 0,
                "link_raw_out": link.raw_out if link else 0,
                "link_wire_in": link.bytes_in if link else 0,
                "link_raw_in": link.raw_in if link else 0,
                "link_replay_bytes": link.replay_bytes if link else 0,
                "reconnects": session.reconnects if session else 0,
                "mismatch_log": cache.mismatch_log[-50:],
            })
        except OSError as err:
            log.warn("cannot save the X cache: {err}", err=err)

    # -- starting and stopping --------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Make the link; runs may use it from then on (through `endpoint`)."""
        info = await self._connect()
        self._load_cache()
        self.files.write_pid()
        self.linger.start(self.options.first_use_grace)
        return info

    async def start_probe(self) -> dict[str, Any]:
        """Make the link and close it: whether this host may use the display."""
        try:
            return await self._connect()
        finally:
            self._finish("probe")

    async def stop(self, why: str = "stopped") -> None:
        """End the link cleanly (the export is told, and keeps nothing for a resumption), and
        wait a little for that to leave: the reactor's shutdown would drop unsent bytes."""
        self._finish(why)
        await drain(self.reactor, self._link_gone, STOP_FLUSH_TIMEOUT)

    def _link_gone(self) -> bool:
        session = self.session
        return session is None or session.conn is None or session.conn.gone

    def _endpoint(self, timeout: float) -> SSL4ClientEndpoint:
        return SSL4ClientEndpoint(self.reactor, self.display.host, self.display.port,
                                  ClientContextFactory(self.trust.identity), timeout=timeout)

    async def _connect(self) -> dict[str, Any]:
        self.session = LinkSession(Link(compress_level=self.options.compress_level))
        self.session.on_changed = self._display_changed
        link = LinkProtocol(self.reactor, on_handshake=self._check_server,
                            on_hello=self._got_hello, on_lost=self._lost, session=self.session)
        try:
            await connectProtocol(self._endpoint(10), link)
        except Exception as err:
            raise AgentError(f"display host {self.display} is unreachable: {err}") from err
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
        try:
            self.trust.check(link.peer_fingerprint or "(no certificate)")
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
            self._hello.errback(AgentError(f"display host {self.display} did not answer the "
                                           "link handshake"))
            session = self.session
            if session is not None and session.conn is not None:
                session.conn.tls.loseConnection()

    # -- reconnection ---------------------------------------------------------------------

    def _lost(self, link: LinkProtocol, reason: Failure | None) -> None:
        if not self._hello.called:
            self._hello.errback(AgentError(
                str(self._refusal) if self._refusal else
                f"display host {self.display} closed the link during the handshake"))
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
        log.warn("link to {d} lost ({why}); reconnecting for up to {g:g} s, keeping {n} X "
                 "clients", d=self.display, why=why, g=self.grace, n=len(session.channels))
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

        def failed(failure: Failure) -> None:
            self._last_error = failure.getErrorMessage()
            self._retry()

        d.addErrback(failed)

    def _check_resume(self, link: LinkProtocol) -> dict[str, Any]:
        session = self.session
        assert session is not None
        if link.peer_fingerprint != session.peer_fingerprint:
            why = (f"display {self.display.trust_name} presented key {link.peer_fingerprint} "
                   f"on reconnecting, not {session.peer_fingerprint}")
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
        log.warn("link to {d} resumed after {t:.1f} s ({again} frames sent again, {n} X "
                 "clients kept; {r} reconnects so far)", d=self.display,
                 t=self.reactor.seconds() - self._lost_at, again=again, n=len(session.channels),
                 r=session.reconnects)
        self.save()

    def _give_up(self, why: str) -> None:
        session = self.session
        if self.done.called or session is None or session.ended is not None:
            return
        log.error("link to {d} lost: {why}; closing its {n} X clients", d=self.display,
                  why=why, n=len(session.channels))
        session.end(f"link lost: {why}")
        self._finish("link lost")

    def _finish(self, why: str) -> None:
        """The agent is done: a session still up ends here, cleanly (with a BYE)."""
        if self.done.called:
            return
        self.linger.cancel()
        for call in (self._retry_call, self._deadline_call):
            if call is not None and call.active():
                call.cancel()
        self._retry_call = self._deadline_call = None
        self.reconnecting = False
        self.save()
        self.files.remove_pid()
        session = self.session
        if session is not None:
            if session.ended is None:
                session.end(why, bye=True)
            elif session.conn is not None:
                session.conn.tls.loseConnection()
        self.done.callback(why)
