"""The binding registry: names, owners, leases, watches and journal records, without I/O.

Theory of operation
-------------------
A *service* is keyed by (instance name, service type), compared case-insensitively as DNS
does. It comes from one of four sources:

- ``local``: a client connection registered it. It lives exactly as long as that connection
  (liveness by connection, like a TCP-based rpcbind); ``connection_lost`` withdraws it.
- ``on-demand``: the superserver owns the listening socket; the entry lives until withdrawn.
- ``static``: read from the services directory; it lives until the file goes away.
- ``remote``: learnt from mDNS on the LAN; the mDNS adapter adds and removes it.
- ``etcd``: learnt from an etcd cluster shared with other daemons; the etcd adapter adds
  and removes it.

Remote entries are kept per origin (``remote`` for mDNS, ``etcd``): when both backends know a
name, lookups answer with one entry, the etcd one first (it carries owner information and
its lifetime is a lease, not a cache TTL), and removing it from one origin leaves the other.

Every mutation returns a list of *effects* (frozen dataclasses): ``Publish``/``Unpublish``
for the mDNS adapter, ``Notify`` for a watcher, ``Journal`` for the state file. The adapters
carry them out; this module never touches a socket, a reactor or the clock (``now`` is
injected), which keeps every rule here testable with plain values.

Leases: after a daemon restart the journal brings back the names clients held. Each comes
back as a *lease* held for its former owner's uid until ``now + grace``; the owner's client
reconnects and re-registers it, anyone else is refused until the lease runs out (``expire``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

LOCAL = "local"
ON_DEMAND = "on-demand"
STATIC = "static"
REMOTE = "remote"  # mDNS on the LAN
ETCD = "etcd"
SOURCES = (LOCAL, ON_DEMAND, STATIC, REMOTE, ETCD)
REMOTE_ORIGINS = (ETCD, REMOTE)  # preference order when both know a name

ROOT_UID = 0
MAX_NAME = 63  # one DNS label (RFC 6763 §4.1.1: instance names up to 63 octets)
MAX_TXT = 1300  # keep the TXT rdata inside one mDNS packet with room for SRV/A


class RegistryError(Exception):
    """A request the registry refuses; ``code`` is stable for programs, the text for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Key = tuple[str, str]


def service_key(name: str, type_: str) -> Key:
    """DNS compares names case-insensitively (RFC 6762 §16), so the registry does too."""
    return (name.lower(), normalize_type(type_).lower())


def normalize_type(type_: str) -> str:
    """Accept ``_svc._tcp``, ``_svc._tcp.`` and ``_svc._tcp.local.``; return ``_svc._tcp``."""
    t = type_.strip()
    t = t.removesuffix(".")
    if t.lower().endswith(".local"):
        t = t[: -len(".local")]
    return t


def validate_type(type_: str) -> str:
    """Return the normalised DNS-SD service type or raise ``RegistryError('bad-type')``."""
    t = normalize_type(type_)
    parts = t.split(".")
    ok = (
        len(parts) == 2
        and parts[1] in ("_tcp", "_udp")
        and parts[0].startswith("_")
        and 2 <= len(parts[0]) <= 16  # RFC 6335 §5.1: service names up to 15 characters
        and all(c.isalnum() or c == "-" for c in parts[0][1:])
        and not parts[0][1:].startswith("-")
    )
    if not ok:
        raise RegistryError("bad-type", f"service type {type_!r} is not of the form _name._tcp or _name._udp")
    return t


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name.encode()) > MAX_NAME:
        raise RegistryError("bad-name", f"instance name must be 1..{MAX_NAME} bytes of UTF-8")
    if "." in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise RegistryError("bad-name", f"instance name {name!r} may not contain dots or control characters")
    return name


def validate_port(port: object) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise RegistryError("bad-port", f"port must be an integer 0..65535, not {port!r}")
    return port


def validate_txt(txt: object) -> tuple[tuple[str, str], ...]:
    if txt is None:
        return ()
    if not isinstance(txt, Mapping):
        raise RegistryError("bad-txt", "txt must be an object of string keys and values")
    items: list[tuple[str, str]] = []
    size = 0
    for k, v in txt.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k or "=" in k:
            raise RegistryError("bad-txt", f"txt entry {k!r}={v!r}: keys and values must be strings, keys non-empty without '='")
        size += len(k.encode()) + len(v.encode()) + 2
        items.append((k, v))
    if size > MAX_TXT:
        raise RegistryError("bad-txt", f"txt record too large ({size} > {MAX_TXT} bytes)")
    return tuple(sorted(items))


@dataclass(frozen=True)
class Service:
    """One service record as lookups return it."""

    name: str
    type: str
    port: int
    host: str
    addresses: tuple[str, ...] = ()
    txt: tuple[tuple[str, str], ...] = ()
    source: str = LOCAL
    owner_uid: int | None = None
    owner_pid: int | None = None

    @property
    def key(self) -> Key:
        return service_key(self.name, self.type)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "host": self.host,
            "addresses": list(self.addresses),
            "port": self.port,
            "txt": dict(self.txt),
            "source": self.source,
        }
        if self.owner_uid is not None:
            d["owner_uid"] = self.owner_uid
        if self.owner_pid is not None:
            d["owner_pid"] = self.owner_pid
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Service:
        return cls(
            name=d["name"],
            type=d["type"],
            port=int(d["port"]),
            host=d.get("host", ""),
            addresses=tuple(d.get("addresses", ())),
            txt=tuple(sorted(dict(d.get("txt", {})).items())),
            source=d.get("source", LOCAL),
            owner_uid=d.get("owner_uid"),
            owner_pid=d.get("owner_pid"),
        )


@dataclass(frozen=True)
class Owner:
    """Who holds a registration: a connection (None for daemon-held ones) and its SO_PEERCRED."""

    conn: Hashable | None
    uid: int
    pid: int = 0


# --- events and effects -------------------------------------------------------------------


@dataclass(frozen=True)
class Added:
    service: Service
    kind: str = "added"


@dataclass(frozen=True)
class Updated:
    service: Service
    kind: str = "updated"


@dataclass(frozen=True)
class Removed:
    service: Service
    kind: str = "removed"


Event = Added | Updated | Removed


@dataclass(frozen=True)
class Publish:
    """Announce (or re-announce after a change) a service on the LAN."""

    service: Service


@dataclass(frozen=True)
class Unpublish:
    """Withdraw a service from the LAN (mDNS goodbye)."""

    service: Service


@dataclass(frozen=True)
class Retract:
    """Take back from the LAN a service that an earlier run of the daemon published (a lease
    dropped after a restart): other hosts may still hold its records (mDNS goodbye)."""

    service: Service


@dataclass(frozen=True)
class Notify:
    watcher: Hashable
    event: Event


@dataclass(frozen=True)
class Journal:
    """A record to append to the state journal (see ``replay``)."""

    record: Mapping[str, Any]


Effect = Publish | Unpublish | Retract | Notify | Journal


# --- policy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """Which uids may register which service types. Root may always register.

    ``rules`` maps a normalised, lower-case type to the uids allowed; a type not listed
    falls back to ``default_allow``.
    """

    rules: Mapping[str, frozenset[int]] = field(default_factory=dict)
    default_allow: bool = True
    #: Limits on what one uid may hold (root is exempt, as from the rules): registrations
    #: (client and on-demand ones), connections to the API, and connections over all uids.
    max_registrations_per_uid: int = 256
    max_connections_per_uid: int = 128
    max_connections: int = 512
    #: What the daemon follows on the network for its clients (discovery/browsing.py). These
    #: bind root too: they bound the daemon's memory and the LAN's query traffic, not a share.
    max_browsed_types: int = 256
    max_watches_per_connection: int = 64
    browse_idle: int = 60  # s a type is still browsed after its last lookup or watcher

    def allows(self, uid: int, type_: str) -> bool:
        if uid == ROOT_UID:
            return True
        allowed = self.rules.get(normalize_type(type_).lower())
        if allowed is None:
            return self.default_allow
        return uid in allowed

    def connection_refusal(self, uid: int, total: int, of_uid: int) -> RegistryError | None:
        """Whether one more API connection from ``uid`` is refused, given ``total`` open now,
        ``of_uid`` of them that uid's."""
        if uid == ROOT_UID:
            return None
        if of_uid >= self.max_connections_per_uid:
            return RegistryError("too-many-connections", f"uid {uid} already has {of_uid} connections to discoveryd "
                                 f"([limits] connections-per-uid = {self.max_connections_per_uid} in the policy file)")
        if total >= self.max_connections:
            return RegistryError("too-many-connections", f"discoveryd already serves {total} connections "
                                 f"([limits] connections = {self.max_connections} in the policy file)")
        return None


# --- the registry --------------------------------------------------------------------------


@dataclass
class _Entry:
    service: Service
    owner: Owner
    extra: Mapping[str, Any]  # on-demand command etc.; journaled as is


@dataclass
class _Lease:
    record: Mapping[str, Any]
    uid: int
    until: float


class Registry:
    """The daemon's state. ``host``/``addresses`` are what local services are published as."""

    def __init__(
        self,
        host: str,
        addresses: Iterable[str] = (),
        now: Callable[[], float] = lambda: 0.0,
        policy: Policy | None = None,
    ) -> None:
        self.host = host
        self.addresses = tuple(addresses)
        self.now = now
        self.policy = policy or Policy()
        self._local: dict[Key, _Entry] = {}
        self._remote: dict[Key, dict[str, Service]] = {}  # key -> origin -> service
        self._leases: dict[Key, _Lease] = {}
        self._watches: dict[Hashable, set[str]] = {}
        self.last_static_errors: list[str] = []
        self._by_type: dict[str, set[Key]] = {}  # type -> keys, local and remote: lookups stay O(answer)
        self._held_by_uid: dict[int, int] = {}

    def _set_local(self, key: Key, entry: _Entry) -> None:
        if key not in self._local:
            uid = entry.owner.uid
            self._held_by_uid[uid] = self._held_by_uid.get(uid, 0) + 1
        self._local[key] = entry
        self._by_type.setdefault(key[1], set()).add(key)

    def _pop_local(self, key: Key) -> _Entry:
        entry = self._local.pop(key)
        self._unindex(key)
        uid = entry.owner.uid
        self._held_by_uid[uid] -= 1
        if not self._held_by_uid[uid]:
            del self._held_by_uid[uid]
        return entry

    def held_by(self, uid: int) -> int:
        """How many registrations ``uid`` holds (client and on-demand; static ones are root's)."""
        return self._held_by_uid.get(uid, 0)

    def _unindex(self, key: Key) -> None:
        if key in self._local or key in self._remote:
            return
        keys = self._by_type.get(key[1])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_type[key[1]]

    # -- registration ------------------------------------------------------------------

    def register(
        self,
        owner: Owner,
        name: str,
        type_: str,
        port: int,
        txt: Mapping[str, str] | None = None,
        source: str = LOCAL,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[Service, list[Effect]]:
        """Add or update a registration. Raises ``RegistryError`` when refused.

        The same connection registering the same name again updates it (port, txt). Any
        other registration of a name that a live owner holds is refused: names are claimed,
        not stolen, as rpcbind refuses a second set() of a program number.
        """
        name = validate_name(name)
        type_ = validate_type(type_)
        port = validate_port(port)
        txt_t = validate_txt(txt)
        if source not in (LOCAL, ON_DEMAND, STATIC):
            raise RegistryError("bad-source", f"unknown source {source!r}")
        if not self.policy.allows(owner.uid, type_):
            raise RegistryError("denied", f"uid {owner.uid} may not register services of type {type_} (policy)")
        key = service_key(name, type_)
        lease = self._leases.get(key)
        if lease is not None:
            if lease.until <= self.now():
                self._leases.pop(key)
            elif owner.uid != lease.uid and owner.uid != ROOT_UID:
                raise RegistryError(
                    "conflict",
                    f"{name}.{type_} is reserved for uid {lease.uid} until its owner reconnects "
                    f"(for {lease.until - self.now():.0f} s more)",
                )
        service = Service(
            name=name,
            type=type_,
            port=port,
            host=self.host,
            addresses=self.addresses,
            txt=txt_t,
            source=source,
            owner_uid=owner.uid,
            owner_pid=owner.pid,
        )
        entry = _Entry(service, owner, dict(extra or {}))
        old = self._local.get(key)
        effects: list[Effect] = []
        if old is not None:
            same_holder = old.owner.conn is not None and old.owner.conn == owner.conn
            if not same_holder:
                raise RegistryError(
                    "conflict",
                    f"{old.service.name}.{old.service.type} is already registered by uid "
                    f"{old.owner.uid} pid {old.owner.pid} ({old.service.source})",
                )
            if old.service.source != source:
                raise RegistryError("conflict", f"{name}.{type_} is already registered as {old.service.source}")
            self._set_local(key, entry)
            if old.service == service and old.extra == entry.extra:
                return service, []
            effects.append(Publish(service))
            effects.extend(self._notify(Updated(service)))
        else:
            limit = self.policy.max_registrations_per_uid
            if owner.uid != ROOT_UID and self.held_by(owner.uid) >= limit:
                raise RegistryError(
                    "too-many-registrations",
                    f"uid {owner.uid} already holds {limit} registrations "
                    f"([limits] registrations-per-uid = {limit} in the policy file)",
                )
            self._set_local(key, entry)
            self._leases.pop(key, None)
            effects.append(Publish(service))
            hidden = self._remote_view(key)
            effects.extend(self._notify(Updated(service) if hidden else Added(service)))
        if source != STATIC:  # static services come back from their files, not the journal
            effects.append(Journal(self._journal_add(entry)))
        return service, effects

    def withdraw(self, requester: Owner, name: str, type_: str) -> list[Effect]:
        """Remove a registration on request: its owner's uid or root only."""
        key = service_key(name, normalize_type(type_))
        entry = self._local.get(key)
        if entry is None:
            lease = self._leases.get(key)
            if lease is not None and requester.uid in (lease.uid, ROOT_UID):
                self._leases.pop(key)
                return self._drop_lease(lease)
            raise RegistryError("not-found", f"{name}.{normalize_type(type_)} is not registered here")
        if requester.uid not in (entry.owner.uid, ROOT_UID):
            raise RegistryError(
                "denied", f"uid {requester.uid} may not withdraw {name}.{type_}, owned by uid {entry.owner.uid}"
            )
        return self._remove(key)

    def connection_lost(self, conn: Hashable) -> list[Effect]:
        """The owner's connection closed: withdraw what it held, at once."""
        effects: list[Effect] = []
        for key in [k for k, e in self._local.items() if e.owner.conn == conn and e.service.source == LOCAL]:
            effects.extend(self._remove(key))
        self._watches.pop(conn, None)
        return effects

    def _remove(self, key: Key) -> list[Effect]:
        entry = self._pop_local(key)
        s = entry.service
        effects: list[Effect] = [Unpublish(s)]
        if s.source != STATIC:
            effects.append(Journal({"op": "remove", "name": s.name, "type": s.type}))
        hidden = self._remote_view(key)
        effects.extend(self._notify(Updated(hidden) if hidden else Removed(s)))
        return effects

    def rename_host(self, host: str) -> list[Effect]:
        """The host is now called `host` (its name was taken on the LAN): republish under it."""
        self.host = host
        effects: list[Effect] = []
        for entry in self._local.values():
            entry.service = replace(entry.service, host=host)
            effects.append(Publish(entry.service))
            effects.extend(self._notify(Updated(entry.service)))
        return effects

    # -- static services -------------------------------------------------------------------

    def set_static(self, services: Iterable[tuple[str, str, int, Mapping[str, str], Mapping[str, Any]]]) -> list[Effect]:
        """Replace the whole static set (after a reload): add new, update changed, drop gone.

        A static file naming a service that a client already holds does not win: it is
        skipped and explained in ``last_static_errors``.
        """
        root = Owner(conn=None, uid=ROOT_UID, pid=0)
        wanted: dict[Key, tuple[str, str, int, Mapping[str, str], Mapping[str, Any]]] = {}
        for spec in services:
            wanted[service_key(spec[0], spec[1])] = spec
        effects: list[Effect] = []
        self.last_static_errors = []
        for key in [k for k, e in self._local.items() if e.service.source == STATIC and k not in wanted]:
            effects.extend(self._remove(key))
        for key, (name, type_, port, txt, extra) in wanted.items():
            old = self._local.get(key)
            if old is not None and old.service.source == STATIC:
                if (old.service.port, old.service.txt, old.extra) == (port, validate_txt(txt), dict(extra)):
                    continue
                self._pop_local(key)
            elif old is not None:
                self.last_static_errors.append(f"{name}.{type_}: already registered by uid {old.owner.uid}")
                continue
            # a static entry belongs to the daemon: conn=None, and an update replaces it wholesale
            try:
                _, eff = self.register(root, name, type_, port, txt, source=STATIC, extra=extra)
            except RegistryError as e:
                self.last_static_errors.append(f"{name}.{type_}: {e.message}")
                continue
            effects.extend(eff)
        return effects

    # -- leases (journal restore) ---------------------------------------------------------------

    def restore(self, records: Iterable[Mapping[str, Any]], grace: float) -> list[Mapping[str, Any]]:
        """Take the journal's surviving records after a restart.

        Client registrations become leases for their owner's uid for ``grace`` seconds;
        on-demand records are returned for the caller to re-create (it must bind sockets).
        """
        daemon_held: list[Mapping[str, Any]] = []
        for rec in records:
            if rec.get("source") == LOCAL:
                key = service_key(rec["name"], rec["type"])
                self._leases[key] = _Lease(rec, int(rec.get("owner_uid", ROOT_UID)), self.now() + grace)
            else:
                daemon_held.append(rec)
        return daemon_held

    def expire(self) -> list[Effect]:
        """Drop leases whose owners did not come back in time."""
        now = self.now()
        effects: list[Effect] = []
        for key, lease in list(self._leases.items()):
            if lease.until <= now:
                del self._leases[key]
                effects.extend(self._drop_lease(lease))
        return effects

    def _drop_lease(self, lease: _Lease) -> list[Effect]:
        rec = lease.record
        effects: list[Effect] = [Journal({"op": "remove", "name": rec["name"], "type": rec["type"]})]
        try:
            service = replace(Service.from_json(rec), host=self.host, addresses=self.addresses)
        except (KeyError, TypeError, ValueError):
            return effects  # a record too damaged to name what was published
        return [Retract(service), *effects]

    def next_expiry(self) -> float | None:
        return min((lease.until for lease in self._leases.values()), default=None)

    def leases(self) -> list[tuple[str, str, int, float]]:
        return [(lease.record["name"], lease.record["type"], lease.uid, lease.until) for lease in self._leases.values()]

    # -- remote services (from the mDNS and etcd adapters) -----------------------------------

    def _remote_view(self, key: Key) -> Service | None:
        by_origin = self._remote.get(key)
        if not by_origin:
            return None
        for origin in REMOTE_ORIGINS:
            if origin in by_origin:
                return by_origin[origin]
        return None

    def remote_upsert(self, service: Service, origin: str = REMOTE) -> list[Effect]:
        """A service learnt from ``origin`` (``remote`` = mDNS, ``etcd``) appeared or changed."""
        if origin not in REMOTE_ORIGINS:
            raise ValueError(f"unknown remote origin {origin!r}")
        service = replace(service, source=origin, type=normalize_type(service.type))
        key = service.key
        by_origin = self._remote.setdefault(key, {})
        if by_origin.get(origin) == service:
            return []
        before = self._remote_view(key)
        by_origin[origin] = service
        self._by_type.setdefault(key[1], set()).add(key)
        after = self._remote_view(key)
        if key in self._local or after == before:  # our own announcement coming back, or shadowed
            return []
        return self._notify(Updated(service) if before else Added(service)) if after is service else []

    def remote_remove(self, name: str, type_: str, origin: str = REMOTE) -> list[Effect]:
        key = service_key(name, type_)
        by_origin = self._remote.get(key)
        if not by_origin or origin not in by_origin:
            return []
        before = self._remote_view(key)
        del by_origin[origin]
        if not by_origin:
            del self._remote[key]
        self._unindex(key)
        after = self._remote_view(key)
        if key in self._local or after == before or before is None:
            return []
        return self._notify(Updated(after) if after else Removed(before))

    def forget_remote(self, type_: str, origin: str = REMOTE) -> list[Effect]:
        """Drop every entry of ``type_`` learnt from ``origin``: the adapter stopped following
        the type, so nothing would tell us when they go."""
        t = normalize_type(type_).lower()
        effects: list[Effect] = []
        for key in sorted(self._by_type.get(t, ())):
            service = self._remote.get(key, {}).get(origin)
            if service is not None:
                effects += self.remote_remove(service.name, service.type, origin)
        return effects

    def remote_services(self, origin: str) -> list[Service]:
        return [by[origin] for by in self._remote.values() if origin in by]

    # -- queries ------------------------------------------------------------------------------

    def lookup(self, type_: str | None = None, name: str | None = None) -> list[Service]:
        """Local entries first, then remote ones not shadowed by a local entry of the same name."""
        t = normalize_type(type_).lower() if type_ else None
        n = name.lower() if name else None

        keys: Iterable[Key]
        if t is not None and n is not None:
            keys = [(n, t)]
        elif t is not None:
            keys = sorted(self._by_type.get(t, ()))
        else:
            keys = sorted(set(self._local) | set(self._remote))
        if n is not None and t is None:
            keys = [k for k in keys if k[0] == n]
        out = [self._local[k].service for k in keys if k in self._local]
        for k in keys:
            if k not in self._local:
                view = self._remote_view(k)
                if view is not None:
                    out.append(view)
        return out

    def local(self, name: str, type_: str) -> tuple[Service, Mapping[str, Any]] | None:
        e = self._local.get(service_key(name, type_))
        return (e.service, e.extra) if e else None

    def owner(self, name: str, type_: str) -> Owner | None:
        """Who holds a local registration (its connection, uid and pid)."""
        e = self._local.get(service_key(name, type_))
        return e.owner if e else None

    def local_services(self) -> list[Service]:
        return [e.service for e in self._local.values()]

    # -- watches ------------------------------------------------------------------------------

    def watch(self, watcher: Hashable, type_: str) -> list[Service]:
        """Subscribe ``watcher`` to a type; returns what is known now (sent as ``added``)."""
        self._watches.setdefault(watcher, set()).add(normalize_type(type_).lower())
        return self.lookup(type_)

    def unwatch(self, watcher: Hashable, type_: str | None = None) -> None:
        if type_ is None:
            self._watches.pop(watcher, None)
        else:
            types = self._watches.get(watcher)
            if types is not None:
                types.discard(normalize_type(type_).lower())

    def watched_types(self) -> set[str]:
        return {t for types in self._watches.values() for t in types}

    def _notify(self, event: Event) -> list[Effect]:
        t = event.service.type.lower()
        return [Notify(w, event) for w, types in self._watches.items() if t in types]

    # -- journal --------------------------------------------------------------------------------

    def journal_snapshot(self) -> list[Mapping[str, Any]]:
        """The records a compacted journal holds: what ``replay`` of the full journal gives."""
        recs: list[Mapping[str, Any]] = [
            self._journal_add(e) for e in self._local.values() if e.service.source != STATIC
        ]
        recs.extend(lease.record for lease in self._leases.values())
        return recs

    def _journal_add(self, entry: _Entry) -> dict[str, Any]:
        rec = {"op": "add", **entry.service.to_json()}
        rec.pop("host", None)
        rec.pop("addresses", None)
        if entry.extra:
            rec["extra"] = dict(entry.extra)
        return rec


def replay(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Fold journal records (``add``/``remove``) into the registrations still standing.

    Unknown or malformed records are skipped: a journal cut short by a crash must not keep
    the daemon from starting.
    """
    state: dict[Key, Mapping[str, Any]] = {}
    for rec in records:
        try:
            key = service_key(str(rec["name"]), str(rec["type"]))
            op = rec["op"]
        except (KeyError, TypeError, AttributeError):
            continue
        if op == "add":
            state[key] = rec
        elif op == "remove":
            state.pop(key, None)
    return list(state.values())
