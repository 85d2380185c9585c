"""The Twisted adapter: ``ReplicatedClient``, a drop-in for one ``amp.AMP`` connection.

It owns one AMP connection per replica, turns each ``callRemote`` into a policy
machine (``replicaclient.policy``), carries out what the machine asks, and feeds it
what the replicas say and what the clock does. Everything it decides is decided in the
pure core; this module only moves boxes and keeps time with the reactor it is given.
"""

from __future__ import annotations

import heapq
import secrets
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    ensureDeferred,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from . import sync, wire
from .balancer import Balancer
from .blame import blame
from .budget import RetryBudget
from .declare import Semantics, semantics_of
from .ejection import OutlierDetector
from .errors import ClientClosed, NoReplicas
from .handoff import Hint, HintQueue
from .latency import PercentileWindow
from .membership import Added, Event, MembershipSource, Removed, static
from .metrics import ClientMetrics
from .policy import (
    Action,
    CallContext,
    CallMachine,
    Fail,
    First,
    Policy,
    Quorum,
    Reply,
    Send,
    Succeed,
    Vote,
    as_policy,
)
from .tag import HybridClock, Tag

_log = Logger()

PolicySpec = str | Policy


@dataclass(frozen=True)
class ReplyEvent:
    """What one replica said to one message of a call, for observers (demos, tracing):
    ``outcome`` is "answer" or "failure"; ``text`` describes it."""

    command: str
    seq: int
    replica: str
    stage: str
    kind: str
    outcome: str
    text: str
    latency: float


_U16 = struct.Struct("!H").pack
_END = b"\x00\x00"


def encode_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """AMP's encoding of box entries, without the box's end marker: each key and value
    as a 2-byte big-endian length and the bytes (the ``amp`` module docstring).
    Entries may come in any order; AMP's own encoder sorts them, its parser does not
    care. Raises ``amp.TooLong`` as AMP does for a key over 255 or a value over 65535
    bytes."""
    out: list[bytes] = []
    for key, value in pairs:
        if len(key) > amp.MAX_KEY_LENGTH:
            raise amp.TooLong(True, True, key, None)
        if len(value) > amp.MAX_VALUE_LENGTH:
            raise amp.TooLong(False, True, value, key)
        out += (_U16(len(key)), key, _U16(len(value)), value)
    return b"".join(out)


_ASK = encode_pairs([(amp.ASK, b"")])[:-2]  # the key and the length field of its value


def _not_connected(data: bytes) -> None:
    raise RuntimeError("a replica connection was used before it was made")


class _ReplicaAMP(amp.AMP):
    """The stub's side of one replica connection.

    Requests do not go through ``callRemote`` (which would build, copy and encode a
    box per replica, and a Deferred per request) nor AMP's private
    ``_sendBoxCommand``: a call's entries are encoded once for all its replicas
    (:func:`encode_pairs`), and each request is that encoding plus its ``_ask`` tag
    and ``_command``, written to the transport. Answers come back through
    ``ampBoxReceived`` and ``stopReceivingBoxes``, AMP's public ``IBoxReceiver``
    methods, and go straight to the waiting call. Our tags start with ``r`` and
    AMP's own (``callRemote``'s) are hex digits, so any other box still goes to AMP.
    Writing to the transport skips ``sendBox``'s checks for protocol switching and
    STARTTLS, neither of which the stub ever does on these connections."""

    def __init__(self, owner: _Replica) -> None:
        super().__init__()
        self.owner = owner
        self.lost: Deferred[None] = Deferred()
        self.waiting: dict[bytes, _Waiter] = {}
        self.gone: BaseException | None = None
        self._tags = 0
        self._write: Callable[[bytes], None] = _not_connected

    def connectionMade(self) -> None:
        super().connectionMade()
        self._write = cast(Any, self.transport).write
        self.owner.connection_made(self)

    def send(self, head: bytes, command: bytes, waiter: _Waiter | None) -> None:
        """Send a request: ``head`` is its encoded entries, ``command`` its encoded
        ``_command`` entry; ``waiter`` gets the answer (None: no answer wanted)."""
        if self.gone is not None:
            if waiter is not None:
                waiter[0].lost(self.gone, waiter[1], waiter[2])
            return
        if waiter is None:
            self._write(head + command + _END)
            return
        self._tags += 1
        tag = b"r%x" % self._tags
        self.waiting[tag] = waiter
        self._write(b"".join((head, command, _ASK, _U16(len(tag)), tag, _END)))

    def ask(self, head: bytes, command: bytes, timeout: float) -> Deferred[amp.AmpBox]:
        """Send a request the stub makes for itself (a hint replayed, a write a sync
        copies); the Deferred fires with the answer or error box, or fails if the
        connection is lost first or no answer comes within ``timeout`` seconds."""
        asked = _Asked()
        self.send(head, command, (cast(Any, asked), cast(Send, None), 0.0))

        def expire() -> None:
            for tag, waiter in list(self.waiting.items()):
                if waiter[0] is asked:
                    del self.waiting[tag]
            asked.lost(TimeoutError(f"no answer within {timeout} s"), None, 0.0)

        timer = self.owner.client.reactor.callLater(timeout, expire)

        def settled(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return asked.result.addBoth(settled)

    def forget(self, call: _Call) -> list[tuple[Send, float]]:
        """Stop waiting for ``call``'s answers; what it had sent here, and when."""
        found = [tag for tag, waiter in self.waiting.items() if waiter[0] is call]
        return [self.waiting.pop(tag)[1:] for tag in found]  # type: ignore[misc]

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        tag = box.get(amp.ANSWER)
        if tag is None:
            tag = box.get(amp.ERROR)
        waiter = self.waiting.pop(tag, None) if tag is not None else None
        if waiter is None:
            super().ampBoxReceived(box)
            return
        waiter[0].received(box, waiter[1], waiter[2])

    def stopReceivingBoxes(self, reason: Any) -> None:
        super().stopReceivingBoxes(reason)
        self.gone = reason.value if isinstance(reason, Failure) else reason
        waiting, self.waiting = self.waiting, {}
        for call, send, started in waiting.values():
            call.lost(self.gone, send, started)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.owner.connection_lost(self)
        self.lost.callback(None)


class _Asked:
    """Waits for the answer to one request of the stub's own (see ``_ReplicaAMP.ask``)."""

    def __init__(self) -> None:
        self.result: Deferred[amp.AmpBox] = Deferred()

    def received(self, box: amp.AmpBox, send: Any, started: float) -> None:
        if not self.result.called:
            self.result.callback(box)

    def lost(self, error: BaseException, send: Any, started: float) -> None:
        if not self.result.called:
            self.result.errback(Failure(error))


class _Factory(Factory):
    def __init__(self, owner: _Replica) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> _ReplicaAMP:
        return _ReplicaAMP(self.owner)


class _Replica:
    """One replica: its endpoint, the AMP connection a ``ClientService`` keeps making
    (reconnecting with backoff in the background), the writes it missed (hints), and
    whether it may get reads (``readable``: not while it is behind)."""

    def __init__(self, client: ReplicatedClient, name: str, endpoint: str,
                 fresh: bool) -> None:
        self.client = client
        self.name = name
        self.endpoint_string = endpoint
        self.service = ClientService(clientFromString(client.reactor, endpoint),
                                     _Factory(self), retryPolicy=client.reconnect,
                                     clock=client.reactor)
        self.proto: _ReplicaAMP | None = None
        self.waiting: list[tuple[bytes, bytes, _Waiter]] = []
        self.down: BaseException | None = None
        """Why the replica cannot be reached, while it cannot (requests fail at once)."""
        self.asking = False
        self.closed = False
        self.hints = HintQueue(client.hint_count, client.hint_bytes)
        self.fresh = fresh
        """Joined after the stub started: synced before its first read."""
        self.readable = not fresh
        self.incarnation: str | None = None
        self.needs_sync: str | None = None
        """Why a full sync is due (kept until one completes)."""
        self.catching_up = False
        self.generation = 0
        self.retry: IDelayedCall | None = None

    def connect(self) -> None:
        self.service.startService()

    def _await_connection(self) -> None:
        if self.asking:
            return
        self.asking = True

        def connected(proto: _ReplicaAMP) -> None:
            self.asking = False
            self._flush()

        def failed(reason: Failure) -> None:
            self.asking = False
            error = reason.value
            if isinstance(error, CancelledError) or self.closed:
                error = ClientClosed(f"{self.name}: closed")
            else:
                error = self.down = blame(error, self.name)
            waiting, self.waiting = self.waiting, []
            for _, _, waiter in waiting:
                waiter[0].lost(error, waiter[1], waiter[2])

        self.service.whenConnected(failAfterFailures=1).addCallbacks(connected, failed)

    def _flush(self) -> None:
        waiting, self.waiting = self.waiting, []
        for head, command, waiter in waiting:
            self.request(head, command, waiter)

    def request(self, head: bytes, command: bytes, waiter: _Waiter) -> None:
        if self.closed:
            waiter[0].lost(ClientClosed(f"{self.name}: closed"), waiter[1], waiter[2])
        elif self.proto is not None:
            self.proto.send(head, command, waiter)
        elif self.down is not None:
            waiter[0].lost(self.down, waiter[1], waiter[2])
        else:
            self.waiting.append((head, command, waiter))
            self._await_connection()

    def forget(self, call: _Call) -> list[tuple[Send, float]]:
        """Stop waiting for ``call``'s answers here (sent, or queued for the connection)."""
        found = [(w[1], w[2]) for _, _, w in self.waiting if w[0] is call]
        if found:
            self.waiting = [entry for entry in self.waiting if entry[2][0] is not call]
        if self.proto is not None:
            found += self.proto.forget(call)
        return found

    def send_only(self, head: bytes, command: bytes) -> None:
        if self.proto is not None:
            self.proto.send(head, command, None)

    def connection_made(self, proto: _ReplicaAMP) -> None:
        if self.closed:
            return
        self.proto = proto
        self.down = None
        self.generation += 1
        self._flush()
        self.client._catch_up(self)

    def connection_lost(self, proto: _ReplicaAMP) -> None:
        if self.proto is proto:
            self.proto = None
            self.readable = False
            self.generation += 1
            reason = proto.gone if proto.gone is not None else ConnectionLost()
            self.down = blame(reason, self.name)

    def close(self) -> Deferred[Any]:
        self.closed = True
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        waiting, self.waiting = self.waiting, []
        for _, _, waiter in waiting:
            waiter[0].lost(ClientClosed(f"{self.name}: closed"), waiter[1], waiter[2])
        return self.service.stopService()


class _Wakeups:
    """One reactor timer for all the calls of a client, instead of a ``callLater``
    and a cancel per call: each call is in a heap at the time its machine wants to
    be woken (a hedge, the deadline). A call that finishes, or wants another time,
    leaves its entry behind; the heap is rebuilt without such entries when they are
    more than half of it, and the reactor timer stays armed for the earliest entry
    (so it may fire for a call that has finished, and then costs one pop).

    Measured on the asyncio reactor: a ``callLater`` + ``cancel`` per call, and the
    asyncio timer each one re-arms, were about a fifth of the stub's own CPU time
    per call."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.heap: list[tuple[float, int, _Call]] = []
        self.stale = 0
        self.timer: IDelayedCall | None = None
        self.armed = float("inf")

    def at(self, when: float, call: _Call) -> None:
        """Wake ``call`` at ``when`` (its ``wake_at``, already set)."""
        heapq.heappush(self.heap, (when, call.seq, call))
        if when < self.armed:
            self._arm(when)

    def forget(self) -> None:
        """An entry is no longer wanted (its call finished or moved)."""
        self.stale += 1
        if self.stale > 64 and self.stale * 2 > len(self.heap):
            self.heap = [entry for entry in self.heap if entry[2].wake_at == entry[0]]
            heapq.heapify(self.heap)
            self.stale = 0

    def close(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.heap = []
        self.stale = 0

    def _arm(self, when: float) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.armed = when
        self.timer = self.reactor.callLater(max(0.0, when - self.reactor.seconds()),
                                            self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.armed = float("inf")
        now = self.reactor.seconds()
        heap = self.heap
        due = []
        while heap and heap[0][0] <= now:
            when, _, call = heapq.heappop(heap)
            if call.wake_at == when:
                call.wake_at = None
                due.append(call)
            else:
                self.stale = max(0, self.stale - 1)
        for call in due:
            call.wake(now)
        heap = self.heap  # a wake may have rebuilt it (forget)
        while heap and heap[0][2].wake_at != heap[0][0]:
            heapq.heappop(heap)
            self.stale = max(0, self.stale - 1)
        if heap and heap[0][0] < self.armed:
            self._arm(heap[0][0])


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
        reactor: Any,
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
        self.replicas: dict[str, _Replica] = {}
        self._seq = 0
        self._latency: dict[bytes, PercentileWindow] = {}
        self._calls: set[_Call] = set()
        self._closed = False
        self._rid_prefix = self.client_id.encode("ascii") + b":"  # wire.request_id
        self._wakeups = _Wakeups(reactor)
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
            replica = self.replicas[event.name] = _Replica(
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
            register = _register_value(command, semantics, box)
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
            command_entry = _command_entry(name)
            for replica in self.replicas.values():
                replica.send_only(head, command_entry)
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
        call = _Call(self, command, register, head, rid, machine, seq)
        call.deadline = ctx.deadline
        call.hint = tag
        if tag is not None:
            for n in ejected:
                self._hint(n, tag, head, _command_entry(name))
        self._calls.add(call)
        call.feed(machine.start())
        return call.result

    # -- replicas that are behind: hinted handoff, catching up, full sync

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
            self._catch_up(replica)

    def _catch_up(self, replica: _Replica) -> None:
        if replica.catching_up or replica.proto is None or self._closed or replica.closed:
            return
        replica.catching_up = True
        if replica.retry is not None and replica.retry.active():
            replica.retry.cancel()
        replica.retry = None

        def done(ok: Any) -> None:
            replica.catching_up = False
            if ok is True or replica.closed or self._closed:
                return
            if isinstance(ok, Failure):
                _log.failure("replica {name}: catching up failed", ok, name=replica.name)
            if replica.proto is not None:  # try again; a new connection starts anew itself
                replica.retry = self.reactor.callLater(1.0, self._catch_up, replica)

        ensureDeferred(self._bring_up(replica, replica.proto)).addBoth(done)

    async def _bring_up(self, replica: _Replica, proto: _ReplicaAMP) -> bool:
        """Learn the replica's incarnation, replay its hints in tag order, sync it fully
        if it restarted, lost hints or is new, then let it have reads. False if the
        connection changed or the sync could not be done (to be tried again)."""
        generation = replica.generation
        incarnation = await self._hello(proto)
        if replica.generation != generation:
            return False
        if incarnation is None and replica.needs_sync is not None:
            return False  # no answer to Hello this time: the sync still due waits
        known, replica.incarnation = replica.incarnation, incarnation or replica.incarnation
        reason = replica.needs_sync = sync.sync_reason(
            known, incarnation, pending=replica.needs_sync, joined=replica.fresh,
            hints_dropped=replica.hints.overflowed)
        if not await self._replay(replica, proto):
            return False
        if reason is not None:
            _log.info("replica {name}: full sync: {why}", name=replica.name, why=reason)
            if not await self._sync(replica, proto, generation):
                return False
            replica.needs_sync = None
        if replica.generation != generation or len(replica.hints):
            return False
        replica.hints.synced()
        replica.fresh = False
        replica.readable = True
        return True

    async def _hello(self, proto: _ReplicaAMP) -> str | None:
        """The replica's incarnation; None without the replica-side helper."""
        try:
            box = await proto.callRemoteString(wire.HELLO_COMMAND).addTimeout(
                min(self.timeout, 10.0), self.reactor)
            return str(box[wire.INCARNATION].decode("ascii"))
        except Exception:  # noqa: BLE001 (no helper, or no answer: nothing to compare)
            return None

    async def _replay(self, replica: _Replica, proto: _ReplicaAMP) -> bool:
        hints = replica.hints.take()
        if not hints:
            return True
        asks = [proto.ask(h.head, h.command, self.timeout) for h in hints]
        results = await DeferredList(asks, consumeErrors=True)
        delivered = True
        for hint, (ok, _) in zip(hints, results, strict=True):
            if ok:
                self.metrics.hints_replayed += 1
            else:
                replica.hints.add(hint)
                delivered = False
        if delivered:
            _log.info("replica {name}: {n} hinted writes replayed", name=replica.name,
                      n=len(hints))
        return delivered

    async def _sync(self, target: _Replica, proto: _ReplicaAMP, generation: int) -> bool:
        """Copy the newest state of every register from the live replicas into
        ``target`` (under ``vote``, only states a threshold of them agree on)."""
        started = self.reactor.seconds()
        sources = {n: r for n, r in self.replicas.items()
                   if r is not target and r.proto is not None and r.readable
                   and r.incarnation is not None}
        had_sources = bool(sources)  # none: this stub has no replica it trusts yet
        threshold = (self.policy.threshold_for(len(sources))
                     if isinstance(self.policy, Vote) else None)
        chosen: dict[bytes, sync.Entry] = {}
        after: bytes | None = None
        while True:
            pages = await self._pages(sources, after)
            if target.generation != generation:
                return False
            picked = sync.select(pages, after=after, now_ms=self.clock.now_ms(),
                                 future_ms=self.future_ms, threshold=threshold)
            if picked.rejected:
                for source, why in picked.rejected.items():
                    _log.warn("sync of {target}: source {source} not used: {why}",
                              target=target.name, source=source, why=why)
                    del sources[source]
                chosen, after = {}, None  # start again without what they sent
                continue
            for entry in picked.entries:
                chosen[entry.register] = entry
            if picked.upto is None:
                break
            after = picked.upto
        if not sources and had_sources:
            self.metrics.sync_failures += 1
            _log.warn("sync of {target}: no source could be used", target=target.name)
            return False
        entries = list(chosen.values())
        for entry in entries:
            self.clock.observe(entry.tag.ts)
        loads = []
        for at in range(0, len(entries), self.sync_page):
            box = sync.encode_page(entries[at:at + self.sync_page], more=False)
            loads.append(proto.callRemoteString(
                wire.LOAD_COMMAND, **{k.decode("ascii"): v for k, v in box.items()}
            ).addTimeout(self.timeout, self.reactor))
        results = await DeferredList(loads, consumeErrors=True)
        if target.generation != generation or not all(ok for ok, _ in results):
            self.metrics.sync_failures += 1
            return False
        elapsed = self.reactor.seconds() - started
        self.metrics.syncs += 1
        self.metrics.synced_registers += len(chosen)
        self.metrics.sync_seconds.observe(elapsed)
        _log.info("replica {name} synced: {n} registers from {sources} in {s:.3f} s",
                  name=target.name, n=len(chosen), sources=sorted(sources), s=elapsed)
        return True

    async def _pages(self, sources: Mapping[str, _Replica],
                     after: bytes | None) -> dict[str, sync.Page | BaseException]:
        names = list(sources)
        asks = []
        for name in names:
            proto = sources[name].proto
            if proto is None:
                asks.append(fail(ConnectionLost(f"{name} is not connected")))
                continue
            args = {"_rc_limit": b"%d" % self.sync_page}
            if after is not None:
                args["_rc_after"] = after
            asks.append(proto.callRemoteString(wire.DUMP_COMMAND, **args).addTimeout(
                self.timeout, self.reactor))
        results = await DeferredList(asks, consumeErrors=True)
        pages: dict[str, sync.Page | BaseException] = {}
        for name, (ok, found) in zip(names, results, strict=True):
            if not ok:
                pages[name] = found.value
                continue
            try:
                pages[name] = sync.parse_page(found, self.sync_page)
            except sync.BadPage as error:
                pages[name] = error
        return pages

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


def _behind(replica: _Replica) -> str:
    """Why a replica gets no read, for ``NoQuorum`` messages."""
    if replica.down is not None:
        return f"not asked: unreachable ({type(replica.down).__name__}: {replica.down})"
    return "not asked: catching up"


_Waiter = tuple["_Call", Send, float]
"""Who waits for an answer: the call, what it sent, and when."""

_READ_ENTRY = encode_pairs([(wire.READ, b"1")])
_command_entries: dict[bytes, bytes] = {}


def _command_entry(name: bytes) -> bytes:
    """The encoded ``_command`` entry naming a command (a name is at most 255 bytes)."""
    found = _command_entries.get(name)
    if found is None:
        found = _command_entries[name] = encode_pairs([(amp.COMMAND, name)])
    return found


class _Call:
    """One call in flight: runs its machine's actions and feeds it replies and time."""

    def __init__(self, client: ReplicatedClient, command: type[amp.Command],
                 register: bytes | None, head: bytes, rid: bytes,
                 machine: CallMachine, seq: int) -> None:
        self.client = client
        self.seq = seq
        self.command = command
        self.register = register
        self.head = head
        """The call's arguments, request id and register, encoded."""
        self.rid = rid
        self.machine = machine
        self.result: Deferred[Any] = Deferred(self._cancel)
        self.wake_at: float | None = None
        self.deadline = float("inf")
        self.pending = 0
        """Requests sent and neither answered nor lost: after the call has finished, those
        still unanswered at its deadline are abandoned (`_abandon`)."""
        self.hint: Tag | None = None
        """The tag of a write to keep for the replicas it does not reach (hinted
        handoff); None for reads and quorum calls."""
        self._queue: list[Action] = []
        self._running = False
        self._messages: dict[tuple[str, Tag | None], tuple[bytes, bytes]] = {}

    def _cancel(self, _: Deferred[Any]) -> None:
        self.finish([Fail(_cancelled())])

    def feed(self, actions: list[Action]) -> None:
        if self._running:
            self._queue.extend(actions)
            return
        self._running = True
        try:
            for action in actions:
                if type(action) is Send:
                    self._send(action)
                else:
                    self.finish([action])
            queue = self._queue
            while queue:
                action = queue.pop(0)
                if type(action) is Send:
                    self._send(action)
                else:
                    self.finish([action])
        finally:
            self._running = False
        self._rearm()

    def finish(self, actions: list[Action]) -> None:
        client = self.client
        if self not in client._calls:
            return
        client._calls.discard(self)
        self.machine.done = True
        self._queue.clear()
        if self.wake_at is not None:
            self.wake_at = None
            client._wakeups.forget()
        if self.pending:  # losers may still answer (and teach latency) until the deadline
            now = client.reactor.seconds()
            if now >= self.deadline:
                self._abandon(now)
            elif not self._running:
                self._rearm()  # (else feed does, when it is done)
        action = actions[0]
        metrics = client.metrics
        if isinstance(action, Succeed):
            stats = metrics.replicas.get(action.replica)
            if stats is not None:
                stats.won += 1
                if action.kind == "hedge":
                    stats.hedges_won += 1
            payload = action.payload
            if isinstance(payload, BaseException):
                metrics.failed += 1
                self.result.errback(Failure(payload))
                return
            metrics.succeeded += 1
            self.result.callback(payload)
        elif isinstance(action, Fail):
            metrics.failed += 1
            self.result.errback(Failure(action.error))

    def _rearm(self) -> None:
        when = self.machine.next_wake()
        if when is None and self.pending and self.machine.done and self.deadline < float("inf"):
            when = self.deadline  # to abandon what is still unanswered then
        if when == self.wake_at:
            return
        wakeups = self.client._wakeups
        if self.wake_at is not None:
            wakeups.forget()
        self.wake_at = when
        if when is not None:
            wakeups.at(when, self)

    def wake(self, now: float) -> None:
        """The time the machine asked for has come (``wake_at`` is cleared); for a
        finished call, its deadline, when what is still unanswered is abandoned."""
        if self.machine.done:
            self._abandon(now)
            return
        self.feed(self.machine.wake(now))

    def _abandon(self, now: float) -> None:
        """Requests of this call no answer came for by its deadline (a replica that is
        silent, or dropped them): forgotten by their connections, counted as failures of
        their replicas (so a silent replica is ejected and costs more to the balancer,
        rather than keeping a request "in flight" for ever)."""
        client = self.client
        for replica in client.replicas.values():
            found = replica.forget(self)
            for send, started in found:
                self.pending -= 1
                client.metrics.replica(send.replica).outstanding -= 1
                self._count_failure(send, now, started, blame(TimeoutError(
                    "no answer within the call's deadline"), send.replica))
                self._undelivered(send)
            if not self.pending:
                return

    # -- messages

    def _message(self, send: Send) -> tuple[bytes, bytes]:
        """The encoded entries and ``_command`` entry of one stage's message, made
        once per stage and shared by every replica it goes to."""
        stage = send.stage
        if stage == "call":
            return self.head, _command_entry(self.command.commandName)
        key = (stage, send.tag)
        found = self._messages.get(key)
        if found is not None:
            return found
        name: bytes = self.command.commandName
        head = self.head
        if stage == "writeback" or stage == "query":
            # another command: the arguments of the write read back, or none
            ours = [(wire.REQUEST_ID, self.rid)]
            if self.register is not None:
                ours.append((wire.REGISTER, self.register))
            if stage == "writeback":
                name, args = send.record
                head = encode_pairs([*args.items(), *ours])
            else:
                name, head = wire.TAG_COMMAND, encode_pairs(ours)
        if send.tag is not None:
            head += encode_pairs([(wire.TAG, send.tag.encode())])
        if stage == "read":
            head += _READ_ENTRY
        found = self._messages[key] = (head, _command_entry(name))
        return found

    def _send(self, send: Send) -> None:
        client = self.client
        replica = client.replicas.get(send.replica)
        if replica is None:
            self.feed(self.machine.failed(send.replica, send.stage,
                                          NoReplicas(f"{send.replica} left"),
                                          client.reactor.seconds()))
            return
        stats = client.metrics.replica(send.replica)
        stats.sent += 1
        stats.outstanding += 1
        client.balancer.sent(send.replica, client.reactor.seconds())
        kind = send.kind
        if kind != "primary" and kind != "fanout":
            if kind == "hedge":
                stats.hedges_sent += 1
            elif kind == "retry":
                client.metrics.retries += 1
            elif kind == "probe":
                client.ejection.probe_sent(send.replica)
            elif kind == "repair":
                client.metrics.read_repairs += 1
        try:
            head, command = self._message(send)
        except BaseException as error:  # noqa: BLE001 (e.g. amp.TooLong for a write-back)
            stats.outstanding -= 1
            self._count_failure(send, client.reactor.seconds(), client.reactor.seconds(),
                                error)
            self.feed(self.machine.failed(send.replica, send.stage, error,
                                          client.reactor.seconds()))
            return
        self.pending += 1
        replica.request(head, command, (self, send, client.reactor.seconds()))

    def received(self, box: amp.AmpBox, send: Send, started: float) -> None:
        """A replica's answer or error box for ``send``."""
        self.pending -= 1
        if amp.ERROR in box:
            code = box.get(amp.ERROR_CODE, amp.UNKNOWN_ERROR_CODE)
            description = box.get(amp.ERROR_DESCRIPTION, b"")
            self._error_box(code, description, send, started)
        else:
            self._answered(box, send, started)

    def _undelivered(self, send: Send) -> None:
        if self.hint is not None and send.stage == "call":
            self.client._hint(send.replica, self.hint, self.head,
                              _command_entry(self.command.commandName))

    def lost(self, error: BaseException, send: Send, started: float) -> None:
        """``send`` will get no answer: the connection failed, was lost or closed."""
        self.pending -= 1
        if not isinstance(error, ClientClosed):
            error = blame(error, send.replica)
            self._undelivered(send)
        client = self.client
        now = client.reactor.seconds()
        client.metrics.replica(send.replica).outstanding -= 1
        self._count_failure(send, now, started, error)
        self.feed(self.machine.failed(send.replica, send.stage, error, now))

    def _answered(self, box: amp.AmpBox, send: Send, started: float) -> None:
        client = self.client
        now = client.reactor.seconds()
        stats = client.metrics.replica(send.replica)
        stats.outstanding -= 1
        try:
            reply = self._classify(box, send)
        except BaseException as error:  # a reply we cannot use counts as a failure  # noqa: BLE001 (as amp.AMP.callRemote: any error fails the call)
            error = blame(error, send.replica)
            self._count_failure(send, now, started, error)
            self.feed(self.machine.failed(send.replica, send.stage, error, now))
            return
        if isinstance(reply, BaseException):
            reply = blame(reply, send.replica)
            self._count_failure(send, now, started, reply)
            self.feed(self.machine.failed(send.replica, send.stage, reply, now))
            return
        if reply.tag is not None:
            client.clock.observe(reply.tag.ts)
        replica = client.replicas.get(send.replica)
        if replica is not None and not replica.readable:
            client._kick(send.replica)
        elapsed = now - started
        if client.observers:
            self._tell(send, "answer", reply.text, elapsed)
        stats.answers += 1
        stats.latency.observe(elapsed)
        client.balancer.answered(send.replica, elapsed, now)
        if send.stage == "call" or send.stage == "read":
            client._observe(self.command.commandName, elapsed)
        if client.ejection.success(send.replica, now):
            _log.info("replica {name} is back", name=send.replica)
        self.feed(self.machine.answered(send.replica, send.stage, reply, now))

    def _error_box(self, code: bytes, description: bytes, send: Send, started: float) -> None:
        client = self.client
        now = client.reactor.seconds()
        client.metrics.replica(send.replica).outstanding -= 1
        protocol_error = amp.PROTOCOL_ERRORS.get(code)
        if protocol_error is not None:  # as AMP's _errorReceived: not a RemoteAmpError
            found: Reply | BaseException = protocol_error(
                code, description.decode("utf-8", "replace"))
        else:
            found = self._declared(code, description)
        if isinstance(found, BaseException):
            found = blame(found, send.replica)
            self._count_failure(send, now, started, found)
            self.feed(self.machine.failed(send.replica, send.stage, found, now))
            return
        # A declared error is an answer, as it would be from one server.
        stats = client.metrics.replica(send.replica)
        if client.observers:
            self._tell(send, "answer", found.text, now - started)
        stats.answers += 1
        stats.latency.observe(now - started)
        client.balancer.answered(send.replica, now - started, now)
        client.ejection.success(send.replica, now)
        self.feed(self.machine.answered(send.replica, send.stage, found, now))

    def _tell(self, send: Send, outcome: str, text: str, latency: float) -> None:
        observers = self.client.observers
        if not observers:
            return
        event = ReplyEvent(self.command.commandName.decode("ascii", "replace"), self.seq,
                           send.replica, send.stage, send.kind, outcome, text, latency)
        for observer in list(observers):
            observer(event)

    def _count_failure(self, send: Send, now: float, started: float,
                       error: BaseException) -> None:
        self._tell(send, "failure", f"{type(error).__name__}: {error}", now - started)
        client = self.client
        client.balancer.failed(send.replica, now - started, now)
        client.metrics.replica(send.replica).failures += 1
        if client.ejection.failure(send.replica, now):
            client.metrics.replica(send.replica).ejections += 1
            _log.warn("replica {name} ejected", name=send.replica)

    def _declared(self, code: bytes, description: Any) -> Reply | BaseException:
        """What one AMP connection would make of an error box: a declared error (an
        answer) or UnknownRemoteError (a failure of that replica)."""
        if isinstance(description, bytes):
            description = description.decode("utf-8", "replace")
        error_type = self.command.reverseErrors.get(code)
        if error_type is None:
            return amp.UnknownRemoteError(description)
        return Reply(("error", code, description), error_type(description),
                     f"error {error_type.__name__}: {description}")

    def _classify(self, box: amp.AmpBox, send: Send) -> Reply | BaseException:
        tag = Tag.decode(box[wire.TAG]) if wire.TAG in box else None
        if wire.ERROR_CODE in box:
            found = self._declared(box[wire.ERROR_CODE], box.get(wire.ERROR_DESCRIPTION, b""))
            if isinstance(found, BaseException):
                return found
            return Reply(found.value, found.payload, found.text, tag)
        stage = send.stage
        if stage == "query":
            return Reply(("tag", tag), None, f"tag {tag}", tag)
        if stage == "writeback":  # the answer of another command: an ack is enough
            return Reply(("ack",), None, "written back", tag)
        record = None
        if wire.WRITE_COMMAND in box:
            prefix = len(wire.WRITE_ARG)
            record = (box[wire.WRITE_COMMAND],
                      {k[prefix:]: v for k, v in box.items() if k.startswith(wire.WRITE_ARG)})
        # The service's own entries (a plain dict does for parseResponse, which copies)
        clean = {k: v for k, v in box.items()
                 if k != amp.ANSWER and not k.startswith(wire.PREFIX)}
        # The answer is parsed here, once: a malformed one is that replica's failure.
        parsed = self.command.parseResponse(clean, None)
        if stage == "store":
            return Reply(("ack",), parsed, "stored" if wire.STALE not in box else "stale", tag)
        return Reply(tuple(sorted(clean.items())), parsed, repr(parsed), tag, record)


_register_wire_names: dict[tuple[type, str], bytes] = {}


def _register_value(command: type[amp.Command], semantics: Semantics,
                    box: amp.AmpBox) -> bytes | None:
    if semantics.register is None:
        return None
    wire_name = _register_wire_names.get((command, semantics.register))
    if wire_name is None:
        for candidate, _ in command.arguments:
            if amp._wireNameToPythonIdentifier(candidate) == semantics.register:
                wire_name = _register_wire_names[(command, semantics.register)] = candidate
                break
        else:
            raise ValueError(f"{command.__name__} has no argument {semantics.register!r}")
    found: bytes | None = box.get(wire_name)
    return found


def _cancelled() -> BaseException:
    from twisted.internet.defer import CancelledError

    return CancelledError()
