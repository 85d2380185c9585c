"""What `xproxy run --session`, `move`, `detach`, `attach` and `sessions` do, with the
standard library only (no reactor: each is one or two requests on a session's control
socket). `run --session` starts the session process on first use, under a lock so that runs
started together share one, as `xproxy run` starts a link agent (run/client.py)."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from ..cli.errors import fail
from ..run.child import run_command
from . import index
from .agent import MOVE_TIMEOUT, ask, read_line
from .core import SessionError, check_name, format_listing, listing, target_kind

#: How long a session may take to start (the link, the engine) and to answer a request.
START_TIMEOUT = 60.0
ANSWER_TIMEOUT = 15.0


def run(args: argparse.Namespace) -> int:
    """`xproxy run --session NAME --to TARGET -- COMMAND`: the command on the session's
    display (the session started on TARGET if it does not run yet); its exit status."""
    command = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not command:
        fail("no command given (xproxy run --session NAME --to TARGET -- COMMAND ARGS...)", 2)
    unsupported = [flag for flag, given in (
        ("--trace", args.trace is not None), ("--hide-ext", bool(args.hide_ext)),
        ("--no-suppress", args.no_suppress), ("--verify-cache", args.verify_cache),
        ("--compress-level", args.compress_level != 3)) if given]
    if unsupported:
        fail(f"{', '.join(unsupported)} cannot be used with --session", 2)
    try:
        name = check_name(args.session)
        target_kind(args.target)
        sock, reply = join(name, args.target, args.linger)
    except SessionError as err:
        fail(str(err))
    with sock:
        if reply.get("shown_on") not in (args.target, None):
            print(f"xproxy: session {name} is shown on {reply['shown_on']}; the program joins "
                  f"it there (`xproxy move {name} --to {args.target}` moves it)", file=sys.stderr)
        env = dict(os.environ, DISPLAY=str(reply["display"]),
                   XAUTHORITY=str(reply["xauthority"]))
        return run_command(command, env)


def join(name: str, target: str, link_linger: float | None = None) -> tuple[socket.socket, dict[str, Any]]:
    """A `run` connection to the session `name` (started on `target` if none runs) and its
    answer: the display to use."""
    try:
        return _ask_run(index.control_path(name))
    except _NoSession:
        pass
    with open(index.lock_path(name), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                return _ask_run(index.control_path(name))
            except _NoSession:
                start(name, target, link_linger)
            try:
                return _ask_run(index.control_path(name))
            except _NoSession as err:
                raise SessionError(f"session {name} started but does not answer: {err}") from None
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _NoSession(Exception):
    pass


def _ask_run(control: str) -> tuple[socket.socket, dict[str, Any]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(ANSWER_TIMEOUT)
        try:
            sock.connect(control)
            sock.sendall(b'{"op": "run"}\n')
        except OSError as err:
            raise _NoSession(str(err)) from None
        line = read_line(sock)
        if line is None:
            raise _NoSession("it closed the connection")  # ending: start another
        reply = json.loads(line)
        if not reply.get("ok"):
            raise SessionError(f"the session refused: {reply.get('error')}")
        sock.settimeout(None)
        return sock, reply
    except BaseException:
        sock.close()
        raise


def start(name: str, target: str, link_linger: float | None = None) -> None:
    """Start the session process for `name` on `target` and wait until it serves."""
    argv = [sys.executable, "-m", "xproxy.cli", "session-agent", "--name", name,
            "--to", target]
    if link_linger is not None:
        argv += ["--link-linger", str(link_linger)]
    log = index.log_path(name)
    with open(log, "a") as session_log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=session_log, start_new_session=True, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    process.stdout.close()
    if line.startswith("ready"):
        return
    process.wait()
    raise SessionError(line.partition("error: ")[2].strip()
                       or f"session {name} did not start (see {log})")


def _entry(which: str) -> index.Entry:
    try:
        entry = index.find(which)
    except SessionError as err:
        fail(str(err), 2)
    if entry is None:
        fail(f"no session {which} (`xproxy sessions` lists them; "
             "`xproxy run --session NAME --to TARGET -- COMMAND` starts one)")
    return entry


def _request(entry: index.Entry, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    try:
        reply = ask(entry.control, request, timeout)
    except SessionError as err:
        fail(f"session {entry.name}: {err}")
    if not reply.get("ok"):
        fail(f"session {entry.name}: {reply.get('error')}")
    return reply


def _moved(reply: dict[str, Any], target: str) -> None:
    n = reply.get("clients", 0)
    seconds = reply.get("seconds", 0.0)
    print(f"moved {n} client{'' if n == 1 else 's'} to {target} in {float(seconds):.2f} s")


def session_for(which: str) -> index.Entry | None:
    """The session `which` names (a name, or its display `:P`), None for a movable display
    that is no session (`:P` of a plain `serve --movable`)."""
    try:
        if which.startswith((":", "unix:")):
            return index.find(which)
        return _entry(which)
    except SessionError as err:
        fail(str(err), 2)


def move(entry: index.Entry, target: str) -> int:
    """`xproxy move SESSION --to TARGET` for a session."""
    try:
        target_kind(target)
    except SessionError as err:
        fail(str(err), 2)
    _moved(_request(entry, {"op": "move", "to": target}, MOVE_TIMEOUT + 30), target)
    return 0


def detach(args: argparse.Namespace) -> int:
    entry = _entry(args.session)
    reply = _request(entry, {"op": "detach"}, MOVE_TIMEOUT + 60)
    n = reply.get("clients", 0)
    print(f"detached {entry.name}: {n} client{'' if n == 1 else 's'} on a headless display "
          f"in {float(reply.get('seconds', 0.0)):.2f} s "
          f"(`xproxy attach {entry.name} --to TARGET` brings them back)")
    return 0


def attach(args: argparse.Namespace) -> int:
    try:
        target_kind(args.target)
    except SessionError as err:
        fail(str(err), 2)
    entry = _entry(args.session)
    _moved(_request(entry, {"op": "attach", "to": args.target}, MOVE_TIMEOUT + 30), args.target)
    return 0


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() or None
    except OSError:
        return None


def sessions(args: argparse.Namespace) -> int:
    """`xproxy sessions [--json]`: each live session, its clients, where it is shown."""
    found = []
    for entry in index.entries():
        try:
            described = ask(entry.control, {"op": "describe"}, ANSWER_TIMEOUT)
        except SessionError as err:
            described = {"ok": False, "error": str(err)}
        if not described.get("ok"):
            described = {"shown_on": f"? ({described.get('error')})", "clients": []}
        pids = {c.get("pid") for c in described.get("clients") or [] if isinstance(c, dict)}
        comms = {p: c for p in pids if isinstance(p, int) and (c := _comm(p))}
        found.append(listing(entry.name, entry.display, described, comms))
    if args.json:
        print(json.dumps(found))
        return 0
    if not found:
        print("no sessions (`xproxy run --session NAME --to TARGET -- COMMAND` starts one)")
    for s in found:
        since = s["since"]
        if isinstance(since, (int, float)):
            today = time.strftime("%F") == time.strftime("%F", time.localtime(since))
            text = time.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M", time.localtime(since))
        else:
            text = "?"
        print(format_listing(s, text))
    return 0
