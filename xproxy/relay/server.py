"""`xproxy serve`: one proxy display in front of a target display."""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint, clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from ..reactor_types import IRelayReactor
from ..trust import xauthfile
from ..x11.connection import AuthPolicy
from ..x11.display import DisplayName, parse_display
from ..x11.extensions import ExtensionPolicy
from ..x11.xauth import (
    FAMILY_LOCAL,
    MIT_MAGIC_COOKIE_1,
    XauthEntry,
    remove_entry,
    replace_entry,
)
from . import aiotransport, display_socket
from .drain import drain
from .proxy import MAX_HELD, MAX_SETUPS, SETUP_TIMEOUT, ProxyFactory
from .twisted_internals import event_loop

log = Logger(namespace="xproxy")


@dataclass
class ServeOptions:
    target: str
    display: int | None = None
    tcp: bool = False
    tcp_interface: str = "127.0.0.1"
    hide_ext: list[str] = field(default_factory=list)
    allow_ext: list[str] = field(default_factory=list)
    untrusted: bool = False
    xauthority: str | None = None
    #: ProxyFactory's hooks: what watches each client (tracer, metrics), and client ends
    observers: Callable[[int], Any] | None = None
    on_client_done: Callable[[Any], None] | None = None
    #: Where to relay instead of the target display (a Twisted client endpoint string, e.g.
    #: a link agent's socket), and the authorization to present there.
    upstream_endpoint: str | None = None
    upstream_auth: tuple[bytes, bytes] | None = None
    #: Or an endpoint object to relay to (a link agent's in-process channels).
    upstream: Any = None
    #: Limits on connections that have not completed their setup (see relay.ProxyFactory).
    setup_timeout: float = SETUP_TIMEOUT
    max_setups: int = MAX_SETUPS
    max_held: int = MAX_HELD


class StartError(RuntimeError):
    """The proxy cannot start; the message says why."""


def client_endpoint(reactor: IRelayReactor, target: DisplayName | None,
                    endpoint: str | None = None) -> IStreamClientEndpoint:
    """Where the relay connects upstream: on the event loop's own transports when the reactor
    is the asyncio one (see aiotransport.py), else a Twisted endpoint."""
    loop = event_loop(reactor)
    if loop is not None:
        if target is not None and endpoint is None:
            if target.is_local:
                return aiotransport.ClientEndpoint(loop, path=target.socket_path)
            return aiotransport.ClientEndpoint(loop, host=target.host, port=target.tcp_port)
        if endpoint is not None and endpoint.startswith("unix:path="):
            return aiotransport.ClientEndpoint(loop, path=endpoint[len("unix:path="):])
    if not endpoint:
        assert target is not None
        endpoint = upstream_endpoint_string(target)
    return clientFromString(reactor, endpoint)


def upstream_endpoint_string(target: DisplayName) -> str:
    if target.is_local:
        return f"unix:path={target.socket_path}"
    host = target.host.replace(":", r"\:")
    return f"tcp:host={host}:port={target.tcp_port}"


class ProxyServer:
    """Owns a display number, its sockets and its cookie for the life of the proxy."""

    def __init__(self, reactor: IRelayReactor, options: ServeOptions) -> None:
        self.reactor = reactor
        self.options = options
        self.target = parse_display(options.target) \
            if options.upstream_endpoint is None and options.upstream is None else None
        self.xauthority = options.xauthority or xauthfile.default_path()
        self.number: int | None = None
        self.cookie = secrets.token_bytes(16)
        self.entry: XauthEntry | None = None
        self.ports: list = []
        self.untrusted_id: int | None = None
        self.factory: ProxyFactory | None = None
        self._cookies = xauthfile.CookieLookup(self.target, self.xauthority) \
            if self.target is not None else None

    @property
    def display_name(self) -> str:
        return f":{self.number}"

    def _upstream_auth(self) -> tuple[bytes, bytes]:
        if self.options.upstream_auth is not None:
            return self.options.upstream_auth
        found = self._lookup()
        if self.options.untrusted and found is not None:
            return self._generate_untrusted(found)
        return (found.name, found.data) if found is not None else (b"", b"")

    def _lookup(self) -> XauthEntry | None:
        """The target's cookie as the Xauthority file holds it now (see CookieLookup)."""
        if self._cookies is None:
            return None
        found = self._cookies.current()
        if found is None and self._cookies.changed:
            log.warn("no cookie for {t} in {f}; connecting upstream without one",
                     t=self.options.target, f=self.xauthority)
        return found

    def _auth(self) -> AuthPolicy:
        """For each new client: the proxy's cookie, and the target's as found now."""
        found = self._lookup()
        name, data = (found.name, found.data) if found is not None else (b"", b"")
        return AuthPolicy(self.cookie, name, data)

    def _generate_untrusted(self, real: XauthEntry) -> tuple[bytes, bytes]:
        """An untrusted cookie from the SECURITY extension, as `ssh -X` gets through
        `xauth generate ... untrusted`; revoked when the proxy stops."""
        from Xlib.ext import security

        d = xauthfile.open_xlib_display(self.options.target, self.xauthority)
        if not d.has_extension("SECURITY"):
            d.close()
            raise StartError(f"{self.options.target} has no SECURITY extension for --untrusted")
        reply = d.security_generate_authorization(
            MIT_MAGIC_COOKIE_1.decode(), b"", timeout=0,
            trust_level=security.SecurityClientUntrusted,
        )
        self.untrusted_id = reply.authid
        self._security_display = d
        return MIT_MAGIC_COOKIE_1, bytes(reply.auth_data_return)

    def start(self) -> defer.Deferred:
        auth: AuthPolicy | Callable[[], AuthPolicy]
        if self.options.upstream_auth is None and not self.options.untrusted:
            auth = self._auth
            self._lookup()
        else:
            auth = AuthPolicy(self.cookie, *self._upstream_auth())
        policy = ExtensionPolicy.from_options(self.options.hide_ext, self.options.allow_ext)
        if "MIT-SHM" in self.options.allow_ext and not (self.target and self.target.is_local):
            log.warn("MIT-SHM allowed for a remote target: clients using it will fail")
        upstream = self.options.upstream or client_endpoint(self.reactor, self.target,
                                                            self.options.upstream_endpoint)
        self.factory = ProxyFactory(upstream, self.options.target, auth, policy,
                                    on_client_done=self.options.on_client_done,
                                    observers=self.options.observers, clock=self.reactor,
                                    setup_timeout=self.options.setup_timeout,
                                    max_setups=self.options.max_setups,
                                    max_held=self.options.max_held)
        return defer.ensureDeferred(self._listen())

    async def _listen(self) -> str:
        assert self.factory is not None
        for attempt in range(20):
            number = self.options.display
            if number is None:
                number = display_socket.find_free()
            try:
                display_socket.claim(number)
            except display_socket.DisplayInUse as err:
                if self.options.display is not None or attempt == 19:
                    raise StartError(str(err)) from err
                continue
            self.number = number
            break
        assert self.number is not None
        try:
            path = display_socket.socket_path(self.number)
            loop = event_loop(self.reactor)
            if loop is not None:
                self.ports.append(await aiotransport.listen_unix(loop, path, self.factory))
                if self.options.tcp:
                    self.ports.append(await aiotransport.listen_tcp(
                        loop, 6000 + self.number, self.factory, self.options.tcp_interface))
            else:
                unix = UNIXServerEndpoint(self.reactor, path, mode=0o777, wantPID=False)
                self.ports.append(await unix.listen(self.factory))
                if self.options.tcp:
                    tcp = TCP4ServerEndpoint(self.reactor, 6000 + self.number,
                                             interface=self.options.tcp_interface)
                    self.ports.append(await tcp.listen(self.factory))
            self.entry = XauthEntry(FAMILY_LOCAL, socket.gethostname().encode(),
                                    str(self.number).encode(), MIT_MAGIC_COOKIE_1, self.cookie)
            entry = self.entry
            xauthfile.update(self.xauthority, lambda entries: replace_entry(entries, entry))
        except Exception as err:
            await self.stop()
            raise StartError(f"cannot listen as :{self.number}: {err}") from err
        return self.display_name

    async def drain(self, timeout: float = 1.0) -> None:
        """Wait (at most `timeout`) for the connections still open to finish: a command that
        has exited may have left its last bytes on the way through the proxy."""
        await drain(self.reactor, lambda: self.factory is None or not self.factory.totals.active,
                    timeout)

    async def stop(self) -> None:
        for port in self.ports:
            await port.stopListening()
        self.ports.clear()
        if self.factory is not None:
            for client in list(self.factory.totals.active.values()):
                client.disconnect()
        if self.entry is not None:
            entry = self.entry
            try:
                xauthfile.update(self.xauthority, lambda entries: remove_entry(entries, entry))
            except OSError as err:
                log.error("could not remove the proxy cookie from {f}: {e}",
                          f=self.xauthority, e=err)
            self.entry = None
        if self.untrusted_id is not None:
            with contextlib.suppress(Exception):
                self._security_display.security_revoke_authorization(self.untrusted_id)
                self._security_display.close()
            self.untrusted_id = None
        if self.number is not None:
            display_socket.release(self.number)
