"""What the mDNS adapter accepts from the LAN, and how it answers name conflicts; no I/O.

Theory of operation
-------------------
Every mDNS response another host sends passes through these rules before python-zeroconf
caches it (the adapter hooks zeroconf's record manager):

- **Own echo** (`SentPackets`): a daemon hears its own multicasts back. They are recognised
  by their bytes (every packet this daemon sent in the last few seconds), not by the host
  name in them: two hosts may carry the same name (cloned machines), and several daemons on
  one host share its address and port 5353, so neither the name nor the source address tells
  whose packet it is. Identical bytes from someone else would carry identical records, which
  conflict with nothing.
- **Limits**: a TTL is clamped to `MAX_TTL` (RFC 6762 §10's 75 minutes, the longest TTL any
  record of a well-behaved responder carries); a TXT record over `MAX_TXT` bytes is dropped
  (RFC 6763 §6.2: larger ones are "not recommended"; the registry refuses them locally too);
  and a service type holds at most `limit` remote instances, out of at most `MAX_TYPES`
  types (`InstanceCap`), so a host announcing 20,000 fake instances fills one type's quota
  and no more. Refusals are reported
  once per type and period (`Throttle`), not per packet.
- **Host name** (`HostName`, `host_decision`): an address record for our host name with an
  address that is not ours is a conflict (RFC 6762 §9). Before the name is ours (probing) we
  lose at once; afterwards both hosts see the conflict and settle it alike with §8.2's rule,
  the lexicographically later address wins: the winner defends (announces its addresses),
  the loser renames itself ``NAME-2``, ``NAME-3``, ... as Avahi does. §8.1's rate limit
  applies: after 15 conflicts in 10 s, at most one rename per 5 s.
- **Owned service names** (`record_decision`): another host's SRV or TXT for an instance we
  have announced as ours, with other data, is answered with our own announcement (§9), and
  so is a goodbye for our exact record sent by someone else (Avahi refreshes the same way),
  so third hosts' caches end up holding our records.
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable

from discovery.registry import MAX_NAME, MAX_TXT

__all__ = [
    "DEFAULT_MAX_PER_TYPE",
    "MAX_TTL",
    "MAX_TXT",
    "MAX_TYPES",
    "Decision",
    "HostName",
    "InstanceCap",
    "SentPackets",
    "Throttle",
    "alternative_host_name",
    "clamp_ttl",
    "host_decision",
    "record_decision",
]

MAX_TTL = 4500  # RFC 6762 §10: 75 minutes
DEFAULT_MAX_PER_TYPE = 1000
MAX_TYPES = 1000  # service types with remote instances (a LAN's real ones are a few dozen)


def clamp_ttl(ttl: int, limit: int = MAX_TTL) -> int:
    """The TTL a received record is kept for."""
    return min(ttl, limit)


def alternative_host_name(name: str) -> str:
    """The name to try after `name` lost a conflict: ``x`` → ``x-2``, ``x-2`` → ``x-3``
    (Avahi's ``avahi_alternative_host_name``), kept within one DNS label."""
    base, sep, n = name.rpartition("-")
    if sep and base and n.isdigit() and not n.startswith("0"):
        number = int(n) + 1
    else:
        base, number = name, 2
    suffix = f"-{number}"
    room = MAX_NAME - len(suffix.encode())
    while len(base.encode()) > room:
        base = base[:-1]
    return base + suffix


class Decision(enum.Enum):
    """What to do about a received record that concerns a name of ours."""

    NONE = "none"  # no conflict
    DEFEND = "defend"  # announce our records again
    RENAME = "rename"  # give the host name up (host names only)
    LOSE = "lose"  # give the service name up (while probing)


def host_decision(ours: Collection[bytes], theirs: bytes, probing: bool) -> Decision:
    """Another host's address record `theirs` for our host name, whose addresses are `ours`."""
    if theirs in ours or not ours:
        return Decision.NONE
    if probing:
        return Decision.RENAME
    return Decision.DEFEND if max(ours) > theirs else Decision.RENAME


def record_decision(ours: Hashable, theirs: Hashable, goodbye: bool, established: bool) -> Decision:
    """Another host's record (`theirs`: its data, `goodbye`: TTL 0) for one of our instance
    names, whose data is `ours`; `established` once probing found the name free."""
    if goodbye:
        return Decision.DEFEND if established and theirs == ours else Decision.NONE
    if theirs == ours:
        return Decision.NONE
    return Decision.DEFEND if established else Decision.LOSE


class SentPackets:
    """Digests of the packets this daemon multicast in the last `keep` seconds (at most
    `limit` of them), to recognise them when they loop back."""

    def __init__(self, clock: Callable[[], float], keep: float = 5.0, limit: int = 1024) -> None:
        self.clock = clock
        self.keep = keep
        self.limit = limit
        self._sent: OrderedDict[bytes, float] = OrderedDict()

    @staticmethod
    def _digest(data: bytes) -> bytes:
        return hashlib.blake2b(data, digest_size=16).digest()

    def sent(self, data: bytes) -> None:
        d = self._digest(data)
        self._sent.pop(d, None)
        self._sent[d] = self.clock() + self.keep
        self._trim()

    def is_own(self, data: bytes) -> bool:
        self._trim()
        return self._digest(data) in self._sent

    def _trim(self) -> None:
        now = self.clock()
        sent = self._sent
        while sent and (len(sent) > self.limit or next(iter(sent.values())) <= now):
            sent.popitem(last=False)


class Throttle:
    """Lets an event of each key through at most once per `period` seconds, counting the
    ones held back (so a log line can say how many it stands for)."""

    def __init__(self, clock: Callable[[], float], period: float, limit: int = 1024) -> None:
        self.clock = clock
        self.period = period
        self.limit = limit
        self._next: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """None while `key` is held back; else 1 + how many were held back since the last."""
        now = self.clock()
        if self._next.get(key, float("-inf")) > now:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._next) >= self.limit:
            for k in [k for k, t in self._next.items() if t <= now]:
                del self._next[k]
                self._held.pop(k, None)
            if len(self._next) >= self.limit:
                self._held[key] = self._held.get(key, 0) + 1
                return None
        self._next[key] = now + self.period
        return 1 + self._held.pop(key, 0)


class InstanceCap:
    """At most `limit` remote instances per service type, and at most `max_types` types, each
    instance until its TTL runs out or its goodbye comes; an instance already admitted is
    always refreshed. Expired instances are forgotten at least once a minute, so the
    accounting itself stays bounded by what is live."""

    def __init__(self, clock: Callable[[], float], limit: int = DEFAULT_MAX_PER_TYPE,
                 report_every: float = 600.0, max_types: int = MAX_TYPES) -> None:
        self.clock = clock
        self.limit = limit
        self.max_types = max_types
        self._types: dict[str, dict[str, float]] = {}  # type -> instance -> expiry
        self._swept: dict[str, float] = {}
        self._next_sweep = float("-inf")
        self._reports = Throttle(clock, report_every)
        #: (type, refused since the last report) to log; the adapter drains it. The type is
        #: "*" when the number of types is at its limit.
        self.reports: list[tuple[str, int]] = []

    def admit(self, type_: str, instance: str, ttl: float) -> bool:
        """A PTR to `instance` with `ttl` (> 0) arrived: may it be kept?"""
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep_all(now)
        known = self._types.get(type_)
        if known is None:
            if len(self._types) >= self.max_types:
                self._refused("*")
                return False
            known = self._types[type_] = {}
        if instance in known or len(known) < self.limit or self._sweep(type_, known, now):
            known[instance] = now + ttl
            return True
        self._refused(type_)
        return False

    def _refused(self, type_: str) -> None:
        n = self._reports.allow(type_)
        if n is not None:
            self.reports.append((type_, n))

    def remove(self, type_: str, instance: str) -> None:
        known = self._types.get(type_)
        if known is not None:
            known.pop(instance, None)
            if not known:
                del self._types[type_]
                self._swept.pop(type_, None)

    def admitted(self, type_: str, instance: str) -> bool:
        return instance in self._types.get(type_, ())

    def count(self, type_: str) -> int:
        return len(self._types.get(type_, ()))

    def types(self) -> int:
        return len(self._types)

    def _sweep(self, type_: str, known: dict[str, float], now: float) -> bool:
        """Forget expired instances of a full type (at most once a second: a flood must not
        cost a pass over the type per packet); True if there is room after."""
        if self._swept.get(type_, float("-inf")) + 1.0 > now:
            return False
        self._swept[type_] = now
        for inst in [i for i, until in known.items() if until <= now]:
            del known[inst]
        return len(known) < self.limit

    def _sweep_all(self, now: float) -> None:
        self._next_sweep = now + 60.0
        for type_, known in list(self._types.items()):
            for inst in [i for i, until in known.items() if until <= now]:
                del known[inst]
            if not known:
                del self._types[type_]
                self._swept.pop(type_, None)


class HostName:
    """The host name in use and its renames after conflicts, with RFC 6762 §8.1's limit:
    after 15 conflicts within 10 s, wait 5 s before each further one is acted on."""

    def __init__(self, name: str, clock: Callable[[], float]) -> None:
        self.configured = name
        self.current = name
        self.clock = clock
        self._conflicts: list[float] = []
        self._not_before = float("-inf")

    def may_rename(self) -> bool:
        now = self.clock()
        if now < self._not_before:
            return False
        self._conflicts = [t for t in self._conflicts if t > now - 10.0]
        return True

    def rename(self) -> str:
        """Lose the current name: the next one to use (call `may_rename` first)."""
        now = self.clock()
        self._conflicts.append(now)
        if len(self._conflicts) >= 15:
            self._not_before = now + 5.0
        self.current = alternative_host_name(self.current)
        return self.current
