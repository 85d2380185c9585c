"""Fixtures for integration tests: a real Xvfb and real `xproxy serve` processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass

import pytest

from testing.xserver import Xvfb, start_xvfb

XPROXY = [sys.executable, "-m", "xproxy.cli"]
#: The same, with Python's cycle collector off: what a connection leaves behind only in
#: reference cycles is then never freed, so a test can see it.
XPROXY_NO_GC = [sys.executable, "-c",
                "import gc, sys; gc.disable(); from xproxy.cli import run; run()"]


@pytest.fixture(scope="module")
def xvfb():
    server = start_xvfb()
    yield server
    server.stop()


@dataclass
class Proxy:
    process: subprocess.Popen
    display: str
    env: dict[str, str]
    stderr_path: str

    def rss(self) -> int:
        """The proxy process's resident memory, in bytes."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    @property
    def number(self) -> int:
        return int(self.display[1:])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        with open(self.stderr_path) as f:
            return f.read()


@pytest.fixture
def xauthority(xvfb: Xvfb, tmp_path) -> str:
    """A private Xauthority holding the real display's cookie, as a user's ~/.Xauthority."""
    path = str(tmp_path / "Xauthority")
    shutil.copy(xvfb.xauthority, path)
    return path


@pytest.fixture
def start_proxy(xvfb: Xvfb, xauthority: str, tmp_path):
    started: list[Proxy] = []

    def start(*args: str, target: str | None = None, expect_ready: bool = True,
              gc_off: bool = False) -> Proxy:
        env = dict(xvfb.env, XAUTHORITY=xauthority)
        stderr_path = str(tmp_path / f"xproxy-{len(started)}.log")
        with open(stderr_path, "w") as err:
            process = subprocess.Popen(
                [*(XPROXY_NO_GC if gc_off else XPROXY), "serve", "--to", target or xvfb.name,
                 *args],
                env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
            )
        line = process.stdout.readline().strip()
        proxy = Proxy(process, line.partition("=")[2], dict(env), stderr_path)
        started.append(proxy)
        if expect_ready:
            assert line.startswith("ready DISPLAY=:"), proxy.log()
            proxy.env["DISPLAY"] = proxy.display
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
