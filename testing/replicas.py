"""Real replica processes on loopback for the integration tests."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KVReplica:
    """``python -m demos.kvstore serve`` on a free loopback port."""

    def __init__(self, *flags: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"tcp:127.0.0.1:{self.port}"
        self.flags = flags
        self.proc = self._spawn()

    def restart(self, *flags: str) -> None:
        """Kill it and start it again, with empty memory, on the same port."""
        self.kill()
        self.flags = flags
        self.proc = self._spawn()
        self.wait_ready()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "demos.kvstore", "serve", "--port", str(self.port),
             *self.flags],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)})

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line.strip() == b"ready":
                    return
                if not line:
                    break
        raise RuntimeError(f"replica {self.flags} on {self.port} did not start")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start(*flag_sets: tuple[str, ...]) -> list[KVReplica]:
    replicas = [KVReplica(*flags) for flags in flag_sets]
    try:
        for r in replicas:
            r.wait_ready()
    except BaseException:
        stop(replicas)
        raise
    return replicas


def stop(replicas: list[KVReplica]) -> None:
    for r in replicas:
        r.kill()
