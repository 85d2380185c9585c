"""Waiting for a daemon's `ready` line, as every daemon of the project prints it."""

from __future__ import annotations

import selectors
import subprocess
import time


def wait_ready(proc: subprocess.Popen, what: str = "the process", timeout: float = 15.0) -> None:
    """Block until `proc` prints `ready` on stdout, or fail with what it said on stderr."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(0.1):
            line = proc.stdout.readline()
            if line.strip() in (b"ready", "ready"):
                return
            if not line:
                break
        if proc.poll() is not None:
            break
    proc.kill()
    said = ""
    if proc.stderr is not None and proc.stderr.readable():
        said = proc.stderr.read()
        said = said.decode(errors="replace") if isinstance(said, bytes) else said
    raise AssertionError(f"{what} did not become ready: {said[-3000:]}")
