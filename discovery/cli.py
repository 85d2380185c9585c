"""Command lines: ``discoveryd`` (the daemon) and ``discovery`` (avahi-browse/dns-sd-like client)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from twisted.internet import defer

    from discovery.client import DiscoveryClient
    from discovery.reactor import IDaemonReactor


def install_reactor() -> IDaemonReactor:
    """Twisted's asyncio reactor on a fresh loop, so AsyncZeroconf shares it (DESIGN.md)."""
    if "twisted.internet.reactor" not in sys.modules:
        import asyncio

        from twisted.internet import asyncioreactor

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    from twisted.internet import reactor

    return cast("IDaemonReactor", reactor)


def _start_logging(verbose: bool) -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    pred = LogLevelFilterPredicate(defaultLogLevel=LogLevel.debug if verbose else LogLevel.info)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(textFileLogObserver(sys.stderr), [pred])], redirectStandardIO=False)


# -- discoveryd -------------------------------------------------------------------------------


def daemon_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="discoveryd", description="Per-host service binding daemon with mDNS/DNS-SD.")
    p.add_argument("--socket", help="unix socket of the local API (default: $XDG_RUNTIME_DIR/discovery.sock, "
                   "/run/discovery.sock for root, else /tmp/discovery-$UID.sock)")
    p.add_argument("--interface", action="append", default=[], metavar="ADDR",
                   help="IPv4 address to run mDNS on (repeatable; default 127.0.0.1)")
    p.add_argument("--state-dir", help="directory for the journal (registrations survive restarts)")
    p.add_argument("--services-dir", help="directory of static *.toml service files (reloaded on SIGHUP)")
    p.add_argument("--policy", help="TOML policy file: which users may register which types")
    p.add_argument("--host-name", default=socket.gethostname(), help="host name to publish as (NAME.local)")
    p.add_argument("--max-remote-per-type", type=int, default=1000, metavar="N",
                   help="instances of one service type kept from other hosts (mDNS; default 1000)")
    p.add_argument("--grace", type=float, default=30.0, help="seconds a restarted daemon keeps clients' names for them")
    p.add_argument("--no-mdns", action="store_true", help="no mDNS (with no --backend: local API only)")
    p.add_argument("--backend", action="append", default=[], metavar="URL",
                   help="mdns (the default) or etcd://HOST:PORT[,HOST:PORT...][?ttl=S&prefix=/p/]: also publish "
                        "and look up through an etcd cluster (answers merged, source 'etcd')")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def daemon_run(argv: list[str] | None = None) -> None:
    """Console script ``discoveryd``."""
    args = daemon_parser().parse_args(sys.argv[1:] if argv is None else argv)
    install_reactor()
    from twisted.internet import task

    task.react(lambda r: _daemon_main(r, args))


async def _daemon_main(reactor: IDaemonReactor, args: argparse.Namespace) -> None:
    from twisted.internet import defer

    from discovery.backends.mdns import Limits
    from discovery.daemon import Daemon, DaemonConfig, install_sighup

    _start_logging(args.verbose)
    etcd = None
    for url in args.backend:
        if url == "mdns":
            if args.no_mdns:
                raise SystemExit("discoveryd: --backend mdns contradicts --no-mdns")
            continue
        from discovery.etcdkeys import BackendURLError, parse_backend_url

        try:
            if etcd is not None:
                raise BackendURLError("give one etcd backend (list every endpoint of the cluster in it)")
            etcd = parse_backend_url(url)
        except BackendURLError as e:
            raise SystemExit(f"discoveryd: {e}") from None
    if args.max_remote_per_type < 1:
        raise SystemExit("discoveryd: --max-remote-per-type must be at least 1")
    cfg = DaemonConfig(
        socket_path=args.socket or _daemon_socket_default(),
        interfaces=args.interface or ["127.0.0.1"],
        host=args.host_name,
        state_dir=args.state_dir,
        services_dir=args.services_dir,
        policy_file=args.policy,
        grace=args.grace,
        limits=Limits(max_per_type=args.max_remote_per_type),
        mdns=not args.no_mdns,
        etcd=etcd,
    )
    daemon = Daemon(reactor, cfg)
    await daemon.start()
    install_sighup(reactor, daemon)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(daemon.stop()))
    print("ready", flush=True)
    await defer.Deferred()  # until SIGTERM/SIGINT stops the reactor


def _daemon_socket_default() -> str:
    from discovery.config import default_socket_path

    return default_socket_path(os.environ, os.getuid())


# -- discovery --------------------------------------------------------------------------------


def client_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="discovery", description="Talk to discoveryd: register, look up, browse services.")
    p.add_argument("--socket", help="discoveryd's socket (default: $DISCOVERY_SOCKET, then the daemon's default)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("register", help="register a service while COMMAND runs (or on demand)")
    r.add_argument("--name", required=True)
    r.add_argument("--type", required=True)
    r.add_argument("--port", required=True, type=int)
    r.add_argument("--txt", action="append", default=[], metavar="K=V")
    r.add_argument("--on-demand", action="store_true",
                   help="the daemon binds PORT and starts COMMAND on the first connection (socket on fd 3)")
    r.add_argument("--max-instances", type=int, default=1)
    r.add_argument("--rate", default="10/60", metavar="N/SECONDS", help="at most N starts per SECONDS (on-demand)")
    r.add_argument("--json", action="store_true")
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS")

    w = sub.add_parser("withdraw", help="withdraw a registration (e.g. an on-demand one)")
    w.add_argument("--name", required=True)
    w.add_argument("--type", required=True)
    w.add_argument("--json", action="store_true")

    lk = sub.add_parser("lookup", help="services of a type, local and on the LAN")
    lk.add_argument("type")
    lk.add_argument("--name")
    lk.add_argument("--wait", type=float, help="seconds a first lookup waits for the LAN (default 0.5)")
    lk.add_argument("--json", action="store_true")

    b = sub.add_parser("browse", help="added/removed events for a type")
    b.add_argument("type")
    b.add_argument("--watch", action="store_true", help="keep running and print changes")
    b.add_argument("--json", action="store_true", help="JSON Lines")

    ls = sub.add_parser("list", help="everything this daemon knows, local and remote")
    ls.add_argument("--json", action="store_true")
    return p


def run(argv: list[str] | None = None) -> None:
    """Console script ``discovery``."""
    args = client_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "register" and args.cmd and args.cmd[0] == "--":
        args.cmd = args.cmd[1:]
    install_reactor()
    from twisted.internet import task

    task.react(lambda r: _client_main(r, args))


def _fmt(rec: Any) -> str:
    addrs = ",".join(rec.addresses) or "-"
    txt = " ".join(f"{k}={v}" for k, v in sorted(rec.txt.items()))
    return f"{rec.name}\t{rec.type}\t{rec.host}\t{addrs}\t{rec.port}\t{rec.source}\t{txt}".rstrip()


def _parse_txt(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise SystemExit(f"discovery: --txt wants K=V, not {item!r}")
        out[k] = v
    return out


async def _client_main(reactor: IDaemonReactor, args: argparse.Namespace) -> None:
    from discovery.client import DiscoveryClient, DiscoveryError

    client = DiscoveryClient(args.socket, reactor, reconnect=args.command in ("register", "browse"))
    try:
        await client.connect()
        code = await COMMANDS[args.command](reactor, client, args)
    except DiscoveryError as e:
        if getattr(args, "json", False):
            print(json.dumps({"error": {"code": e.code, "message": e.message}}), flush=True)
        print(f"discovery: {e.message}", file=sys.stderr)
        code = 2 if e.code == "not-connected" else 1
    finally:
        await client.close()
    if code:
        raise SystemExit(code)


async def _cmd_register(reactor: IDaemonReactor, client: DiscoveryClient, args: argparse.Namespace) -> int:
    from twisted.internet import defer, protocol

    txt = _parse_txt(args.txt)
    if args.on_demand:
        if not args.cmd:
            raise SystemExit("discovery: --on-demand needs -- COMMAND ARGS")
        n, _, t = args.rate.partition("/")
        try:
            rate = (int(n), float(t or 1))
        except ValueError:
            raise SystemExit(f"discovery: --rate wants N/SECONDS, not {args.rate!r}") from None
        rec = await client.register_on_demand(args.name, args.type, args.port, args.cmd, txt,
                                              max_instances=args.max_instances, rate=rate, cwd=os.getcwd())
        if args.json:
            print(json.dumps({"registered": rec.to_json(), "on_demand": True}), flush=True)
        else:
            print(f"registered {rec.name}.{rec.type} on port {rec.port}, started on demand: {' '.join(args.cmd)}")
        return 0

    reg = await client.register(args.name, args.type, args.port, txt)
    assert reg.record is not None
    if args.json:
        print(json.dumps({"registered": reg.record.to_json()}), flush=True)
    elif not args.cmd:
        print(f"registered {reg.name}.{reg.type} port {reg.port}; Ctrl-C withdraws it", flush=True)
    done: defer.Deferred[int] = defer.Deferred()
    lost: list[Any] = []  # the DiscoveryError, once the name is lost
    child: Any = None

    def on_lost(err: Any) -> None:
        lost.append(err)
        what = f"; stopping {args.cmd[0]}" if args.cmd else ""
        if args.json:
            print(json.dumps({"lost": {"name": reg.name, "type": reg.type, "code": err.code,
                                       "message": err.message}}), flush=True)
        print(f"discovery: {reg.name}.{reg.type} is no longer registered: {err.message}{what}",
              file=sys.stderr, flush=True)
        if child is None:
            if not done.called:
                done.callback(LOST_EXIT)
            return
        child.signal("TERM")
        reactor.callLater(STOP_TIMEOUT, child.signal, "KILL")

    reg.lost.addCallback(on_lost)
    if not args.cmd:
        # hold the registration until we are told to stop
        reactor.addSystemEventTrigger("before", "shutdown", _finish, done, 0)
        signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
        return await done

    class Child(protocol.ProcessProtocol):
        def signal(self, name: str) -> None:
            if self.transport is not None and self.transport.pid is not None:
                self.transport.signalProcess(name)

        def processEnded(self, reason: Any) -> None:
            v = reason.value
            code = v.exitCode if v.exitCode is not None else 128 + (v.signal or 0)
            done.callback(LOST_EXIT if lost else code)

    child = Child()
    try:
        reactor.spawnProcess(child, args.cmd[0], args.cmd, env=dict(os.environ), childFDs={0: 0, 1: 1, 2: 2})
    except OSError as e:
        print(f"discovery: cannot run {args.cmd[0]}: {e}", file=sys.stderr)
        return 127

    def forward(signum: int, _: Any) -> None:
        reactor.callFromThread(lambda: child.transport and child.transport.signalProcess(signum))

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, forward)
    # the registration lives exactly as long as the command: our exit closes the connection
    return await done


def _finish(done: defer.Deferred[int], code: int) -> None:
    if not done.called:
        done.callback(code)


#: `discovery register`'s exit status when its name is lost (to a conflict on the network)
LOST_EXIT = 69  # EX_UNAVAILABLE (sysexits.h)
#: s the command has to exit after SIGTERM, once the name is lost, before SIGKILL
STOP_TIMEOUT = 10.0


async def _cmd_withdraw(reactor: IDaemonReactor, client: DiscoveryClient, args: argparse.Namespace) -> int:
    await client.withdraw(args.name, args.type)
    if args.json:
        print(json.dumps({"withdrawn": {"name": args.name, "type": args.type}}))
    return 0


async def _cmd_lookup(reactor: IDaemonReactor, client: DiscoveryClient, args: argparse.Namespace) -> int:
    recs = await client.lookup(args.type, args.name, args.wait)
    if recs.warning:
        print(f"discovery: warning: {recs.warning.get('message', recs.warning)}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_json() for r in recs]))
    else:
        for r in recs:
            print(_fmt(r))
    return 0 if recs or not args.name else 1


async def _cmd_browse(reactor: IDaemonReactor, client: DiscoveryClient, args: argparse.Namespace) -> int:
    from twisted.internet import defer

    def show(ev: Any) -> None:
        if args.json:
            print(json.dumps({"event": ev.kind, **ev.service.to_json()}), flush=True)
        else:
            sign = {"added": "+", "updated": "=", "removed": "-"}[ev.kind]
            print(f"{sign} {_fmt(ev.service)}", flush=True)

    if not args.watch:
        for r in await client.lookup(args.type):
            show(type("Ev", (), {"kind": "added", "service": r})())
        return 0
    w = client.watch(args.type, show)
    await w.ready
    done: defer.Deferred[int] = defer.Deferred()
    reactor.addSystemEventTrigger("before", "shutdown", _finish, done, 0)
    return await done


async def _cmd_list(reactor: IDaemonReactor, client: DiscoveryClient, args: argparse.Namespace) -> int:
    from discovery.client import ServiceRecord

    r = await client.list()
    if args.json:
        print(json.dumps({"host": r["host"], "services": r["services"], "leases": r["leases"],
                          "backends": r.get("backends", [])}))
    else:
        for s in r["services"]:
            line = _fmt(ServiceRecord.from_json(s))
            if "on_demand" in s:
                st = s["on_demand"]
                line += f"\t[on-demand: {st['running']} running, {st['starts']} starts]"
            print(line)
        for lease in r["leases"]:
            print(f"{lease['name']}\t{lease['type']}\t(reserved for uid {lease['owner_uid']}, {lease['expires_in']} s)")
        for b in r.get("backends", []):
            where = b.get("endpoint") or ",".join(b.get("interfaces", []))
            line = f"# backend {b['backend']} {b['state']} ({where})"
            if b.get("error") and b["state"] != "up":
                line += f": {b['error']}"
            print(line, file=sys.stderr if b["state"] != "up" else sys.stdout)
    return 0


COMMANDS = {
    "register": _cmd_register,
    "withdraw": _cmd_withdraw,
    "lookup": _cmd_lookup,
    "browse": _cmd_browse,
    "list": _cmd_list,
}
