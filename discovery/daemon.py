"""``discoveryd``: the daemon that owns the registry, the network backends and the
superserver, and wires them to the local API.

Everything here is an adapter: the API (``api``) runs each request against the registry, and
the effects the registry returns are carried out here, in order (publish to the backends,
notify watchers, append to the journal); static service files and on-demand sockets are read
and bound here too.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import socket
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from discovery import journal, wire
from discovery.api import API, APIFactory, APIProtocol
from discovery.backends.etcd import EtcdAdapter
from discovery.backends.mdns import Limits, MdnsAdapter, Timing
from discovery.browsing import BrowseTable
from discovery.config import (
    ConfigError,
    OnDemand,
    parse_on_demand,
    parse_policy,
    parse_service_file,
)
from discovery.etcdkeys import EtcdConfig
from discovery.journalfile import JournalFile
from discovery.registry import (
    ETCD,
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
)
from discovery.superserver import OnDemandService, bind_listener

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorFromThreads

    from discovery.reactor import IDaemonReactor

log = Logger(namespace="discovery.daemon")


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


class Daemon:
    """One ``discoveryd``: the registry, the backends that publish it (mDNS, etcd), the
    on-demand sockets, the journal, and the API socket whose ops (``api.API``) act on them."""

    def __init__(self, reactor: IDaemonReactor, config: DaemonConfig) -> None:
        self.reactor = reactor
        self.config = config
        policy = self._load_policy()
        self.registry = Registry(config.host, config.interfaces, now=reactor.seconds, policy=policy)
        #: By connection id, which the registry knows watchers and owners by
        self.connections: dict[Hashable, APIProtocol] = {}
        self.on_demand: dict[tuple[str, str], OnDemandService] = {}
        self.mdns: MdnsAdapter | None = None
        self.etcd: EtcdAdapter | None = None
        self.journal: JournalFile | None = None
        self._expiry: Any = None
        self._port: Any = None
        self.browsing = BrowseTable(reactor.seconds, max_types=policy.max_browsed_types,
                                    max_watches=policy.max_watches_per_connection, idle=policy.browse_idle)
        self._unbrowse: Any = None
        #: uids refused a connection since one of theirs last closed (logged once meanwhile)
        self.refused_uids: set[int] = set()
        self.api = API(self)

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
        if self.journal is not None:
            self.journal.close()
            self.journal = None
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

    def connection_closed(self, conn: APIProtocol) -> None:
        """An API connection is gone: its registrations and watches go with it."""
        if self.connections.pop(conn.conn_id, None) is not None:
            self.refused_uids.discard(conn.uid)
        self.apply(self.registry.connection_lost(conn.conn_id))
        self.browsing.connection_lost(conn.conn_id)
        self.schedule_unbrowse()

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
                conn = self.connections.get(eff.watcher)
                if conn is not None:
                    ev = eff.event
                    conn.send(wire.encode({"event": ev.kind, "watch": ev.service.type, "service": ev.service.to_json()}))
            elif isinstance(eff, Journal):
                self._journal_write(eff.record)

    def _remote_upsert(self, service: Service, origin: str) -> None:
        self.apply(self.registry.remote_upsert(service, origin))
        self.api.name_known(service_key(service.name, service.type))

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
            conn = self.connections.get(owner.conn)
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

    def _restore_journal(self) -> None:
        if not self.config.state_dir:
            return
        journal_file = JournalFile(Path(self.config.state_dir) / "journal.jsonl")
        standing = replay(journal_file.read())
        journal_file.rewrite(standing)
        self.journal = journal_file
        for rec in self.registry.restore(standing, self.config.grace):
            if rec.get("source") == ON_DEMAND:
                extra = rec.get("extra", {})
                try:
                    spec = parse_on_demand(extra.get("on_demand", {}))
                    owner = Owner(None, int(rec.get("owner_uid", 0)), 0)
                    self.register_on_demand(
                        owner, rec["name"], rec["type"], int(rec["port"]), rec.get("txt", {}), spec, extra.get("run_as")
                    )
                except (ConfigError, RegistryError, OSError, KeyError) as e:
                    log.error("journal: cannot restore {name}: {e}", name=rec.get("name"), e=e)
                    self._journal_write({"op": "remove", "name": rec.get("name"), "type": rec.get("type")})
        self._schedule_expiry()

    def _journal_write(self, record: Any) -> None:
        if self.journal is None:
            return
        self.journal.append(record)
        if journal.needs_compaction(self.journal.lines, len(self.registry.local_services())):
            self.journal.rewrite(self.registry.journal_snapshot())

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

    def register_on_demand(
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

    # -- backends ---------------------------------------------------------------------------

    def backends(self) -> list[dict[str, Any]]:
        """Each network backend and whether it works now (``up``, ``down`` with the reason)."""
        out: list[dict[str, Any]] = []
        if self.mdns is not None:
            out.append({"backend": "mdns", "state": "up", "interfaces": list(self.config.interfaces),
                        "browsers": self.mdns.browsers(), "max_browsed_types": self.browsing.max_types})
        if self.etcd is not None:
            out.append(self.etcd.status())
        return out

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


def _gid_of(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid


def install_sighup(reactor: IReactorFromThreads, daemon: Daemon) -> None:
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(daemon.reload_static))


__all__ = ["Daemon", "DaemonConfig", "install_sighup"]
