"""The headless display a detached session lives on: an Xvfb with the session's screen
(width, height, depth), a fresh MIT-MAGIC-COOKIE-1, no TCP, and its cookie added to the
Xauthority file the session's movable display reads (removed again when it stops), so no
other user's program can look at the detached windows."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass

from ..relay import display_socket
from ..trust import xauthfile
from ..x11.xauth import FAMILY_LOCAL, MIT_MAGIC_COOKIE_1, XauthEntry, remove_entry, replace_entry
from .core import SessionError

#: How long Xvfb may take to say it is ready; how many free display numbers to try.
START_TIMEOUT = 30.0
START_ATTEMPTS = 5


@dataclass
class Headless:
    number: int
    process: subprocess.Popen
    xauthority: str
    entry: XauthEntry
    workdir: str

    @property
    def display(self) -> str:
        return f":{self.number}"

    def stop(self) -> None:
        """Stop the Xvfb and take its cookie out of the Xauthority file."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        entry = self.entry
        try:
            xauthfile.update(self.xauthority, lambda entries: remove_entry(entries, entry))
        except OSError:
            pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def start(width: int, height: int, depth: int, xauthority: str) -> Headless:
    """An Xvfb of `width`x`height`x`depth` on a free display; ready when this returns.

    The number is chosen here (lock files, sockets and TCP ports, as `serve` chooses its
    own), not by Xvfb's -displayfd search: that search only sees abstract sockets of its own
    network namespace, so in a namespace it can take over the socket file of a display
    served from another (hosts simulated with namespaces share /tmp)."""
    program = shutil.which("Xvfb")
    if program is None:
        raise SessionError("detach needs Xvfb (Debian package xvfb)")
    first = 10
    for _attempt in range(START_ATTEMPTS):
        try:
            number = display_socket.find_free(first)
        except display_socket.DisplayInUse as err:
            raise SessionError(str(err)) from None
        try:
            return _start(program, number, width, height, depth, xauthority)
        except _Taken:
            first = number + 1  # taken between the look and Xvfb's own lock: the next one
    raise SessionError(f"no display number stayed free for Xvfb ({START_ATTEMPTS} tries)")


class _Taken(Exception):
    pass


def _start(program: str, number: int, width: int, height: int, depth: int,
           xauthority: str) -> Headless:
    workdir = tempfile.mkdtemp(prefix="xproxy-headless-")
    cookie = secrets.token_bytes(16)
    server_auth = os.path.join(workdir, "server.auth")
    # Xvfb checks only the cookie's name and data, whatever the entry's address and number
    with open(os.open(server_auth, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(XauthEntry(FAMILY_LOCAL, socket.gethostname().encode(), b"0",
                           MIT_MAGIC_COOKIE_1, cookie).to_bytes())
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(
            [program, f":{number}", "-displayfd", str(write_fd), "-screen", "0",
             f"{width}x{height}x{depth}",
             "-auth", server_auth, "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(workdir, "Xvfb.log"), "w"),  # noqa: SIM115 - Xvfb's own
            start_new_session=True)
    except OSError as err:
        os.close(read_fd)
        shutil.rmtree(workdir, ignore_errors=True)
        raise SessionError(f"cannot start Xvfb: {err}") from None
    finally:
        os.close(write_fd)
    if _read_number(read_fd, process) != number:
        process.kill()
        process.wait()
        with open(os.path.join(workdir, "Xvfb.log")) as f:
            log = f.read()
        shutil.rmtree(workdir, ignore_errors=True)
        if "already active" in log:
            raise _Taken()
        why = log.strip().splitlines()[-1:] or ["no reason given"]
        raise SessionError(f"Xvfb did not start for {width}x{height}x{depth}: {why[0]}")
    entry = XauthEntry(FAMILY_LOCAL, xauthfile.local_address(), str(number).encode(),
                       MIT_MAGIC_COOKIE_1, cookie)
    try:
        xauthfile.update(xauthority, lambda entries: replace_entry(entries, entry))
    except OSError as err:
        process.kill()
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        raise SessionError(f"cannot add the headless display's cookie to {xauthority}: "
                           f"{err}") from None
    return Headless(number, process, xauthority, entry, workdir)


def _read_number(fd: int, process: subprocess.Popen) -> int | None:
    """The display number Xvfb writes to -displayfd once it listens (None if it exits)."""
    import select
    import time

    data = b""
    deadline = time.monotonic() + START_TIMEOUT
    with os.fdopen(fd, "rb", buffering=0) as reader:
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([reader], [], [], left)[0]:
                return None
            chunk = reader.read(64)
            if not chunk:
                return None
            data += chunk
    text = data.strip()
    return int(text) if text.isdigit() and process.poll() is None else None
