"""``ReplicatedClient(discover="_kv._tcp")`` against a real ``discoveryd`` and real replicas.

A private daemon (its own socket, ``--no-mdns`` so no other ``_kv._tcp`` on the machine
leaks in), three ``python -m demos.kvstore serve --register NAME`` processes registering
through it, and a client following membership through ``discovery.client.watch``: puts and
gets under ``vote``, then a replica is killed and a new one added, and the client's members
and calls follow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import task

from demos.kvstore import Get, Put
from replicaclient import ReplicatedClient
from testing.ready import wait_ready
from testing.replicas import ROOT, free_port

DISCOVERYD = str(Path(sys.executable).parent / "discoveryd")


def _reactor():
    from twisted.internet import reactor

    return reactor



class Live:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = str(base / "discovery.sock")
        self.env = {**os.environ, "DISCOVERY_SOCKET": self.socket, "PYTHONPATH": str(ROOT)}
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}

    def start_daemon(self) -> None:
        p = subprocess.Popen([DISCOVERYD, "--socket", self.socket, "--no-mdns", "--host-name", "live",
                              "--state-dir", str(self.base / "state")],
                             stdout=subprocess.PIPE, stderr=open(self.base / "discoveryd.log", "ab"))  # noqa: SIM115
        self.procs["discoveryd"] = p
        wait_ready(p, "discoveryd", timeout=20)

    def start_replica(self, name: str) -> None:
        port = free_port()
        p = subprocess.Popen([sys.executable, "-m", "demos.kvstore", "serve", "--port", str(port), "--register", name],
                             cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                             stderr=open(self.base / f"{name}.log", "ab"))  # noqa: SIM115
        self.procs[name] = p
        self.ports[name] = port
        wait_ready(p, f"replica {name}", timeout=20)
        err = (self.base / f"{name}.log").read_text()
        assert "not registered" not in err, err  # kvstore warns, and serves on, when registering fails

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait(5)

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
            p.wait(5)


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    base = Path(tempfile.mkdtemp(prefix="rc-discovery-"))
    lv = Live(base)
    monkeypatch.setenv("DISCOVERY_SOCKET", lv.socket)  # what ReplicatedClient(discover=...) uses
    try:
        lv.start_daemon()
        yield lv
    finally:
        lv.close()
        subprocess.run(["rm", "-rf", str(base)], check=False)


async def _until(check, timeout: float = 10.0) -> None:
    reactor = _reactor()
    deadline = reactor.seconds() + timeout
    while not check():
        assert reactor.seconds() < deadline, "condition not met in time"
        await task.deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.ensureDeferred
async def test_membership_follows_discoveryd_with_real_replicas(live: Live) -> None:
    for name in ("kv1", "kv2", "kv3"):
        live.start_replica(name)
    client = ReplicatedClient(_reactor(), discover="_kv._tcp", policy="vote", timeout=5)
    try:
        want = {n: f"tcp:127.0.0.1:{live.ports[n]}" for n in ("kv1", "kv2", "kv3")}
        await _until(lambda: client.members == want)
        await client.callRemote(Put, key="colour", value="blue")
        assert await client.callRemote(Get, key="colour") == {"value": "blue"}

        live.kill("kv1")  # its registration goes with its connection to discoveryd
        await _until(lambda: set(client.members) == {"kv2", "kv3"})
        assert await client.callRemote(Get, key="colour") == {"value": "blue"}  # 2 of 2 agree
        await client.callRemote(Put, key="shape", value="round")

        live.start_replica("kv4")  # a new, empty replica joins
        await _until(lambda: set(client.members) == {"kv2", "kv3", "kv4"})
        assert client.members["kv4"] == f"tcp:127.0.0.1:{live.ports['kv4']}"
        await client.callRemote(Put, key="size", value="large")
        assert await client.callRemote(Get, key="size") == {"value": "large"}  # 3 of 3
        assert await client.callRemote(Get, key="colour") == {"value": "blue"}  # kv2 and kv3 outvote kv4's ""
        assert await client.callRemote(Get, key="shape") == {"value": "round"}
    finally:
        await client.close()
