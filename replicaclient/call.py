"""One call in flight: the adapter between a policy's machine and the replicas' connections.
It carries out the machine's actions, feeds it what the replicas answer and what the clock
does, and settles the caller's Deferred."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from . import wire
from .ampwire import READ_ENTRY, command_entry, encode_pairs
from .blame import blame
from .errors import ClientClosed, NoReplicas
from .policy import Action, CallMachine, Fail, Reply, Send, Succeed
from .tag import Tag

if TYPE_CHECKING:
    from .client import ReplicatedClient

_log = Logger(namespace="replicaclient.client")  # one namespace for the stub's log lines


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


class Call:
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
            return self.head, command_entry(self.command.commandName)
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
            head += READ_ENTRY
        found = self._messages[key] = (head, command_entry(name))
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
                              command_entry(self.command.commandName))

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
        # (amp.Command's metaclass sets reverseErrors, which a type checker cannot see)
        error_type = self.command.reverseErrors.get(code)  # type: ignore[attr-defined]
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


def _cancelled() -> BaseException:
    from twisted.internet.defer import CancelledError

    return CancelledError()
