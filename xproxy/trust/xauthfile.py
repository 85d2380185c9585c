"""Reading and changing an Xauthority file with xauth's lock protocol (libXau XauLockAuth).

Lock: create FILE-c exclusively, then hard-link it to FILE-l; a lock older than 600 s is
stale and broken, as libXau does. Write: the new contents go to FILE-n and are renamed over
FILE, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..x11.display import DisplayName
from ..x11.xauth import (
    FAMILY_INTERNET,
    FAMILY_INTERNET6,
    FAMILY_LOCAL,
    XauthEntry,
    best_auth,
    parse_xauthority,
    serialize_xauthority,
)

STALE_LOCK_SECONDS = 600


class XauthorityLockError(OSError):
    """The Xauthority file stayed locked by someone else."""


#: Held while $XAUTHORITY is set for python-xlib (`open_xlib_display`).
_XLIB_AUTH_LOCK = threading.Lock()


def open_xlib_display(display: str, xauthority: str) -> Any:
    """A python-xlib `Display` connected to `display` with the cookie from the file
    `xauthority`, whatever $XAUTHORITY says.

    python-xlib takes no auth argument: `Display()` reads the cookie through
    `Xlib.support.unix_connect.new_get_auth`, which opens `Xlib.xauth.Xauthority()` with no
    file name, and that reads $XAUTHORITY. So the variable is set for the constructor alone,
    under a lock, and put back as it was; nothing else in the project sets it. What python-xlib
    prints while connecting goes to stderr, as stdout may carry a command's output."""
    from Xlib import display as xdisplay

    with _XLIB_AUTH_LOCK:
        old = os.environ.get("XAUTHORITY")
        os.environ["XAUTHORITY"] = xauthority
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return xdisplay.Display(display)
        finally:
            if old is None:
                os.environ.pop("XAUTHORITY", None)
            else:
                os.environ["XAUTHORITY"] = old


def default_path() -> str:
    path = os.environ.get("XAUTHORITY")
    if path:
        return path
    return os.path.join(os.path.expanduser("~"), ".Xauthority")


def read_entries(path: str) -> list[XauthEntry]:
    try:
        with open(path, "rb") as f:
            return parse_xauthority(f.read())
    except FileNotFoundError:
        return []


@contextmanager
def locked(path: str, timeout: float = 5.0) -> Iterator[None]:
    creat, link = path + "-c", path + "-l"
    deadline = time.monotonic() + timeout
    while True:
        try:
            st = os.stat(creat)
            if time.time() - st.st_mtime > STALE_LOCK_SECONDS:
                for stale in (creat, link):
                    _unlink(stale)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(creat, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        except FileExistsError:
            pass
        else:
            try:
                os.link(creat, link)
                break
            except FileExistsError:
                _unlink(creat)
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.EOPNOTSUPP):
                    _unlink(creat)
                    raise
                break  # no hard links here: the exclusive -c file alone is the lock
        if time.monotonic() > deadline:
            raise XauthorityLockError(f"{path} is locked ({creat} exists); remove it if stale")
        time.sleep(0.05)
    try:
        yield
    finally:
        _unlink(link)
        _unlink(creat)


def update(path: str, change: Callable[[list[XauthEntry]], list[XauthEntry]]) -> None:
    """Apply `change` to the file's entries under the lock, writing atomically."""
    with locked(path):
        entries = read_entries(path)
        new = change(entries)
        tmp = path + "-n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, serialize_xauthority(new))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)


def local_address() -> bytes:
    return socket.gethostname().encode()


def lookup_for_display(display: DisplayName, path: str | None = None) -> XauthEntry | None:
    """The entry Xlib would use to connect to `display` (local family for unix sockets and
    loopback TCP, the host's address otherwise)."""
    entries = read_entries(path or default_path())
    if display.is_local or display.host in ("localhost", "127.0.0.1", "::1", socket.gethostname()):
        return best_auth(entries, FAMILY_LOCAL, local_address(), display.number)
    try:
        infos = socket.getaddrinfo(display.host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return None
    for family, *_rest, sockaddr in infos:
        address = str(sockaddr[0])  # (an IPv4 or IPv6 address: a string for these families)
        if family == socket.AF_INET:
            packed = socket.inet_pton(socket.AF_INET, address)
            if packed.startswith(b"\x7f"):
                return best_auth(entries, FAMILY_LOCAL, local_address(), display.number)
            found = best_auth(entries, FAMILY_INTERNET, packed, display.number)
        else:
            packed = socket.inet_pton(socket.AF_INET6, address)
            found = best_auth(entries, FAMILY_INTERNET6, packed, display.number)
        if found:
            return found
    return None


class CookieLookup:
    """The cookie for `display` in the Xauthority file at `path` as the file is now: read
    again whenever the file has changed, as Xlib reads it at each connection, so a proxy
    reaches an X server restarted with a new cookie. `changed` is true after a lookup whose
    answer differs from the one before."""

    def __init__(self, display: DisplayName, path: str) -> None:
        self.display = display
        self.path = path
        self.found: XauthEntry | None = None
        self.changed = False
        self._key: tuple[int, ...] | None = ()  # () before the first lookup

    def current(self) -> XauthEntry | None:
        try:
            st = os.stat(self.path)
            key: tuple[int, ...] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        self.changed = False
        if key is None or key != self._key:
            first = self._key == ()
            found = lookup_for_display(self.display, self.path)
            self.changed = first or found != self.found
            self.found, self._key = found, key
        return self.found


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
