"""`xproxy run --to @NAME|xproxy://HOST:PORT -- COMMAND`: the run itself, kept small.

The display a program uses is served by the link agent (runservice.py), which already holds the
link, the X cache and a warm reactor; this process only asks it for a display, runs the
command, and says when the command is done. With an agent running that takes the standard
library and a few milliseconds, where importing Twisted alone takes a quarter of a second: on
a warm link, time to the first X request is the program's own. Only when no agent runs yet
(the first run, or after it lingered out) does this process start the reactor, to find the
display on the LAN and start the agent (launcher.prepare_link), then go on the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import IO, Any

from .paths import (
    LinkMode,
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


def _fail(message: str, code: int = 1) -> int:
    print(f"xproxy: {message}", file=sys.stderr)
    return code


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
        return _fail("no command given (xproxy run --to TARGET -- COMMAND ARGS...)", 2)
    mode = LinkMode(suppress=not args.no_suppress, verify=args.verify_cache,
                    compress_level=max(0, args.compress_level))
    trace_file: IO[str] | None = None
    if args.trace is not None:
        try:
            trace_file = sys.stdout if args.trace == "-" else open(args.trace, "w")
        except OSError as err:
            return _fail(f"cannot write the trace: {err}")
    workdir = tempfile.mkdtemp(prefix="xproxy-run-")
    try:
        xauthority = os.path.join(workdir, "Xauthority")
        request = {"op": "display", "xauthority": xauthority, "label": args.target,
                   "hide_ext": list(args.hide_ext), "stats": mode.verify,
                   "trace": None if trace_file is None else {
                       "format": args.trace_format, "only": args.only, "skip": args.skip}}
        try:
            ctl = control_for(args.target, mode)
            try:
                sock, display = ask(ctl, request, trace_file)
            except _NoAgent:
                ctl = prepare(args, mode)
                sock, display = ask(ctl, request, trace_file)
        except _NoAgent as err:
            return _fail(f"the link agent did not answer: {err}")
        except RunError as err:
            return _fail(str(err))
        if trace_file is not None and trace_file is not sys.stdout:
            trace_file.close()  # the agent has its own descriptor
            trace_file = None
        with sock:
            code = run_command(command, dict(os.environ, DISPLAY=display, XAUTHORITY=xauthority))
            done(sock)
        if mode.verify:
            report_verify(os.path.realpath(ctl)[: -len(".ctl")] + ".sock.stats.json")
        return code
    finally:
        if trace_file is not None and trace_file is not sys.stdout:
            trace_file.close()
        shutil.rmtree(workdir, ignore_errors=True)


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


def done(sock: socket.socket) -> None:
    """Tell the agent the command has exited, and wait (a little) for its last bytes to
    pass through the display before it goes."""
    try:
        sock.settimeout(DRAIN_TIMEOUT)
        sock.sendall(b'{"op": "done"}\n')
        _read_line(sock)
    except OSError:
        pass


def run_command(argv: list[str], env: dict[str, str]) -> int:
    """Run argv with our stdin/stdout/stderr; its exit status (128+N when killed by signal N,
    127 when it cannot be started, as shells report). SIGTERM and SIGHUP sent to us are
    passed on; SIGINT and SIGQUIT from the terminal reach the command by themselves."""
    path = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
    try:
        child = subprocess.Popen(argv, executable=path, env=env)
    except OSError as err:
        print(f"xproxy: cannot run {argv[0]}: {err}", file=sys.stderr)
        return 127

    def forward(signum: int, frame: Any) -> None:
        try:
            child.send_signal(signum)
        except OSError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    old.update({s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)})
    try:
        code = child.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return 128 - code if code < 0 else code


def prepare(args: argparse.Namespace, mode: LinkMode) -> str:
    """Find the display and start its link agent, on the reactor: the control socket."""
    from twisted.internet import defer

    from .cli import install_reactor, start_logging

    reactor = install_reactor("asyncio")
    start_logging(args.verbose, quiet=True)
    result: dict[str, Any] = {}

    def go() -> None:
        from .launcher import prepare_link

        d = defer.ensureDeferred(prepare_link(reactor, args.target, mode, args.linger))
        d.addCallbacks(lambda ctl: result.setdefault("ctl", ctl),
                       lambda failure: result.setdefault("error", failure))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    if "ctl" in result:
        return str(result["ctl"])
    error = result.get("error")
    if error is not None and error.check(RunError):
        raise error.value
    raise RunError(f"cannot start the link agent: {error.value if error else 'interrupted'}")


def report_verify(stats_path: str) -> None:
    """What `--verify-cache` found: answers compared with the server's, and mismatches."""
    try:
        with open(stats_path) as f:
            stats = json.load(f)
    except (OSError, ValueError):
        print("xproxy: verify-cache: no report from the link agent", file=sys.stderr)
        return
    print(f"xproxy: verify-cache: {stats.get('compared', 0)} answers compared with the "
          f"server's, {stats.get('mismatches', 0)} mismatches (report: {stats_path})",
          file=sys.stderr)
    for m in stats.get("mismatch_log", [])[:10]:
        print(f"xproxy: verify-cache: mismatch in {m['kind']} at sequence {m['seq']}: ours "
              f"{' '.join(m['ours'])} server {' '.join(m['server'])}", file=sys.stderr)
