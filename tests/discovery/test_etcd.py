"""The etcd backend against real etcd: a three-member cluster on loopback started here, and
real ``discoveryd`` processes sharing it (``--backend etcd://...``).

Every test writes under a key prefix of its own, so they share one cluster; the fault tests
put the cluster back (``heal``) when they are done. Leases use ttl=3 s here (6 s by default).
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from discovery import client
from testing.etcd_cluster import EtcdCluster, EtcdMember, free_ports

from .conftest import DISCOVERY
from .test_daemon import eventually, sleep

TTL = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path_factory.mktemp("etcd"), 3).start()
    yield c
    c.close()


@pytest.fixture
def prefix(cluster: EtcdCluster) -> Iterator[str]:
    cluster.heal()
    yield f"/xt-test-{secrets.token_hex(4)}/"


def etcd_keys(member: EtcdMember, prefix: str) -> dict[str, tuple[dict, int]]:
    """What etcd holds under ``prefix``: key -> (decoded JSON value, lease id)."""
    end = bytearray(prefix.encode())
    end[-1] += 1
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(), "range_end": base64.b64encode(bytes(end)).decode()})
    req = urllib.request.Request(f"http://{member.hostport}/v3/kv/range", data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        kvs = json.loads(r.read()).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): (json.loads(base64.b64decode(kv["value"])), int(kv.get("lease", 0))) for kv in kvs}


def backend_of(d) -> dict:
    out = json.loads(d.cli("list", "--json").stdout)
    return next(b for b in out["backends"] if b["backend"] == "etcd")


async def backend_state(d, state: str, timeout: float = 10.0) -> dict:
    async def check():
        b = backend_of(d)
        return b if b["state"] == state else None

    return await eventually(check, timeout=timeout)


async def names_on(d, stype: str) -> list[tuple[str, str]]:
    return sorted((r.name, r.source) for r in await client.lookup(stype, wait=0, socket=d.socket))


async def next_of(w, kind: str, name: str, timeout: float) -> float:
    """Wait for a watch event; return the time (reactor clock) it arrived."""
    deadline = reactor.seconds() + timeout
    while True:
        left = deadline - reactor.seconds()
        assert left > 0, f"no {kind} {name} within {timeout} s"
        ev = await w.next_event(timeout=left)
        if (ev.kind, ev.service.name) == (kind, name):
            return reactor.seconds()


@pytest_twisted.ensureDeferred
async def test_registration_seen_by_another_daemon_and_owner_death_at_once(daemons, cluster, prefix, stype) -> None:
    url = cluster.backend(prefix=prefix, ttl=TTL)
    a, b = daemons("ha", "--no-mdns", "--backend", url), daemons("hb", "--no-mdns", "--backend", url)
    w = client.watch(stype, socket=b.socket)
    await w.ready
    owner = subprocess.Popen([DISCOVERY, "--socket", a.socket, "register", "--name", "Office", "--type", stype,
                              "--port", "6010", "--txt", "screen=0", "--json", "--", "sleep", "60"], stdout=subprocess.PIPE)
    try:
        ev = await w.next_event(timeout=5)
        s = ev.service
        assert (ev.kind, s.name, s.host, s.port, s.txt, s.source) == ("added", "Office", "ha", 6010, {"screen": "0"}, "etcd")
        assert s.addresses == ("127.0.0.1",)
        # the key layout: <prefix><type>/<name, lower-case>, a JSON value, bound to ha's lease
        held = etcd_keys(cluster.members[0], prefix)
        assert list(held) == [f"{prefix}{stype}/office"]
        value, lease = held[f"{prefix}{stype}/office"]
        assert value["daemon"] == "ha" and value["name"] == "Office" and value["owner_pid"] > 0 and lease != 0
        assert f"{lease:x}" == backend_of(a)["lease"]
        assert await names_on(a, stype) == [("Office", "local")]
        assert await names_on(b, stype) == [("Office", "etcd")]
        t0 = reactor.seconds()
        owner.kill()  # the daemon sees the owner's connection close and deletes the key at once
        t = await next_of(w, "removed", "Office", timeout=TTL)
        assert t - t0 < 1.0, f"owner death took {t - t0:.2f} s to reach the other daemon"
        assert etcd_keys(cluster.members[1], prefix) == {}
    finally:
        owner.kill()
        owner.wait()
        await w.close()


@pytest_twisted.ensureDeferred
async def test_conflicts_are_refused_across_daemons(daemons, cluster, prefix, stype) -> None:
    url = cluster.backend(prefix=prefix, ttl=TTL)
    a, b = daemons("ha", "--no-mdns", "--backend", url), daemons("hb", "--no-mdns", "--backend", url)
    first = await client.register("dup", stype, 1000, socket=a.socket)
    await eventually(lambda: names_on(b, stype))
    second = await client.register("DUP", stype, 2000, socket=b.socket)
    err = await second.lost.addTimeout(5, reactor)
    assert err.code == "conflict" and "already registered in etcd by daemon 'ha'" in err.message
    # the holder is untouched, everywhere
    assert [(r.name, r.port, r.source) for r in await client.lookup(stype, wait=0, socket=b.socket)] == [("dup", 1000, "etcd")]
    assert [(r.port, r.source) for r in await client.lookup(stype, wait=0, socket=a.socket)] == [(1000, "local")]
    assert [v["port"] for v, _ in etcd_keys(cluster.members[2], prefix).values()] == [1000]
    # once the holder withdraws, the name is free
    await first.withdraw()
    await eventually(lambda: _negate(names_on(b, stype)))
    third = await client.register("dup", stype, 3000, socket=b.socket)
    await eventually(lambda: _contains(names_on(a, stype), ("dup", "etcd")))
    assert not third.lost.called
    await third.withdraw()


async def _negate(coro) -> bool:
    return not await coro


async def _contains(coro, item) -> bool:
    return item in await coro


@pytest_twisted.ensureDeferred
async def test_daemon_stop_revokes_restart_remakes_and_death_expires_within_ttl(daemons, cluster, prefix, stype) -> None:
    url = cluster.backend(prefix=prefix, ttl=TTL)
    a, b = daemons("ha", "--no-mdns", "--backend", url), daemons("hb", "--no-mdns", "--backend", url)
    w = client.watch(stype, socket=b.socket)
    await w.ready
    c = await client.connect(a.socket)
    try:
        await c.register("live", stype, 4242)
        await next_of(w, "added", "live", timeout=5)
        t0 = reactor.seconds()
        a.stop()  # SIGTERM: the lease is revoked, the key goes at once
        t = await next_of(w, "removed", "live", timeout=TTL + 2)
        assert t - t0 < 1.5
        a.start()  # the client reconnects and registers again; the daemon puts it back
        await next_of(w, "added", "live", timeout=10)
        a.stop(signal.SIGKILL)  # no revoke: etcd expires the lease
        t0 = reactor.seconds()
        t = await next_of(w, "removed", "live", timeout=TTL + 3)
        assert t - t0 <= TTL + 1.5, f"took {t - t0:.1f} s with a {TTL} s lease"
    finally:
        await c.close()
        await w.close()


@pytest_twisted.ensureDeferred
async def test_mdns_and_etcd_at_once_answers_merged_with_their_source(daemons, cluster, prefix, stype) -> None:
    url = cluster.backend(prefix=prefix, ttl=TTL)
    both = daemons("hboth", "--backend", url)
    mdns_only = daemons("hmdns")
    etcd_only = daemons("hetcd", "--no-mdns", "--backend", url)
    regs = [await client.register("via-mdns", stype, 1, socket=mdns_only.socket),
            await client.register("via-etcd", stype, 2, socket=etcd_only.socket),
            await client.register("from-both", stype, 3, socket=both.socket)]
    try:
        want = [("from-both", "local"), ("via-etcd", "etcd"), ("via-mdns", "remote")]
        await eventually(lambda: _equals(names_on(both, stype), want))
        await eventually(lambda: _contains(names_on(etcd_only, stype), ("from-both", "etcd")))
        await eventually(lambda: _contains(names_on(mdns_only, stype), ("from-both", "remote")))
        st = json.loads(both.cli("list", "--json").stdout)["backends"]
        assert [(x["backend"], x["state"]) for x in st] == [("mdns", "up"), ("etcd", "up")]
        assert json.loads(mdns_only.cli("list", "--json").stdout)["backends"][0]["backend"] == "mdns"
    finally:
        for r in regs:
            await r.withdraw()


async def _equals(coro, value) -> bool:
    return await coro == value


@pytest_twisted.ensureDeferred
async def test_one_member_killed_registrations_survive(daemons, cluster, prefix, stype) -> None:
    m0 = cluster.members[0]
    a = daemons("ha", "--no-mdns", "--backend", cluster.backend(0, 1, 2, prefix=prefix, ttl=TTL))  # talks to m0 first
    b = daemons("hb", "--no-mdns", "--backend", cluster.backend(2, 1, prefix=prefix, ttl=TTL))
    assert backend_of(a)["endpoint"].endswith(m0.hostport)
    c = await client.connect(a.socket)
    try:
        await c.register("survivor", stype, 1)
        await eventually(lambda: _contains(names_on(b, stype), ("survivor", "etcd")))
        m0.kill()
        await sleep(TTL + 1.0)  # longer than the lease: it lives only if ha moved its keepalives
        assert await names_on(b, stype) == [("survivor", "etcd")]
        st = backend_of(a)
        assert st["state"] == "up" and not st["endpoint"].endswith(m0.hostport)
        await c.register("after", stype, 2)
        await eventually(lambda: _contains(names_on(b, stype), ("after", "etcd")))
        assert sorted(k.rsplit("/", 1)[1] for k in etcd_keys(cluster.members[1], prefix)) == ["after", "survivor"]
    finally:
        await c.close()
        cluster.heal()


@pytest_twisted.ensureDeferred
async def test_partition_from_etcd_is_reported_and_healed(daemons, cluster, prefix, stype) -> None:
    m0 = cluster.members[0]
    a = daemons("ha", "--no-mdns", "--backend", cluster.backend(0, prefix=prefix, ttl=TTL))  # only m0
    b = daemons("hb", "--no-mdns", "--backend", cluster.backend(1, 2, prefix=prefix, ttl=TTL))
    w = client.watch(stype, socket=b.socket)
    await w.ready
    c = await client.connect(a.socket)
    try:
        await c.register("p1", stype, 1)
        await next_of(w, "added", "p1", timeout=5)
        m0.pause()  # ha's only member stops answering
        down = await backend_state(a, "down", timeout=TTL + 3)
        assert m0.hostport in down["error"] and "no answer" in down["error"], down
        # ha keeps serving its local clients
        await c.register("p2", stype, 2)
        assert await names_on(a, stype) == [("p1", "local"), ("p2", "local")]
        # the rest of the cluster expires ha's lease: hb sees p1 go
        await next_of(w, "removed", "p1", timeout=TTL + 3)
        m0.resume()
        await backend_state(a, "up", timeout=10)
        # the registrations are made again, including the one made during the partition
        await eventually(lambda: _equals(names_on(b, stype), [("p1", "etcd"), ("p2", "etcd")]), timeout=10)
        out = a.cli("list")
        assert "# backend etcd up" in out.stdout.decode()
    finally:
        if m0.stopped:
            m0.resume()
        await c.close()
        await w.close()


@pytest_twisted.ensureDeferred
async def test_etcd_unreachable_at_start_then_it_comes_up(daemons, base_dir: Path, stype) -> None:
    lone = EtcdCluster(base_dir, 1)
    url = f"etcd://{lone.members[0].hostport}?ttl={TTL}&timeout=1"
    try:
        t0 = time.monotonic()
        a = daemons("ha", "--no-mdns", "--backend", url)  # nothing listens there yet
        assert time.monotonic() - t0 < 10
        st = backend_of(a)
        assert st["state"] == "down" and "refused" in st["error"].lower(), st
        r = a.cli("list")
        assert "# backend etcd down" in r.stderr.decode() and lone.members[0].hostport in r.stderr.decode()
        reg = await client.register("early", stype, 7, socket=a.socket)
        assert await names_on(a, stype) == [("early", "local")]
        lone.start()
        await backend_state(a, "up", timeout=10)
        b = daemons("hb", "--no-mdns", "--backend", url)
        assert await names_on(b, stype) == [("early", "etcd")]
        await reg.withdraw()
        await eventually(lambda: _negate(names_on(b, stype)))
    finally:
        lone.close()


def test_bad_backend_urls_are_refused_clearly(daemons) -> None:
    port = free_ports(1)[0]
    for url, needle in [("etcd://127.0.0.1", "not HOST:PORT"), ("http://127.0.0.1:2379", "expected etcd://"),
                        (f"etcd://127.0.0.1:{port}?ttl=1", "ttl must be at least"),
                        (f"etcd://127.0.0.1:{port}?bogus=1", "unknown option")]:
        d = daemons("hx", "--no-mdns", "--backend", url, start=False)
        r = subprocess.run([*d.prefix, str(Path(DISCOVERY).parent / "discoveryd"), "--socket", d.socket, *d.args],
                           capture_output=True, timeout=20, check=False)
        assert r.returncode != 0 and needle in r.stderr.decode(), (url, r.stderr)
