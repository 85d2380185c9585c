"""The Twisted adapter: ``ReplicatedClient``, a drop-in for one ``amp.AMP`` connection.

It owns one AMP connection per replica, turns each ``callRemote`` into a policy
machine (``replicaclient.policy``), carries out what the machine asks, and feeds it
what the replicas say and what the clock does. Everything it decides is decided in the
pure core; this module only moves boxes and keeps time with the reactor it is given.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from . import wire
from .budget import RetryBudget
from .declare import Semantics, semantics_of
from .ejection import OutlierDetector
from .errors import ClientClosed, NoReplicas
from .latency import PercentileWindow
from .membership import Added, Event, MembershipSource, Removed, static
from .metrics import ClientMetrics, rank
from .policy import (
    Action,
    CallContext,
    CallMachine,
    Fail,
    First,
    Policy,
    Reply,
    Send,
    Succeed,
    as_policy,
)
from .tag import Tag

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


class _ReplicaAMP(amp.AMP):
    """The stub's side of one replica connection; tells its owner when it drops."""

    def __init__(self, owner: _Replica) -> None:
        super().__init__()
        self.owner = owner
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.owner.connection_lost(self)
        self.lost.callback(None)


class _Replica:
    """One replica: its endpoint and a lazily (re)made AMP connection."""

    def __init__(self, reactor: Any, name: str, endpoint: str) -> None:
        self.name = name
        self.endpoint_string = endpoint
        self.endpoint = clientFromString(reactor, endpoint)
        self.proto: _ReplicaAMP | None = None
        self.connecting: Deferred[Any] | None = None
        self.waiting: list[tuple[bytes, amp.AmpBox, Deferred[Any]]] = []
        self.closed = False

    def connect(self) -> None:
        if self.proto is not None or self.connecting is not None or self.closed:
            return
        d = self.connecting = connectProtocol(self.endpoint, _ReplicaAMP(self))

        def connected(proto: _ReplicaAMP) -> None:
            self.connecting = None
            if self.closed:
                proto.transport.loseConnection()
                failure = Failure(ClientClosed("closed"))
            else:
                self.proto = proto
                failure = None
            waiting, self.waiting = self.waiting, []
            for command, box, result in waiting:
                if failure is None:
                    proto._sendBoxCommand(command, box).chainDeferred(result)
                else:
                    result.errback(failure)

        def failed(reason: Failure) -> None:
            self.connecting = None
            waiting, self.waiting = self.waiting, []
            for _, _, result in waiting:
                result.errback(reason)

        d.addCallbacks(connected, failed)

    def request(self, command: bytes, box: amp.AmpBox) -> Deferred[Any]:
        if self.closed:
            return fail(ClientClosed(f"{self.name}: closed"))
        if self.proto is not None:
            return self.proto._sendBoxCommand(command, box)
        result: Deferred[Any] = Deferred()
        self.waiting.append((command, box, result))
        self.connect()
        return result

    def send_only(self, command: bytes, box: amp.AmpBox) -> None:
        if self.proto is not None:
            self.proto._sendBoxCommand(command, box, requiresAnswer=False)

    def connection_lost(self, proto: _ReplicaAMP) -> None:
        if self.proto is proto:
            self.proto = None

    def close(self) -> Deferred[Any]:
        self.closed = True
        if self.connecting is not None:
            self.connecting.cancel()
        if self.proto is not None and self.proto.transport is not None:
            lost = self.proto.lost
            self.proto.transport.loseConnection()
            return lost
        return succeed(None)


class ReplicatedClient:
    """Call a replicated AMP service as if it were one ``amp.AMP`` connection.

    ``endpoints``: Twisted client endpoint strings (``tcp:host:port``, ``unix:/path``).
    ``discover``: a DNS-SD service type (``"_kv._tcp"``) followed through the discovery
    client. ``membership``: any membership source (see ``replicaclient.membership``).
    Give exactly one of the three.

    ``policy``: ``"first"``, ``"vote"``, ``"quorum"`` or a policy object;
    ``overrides`` maps command classes to the policy to use for them instead.
    ``timeout``: one deadline, in seconds, covering every attempt of a call.
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
        client_id: str | None = None,
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
        self.metrics = ClientMetrics()
        self.replicas: dict[str, _Replica] = {}
        self._seq = 0
        self._latency: dict[bytes, PercentileWindow] = {}
        self._calls: set[_Call] = set()
        self._closed = False
        self.observers: list[Callable[[ReplyEvent], None]] = []
        if discover is not None:
            from .discover import discovery_membership

            membership = discovery_membership(reactor, discover)
        elif endpoints is not None:
            membership = static(list(endpoints))
        assert membership is not None
        self._unsubscribe = membership.subscribe(self._membership_event)

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
            replica = self.replicas[event.name] = _Replica(self.reactor, event.name,
                                                           event.endpoint)
            self.ejection.add(event.name)
            self.metrics.replica(event.name)
            replica.connect()
            _log.info("replica {name} at {endpoint} joined", name=event.name,
                      endpoint=event.endpoint)
        elif isinstance(event, Removed):
            gone = self.replicas.pop(event.name, None)
            if gone is not None:
                self.ejection.remove(event.name)
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
        """Same arguments, results and errors as ``amp.AMP.callRemote``."""
        if self._closed:
            return fail(ClientClosed("the replicated client is closed"))
        semantics = semantics_of(command)
        try:
            command(*a, **kw)  # validates the signature as AMP does
            box = command.makeArguments(kw, None)
            register = _register_value(command, semantics, box)
        except BaseException:  # noqa: BLE001 (as amp.AMP.callRemote: any error fails the call)
            return fail()
        self._seq += 1
        seq = self._seq
        name: bytes = command.commandName
        rid = wire.request_id(self.client_id, seq)
        if not command.requiresAnswer:
            box[wire.REQUEST_ID] = rid
            for replica in self.replicas.values():
                replica.send_only(name, amp.AmpBox(box))
            return None
        now = self.reactor.seconds()
        policy = self.policy_for(command)
        names = list(self.replicas)
        healthy, probes, ejected = self.ejection.split(names, now)
        ctx = CallContext(
            command=name.decode("ascii", "replace"),
            semantics=semantics,
            candidates=rank(healthy, self.metrics, seq) if isinstance(policy, First)
            else healthy,
            members=len(names),
            now=now,
            deadline=now + self.timeout,
            probes=probes,
            ejected=ejected,
            hedge_delay=self._hedge_delay(policy, name),
            spend=lambda: self.budget.try_spend(self.reactor.seconds()),
            client=self.client_id,
            seq=seq,
        )
        try:
            machine = policy.machine(ctx)
        except BaseException:  # noqa: BLE001 (as amp.AMP.callRemote: any error fails the call)
            return fail()
        self.budget.deposit()
        self.metrics.calls += 1
        call = _Call(self, command, register, box, rid, machine, seq)
        self._calls.add(call)
        call.feed(machine.start())
        return call.result

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
        closing = [replica.close() for replica in self.replicas.values()]
        return gatherResults(closing, consumeErrors=True).addCallback(lambda _: None)


class _Call:
    """One call in flight: runs its machine's actions and feeds it replies and time."""

    def __init__(self, client: ReplicatedClient, command: type[amp.Command],
                 register: bytes | None, box: amp.AmpBox, rid: bytes,
                 machine: CallMachine, seq: int) -> None:
        self.client = client
        self.seq = seq
        self.command = command
        self.register = register
        self.box = box
        self.rid = rid
        self.machine = machine
        self.result: Deferred[Any] = Deferred(lambda _: self.finish(
            [Fail(_cancelled())]))
        self.timer: IDelayedCall | None = None
        self._queue: list[Action] = []
        self._running = False

    def feed(self, actions: list[Action]) -> None:
        self._queue.extend(actions)
        if self._running:
            return
        self._running = True
        try:
            while self._queue:
                action = self._queue.pop(0)
                if isinstance(action, Send):
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
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        action = actions[0]
        if isinstance(action, Succeed):
            if action.replica in client.metrics.replicas:
                client.metrics.replicas[action.replica].won += 1
            if action.kind == "hedge":
                client.metrics.replica(action.replica).hedges_won += 1
            payload = action.payload
            if isinstance(payload, BaseException):
                client.metrics.failed += 1
                self.result.errback(Failure(payload))
                return
            client.metrics.succeeded += 1
            self.result.callback(payload)
        elif isinstance(action, Fail):
            client.metrics.failed += 1
            self.result.errback(Failure(action.error))

    def _rearm(self) -> None:
        when = self.machine.next_wake()
        if when is None:
            return
        if self.timer is not None and self.timer.active():
            if self.timer.getTime() == when:
                return
            self.timer.cancel()
        delay = max(0.0, when - self.client.reactor.seconds())
        self.timer = self.client.reactor.callLater(delay, self._wake)

    def _wake(self) -> None:
        self.timer = None
        self.feed(self.machine.wake(self.client.reactor.seconds()))

    # -- messages

    def _message(self, send: Send) -> tuple[bytes, amp.AmpBox]:
        name: bytes = self.command.commandName
        box = amp.AmpBox(self.box)
        if send.stage == "writeback":
            command, args = send.record
            name, box = command, amp.AmpBox(args)
        elif send.stage == "query":
            name, box = wire.TAG_COMMAND, amp.AmpBox()
        box[wire.REQUEST_ID] = self.rid
        if self.register is not None:
            box[wire.REGISTER] = self.register
        if send.tag is not None:
            box[wire.TAG] = send.tag.encode()
        if send.stage == "read":
            box[wire.READ] = b"1"
        return name, box

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
        if send.kind == "hedge":
            stats.hedges_sent += 1
        elif send.kind == "retry":
            client.metrics.retries += 1
        elif send.kind == "probe":
            client.ejection.probe_sent(send.replica)
        name, box = self._message(send)
        started = client.reactor.seconds()
        d = replica.request(name, box)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(send, started),
                       errbackArgs=(send, started))

    def _answered(self, box: amp.AmpBox, send: Send, started: float) -> None:
        client = self.client
        now = client.reactor.seconds()
        stats = client.metrics.replica(send.replica)
        stats.outstanding -= 1
        try:
            reply = self._classify(box, send)
        except BaseException as error:  # a reply we cannot use counts as a failure  # noqa: BLE001 (as amp.AMP.callRemote: any error fails the call)
            self._count_failure(send, now, started, error)
            self.feed(self.machine.failed(send.replica, send.stage, error, now))
            return
        if isinstance(reply, BaseException):
            self._count_failure(send, now, started, reply)
            self.feed(self.machine.failed(send.replica, send.stage, reply, now))
            return
        elapsed = now - started
        self._tell(send, "answer", reply.text, elapsed)
        stats.answers += 1
        stats.latency.observe(elapsed)
        stats.ewma.add(elapsed)
        if send.stage in ("call", "read"):
            client._observe(self.command.commandName, elapsed)
        if client.ejection.success(send.replica, now):
            _log.info("replica {name} is back", name=send.replica)
        self.feed(self.machine.answered(send.replica, send.stage, reply, now))

    def _failed(self, reason: Failure, send: Send, started: float) -> None:
        client = self.client
        now = client.reactor.seconds()
        client.metrics.replica(send.replica).outstanding -= 1
        error = reason.value
        if isinstance(error, amp.RemoteAmpError):
            massaged = self._declared(error.errorCode, error.description)
            if not isinstance(massaged, BaseException):
                # A declared error is an answer, as it would be from one server.
                self._answered_error(massaged, send, started, now)
                return
            error = massaged
        self._count_failure(send, now, started, error)
        self.feed(self.machine.failed(send.replica, send.stage, error, now))

    def _answered_error(self, reply: Reply, send: Send, started: float, now: float) -> None:
        client = self.client
        stats = client.metrics.replica(send.replica)
        self._tell(send, "answer", reply.text, now - started)
        stats.answers += 1
        stats.latency.observe(now - started)
        client.ejection.success(send.replica, now)
        self.feed(self.machine.answered(send.replica, send.stage, reply, now))

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
        record = None
        if wire.WRITE_COMMAND in box:
            prefix = len(wire.WRITE_ARG)
            record = (box[wire.WRITE_COMMAND],
                      {k[prefix:]: v for k, v in box.items() if k.startswith(wire.WRITE_ARG)})
        clean = amp.AmpBox({k: v for k, v in wire.strip(box).items() if k != b"_answer"})
        if send.stage == "query":
            return Reply(("tag", tag), None, f"tag {tag}", tag)
        if send.stage == "writeback":  # the answer of another command: an ack is enough
            return Reply(("ack",), None, "written back", tag)
        # The answer is parsed here, once: a malformed one is that replica's failure.
        parsed = self.command.parseResponse(clean, None)
        if send.stage == "store":
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
