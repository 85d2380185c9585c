"""`xproxy run --to @NAME|xproxy://HOST:PORT -- COMMAND`: the run itself, kept small.

The display a program uses is served by the link agent (agent/runservice.py), which already holds the
link, the X cache and a warm reactor; this process only asks it for a display, runs the
command, and says when the command is done, with the standard library only (importing
Twisted alone takes a quarter of a second): on a warm link, time to the first X request is
the program's own. When no agent runs yet (the first run, or after it lingered out), it asks
discoveryd where the display is (a blocking lookup on its socket, discovery/blocking.py) and
starts the agent first.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import IO, Any

from ..cli.errors import fail
from .child import run_command
from .paths import (
    LINK_SERVICE_TYPE,
    LinkMode,
    LinkTarget,
    RunError,
    agent_socket_path,
    control_path,
    is_link_target,
    name_alias_path,
    parse_direct,
)

#: How long to wait for the agent to give a display, and to drain one after the command.
ANSWER_TIMEOUT = 15.0
DRAIN_TIMEOUT = 5.0


class _NoAgent(Exception):
    """No agent answers at that control socket (none runs, or it is exiting)."""


def control_for(target: str, mode: LinkMode) -> str:
    """Where a running agent for `target` would answer, without asking the LAN."""
    if target.startswith("@"):
        return name_alias_path(target, mode.key)
    link = parse_direct(target)
    return control_path(agent_socket_path(link.host, link.port, link.trust_name, mode.key))


def main(args: argparse.Namespace) -> int | None:
    """Run the command through a link agent; None when `args` is not for one (a local
    display target), for the caller to handle."""
    if not is_link_target(args.target):
        return None
    command = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not command:
        fail("no command given (xproxy run --to TARGET -- COMMAND ARGS...)", 2)
    mode = LinkMode(suppress=not args.no_suppress, verify=args.verify_cache,
                    compress_level=max(0, args.compress_level))
    trace_file: IO[str] | None = None
    timeline = getattr(args, "timeline", None)
    trace_format = args.trace_format
    if trace_format == "perfetto" and args.trace in (None, "-"):
        fail("--trace-format perfetto needs --trace FILE", 2)
    if timeline is not None and args.trace is not None and trace_format != "perfetto":
        fail("--timeline with --trace needs --trace-format perfetto (the agent writes one "
             "trace per run)", 2)
    workdir = tempfile.mkdtemp(prefix="xproxy-run-")
    trace_path = args.trace
    if timeline is not None and args.trace is None:  # the agent's waits, to draw afterwards
        trace_path = os.path.join(workdir, "waits.json")
        trace_format = "perfetto"
    if trace_path is not None:
        try:
            trace_file = sys.stdout if trace_path == "-" else open(trace_path, "w")  # noqa: SIM115 - open for the whole run
        except OSError as err:
            shutil.rmtree(workdir, ignore_errors=True)
            fail(f"cannot write the trace: {err}")
    try:
        xauthority = os.path.join(workdir, "Xauthority")
        request = {"op": "display", "xauthority": xauthority, "label": args.target,
                   "hide_ext": list(args.hide_ext), "stats": mode.verify,
                   "trace": None if trace_file is None else {
                       "format": trace_format, "only": args.only, "skip": args.skip}}
        try:
            ctl = control_for(args.target, mode)
            try:
                sock, display = ask(ctl, request, trace_file)
            except _NoAgent:
                ctl = control_path(ensure_agent(resolve(args.target), mode, args.linger))
                sock, display = ask(ctl, request, trace_file)
        except _NoAgent as err:
            fail(f"the link agent did not answer: {err}")
        except RunError as err:
            fail(str(err))
        if trace_file is not None and trace_file is not sys.stdout:
            trace_file.close()  # the agent has its own descriptor
            trace_file = None
        with sock:
            code = run_command(command, dict(os.environ, DISPLAY=display, XAUTHORITY=xauthority))
            answer = done(sock)
        if mode.verify:
            report_verify(answer, os.path.realpath(ctl)[: -len(".ctl")] + ".sock.stats.json")
        if timeline is not None and trace_path is not None:
            draw_from(trace_path, timeline, " ".join(command))
        return code
    finally:
        if trace_file is not None and trace_file is not sys.stdout:
            trace_file.close()
        shutil.rmtree(workdir, ignore_errors=True)


def draw_from(waits_path: str, png: str, title: str) -> None:
    """Draw the waits the agent wrote (Perfetto JSON) to `png` (Pillow is imported only
    here, once the program has exited)."""
    from ..cli.main import draw_timeline
    from ..observe.waits import from_perfetto

    try:
        with open(waits_path) as f:
            analysis = from_perfetto(json.load(f))
    except (OSError, ValueError) as err:
        fail(f"cannot read the waits the link agent wrote: {err}")
    draw_timeline(analysis, png, title)


def ask(ctl: str, request: dict[str, Any], trace_file: IO[str] | None) -> tuple[socket.socket, str]:
    """Ask the agent at `ctl` for a display: (the connection to keep open, its name)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(ANSWER_TIMEOUT)
        try:
            sock.connect(ctl)
        except OSError as err:
            raise _NoAgent(str(err)) from None
        line = json.dumps(request).encode() + b"\n"
        if trace_file is not None:
            trace_file.flush()
            socket.send_fds(sock, [line], [trace_file.fileno()])
        else:
            sock.sendall(line)
        reply = _read_line(sock)
        if reply is None:
            raise _NoAgent("it closed the connection")  # exiting as we asked: start another
        answer = json.loads(reply)
        if not answer.get("ok"):
            raise RunError(f"the link agent refused a display: {answer.get('error')}")
        sock.settimeout(None)
        return sock, str(answer["display"])
    except BaseException:
        sock.close()
        raise


def _read_line(sock: socket.socket) -> bytes | None:
    buf = b""
    while b"\n" not in buf:
        try:
            chunk = sock.recv(4096)
        except (TimeoutError, OSError):
            return None
        if not chunk:
            return None
        buf += chunk
    return buf.partition(b"\n")[0]


def done(sock: socket.socket) -> dict[str, Any]:
    """Tell the agent the command has exited, and wait (a little) for its last bytes to
    pass through the display before it goes; its answer ({} if none came)."""
    try:
        sock.settimeout(DRAIN_TIMEOUT)
        sock.sendall(b'{"op": "done"}\n')
        line = _read_line(sock)
        answer = json.loads(line) if line else {}
        return answer if isinstance(answer, dict) else {}
    except (OSError, ValueError):
        return {}


def resolve(target: str, discovery_socket: str | None = None) -> LinkTarget:
    """Where `target` is: xproxy://HOST:PORT as written, @NAME from the local discoveryd."""
    if not target.startswith("@"):
        return parse_direct(target)
    from discovery.blocking import LookupFailed, lookup

    name = target[1:]
    try:
        records = lookup(LINK_SERVICE_TYPE, name=name, wait=1.0, socket=discovery_socket)
    except LookupFailed as err:
        raise RunError(f"cannot ask discoveryd for @{name}: {err}") from None
    if not records:
        raise RunError(f"no display named {name!r} is exported on the LAN "
                       "(`xproxy displays` lists those that are)")
    rec = records[0]
    addresses = rec.get("addresses") or []
    if not addresses:
        raise RunError(f"display {name!r} was found but has no address")
    fingerprint = (rec.get("txt") or {}).get("fp")
    return LinkTarget(str(addresses[0]), int(rec["port"]), target, fingerprint, target)


_DEFAULT_MODE = LinkMode()


def ensure_agent(target: LinkTarget, mode: LinkMode = _DEFAULT_MODE,
                 linger: float | None = None) -> str:
    """The X socket of the agent holding the link to `target`, started if none runs yet
    (under a lock, so runs started together share one)."""
    path = agent_socket_path(target.host, target.port, target.trust_name, mode.key)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _alive(control_path(path)):
                return path
            argv = [sys.executable, "-m", "xproxy.cli", "link-agent", "--host", target.host,
                    "--port", str(target.port), "--trust-name", target.trust_name,
                    "--socket", path, *mode.argv()]
            if linger is not None:
                argv += ["--linger", str(linger)]
            if target.fingerprint:
                argv += ["--fingerprint", target.fingerprint]
            log_path = path[: -len(".sock")] + ".log"
            with open(log_path, "a") as agent_log:
                agent = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=agent_log, start_new_session=True, text=True)
            assert agent.stdout is not None
            line = agent.stdout.readline()
            agent.stdout.close()
            if line.startswith("ready"):
                return path
            agent.wait()
            raise RunError(line.partition("error: ")[2].strip()
                           or f"the link agent failed (see {log_path})")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _alive(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def report_verify(answer: dict[str, Any], stats_path: str) -> None:
    """What `--verify-cache` found in this run: its answers compared with the server's, and
    mismatches (the agent's `answer` to "done"); `stats_path` keeps the agent's totals."""
    stats = answer.get("stats")
    if not isinstance(stats, dict):
        print("xproxy: verify-cache: no report from the link agent", file=sys.stderr)
        return
    print(f"xproxy: verify-cache: {stats.get('compared', 0)} answers compared with the "
          f"server's, {stats.get('mismatches', 0)} mismatches (the agent's totals: "
          f"{stats_path})", file=sys.stderr)
    for m in stats.get("mismatch_log", [])[:10]:
        print(f"xproxy: verify-cache: mismatch in {m['kind']} at sequence {m['seq']}: ours "
              f"{' '.join(m['ours'])} server {' '.join(m['server'])}", file=sys.stderr)
