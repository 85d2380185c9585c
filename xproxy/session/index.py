"""Where sessions are found by name: standard library only, as `xproxy run` reads it before
any Twisted is loaded. In the private runtime directory (run/paths.py), under `sessions/`:

    NAME.json   the session's entry: name, pid, its display, control socket, Xauthority
    NAME.ctl    its control socket (session/core.py lists the requests)
    NAME.lock   held while a session of that name is being started, so runs started
                together share one
    NAME.log    the session process's log

An entry whose control socket no longer answers is stale (its process was killed) and is
removed by whoever finds it so.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass

from ..run.paths import runtime_dir
from .core import check_name


@dataclass(frozen=True)
class Entry:
    name: str
    pid: int
    display: str
    control: str
    xauthority: str


def sessions_dir() -> str:
    path = os.path.join(runtime_dir(), "sessions")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _path(name: str, suffix: str) -> str:
    return os.path.join(sessions_dir(), check_name(name) + suffix)


def control_path(name: str) -> str:
    return _path(name, ".ctl")


def entry_path(name: str) -> str:
    return _path(name, ".json")


def lock_path(name: str) -> str:
    return _path(name, ".lock")


def log_path(name: str) -> str:
    return _path(name, ".log")


def write(entry: Entry) -> None:
    path = entry_path(entry.name)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(asdict(entry), f)
    os.replace(tmp, path)


def remove(name: str, pid: int | None = None) -> None:
    """Remove the entry of `name` (only if it is still process `pid`'s, when given)."""
    path = entry_path(name)
    if pid is not None:
        found = read(name)
        if found is None or found.pid != pid:
            return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read(name: str) -> Entry | None:
    try:
        with open(entry_path(name)) as f:
            data = json.load(f)
        return Entry(str(data["name"]), int(data["pid"]), str(data["display"]),
                     str(data["control"]), str(data["xauthority"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def answers(control: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(control)
            return True
        except OSError:
            return False


def entries() -> list[Entry]:
    """Every live session, by name; stale entries are removed on the way."""
    found = []
    for file in sorted(os.listdir(sessions_dir())):
        if not file.endswith(".json"):
            continue
        entry = read(file[: -len(".json")])
        if entry is None:
            continue
        if answers(entry.control):
            found.append(entry)
        else:
            remove(entry.name, entry.pid)
    return found


def same_display(a: str, b: str) -> bool:
    """Whether two local display names are one display (`:5`, `unix:5`, `:5.0`)."""
    def number(text: str) -> str | None:
        host, sep, rest = text.rpartition(":")
        if not sep or host not in ("", "unix"):
            return None
        return rest.partition(".")[0]

    na = number(a)
    return na is not None and na == number(b)


def find(which: str) -> Entry | None:
    """The live session named `which`, or whose display `which` is (`:P`)."""
    if which.startswith((":", "unix:")):
        for entry in entries():
            if same_display(entry.display, which):
                return entry
        return None
    named = read(check_name(which))
    if named is None:
        return None
    if not answers(named.control):
        remove(named.name, named.pid)
        return None
    return named
