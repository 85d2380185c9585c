"""The Twisted adapter against in-process servers on loopback: transparency, bad
replicas, request ids, deduplication, membership changes, close; its own AMP plumbing
(entries encoded once per call, answers through AMP's public box interfaces) and its one
reactor timer per client for hedges and deadlines."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, task
from twisted.internet.error import ConnectionDone
from twisted.protocols import amp
from zope.interface.verify import verifyObject

from demos.kvstore import Get, KVStore, Put
from replicaclient import (
    Balancer,
    ClientClosed,
    DeadlineExceeded,
    First,
    MembershipFeed,
    ReplicatedClient,
    read,
    write,
)
from replicaclient.ampwire import encode_pairs
from replicaclient.connection import ReplicaAMP
from replicaclient.errors import ReplicaFailed
from replicaclient.server import ReplicaFactory
from replicaclient.wakeups import Wakeups


def _reactor():
    from twisted.internet import reactor

    return reactor


class Unlucky(Exception):
    pass


@read()
class Boom(amp.Command):
    arguments = [(b"how", amp.Unicode())]
    response = [(b"ok", amp.Boolean())]
    errors = {Unlucky: b"UNLUCKY"}


@write()
class Count(amp.Command):
    arguments: list = []
    response = [(b"n", amp.Integer())]


class Service(KVStore):
    def __init__(self) -> None:
        super().__init__(_reactor())
        self.counted = 0
        self.request_ids: list[bytes] = []

    @Boom.responder
    def boom(self, how: str) -> dict:
        if how == "declared":
            raise Unlucky("as declared")
        if how == "undeclared":
            raise ValueError("a bug")
        return {"ok": True}

    @Count.responder
    def count(self) -> dict:
        self.counted += 1
        return {"n": self.counted}

    def locateResponder(self, name):
        return super().locateResponder(name)


class Recording(ReplicaFactory):
    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        original = proto.ampBoxReceived

        def received(box):
            if b"_rc_id" in box:
                self.service.request_ids.append(box[b"_rc_id"])
            original(box)

        proto.ampBoxReceived = received
        return proto


class _Raw(protocol.Protocol):
    """Bad replicas: what each does when a request arrives."""

    mode = "garbage"

    def dataReceived(self, data: bytes) -> None:
        if self.mode == "garbage":  # a key longer than AMP allows
            self.transport.write(b"\x7f\xff" + b"\x01" * 64)
        elif self.mode == "stalled":  # a value announced 65535 bytes long, never sent
            self.transport.write(b"\x00\x03abc\xff\xff" + b"\x01" * 64)
        elif self.mode == "half":
            self.transport.write(b"\x00\x07_answer\x00\x011\x00\x05va")
            self.transport.loseConnection()
        elif self.mode == "unknown-answer":
            self.transport.write(b"\x00\x07_answer\x00\x03zzz\x00\x00")
        # "silent": never answers


@pytest.fixture
def listen():
    ports = []

    def start(factory) -> str:
        port = _reactor().listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return f"tcp:127.0.0.1:{port.getHost().port}"

    yield start
    for port in ports:
        port.stopListening()


def raw_factory(mode: str):
    return protocol.Factory.forProtocol(type(f"Raw_{mode}", (_Raw,), {"mode": mode}))


@pytest_twisted.inlineCallbacks
def test_same_results_and_errors_as_one_plain_amp_connection(listen):
    endpoint = listen(ReplicaFactory(Service()))
    plain = yield _plain(endpoint)
    stub = ReplicatedClient(_reactor(), [endpoint], policy="first")
    try:
        for target in (plain, stub):
            assert (yield target.callRemote(Put, key="a", value="1")) == {}
            assert (yield target.callRemote(Get, key="a")) == {"value": "1"}
            assert (yield target.callRemote(Boom, how="fine")) == {"ok": True}
        outcomes = []
        for target in (plain, stub):
            got = []
            for call in (lambda t: t.callRemote(Boom, how="declared"),
                         lambda t: t.callRemote(Boom, how="undeclared"),
                         lambda t: t.callRemote(Boom),
                         lambda t: t.callRemote(Boom, how="x", extra=1)):
                try:
                    yield call(target)
                    got.append(None)
                except Exception as error:  # noqa: BLE001 - the kind of each failure is compared
                    if isinstance(error, ReplicaFailed):  # the same type, naming the replica
                        assert str(error).startswith(endpoint), error
                        kind = type(error).__bases__[-1]
                    else:
                        kind = type(error)
                    got.append((kind, str(error) if isinstance(error, Unlucky) else ""))
            outcomes.append(got)
        assert outcomes[0] == outcomes[1]
        assert outcomes[0][0] == (Unlucky, "as declared")
        assert outcomes[0][1][0] is amp.UnknownRemoteError
    finally:
        if plain.transport is not None:  # an undeclared error makes the server hang up
            plain.transport.loseConnection()
        yield stub.close()


def _plain(endpoint: str):
    from twisted.internet.endpoints import clientFromString, connectProtocol

    return connectProtocol(clientFromString(_reactor(), endpoint), amp.AMP())


@pytest.mark.parametrize("mode", ["garbage", "half", "unknown-answer", "unknown-command",
                                  "stalled"])
@pytest_twisted.inlineCallbacks
def test_a_bad_replica_fails_its_part_and_is_outvoted(listen, mode):
    good = [listen(ReplicaFactory(Service())) for _ in range(2)]
    bad = listen(protocol.Factory.forProtocol(amp.AMP) if mode == "unknown-command"
                 else raw_factory(mode))
    client = ReplicatedClient(_reactor(), [*good, bad], policy="vote", timeout=5)
    try:
        yield client.callRemote(Put, key="a", value="1")
        assert (yield client.callRemote(Get, key="a")) == {"value": "1"}
    finally:
        yield client.close()


@pytest.mark.parametrize("mode", ["garbage", "half", "unknown-answer", "unknown-command",
                                  "silent", "stalled"])
@pytest_twisted.inlineCallbacks
def test_a_bad_lone_replica_fails_the_call_by_the_deadline(listen, mode):
    bad = listen(protocol.Factory.forProtocol(amp.AMP) if mode == "unknown-command"
                 else raw_factory(mode))
    client = ReplicatedClient(_reactor(), [bad], policy="first", timeout=1.0)
    try:
        with pytest.raises(Exception) as caught:
            yield client.callRemote(Get, key="a")
        if mode in ("silent", "stalled"):
            assert isinstance(caught.value, DeadlineExceeded)
        else:
            assert client.metrics.replicas[bad].failures >= 1
        if mode == "unknown-command":
            assert isinstance(caught.value, amp.UnhandledCommand)
    finally:
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_every_copy_of_a_call_carries_one_request_id_and_stubs_are_distinct(listen):
    services = [Service() for _ in range(3)]
    endpoints = [listen(Recording(s)) for s in services]
    one = ReplicatedClient(_reactor(), endpoints, policy="vote")
    two = ReplicatedClient(_reactor(), endpoints, policy="vote")
    try:
        yield one.callRemote(Put, key="a", value="1")
        yield one.callRemote(Get, key="a")
        yield two.callRemote(Get, key="a")
        yield task.deferLater(_reactor(), 0.1, lambda: None)
        ids = [s.request_ids for s in services]
        assert ids[0] == ids[1] == ids[2]
        assert ids[0] == [f"{one.client_id}:1".encode(), f"{one.client_id}:2".encode(),
                          f"{two.client_id}:1".encode()]
        assert one.client_id != two.client_id
    finally:
        yield one.close()
        yield two.close()


@pytest_twisted.inlineCallbacks
def test_the_replica_helper_answers_a_repeated_request_id_once(listen):
    service = Service()
    endpoint = listen(ReplicaFactory(service))
    conn = yield _plain(endpoint)
    try:
        first, second = yield defer.gatherResults([
            conn.callRemoteString(b"Count", _rc_id=b"c1:1"),
            conn.callRemoteString(b"Count", _rc_id=b"c1:1"),
        ])
        third = yield conn.callRemoteString(b"Count", _rc_id=b"c1:1")
        other = yield conn.callRemoteString(b"Count", _rc_id=b"c2:1")
        assert service.counted == 2
        assert first[b"n"] == second[b"n"] == third[b"n"] == b"1"
        assert other[b"n"] == b"2"
    finally:
        conn.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_membership_follows_a_live_source(listen):
    a, b = Service(), Service()
    ea, eb = listen(ReplicaFactory(a)), listen(ReplicaFactory(b))
    feed = MembershipFeed({"a": ea})
    client = ReplicatedClient(_reactor(), membership=feed, policy="first")
    try:
        yield client.callRemote(Put, key="k", value="1")
        assert a.data == {"k": "1"} and b.data == {}
        feed.add("b", eb)
        feed.remove("a")
        assert client.members == {"b": eb}
        yield client.callRemote(Put, key="k", value="2")
        assert b.data == {"k": "2"} and a.data == {"k": "1"}
        feed.remove("b")
        with pytest.raises(Exception, match="no replica"):
            yield client.callRemote(Get, key="k")
    finally:
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_quorum_calls_between_two_stubs_in_one_process(listen):
    endpoints = [listen(ReplicaFactory(Service())) for _ in range(3)]
    one = ReplicatedClient(_reactor(), endpoints, policy="quorum")
    two = ReplicatedClient(_reactor(), endpoints, policy="quorum")
    try:
        yield one.callRemote(Put, key="k", value="from one")
        assert (yield two.callRemote(Get, key="k")) == {"value": "from one"}
        yield two.callRemote(Put, key="k", value="from two")
        assert (yield one.callRemote(Get, key="k")) == {"value": "from two"}
    finally:
        yield one.close()
        yield two.close()


@pytest_twisted.inlineCallbacks
def test_a_dead_replica_is_ejected_and_skipped(listen):
    from replicaclient import OutlierDetector
    from testing.replicas import free_port

    good = [listen(ReplicaFactory(Service())) for _ in range(2)]
    dead = f"tcp:127.0.0.1:{free_port()}"
    client = ReplicatedClient(_reactor(), [*good, dead], policy="vote",
                              ejection=OutlierDetector(consecutive=2, base=60))
    try:
        for _ in range(5):
            yield client.callRemote(Put, key="k", value="v")
        stats = client.metrics.replicas[dead]
        assert stats.ejections == 1 and stats.failures == 2 and stats.sent == 2
    finally:
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_close_fails_pending_calls_and_refuses_new_ones(listen):
    silent = listen(raw_factory("silent"))
    client = ReplicatedClient(_reactor(), [silent], policy="first", timeout=30)
    pending = client.callRemote(Get, key="k")
    yield task.deferLater(_reactor(), 0.05, lambda: None)
    yield client.close()
    with pytest.raises(ClientClosed):
        yield pending
    with pytest.raises(ClientClosed):
        yield client.callRemote(Get, key="k")


def test_discovered_services_become_membership_events(monkeypatch):
    from types import SimpleNamespace

    from discovery import client as discovery_client
    from replicaclient.discover import DiscoveryMembership, endpoint_for
    from replicaclient.membership import Added, Removed

    callbacks = []

    class FakeWatch:
        closed = False

        async def close(self):
            self.closed = True

    fake = FakeWatch()

    def watch(type_, callback, socket=None, reactor=None):
        assert type_ == "_kv._tcp"
        callbacks.append(callback)
        return fake

    monkeypatch.setattr(discovery_client, "watch", watch)
    events = []
    unsubscribe = DiscoveryMembership(None, "_kv._tcp").subscribe(events.append)
    record = SimpleNamespace(name="r1", host="h.local", addresses=("fe80::1", "10.0.0.2"),
                             port=7001)
    callbacks[0](SimpleNamespace(kind="added", service=record))
    callbacks[0](SimpleNamespace(kind="removed", service=record))
    assert events == [Added("r1", "tcp:10.0.0.2:7001"), Removed("r1")]
    unsubscribe()
    assert fake.closed
    assert endpoint_for("h", ("::1",), 5) == "tcp:\\:\\:1:5"


# -- the stub's own AMP plumbing and timers


def test_encode_pairs_is_amps_own_encoding():
    assert encode_pairs([(b"k", b"v1"), (b"_ask", b"")]) == b"\x00\x01k\x00\x02v1\x00\x04_ask\x00\x00"
    box = amp.AmpBox({b"key": b"k" * 300, b"_rc_id": b"abc:1", b"_command": b"Get",
                      b"_ask": b"r1", b"empty": b""})
    assert encode_pairs(sorted(box.items())) + b"\x00\x00" == box.serialize()
    # any order: AMP's parser builds the same box
    assert amp.parseString(encode_pairs(box.items()) + b"\x00\x00") == [box]


def test_encode_pairs_refuses_what_amp_refuses():
    with pytest.raises(amp.TooLong) as key:
        encode_pairs([(b"k" * 256, b"v")])
    assert key.value.isKey and key.value.isLocal
    with pytest.raises(amp.TooLong) as value:
        encode_pairs([(b"k", b"v" * 65536)])
    assert not value.value.isKey and value.value.keyName == b"k"
    encode_pairs([(b"k" * 255, b"v" * 65535)])  # the limits themselves are allowed


def test_the_replica_connection_relies_only_on_amps_public_box_interfaces():
    """What ``ReplicaAMP`` builds on; if Twisted changed any of it, this says which."""
    proto = ReplicaAMP(owner=None)  # type: ignore[arg-type]
    verifyObject(amp.IBoxReceiver, proto)  # ampBoxReceived, stopReceivingBoxes
    assert (amp.ASK, amp.ANSWER, amp.ERROR, amp.COMMAND) == (
        b"_ask", b"_answer", b"_error", b"_command")
    assert (amp.ERROR_CODE, amp.ERROR_DESCRIPTION) == (b"_error_code", b"_error_description")
    assert (amp.MAX_KEY_LENGTH, amp.MAX_VALUE_LENGTH) == (0xFF, 0xFFFF)
    assert amp.PROTOCOL_ERRORS == {amp.UNHANDLED_ERROR_CODE: amp.UnhandledCommand}


class _Sleeper:
    """Stands for a call: what ``Wakeups`` reads (seq, wake_at) and calls (wake)."""

    def __init__(self, seq: int, woken: list) -> None:
        self.seq = seq
        self.wake_at: float | None = None
        self.woken = woken

    def at(self, wakeups: Wakeups, when: float) -> None:
        if self.wake_at is not None:
            wakeups.forget()
        self.wake_at = when
        wakeups.at(when, self)  # type: ignore[arg-type]

    def finish(self, wakeups: Wakeups) -> None:
        self.wake_at = None
        wakeups.forget()

    def wake(self, now: float) -> None:
        self.woken.append((self.seq, now))


def test_wakeups_wake_live_calls_in_time_order_with_one_reactor_timer():
    clock = task.Clock()
    wakeups = Wakeups(clock)
    woken: list = []
    a, b, c, d = (_Sleeper(i, woken) for i in range(4))
    a.at(wakeups, 3.0)
    b.at(wakeups, 1.0)
    c.at(wakeups, 2.0)
    d.at(wakeups, 2.5)
    assert len(clock.getDelayedCalls()) == 1
    c.finish(wakeups)  # finished: never woken
    d.at(wakeups, 4.0)  # moved: woken once, at its new time
    clock.advance(1.0)
    assert woken == [(1, 1.0)]
    clock.advance(1.0)  # c's old entry: the timer fires, nobody is due
    assert woken == [(1, 1.0)]
    clock.advance(1.0)
    assert woken == [(1, 1.0), (0, 3.0)]
    clock.advance(1.0)
    assert woken == [(1, 1.0), (0, 3.0), (3, 4.0)]
    assert clock.getDelayedCalls() == [] and wakeups.heap == []


def test_wakeups_stay_small_when_calls_finish_before_their_time():
    clock = task.Clock()
    wakeups = Wakeups(clock)
    woken: list = []
    for seq in range(10000):
        call = _Sleeper(seq, woken)
        call.at(wakeups, 10.0 + seq * 0.001)  # a deadline far ahead, as every call has
        call.finish(wakeups)
    assert len(wakeups.heap) <= 200
    assert len(clock.getDelayedCalls()) == 1
    late = _Sleeper(-1, woken)
    late.at(wakeups, 5.0)
    clock.advance(30.0)
    assert woken == [(-1, 30.0)]


def test_wakeups_survive_a_wake_that_finishes_many_calls():
    clock = task.Clock()
    wakeups = Wakeups(clock)
    woken: list = []
    others = [_Sleeper(i, woken) for i in range(1, 200)]
    for call in others:
        call.at(wakeups, 2.0 + call.seq)

    class Closer(_Sleeper):
        def wake(self, now: float) -> None:
            super().wake(now)
            for call in others[:-1]:  # finishing these rebuilds the heap mid-wake
                call.finish(wakeups)

    Closer(0, woken).at(wakeups, 1.0)
    clock.advance(1.0)
    assert woken == [(0, 1.0)]
    assert [entry[2] for entry in wakeups.heap] == [others[-1]]
    assert [c.getTime() for c in clock.getDelayedCalls()] == [201.0]
    clock.advance(200.0)
    assert woken == [(0, 1.0), (199, 201.0)]


class _SilentFirst(Balancer):
    """Always puts the replica named ``first`` first: a call's primary goes there."""

    def __init__(self, first: str) -> None:
        super().__init__()
        self.first = first

    def order(self, candidates, now):
        return sorted(candidates, key=lambda name: name != self.first)


def _silent_and_good(listen):
    """Two replicas: one that accepts calls and never answers, and a working one."""
    return listen(raw_factory("silent")), listen(ReplicaFactory(Service()))


@pytest_twisted.inlineCallbacks
def test_a_hedge_answers_for_a_silent_replica(listen):
    # Every call goes to the silent replica first (warmup is never reached, so the
    # hedge waits initial_delay); only the hedge can answer it.
    silent, good = _silent_and_good(listen)
    hedged = ReplicatedClient(_reactor(), [silent, good], timeout=10,
                              policy=First(initial_delay=0.02, warmup=10**6),
                              balancer=_SilentFirst(silent))
    unhedged = ReplicatedClient(_reactor(), [silent, good], timeout=0.3,
                                policy=First(hedge=False), balancer=_SilentFirst(silent))
    try:
        assert (yield hedged.callRemote(Put, key="k", value="v")) == {}  # to both
        for _ in range(3):
            assert (yield hedged.callRemote(Get, key="k")) == {"value": "v"}
        stats = hedged.metrics.replicas
        assert stats[silent].sent == 4 and stats[silent].answers == 0
        assert stats[good].hedges_sent == 3 and stats[good].hedges_won == 3
        # Without hedging the same call waits for the deadline.
        with pytest.raises(DeadlineExceeded):
            yield unhedged.callRemote(Get, key="k")
        assert unhedged.metrics.replicas[silent].sent == 1
    finally:
        yield defer.gatherResults([hedged.close(), unhedged.close()])


@pytest_twisted.inlineCallbacks
def test_a_silent_replica_takes_one_request_not_every_call(listen):
    # With the default balancer a replica with a request out and no answer ever costs
    # PENALTY: the Put goes to both, the silent one never answers it, so every read
    # goes to the good one and none needs a hedge.
    silent, good = _silent_and_good(listen)
    stub = ReplicatedClient(_reactor(), [silent, good], timeout=10,
                            policy=First(initial_delay=0.02, warmup=10**6))
    try:
        assert (yield stub.callRemote(Put, key="k", value="v")) == {}
        for _ in range(20):
            assert (yield stub.callRemote(Get, key="k")) == {"value": "v"}
        stats = stub.metrics.replicas
        assert stats[silent].sent == 1 and stats[silent].answers == 0
        assert stats[good].sent == 21 and stats[good].hedges_sent == 0
        assert stub.balancer.loads[silent].outstanding == 1
        assert stub.balancer.loads[good].outstanding == 0
    finally:
        yield stub.close()


@pytest_twisted.inlineCallbacks
def test_a_value_amp_cannot_carry_fails_the_call_and_sends_nothing(listen):
    endpoint = listen(ReplicaFactory(Service()))
    plain = yield _plain(endpoint)
    stub = ReplicatedClient(_reactor(), [endpoint], policy="first")
    try:
        with pytest.raises(amp.TooLong):  # one AMP connection raises at once
            plain.callRemote(Put, key="k", value="x" * 70000)
        with pytest.raises(amp.TooLong):  # the stub fails the call
            yield stub.callRemote(Put, key="k", value="x" * 70000)
        assert stub._calls == set()
        assert (yield stub.callRemote(Put, key="k", value="fits")) == {}
        assert (yield stub.callRemote(Get, key="k")) == {"value": "fits"}
        assert stub.metrics.replicas[endpoint].sent == 2
    finally:
        plain.transport.loseConnection()
        yield stub.close()


@pytest_twisted.inlineCallbacks
def test_requests_a_silent_replica_never_answers_are_abandoned_at_the_deadline(listen):
    # The hedge wins at once; the silent primary's request is kept until the call's
    # deadline (an answer could still come and teach its latency), then forgotten and
    # counted as that replica's failure: nothing stays "in flight" for ever.
    silent, good = _silent_and_good(listen)
    stub = ReplicatedClient(_reactor(), [silent, good], timeout=0.3,
                            policy=First(initial_delay=0.02, warmup=10**6),
                            balancer=_SilentFirst(silent))
    try:
        yield stub.callRemote(Put, key="k", value="v")
        for _ in range(3):
            assert (yield stub.callRemote(Get, key="k")) == {"value": "v"}
        stats = stub.metrics.replicas[silent]
        assert stats.sent == 4 and stats.outstanding == 4 and stats.failures == 0
        yield task.deferLater(_reactor(), 0.5, lambda: None)
        assert stats.outstanding == 0 and stats.failures == 4
        assert stub.balancer.loads[silent].outstanding == 0
        proto = stub.replicas[silent].proto
        assert proto is not None
        # The Put it never answered is kept as a hint; replaying it is a request of the
        # stub's own, with the same deadline.
        yield _until(lambda: proto.waiting == {})
    finally:
        yield stub.close()


def _until(condition, timeout: float = 20.0):
    """A Deferred that fires once ``condition()`` holds (polled); fails after ``timeout``."""
    reactor = _reactor()

    async def poll() -> None:
        deadline = reactor.seconds() + timeout
        while not condition():
            assert reactor.seconds() < deadline, "condition never held"
            await task.deferLater(reactor, 0.01, lambda: None)

    return defer.ensureDeferred(poll())


@pytest.mark.parametrize(("mode", "kind", "did"), [
    ("garbage", amp.TooLong, "sent a malformed box (a key longer than 255 bytes)"),
    ("half", ConnectionDone, "closed the connection"),
    ("unknown-command", amp.UnhandledCommand, "does not know the command"),
])
@pytest_twisted.inlineCallbacks
def test_every_error_a_replica_causes_names_it_and_what_it_did(listen, mode, kind, did):
    bad = listen(protocol.Factory.forProtocol(amp.AMP) if mode == "unknown-command"
                 else raw_factory(mode))
    client = ReplicatedClient(_reactor(), [bad], policy=First(retries=0), timeout=5)
    try:
        with pytest.raises(Exception) as caught:
            yield client.callRemote(Get, key="a")
        error = caught.value
        assert isinstance(error, ReplicaFailed) and error.replica == bad
        assert isinstance(error, kind) or isinstance(error.cause, kind), repr(error)
        assert str(error).startswith(f"{bad} {did}"), str(error)
    finally:
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_read_repair_answers_the_newest_write_and_repairs_the_stale_replica(listen):
    from replicaclient import Tag

    services = [Service() for _ in range(3)]
    endpoints = [listen(ReplicaFactory(s)) for s in services]
    tag = Tag(5, "other", 1).encode()
    for endpoint in endpoints[:2]:  # a write the third replica missed
        conn = yield _plain(endpoint)
        yield conn.callRemoteString(b"Put", key=b"k", value=b"new", _rc_reg=b"k", _rc_tag=tag)
        conn.transport.loseConnection()
    services[2].data["k"] = "stale"
    stub = ReplicatedClient(_reactor(), endpoints, policy=First(read_repair=1.0))
    try:
        for _ in range(3):
            assert (yield stub.callRemote(Get, key="k")) == {"value": "new"}
        yield _until(lambda: services[2].data.get("k") == "new")
        assert stub.metrics.read_repairs == 1
    finally:
        yield stub.close()


@pytest_twisted.inlineCallbacks
def test_a_replica_that_joins_is_synced_page_by_page_before_it_serves_reads(listen):
    a, b = Service(), Service()
    ea, eb = listen(ReplicaFactory(a)), listen(ReplicaFactory(b))
    feed = MembershipFeed({"a": ea})
    client = ReplicatedClient(_reactor(), membership=feed, sync_page=3)
    try:
        keys = [f"k{i}" for i in range(10)]
        for k in keys:
            yield client.callRemote(Put, key=k, value=f"v-{k}")
        feed.add("b", eb)
        # Every read, from now on, answers the written value: b gets none until synced.
        for _ in range(5):
            for k in keys:
                assert (yield client.callRemote(Get, key=k)) == {"value": f"v-{k}"}
        yield _until(lambda: b.data == a.data)
        assert client.metrics.syncs == 1 and client.metrics.synced_registers == 10
        assert client.replicas["b"].readable  # and now takes reads
    finally:
        yield client.close()


class _Cuttable(ReplicaFactory):
    """A replica whose network can be cut (listening stopped, connections aborted) and
    restored on the same port, the process and its memory unchanged."""

    def __init__(self, service) -> None:
        super().__init__(service)
        self.protos: list = []
        self.port = None

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        self.protos.append(proto)
        return proto

    def up(self, number: int = 0) -> str:
        self.port = _reactor().listenTCP(number, self, interface="127.0.0.1")
        return f"tcp:127.0.0.1:{self.port.getHost().port}"

    def cut(self):
        for proto in self.protos:
            if proto.transport is not None:
                proto.transport.abortConnection()
        self.protos = []
        return self.port.stopListening()


@pytest.mark.parametrize("hint_count", [100, 2])
@pytest_twisted.inlineCallbacks
def test_writes_missed_during_a_network_cut_reach_the_replica_when_it_is_back(listen, hint_count):
    # Same process, same memory, same incarnation: within the hint queue's bounds the
    # hinted writes are replayed; past them (hint_count=2, three writes missed) they are
    # dropped and a full sync brings the replica up to date instead.
    services = [Service() for _ in range(3)]
    endpoints = [listen(ReplicaFactory(s)) for s in services[:2]]
    cuttable = _Cuttable(services[2])
    endpoint = cuttable.up()
    number = int(endpoint.rsplit(":", 1)[1])
    client = ReplicatedClient(_reactor(), [*endpoints, endpoint], hint_count=hint_count)
    try:
        yield client.callRemote(Put, key="k0", value="before")
        yield _until(lambda: services[2].data.get("k0") == "before")
        yield _until(lambda: client.replicas[endpoint].incarnation is not None)
        yield cuttable.cut()
        for i in range(1, 4):
            yield client.callRemote(Put, key=f"k{i}", value=f"missed {i}")
        assert services[2].data == {"k0": "before"}
        cuttable.up(number)
        yield _until(lambda: services[2].data == services[0].data)
        yield _until(lambda: client.replicas[endpoint].readable)
        m = client.metrics
        if hint_count == 100:
            assert (m.hints_queued, m.hints_replayed, m.hints_dropped, m.syncs) == (3, 3, 0, 0)
        else:
            assert (m.hints_queued, m.hints_replayed, m.hints_dropped) == (2, 0, 3)
            assert m.syncs == 1 and m.synced_registers == 4
    finally:
        yield client.close()
        if cuttable.port is not None:
            yield cuttable.port.stopListening()


class _BadSource(ReplicaFactory):
    """A replica that serves calls honestly but answers a sync's Dump with ``mode``."""

    mode = "garbage"

    def buildProtocol(self, addr):
        from replicaclient.server import ReplicaLocator
        from replicaclient.sync import Entry, encode_page
        from replicaclient.tag import Tag, hybrid

        mode = self.mode

        class Locator(ReplicaLocator):
            def _dump(self, box):
                if mode == "garbage":
                    return amp.AmpBox({b"_rc_n": b"lots"})
                entries, more = self.state.page(None, 1000)
                future = hybrid(int(_reactor().seconds() * 1000) + 3_600_000)
                return amp.AmpBox(encode_page(
                    [Entry(e.register, Tag(future, "liar", 1), e.command,
                           ((b"key", e.register), (b"value", b"forged"))) for e in entries],
                    more))

        proto = amp.AMP(locator=Locator(self.service, self.state))
        proto.factory = self
        return proto


@pytest.mark.parametrize("mode", ["garbage", "future"])
@pytest_twisted.inlineCallbacks
def test_a_sync_source_that_sends_garbage_or_future_tags_is_not_used(listen, mode):
    good, bad, new = Service(), Service(), Service()
    bad_factory = _BadSource(bad)
    bad_factory.mode = mode
    feed = MembershipFeed({"good": listen(ReplicaFactory(good)), "bad": listen(bad_factory)})
    client = ReplicatedClient(_reactor(), membership=feed)
    try:
        yield client.callRemote(Put, key="k", value="v")
        yield _until(lambda: bad.data == {"k": "v"})
        yield _until(lambda: all(r.readable and r.incarnation for r in client.replicas.values()))
        feed.add("new", listen(ReplicaFactory(new)))
        yield _until(lambda: client.metrics.syncs == 1)
        assert new.data == {"k": "v"}
    finally:
        yield client.close()
