"""The Twisted adapter: ``ReplicatedClient``, a drop-in for one ``amp.AMP`` connection.

It owns one AMP connection per replica, turns each ``callRemote`` into a policy
machine (``replicaclient.policy``), carries out what the machine asks, and feeds it
what the replicas say and what the clock does. Everything it decides is decided in the
pure core; this module only moves boxes and keeps time with the reactor it is given.
Beside it: ``connection`` (one replica's AMP connection), ``call`` (one call in flight),
``ampwire`` (AMP's box encoding, done once per call), ``wakeups`` (the calls' timer heap),
``catchup`` (bringing a replica that is behind up to date). Here: membership,
``callRemote``, and the writes kept for replicas that missed them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import (
    Deferred,
    fail,
    gatherResults,
    succeed,
)
from twisted.logger import Logger
from twisted.protocols import amp

from . import wire
from .ampwire import command_entry, encode_pairs, register_value
from .balancer import Balancer
from .budget import RetryBudget
from .call import Call, ReplyEvent
from .catchup import catch_up
from .connection import Replica
from .declare import semantics_of
from .ejection import OutlierDetector
from .errors import ClientClosed
from .handoff import Hint
from .latency import PercentileWindow
from .membership import Added, Event, MembershipSource, Removed, static
from .metrics import ClientMetrics
from .policy import (
    CallContext,
    Fail,
    First,
    Policy,
    Quorum,
    as_policy,
)
from .tag import HybridClock, Tag
from .wakeups import Wakeups

if TYPE_CHECKING:
    from .reactor import IReplicatedClientReactor

_log = Logger()

PolicySpec = str | Policy


class ReplicatedClient:
    """Call a replicated AMP service as if it were one ``amp.AMP`` connection.

    ``endpoints``: Twisted client endpoint strings (``tcp:host:port``, ``unix:/path``).
    ``discover``: a DNS-SD service type (``"_kv._tcp"``) followed through the discovery
    client. ``membership``: any membership source (see ``replicaclient.membership``).
    Give exactly one of the three.

    ``policy``: ``"first"``, ``"vote"``, ``"quorum"`` or a policy object;
    ``overrides`` maps command classes to the policy to use for them instead.
    ``timeout``: one deadline, in seconds, covering every attempt of a call.
    ``balancer`` picks the replica of a ``first`` call (power of two choices over
    peak-EWMA cost, ``replicaclient.balancer``).

    Writes carry a tag from ``clock`` (a hybrid logical clock on the reactor's time).
    A lost replica is reconnected in the background with ``reconnect`` (a Twisted
    ``backoffPolicy``). Writes it missed are kept for it, at most ``hint_count`` of
    them and ``hint_bytes`` bytes (past that it needs a full sync), and replayed when it
    is back; a replica that restarted (a new incarnation), lost hints, or joined after
    the start is synced from the others, ``sync_page`` registers at a time, refusing
    any source whose tags are more than ``future_ms`` ahead of this stub's clock. A
    replica gets reads only once it is up to date.
    """

    def __init__(
        self,
        reactor: IReplicatedClientReactor,
        endpoints: list[str] | None = None,
        *,
        discover: str | None = None,
        membership: MembershipSource | None = None,
        policy: PolicySpec = "first",
        overrides: Mapping[type, PolicySpec] | None = None,
        timeout: float = 10.0,
        budget: RetryBudget | None = None,
        ejection: OutlierDetector | None = None,
        balancer: Balancer | None = None,
        client_id: str | None = None,
        clock: HybridClock | None = None,
        reconnect: Callable[[int], float] | None = None,
        hint_count: int = 10_000,
        hint_bytes: int = 16 << 20,
        sync_page: int = 1000,
        future_ms: int = 60_000,
    ) -> None:
        given = [x is not None for x in (endpoints, discover, membership)]
        if sum(given) != 1:
            raise ValueError("give exactly one of endpoints, discover or membership")
        self.reactor = reactor
        self.client_id = client_id or secrets.token_hex(8)
        if not self.client_id.isalnum():
            raise ValueError("client_id must be letters and digits")
        self.policy = as_policy(policy)
        self.overrides = {cmd: as_policy(p) for cmd, p in (overrides or {}).items()}
        self.timeout = timeout
        self.budget = budget or RetryBudget(now=reactor.seconds())
        self.ejection = ejection or OutlierDetector()
        self.balancer = balancer or Balancer()
        self.metrics = ClientMetrics()
        self.clock = clock or HybridClock(lambda: int(reactor.seconds() * 1000))
        self.reconnect = reconnect or backoffPolicy(initialDelay=0.1, maxDelay=5.0)
        self.hint_count = hint_count
        self.hint_bytes = hint_bytes
        self.sync_page = min(sync_page, wire.MAX_PAGE)
        self.future_ms = future_ms
        self._repair_credit = 0.0
        self._starting = True
        self.replicas: dict[str, Replica] = {}
        self._seq = 0
        self._latency: dict[bytes, PercentileWindow] = {}
        self._calls: set[Call] = set()
        self._closed = False
        self._rid_prefix = self.client_id.encode("ascii") + b":"  # wire.request_id
        self._wakeups = Wakeups(reactor)
        self.observers: list[Callable[[ReplyEvent], None]] = []
        if discover is not None:
            from .discover import discovery_membership

            membership = discovery_membership(reactor, discover)
        elif endpoints is not None:
            membership = static(list(endpoints))
        assert membership is not None
        self._unsubscribe = membership.subscribe(self._membership_event)
        self._starting = False

    # -- membership

    def _membership_event(self, event: Event) -> None:
        if self._closed:
            return
        if isinstance(event, Added):
            old = self.replicas.get(event.name)
            if old is not None:
                if old.endpoint_string == event.endpoint:
                    return
                old.close()
            replica = self.replicas[event.name] = Replica(
                self, event.name, event.endpoint, fresh=not self._starting)
            self.ejection.add(event.name)
            self.balancer.add(event.name)
            self.metrics.replica(event.name)
            replica.connect()
            _log.info("replica {name} at {endpoint} joined", name=event.name,
                      endpoint=event.endpoint)
        elif isinstance(event, Removed):
            gone = self.replicas.pop(event.name, None)
            if gone is not None:
                self.ejection.remove(event.name)
                self.balancer.remove(event.name)
                gone.close()
                _log.info("replica {name} left", name=event.name)

    @property
    def members(self) -> dict[str, str]:
        """Current membership: replica name -> endpoint string."""
        return {name: r.endpoint_string for name, r in self.replicas.items()}

    # -- calls

    def policy_for(self, command: type) -> Policy:
        return self.overrides.get(command, self.policy)

    def callRemote(self, command: type[amp.Command], *a: Any, **kw: Any) -> Deferred[Any] | None:
        """Same arguments, results and errors as ``amp.AMP.callRemote`` (an error AMP
        would raise at once, such as a bad argument or ``amp.TooLong``, fails the
        returned Deferred instead)."""
        if self._closed:
            return fail(ClientClosed("the replicated client is closed"))
        semantics = semantics_of(command)
        self._seq += 1
        seq = self._seq
        rid = b"%s%d" % (self._rid_prefix, seq)
        policy = self.overrides.get(command, self.policy) if self.overrides else self.policy
        writing = semantics.kind == "write"
        tag = None
        if writing and not isinstance(policy, Quorum):
            tag = Tag(self.clock.tick(), self.client_id, seq)
        try:
            command(*a, **kw)  # validates the signature as AMP does
            box = command.makeArguments(kw, None)
            register = register_value(command, semantics, box)
            entries = list(box.items())
            entries.append((wire.REQUEST_ID, rid))
            if register is not None:
                entries.append((wire.REGISTER, register))
            if tag is not None:
                entries.append((wire.TAG, tag.encode()))
            head = encode_pairs(entries)
        except BaseException:  # noqa: BLE001 (as amp.AMP.callRemote: any error fails the call)
            return fail()
        name: bytes = command.commandName
        if not command.requiresAnswer:
            entry = command_entry(name)
            for replica in self.replicas.values():
                replica.send_only(head, entry)
            return None
        now = self.reactor.seconds()
        names = list(self.replicas)
        skipped: dict[str, str] = {}
        asked = names
        if not writing:  # a replica that is behind gets no read until it has caught up
            asked = []
            for n in names:
                replica = self.replicas[n]
                if replica.readable:
                    asked.append(n)
                else:
                    skipped[n] = _behind(replica)
        healthy, probes, ejected = self.ejection.split(asked, now)
        first = isinstance(policy, First)
        repair = False
        if first and not writing and register is not None:
            fraction = cast(First, policy).read_repair
            if fraction:
                self._repair_credit += fraction
                if self._repair_credit >= 1.0:
                    self._repair_credit -= 1.0
                    repair = True
        for n in probes:
            self._kick(n)
        ctx = CallContext(
            command=name.decode("ascii", "replace"),
            semantics=semantics,
            candidates=self.balancer.order(healthy, now) if first and not writing else healthy,
            members=len(names),
            now=now,
            deadline=now + self.timeout,
            probes=probes,
            ejected=ejected,
            hedge_delay=self._hedge_delay(policy, name) if first else None,
            spend=self._spend,
            client=self.client_id,
            seq=seq,
            repair=repair,
            skipped=skipped,
        )
        try:
            machine = policy.machine(ctx)
        except BaseException:  # noqa: BLE001 (as amp.AMP.callRemote: any error fails the call)
            return fail()
        self.budget.deposit()
        self.metrics.calls += 1
        call = Call(self, command, register, head, rid, machine, seq)
        call.deadline = ctx.deadline
        call.hint = tag
        if tag is not None:
            for n in ejected:
                self._hint(n, tag, head, command_entry(name))
        self._calls.add(call)
        call.feed(machine.start())
        return call.result

    # -- replicas that are behind: hints kept for them, catching up (catchup.py)

    def _hint(self, name: str, tag: Tag, head: bytes, command: bytes) -> None:
        """Keep a write ``name`` did not get, to replay when it is back."""
        replica = self.replicas.get(name)
        if replica is None or replica.closed:
            return
        replica.readable = False
        dropped = replica.hints.add(Hint(tag, head, command))
        if dropped:
            self.metrics.hints_dropped += dropped
            if dropped > 1:
                _log.warn("replica {name}: {n} hints dropped past the queue's bounds; "
                          "it will be fully synced", name=name, n=dropped)
        else:
            self.metrics.hints_queued += 1

    def _kick(self, name: str) -> None:
        """Bring a connected replica that is behind up to date, unless that is running."""
        replica = self.replicas.get(name)
        if replica is not None and replica.proto is not None and not replica.readable:
            catch_up(self, replica)

    def _spend(self) -> bool:
        return self.budget.try_spend(self.reactor.seconds())

    def _hedge_delay(self, policy: Policy, name: bytes) -> float | None:
        if not isinstance(policy, First) or not policy.hedge:
            return None
        window = self._latency.get(name)
        if window is None or len(window) < policy.warmup:
            return policy.initial_delay
        found = window.percentile(policy.percentile)
        return max(policy.min_delay, found if found is not None else policy.initial_delay)

    def _observe(self, name: bytes, seconds: float) -> None:
        window = self._latency.get(name)
        if window is None:
            window = self._latency[name] = PercentileWindow()
        window.add(seconds)

    def close(self) -> Deferred[Any]:
        """Fail calls still running with ClientClosed and close every connection."""
        if self._closed:
            return succeed(None)
        self._closed = True
        self._unsubscribe()
        for call in list(self._calls):
            call.finish([Fail(ClientClosed("the replicated client was closed"))])
        self._wakeups.close()
        closing = [replica.close() for replica in self.replicas.values()]
        return gatherResults(closing, consumeErrors=True).addCallback(lambda _: None)


def _behind(replica: Replica) -> str:
    """Why a replica gets no read, for ``NoQuorum`` messages."""
    if replica.down is not None:
        return f"not asked: unreachable ({type(replica.down).__name__}: {replica.down})"
    return "not asked: catching up"
