"""Client library for ``discoveryd``: register, look up and watch services from any Twisted program.

Everything returns Deferreds (``await`` them inside ``ensureDeferred``/``inlineCallbacks``
code) or async iterators::

    from discovery import client

    reg = await client.register("office", "_x11._tcp", 6010, txt={"screen": "0"})
    ...                                      # published while ``reg`` (its connection) lives
    await reg.withdraw()

    for rec in await client.lookup("_kv._tcp"):
        print(rec.name, rec.addresses, rec.port)

    async for ev in client.watch("_kv._tcp"):   # ev.kind: "added" | "updated" | "removed"
        print(ev.kind, ev.service.name)

A ``DiscoveryClient`` holds one connection and may carry many registrations and watches.
If the daemon restarts, the client reconnects (with backoff), registers its names again and
re-subscribes its watches, reporting what changed in between as watch events.

The socket is, in order: the ``socket`` argument, ``$DISCOVERY_SOCKET``,
``$XDG_RUNTIME_DIR/discovery.sock``, ``/run/discovery.sock`` for root,
``/tmp/discovery-$UID.sock``.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, error, protocol, task
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.python.failure import Failure

from discovery.config import default_socket_path
from discovery.wire import LineSplitter, encode

if TYPE_CHECKING:
    from discovery.reactor import IClientReactor

log = Logger(namespace="discovery.client")

#: The waits between attempts to reach the daemon again: 0.05 s, doubling up to 2 s.
#: ClientService asks its policy from attempt 1, which is `initialDelay * factor`.
RECONNECT_BACKOFF = backoffPolicy(initialDelay=0.025, factor=2, maxDelay=2.0, jitter=lambda: 0.0)


def socket_path(explicit: str | None = None) -> str:
    """Where the daemon listens: ``explicit``, else the environment, else the default."""
    return explicit or default_socket_path(os.environ, os.getuid())


class DiscoveryError(Exception):
    """The daemon refused a request; ``code`` is e.g. ``conflict``, ``denied``, ``bad-type``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotConnected(DiscoveryError):
    def __init__(self, message: str = "not connected to discoveryd") -> None:
        super().__init__("not-connected", message)


@dataclass(frozen=True)
class ServiceRecord:
    """A service as the daemon reports it; ``source`` is local, static, on-demand or remote."""

    name: str
    type: str
    host: str
    addresses: tuple[str, ...]
    port: int
    txt: Mapping[str, str] = field(default_factory=dict)
    source: str = "remote"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ServiceRecord:
        return cls(
            name=d["name"],
            type=d["type"],
            host=d.get("host", ""),
            addresses=tuple(d.get("addresses", ())),
            port=int(d["port"]),
            txt=dict(d.get("txt", {})),
            source=d.get("source", "remote"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "host": self.host,
            "addresses": list(self.addresses),
            "port": self.port,
            "txt": dict(self.txt),
            "source": self.source,
        }

    @property
    def key(self) -> tuple[str, str]:
        return (self.name.lower(), self.type.lower())


class Services(list[ServiceRecord]):
    """What a lookup found. ``warning`` is the daemon's ``{"code", "message"}`` when it
    answered with a caveat (from its cache, without browsing, past ``browsed-types``)."""

    warning: dict[str, str] | None = None


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "added" | "updated" | "removed"
    service: ServiceRecord


class _LineProtocol(protocol.Protocol):
    def __init__(self, client: DiscoveryClient) -> None:
        self.client = client
        self._lines = LineSplitter()  # no length cap: a lookup's answer grows with the services known

    def connectionMade(self) -> None:
        self.client._made(self)

    def dataReceived(self, data: bytes) -> None:
        for line in self._lines.receive_data(data):
            try:
                msg = json.loads(line)
            except ValueError:
                log.error("discoveryd sent garbage: {line!r}", line=line[:200])
                continue
            if isinstance(msg, dict):
                self.client._message(msg)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.client._lost(self, reason)


class _Factory(protocol.Factory):
    noisy = False  # a line per connection attempt while the daemon is away is noise

    def __init__(self, client: DiscoveryClient) -> None:
        self.client = client

    def buildProtocol(self, addr: IAddress | None) -> _LineProtocol:
        return _LineProtocol(self.client)


class Registration:
    """A live registration; it is withdrawn by ``withdraw()`` or when its client closes."""

    def __init__(self, client: DiscoveryClient, name: str, type_: str, port: int, txt: Mapping[str, str], owns_client: bool) -> None:
        self.client = client
        self.name = name
        self.type = type_
        self.port = port
        self.txt = dict(txt)
        self.record: ServiceRecord | None = None
        self.active = True
        self._owns_client = owns_client
        self.on_lost: Callable[[DiscoveryError], None] | None = None
        self.lost: defer.Deferred[DiscoveryError] = defer.Deferred()

    async def withdraw(self) -> None:
        if not self.active:
            return
        self.active = False
        self.client._registrations.discard(self)
        if self._owns_client:
            await self.client.close()
            return
        try:
            await self.client._request({"op": "withdraw", "name": self.name, "type": self.type})
        except NotConnected:
            pass

    def _fail(self, err: DiscoveryError) -> None:
        self.active = False
        self.client._registrations.discard(self)
        if self.on_lost:
            self.on_lost(err)
        if not self.lost.called:
            self.lost.callback(err)

    def __repr__(self) -> str:
        return f"<Registration {self.name}.{self.type} port {self.port} active={self.active}>"


class Watch:
    """Events for one service type: an async iterator, or pass ``callback`` to ``watch``.

    The first events are ``added`` for every service known when the watch starts.
    """

    def __init__(self, client: DiscoveryClient, type_: str, callback: Callable[[WatchEvent], None] | None, owns_client: bool) -> None:
        self.client = client
        self.type = type_
        self.callback = callback
        self.known: dict[tuple[str, str], ServiceRecord] = {}
        self._queue: deque[WatchEvent] = deque()
        self._waiting: defer.Deferred[None] | None = None
        self._owns_client = owns_client
        self.closed = False
        self.ready: defer.Deferred[None] = defer.Deferred()

    def _event(self, kind: str, rec: ServiceRecord) -> None:
        if kind == "removed":
            self.known.pop(rec.key, None)
        else:
            self.known[rec.key] = rec
        ev = WatchEvent(kind, rec)
        if self.callback is not None:
            try:
                self.callback(ev)
            except Exception:  # noqa: BLE001 - a callback bug must not stop the watch
                log.failure("watch callback failed")
        else:
            self._queue.append(ev)
            self._wake()

    def _snapshot(self, services: list[ServiceRecord]) -> None:
        """Reconcile with a full list (first subscribe or after a reconnect)."""
        now = {s.key: s for s in services}
        for key, gone in list(self.known.items()):
            if key not in now:
                self._event("removed", gone)
        for key, s in now.items():
            old = self.known.get(key)
            if old is None:
                self._event("added", s)
            elif old != s:
                self._event("updated", s)
        if not self.ready.called:
            self.ready.callback(None)

    def _wake(self) -> None:
        if self._waiting is not None:
            d, self._waiting = self._waiting, None
            d.callback(None)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._queue:
            if self.closed:
                raise StopAsyncIteration
            self._waiting = defer.Deferred()
            await self._waiting
        return self._queue.popleft()

    def next_event(self, timeout: float | None = None) -> defer.Deferred[WatchEvent]:
        """The next event as a Deferred (fails with ``defer.TimeoutError`` after ``timeout``)."""
        d = defer.ensureDeferred(self.__anext__())
        if timeout is not None:
            d.addTimeout(timeout, self.client.reactor)
        return d

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.client._watches.discard(self)
        self._wake()
        if self._owns_client:
            await self.client.close()
        elif self.client.connected and not any(w.type.lower() == self.type.lower() for w in self.client._watches):
            try:
                await self.client._request({"op": "unwatch", "type": self.type})
            except DiscoveryError:
                pass


class DiscoveryClient:
    """One connection to the daemon. With ``reconnect``, a Twisted ``ClientService`` makes it
    again after the daemon restarts (backing off by ``RECONNECT_BACKOFF``), and the client then
    registers its names again and re-subscribes its watches."""

    def __init__(self, socket: str | None = None, reactor: IClientReactor | None = None,
                 reconnect: bool = True) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = cast("IClientReactor", default_reactor)
        self.reactor: IClientReactor = reactor
        self.path = socket_path(socket)
        self.reconnect = reconnect
        self._proto: _LineProtocol | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, defer.Deferred[dict[str, Any]]] = {}
        self._registrations: set[Registration] = set()
        self._watches: set[Watch] = set()
        self._closed = False
        self._service: ClientService | None = None
        #: Connections made again since the last one on which everything was restored: a
        #: daemon that accepts and then fails the restore is retried later each time.
        self._failed_restores = 0
        #: Whether the next connection made is a reconnection, to restore everything on.
        self._restore = False
        self.host: str | None = None
        self.on_reconnect: Callable[[], None] | None = None

    @property
    def connected(self) -> bool:
        return self._proto is not None

    async def connect(self) -> DiscoveryClient:
        """Connect once; raises ``NotConnected`` when no daemon answers at the socket, and
        ``DiscoveryError`` when it refuses the connection (then nothing goes on trying)."""
        try:
            if self.reconnect:
                service = self._start()
                try:
                    await service.whenConnected(failAfterFailures=1)
                except BaseException:
                    # (stopped on the next turn: the failure arrives while the service is
                    # still handling it, and it cannot be stopped from inside that)
                    self._service = None
                    await task.deferLater(self.reactor, 0, service.stopService)
                    raise
            else:
                endpoint = UNIXClientEndpoint(self.reactor, self.path)
                self._proto = await connectProtocol(endpoint, _LineProtocol(self))
        except (error.ConnectError, OSError) as e:
            raise NotConnected(f"cannot connect to discoveryd at {self.path}: {e}") from None
        try:
            await self._hello()
        except BaseException:
            await self.close()
            raise
        return self

    def _start(self) -> ClientService:
        """Start connecting (again after every loss) in the background."""
        self._service = ClientService(
            UNIXClientEndpoint(self.reactor, self.path), _Factory(self),
            retryPolicy=lambda attempt: RECONNECT_BACKOFF(attempt + self._failed_restores),
            clock=self.reactor)
        self._service.startService()
        return self._service

    async def _hello(self) -> None:
        hello = await self._request({"op": "hello"})
        self.host = hello.get("host")

    async def close(self) -> None:
        """Close the connection: the daemon withdraws every registration it carried."""
        self._closed = True
        for w in list(self._watches):
            w.closed = True
            w._wake()
        self._watches.clear()
        self._registrations.clear()
        service, self._service = self._service, None
        proto, self._proto = self._proto, None
        if service is not None:
            await service.stopService()
        elif proto is not None and proto.transport is not None:
            proto.transport.loseConnection()

    # -- the API ------------------------------------------------------------------------

    async def register(self, name: str, type: str, port: int, txt: Mapping[str, str] | None = None) -> Registration:
        reg = Registration(self, name, type, port, txt or {}, owns_client=False)
        await self._register(reg)
        self._registrations.add(reg)
        return reg

    async def register_on_demand(
        self,
        name: str,
        type: str,
        port: int,
        command: list[str],
        txt: Mapping[str, str] | None = None,
        max_instances: int = 1,
        rate: tuple[int, float] = (10, 60.0),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ServiceRecord:
        """Let the daemon hold the socket and start ``command`` on the first connection.

        The registration belongs to the daemon (it outlives this client and daemon restarts);
        remove it with ``withdraw(name, type)``. ``port=0`` picks a free port.
        """
        od: dict[str, Any] = {"command": list(command), "max_instances": max_instances, "rate": list(rate)}
        if env:
            od["env"] = dict(env)
        if cwd:
            od["cwd"] = cwd
        r = await self._request({"op": "register", "name": name, "type": type, "port": port, "txt": dict(txt or {}), "on_demand": od})
        return ServiceRecord.from_json(r["service"])

    async def withdraw(self, name: str, type: str) -> None:
        await self._request({"op": "withdraw", "name": name, "type": type})

    async def lookup(self, type: str, name: str | None = None, wait: float | None = None) -> Services:
        """Services of ``type`` known to the daemon, local first.

        The first lookup of a type the daemon is not browsing yet waits ``wait`` seconds
        (daemon default 0.5) for answers from the LAN; later ones answer at once.
        """
        req: dict[str, Any] = {"op": "lookup", "type": type}
        if name is not None:
            req["name"] = name
        if wait is not None:
            req["wait"] = wait
        r = await self._request(req)
        found = Services(ServiceRecord.from_json(s) for s in r["services"])
        found.warning = r.get("warning")
        return found

    def watch(self, type: str, callback: Callable[[WatchEvent], None] | None = None) -> Watch:
        """Subscribe to a type; ``await w.ready`` to know the subscription is in place."""
        w = Watch(self, type, callback, owns_client=False)
        self._watches.add(w)
        self._subscribe(w)
        return w

    async def list(self) -> dict[str, Any]:
        return await self._request({"op": "list"})

    # -- plumbing --------------------------------------------------------------------------

    async def _register(self, reg: Registration) -> None:
        r = await self._request({"op": "register", "name": reg.name, "type": reg.type, "port": reg.port, "txt": reg.txt})
        reg.record = ServiceRecord.from_json(r["service"])

    def _subscribe(self, w: Watch) -> None:
        d = defer.ensureDeferred(self._request({"op": "watch", "type": w.type}))

        def done(r: dict[str, Any]) -> None:
            w._snapshot([ServiceRecord.from_json(s) for s in r["services"]])

        def failed(f: Failure) -> None:
            if not w.ready.called:
                w.ready.errback(f)

        d.addCallbacks(done, failed)

    def _request(self, body: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        if self._proto is None or self._proto.transport is None:
            return defer.fail(NotConnected())
        id_ = next(self._ids)
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._pending[id_] = d
        self._proto.transport.write(encode({"id": id_, **body}))
        return d

    def _message(self, msg: dict[str, Any]) -> None:
        if "event" in msg:
            if msg["event"] in ("conflict", "lost"):  # a registration of ours is gone
                rec = ServiceRecord.from_json(msg["service"])
                err = msg.get("error") or {"code": "conflict", "message": msg.get("message", "name in use on the network")}
                for reg in list(self._registrations):
                    if (reg.name.lower(), reg.type.lower()) == rec.key:
                        reg._fail(DiscoveryError(err.get("code", "lost"), err.get("message", "registration lost")))
                return
            rec = ServiceRecord.from_json(msg["service"])
            for w in list(self._watches):
                if w.type.lower().rstrip(".").removesuffix(".local") == rec.type.lower():
                    w._event(msg["event"], rec)
            return
        if msg.get("id") is None and msg.get("ok") is False:
            # about no request in particular (e.g. the connection is refused): tell every caller
            err = msg.get("error") or {}
            pending, self._pending = self._pending, {}
            for d in pending.values():
                d.errback(DiscoveryError(err.get("code", "error"), err.get("message", "refused")))
            return
        d = self._pending.pop(msg.get("id"), None)  # type: ignore[arg-type]
        if d is None:
            return
        if msg.get("ok"):
            d.callback(msg)
        else:
            err = msg.get("error") or {}
            d.errback(DiscoveryError(err.get("code", "error"), err.get("message", "request failed")))

    def _made(self, proto: _LineProtocol) -> None:
        self._proto = proto
        if self._restore:
            defer.ensureDeferred(self._restore_all(proto))
        self._restore = True

    def _lost(self, proto: _LineProtocol, reason: Failure) -> None:
        if proto is self._proto:
            self._proto = None
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(NotConnected("connection to discoveryd lost"))
        if self._closed or not self.reconnect:
            for w in list(self._watches):
                w.closed = True
                w._wake()
            return
        if self._service is not None and self._service.running:
            log.info("lost discoveryd at {path}; reconnecting", path=self.path)

    async def _restore_all(self, proto: _LineProtocol) -> None:
        """On a connection made again: registrations and watches as they were. When that fails
        the connection is dropped, and the service makes the next one after a longer wait."""
        try:
            await self._reconnected()
        except Exception as e:  # noqa: BLE001 - whatever failed, the next connection may not
            if self._closed:
                return
            if isinstance(e, NotConnected):
                pass  # the connection went again
            elif isinstance(e, DiscoveryError):
                log.warn("discoveryd refused the connection: {e}; trying again later",
                         e=e.message)
            else:
                log.failure("restoring registrations and watches failed; trying again later")
            self._failed_restores += 1
            if proto.transport is not None:
                proto.transport.loseConnection()
        else:
            self._failed_restores = 0

    async def _reconnected(self) -> None:
        again = self.host is not None  # (else the first connection of a watch() helper)
        await self._hello()
        for reg in list(self._registrations):
            try:
                await self._register(reg)
            except NotConnected:
                raise
            except DiscoveryError as e:
                log.warn("could not register {name} again: {e}", name=reg.name, e=e.message)
                reg._fail(e)
        for w in list(self._watches):
            self._subscribe(w)
        if again:
            log.info("reconnected to discoveryd; {n} registrations restored",
                     n=len(self._registrations))
        if self.on_reconnect:
            self.on_reconnect()


# -- one-call helpers: each opens its own connection ---------------------------------------


async def connect(socket: str | None = None, reactor: IClientReactor | None = None, reconnect: bool = True) -> DiscoveryClient:
    return await DiscoveryClient(socket, reactor, reconnect).connect()


async def register(
    name: str,
    type: str,
    port: int,
    txt: Mapping[str, str] | None = None,
    *,
    socket: str | None = None,
    reactor: IClientReactor | None = None,
) -> Registration:
    """Register on a connection of its own: the registration lives until ``withdraw()``."""
    c = await connect(socket, reactor)
    reg = Registration(c, name, type, port, txt or {}, owns_client=True)
    try:
        await c._register(reg)
    except Exception:
        await c.close()
        raise
    c._registrations.add(reg)
    return reg


async def lookup(
    type: str, name: str | None = None, *, wait: float | None = None, socket: str | None = None, reactor: IClientReactor | None = None
) -> Services:
    c = await connect(socket, reactor, reconnect=False)
    try:
        return await c.lookup(type, name, wait)
    finally:
        await c.close()


def watch(type: str, callback: Callable[[WatchEvent], None] | None = None, *, socket: str | None = None, reactor: IClientReactor | None = None) -> Watch:
    """A watch on a connection of its own; ``close()`` it when done."""
    c = DiscoveryClient(socket, reactor)
    w = Watch(c, type, callback, owns_client=True)
    c._watches.add(w)
    # every connection, the first too, subscribes as after a daemon restart; while no daemon
    # answers, the client keeps trying in the background
    c._restore = True
    c._start()
    return w
