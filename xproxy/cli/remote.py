"""The launcher's commands: id, authorize, revoke, export, run, displays (and the link agent
that `run` starts by itself)."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from ..run.paths import DEFAULT_LINGER
from .errors import fail

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO

    from twisted.internet import defer
    from twisted.internet.interfaces import IReactorCore, IReactorTime

    from ..observe.instruments import Instruments
    from ..reactor_types import ICommandReactor

    #: main.running: fires once the reactor runs
    Running = Callable[[IReactorCore], defer.Deferred[None]]
    #: main._open_trace: the trace's file (or the default given) and whether to close it
    OpenTrace = Callable[[str | None, TextIO | None], tuple[TextIO | None, bool]]

COMMANDS = ("id", "authorize", "revoke", "export", "run", "displays", "link-agent")


def add_parsers(sub: Any, add_trace_options: Any) -> None:
    from .main import PERFETTO, positive_float, positive_int

    p = sub.add_parser("id", help="print this host's key fingerprint (created on first use)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("authorize", help="let an app host use this host's exported displays")
    p.add_argument("fingerprint", metavar="FINGERPRINT", help="as `xproxy id` prints it there")
    p.add_argument("--name", default="", metavar="LABEL", help="a label to remember it by")
    p = sub.add_parser("revoke", help="remove an app host from the authorized list")
    p.add_argument("which", metavar="FINGERPRINT|LABEL")
    p = sub.add_parser("export", help="export a display to authorized app hosts on the LAN")
    p.add_argument("display", nargs="?", default=None, metavar="DISPLAY",
                   help="the display to export (default: $DISPLAY)")
    p.add_argument("--name", required=True, help="the name app hosts use: run --to @NAME")
    p.add_argument("--port", type=int, default=7010, help="TLS port (default 7010; 0: any)")
    p.add_argument("--interface", default="", metavar="ADDR",
                   help="listen on this address only (default: all)")
    p.add_argument("--no-advertise", action="store_true",
                   help="do not publish through discoveryd (reach it as xproxy://HOST:PORT)")
    p.add_argument("--hide-ext", action="append", default=[], metavar="NAME")
    p.add_argument("--allow-ext", action="append", default=[], metavar="NAME")
    add_trace_options(p, "--trace-format")
    p.add_argument("--trace", metavar="FILE", default=None)
    p.add_argument("--stats", action="store_true")
    p.add_argument("--metrics", metavar="ENDPOINT", default=None)
    p.add_argument("--compress-level", type=int, default=3, metavar="N",
                   help="zstandard level for what this end sends on links (default 3; 0: off)")
    p.add_argument("--link-grace", type=float, default=60.0, metavar="SECONDS",
                   help="keep a lost link's X connections this long for it to resume (default 60)")
    p.add_argument("--handshake-timeout", type=positive_float, default=10.0, metavar="S",
                   help="close a connection whose TLS handshake is not done in S seconds "
                        "(default 10)")
    p.add_argument("--max-handshakes", type=positive_int, default=64, metavar="N",
                   help="at most N unfinished TLS handshakes at a time; further connections "
                        "are closed at once (default 64)")
    p.add_argument("-v", "--verbose", action="store_true")
    p = sub.add_parser("run", help="run an X program on another host's display")
    p.add_argument("--to", dest="target", required=True, metavar="TARGET",
                   help="@NAME (found on the LAN), xproxy://HOST:PORT, or a display (:0)")
    p.add_argument("--trace", metavar="FILE", default=None, help="trace the program's X traffic")
    add_trace_options(p, "--trace-format", PERFETTO)
    p.add_argument("--timeline", metavar="PNG", default=None,
                   help="draw the round trips the program waited for, and who answered "
                        "them, to PNG (docs/xproxy.md: the waits)")
    p.add_argument("--hide-ext", action="append", default=[], metavar="NAME")
    p.add_argument("--no-suppress", action="store_true",
                   help="send every request to the display host (no answers from the cache)")
    p.add_argument("--verify-cache", action="store_true",
                   help="compare every cached answer with the server's own and report mismatches")
    p.add_argument("--compress-level", type=int, default=3, metavar="N",
                   help="zstandard level on the link (default 3; 0: off)")
    p.add_argument("--linger", type=float, default=DEFAULT_LINGER, metavar="SECONDS",
                   help="when this run starts the link, keep it this long after its last "
                        f"user (as ssh's ControlPersist; default {DEFAULT_LINGER:g})")
    p.add_argument("--session", default=None, metavar="NAME",
                   help="run in the movable session NAME, started on TARGET if it does not "
                        "run yet (`xproxy move NAME --to ...` then moves its programs)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("program", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS...")
    p = sub.add_parser("displays", help="list the displays exported on the LAN")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-probe", action="store_true",
                   help="do not connect to each to learn whether this host is authorized")
    p = sub.add_parser("link-agent", help=argparse.SUPPRESS)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--trust-name", required=True)
    p.add_argument("--fingerprint", default=None)
    p.add_argument("--socket", required=True)
    p.add_argument("--linger", type=float, default=DEFAULT_LINGER)
    p.add_argument("--no-suppress", action="store_true")
    p.add_argument("--verify-cache", action="store_true")
    p.add_argument("--compress-level", type=int, default=3)
    p.add_argument("--grace", type=float, default=60.0)


def quiet(args: argparse.Namespace) -> bool:
    return args.command in ("run", "displays", "link-agent") and not getattr(args, "verbose", False)


def dispatch(reactor: ICommandReactor, args: argparse.Namespace, running: Running,
             open_trace: OpenTrace) -> defer.Deferred[object]:
    from twisted.internet import defer

    handler = {"id": ident, "authorize": authorize, "revoke": revoke, "export": export,
               "run": run, "displays": displays, "link-agent": link_agent}[args.command]
    return defer.ensureDeferred(handler(reactor, args, running, open_trace))


async def ident(reactor: ICommandReactor, args: argparse.Namespace, running: Running,
        open_trace: OpenTrace) -> None:
    from ..trust.identity import Identity, config_dir

    identity = Identity.load_or_create()
    if args.json:
        print(json.dumps({"fingerprint": identity.fingerprint, "config": config_dir()}))
    else:
        print(identity.fingerprint)


async def authorize(reactor: ICommandReactor, args: argparse.Namespace, running: Running,
        open_trace: OpenTrace) -> None:
    from ..trust.identity import AuthorizedHosts, IdentityError

    hosts = AuthorizedHosts.default()
    try:
        new = hosts.authorize(args.fingerprint, args.name)
    except IdentityError as err:
        fail(str(err), 2)
    print(f"{'authorized' if new else 'already authorized'}: {args.fingerprint} "
          f"{args.name}".rstrip())


async def revoke(reactor: ICommandReactor, args: argparse.Namespace, running: Running,
        open_trace: OpenTrace) -> None:
    from ..trust.identity import AuthorizedHosts

    removed = AuthorizedHosts.default().revoke(args.which)
    if not removed:
        fail(f"{args.which} is not in the authorized list")
    print(f"revoked {removed} entr{'y' if removed == 1 else 'ies'} for {args.which}")


def _instruments(reactor: IReactorTime, args: argparse.Namespace,
                 open_trace: OpenTrace, waits: bool = False) -> Instruments:
    from ..observe.instruments import Instruments

    trace_out, close_trace = open_trace(args.trace, None)
    return Instruments(reactor.seconds, trace_out, args.trace_format, args.only, args.skip,
                       stats=getattr(args, "stats", False),
                       metrics=getattr(args, "metrics", None) is not None, close_trace=close_trace,
                       waits=waits)


async def export(reactor: ICommandReactor, args: argparse.Namespace, running: Running,
        open_trace: OpenTrace) -> int:
    from ..export.server import ExportOptions, ExportServer
    from ..observe.metrics import listen_metrics

    await running(reactor)
    display = args.display or os.environ.get("DISPLAY")
    if not display:
        fail("no display to export: give one or set DISPLAY", 2)
    inst = _instruments(reactor, args, open_trace)
    server = ExportServer(reactor, ExportOptions(
        display=display, name=args.name, port=args.port, interface=args.interface,
        hide_ext=args.hide_ext, allow_ext=args.allow_ext, advertise=not args.no_advertise,
        observers=inst.observers, on_client_done=inst.client_done,
        compress_level=args.compress_level or None, link_grace=args.link_grace,
        handshake_timeout=args.handshake_timeout, max_handshakes=args.max_handshakes))
    try:
        port = await server.start()
        if args.metrics is not None:
            assert inst.metrics is not None
            await listen_metrics(reactor, args.metrics, inst.metrics)
    except Exception as err:  # noqa: BLE001 - any start failure ends the command with its reason
        await server.stop()
        fail(str(err))
    from twisted.internet import defer

    done: defer.Deferred[int] = defer.Deferred()

    async def shutdown() -> None:
        await server.stop()
        inst.stop()
        if not done.called:
            done.callback(0)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(shutdown()))
    print(f"ready name={args.name} port={port} fingerprint={server.identity.fingerprint} "
          f"screen={server.screen}", flush=True)
    return await done


async def run(reactor: ICommandReactor, args: argparse.Namespace, running: Running,
        open_trace: OpenTrace) -> None:
    """`run` to a display of this host (exports go through run/client.py, before the reactor)."""
    from ..run.launcher import RunError
    from ..run.launcher import run as launch
    from .main import check_waits_output, draw_timeline

    command = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not command:
        fail("no command given (xproxy run --to TARGET -- COMMAND ARGS...)", 2)
    check_waits_output(args.trace_format, args.trace, "--trace FILE")
    await running(reactor)
    inst = _instruments(reactor, args, open_trace, waits=args.timeline is not None) \
        if args.trace or args.timeline else None
    try:
        code = await launch(reactor, args.target, command,
                            observers=inst.observers if inst else None,
                            on_client_done=inst.client_done if inst else None,
                            hide_ext=args.hide_ext)
    except RunError as err:
        fail(str(err))
    finally:
        if inst is not None:
            inst.stop()
    if args.timeline is not None and inst is not None and inst.waits is not None:
        draw_timeline(inst.waits, args.timeline, " ".join(command))
    raise SystemExit(code)


async def displays(reactor: ICommandReactor, args: argparse.Namespace, running: Running,
        open_trace: OpenTrace) -> None:
    from ..run.launcher import displays as list_displays

    await running(reactor)
    try:
        found = await list_displays(reactor, probe=not args.no_probe)
    except Exception as err:  # noqa: BLE001 - reported to the user, who asked for the list
        fail(f"cannot list displays: {err}")
    if args.json:
        print(json.dumps(found, indent=None))
        return
    if not found:
        print("no exported displays found")
        return
    for d in found:
        auth = {True: "authorized", False: "NOT authorized", None: "?"}[d["authorized"]]
        where = d["addresses"][0] if d["addresses"] else d["host"]
        print(f"@{d['name']:<16} {where}:{d['port']:<6} {d['screen']:<11} {auth}"
              + ("" if d["status"] in ("ok", "") or d["authorized"] is False
                 else f"  ({d['status']})"))


async def link_agent(reactor: ICommandReactor, args: argparse.Namespace, running: Running,
        open_trace: OpenTrace) -> None:
    from twisted.internet import defer
    from twisted.logger import Logger

    from ..agent.link_agent import (
        AgentError,
        AgentFiles,
        AgentOptions,
        DisplayHost,
        DisplayTrust,
        LinkAgent,
    )
    from ..agent.runservice import RunService
    from ..run.paths import LinkMode, control_path, name_alias_path

    await running(reactor)
    agent = LinkAgent(
        reactor, DisplayHost(args.host, args.port, args.trust_name),
        AgentOptions(linger=args.linger, suppress=not args.no_suppress,
                     verify=args.verify_cache, compress_level=args.compress_level or None,
                     grace=args.grace),
        DisplayTrust(args.trust_name, args.fingerprint), AgentFiles(args.socket))
    # a run holds the link even while its program has no X connection open
    service = RunService(reactor, control_path(args.socket), agent.endpoint, agent.hold,
                         agent.release, after_run=agent.save)
    mode = LinkMode(suppress=not args.no_suppress, verify=args.verify_cache,
                    compress_level=args.compress_level)
    alias = name_alias_path(args.trust_name, mode.key) if args.trust_name.startswith("@") else None
    try:
        await agent.start()
        await service.start()
        if alias is not None:  # later runs of @NAME find this agent without a lookup
            tmp = f"{alias}.{os.getpid()}"
            os.symlink(service.control, tmp)
            os.replace(tmp, alias)
    except AgentError as err:
        await service.stop()
        print(f"error: {err}", flush=True)
        raise SystemExit(1) from None
    except Exception as err:  # noqa: BLE001 - reported to `xproxy run`, which started the agent
        await service.stop()
        print(f"error: the link agent failed: {err}", flush=True)
        raise SystemExit(1) from None
    # SIGTERM: end the link cleanly, so the export does not wait for a resumption
    # (stop is idempotent: at a normal exit the trigger finds the link gone)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.ensureDeferred(agent.stop("terminated")))
    print("ready", flush=True)
    why = await agent.done
    await agent.stop(why)  # its BYE on the way out
    if alias is not None and os.path.realpath(alias) == service.control:
        os.unlink(alias)
    await service.stop()
    Logger(namespace="xproxy").info("link agent for {name} exits: {why}",
                                    name=args.trust_name, why=why)
