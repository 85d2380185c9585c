"""Fixtures: real ``discoveryd`` processes on loopback, each test with service types of its own."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.ready import wait_ready

VENV_BIN = Path(sys.executable).parent
DISCOVERYD = str(VENV_BIN / "discoveryd")
DISCOVERY = str(VENV_BIN / "discovery")



class Daemon:
    def __init__(self, base: Path, name: str, args: list[str], prefix: list[str] | None = None) -> None:
        self.name = name
        self.base = base
        self.socket = str(base / f"{name}.sock")
        self.state_dir = str(base / f"{name}-state")
        self.args = args
        self.prefix = prefix or []
        self.proc: subprocess.Popen | None = None
        self.log = base / f"{name}.log"

    def start(self) -> Daemon:
        cmd = [*self.prefix, DISCOVERYD, "--socket", self.socket, "--host-name", self.name, "--state-dir", self.state_dir, *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
        # what wait_ready quotes when the daemon fails; it stays open with the process
        self.proc.stderr = open(self.log, "rb")  # noqa: SIM115
        wait_ready(self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run([DISCOVERY, "--socket", self.socket, *args], capture_output=True,
                              timeout=timeout, check=False)


@pytest.fixture
def base_dir() -> Iterator[Path]:
    # world-readable so tests can connect as another uid too
    d = Path(tempfile.mkdtemp(prefix="discovery-test-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemons(base_dir: Path) -> Iterator:
    started: list[Daemon] = []

    def make(name: str, *args: str, start: bool = True) -> Daemon:
        d = Daemon(base_dir, name, ["--interface", "127.0.0.1", *args])
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        d.stop()


@pytest.fixture
def stype() -> str:
    """A service type no other test (or stray daemon on loopback) uses: ``_tXXXXXXXX._tcp``."""
    return f"_t{secrets.token_hex(4)}._tcp"
