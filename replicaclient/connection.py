"""One replica as the stub holds it: the AMP connection a ``ClientService`` keeps making,
the requests waiting for it, and the writes it missed (hints)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from twisted.application.internet import ClientService
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

from .ampwire import ASK_PREFIX, END, U16
from .blame import blame
from .catchup import catch_up
from .errors import ClientClosed
from .handoff import HintQueue
from .policy import Send

if TYPE_CHECKING:
    from .call import Call
    from .client import ReplicatedClient

Waiter = tuple["Call", Send, float]
"""Who waits for an answer: the call, what it sent, and when."""


def _not_connected(data: bytes) -> None:
    raise RuntimeError("a replica connection was used before it was made")


class ReplicaAMP(amp.AMP):
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

    def __init__(self, owner: Replica) -> None:
        super().__init__()
        self.owner = owner
        self.lost: Deferred[None] = Deferred()
        self.waiting: dict[bytes, Waiter] = {}
        self.gone: BaseException | None = None
        self._tags = 0
        self._write: Callable[[bytes], None] = _not_connected

    def connectionMade(self) -> None:
        super().connectionMade()
        self._write = cast(Any, self.transport).write
        self.owner.connection_made(self)

    def send(self, head: bytes, command: bytes, waiter: Waiter | None) -> None:
        """Send a request: ``head`` is its encoded entries, ``command`` its encoded
        ``_command`` entry; ``waiter`` gets the answer (None: no answer wanted)."""
        if self.gone is not None:
            if waiter is not None:
                waiter[0].lost(self.gone, waiter[1], waiter[2])
            return
        if waiter is None:
            self._write(head + command + END)
            return
        self._tags += 1
        tag = b"r%x" % self._tags
        self.waiting[tag] = waiter
        self._write(b"".join((head, command, ASK_PREFIX, U16(len(tag)), tag, END)))

    def ask(self, head: bytes, command: bytes, timeout: float) -> Deferred[amp.AmpBox]:
        """Send a request the stub makes for itself (a hint replayed, a write a sync
        copies); the Deferred fires with the answer or error box, or fails if the
        connection is lost first or no answer comes within ``timeout`` seconds."""
        asked = Asked()
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

    def forget(self, call: Call) -> list[tuple[Send, float]]:
        """Stop waiting for ``call``'s answers; what it had sent here, and when."""
        found = [tag for tag, waiter in self.waiting.items() if waiter[0] is call]
        return [self.waiting.pop(tag)[1:] for tag in found]

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

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.owner.connection_lost(self)
        self.lost.callback(None)


class Asked:
    """Waits for the answer to one request of the stub's own (see ``ReplicaAMP.ask``)."""

    def __init__(self) -> None:
        self.result: Deferred[amp.AmpBox] = Deferred()

    def received(self, box: amp.AmpBox, send: Any, started: float) -> None:
        if not self.result.called:
            self.result.callback(box)

    def lost(self, error: BaseException, send: Any, started: float) -> None:
        if not self.result.called:
            self.result.errback(Failure(error))


class _Factory(Factory):
    def __init__(self, owner: Replica) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> ReplicaAMP:
        return ReplicaAMP(self.owner)


class Replica:
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
        self.proto: ReplicaAMP | None = None
        self.waiting: list[tuple[bytes, bytes, Waiter]] = []
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

        def connected(proto: ReplicaAMP) -> None:
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

    def request(self, head: bytes, command: bytes, waiter: Waiter) -> None:
        if self.closed:
            waiter[0].lost(ClientClosed(f"{self.name}: closed"), waiter[1], waiter[2])
        elif self.proto is not None:
            self.proto.send(head, command, waiter)
        elif self.down is not None:
            waiter[0].lost(self.down, waiter[1], waiter[2])
        else:
            self.waiting.append((head, command, waiter))
            self._await_connection()

    def forget(self, call: Call) -> list[tuple[Send, float]]:
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

    def connection_made(self, proto: ReplicaAMP) -> None:
        if self.closed:
            return
        self.proto = proto
        self.down = None
        self.generation += 1
        self._flush()
        catch_up(self.client, self)

    def connection_lost(self, proto: ReplicaAMP) -> None:
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
