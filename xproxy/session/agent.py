"""The session process (`xproxy session-agent`, started by the first `xproxy run --session`):
one movable display (`xproxy serve --movable`, the move engine, as a child process), where it
is shown, and the session's control socket (the requests are listed in session/core.py).

Where a session is shown is an `Upstream`: a display as named, an exported display through
the link agent for it (held with the agent's `hold` request, agent/runservice.py, so the
link stays up while the session relays to the display the agent made for it, whose
connections are link channels), or a headless Xvfb the session started itself (detached). A move
opens the new upstream first, asks the engine to move there, and lets go of the old one only
when the engine says every client moved; a refused move lets go of the new one instead.

Moves, detach and attach are done one at a time. The process ends when nothing has used it
for `linger` seconds (core.Lifetime), when the engine's process ends, or on SIGTERM.
Standard library and threads only: the engine does the X work, this process only steers it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from ..trust import xauthfile
from . import headless, index
from .core import (
    DEFAULT_LINGER,
    DETACHED,
    MAX_LINE,
    Lifetime,
    Op,
    Request,
    RequestError,
    SessionError,
    TargetKind,
    headless_screen,
    parse_request,
    target_kind,
)

#: How long the engine may take to start, to describe itself, and to move every client.
START_TIMEOUT = 30.0
DESCRIBE_TIMEOUT = 10.0
MOVE_TIMEOUT = 120.0

#: How long a connection to the control socket may take to send its request line.
REQUEST_TIMEOUT = 30.0

#: How often the session looks at whether it is still used (the engine's describe).
WATCH_INTERVAL = 1.0



def read_line(sock: socket.socket, limit: int = MAX_LINE) -> bytes | None:
    """One line from `sock` (without its newline), None at EOF, an error, or past `limit`."""
    buf = b""
    while b"\n" not in buf:
        try:
            chunk = sock.recv(4096)
        except OSError:
            return None
        if not chunk or len(buf) + len(chunk) > limit + 1:
            return None
        buf += chunk
    return buf.partition(b"\n")[0]


def ask(path: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request on a JSON-lines control socket and its reply; SessionError if there is
    none (nothing listens there, or it closed without answering)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as err:
            raise SessionError(f"nothing answers at {path}: {err}") from None
        line = read_line(sock)
    if line is None:
        raise SessionError(f"no answer from {path} to {request.get('op')!r}")
    try:
        reply = json.loads(line)
    except ValueError:
        raise SessionError(f"a bad answer from {path}: {line[:200]!r}") from None
    if not isinstance(reply, dict):
        raise SessionError(f"a bad answer from {path}: {line[:200]!r}")
    return reply


@dataclass
class Upstream:
    """Where the session is shown: `label` as the user named it, `engine_target` as the
    engine takes it (a display name or a unix socket path)."""

    label: str
    engine_target: str
    hold: socket.socket | None = None
    headless: headless.Headless | None = None
    since: float = field(default_factory=time.time)

    def close(self) -> None:
        if self.hold is not None:
            self.hold.close()
            self.hold = None
        if self.headless is not None:
            self.headless.stop()
            self.headless = None


def open_upstream(label: str, linger: float | None = None) -> Upstream:
    """The upstream `label` names, opened: for an exported display, the link agent for it
    (started if none runs, as `xproxy run` starts it) held for as long as the upstream is."""
    if target_kind(label) is TargetKind.DISPLAY:
        _check_display(label)
        return Upstream(label, label)
    from ..run import client as run_client
    from ..run.paths import LinkMode, RunError, control_path

    mode = LinkMode()
    try:
        try:
            sock, path = _hold(run_client.control_for(label, mode))
        except _NotHeld:
            agent = run_client.ensure_agent(run_client.resolve(label), mode, linger)
            sock, path = _hold(control_path(agent))
    except RunError as err:
        raise SessionError(str(err)) from None
    except _NotHeld as err:
        raise SessionError(f"the link agent for {label} did not answer: {err}") from None
    return Upstream(label, path, hold=sock)


def _check_display(label: str) -> None:
    """SessionError unless display `label` takes connections: the engine connects for each
    client, so a session of no clients would go anywhere without a word."""
    from ..x11.display import parse_display

    display = parse_display(label)
    family, address = ((socket.AF_UNIX, display.socket_path) if display.is_local
                       else (socket.AF_INET6 if ":" in display.host else socket.AF_INET,
                             (display.host, display.tcp_port)))
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(DESCRIBE_TIMEOUT)
        try:
            s.connect(address)
        except OSError as err:
            raise SessionError(f"display {label} does not answer: {err}") from None


class _NotHeld(Exception):
    pass


def _hold(ctl: str) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(START_TIMEOUT)
        try:
            sock.connect(ctl)
            xauthority = os.environ.get("XAUTHORITY") or os.path.expanduser("~/.Xauthority")
            sock.sendall(json.dumps({"op": "hold", "xauthority": xauthority}).encode() + b"\n")
        except OSError as err:
            raise _NotHeld(str(err)) from None
        line = read_line(sock)
        if line is None:
            raise _NotHeld("it closed the connection")  # exiting: start another
        reply = json.loads(line)
        if not isinstance(reply, dict) or not reply.get("ok") or \
                not isinstance(reply.get("socket"), str):
            raise SessionError(f"the link agent refused to hold the link: {reply!r}")
        sock.settimeout(None)
        return sock, reply["socket"]
    except BaseException:
        sock.close()
        raise


def movable_control(display: str) -> str:
    """The engine's control socket for the movable display `display`."""
    from ..move.control import socket_path

    return socket_path(int(display.rpartition(":")[2].partition(".")[0]))


class Movable:
    """The move engine's process: `xproxy serve --movable`, and its control socket."""

    def __init__(self, log: IO[str]) -> None:
        self.log = log
        self.process: subprocess.Popen | None = None
        self.display = ""
        self.control = ""

    def start(self, upstream: Upstream) -> str:
        argv = [sys.executable, "-m", "xproxy.cli", "serve", "--movable",
                "--to", upstream.engine_target]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        self.process.stdout.close()
        if not line.startswith("ready DISPLAY="):
            self.stop()
            raise SessionError(f"the movable display did not start ({line or 'no answer'}; "
                               f"see {self.log.name})")
        self.display = line.partition("=")[2]
        self.control = movable_control(self.display)
        return self.display

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def request(self, obj: dict[str, Any], timeout: float) -> dict[str, Any]:
        return ask(self.control, obj, timeout)

    def stop(self) -> None:
        p = self.process
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class SessionAgent:
    """One session: its engine, where it is shown, its runs; requests come from the control
    socket's threads, moves are done one at a time (`ops`)."""

    def __init__(self, name: str, linger: float = DEFAULT_LINGER,
                 link_linger: float | None = None) -> None:
        self.name = name
        self.linger = linger
        self.link_linger = link_linger
        self.xauthority = xauthfile.default_path()
        self.log = open(index.log_path(name), "a", buffering=1)  # noqa: SIM115 - the process's log
        self.movable = Movable(self.log)
        self.upstream: Upstream | None = None
        self.ops = threading.Lock()
        self.runs = 0
        self.runs_lock = threading.Lock()
        self.stopping = threading.Event()
        self.server: socketserver.ThreadingUnixStreamServer | None = None

    def say(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} session {self.name}: {text}", file=self.log)

    def start(self, target: str) -> str:
        """Open `target`, start the engine on it and serve the control socket; the display."""
        self.upstream = open_upstream(target, self.link_linger)
        try:
            display = self.movable.start(self.upstream)
            control = index.control_path(self.name)
            if os.path.exists(control):
                os.unlink(control)
            self.server = _Server(control, self)
            os.chmod(control, 0o600)
        except BaseException:
            self.close()
            raise
        index.write(index.Entry(self.name, os.getpid(), display, control, self.xauthority))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.say(f"{display} shown on {target}")
        return display

    # --- requests ---

    def handle(self, req: Request) -> dict[str, Any]:
        if req.op is Op.DESCRIBE:
            return self.describe()
        if req.op is Op.STOP:
            self.stopping.set()
            return {"ok": True}
        with self.ops:
            try:
                if req.op is Op.MOVE:
                    assert req.to is not None
                    return self.move(req.to)
                if req.op is Op.ATTACH:
                    assert req.to is not None
                    if self.upstream is None or self.upstream.headless is None:
                        raise SessionError(f"session {self.name} is not detached (it is shown "
                                           f"on {self.where()}; `xproxy move` moves it)")
                    return self.move(req.to)
                if req.op is Op.DETACH:
                    return self.detach()
            except SessionError as err:
                return {"ok": False, "error": str(err)}
        return {"ok": False, "error": f"unexpected {req.op.value}"}

    def where(self) -> str:
        return self.upstream.label if self.upstream is not None else "?"

    def describe(self) -> dict[str, Any]:
        try:
            reply = self.movable.request({"op": "describe"}, DESCRIBE_TIMEOUT)
        except SessionError as err:
            return {"ok": False, "error": str(err)}
        up = self.upstream
        reply.update(name=self.name, display=self.movable.display, shown_on=self.where(),
                     since=up.since if up else None,
                     detached=up is not None and up.headless is not None)
        return reply

    def move(self, target: str, new: Upstream | None = None) -> dict[str, Any]:
        if new is None:
            new = open_upstream(target, self.link_linger)
        try:
            reply = self.movable.request({"op": "move", "to": new.engine_target}, MOVE_TIMEOUT)
        except SessionError:
            new.close()
            raise
        if not reply.get("ok"):
            new.close()
            self.say(f"move to {target} refused: {reply.get('error')}")
            return reply
        old, self.upstream = self.upstream, new
        if old is not None:
            old.close()
        self.say(f"moved {reply.get('clients')} clients to {target} in "
                 f"{reply.get('seconds')} s")
        return dict(reply, to=target)

    def detach(self) -> dict[str, Any]:
        if self.upstream is not None and self.upstream.headless is not None:
            raise SessionError(f"session {self.name} is already detached")
        described = self.movable.request({"op": "describe"}, DESCRIBE_TIMEOUT)
        if not described.get("ok"):
            raise SessionError(f"cannot describe the session: {described.get('error')}")
        if not described.get("clients"):
            raise SessionError(f"session {self.name} has no programs to detach")
        width, height, depth = headless_screen(described)
        screen = headless.start(width, height, depth, self.xauthority)
        self.say(f"headless {screen.display} started ({width}x{height}x{depth})")
        return self.move(DETACHED, Upstream(DETACHED, screen.display, headless=screen))

    # --- runs and lifetime ---

    def run_started(self) -> None:
        with self.runs_lock:
            self.runs += 1

    def run_ended(self) -> None:
        with self.runs_lock:
            self.runs -= 1

    def watch(self) -> str:
        """Wait until the session should end; why."""
        lifetime = Lifetime(self.linger, time.monotonic())
        while not self.stopping.wait(WATCH_INTERVAL):
            if not self.movable.alive():
                return "the movable display exited"
            if self.runs:
                lifetime.observe(time.monotonic(), self.runs, 0)
                continue
            try:
                counted = self.movable.request({"op": "count"}, DESCRIBE_TIMEOUT)
            except SessionError:
                continue  # busy: ask again
            clients = counted.get("clients")
            if not isinstance(clients, int):
                continue
            if lifetime.observe(time.monotonic(), self.runs, clients):
                return f"unused for {self.linger:g} s"
        return "asked to stop"

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        index.remove(self.name, os.getpid())
        try:
            os.unlink(index.control_path(self.name))
        except FileNotFoundError:
            pass
        self.movable.stop()
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, agent: SessionAgent) -> None:
        self.agent = agent
        super().__init__(path, _Control)


class _Control(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        agent: SessionAgent = self.server.agent  # type: ignore[attr-defined]
        sock: socket.socket = self.request
        sock.settimeout(REQUEST_TIMEOUT)
        line = read_line(sock)
        if line is None:
            self._reply({"ok": False, "error": f"expected one request line "
                                               f"(at most {MAX_LINE} bytes)"})
            return
        try:
            req = parse_request(line)
        except RequestError as err:
            self._reply({"ok": False, "error": str(err)})
            return
        if req.op is not Op.RUN:
            self._reply(agent.handle(req))
            return
        agent.run_started()
        sock.settimeout(None)
        try:
            self._reply({"ok": True, "display": agent.movable.display,
                         "xauthority": agent.xauthority, "shown_on": agent.where()})
            while sock.recv(4096):  # held until the run's command has exited
                pass
        except OSError:
            pass
        finally:
            agent.run_ended()

    def _reply(self, obj: dict[str, Any]) -> None:
        try:
            self.request.sendall(json.dumps(obj).encode() + b"\n")
        except OSError:
            pass


def main(name: str, target: str, linger: float, link_linger: float | None) -> int:
    """The session process: `ready DISPLAY=:P` (or `error: why`) on stdout, then serve."""
    agent = SessionAgent(name, linger, link_linger)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stopping.set())
    try:
        display = agent.start(target)
    except SessionError as err:
        print(f"error: {err}", flush=True)
        return 1
    print(f"ready DISPLAY={display}", flush=True)
    sys.stdout.close()
    try:
        why = agent.watch()
    finally:
        agent.close()
    agent.say(f"ends: {why}")
    return 0
