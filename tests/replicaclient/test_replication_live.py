"""Real replica processes: every write reaches every replica, a replica that missed
writes or restarted empty catches up on its own, concurrent writers converge, and a
lying replica cannot poison a sync."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.protocols import amp

from demos.kvstore import Get, Put
from replicaclient import ReplicatedClient
from testing import replicas as processes


def _reactor():
    from twisted.internet import reactor

    return reactor


async def direct(replica: processes.KVReplica, key: str) -> str | None:
    """What one replica holds for ``key``, asked over a plain AMP connection (None if it
    cannot be reached)."""
    reactor = _reactor()
    try:
        proto = await connectProtocol(clientFromString(reactor, replica.endpoint), amp.AMP())
    except Exception:  # noqa: BLE001 - a replica that is down or restarting is unreachable
        return None
    try:
        return str((await proto.callRemote(Get, key=key))["value"])
    except Exception:  # noqa: BLE001 - a replica going away mid-call reads as unreachable
        return None
    finally:
        proto.transport.loseConnection()


async def everywhere(replicas, keys) -> list[list[str | None]]:
    return [[await direct(r, k) for k in keys] for r in replicas]


async def until(check, timeout: float = 10.0):
    """Poll the coroutine function ``check`` until it returns a true value; return the
    last value it returned (true or not) when ``timeout`` runs out."""
    reactor = _reactor()
    deadline = reactor.seconds() + timeout
    while True:
        got = await check()
        if got or reactor.seconds() >= deadline:
            return got
        await task.deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_put_through_the_default_policy_reaches_every_replica():
    replicas = processes.start((), (), ())
    client = ReplicatedClient(_reactor(), [r.endpoint for r in replicas])
    try:
        await client.callRemote(Put, key="k", value="v1")

        async def all_hold():
            got = await everywhere(replicas, ["k"])
            return got if got == [["v1"]] * 3 else None

        assert await until(all_hold, 10) == [["v1"]] * 3, await everywhere(replicas, ["k"])
    finally:
        await client.close()
        processes.stop(replicas)


@pytest_twisted.ensureDeferred
async def test_a_replica_killed_during_a_put_and_restarted_empty_catches_up_on_its_own():
    replicas = processes.start((), (), ("--delay-ms", "1000"))
    victim = replicas[2]
    client = ReplicatedClient(_reactor(), [r.endpoint for r in replicas])
    try:
        await client.callRemote(Put, key="a", value="1")

        async def met():  # the stub has met the victim's first incarnation
            return client.replicas[victim.endpoint].incarnation is not None

        assert await until(met, 10)
        put = client.callRemote(Put, key="k", value="newest")
        assert client.metrics.replicas[victim.endpoint].outstanding >= 1
        victim.kill()  # its answer (and its memory) are gone
        await put
        victim.restart()  # empty, same port; no call goes through the stub from here on

        async def caught_up():
            got = [await direct(victim, "k"), await direct(victim, "a")]
            return got if got == ["newest", "1"] else None

        assert await until(caught_up, 10) == ["newest", "1"]

        async def synced():  # the new incarnation is synced too (hints came first)
            return client.metrics.syncs >= 1

        assert await until(synced, 10), client.metrics.snapshot()
        metrics = client.metrics.snapshot()
        assert metrics["hints_queued"] >= 1 and metrics["hints_replayed"] >= 1
        assert metrics["sync_seconds_count"] == metrics["syncs"] >= 1
    finally:
        await client.close()
        processes.stop(replicas)


@pytest_twisted.ensureDeferred
async def test_three_stubs_writing_concurrently_leave_every_replica_identical():
    replicas = processes.start((), ("--delay-ms", "1"), ())
    reactor = _reactor()
    stubs = [ReplicatedClient(reactor, [r.endpoint for r in replicas]) for _ in range(3)]
    keys = ["x", "y", "z"]

    async def writer(n: int, stub: ReplicatedClient) -> None:
        for i in range(15):
            await defer.gatherResults([
                stub.callRemote(Put, key=k, value=f"{n}.{i}.{k}") for k in keys])

    try:
        await defer.gatherResults(
            [defer.ensureDeferred(writer(n, s)) for n, s in enumerate(stubs)])

        async def converged():
            got = await everywhere(replicas, keys)
            return got if got[0] == got[1] == got[2] and all(got[0]) else None

        got = await until(converged, 10)
        assert got, await everywhere(replicas, keys)
        assert all(v.endswith(k) for v, k in zip(got[0], keys, strict=True))
    finally:
        for s in stubs:
            await s.close()
        processes.stop(replicas)


@pytest_twisted.ensureDeferred
async def test_a_lying_replica_does_not_change_what_a_sync_copies():
    # Under vote a restarted replica is synced from the three others; the liar offers
    # forged values with newer tags (newest-wins alone would copy them), the two honest
    # ones agree, and only what a majority of the sources agree on is copied.
    replicas = processes.start((), (), (), ("--lie",))
    victim = replicas[2]
    keys = [f"k{i}" for i in range(5)]
    client = ReplicatedClient(_reactor(), [r.endpoint for r in replicas], policy="vote")
    try:
        for k in keys:
            await client.callRemote(Put, key=k, value=f"honest-{k}")
        victim.restart()
        want = [f"honest-{k}" for k in keys]

        async def synced():
            got = [await direct(victim, k) for k in keys]
            return got if got == want else None

        assert await until(synced, 15) == want, [await direct(victim, k) for k in keys]
    finally:
        await client.close()
        processes.stop(replicas)
