"""Claiming an X display number the way X servers do: /tmp/.X11-unix/XN and /tmp/.XN-lock."""

from __future__ import annotations

import errno
import os
import socket
import stat

from ..x11.display import UNIX_SOCKET_DIR


class DisplayInUse(RuntimeError):
    """Another live X server (or proxy) holds the display number."""


def lock_path(number: int) -> str:
    return f"/tmp/.X{number}-lock"


def socket_path(number: int) -> str:
    return f"{UNIX_SOCKET_DIR}/X{number}"


def ensure_socket_dir() -> None:
    """/tmp/.X11-unix, sticky and world-writable as X servers create it."""
    try:
        os.mkdir(UNIX_SOCKET_DIR, 0o1777)
        os.chmod(UNIX_SOCKET_DIR, 0o1777)
    except FileExistsError:
        pass


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listening(path: str, abstract: bool = False) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(("\0" + path) if abstract else path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def in_use(number: int) -> str | None:
    """Why display `number` is taken, or None when it is free (stale files do not count)."""
    try:
        with open(lock_path(number)) as f:
            pid = int(f.read().strip() or 0)
        if _pid_alive(pid):
            return f"display :{number} is in use: {lock_path(number)} names live process {pid}"
    except (FileNotFoundError, ValueError):
        pass
    if _listening(socket_path(number)) or _listening(socket_path(number), abstract=True):
        return f"display :{number} is in use: something listens on {socket_path(number)}"
    try:
        socket.create_connection(("127.0.0.1", 6000 + number), timeout=0.2).close()
        return f"display :{number} is in use: something listens on TCP port {6000 + number}"
    except OSError:
        pass
    return None


def claim(number: int) -> None:
    """Take display `number`: remove stale files, write the lock with our pid. Raises
    DisplayInUse with a clear message when a live server holds it."""
    why = in_use(number)
    if why is not None:
        raise DisplayInUse(why)
    ensure_socket_dir()
    for stale in (lock_path(number), socket_path(number)):
        try:
            st = os.lstat(stale)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            raise DisplayInUse(f"{stale} is a directory")
        os.unlink(stale)
    try:
        fd = os.open(lock_path(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except OSError as err:
        if err.errno == errno.EEXIST:
            raise DisplayInUse(f"display :{number} was taken while starting") from err
        raise
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid():10d}\n")


def release(number: int) -> None:
    for path in (socket_path(number), lock_path(number)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def find_free(start: int = 10, stop: int = 1000) -> int:
    """The first display number from `start` that nobody uses (as ssh's X11DisplayOffset)."""
    for number in range(start, stop):
        if in_use(number) is None:
            return number
    raise DisplayInUse(f"no free display number in {start}..{stop - 1}")
