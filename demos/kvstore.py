"""A replicated key-value server speaking AMP, and a client that shows the replicas at work.

    python -m demos.kvstore serve --port 7001 [--register NAME] [--lie] [--delay-ms N]
    python -m demos.kvstore client --policy vote tcp:127.0.0.1:7001 tcp:127.0.0.1:7002 \\
        tcp:127.0.0.1:7003 -- put colour blue get colour

``serve`` prints ``ready`` once listening. ``--lie`` answers every Get with a wrong value,
and offers forged values with newer tags to a stub that syncs another replica from it
(a Byzantine replica; SIGUSR1 toggles lying at run time). ``--delay-ms`` delays every
answer; with ``--slow-percent`` only that share of answers is delayed, by ``--slow-ms``.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.protocols import amp

from replicaclient import ReplicatedClient, Tag, read, write
from replicaclient.replica import ReplicaState
from replicaclient.server import ReplicaFactory
from replicaclient.sync import Entry


@read(register="key")
class Get(amp.Command):
    arguments = [(b"key", amp.Unicode())]
    response = [(b"value", amp.Unicode())]


@write(idempotent=True, register="key")
class Put(amp.Command):
    arguments = [(b"key", amp.Unicode()), (b"value", amp.Unicode())]
    response: list[tuple[bytes, amp.Argument]] = []


class KVStore(amp.CommandLocator):
    """The service: a dict. Answers are computed at once (the replica helper relies on
    that for quorum tags) and sent after the configured delay."""

    def __init__(self, reactor: Any, lie: bool = False, delay: float = 0.0,
                 slow_fraction: float = 0.0, slow: float = 0.0, seed: int | None = None) -> None:
        self.reactor = reactor
        self.data: dict[str, str] = {}
        self.lie = lie
        self.delay = delay
        self.slow_fraction = slow_fraction
        self.slow = slow
        self.random = random.Random(seed)

    @Put.responder
    def put(self, key: str, value: str) -> Any:
        self.data[key] = value
        return self._answer({})

    @Get.responder
    def get(self, key: str) -> Any:
        value = self.data.get(key, "")
        if self.lie:
            value = f"forged({value})"
        return self._answer({"value": value})

    def _answer(self, result: dict[str, str]) -> Any:
        delay = self.delay
        if self.slow_fraction and self.random.random() < self.slow_fraction:
            delay = self.slow
        if delay <= 0:
            return result
        return task.deferLater(self.reactor, delay, lambda: result)


class ForgingState(ReplicaState):
    """The register state of a lying replica: while ``store.lie``, the pages it sends
    for a sync carry forged values under tags newer than the real ones."""

    def __init__(self, store: KVStore) -> None:
        super().__init__()
        self.store = store

    def page(self, after: bytes | None, limit: int,
             max_bytes: int = 1 << 20) -> tuple[list[Entry], bool]:
        entries, more = super().page(after, limit, max_bytes)
        if not self.store.lie:
            return entries, more
        return [Entry(e.register, Tag(e.tag.ts + 1, e.tag.client, e.tag.seq), e.command,
                      tuple((k, b"forged(" + v + b")" if k == b"value" else v)
                            for k, v in e.args))
                for e in entries], more


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demos.kvstore")
    sub = parser.add_subparsers(dest="mode", required=True)
    serve = sub.add_parser("serve", help="run one replica")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--register", metavar="NAME",
                       help="publish as NAME._kv._tcp through the discovery client")
    serve.add_argument("--lie", action="store_true", help="answer Get with wrong values")
    serve.add_argument("--delay-ms", type=float, default=0.0)
    serve.add_argument("--slow-percent", type=float, default=0.0,
                       help="delay only this share of answers, by --slow-ms")
    serve.add_argument("--slow-ms", type=float, default=0.0)
    serve.add_argument("--seed", type=int, default=None)
    client = sub.add_parser("client", help="put and get through the replicating stub")
    client.add_argument("--policy", default="vote", choices=["first", "vote", "quorum"])
    client.add_argument("--discover", metavar="TYPE", help="e.g. _kv._tcp")
    client.add_argument("--timeout", type=float, default=5.0)
    client.add_argument("endpoints", nargs="*", help="Twisted endpoints, e.g. tcp:127.0.0.1:7001")
    client.epilog = "after --: put KEY VALUE | get KEY, repeated"
    return parser


async def _serve(reactor: Any, args: argparse.Namespace) -> None:
    store = KVStore(reactor, lie=args.lie, delay=args.delay_ms / 1000.0,
                    slow_fraction=args.slow_percent / 100.0, slow=args.slow_ms / 1000.0,
                    seed=args.seed)

    def toggle(*_: Any) -> None:
        store.lie = not store.lie
        print("lying" if store.lie else "honest", flush=True)

    signal.signal(signal.SIGUSR1, lambda *a: reactor.callFromThread(toggle))
    endpoint = serverFromString(reactor, f"tcp:{args.port}:interface={args.host}")
    await endpoint.listen(ReplicaFactory(store, ForgingState(store)))
    registration = None
    if args.register:
        registration = await _register(reactor, args.register, args.host, args.port)
    print("ready", flush=True)
    await defer.Deferred()  # serve until killed
    del registration


async def _register(reactor: Any, name: str, host: str, port: int) -> Any:
    """Publish this replica as NAME._kv._tcp through discoveryd; serving goes on without
    it (with a warning) when no daemon runs."""
    try:
        from discovery import client as discovery_client
    except ImportError:
        print("warning: discovery client not available; not registered", file=sys.stderr)
        return None
    try:
        return await discovery_client.register(name, "_kv._tcp", port, reactor=reactor)
    except discovery_client.DiscoveryError as error:  # (NotConnected when no daemon runs)
        print(f"warning: not registered with discoveryd: {error}", file=sys.stderr)
        return None


async def _client(reactor: Any, args: argparse.Namespace) -> int:
    ops = list(args.ops)
    client = ReplicatedClient(
        reactor, args.endpoints or None, discover=args.discover, policy=args.policy,
        timeout=args.timeout)
    said: list[tuple[int, str]] = []
    client.observers.append(
        lambda e: said.append((e.seq, f"    {e.replica} [{e.stage}]: {e.text}")))
    status = 0
    try:
        while ops:
            verb = ops.pop(0)
            said.clear()
            try:
                if verb == "put" and len(ops) >= 2:
                    key, value = ops.pop(0), ops.pop(0)
                    await client.callRemote(Put, key=key, value=value)
                    print(f"put {key}={value!r}: ok")
                elif verb == "get" and ops:
                    key = ops.pop(0)
                    result = await client.callRemote(Get, key=key)
                    print(f"get {key}: {result['value']!r}")
                else:
                    print(f"cannot understand {verb!r}: use put KEY VALUE or get KEY")
                    return 2
            except Exception as error:  # noqa: BLE001 - whatever failed, the user is told what
                print(f"{verb}: failed: {type(error).__name__}: {error}")
                status = 1
            await task.deferLater(reactor, 0.1, lambda: None)  # let the slower replicas speak
            seq = max((n for n, _ in said), default=0)
            print("\n".join(text for n, text in said if n == seq))
    finally:
        await client.close()
    return status


def main(reactor: Any, argv: list[str]) -> defer.Deferred[Any]:
    ops: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, ops = argv[:at], argv[at + 1:]
    args = _parser().parse_args(argv)
    args.ops = ops
    if args.mode == "serve":
        return defer.ensureDeferred(_serve(reactor, args))

    async def run() -> None:
        code = await _client(reactor, args)
        if code:
            raise SystemExit(code)

    return defer.ensureDeferred(run())


if __name__ == "__main__":
    task.react(main, [sys.argv[1:]])
