"""Real etcd members on loopback for the tests: free ports, temporary data directories.

``EtcdCluster(base, 3).start()`` runs a three-member cluster (Debian's etcd-server 3.4);
members can be killed (SIGKILL), restarted on their data directory, stopped (SIGSTOP, a
partition as the daemon sees it: TCP still connects, nothing answers) and continued.
Short raft timings (heartbeat 50 ms, election 500 ms) keep fail-over inside a test's time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EtcdMember:
    def __init__(self, cluster: EtcdCluster, name: str, client_port: int, peer_port: int) -> None:
        self.cluster = cluster
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = cluster.base / f"{name}.etcd"
        self.log = cluster.base / f"{name}.etcd.log"
        self.proc: subprocess.Popen | None = None
        self.stopped = False

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self) -> EtcdMember:
        state = "existing" if self.data_dir.exists() else "new"
        cmd = [
            ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", f"http://{self.hostport}", "--advertise-client-urls", f"http://{self.hostport}",
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.cluster.initial_cluster, "--initial-cluster-state", state,
            "--initial-cluster-token", self.cluster.token,
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))  # noqa: SIM115
        self.stopped = False
        return self

    def healthy(self, timeout: float = 0.5) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.hostport}/health", timeout=timeout) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            if self.healthy():
                return
            time.sleep(0.05)
        raise AssertionError(f"etcd member {self.name} not healthy: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.stopped:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        self.stopped = False

    def pause(self) -> None:
        """SIGSTOP: connections still open, nothing answers (a partition, seen from a client)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False


class EtcdCluster:
    def __init__(self, base: Path, size: int = 3) -> None:
        self.base = base
        ports = free_ports(2 * size)
        self.token = f"xt-{os.getpid()}-{ports[0]}"
        self.members = [EtcdMember(self, f"m{i}", ports[2 * i], ports[2 * i + 1]) for i in range(size)]
        self.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def start(self) -> EtcdCluster:
        for m in self.members:
            m.start()
        for m in self.members:
            m.wait_healthy()
        return self

    def backend(self, *members: int, ttl: int = 3, prefix: str = "/xt-test/", timeout: float = 1.0) -> str:
        """A ``--backend`` URL for the given members (all by default)."""
        chosen = [self.members[i] for i in members] if members else self.members
        return f"etcd://{','.join(m.hostport for m in chosen)}?ttl={ttl}&timeout={timeout}&prefix={prefix}"

    def heal(self) -> None:
        """Every member running again (after a test killed or stopped some)."""
        for m in self.members:
            if m.stopped:
                m.resume()
            if m.proc is None or m.proc.poll() is not None:
                m.start()
        for m in self.members:
            m.wait_healthy()

    def close(self) -> None:
        for m in self.members:
            m.kill()
