"""``discoveryd``: the local API on a unix socket, wired to the registry, mDNS and superserver.

Everything here is an adapter: requests are parsed by ``wire``, decided by ``registry``, and
the effects the registry returns are carried out (publish, notify, journal) in order.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pwd
import signal
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, interfaces, protocol
from twisted.logger import Logger
from zope.interface import implementer

from discovery import wire
from discovery.backends.etcd import EtcdAdapter
from discovery.backends.mdns import Limits, MdnsAdapter, Timing
from discovery.browsing import BrowseTable, Need
from discovery.config import (
    ConfigError,
    OnDemand,
    parse_on_demand,
    parse_policy,
    parse_service_file,
)
from discovery.etcdkeys import EtcdConfig
from discovery.guard import Throttle
from discovery.registry import (
    ETCD,
    LOCAL,
    ON_DEMAND,
    REMOTE,
    ROOT_UID,
    STATIC,
    Effect,
    Journal,
    Notify,
    Owner,
    Policy,
    Publish,
    Registry,
    RegistryError,
    Retract,
    Service,
    Unpublish,
    replay,
    service_key,
    validate_type,
)
from discovery.superserver import OnDemandService, bind_listener

log = Logger(namespace="discovery.daemon")

VERSION = 1
DEFAULT_LOOKUP_WAIT = 0.5  # s a first lookup of a type waits for answers from the LAN
MAX_LOOKUP_WAIT = 10.0
COMPACT_AFTER = 1000  # journal lines before a rewrite is considered
#: Replies and watch events a client may leave unread once its socket and the daemon's send
#: buffer for it are full; past this it is disconnected (its client library reconnects and
#: re-subscribes, and is told what changed in between).
MAX_UNREAD = 4 << 20
#: s a refused connection is kept half-closed for its client to read why
REFUSED_LINGER = 2.0


@dataclass
class DaemonConfig:
    socket_path: str
    interfaces: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    host: str = field(default_factory=socket.gethostname)
    state_dir: str | None = None
    services_dir: str | None = None
    policy_file: str | None = None
    grace: float = 30.0
    timing: Timing = field(default_factory=Timing)
    limits: Limits = field(default_factory=Limits)  # what mDNS keeps of other hosts' records
    mdns: bool = True
    etcd: EtcdConfig | None = None
    etcd_wait: float = 2.0  # s the start waits for etcd before serving without it


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
            self.daemon.handle(self, item.body)

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
        if self.daemon.connections.pop(self.conn_id, None) is not None:
            self.daemon.refused_uids.discard(self.uid)
        self.daemon.apply(self.daemon.registry.connection_lost(self.conn_id))
        self.daemon.browsing.connection_lost(self.conn_id)
        self.daemon.schedule_unbrowse()


class APIFactory(protocol.Factory):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def buildProtocol(self, addr: Any) -> APIProtocol:
        return APIProtocol(self.daemon)


class Daemon:
    def __init__(self, reactor: Any, config: DaemonConfig) -> None:
        self.reactor = reactor
        self.config = config
        policy = self._load_policy()
        self.registry = Registry(config.host, config.interfaces, now=reactor.seconds, policy=policy)
        self.connections: dict[str, APIProtocol] = {}
        self.on_demand: dict[tuple[str, str], OnDemandService] = {}
        self.mdns: MdnsAdapter | None = None
        self.etcd: EtcdAdapter | None = None
        self._journal: Any = None
        self._journal_lines = 0
        self._expiry: Any = None
        self._port: Any = None
        self._browse_started: dict[str, defer.Deferred[None]] = {}
        #: lookups of a name waiting for the LAN, woken as soon as the name is known
        self._name_waits: dict[tuple[str, str], list[defer.Deferred[None]]] = {}
        self.browsing = BrowseTable(reactor.seconds, max_types=policy.max_browsed_types,
                                    max_watches=policy.max_watches_per_connection, idle=policy.browse_idle)
        self._unbrowse: Any = None
        self._said = Throttle(reactor.seconds, 60.0)  # log lines about clients hitting a limit
        #: uids refused a connection since one of theirs last closed (logged once meanwhile)
        self.refused_uids: set[int] = set()

    # -- start and stop ------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        if cfg.mdns:
            self.mdns = MdnsAdapter(
                cfg.interfaces,
                cfg.host,
                on_upsert=lambda s: self._remote_upsert(s, REMOTE),
                on_remove=lambda n, t: self.apply(self.registry.remote_remove(n, t)),
                on_conflict=self._conflict,
                timing=cfg.timing,
                limits=cfg.limits,
                on_rename=self._renamed,
            )
            await defer.Deferred.fromFuture(asyncio.ensure_future(self.mdns.start()))
        if cfg.etcd is not None:
            self.etcd = EtcdAdapter(
                self.reactor,
                cfg.etcd,
                cfg.host,
                on_upsert=lambda s: self._remote_upsert(s, ETCD),
                on_remove=lambda n, t: self.apply(self.registry.remote_remove(n, t, ETCD)),
                on_conflict=self._conflict,
            )
            await self.etcd.start(cfg.etcd_wait)
        self._restore_journal()
        self.reload_static()
        self._listen()

    def _listen(self) -> None:
        path = self.config.socket_path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # a stale socket from a daemon that died
            else:
                raise SystemExit(f"discoveryd: another daemon is serving {path}")
            finally:
                probe.close()
        self._port = self.reactor.listenUNIX(path, APIFactory(self), mode=0o666)
        os.chmod(path, 0o666)  # anyone may connect; SO_PEERCRED says who they are

    async def stop(self) -> None:
        if self._port is not None:
            await self._port.stopListening()
            self._port = None
        for conn in list(self.connections.values()):
            conn.transport.loseConnection()  # type: ignore[union-attr]
        for svc in self.on_demand.values():
            svc.close()
        self.on_demand.clear()
        if self.mdns is not None:
            await defer.Deferred.fromFuture(asyncio.ensure_future(self.mdns.stop()))
        if self.etcd is not None:
            await self.etcd.stop()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        if self._unbrowse is not None and self._unbrowse.active():
            self._unbrowse.cancel()

    def admit(self, conn: APIProtocol) -> RegistryError | None:
        """Why a new API connection is refused (the policy's connection limits), or None."""
        of_uid = sum(1 for c in self.connections.values() if c.uid == conn.uid)
        refusal = self.registry.policy.connection_refusal(conn.uid, len(self.connections), of_uid)
        if refusal is not None and conn.uid not in self.refused_uids:
            self.refused_uids.add(conn.uid)
            log.warn("refusing connections from uid {uid} (pid {pid}): {msg}", uid=conn.uid, pid=conn.pid,
                     msg=refusal.message)
        return refusal

    # -- effects -----------------------------------------------------------------------------

    def apply(self, effects: Iterable[Effect]) -> None:
        for eff in effects:
            if isinstance(eff, Publish):
                if self.mdns:
                    self.mdns.publish(eff.service)
                if self.etcd:
                    self.etcd.publish(eff.service)
            elif isinstance(eff, Unpublish):
                if self.mdns:
                    self.mdns.unpublish(eff.service)
                if self.etcd:
                    self.etcd.unpublish(eff.service)
                if eff.service.source == ON_DEMAND:
                    svc = self.on_demand.pop(eff.service.key, None)
                    if svc:
                        svc.close()
            elif isinstance(eff, Retract):
                self._retract(eff.service)
            elif isinstance(eff, Notify):
                conn = self.connections.get(eff.watcher)  # type: ignore[arg-type]
                if conn is not None:
                    ev = eff.event
                    conn.send(wire.encode({"event": ev.kind, "watch": ev.service.type, "service": ev.service.to_json()}))
            elif isinstance(eff, Journal):
                self._journal_write(eff.record)

    def _remote_upsert(self, service: Service, origin: str) -> None:
        self.apply(self.registry.remote_upsert(service, origin))
        for waiter in self._name_waits.pop(service_key(service.name, service.type), []):
            if not waiter.called:
                waiter.callback(None)

    def _retract(self, service: Service) -> None:
        """A name an earlier run of the daemon published, kept for its owner and now dropped:
        other hosts still list it until they hear its goodbyes."""
        if self.mdns is None or self.registry.local(service.name, service.type):
            return
        log.info("{name}.{type}, kept for its owner since the restart, is dropped: goodbye sent",
                 name=service.name, type=service.type)
        self.mdns.retract(service)

    def _conflict(self, service: Service, message: str) -> None:
        """Another host holds the name: drop our claim and tell the owner."""
        found = self.registry.local(service.name, service.type)
        if found is None:
            return
        log.warn("{msg}", msg=message)
        owner = self.registry.owner(service.name, service.type)
        self.apply(self.registry.withdraw(Owner(None, ROOT_UID), service.name, service.type))
        event = wire.encode({"event": "conflict", "service": service.to_json(), "message": message})
        if owner is not None and owner.conn is not None:
            conn = self.connections.get(owner.conn)  # type: ignore[call-overload]
            if conn is not None:
                conn.send(event)
            return
        for conn in self.connections.values():  # a daemon-held (on-demand) name: whoever registered it
            if conn.pid == found[0].owner_pid:
                conn.send(event)

    def _renamed(self, host: str) -> None:
        """Our host name was another host's on the LAN: carry on under `host` (``hello`` says it)."""
        self.config.host = host
        self.apply(self.registry.rename_host(host))

    # -- journal -------------------------------------------------------------------------------

    def _journal_path(self) -> Path | None:
        return Path(self.config.state_dir) / "journal.jsonl" if self.config.state_dir else None

    def _restore_journal(self) -> None:
        path = self._journal_path()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        records: list[Any] = []
        if path.exists():
            for line in path.read_bytes().splitlines():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by a crash
        standing = replay(records)
        self._rewrite_journal(standing)
        for rec in self.registry.restore(standing, self.config.grace):
            if rec.get("source") == ON_DEMAND:
                extra = rec.get("extra", {})
                try:
                    spec = parse_on_demand(extra.get("on_demand", {}))
                    owner = Owner(None, int(rec.get("owner_uid", 0)), 0)
                    self._register_on_demand(
                        owner, rec["name"], rec["type"], int(rec["port"]), rec.get("txt", {}), spec, extra.get("run_as")
                    )
                except (ConfigError, RegistryError, OSError, KeyError) as e:
                    log.error("journal: cannot restore {name}: {e}", name=rec.get("name"), e=e)
                    self._journal_write({"op": "remove", "name": rec.get("name"), "type": rec.get("type")})
        self._schedule_expiry()

    def _rewrite_journal(self, records: Iterable[Any]) -> None:
        """Replace the journal by one record per standing registration (write, fsync, rename)."""
        path = self._journal_path()
        assert path is not None
        if self._journal is not None:
            self._journal.close()
        tmp = path.with_suffix(".tmp")
        n = 0
        with open(tmp, "w") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._journal = open(path, "a", buffering=1)  # noqa: SIM115 - open for the daemon's life
        self._journal_lines = n

    def _journal_write(self, record: Any) -> None:
        if self._journal is None:
            return
        self._journal.write(json.dumps(record) + "\n")
        self._journal_lines += 1
        # churn (register/withdraw cycles) must not grow the file without bound
        if self._journal_lines > COMPACT_AFTER and self._journal_lines > 4 * len(self.registry.local_services()):
            self._rewrite_journal(self.registry.journal_snapshot())

    def _schedule_expiry(self) -> None:
        nxt = self.registry.next_expiry()
        if nxt is None:
            return
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()

        def run() -> None:
            self._expiry = None
            self.apply(self.registry.expire())
            self._schedule_expiry()

        self._expiry = self.reactor.callLater(max(0.0, nxt - self.reactor.seconds()) + 0.01, run)

    # -- static services and policy ------------------------------------------------------------

    def _load_policy(self) -> Policy:
        if not self.config.policy_file:
            return Policy()
        text = Path(self.config.policy_file).read_text()
        return parse_policy(text, lambda user: pwd.getpwnam(user).pw_uid, self.config.policy_file)

    def reload_static(self) -> None:
        """Read the services directory again (at start and on SIGHUP)."""
        d = self.config.services_dir
        if not d:
            return
        specs = []
        ondemand: dict[tuple[str, str], tuple[Any, int]] = {}
        for path in sorted(Path(d).glob("*.toml")) if os.path.isdir(d) else []:
            try:
                s = parse_service_file(path.read_text(), str(path))
            except (ConfigError, OSError) as e:
                log.error("skipping {e}", e=e)
                continue
            extra: dict[str, Any] = {"file": str(path)}
            if s.on_demand:
                extra["on_demand"] = s.on_demand.to_json()
            specs.append((s.name, s.type, s.port, s.txt, extra))
            if s.on_demand:
                ondemand[(s.name.lower(), s.type.lower())] = (s.on_demand, s.port)
        # static on-demand sockets: bind the new ones before publishing
        for key, (spec, port) in ondemand.items():
            cur = self.on_demand.get(key)
            if cur is not None and cur.spec == spec and cur.port == port:
                continue
            if cur is not None:
                cur.close()
                del self.on_demand[key]
            try:
                self.on_demand[key] = OnDemandService(self.reactor, key[0], bind_listener(self._bind_address(), port), spec)
            except OSError as e:
                log.error("static {name}: cannot bind port {port}: {e}", name=key[0], port=port, e=e)
                specs = [sp for sp in specs if (sp[0].lower(), sp[1].lower()) != key]
        effects = self.registry.set_static(specs)
        for err in self.registry.last_static_errors:
            log.error("static service skipped: {err}", err=err)
        self.apply(effects)
        for key, svc in list(self.on_demand.items()):
            found = self.registry.local(*key)
            if found is None:
                svc.close()
                del self.on_demand[key]
            elif found[0].source == STATIC:
                svc.name = found[0].name
                svc.start()
        log.info("static services: {n} loaded from {d}", n=len(specs), d=d)

    def _bind_address(self) -> str:
        return self.config.interfaces[0] if len(self.config.interfaces) == 1 else ""

    # -- on-demand -------------------------------------------------------------------------------

    def _register_on_demand(
        self,
        owner: Owner,
        name: str,
        type_: str,
        port: int,
        txt: Any,
        spec: OnDemand,
        run_as: Any = None,
    ) -> Service:
        sock = bind_listener(self._bind_address(), port)
        port = sock.getsockname()[1]
        if run_as is None:
            run_as = [owner.uid, _gid_of(owner.uid)]
        extra = {"on_demand": spec.to_json(), "run_as": list(run_as)}
        try:
            service, effects = self.registry.register(
                Owner(None, owner.uid, owner.pid), name, type_, port, txt, source=ON_DEMAND, extra=extra
            )
        except RegistryError:
            sock.close()
            raise
        svc = OnDemandService(self.reactor, name, sock, spec, run_as=(int(run_as[0]), int(run_as[1])))
        self.on_demand[service.key] = svc
        svc.start()
        self.apply(effects)
        return service

    # -- requests ---------------------------------------------------------------------------

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

    def backends(self) -> list[dict[str, Any]]:
        """Each network backend and whether it works now (``up``, ``down`` with the reason)."""
        out: list[dict[str, Any]] = []
        if self.mdns is not None:
            out.append({"backend": "mdns", "state": "up", "interfaces": list(self.config.interfaces),
                        "browsers": self.mdns.browsers(), "max_browsed_types": self.browsing.max_types})
        if self.etcd is not None:
            out.append(self.etcd.status())
        return out

    def op_hello(self, conn: APIProtocol, req: dict[str, Any]) -> dict[str, Any]:
        return {"version": VERSION, "host": self.config.host, "uid": conn.uid, "pid": conn.pid, "backends": self.backends()}

    op_ping = op_hello

    def op_register(self, conn: APIProtocol, req: dict[str, Any]) -> dict[str, Any]:
        name, type_, port = req["name"], req["type"], req["port"]
        txt = req.get("txt") or {}
        if req.get("on_demand") is not None:
            spec = parse_on_demand(req["on_demand"])
            if 0 < port < 1024 and conn.uid != ROOT_UID:
                # the daemon would bind it on the user's behalf: only root may have a privileged port
                raise RegistryError("denied", f"uid {conn.uid} may not have the daemon bind privileged port {port}")
            service = self._register_on_demand(conn.owner, name, type_, port, txt, spec)
            return {"service": service.to_json()}
        service, effects = self.registry.register(conn.owner, name, type_, port, txt)
        self.apply(effects)
        return {"service": service.to_json()}

    def op_withdraw(self, conn: APIProtocol, req: dict[str, Any]) -> dict[str, Any]:
        owner = self.registry.owner(req["name"], req["type"])
        found = self.registry.local(req["name"], req["type"])
        self.apply(self.registry.withdraw(conn.owner, req["name"], req["type"]))
        holder = self.connections.get(owner.conn) if owner is not None else None  # type: ignore[call-overload]
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
        if self.mdns is None:
            return None
        if need is Need.NEW:
            self.mdns.browse(type_)
            d: defer.Deferred[None] = defer.Deferred()
            self.reactor.callLater(wait, d.callback, None)
            self._browse_started[key] = d
            d.addBoth(lambda r: self._browse_started.pop(key, None) and r)
            return d
        pending = self._browse_started.get(key)
        if need is Need.BROWSING and pending is not None:
            # a concurrent first lookup: wait for the same window
            d2: defer.Deferred[None] = defer.Deferred()
            pending.addBoth(lambda r: (d2.callback(None), r)[1])
            return d2
        return None

    def schedule_unbrowse(self) -> None:
        """Stop browsing, at the right time, the types nobody needs any more."""
        if self._unbrowse is not None and self._unbrowse.active():
            self._unbrowse.cancel()
        self._unbrowse = None
        for type_ in self.browsing.expire():
            if self.mdns is not None:
                self.mdns.unbrowse(type_)
            self.apply(self.registry.forget_remote(type_, REMOTE))
        nxt = self.browsing.next_expiry()
        if nxt is not None:
            self._unbrowse = self.reactor.callLater(max(0.0, nxt - self.reactor.seconds()) + 0.01,
                                                    self.schedule_unbrowse)

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
        self.schedule_unbrowse()
        if need is Need.FULL:
            self._full(conn)
            known = self.registry.lookup(type_, name)
            seen = {s.key for s in known}
            cached = [s for s in (self.mdns.cached(type_, name) if self.mdns else []) if s.key not in seen]
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
        self.schedule_unbrowse()
        return {}

    def op_list(self, conn: APIProtocol, req: dict[str, Any]) -> dict[str, Any]:
        services = []
        for s in self.registry.lookup():
            d = s.to_json()
            svc = self.on_demand.get(s.key)
            if svc is not None:
                d["on_demand"] = svc.status()
            services.append(d)
        leases = [
            {"name": n, "type": t, "owner_uid": uid, "expires_in": round(until - self.reactor.seconds(), 1)}
            for n, t, uid, until in self.registry.leases()
        ]
        return {"services": services, "leases": leases, "host": self.config.host, "backends": self.backends()}


def _gid_of(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid


def install_sighup(reactor: Any, daemon: Daemon) -> None:
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(daemon.reload_static))


__all__ = ["LOCAL", "APIProtocol", "Daemon", "DaemonConfig", "install_sighup", "peer_credentials"]
