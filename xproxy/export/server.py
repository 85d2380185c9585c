"""`xproxy export`: the display host's end. App hosts connect over mutually authenticated TLS;
each X connection they carry is relayed to the display with everything `serve` does (cookie
substitution, extension policy, tracing, metrics), and the display is advertised on the LAN
through the local discoveryd.

Link sessions outlive their connections (link/transport.py): when an app host's connection drops
without a BYE (an agent that stops cleanly says BYE, and its session ends at once),
its X connections to the display stay open for `link_grace` seconds (60 by default, said in
our HELLO so the app host does not try longer), and an app host that reconnects with the same
key and the session's secret id resumes it, its programs none the wiser. After the grace
period, or if this process restarts, the session is gone and its X connections are closed
(a resumption is then refused, and the app host closes its clients).

Unfinished TLS handshakes are bounded: at most `max_handshakes` at a time (further
connections are closed as they come, and the log says so) and none longer than
`handshake_timeout` seconds, so peers that connect and stall cost a bounded amount of memory.

The display's watch (watch.py): one X connection of the export's own listens for changes of
the root windows' properties, the RANDR configuration and the XKB keyboard, and each app host
that asks is told of them (CHANGED frames), so it may answer those requests from its cache
until then. Without a watch (it could not be set up, or it ended), app hosts are told so and
answer none of them."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import protocol
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from ..link.protocol import LinkProtocolError, ResumeRefused, SessionTable
from ..link.tls import ServerContextFactory
from ..link.transport import ChannelTransport, LinkProtocol, LinkSession
from ..reactor_types import ILinkReactor
from ..relay.drain import drain
from ..relay.proxy import ProxyFactory
from ..relay.server import client_endpoint
from ..run.paths import LINK_SERVICE_TYPE
from ..trust import xauthfile
from ..trust.identity import AuthorizedHosts, Identity
from ..x11.connection import AuthPolicy
from ..x11.display import parse_display
from ..x11.extensions import ExtensionPolicy
from ..x11.watch import Change
from .watch import DisplayWatcher, WatchError, change_frame, start_watch

log = Logger(namespace="xproxy.export")

DEFAULT_PORT = 7010
HANDSHAKE_TIMEOUT = 10.0
MAX_HANDSHAKES = 64
#: The log says at most once in this many seconds that max_handshakes is reached.
CAP_LOG_EVERY = 10.0


class NotAuthorized(Exception):
    code = "not-authorized"


class ExportError(RuntimeError):
    """The export cannot start; the message says why."""


@dataclass
class ExportOptions:
    display: str
    name: str
    port: int = DEFAULT_PORT
    interface: str = ""
    hide_ext: list[str] = field(default_factory=list)
    allow_ext: list[str] = field(default_factory=list)
    advertise: bool = True
    discovery_socket: str | None = None
    observers: Callable[[int], Any] | None = None
    on_client_done: Callable[[Any], None] | None = None
    compress_level: int | None = 3
    link_grace: float = 60.0  # seconds a lost link session keeps its X connections
    handshake_timeout: float = HANDSHAKE_TIMEOUT  # seconds a TLS handshake may take
    max_handshakes: int = MAX_HANDSHAKES  # unfinished TLS handshakes at a time


#: A root-window property that says the X server has not reset since it was set (a reset
#: destroys the root window's properties, and with them every atom an app host remembers).
EPOCH_PROPERTY = "_XTRANSPARENCY_EPOCH"


def screen_size(display: str, xauthority: str, keep: list[Any] | None = None) -> str:
    """WIDTHxHEIGHT of the display's first screen (a short python-xlib connection). With
    `keep`, the connection stays open (appended to it): the X server cannot reset while it is."""
    return _inspect(display, xauthority, keep)[0]


def screen_size_and_epoch(display: str, xauthority: str, keep: list[Any]) -> tuple[str, str]:
    """The screen size and the X server's epoch: a random token kept in a root property,
    made on first use, so every export of the same server life announces the same one."""
    return _inspect(display, xauthority, keep, epoch=True)


def _inspect(display: str, xauthority: str, keep: list[Any] | None,
             epoch: bool = False) -> tuple[str, str]:
    import secrets

    from Xlib import Xatom

    d = xauthfile.open_xlib_display(display, xauthority)
    try:
        screen = d.screen()
        size = f"{screen.width_in_pixels}x{screen.height_in_pixels}"
        token = ""
        if epoch:
            atom = d.intern_atom(EPOCH_PROPERTY)
            prop = screen.root.get_full_property(atom, Xatom.STRING)
            if prop is not None and prop.value:
                value = prop.value
                token = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            else:
                token = secrets.token_hex(12)
                screen.root.change_property(atom, Xatom.STRING, 8, token.encode())
                d.sync()
        return size, token
    finally:
        if keep is None:
            d.close()
        else:
            keep.append(d)


class ExportServer:
    def __init__(self, reactor: ILinkReactor, options: ExportOptions,
                 identity: Identity | None = None,
                 authorized: AuthorizedHosts | None = None) -> None:
        self.reactor = reactor
        self.options = options
        self.identity = identity or Identity.load_or_create()
        self.authorized = authorized or AuthorizedHosts.default()
        self.port_object: Any = None
        self.registration: Any = None
        self.links: set[LinkProtocol] = set()  # connections up (accepted or not yet)
        self.sessions: SessionTable[LinkSession] = SessionTable(options.link_grace)
        self.plain_sessions: set[LinkSession] = set()  # with peers that cannot resume
        self.factory: ProxyFactory | None = None
        self.screen = ""
        self.epoch = ""
        self.held_displays: list[Any] = []
        #: connections whose TLS handshake has not completed, with their timeout
        self.handshaking: dict[LinkProtocol, IDelayedCall] = {}
        self.handshakes_refused = 0
        self.watcher: DisplayWatcher | None = None
        self.watching: set[LinkSession] = set()  # sessions told of the watch's changes
        self._cap_logged: float | None = None
        self._cap_unlogged = 0

    @property
    def port(self) -> int:
        return self.port_object.getHost().port if self.port_object else 0

    async def start(self) -> int:
        target = parse_display(self.options.display)
        xauthority = xauthfile.default_path()
        try:
            self.screen, token = screen_size_and_epoch(self.options.display, xauthority,
                                                       self.held_displays)
        except Exception as err:
            raise ExportError(f"cannot open display {self.options.display}: {err}") from err
        # the answers an app host may remember depend on the server's life and on our policy
        policy_key = ",".join(sorted(ExtensionPolicy.from_options(
            self.options.hide_ext, self.options.allow_ext).hidden))
        self.epoch = f"{token}/{hashlib.sha256(policy_key.encode()).hexdigest()[:8]}"
        cookies = xauthfile.CookieLookup(target, xauthority)

        def auth() -> AuthPolicy:  # looked up again for each X connection, as Xlib does
            found = cookies.current()
            return AuthPolicy(None, found.name, found.data) if found else AuthPolicy(None)

        self.factory = ProxyFactory(
            client_endpoint(self.reactor, target),
            self.options.display, auth,
            ExtensionPolicy.from_options(self.options.hide_ext, self.options.allow_ext),
            on_client_done=self.options.on_client_done, observers=self.options.observers,
            clock=self.reactor,  # type: ignore[arg-type]
        )
        policy = auth()
        try:
            self.watcher = await start_watch(
                self.reactor, client_endpoint(self.reactor, target), policy.upstream_name,
                policy.upstream_data, self._display_changed, self._watch_lost)
        except WatchError as err:
            log.warn("no watch of the display ({err}): app hosts will ask the X server for "
                     "its root properties, RANDR and XKB every time", err=err)
        endpoint = TCP4ServerEndpoint(self.reactor, self.options.port,
                                      interface=self.options.interface)
        try:
            factory = protocol.Factory.forProtocol(self._make_link)  # type: ignore[arg-type]
            factory.noisy = False
            tls = TLSMemoryBIOFactory(ServerContextFactory(self.identity), False, factory)
            tls.noisy = False
            self.port_object = await endpoint.listen(_HandshakeLimit(self, tls))
        except Exception as err:
            raise ExportError(f"cannot listen on port {self.options.port}: {err}") from err
        if self.options.advertise:
            await self._advertise()
        return self.port

    async def _advertise(self) -> None:
        from discovery import client as discovery_client

        txt = {"fp": self.identity.fingerprint, "screen": self.screen, "v": "1"}
        try:
            self.registration = await discovery_client.register(
                self.options.name, LINK_SERVICE_TYPE, self.port, txt=txt,
                socket=self.options.discovery_socket, reactor=self.reactor,
            )
        except Exception as err:
            raise ExportError(
                f"cannot advertise {self.options.name!r} through discoveryd "
                f"({discovery_client.socket_path(self.options.discovery_socket)}): {err}; "
                "start discoveryd, or use --no-advertise and xproxy://HOST:PORT"
            ) from err

    def _make_link(self) -> LinkProtocol:
        link = LinkProtocol(self.reactor, on_handshake=self._check, on_hello=self._hello,
                            on_lost=self._lost, on_bye=self._bye,
                            compress_level=self.options.compress_level)
        self.handshaking[link] = self.reactor.callLater(self.options.handshake_timeout,
                                                        self._handshake_late, link)
        return link

    def may_handshake(self) -> bool:
        """A new connection: whether it may start a TLS handshake (fewer than
        max_handshakes are unfinished)."""
        if len(self.handshaking) < self.options.max_handshakes:
            return True
        self.handshakes_refused += 1
        self._cap_unlogged += 1
        now = self.reactor.seconds()
        if self._cap_logged is None or now - self._cap_logged >= CAP_LOG_EVERY:
            log.warn("{n} TLS handshakes unfinished (--max-handshakes): closing new "
                     "connections; {r} closed since this was last said",
                     n=self.options.max_handshakes, r=self._cap_unlogged)
            self._cap_logged = now
            self._cap_unlogged = 0
        return False

    def _handshake_over(self, link: LinkProtocol) -> None:
        call = self.handshaking.pop(link, None)
        if call is not None and call.active():
            call.cancel()

    def _handshake_late(self, link: LinkProtocol) -> None:
        self.handshaking.pop(link, None)
        transport = link.tls
        log.info("no TLS handshake within {t:g} s from {peer}; closed",
                 t=self.options.handshake_timeout,
                 peer=transport.getPeer() if transport is not None else "?")
        if transport is not None:
            transport.abortConnection()

    def _check(self, link: LinkProtocol) -> None:
        self._handshake_over(link)
        fp = link.peer_fingerprint or "(no certificate)"
        if not self.authorized.is_authorized(fp):
            log.warn("refused app host {fp} from {peer}: not authorized", fp=fp,
                     peer=link.tls.getPeer())
            raise NotAuthorized(
                f"this app host ({fp}) is not authorized to use display {self.options.name!r}; "
                f"on the display host run: xproxy authorize {fp}"
            )
        self.links.add(link)  # no HELLO yet: we answer the app host's, which may resume

    def _hello(self, link: LinkProtocol, info: dict[str, Any]) -> None:
        if link not in self.links or link.session is not None:
            return  # refused at the handshake (the refusal is on its way), or a stray HELLO
        fp = link.peer_fingerprint or "(no certificate)"
        reply: dict[str, Any] = {"ok": True, "name": self.options.name, "screen": self.screen,
                                 "v": 1, "epoch": self.epoch}
        watch = self.watcher is not None and info.get("watch") == 1
        if watch:
            assert self.watcher is not None
            reply["watch"] = sorted(self.watcher.core.groups)
        resume = info.get("resume")
        if resume is not None:
            if not isinstance(resume, dict):
                raise LinkProtocolError("a HELLO whose resume is not an object")
            try:
                session = self.sessions.claim(resume.get("session"), fp, self.reactor.seconds())
            except ResumeRefused as err:
                log.info("app host {fp} ({peer}) cannot resume: {err}", fp=fp,
                         peer=link.tls.getPeer(), err=err)
                link.refuse(err.code, str(err))
                return
            old = session.conn
            if watch:
                self.watching.add(session)
            again = session.take_over(link, reply, info.get("received"))
            if old is not None:  # its end of the old connection had not noticed yet
                old.tls.abortConnection()
            if session.expiry is not None and session.expiry.active():
                session.expiry.cancel()
            session.expiry = None
            log.info("link session of {fp} resumed from {peer}: {again} frames sent again, "
                     "{n} X connections kept", fp=fp, peer=link.tls.getPeer(),
                     again=again, n=len(session.channels))
            return
        session = LinkSession(link.core, on_open=self._open)
        session.peer_fingerprint = fp
        if link.core.peer_recon:
            session.session_id = self.sessions.new(session, fp)
            reply.update(session=session.session_id, grace=self.options.link_grace)
        else:
            self.plain_sessions.add(session)
        session.attach(link)
        if watch:
            self.watching.add(session)
        link.core.hello(reply)
        log.info("link from app host {fp} ({peer})", fp=fp, peer=link.tls.getPeer())

    def _display_changed(self, change: Change) -> None:
        self._tell(change_frame(change))

    def _watch_lost(self, why: str) -> None:
        if self.watcher is None:
            return
        log.warn("the watch of the display ended ({why}): app hosts now ask the X server for "
                 "its root properties, RANDR and XKB every time", why=why)
        self.watcher = None
        self._tell({"stop": why})
        self.watching.clear()

    def _tell(self, info: dict[str, Any]) -> None:
        for session in list(self.watching):
            if session.ended is not None:
                self.watching.discard(session)
                continue
            session.core.changed(info)
            session.flush()

    def _open(self, session: LinkSession, channel: ChannelTransport, info: dict[str, Any]) -> None:
        assert self.factory is not None
        channel.attach(self.factory.buildProtocol(None))

    def _lost(self, link: LinkProtocol, reason: Failure) -> None:
        self._handshake_over(link)
        self.links.discard(link)
        session = link.session
        if session is None or session.conn is not None:
            return  # carried no session, or was replaced by a newer connection
        sid = session.session_id
        if session.ended is not None or sid is None or \
                not self.sessions.lost(sid, self.reactor.seconds()):
            session.end("link lost")
            self.plain_sessions.discard(session)
            if sid is not None:
                self.sessions.remove(sid)
            return
        grace = self.options.link_grace
        session.expiry = self.reactor.callLater(grace, self._expire)
        log.info("link from app host {fp} lost ({why}); keeping its {n} X connections for "
                 "{g:g} s", fp=session.peer_fingerprint, n=len(session.channels), g=grace,
                 why=link.failure or reason.getErrorMessage())

    def _bye(self, link: LinkProtocol, reason: str) -> None:
        """The app host ended its session cleanly (its agent stopped): nothing to keep."""
        session = link.session
        if session is None:
            return
        if session.session_id is not None:
            self.sessions.remove(session.session_id)
        self.plain_sessions.discard(session)
        log.info("link session of {fp} ended by the app host ({why})",
                 fp=session.peer_fingerprint, why=reason or "no reason given")

    def _expire(self) -> None:
        for session in self.sessions.expired(self.reactor.seconds()):
            log.warn("link session of {fp} not resumed within {g:g} s; closing its {n} X "
                     "connections", fp=session.peer_fingerprint, g=self.options.link_grace,
                     n=len(session.channels))
            session.expiry = None
            session.end("link lost and not resumed")

    async def _links_gone(self, timeout: float) -> None:
        await drain(self.reactor, lambda: all(link.gone for link in self.links), timeout)

    async def stop(self) -> None:
        if self.registration is not None:
            with contextlib.suppress(Exception):
                await self.registration.withdraw()
            self.registration = None
        if self.port_object is not None:
            await self.port_object.stopListening()
            self.port_object = None
        for session in [*self.sessions.values(), *self.plain_sessions]:
            session.end("the export stops")  # a CLOSE per channel: app hosts end them now
        for link in list(self.links):
            link.tls.loseConnection()
        await self._links_gone(timeout=1.0)  # (the reactor's shutdown would drop unsent bytes)
        if self.watcher is not None:
            watcher, self.watcher = self.watcher, None
            watcher.stop()
        for d in self.held_displays:
            with contextlib.suppress(Exception):
                d.close()
        self.held_displays.clear()


class _HandshakeLimit(protocol.Factory):
    """Wraps the TLS factory: a connection past the export's max_handshakes is closed as it
    comes, before any TLS state is made for it."""

    noisy = False

    def __init__(self, export: ExportServer, tls: TLSMemoryBIOFactory) -> None:
        self.export = export
        self.tls = tls

    def doStart(self) -> None:
        self.tls.doStart()

    def doStop(self) -> None:
        self.tls.doStop()

    def buildProtocol(self, addr: Any) -> protocol.Protocol | None:
        if not self.export.may_handshake():
            return None
        return self.tls.buildProtocol(addr)
