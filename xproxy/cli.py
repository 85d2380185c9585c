"""The `xproxy` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys

from twisted.logger import Logger

log = Logger(namespace="xproxy")


def install_reactor():  # type: ignore[no-untyped-def]
    """The asyncio reactor (DESIGN.md), so zeroconf's asyncio API shares the loop."""
    from twisted.internet import asyncioreactor

    try:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    except Exception:  # already installed (e.g. under a test runner)
        pass
    from twisted.internet import reactor

    return reactor


def start_logging(verbose: bool) -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.debug if verbose else LogLevel.info)
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
    serve.add_argument("--untrusted", action="store_true",
                       help="use an untrusted cookie from the SECURITY extension upstream")
    serve.add_argument("-v", "--verbose", action="store_true")
    return parser


def _display_number(text: str) -> int:
    text = text.lstrip(":")
    if not text.isdigit() or int(text) > 59535:
        raise argparse.ArgumentTypeError(f"not a display number: {text!r}")
    return int(text)


async def serve(reactor, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from twisted.internet import defer

    from .protocol.display import DisplayNameError
    from .server import ProxyServer, ServeOptions, StartError

    await running(reactor)
    options = ServeOptions(
        target=args.target, display=args.display, tcp=args.tcp, tcp_interface=args.tcp_interface,
        hide_ext=args.hide_ext, allow_ext=args.allow_ext, untrusted=args.untrusted,
    )
    try:
        server = ProxyServer(reactor, options)
        name = await server.start()
    except (StartError, DisplayNameError) as err:
        print(f"xproxy: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    done: defer.Deferred = defer.Deferred()

    async def shutdown() -> None:
        await server.stop()
        assert server.factory is not None
        log.info("xproxy {name} stopped: {summary}", name=name,
                 summary=server.factory.totals.summary())
        if not done.called:
            done.callback(0)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(shutdown()))
    print(f"ready DISPLAY={name}", flush=True)
    return await done


def running(reactor) -> "defer.Deferred[None]":  # type: ignore[no-untyped-def]
    """Fires once the reactor runs, so its SIGINT/SIGTERM handlers are in place before we
    announce `ready` (task.react calls main before reactor.run)."""
    from twisted.internet import defer

    d: defer.Deferred[None] = defer.Deferred()
    reactor.callWhenRunning(d.callback, None)
    return d


def main(reactor, argv: list[str]):  # type: ignore[no-untyped-def]
    from twisted.internet import defer

    args = build_parser().parse_args(argv)
    start_logging(getattr(args, "verbose", False))
    if args.command == "serve":
        return defer.ensureDeferred(serve(reactor, args))
    raise SystemExit(2)


def run() -> None:
    argv = sys.argv[1:]
    build_parser().parse_args(argv)  # usage errors before the reactor starts
    install_reactor()
    from twisted.internet import task

    task.react(main, [argv])


if __name__ == "__main__":
    run()
