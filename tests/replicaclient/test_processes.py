"""Real replica processes on loopback: vote against a liar, hedging around a slow
replica, and linearizable quorum calls while a replica is killed."""

from __future__ import annotations

import random
import time

import pytest
import pytest_twisted
from twisted.internet import defer, task

from demos.kvstore import Get, Put
from replicaclient import NoQuorum, ReplicatedClient
from testing import replicas as processes
from tests.replicaclient.linearizability import INF, Op, check


def _reactor():
    from twisted.internet import reactor

    return reactor


@pytest.fixture(scope="module")
def trio():
    """Two honest replicas and a liar."""
    replicas = processes.start((), (), ("--lie",))
    yield replicas
    processes.stop(replicas)


def _said(client):
    said: list[tuple[str, str]] = []
    client.observers.append(lambda e: said.append((e.replica, e.text)))
    return said


@pytest_twisted.inlineCallbacks
def test_vote_outvotes_a_liar_two_to_one(trio):
    _honest, _honest2, liar = trio
    client = ReplicatedClient(_reactor(), [r.endpoint for r in trio], policy="vote", timeout=5)
    said = _said(client)
    try:
        yield client.callRemote(Put, key="colour", value="blue")  # the liar's {} may count
        liar_wins = client.metrics.replicas[liar.endpoint].won
        for _ in range(5):
            result = yield client.callRemote(Get, key="colour")
            assert result == {"value": "blue"}
        # The liar kept lying and kept losing (it may answer after the vote is decided).
        yield _settle(lambda: (liar.endpoint, "{'value': 'forged(blue)'}") in said)
        assert client.metrics.replicas[liar.endpoint].won == liar_wins
    finally:
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_vote_one_to_one_is_a_clear_no_quorum(trio):
    honest, _, liar = trio
    dead = f"tcp:127.0.0.1:{processes.free_port()}"
    client = ReplicatedClient(_reactor(), [honest.endpoint, liar.endpoint, dead],
                              policy="vote", timeout=5)
    try:
        yield client.callRemote(Put, key="shape", value="round")  # the liar stores honestly
        with pytest.raises(NoQuorum) as caught:
            yield client.callRemote(Get, key="shape")
        replies = caught.value.replies
        assert replies[honest.endpoint] == "{'value': 'round'}"
        assert replies[liar.endpoint] == "{'value': 'forged(round)'}"
        assert "ConnectionRefused" in replies[dead]
        assert caught.value.threshold == 2
    finally:
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_first_hides_a_replica_300ms_slow():
    replicas = processes.start(("--delay-ms", "300"), (), ())
    slow = replicas[0]
    client = ReplicatedClient(_reactor(), [r.endpoint for r in replicas], policy="first",
                              timeout=10)
    try:
        # Reads only: a write goes to every replica and would teach the balancer at once
        # that this one is slow, so no read would ever be sent to it.
        for _ in range(21):
            yield client.callRemote(Get, key="nothing")
        stats = client.metrics.replicas[slow.endpoint]
        assert stats.sent > 0, "the slow replica was never tried: the test shows nothing"
        assert stats.won == 0
        assert client.metrics.hedges_won > 0
        assert client.metrics.succeeded == 21
    finally:
        yield client.close()
        processes.stop(replicas)


@pytest_twisted.inlineCallbacks
def test_quorum_is_linearizable_with_concurrent_clients_while_a_replica_dies():
    replicas = processes.start((), ("--delay-ms", "2"), ())
    victim = replicas[1]
    reactor = _reactor()
    clients = [ReplicatedClient(reactor, [r.endpoint for r in replicas], policy="quorum",
                                timeout=5) for _ in range(4)]
    assert len({c.client_id for c in clients}) == 4
    history: list[Op] = []
    done = [0]
    killed_at: list[int] = []
    per_client = 30

    async def worker(n: int, client: ReplicatedClient) -> None:
        rng = random.Random(n)
        for i in range(per_client):
            key = rng.choice("xy")
            start = time.monotonic()
            if rng.random() < 0.5:
                value = f"{n}.{i}"
                try:
                    await client.callRemote(Put, key=key, value=value)
                    end = time.monotonic()
                except Exception:  # noqa: BLE001 - a failed write may still have happened
                    end = INF
                history.append(Op(n, "put", key, value, start, end))
            else:
                try:
                    result = await client.callRemote(Get, key=key)
                    history.append(Op(n, "get", key, result["value"], start, time.monotonic()))
                except Exception:  # noqa: BLE001 - a failed read is an op without an end
                    history.append(Op(n, "get", key, "", start, INF))
            done[0] += 1
            if done[0] == 40 and not killed_at:
                victim.kill()
                killed_at.append(done[0])

    try:
        yield defer.gatherResults(
            [defer.ensureDeferred(worker(n, c)) for n, c in enumerate(clients)])
        assert killed_at, "the replica was never killed"
        failed = [op for op in history if op.end == INF]
        assert not failed, f"calls failed with a majority alive: {failed[:3]}"
        verdict = check(history)
        assert verdict == {"x": True, "y": True}, verdict
        reads = [op for op in history if op.kind == "get" and op.value]
        assert reads, "no read saw a written value: the history is too weak to mean much"
    finally:
        for c in clients:
            yield c.close()
        processes.stop(replicas)


def _settle(condition, timeout: float = 5.0):
    """A Deferred that fires once ``condition()`` holds (polled), or after ``timeout``."""
    reactor = _reactor()

    async def poll() -> None:
        deadline = reactor.seconds() + timeout
        while not condition() and reactor.seconds() < deadline:
            await task.deferLater(reactor, 0.01, lambda: None)

    return defer.ensureDeferred(poll())
