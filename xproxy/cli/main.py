"""The `xproxy` command line."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO, cast

if TYPE_CHECKING:
    from twisted.internet import defer
    from twisted.internet.interfaces import IReactorCore

    from ..observe.waits import WaitAnalysis
    from ..reactor_types import ICommandReactor


def install_reactor(loop_name: str = "asyncio") -> ICommandReactor:
    """The asyncio reactor (DESIGN.md), so zeroconf's asyncio API shares the loop; on
    uvloop's event loop when asked (the relays), which costs less per reactor turn."""
    import asyncio
    import os

    from twisted.internet import asyncioreactor

    loop_name = os.environ.get("XPROXY_LOOP", loop_name)
    if "twisted.internet.reactor" not in sys.modules:  # (else installed: a test runner's)
        loop: asyncio.AbstractEventLoop
        if loop_name == "uvloop":
            import uvloop

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    from twisted.internet import reactor

    return cast("ICommandReactor", reactor)


def start_logging(verbose: bool, quiet: bool = False) -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    level = LogLevel.debug if verbose else LogLevel.warn if quiet else LogLevel.info
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr, timeFormat="%H:%M:%S"), [predicate])],
        redirectStandardIO=False,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xproxy", description="An X11 protocol proxy.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="listen as an X display and relay to another display")
    serve.add_argument("--display", type=_display_number, default=None, metavar="N",
                       help="listen as :N (default: the first free number from 10)")
    serve.add_argument("--to", dest="target", required=True, metavar="TARGET",
                       help="the real display, as in DISPLAY (:0, unix:0, host:0, host:0.1)")
    serve.add_argument("--tcp", action="store_true", help="also listen on TCP port 6000+N")
    serve.add_argument("--tcp-interface", default="127.0.0.1", metavar="ADDR",
                       help="address for --tcp (default 127.0.0.1, as ssh's X11UseLocalhost)")
    serve.add_argument("--hide-ext", action="append", default=[], metavar="NAME",
                       help="hide an extension from clients (MIT-SHM is hidden by default)")
    serve.add_argument("--allow-ext", action="append", default=[], metavar="NAME",
                       help="let a default-hidden extension through (MIT-SHM on the same host)")
    serve.add_argument("--movable", action="store_true",
                       help="clients of this display can be moved to another display while "
                            "they run (`xproxy move`); they see core X, BIG-REQUESTS, SHAPE, "
                            "RENDER, XFIXES and XKEYBOARD only")
    serve.add_argument("--untrusted", action="store_true",
                       help="use an untrusted cookie from the SECURITY extension upstream")
    serve.add_argument("--setup-timeout", type=positive_float, default=10.0, metavar="S",
                       help="close a connection that has not completed its X11 setup within "
                            "S seconds (default 10)")
    serve.add_argument("--max-setups", type=positive_int, default=64, metavar="N",
                       help="at most N connections may have an unfinished setup at a time; "
                            "further ones are closed at once (default 64)")
    serve.add_argument("--max-held", type=positive_int, default=4096, metavar="N",
                       help="stop reading a client while more than N of its QueryExtension and "
                            "ListExtensions requests await their replies (default 4096)")
    _add_trace_options(serve, "--trace-format")
    serve.add_argument("--trace", metavar="FILE", default=None,
                       help="trace every message to FILE (- for stdout)")
    serve.add_argument("--stats", action="store_true",
                       help="print traffic per client on disconnect and totals on exit")
    serve.add_argument("--metrics", metavar="ENDPOINT", default=None,
                       help="serve Prometheus metrics on a Twisted endpoint (tcp:9100)")
    serve.add_argument("-v", "--verbose", action="store_true")
    trace = sub.add_parser("trace", help="run a command on a tracing proxy display, like xtrace")
    trace.add_argument("-o", "--output", metavar="FILE", default=None,
                       help="write the trace to FILE (default: stderr, or nothing with "
                            "--timeline; - for stdout)")
    _add_trace_options(trace, "--format", PERFETTO)
    trace.add_argument("--timeline", metavar="PNG", default=None,
                       help="draw the round trips the program waited for to PNG "
                            "(docs/xproxy.md: the waits)")
    trace.add_argument("--to", dest="target", default=None, metavar="TARGET",
                       help="the real display (default: $DISPLAY)")
    trace.add_argument("--stats", action="store_true",
                       help="print traffic per client and totals at the end")
    trace.add_argument("-v", "--verbose", action="store_true")
    trace.add_argument("program", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS...")
    from . import remote, sessions

    remote.add_parsers(sub, _add_trace_options)
    sessions.add_parsers(sub)
    return parser


#: The trace formats of a proxy that runs the program: the waits as Chrome/Perfetto JSON too.
PERFETTO = ("text", "json", "perfetto")


def _add_trace_options(parser: argparse.ArgumentParser, format_flag: str,
                       formats: tuple[str, ...] = ("text", "json")) -> None:
    parser.add_argument(format_flag, dest="trace_format", choices=formats,
                        default="text", help="trace lines as text (default) or JSON Lines"
                        + ("; perfetto: the round trips the program waited for, as "
                           "Chrome/Perfetto trace JSON (needs a file)"
                           if "perfetto" in formats else ""))
    parser.add_argument("--only", action="append", default=[], metavar="NAMES",
                        help="trace only these messages (comma-separated names or patterns)")
    parser.add_argument("--skip", action="append", default=[], metavar="NAMES",
                        help="do not trace these messages (comma-separated names or patterns)")


def _open_trace(path: str | None, default: TextIO | None) -> tuple[TextIO | None, bool]:
    if path is None:
        return default, False
    if path == "-":
        return sys.stdout, False
    return open(path, "w", buffering=1 << 16), True


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _display_number(text: str) -> int:
    text = text.lstrip(":")
    if not text.isdigit() or int(text) > 59535:
        raise argparse.ArgumentTypeError(f"not a display number: {text!r}")
    return int(text)


async def serve(reactor: ICommandReactor, args: argparse.Namespace) -> int:
    from twisted.internet import defer
    from twisted.logger import Logger

    from ..observe.instruments import Instruments
    from ..observe.metrics import listen_metrics
    from ..relay.server import ProxyServer, ServeOptions, StartError
    from ..x11.display import DisplayNameError

    if args.movable:
        return await serve_movable(reactor, args)
    await running(reactor)
    trace_out, close_trace = _open_trace(args.trace, None)
    inst = Instruments(reactor.seconds, trace_out, args.trace_format, args.only, args.skip,
                       stats=args.stats, metrics=args.metrics is not None,
                       close_trace=close_trace)
    options = ServeOptions(
        target=args.target, display=args.display, tcp=args.tcp, tcp_interface=args.tcp_interface,
        hide_ext=args.hide_ext, allow_ext=args.allow_ext, untrusted=args.untrusted,
        observers=inst.observers, on_client_done=inst.client_done,
        setup_timeout=args.setup_timeout, max_setups=args.max_setups, max_held=args.max_held,
    )
    try:
        server = ProxyServer(reactor, options)
        name = await server.start()
        if args.metrics is not None:
            assert inst.metrics is not None
            try:
                await listen_metrics(reactor, args.metrics, inst.metrics)
            except Exception as err:
                await server.stop()
                raise StartError(f"cannot serve metrics on {args.metrics}: {err}") from err
    except (StartError, DisplayNameError) as err:
        print(f"xproxy: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    inst.start_flushing(reactor)
    done: defer.Deferred = defer.Deferred()

    async def shutdown() -> None:
        await server.stop()
        inst.stop()
        assert server.factory is not None
        Logger(namespace="xproxy").info("xproxy {name} stopped: {summary}", name=name,
                                        summary=server.factory.totals.summary())
        if not done.called:
            done.callback(0)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(shutdown()))
    print(f"ready DISPLAY={name}", flush=True)
    return await done


async def serve_movable(reactor: ICommandReactor, args: argparse.Namespace) -> int:
    """`xproxy serve --movable`: a display whose clients `xproxy move` can move."""
    from twisted.internet import defer

    from ..move import control
    from ..move.display import MovableDisplay
    from ..relay.server import ServeOptions, StartError
    from ..x11.display import DisplayNameError
    from .errors import fail

    others = [flag for flag, used in (
        ("--hide-ext", args.hide_ext), ("--allow-ext", args.allow_ext),
        ("--untrusted", args.untrusted), ("--trace", args.trace), ("--stats", args.stats),
        ("--metrics", args.metrics)) if used]
    if others:
        fail(f"--movable does not go with {', '.join(others)} (a movable display shows its "
             "clients core X, BIG-REQUESTS, SHAPE, RENDER, XFIXES and XKEYBOARD only, and "
             "is not traced)", 2)
    await running(reactor)
    options = ServeOptions(target=args.target, display=args.display, tcp=args.tcp,
                           tcp_interface=args.tcp_interface,
                           # an X server's unix socket (a link agent's) is no display name
                           upstream_endpoint=f"unix:path={args.target}"
                           if args.target.startswith("/") else None)
    try:
        server = MovableDisplay(reactor, options)
        name = await server.start()
        port = await control.listen(reactor, server)
    except (StartError, DisplayNameError, OSError) as err:
        fail(str(err))
    done: defer.Deferred = defer.Deferred()

    async def shutdown() -> None:
        await port.stopListening()
        await server.stop()
        if not done.called:
            done.callback(0)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(shutdown()))
    print(f"ready DISPLAY={name}", flush=True)
    return await done


def move(args: argparse.Namespace) -> int:
    """`xproxy move :P --to TARGET`, through the display's control socket."""
    from ..move import control
    from .errors import fail

    try:
        answer = control.request(args.display, {"op": "move", "to": args.target})
    except (ConnectionError, OSError, ValueError) as err:
        fail(str(err))
    if not answer.get("ok"):
        fail(f"cannot move :{args.display} to {args.target}: {answer.get('error')}")
    print(f"moved {answer['clients']} clients to {args.target} in {answer['seconds']:.2f} s")
    return 0


async def trace(reactor: ICommandReactor, args: argparse.Namespace) -> int:
    """`xproxy trace -- COMMAND`: a proxy on a free display, the command run on it with
    DISPLAY and XAUTHORITY set, the trace written; exits with the command's status."""
    import os

    from twisted.internet import defer

    from ..observe.instruments import Instruments
    from ..relay.server import ProxyServer, ServeOptions, StartError
    from ..x11.display import DisplayNameError

    command = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not command:
        print("xproxy trace: no command given (xproxy trace [options] -- COMMAND ARGS...)",
              file=sys.stderr)
        raise SystemExit(2)
    target = args.target or os.environ.get("DISPLAY")
    if not target:
        print("xproxy trace: no display to trace to: set DISPLAY or give --to", file=sys.stderr)
        raise SystemExit(2)
    check_waits_output(args.trace_format, args.output, "-o FILE")
    await running(reactor)
    quiet = args.timeline is not None and args.output is None
    trace_out, close_trace = _open_trace(args.output, None if quiet else sys.stderr)
    inst = Instruments(reactor.seconds, trace_out, args.trace_format, args.only, args.skip,
                       stats=args.stats, close_trace=close_trace,
                       waits=args.timeline is not None)
    inst.start_flushing(reactor)  # `-o FILE` can be followed (tail -f), a second behind at most
    server = ProxyServer(reactor, ServeOptions(target=target, observers=inst.observers,
                                               on_client_done=inst.client_done))
    try:
        name = await server.start()
    except (StartError, DisplayNameError) as err:
        print(f"xproxy: {err}", file=sys.stderr)
        raise SystemExit(1) from None

    from ..run.child import spawn_command

    env = dict(os.environ, DISPLAY=name, XAUTHORITY=server.xauthority)
    finished = False

    async def finish() -> None:
        """The trace's end, once: also on SIGINT/SIGTERM (a program that runs until
        stopped still gets its timeline)."""
        nonlocal finished
        if finished:
            return
        finished = True
        await server.stop()
        inst.stop()
        if args.timeline is not None and inst.waits is not None:
            draw_timeline(inst.waits, args.timeline, " ".join(command))

    stop_trigger = reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.ensureDeferred(finish()))
    code = await spawn_command(reactor, command, env)
    await server.drain()
    reactor.removeSystemEventTrigger(stop_trigger)
    await finish()
    raise SystemExit(code)


def check_waits_output(trace_format: str, output: str | None, flag: str) -> None:
    """The waits as Perfetto JSON are one document: they need a file of their own."""
    if trace_format == "perfetto" and output in (None, "-"):
        print(f"xproxy: --format perfetto needs {flag} (the program's own output goes to "
              "stdout and stderr)", file=sys.stderr)
        raise SystemExit(2)


def draw_timeline(waits: WaitAnalysis, path: str, title: str) -> None:
    """Draw the timeline and say on stderr what it holds."""
    from ..observe.timeline import draw

    try:
        rows = draw(waits, path, title)
    except (OSError, ValueError) as err:
        print(f"xproxy: cannot draw the timeline to {path}: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    s = waits.summary()
    print(f"xproxy: {s['waits']} round trips waited ({s['waited']:.3f} s), {s['before_map']} "
          f"before the first window was mapped; {rows} rows in {path}", file=sys.stderr,
          flush=True)


def running(reactor: IReactorCore) -> defer.Deferred[None]:
    """Fires once the reactor runs, so its SIGINT/SIGTERM handlers are in place before we
    announce `ready` (task.react calls main before reactor.run)."""
    from twisted.internet import defer

    d: defer.Deferred[None] = defer.Deferred()
    reactor.callWhenRunning(d.callback, None)
    return d


def main(reactor: ICommandReactor, argv: list[str]) -> defer.Deferred[object]:
    from twisted.internet import defer

    args = build_parser().parse_args(argv)
    from . import remote

    start_logging(getattr(args, "verbose", False),
                  quiet=args.command == "trace" or remote.quiet(args))
    if args.command == "serve":
        return defer.ensureDeferred(serve(reactor, args))
    if args.command == "trace":
        return defer.ensureDeferred(trace(reactor, args))
    from . import remote

    if args.command in remote.COMMANDS:
        return remote.dispatch(reactor, args, running, _open_trace)
    raise SystemExit(2)


def run() -> None:
    argv = sys.argv[1:]
    args = build_parser().parse_args(argv)  # usage errors before the reactor starts
    from . import sessions

    if args.command in (*sessions.COMMANDS, "run"):  # no reactor for these
        code = sessions.dispatch(args)
        if code is not None:
            sys.stdout.flush()
            raise SystemExit(code)
    if args.command == "run":  # through a link agent, without the reactor when one runs
        from ..run import client as run_client

        code = run_client.main(args)
        if code is not None:
            sys.stdout.flush()
            raise SystemExit(code)
    install_reactor("uvloop" if args.command in ("serve", "export") else "asyncio")
    from twisted.internet import task

    task.react(main, [argv])


if __name__ == "__main__":
    run()
