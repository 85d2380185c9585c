"""The mDNS / DNS-SD adapter: publishes the registry's local services and browses remote ones.

It runs python-zeroconf's ``AsyncZeroconf`` on the reactor's asyncio loop (never the
blocking API), bound only to the ``--interface`` addresses.

Why python-zeroconf's ``async_register_service`` takes ~1.2-1.6 s before another host can
see a service: it waits a random 150-250 ms, then sends three probes 500 ms apart
(``_CHECK_TIME``; RFC 6762 §8.1 says 250 ms), and only then sends the first announcement;
a browser elsewhere learns nothing before that.

What this adapter does instead ("optimistic announce", after IPv6's Optimistic DAD, RFC
4429, which lets a node use an address while DAD runs but forbids it to override other
nodes' caches):

1. at once, one unsolicited response carrying PTR, SRV, TXT and A *without* the cache-flush
   bit, so it can never evict an existing owner's records from anyone's cache
   (RFC 6762 §10.2); browsers elsewhere see the service within one packet's time;
2. meanwhile, RFC 6762 §8.1 probing exactly: a random 0-250 ms delay, three probes 250 ms
   apart carrying our SRV/TXT in the Authority section, and 250 ms of listening after;
3. no conflict: the service enters zeroconf's registry (so it answers queries and defends
   its name) and is announced with the cache-flush bit at least one second after the
   optimistic packet (§6 one-second rule), then once more a second later (§8.3);
4. conflict (another host answers for the name with different SRV/TXT data, with the
   cache-flush bit, i.e. an established owner; or two optimistic claims at once, where the
   lexicographically later data wins as in §8.2): we send goodbyes for our SRV/TXT only
   (never the shared PTR, which the owner still uses) and report the conflict.

Every announcement and repeated goodbye waits for its instance's §6 slot
(discovery/pacing.py) and carries whatever is current then; a first goodbye goes at once and
takes the slot. A client that registers and withdraws in a loop makes at most an
announcement and its goodbye a second per name, and a budget over all names spreads large
bursts.

Probes are sent as QM, not QU: several daemons on one host share port 5353 through
SO_REUSEPORT and a unicast answer would reach only one of them; a probe's answer is
multicast immediately by zeroconf anyway (§8.1 says SHOULD, not MUST, for QU).

What comes in from the LAN passes discovery/guard.py's rules before zeroconf caches it (a
subclass of zeroconf's record manager screens each response): our own packets looping back
are recognised by their bytes and dropped, TTLs are clamped, oversized TXT records dropped,
each type's remote instances capped, and so are the names cached and the records of a name; an address record for our host name from another host
is a host-name conflict (we defend the name or rename, ``NAME-2``), and another host's
SRV/TXT for an instance we own is answered with our own announcement.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from twisted.logger import Logger
from zeroconf import (
    DNSAddress,
    DNSIncoming,
    DNSOutgoing,
    DNSPointer,
    DNSQuestion,
    DNSService,
    DNSText,
    IPVersion,
    RecordUpdate,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf._handlers.record_manager import RecordManager
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
from zeroconf.const import _DNS_PTR_MIN_TTL

from discovery.guard import (
    DEFAULT_MAX_PER_TYPE,
    MAX_TTL,
    MAX_TXT,
    Decision,
    HostName,
    InstanceCap,
    SentPackets,
    Throttle,
    clamp_ttl,
    host_decision,
    record_decision,
)
from discovery.pacing import Pacer
from discovery.registry import REMOTE, Service, normalize_type

log = Logger(namespace="discovery.mdns")

_CLASS_IN = 1
_CLASS_UNIQUE = 0x8000
_FLAGS_QR_RESPONSE = 0x8000
_FLAGS_AA = 0x0400
_FLAGS_QR_QUERY = 0
_TYPE_A = 1
_TYPE_PTR = 12
_TYPE_TXT = 16
_TYPE_SRV = 33
_TYPE_ANY = 255

_ADDRESSES = " addresses"  # the pacer's key for this host's address records (no instance's)
HOST_TTL = 120  # RFC 6762 §10: 120 s for records with a host name
OTHER_TTL = 4500  # and 75 min for the others


@dataclass
class Timing:
    """RFC 6762 §8 timing, in seconds; tests and benchmarks may shorten it."""

    probe_random_delay: float = 0.25
    probe_interval: float = 0.25
    #: §6: a record is multicast at most once per this many seconds
    announce_gap: float = 1.0
    resolve_timeout: float = 1.5
    #: the budget over all records: packets a second, and how many may go at once
    rate: float = 20.0
    burst: int = 40


@dataclass
class Limits:
    """What the adapter keeps of other hosts' records (discovery/guard.py)."""

    max_per_type: int = DEFAULT_MAX_PER_TYPE
    max_ttl: int = MAX_TTL
    max_txt: int = MAX_TXT
    #: names in zeroconf's cache past which records of new names are dropped (a LAN's real
    #: ones are a few thousand; a flood of made-up names must not grow the daemon)
    max_names: int = 20000
    #: records of one name (other than PTRs, capped per type above) past which new ones are
    #: dropped: a name holds a few (SRV, TXT, one address per interface), and zeroconf keeps
    #: records of one name that differ in data side by side until their TTLs run out
    max_per_name: int = 16


def fqdn_type(type_: str) -> str:
    return normalize_type(type_) + ".local."


def make_info(service: Service, server: str) -> ServiceInfo:
    t = fqdn_type(service.type)
    return ServiceInfo(
        t,
        f"{service.name}.{t}",
        port=service.port,
        properties=dict(service.txt),
        server=server,
        addresses=[socket.inet_aton(a) for a in service.addresses if _is_v4(a)],
        host_ttl=HOST_TTL,
        other_ttl=OTHER_TTL,
    )


def _is_v4(a: str) -> bool:
    try:
        socket.inet_aton(a)
        return "." in a
    except OSError:
        return False


class _Publication:
    def __init__(self, service: Service, info: ServiceInfo) -> None:
        self.service = service
        self.info = info
        self.task: asyncio.Task[None] | None = None
        self.registered = False  # in zeroconf's registry: answers queries, defends the name


class _ScreenedRecords(RecordManager):
    """zeroconf's record manager, with the adapter's screen before anything is cached.

    python-zeroconf offers no public hook ahead of its cache (listeners see records after
    the cache decided to keep them), so this subclasses its ``RecordManager`` and edits the
    answer list of the incoming message in place; tests/discovery/test_lan_conflicts.py
    fails if an upgrade changes either.
    """

    def __init__(self, zc: Zeroconf, adapter: MdnsAdapter) -> None:
        super().__init__(zc)
        self.adapter = adapter

    def async_updates_from_response(self, msg: DNSIncoming) -> None:
        if self.adapter.sent.is_own(msg.data):
            return  # our own multicast, looped back
        answers = msg.answers()
        answers[:] = self.adapter._screen(answers, msg.source)  # (the list zeroconf goes on with)
        if answers:
            super().async_updates_from_response(msg)


class _Zeroconf(Zeroconf):
    """python-zeroconf, remembering every packet it sends (to tell its echo) and screening
    every response it receives."""

    def __init__(self, adapter: MdnsAdapter, **kw: Any) -> None:
        super().__init__(**kw)
        # (in place before the sockets' listeners exist: they are made in a task on the loop)
        self.record_manager = _ScreenedRecords(self, adapter)
        self._adapter = adapter

    def async_send(self, out: DNSOutgoing, addr: str | None = None, port: int = 5353,
                   v6_flow_scope: Any = (), transport: Any = None) -> None:
        for packet in out.packets():
            self._adapter.sent.sent(packet)
        super().async_send(out, addr, port, v6_flow_scope, transport)


class MdnsAdapter:
    """Carries out ``Publish``/``Unpublish`` and feeds remote services back through callbacks."""

    def __init__(
        self,
        interfaces: list[str],
        host: str,
        on_upsert: Callable[[Service], None],
        on_remove: Callable[[str, str], None],
        on_conflict: Callable[[Service, str], None],
        timing: Timing | None = None,
        limits: Limits | None = None,
        on_rename: Callable[[str], None] = lambda new: None,
    ) -> None:
        self.interfaces = interfaces
        self.server = host + ".local."
        self.on_upsert = on_upsert
        self.on_remove = on_remove
        self.on_conflict = on_conflict
        self.on_rename = on_rename
        self.timing = timing or Timing()
        self.limits = limits or Limits()
        clock = _loop_time
        self.host = HostName(host, clock)
        self.sent = SentPackets(clock)
        self.cap = InstanceCap(clock, self.limits.max_per_type)
        self._said = Throttle(clock, 60.0)  # log lines about other hosts' records
        self._defending: set[str] = set()  # instances (or " addresses") with a defence queued
        self._stale: set[tuple[str, str]] = set()  # (type, instance) to resolve again
        self._host_probe: asyncio.Task[None] | None = None
        self.azc: AsyncZeroconf | None = None
        self._pubs: dict[str, _Publication] = {}  # key: lower-case fqdn instance name
        self._browsers: dict[str, AsyncServiceBrowser] = {}
        self._browse_types: dict[str, str] = {}  # lower-case type -> as first browsed
        self._ending: set[AsyncServiceBrowser] = set()  # browsers being cancelled
        self._conflicts: dict[str, str] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self.pacer = Pacer(lambda: asyncio.get_running_loop().time(), self.timing.announce_gap,
                           self.timing.rate, self.timing.burst)
        #: instances whose records the network may hold: announced since their last goodbye
        self._heard: set[str] = set()
        #: goodbyes still to send (waiting for their slot), by instance
        self._byes: dict[str, tuple[asyncio.Task[None], ServiceInfo]] = {}

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        zc = _Zeroconf(self, interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        self.azc = AsyncZeroconf(zc=zc)
        await zc.async_wait_for_start()
        self._host_probe = self._spawn(self._probe_host())

    async def stop(self) -> None:
        """Goodbyes for everything we published, then close."""
        if self.azc is None:
            return
        zc = self.azc.zeroconf
        leaving = [info for _, info in self._byes.values()]
        for bye, _ in self._byes.values():
            bye.cancel()
        for pub in self._pubs.values():
            if pub.task:
                pub.task.cancel()
            leaving.append(pub.info)
        for info in leaving:  # (at once, not paced: the daemon is going)
            zc.async_send(zc.generate_service_broadcast(info, 0, broadcast_addresses=False))
        self._pubs.clear()
        for b in [*self._browsers.values(), *self._ending]:
            if not b.done:
                await b.async_cancel()
        self._browsers.clear()
        for t in list(self._tasks):
            t.cancel()
        zc.registry.async_remove(zc.registry.async_get_service_infos())
        await asyncio.sleep(0.05)  # let the goodbye datagrams leave before the sockets close
        await self.azc.async_close()
        self.azc = None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.failure("mdns task failed", failure=_exc_from(task))

    # -- publishing ----------------------------------------------------------------------

    def publish(self, service: Service) -> None:
        if self.azc is None:
            return
        info = make_info(service, self.server)
        key = info.key
        bye = self._byes.pop(key, None)
        if bye is not None:  # not sent yet: the new announcement replaces it
            bye[0].cancel()
        old = self._pubs.get(key)
        if old is not None and old.task:
            old.task.cancel()
        if old is not None and old.registered:
            old.service, old.info = service, info
            self.azc.zeroconf.registry.async_update(info)
            old.task = self._spawn(self._announce(old))
            return
        pub = _Publication(service, info)
        self._pubs[key] = pub
        pub.task = self._spawn(self._claim(pub))

    def unpublish(self, service: Service) -> None:
        if self.azc is None:
            return
        key = make_info(service, self.server).key
        pub = self._pubs.pop(key, None)
        if pub is None:
            return
        if pub.task:
            pub.task.cancel()
        if pub.registered:
            self.azc.zeroconf.registry.async_remove(pub.info)
            pub.registered = False
        if key in self._heard:  # (else nobody holds its records: nothing to take back)
            self._byes[key] = (self._spawn(self._goodbye(pub.info)), pub.info)

    def retract(self, service: Service) -> None:
        """Goodbyes for an instance this host does not hold now but may have announced before
        (a name kept for its owner across a restart, then dropped); a `publish` of it before
        they go cancels them."""
        if self.azc is None:
            return
        info = make_info(service, self.server)
        if info.key not in self._pubs and info.key not in self._byes:
            self._byes[info.key] = (self._spawn(self._goodbye(info)), info)

    async def _goodbye(self, info: ServiceInfo) -> None:
        """Goodbyes for an instance's PTR/SRV/TXT: at once, because the network holds records
        that are now wrong, then once more in the instance's next slot (§10.1 suggests a
        goodbye may be repeated; one repeat covers a lost datagram). Address records stay:
        other services of this host still use them, and they expire on their own 120 s TTL
        (zeroconf does the same when it shares a server)."""
        assert self.azc is not None
        zc = self.azc.zeroconf
        try:
            for again in (False, True):
                await self._slot(info.key, wait_for_key=again)
                zc.async_send(zc.generate_service_broadcast(info, 0, broadcast_addresses=False))
                self._heard.discard(info.key)
        finally:
            bye = self._byes.get(info.key)
            if bye is not None and bye[0] is asyncio.current_task():
                del self._byes[info.key]

    async def _slot(self, key: str, wait_for_key: bool = True) -> None:
        """Wait until the records of instance `key` may be multicast (RFC 6762 §6; not when
        `wait_for_key` is false) and the budget over all instances allows a packet, and take
        that slot."""
        pacer = self.pacer
        while wait_for_key and (wait := pacer.wait_for(key)) > 0:
            await asyncio.sleep(wait)
        wait = pacer.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        pacer.sent(key)

    def _records(self, info: ServiceInfo, unique: bool, addresses: bool = True) -> list[Any]:
        cls = _CLASS_IN | (_CLASS_UNIQUE if unique else 0)
        recs: list[Any] = [
            DNSPointer(info.type, _TYPE_PTR, _CLASS_IN, OTHER_TTL, info.name),
            DNSService(info.name, _TYPE_SRV, cls, HOST_TTL, 0, 0, info.port or 0, self.server),
            DNSText(info.name, _TYPE_TXT, cls, OTHER_TTL, info.text),
        ]
        for addr in info.addresses if addresses else ():
            recs.append(DNSAddress(self.server, _TYPE_A, cls, HOST_TTL, addr))
        return recs

    def _addresses_due(self) -> bool:
        """Whether this host's address records go in the announcement sent now (§6: not
        when another announcement carried them less than a second ago)."""
        return self.pacer.due(_ADDRESSES)

    async def _claim(self, pub: _Publication) -> None:
        assert self.azc is not None
        zc = self.azc.zeroconf
        info = pub.info
        key = info.key
        self._conflicts.pop(key, None)
        await self._slot(key)
        out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
        for rec in self._records(info, unique=False, addresses=self._addresses_due()):
            out.add_answer_at_time(rec, 0)
        zc.async_send(out)
        self._heard.add(key)

        t = self.timing
        await asyncio.sleep(random.uniform(0, t.probe_random_delay))
        for i in range(3):
            if i:
                await asyncio.sleep(t.probe_interval)
            if key in self._conflicts:
                break
            probe = DNSOutgoing(_FLAGS_QR_QUERY)
            probe.add_question(DNSQuestion(info.name, _TYPE_ANY, _CLASS_IN))
            for rec in self._records(info, unique=True)[1:3]:
                probe.authorities.append(rec)  # add_authorative_answer() is typed for PTR only
            zc.async_send(probe)
        if key not in self._conflicts:
            await asyncio.sleep(t.probe_interval)
        if key in self._conflicts:
            message = self._conflicts.pop(key)
            if self._pubs.get(key) is pub:
                del self._pubs[key]
            bye = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
            for rec in self._records(info, unique=False)[1:3]:
                bye.add_answer_at_time(rec.__class__(*_with_ttl0(rec)), 0)
            zc.async_send(bye)
            self._heard.discard(key)
            self.on_conflict(pub.service, message)
            return
        zc.registry.async_add(info)
        pub.registered = True
        await self._announce(pub)

    async def _announce(self, pub: _Publication) -> None:
        """Announce an instance's current records with the cache-flush bit, twice, each in
        its slot: a second apart at least (§8.3, and §8.4 for an update)."""
        assert self.azc is not None
        zc = self.azc.zeroconf
        for _ in range(2):
            await self._slot(pub.info.key)
            zc.async_send(zc.generate_service_broadcast(pub.info, None,
                                                        broadcast_addresses=self._addresses_due()))
            self._heard.add(pub.info.key)

    def _check_conflict(self, rec: Any) -> None:
        """Another host's SRV for a name we are probing (its TXT alone says nothing of who holds it)."""
        if rec.type != _TYPE_SRV or rec.ttl == 0:
            return
        pub = self._pubs.get(rec.key)
        if pub is None or pub.registered or pub.task is None or pub.task.done():
            return
        mine = (self.server.lower(), pub.info.port)
        theirs = (rec.server.lower(), rec.port)
        if mine == theirs:
            return  # the same data is no conflict (§9)
        if not rec.unique and _rdata(mine) > _rdata(theirs):
            return  # a simultaneous optimistic claim that loses the tie-break (§8.2)
        self._conflicts[rec.key] = (
            f"{pub.service.name}.{pub.service.type} is already in use on the network (by {rec.server})"
        )

    # -- what other hosts send -----------------------------------------------------------

    def _screen(self, records: list[Any], source: Any) -> list[Any]:
        """The records of another host's response that zeroconf may cache (TTLs clamped in
        place); notes conflicts with our names on the way."""
        lim, cap = self.limits, self.cap
        cached = self.azc.zeroconf.cache.cache if self.azc is not None else {}
        server = self.server.lower()
        kept = []
        fresh: dict[str, int] = {}  # name -> records new to the cache kept from this response
        for rec in records:
            t = rec.type
            if rec.ttl > lim.max_ttl:
                rec.ttl = clamp_ttl(rec.ttl, lim.max_ttl)
            if (rec.ttl and len(cached) >= lim.max_names and rec.key not in cached
                    and rec.key not in self._pubs and rec.key != server):
                self._say(("names", _ip(source)), "mDNS: the cache holds {max} names: dropped records "
                          "of new ones from {source} ({n} time(s))", max=lim.max_names, source=_ip(source))
                continue
            if rec.ttl and t != _TYPE_PTR and rec not in (held := cached.get(rec.key, {})):
                fresh[rec.key] = n = fresh.get(rec.key, 0) + 1  # (the cache takes them after the screen)
                if (n + len(held) > lim.max_per_name
                        and n + sum(1 for r in held if r.type != _TYPE_PTR) > lim.max_per_name):
                    self._say(("records", _ip(source)), "mDNS: {name} holds {max} records: dropped new ones from "
                              "{source} ({n} time(s))", max=lim.max_per_name, source=_ip(source), name=rec.name)
                    continue
            if t == _TYPE_TXT and len(rec.text) > lim.max_txt:
                self._say(("txt", _ip(source)), "mDNS: dropped {n} TXT record(s) over {max} bytes "
                          "from {source} ({name}: {size} bytes)", max=lim.max_txt, source=_ip(source),
                          name=rec.name, size=len(rec.text))
                continue
            if t == _TYPE_PTR:
                if not rec.ttl:
                    cap.remove(rec.key, rec.alias.lower())
                elif not cap.admit(rec.key, rec.alias.lower(), max(rec.ttl, _DNS_PTR_MIN_TTL)):
                    continue
            elif t == _TYPE_SRV or t == _TYPE_TXT:
                type_key = _type_of(rec.key)
                if (type_key is not None and rec.ttl and not cap.admitted(type_key, rec.key)
                        and cap.count(type_key) >= cap.limit):
                    continue
                pub = self._pubs.get(rec.key)
                if pub is not None:
                    self._check_owned(pub, rec, source)
                elif rec.ttl and type_key in self._browsers:
                    self._mark_stale(type_key, rec.name)
            elif t == _TYPE_A and rec.ttl and rec.key == server:
                self._check_host(rec, source)
            kept.append(rec)
        for type_key, n in cap.reports:
            if type_key == "*":
                log.warn("mDNS: more than {max} service types on the network: ignoring new ones "
                         "({n} refused)", max=cap.max_types, n=n)
            else:
                log.warn("mDNS: more than {max} instances of {type} on the network: ignoring the rest "
                         "({n} refused; limit: --max-remote-per-type)", max=cap.limit, type=type_key, n=n)
        cap.reports.clear()
        return kept

    def _say(self, key: Any, fmt: str, **kw: Any) -> None:
        """Log about other hosts' records at most once a minute per `key`."""
        n = self._said.allow(key)
        if n is not None:
            log.warn(fmt, n=n, **kw)

    def _check_owned(self, pub: _Publication, rec: Any, source: Any) -> None:
        if not pub.registered:
            self._check_conflict(rec)
            return
        if rec.type == _TYPE_SRV:
            ours: Any = (self.server.lower(), pub.info.port)
            theirs: Any = (rec.server.lower(), rec.port)
        else:
            ours, theirs = pub.info.text, rec.text
        if record_decision(ours, theirs, goodbye=rec.ttl == 0, established=True) is Decision.DEFEND:
            what = "a goodbye for" if rec.ttl == 0 else "its own " + ("SRV" if rec.type == _TYPE_SRV else "TXT") + " for"
            self._say(("own", rec.key, _ip(source)), "mDNS: {source} sent {what} {name}, which this host holds: "
                      "answering with our own records (RFC 6762 §9; {n} time(s))", source=_ip(source),
                      what=what, name=rec.name)
            self._defend(pub.info.key, self._defend_instance(pub))

    def _defend(self, key: str, coro: Any) -> None:
        if key in self._defending:
            coro.close()
            return
        self._defending.add(key)
        self._spawn(coro).add_done_callback(lambda _: self._defending.discard(key))

    async def _defend_instance(self, pub: _Publication) -> None:
        """Our records for an instance, with the cache-flush bit, in its next two slots: the
        second is more than a second after the rival's, so it flushes it everywhere (§10.2)."""
        assert self.azc is not None
        zc = self.azc.zeroconf
        for _ in range(2):
            await self._slot(pub.info.key)
            if self._pubs.get(pub.info.key) is not pub or not pub.registered:
                return
            zc.async_send(zc.generate_service_broadcast(pub.info, None, broadcast_addresses=self._addresses_due()))
            self._heard.add(pub.info.key)

    def _own_addresses(self) -> list[bytes]:
        return [socket.inet_aton(a) for a in self.interfaces if _is_v4(a)]

    async def _probe_host(self) -> None:
        """RFC 6762 §8.1 for the host name: three probes 250 ms apart, then 250 ms of
        listening. A host that holds the name answers for it if it publishes anything (zeroconf
        answers address queries for the servers of its services); `_check_host` then renames
        us. Services are not held back meanwhile: a rename republishes them."""
        assert self.azc is not None
        zc = self.azc.zeroconf
        t = self.timing
        await asyncio.sleep(random.uniform(0, t.probe_random_delay))
        for i in range(3):
            if i:
                await asyncio.sleep(t.probe_interval)
            probe = DNSOutgoing(_FLAGS_QR_QUERY)
            # (type A, not §8.1's ANY: python-zeroconf answers ANY with no address records)
            probe.add_question(DNSQuestion(self.server, _TYPE_A, _CLASS_IN))
            for addr in self._own_addresses():
                rec: Any = DNSAddress(self.server, _TYPE_A, _CLASS_IN | _CLASS_UNIQUE, HOST_TTL, addr)
                probe.authorities.append(rec)  # (typed for PTR only)
            zc.async_send(probe)
        await asyncio.sleep(t.probe_interval)

    def _check_host(self, rec: Any, source: Any) -> None:
        probing = self._host_probe is not None and not self._host_probe.done()
        decision = host_decision(self._own_addresses(), rec.address, probing=probing)
        theirs = socket.inet_ntoa(rec.address) if len(rec.address) == 4 else repr(rec.address)
        if decision is Decision.DEFEND:
            self._say(("host", theirs), "mDNS: {source} claims this host's name {name} for {addr}: keeping it "
                      "(the later address wins, RFC 6762 §8.2) and defending it ({n} time(s))",
                      source=_ip(source), name=self.server, addr=theirs)
            self._defend(_ADDRESSES, self._defend_host())
        elif decision is Decision.RENAME and self.host.may_rename():
            self._rename(_ip(source), theirs)

    async def _defend_host(self) -> None:
        assert self.azc is not None
        zc = self.azc.zeroconf
        for _ in range(2):
            await self._slot(_ADDRESSES)
            out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
            for addr in self._own_addresses():
                out.add_answer_at_time(DNSAddress(self.server, _TYPE_A, _CLASS_IN | _CLASS_UNIQUE, HOST_TTL, addr), 0)
            zc.async_send(out)

    def _rename(self, source: str, theirs: str) -> None:
        """Our host name is another host's: take the next one (RFC 6762 §9, as Avahi does);
        the daemon republishes our services under it."""
        assert self.azc is not None
        old = self.server
        new = self.host.rename()
        self.server = new + ".local."
        log.warn("mDNS: host name {old} is in use on the network (by {source}, address {addr}); "
                 "this host is now {new} (RFC 6762 §9)", old=old, source=source, addr=theirs, new=self.server)
        bye = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
        for addr in self._own_addresses():  # our addresses no longer carry the old name
            bye.add_answer_at_time(DNSAddress(old, _TYPE_A, _CLASS_IN, 0, addr), 0)
        self.azc.zeroconf.async_send(bye)
        if self._host_probe is not None:
            self._host_probe.cancel()
        self._host_probe = self._spawn(self._probe_host())
        self.on_rename(new)

    # -- browsing --------------------------------------------------------------------------

    def browse(self, type_: str) -> bool:
        """Start browsing a type if not already; returns True when it is new."""
        if self.azc is None:
            return False
        t = fqdn_type(type_)
        if t.lower() in self._browsers:
            return False
        self._browse_types[t.lower()] = t
        self._browsers[t.lower()] = AsyncServiceBrowser(self.azc.zeroconf, [t], handlers=[self._on_change])
        return True

    def unbrowse(self, type_: str) -> None:
        """Stop browsing a type: its browser stops querying and nothing more is reported of it
        (the daemon drops what it learnt; zeroconf's cache keeps the records until their TTLs
        run out, within its limits)."""
        key = fqdn_type(type_).lower()
        browser = self._browsers.pop(key, None)
        self._browse_types.pop(key, None)
        if browser is not None:
            self._ending.add(browser)
            self._spawn(browser.async_cancel()).add_done_callback(lambda _: self._ending.discard(browser))

    def browsers(self) -> int:
        """Browsers running in zeroconf now (each follows one type): its own count, so a
        browser this adapter forgot but never stopped still counts."""
        if self.azc is None:
            return 0
        return sum(1 for lsn in self.azc.zeroconf.record_manager.listeners if isinstance(lsn, AsyncServiceBrowser))

    def cached(self, type_: str, name: str | None = None) -> list[Service]:
        """The instances of a type that zeroconf's cache holds complete records of now, without
        browsing or asking the LAN (what other hosts announced, or answered earlier)."""
        if self.azc is None:
            return []
        zc = self.azc.zeroconf
        t = fqdn_type(type_)
        now = asyncio.get_running_loop().time() * 1000
        want = f"{name}.{t}".lower() if name is not None else None
        out = []
        ptrs: list[Any] = zc.cache.async_all_by_details(t, _TYPE_PTR, _CLASS_IN)
        for ptr in ptrs:
            alias = ptr.alias
            if ptr.is_expired(now) or (want is not None and alias.lower() != want):
                continue
            info = AsyncServiceInfo(t, alias)
            if info.load_from_cache(zc, now) and info.port is not None:
                out.append(replace(_service_of(info, t, alias), source=REMOTE))
        return out

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            inst = name[: -len(service_type) - 1] if name.lower().endswith(service_type.lower()) else name
            self.on_remove(inst, normalize_type(service_type))
            return
        self._mark_stale(service_type.lower(), name)

    def _mark_stale(self, type_key: str, name: str) -> None:
        """Resolve an instance again once the packet at hand is in the cache (zeroconf's
        browser says nothing when a record comes back that it still holds, e.g. ours
        after a rival's)."""
        if not self._stale:
            asyncio.get_running_loop().call_soon(self._resolve_stale)
        self._stale.add((type_key, name))

    def _resolve_stale(self) -> None:
        stale, self._stale = self._stale, set()
        for type_key, name in stale:
            browsed = self._browse_types.get(type_key)
            if browsed is not None:
                self._spawn(self._resolve(browsed, name))

    async def _resolve(self, service_type: str, name: str) -> None:
        assert self.azc is not None
        info = AsyncServiceInfo(service_type, name)
        zc = self.azc.zeroconf
        now = asyncio.get_running_loop().time() * 1000
        complete = info.load_from_cache(zc, now)
        # the newest SRV and TXT: after a rival's record and our owner's answer, a cache
        # holds both for a second (§10.2), and the answer is the one that counts
        newest = [r for r in (_newest(zc, name, _TYPE_SRV, now), _newest(zc, name, _TYPE_TXT, now)) if r]
        if newest:
            info.async_update_records(zc, now, [RecordUpdate(r, None) for r in newest])
        if not complete and not await info.async_request(zc, int(self.timing.resolve_timeout * 1000)):
            return
        if info.port is None or service_type.lower() not in self._browsers:
            return  # (or no longer browsed: nothing would report its removal)
        self.on_upsert(_service_of(info, service_type, name))


def _service_of(info: AsyncServiceInfo, service_type: str, name: str) -> Service:
    """A resolved instance as the registry holds it."""
    inst = name[: -len(service_type) - 1] if name.lower().endswith(service_type.lower()) else name
    txt = {}
    for k, v in (info.properties or {}).items():
        try:
            txt[k.decode()] = (v or b"").decode()
        except UnicodeDecodeError:
            continue
    host = (info.server or "").removesuffix(".").removesuffix(".local")
    return Service(
        name=inst,
        type=normalize_type(service_type),
        port=info.port or 0,
        host=host,
        addresses=tuple(info.parsed_addresses(IPVersion.V4Only)),
        txt=tuple(sorted(txt.items())),
    )


def _newest(zc: Any, name: str, type_: int, now: float) -> Any:
    """The record last received, not counting those a cache-flush marked to expire (zeroconf
    gives them a TTL of one second from the flush, §10.2)."""
    live = [r for r in zc.cache.get_all_by_details(name, type_, _CLASS_IN) if not r.is_expired(now)]
    return max(live, key=lambda r: (r.ttl != 1, r.created), default=None)


def _type_of(key: str) -> str | None:
    """The service type (``_x._tcp.local.``) of an instance's lower-case name, if it is one."""
    labels = key.split(".")
    if len(labels) >= 5 and labels[-3] in ("_tcp", "_udp") and labels[-2] == "local" and not labels[-1]:
        return ".".join(labels[-4:])
    return None


def _ip(source: Any) -> str:
    return str(source[0]) if isinstance(source, tuple) and source else str(source)


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _rdata(t: tuple[Any, ...]) -> bytes:
    return repr(t).encode()


def _with_ttl0(rec: Any) -> tuple[Any, ...]:
    if rec.type == _TYPE_SRV:
        return (rec.name, rec.type, rec.class_, 0, rec.priority, rec.weight, rec.port, rec.server)
    return (rec.name, rec.type, rec.class_, 0, rec.text)


def _exc_from(task: asyncio.Future[Any]) -> Any:
    from twisted.python.failure import Failure

    exc = task.exception()
    return Failure(exc, type(exc), exc.__traceback__) if exc else None
