"""`xproxy export`: the display host's end. App hosts connect over mutually authenticated TLS;
each X connection they carry is relayed to the display with everything `serve` does (cookie
substitution, extension policy, tracing, metrics), and the display is advertised on the LAN
through the local discoveryd."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import protocol
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.logger import Logger

from . import xauthfile
from .identity import AuthorizedHosts, Identity
from .linkconn import ChannelTransport, LinkProtocol
from .protocol.connection import AuthPolicy
from .protocol.display import parse_display
from .protocol.extensions import ExtensionPolicy
from .relay import ProxyFactory
from .server import client_endpoint
from .tls import ServerContextFactory

log = Logger(namespace="xproxy.export")

#: DNS-SD service type of an exported display (the link protocol, not raw X11).
LINK_SERVICE_TYPE = "_xproxy._tcp"
DEFAULT_PORT = 7010


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
    from Xlib import display as xdisplay

    old = os.environ.get("XAUTHORITY")
    os.environ["XAUTHORITY"] = xauthority
    try:
        with contextlib.redirect_stdout(sys.stderr):
            d = xdisplay.Display(display)
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
    finally:
        if old is None:
            os.environ.pop("XAUTHORITY", None)
        else:
            os.environ["XAUTHORITY"] = old


class ExportServer:
    def __init__(self, reactor, options: ExportOptions, identity: Identity | None = None,  # type: ignore[no-untyped-def]
                 authorized: AuthorizedHosts | None = None) -> None:
        self.reactor = reactor
        self.options = options
        self.identity = identity or Identity.load_or_create()
        self.authorized = authorized or AuthorizedHosts.default()
        self.port_object: Any = None
        self.registration: Any = None
        self.links: set[LinkProtocol] = set()
        self.factory: ProxyFactory | None = None
        self.screen = ""
        self.epoch = ""
        self.held_displays: list[Any] = []

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
        found = xauthfile.lookup_for_display(target, xauthority)
        auth = AuthPolicy(None, found.name, found.data) if found else AuthPolicy(None)
        self.factory = ProxyFactory(
            client_endpoint(self.reactor, target),
            self.options.display, auth,
            ExtensionPolicy.from_options(self.options.hide_ext, self.options.allow_ext),
            on_client_done=self.options.on_client_done, observers=self.options.observers,
        )
        endpoint = SSL4ServerEndpoint(self.reactor, self.options.port,
                                      ServerContextFactory(self.identity),
                                      interface=self.options.interface)
        try:
            factory = protocol.Factory.forProtocol(self._make_link)  # type: ignore[arg-type]
            factory.noisy = False
            self.port_object = await endpoint.listen(factory)
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
        link = LinkProtocol(on_handshake=self._check, on_open=self._open, on_lost=self._lost,
                            compress_level=self.options.compress_level)
        return link

    def _check(self, link: LinkProtocol) -> dict[str, Any]:
        fp = link.peer_fingerprint or "(no certificate)"
        if not self.authorized.is_authorized(fp):
            log.warn("refused app host {fp} from {peer}: not authorized", fp=fp,
                     peer=link.transport.getPeer())
            raise NotAuthorized(
                f"this app host ({fp}) is not authorized to use display {self.options.name!r}; "
                f"on the display host run: xproxy authorize {fp}"
            )
        self.links.add(link)
        log.info("link from app host {fp} ({peer})", fp=fp, peer=link.transport.getPeer())
        return {"ok": True, "name": self.options.name, "screen": self.screen, "v": 1,
                "epoch": self.epoch}

    def _open(self, link: LinkProtocol, channel: ChannelTransport, info: dict[str, Any]) -> None:
        if link not in self.links:  # channels before an accepted handshake
            link.core.close(channel.channel, "not authorized")
            link.channels.pop(channel.channel, None)
            return
        assert self.factory is not None
        channel.attach(self.factory.buildProtocol(None))

    def _lost(self, link: LinkProtocol, reason: Any) -> None:
        self.links.discard(link)

    async def stop(self) -> None:
        if self.registration is not None:
            with contextlib.suppress(Exception):
                await self.registration.withdraw()
            self.registration = None
        if self.port_object is not None:
            await self.port_object.stopListening()
            self.port_object = None
        for link in list(self.links):
            link.transport.loseConnection()
        for d in self.held_displays:
            with contextlib.suppress(Exception):
                d.close()
        self.held_displays.clear()
