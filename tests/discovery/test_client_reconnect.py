"""The client library's reconnecting, on a MemoryReactorClock: when it tries the daemon's
socket again, and what it sends on a connection made again. The same against real daemons that
restart is in test_daemon.py."""

from __future__ import annotations

import json

import pytest
from twisted.internet import defer, error
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from discovery import client

PATH = "/nonexistent/discovery.sock"


def attempts(reactor: MemoryReactorClock) -> int:
    return len(reactor.unixClients)


def refuse_last(reactor: MemoryReactorClock) -> None:
    """The last connection attempt fails, as when no daemon listens."""
    factory = reactor.unixClients[-1][1]
    factory.clientConnectionFailed(reactor.connectors[-1],
                                   Failure(error.ConnectionRefusedError("no daemon")))


def accept_last(reactor: MemoryReactorClock):
    """The last connection attempt succeeds: its protocol and the transport it writes to."""
    factory = reactor.unixClients[-1][1]
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def sent(transport: StringTransport) -> list[dict]:
    lines = transport.value().splitlines()
    transport.clear()
    return [json.loads(line) for line in lines]


def next_wait(reactor: MemoryReactorClock) -> float:
    """How long until the one timer set (the next connection attempt) fires."""
    (call,) = reactor.getDelayedCalls()
    return round(call.getTime() - reactor.seconds(), 6)


def test_connect_with_no_daemon_fails_at_once_and_tries_no_more() -> None:
    reactor = MemoryReactorClock()
    connecting = defer.ensureDeferred(client.connect(PATH, reactor=reactor))
    refuse_last(reactor)
    reactor.advance(0)
    with pytest.raises(client.NotConnected, match="cannot connect to discoveryd"):
        connecting.result.raiseException()
    connecting.addErrback(lambda _: None)
    reactor.advance(10)
    assert attempts(reactor) == 1 and reactor.getDelayedCalls() == []


def test_connect_refused_by_the_daemon_fails_and_tries_no_more() -> None:
    reactor = MemoryReactorClock()
    connecting = defer.ensureDeferred(client.connect(PATH, reactor=reactor))
    proto, transport = accept_last(reactor)
    (hello,) = sent(transport)
    proto.dataReceived(json.dumps({"id": hello["id"], "ok": False, "error": {
        "code": "busy", "message": "too many clients"}}).encode() + b"\n")
    assert transport.disconnecting
    proto.connectionLost(Failure(error.ConnectionDone()))
    with pytest.raises(client.DiscoveryError, match="too many clients"):
        connecting.result.raiseException()
    connecting.addErrback(lambda _: None)
    reactor.advance(10)
    assert attempts(reactor) == 1 and reactor.getDelayedCalls() == []


def test_a_missing_daemon_is_tried_again_at_doubling_waits_up_to_two_seconds() -> None:
    reactor = MemoryReactorClock()
    watch = client.watch("_kv._tcp", socket=PATH, reactor=reactor)
    waits = []
    for _ in range(8):
        assert attempts(reactor) == len(waits) + 1
        refuse_last(reactor)
        waits.append(next_wait(reactor))
        reactor.advance(waits[-1])
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert attempts(reactor) == 9
    assert not watch.closed


def test_a_lost_connection_is_made_again_and_the_watch_subscribed_again() -> None:
    reactor = MemoryReactorClock()
    watch = client.watch("_kv._tcp", socket=PATH, reactor=reactor)
    proto, transport = accept_last(reactor)
    assert [m["op"] for m in sent(transport)] == ["hello"]
    proto.dataReceived(b'{"id": 1, "ok": true, "host": "h"}\n')
    assert [(m["op"], m.get("type")) for m in sent(transport)] == [("watch", "_kv._tcp")]
    proto.dataReceived(b'{"id": 2, "ok": true, "services": []}\n')
    assert watch.ready.called

    proto.connectionLost(Failure(error.ConnectionDone()))
    assert next_wait(reactor) == 0.05
    reactor.advance(0.05)
    proto, transport = accept_last(reactor)
    assert [m["op"] for m in sent(transport)] == ["hello"]
    proto.dataReceived(b'{"id": 3, "ok": true, "host": "h"}\n')
    assert [(m["op"], m.get("type")) for m in sent(transport)] == [("watch", "_kv._tcp")]
    assert reactor.getDelayedCalls() == []


def test_a_daemon_refusing_the_connection_made_again_is_tried_later_each_time() -> None:
    """A daemon that accepts and then refuses (too many clients) is not hammered: each refused
    connection is dropped and the next attempt waits twice as long."""
    reactor = MemoryReactorClock()
    watch = client.watch("_kv._tcp", socket=PATH, reactor=reactor)
    waits = []
    for _ in range(4):
        proto, transport = accept_last(reactor)
        (hello,) = sent(transport)
        proto.dataReceived(json.dumps({"id": hello["id"], "ok": False, "error": {
            "code": "busy", "message": "too many clients"}}).encode() + b"\n")
        assert transport.disconnecting
        proto.connectionLost(Failure(error.ConnectionDone()))
        waits.append(next_wait(reactor))
        reactor.advance(waits[-1])
    assert waits == [0.1, 0.2, 0.4, 0.8]
    assert not watch.closed
