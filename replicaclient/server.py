"""The replica-side helper: wrap a service's AMP responder to get deduplication by
request id and the ABD register tags the ``quorum`` policy needs.

    state = ReplicaState()
    factory = ReplicaFactory(MyService())        # MyService is an amp.CommandLocator
    # or, for an existing protocol: amp.AMP(locator=ReplicaLocator(service, state))

Quorum reads must compute their answer synchronously (the tag is read when the
responder is called) and quorum writes must apply synchronously; the answer itself may
be sent later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.protocol import Factory
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from . import sync, wire
from .replica import Pending, ReplicaState
from .tag import Tag

_AMP_KEYS = (b"_command", b"_ask")

Responder = Callable[[amp.AmpBox], Any]


@implementer(amp.IResponderLocator)
class ReplicaLocator:
    """An ``IResponderLocator`` that wraps another one (usually the service's
    ``CommandLocator`` or ``amp.AMP`` instance)."""

    def __init__(self, service: Any, state: ReplicaState | None = None) -> None:
        self.service = service
        self.state = state if state is not None else ReplicaState()

    def locateResponder(self, name: bytes) -> Responder | None:
        if name == wire.TAG_COMMAND:
            return self._tag
        if name == wire.HELLO_COMMAND:
            return self._hello
        if name == wire.DUMP_COMMAND:
            return self._dump
        if name == wire.LOAD_COMMAND:
            return self._load
        inner = self.service.locateResponder(name)
        if inner is None:
            return None
        return lambda box: self._dedup(name, inner, box)

    def _tag(self, box: amp.AmpBox) -> amp.AmpBox:
        register = box.get(wire.REGISTER)
        if register is None:
            raise amp.RemoteAmpError(b"BAD_REQUEST", "missing register")
        return amp.AmpBox({wire.TAG: self.state.register(register).tag.encode()})

    def _hello(self, box: amp.AmpBox) -> amp.AmpBox:
        return amp.AmpBox({wire.INCARNATION: self.state.incarnation.encode("ascii")})

    def _dump(self, box: amp.AmpBox) -> amp.AmpBox:
        """A page of registers for a sync: those named after ``_rc_after`` (absent: from
        the first), at most ``_rc_limit`` (capped at ``wire.MAX_PAGE``)."""
        try:
            limit = min(int(box.get(sync.LIMIT, b"%d" % wire.MAX_PAGE)), wire.MAX_PAGE)
        except ValueError:
            raise amp.RemoteAmpError(b"BAD_REQUEST", "malformed limit") from None
        entries, more = self.state.page(box.get(sync.AFTER), max(1, limit))
        return amp.AmpBox(sync.encode_page(entries, more))

    def _load(self, box: amp.AmpBox) -> Deferred[Any]:
        """Apply a page of writes a sync copies, each with its tag (a register keeps the
        newer of its own and the copied one); answers how many were applied."""
        try:
            page = sync.parse_page(box, wire.MAX_PAGE)
        except sync.BadPage as error:
            return fail(amp.RemoteAmpError(b"BAD_REQUEST", f"malformed load: {error}"))
        writes = []
        for entry in page.entries:
            inner = self.service.locateResponder(entry.command)
            if inner is None:
                return fail(amp.RemoteAmpError(
                    b"BAD_REQUEST", f"unknown command {entry.command[:40]!r}"))
            one = amp.AmpBox(entry.args)
            one[amp.COMMAND] = entry.command
            one[wire.REGISTER] = entry.register
            one[wire.TAG] = entry.tag.encode()
            writes.append(self._write(entry.register, entry.command, inner, one))
        done = DeferredList(writes, consumeErrors=True)
        return done.addCallback(lambda results: amp.AmpBox(
            {sync.COUNT: b"%d" % sum(1 for ok, _ in results if ok)}))

    def _dedup(self, name: bytes, inner: Responder, box: amp.AmpBox) -> Deferred[Any]:
        rid = box.get(wire.REQUEST_ID)
        if rid is None:  # a write a sync copies has a tag but no request id
            return self._dispatch(name, inner, box)
        key = (rid, name)
        seen = self.state.recall(key)
        if isinstance(seen, Pending):
            waiter: Deferred[Any] = Deferred()
            seen.waiters.append(waiter)
            return waiter
        if seen is not None:
            return _replay(seen)
        self.state.begin(key)
        d = self._dispatch(name, inner, box)

        def done(outcome: Any) -> Any:
            stored = outcome if isinstance(outcome, Failure) else dict(outcome)
            for waiter in self.state.finish(key, stored):
                _replay(stored).chainDeferred(waiter)
            return outcome

        return d.addBoth(done)

    def _dispatch(self, name: bytes, inner: Responder, box: amp.AmpBox) -> Deferred[Any]:
        register = box.get(wire.REGISTER)
        if register is None:
            return maybeDeferred(inner, box)
        if wire.TAG in box:
            return self._write(register, name, inner, box)
        if wire.READ in box:
            return self._read(register, inner, box)
        return maybeDeferred(inner, box)

    def _write(self, register: bytes, name: bytes, inner: Responder,
               box: amp.AmpBox) -> Deferred[Any]:
        try:
            tag = Tag.decode(box[wire.TAG])
        except ValueError:
            return fail(amp.RemoteAmpError(b"BAD_REQUEST", "malformed tag"))
        args = {k: v for k, v in wire.strip(box).items() if k not in _AMP_KEYS}
        previous = self.state.claim(register, tag, name, args)
        if previous is None:
            current = self.state.register(register)
            stale = amp.AmpBox(current.response)
            stale[wire.TAG] = current.tag.encode()
            stale[wire.STALE] = b"1"
            return succeed(stale)

        def applied(response: amp.AmpBox) -> amp.AmpBox:
            self.state.applied(register, tag, wire.strip(response))
            response[wire.TAG] = tag.encode()
            return response

        def failed(reason: Failure) -> Failure:
            self.state.rollback(register, tag, previous)
            return reason

        return maybeDeferred(inner, box).addCallbacks(applied, failed)

    def _read(self, register: bytes, inner: Responder, box: amp.AmpBox) -> Deferred[Any]:
        snapshot = self.state.register(register).copy()

        def tagged(response: amp.AmpBox) -> amp.AmpBox:
            response[wire.TAG] = snapshot.tag.encode()
            if snapshot.command is not None:
                response[wire.WRITE_COMMAND] = snapshot.command
                for k, v in snapshot.args.items():
                    response[wire.WRITE_ARG + k] = v
            return response

        def declared(reason: Failure) -> Any:
            # An error box cannot carry our tag, so a declared error travels in an
            # answer box; the stub turns it back into the same error.
            reason.trap(amp.RemoteAmpError)
            if reason.value.fatal:
                return reason
            description = reason.value.description
            if isinstance(description, str):
                description = description.encode("utf-8", "replace")
            return tagged(amp.AmpBox({wire.ERROR_CODE: reason.value.errorCode,
                                      wire.ERROR_DESCRIPTION: description}))

        return maybeDeferred(inner, box).addCallbacks(tagged, declared)


def _replay(outcome: Any) -> Deferred[Any]:
    if isinstance(outcome, Failure):
        return fail(outcome)
    return succeed(amp.AmpBox(outcome))


class ReplicaFactory(Factory):
    """A server factory: one AMP connection per client, all sharing one service object
    and one :class:`ReplicaState`."""

    def __init__(self, service: Any, state: ReplicaState | None = None) -> None:
        self.service = service
        self.state = state if state is not None else ReplicaState()

    def buildProtocol(self, addr: Any) -> amp.AMP:
        proto = amp.AMP(locator=ReplicaLocator(self.service, self.state))
        proto.factory = self
        return proto
