"""The local API of ``discoveryd``: one connection protocol per client on the unix socket, and
the ops it answers.

A connection reads JSON lines through ``wire`` (which checks each request against ``schema``,
so an op may index its fields and trust their types), knows its client by the kernel's peer
credentials, and sends replies and watch events back, dropping a client that leaves too much
unread. ``API`` runs each op against the daemon's registry and backends and answers it.
"""

from __future__ import annotations

import itertools
import socket
import struct
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, interfaces, protocol
from twisted.logger import Logger
from zope.interface import implementer

from discovery import wire
from discovery.browsing import Need
from discovery.config import ConfigError, parse_on_demand
from discovery.guard import Throttle
from discovery.registry import ROOT_UID, Owner, RegistryError, service_key, validate_type

if TYPE_CHECKING:
    from discovery.daemon import Daemon

log = Logger(namespace="discovery.api")

VERSION = 1
DEFAULT_LOOKUP_WAIT = 0.5  # s a first lookup of a type waits for answers from the LAN
MAX_LOOKUP_WAIT = 10.0
#: Replies and watch events a client may leave unread once its socket and the daemon's send
#: buffer for it are full; past this it is disconnected (its client library reconnects and
#: re-subscribes, and is told what changed in between).
MAX_UNREAD = 4 << 20
#: s a refused connection is kept half-closed for its client to read why
REFUSED_LINGER = 2.0


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, from the kernel (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)


@implementer(interfaces.IHalfCloseableProtocol, interfaces.IPushProducer)
class APIProtocol(protocol.Protocol):
    """One client connection: JSON lines in, replies and watch events out.

    Half-closeable, so ``printf '{"op":"list"}\\n' | socat - UNIX:...`` gets its answer before
    the connection (and with it the client's registrations) goes.

    A client that stops reading: once the transport's send buffer is full (Twisted pauses us,
    its producer), the daemon counts what more it has to send it (replies, watch events); past
    MAX_UNREAD bytes before the buffer has emptied, it drops the connection, so a stuck watcher
    cannot make the daemon's memory grow. Requests are still read meanwhile: a client may
    send many before it reads the answers.
    """

    _ids = itertools.count(1)

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.decoder = wire.LineDecoder()
        self.conn_id = f"conn-{next(self._ids)}"
        self.pid = self.uid = self.gid = -1
        self.closed = False
        self.unread: int | None = None  # bytes sent since the output backed up, else None
        self._linger: Any = None

    def connectionMade(self) -> None:
        try:
            self.pid, self.uid, self.gid = peer_credentials(self.transport.getHandle())  # type: ignore[union-attr]
        except OSError:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        refusal = self.daemon.admit(self)
        if refusal is not None:
            # The reason, then end of file; what the client had already sent is read and dropped
            # until it closes (closing with it unread would reset the connection and lose the
            # reason), for REFUSED_LINGER seconds at most.
            self.closed = True
            self.transport.write(wire.error(None, refusal.code, refusal.message))  # type: ignore[union-attr]
            self.transport.loseWriteConnection()  # type: ignore[union-attr]
            self._linger = self.daemon.reactor.callLater(REFUSED_LINGER, self.transport.abortConnection)  # type: ignore[union-attr]
            return
        self.daemon.connections[self.conn_id] = self
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]

    @property
    def owner(self) -> Owner:
        return Owner(conn=self.conn_id, uid=self.uid, pid=self.pid)

    def dataReceived(self, data: bytes) -> None:
        for item in self.decoder.receive_data(data):
            if self.closed:
                return
            if isinstance(item, wire.Invalid):
                self.send(wire.error(item.id, item.code, item.message))
                if item.fatal:
                    log.info("closing {conn} (pid {pid}): {msg}", conn=self.conn_id, pid=self.pid, msg=item.message)
                    self.closed = True
                    self._close_after_sending()
                    return
                continue
            self.daemon.api.handle(self, item.body)

    def readConnectionLost(self) -> None:
        self._close_after_sending()

    def _close_after_sending(self) -> None:
        # (a transport with a producer registered would wait for it before closing)
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.unread is not None:
            self.unread += len(data)
            if self.unread > MAX_UNREAD:
                log.warn("closing {conn} (pid {pid}): it left more than {n} bytes of replies and "
                         "events unread", conn=self.conn_id, pid=self.pid, n=MAX_UNREAD)
                self.closed = True
                self.transport.abortConnection()  # type: ignore[union-attr]  # drops what is queued
                return
        self.transport.write(data)  # type: ignore[union-attr]

    # IPushProducer: the transport's send buffer is full (Twisted says so again on every write
    # while it stays full) ...
    def pauseProducing(self) -> None:
        if self.unread is None:
            self.unread = 0

    # ... or empty again.
    def resumeProducing(self) -> None:
        self.unread = None

    def stopProducing(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self.daemon.connection_closed(self)


class APIFactory(protocol.Factory):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def buildProtocol(self, addr: Any) -> APIProtocol:
        return APIProtocol(self.daemon)


class API:
    """The ops, one method ``op_<name>`` per op ``schema.OPS`` declares: each takes the
    connection and its request and returns the reply's fields, or a Deferred of them (a lookup
    waiting for the LAN). The registry decides; the daemon carries out what it returns."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.reactor = daemon.reactor
        self.registry = daemon.registry
        self.browsing = daemon.browsing
        self._browse_started: dict[str, defer.Deferred[None]] = {}
        #: lookups of a name waiting for the LAN, woken as soon as the name is known
        self._name_waits: dict[tuple[str, str], list[defer.Deferred[None]]] = {}
        self._said = Throttle(daemon.reactor.seconds, 60.0)  # log lines about clients hitting a limit

    def handle(self, conn: APIProtocol, req: dict[str, Any]) -> None:
        """Run one request that ``wire`` (through ``schema``) found well-typed, and answer it."""
        id_ = req.get("id")
        op = req["op"]
        handler = getattr(self, "op_" + op)
        try:
            result = handler(conn, req)
        except RegistryError as e:
            conn.send(wire.error(id_, e.code, e.message))
            return
        except ConfigError as e:
            conn.send(wire.error(id_, "bad-request", str(e)))
            return
        except OSError as e:
            conn.send(wire.error(id_, "os-error", str(e)))
            return
        except Exception as e:  # noqa: BLE001 - a bug in one op must not cost the client its connection
            log.failure("{op} request from {conn} failed", op=op, conn=conn.conn_id)
            conn.send(wire.error(id_, "internal", f"{op}: {type(e).__name__}: {e}"))
            return
        if isinstance(result, defer.Deferred):
            result.addCallback(lambda r: conn.send(wire.ok(id_, **r)))
            result.addErrback(lambda f: conn.send(wire.error(id_, "internal", str(f.value))))
        else:
            conn.send(wire.ok(id_, **result))

    def op_hello(self, conn: APIProtocol, req: dict[str, Any]) -> dict[str, Any]:
        return {"version": VERSION, "host": self.daemon.config.host, "uid": conn.uid, "pid": conn.pid, "backends": self.daemon.backends()}

    op_ping = op_hello

    def op_register(self, conn: APIProtocol, req: dict[str, Any]) -> dict[str, Any]:
        name, type_, port = req["name"], req["type"], req["port"]
        txt = req.get("txt") or {}
        if req.get("on_demand") is not None:
            spec = parse_on_demand(req["on_demand"])
            if 0 < port < 1024 and conn.uid != ROOT_UID:
                # the daemon would bind it on the user's behalf: only root may have a privileged port
                raise RegistryError("denied", f"uid {conn.uid} may not have the daemon bind privileged port {port}")
            service = self.daemon.register_on_demand(conn.owner, name, type_, port, txt, spec)
            return {"service": service.to_json()}
        service, effects = self.registry.register(conn.owner, name, type_, port, txt)
        self.daemon.apply(effects)
        return {"service": service.to_json()}

    def op_withdraw(self, conn: APIProtocol, req: dict[str, Any]) -> dict[str, Any]:
        owner = self.registry.owner(req["name"], req["type"])
        found = self.registry.local(req["name"], req["type"])
        self.daemon.apply(self.registry.withdraw(conn.owner, req["name"], req["type"]))
        holder = self.daemon.connections.get(owner.conn) if owner is not None else None
        if holder is not None and holder is not conn and found is not None:
            # withdrawn from another connection (root, or the same uid): its holder must know
            holder.send(wire.encode({"event": "lost", "service": found[0].to_json(), "error": {
                "code": "withdrawn", "message": f"withdrawn by uid {conn.uid} (pid {conn.pid})"}}))
        return {}

    def _browse(self, type_: str, need: Need, wait: float) -> defer.Deferred[None] | None:
        """Start browsing a type the table says is new; a Deferred that fires once a first
        lookup of it has waited ``wait`` seconds for the LAN (also for a concurrent lookup of
        the same type), else None."""
        key = type_.lower()
        if self.daemon.mdns is None:
            return None
        if need is Need.NEW:
            self.daemon.mdns.browse(type_)
            d: defer.Deferred[None] = defer.Deferred()
            self.reactor.callLater(wait, d.callback, None)
            self._browse_started[key] = d
            d.addBoth(lambda r: self._browse_started.pop(key, None) and r)
            return d
        pending = self._browse_started.get(key)
        if need is Need.BROWSING and pending is not None:
            # a concurrent first lookup: wait for the same window
            d2: defer.Deferred[None] = defer.Deferred()

            def release(result: object) -> object:
                d2.callback(None)
                return result

            pending.addBoth(release)
            return d2
        return None

    def _limit_hit(self, key: Any, fmt: str, **kw: Any) -> None:
        """Log a client's hitting a limit: the first time, then at most once a minute per ``key``."""
        n = self._said.allow(key)
        if n is not None:
            log.warn(fmt, n=n, **kw)

    def _full(self, conn: APIProtocol) -> None:
        self._limit_hit("browsed-types", "browsing {max} service types, the limit ([limits] browsed-types): refusing watches "
                        "of new types and answering lookups of new types from the cache ({n} time(s); the first "
                        "from pid {pid}, uid {uid})", max=self.browsing.max_types,
                        pid=conn.pid, uid=conn.uid)

    def op_lookup(self, conn: APIProtocol, req: dict[str, Any]) -> Any:
        type_ = validate_type(req["type"])
        name = req.get("name")
        wait = req.get("wait", DEFAULT_LOOKUP_WAIT)
        if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= MAX_LOOKUP_WAIT:
            raise RegistryError("bad-request", f"wait must be 0..{MAX_LOOKUP_WAIT} seconds")
        need = self.browsing.lookup(type_, float(wait))
        self.daemon.schedule_unbrowse()
        if need is Need.FULL:
            self._full(conn)
            known = self.registry.lookup(type_, name)
            seen = {s.key for s in known}
            cached = [s for s in (self.daemon.mdns.cached(type_, name) if self.daemon.mdns else []) if s.key not in seen]
            return {"services": [s.to_json() for s in known + cached],
                    "warning": {"code": "too-many-browsed-types", "message":
                                f"answered from the cache without browsing {type_}: discoveryd already browses "
                                f"{len(self.browsing)} service types ([limits] browsed-types = "
                                f"{self.browsing.max_types} in the policy file)"}}

        def answer(_: Any = None) -> dict[str, Any]:
            return {"services": [s.to_json() for s in self.registry.lookup(type_, name)]}

        local_hit = bool(self.registry.lookup(type_, name)) and name is not None
        d = self._browse(type_, need, float(wait))
        if d is None or local_hit or wait == 0:
            return answer()
        if name is not None:
            d = self._until_known(service_key(name, type_), d)
        return d.addCallback(answer)

    def _until_known(self, key: tuple[str, str], window: defer.Deferred[None]) -> defer.Deferred[None]:
        """Fires when ``window`` does, or sooner once the name ``key`` is known: a lookup of one
        name need not wait for more answers (a browser started for it again finds the name in
        zeroconf's cache, or asks for it, within milliseconds)."""
        early: defer.Deferred[None] = defer.Deferred()
        self._name_waits.setdefault(key, []).append(early)

        def over(result: Any) -> Any:
            waiters = self._name_waits.get(key)
            if waiters is not None and early in waiters:
                waiters.remove(early)
                if not waiters:
                    del self._name_waits[key]
            if not early.called:
                early.callback(None)
            return result

        window.addBoth(over)
        return early

    def name_known(self, key: tuple[str, str]) -> None:
        """Another host's service ``key`` is known: lookups waiting for that name answer now."""
        for waiter in self._name_waits.pop(key, []):
            if not waiter.called:
                waiter.callback(None)

    def op_watch(self, conn: APIProtocol, req: dict[str, Any]) -> dict[str, Any]:
        type_ = validate_type(req["type"])
        try:
            need = self.browsing.watch(conn.conn_id, type_)
        except RegistryError as e:
            if e.code == "too-many-browsed-types":
                self._full(conn)
            else:
                self._limit_hit(("watches", conn.uid), "uid {uid} (pid {pid}) watches {max} service types on one "
                                "connection, the limit ([limits] watches-per-connection): refusing more ({n} time(s))",
                                uid=conn.uid, pid=conn.pid, max=self.browsing.max_watches)
            raise
        services = self.registry.watch(conn.conn_id, type_)
        self._browse(type_, need, 0)
        return {"services": [s.to_json() for s in services]}

    def op_unwatch(self, conn: APIProtocol, req: dict[str, Any]) -> dict[str, Any]:
        self.registry.unwatch(conn.conn_id, req["type"])
        self.browsing.unwatch(conn.conn_id, req["type"])
        self.daemon.schedule_unbrowse()
        return {}

    def op_list(self, conn: APIProtocol, req: dict[str, Any]) -> dict[str, Any]:
        services = []
        for s in self.registry.lookup():
            d = s.to_json()
            svc = self.daemon.on_demand.get(s.key)
            if svc is not None:
                d["on_demand"] = svc.status()
            services.append(d)
        leases = [
            {"name": n, "type": t, "owner_uid": uid, "expires_in": round(until - self.reactor.seconds(), 1)}
            for n, t, uid, until in self.registry.leases()
        ]
        return {"services": services, "leases": leases, "host": self.daemon.config.host, "backends": self.daemon.backends()}


__all__ = ["API", "DEFAULT_LOOKUP_WAIT", "MAX_LOOKUP_WAIT", "MAX_UNREAD", "REFUSED_LINGER", "VERSION",
           "APIFactory", "APIProtocol", "peer_credentials"]
