"""The replicated key-value scene for ``make demo``.

Five kvstore replicas under ``vote``; one is killed and one lies, and the client never
notices. Then a second replica starts lying — one more lie than the vote can bear — and
the client gets a clear NoQuorum instead of a wrong answer.

Then three replicas under the default policy (``first``): a write reaches all three;
one is killed, misses a write, and is restarted with empty memory; the stub brings it up
to date by itself (the hint it kept, then a full sync) without any further call.

``run_scene()`` plays it in a child process (so it never disturbs the caller's reactor)
and returns 0 when every step went as it should.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_scene() -> int:
    """Play the scene; blocks until it is over (about 5 s). Returns 0 on success."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        return subprocess.run([sys.executable, "-m", "demos.kv_scene", "--play"], cwd=ROOT,
                              env=env, timeout=60, check=False).returncode
    except subprocess.TimeoutExpired:
        print("kv scene: timed out")
        return 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(count: int, liars: set[int],
           ports: list[int] | None = None) -> list[tuple[subprocess.Popen[bytes], str]]:
    started = []
    for i in range(count):
        port = ports[i] if ports else _free_port()
        flags = ["--lie"] if i in liars else []
        proc = subprocess.Popen(
            [sys.executable, "-m", "demos.kvstore", "serve", "--port", str(port), *flags],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        started.append((proc, f"tcp:127.0.0.1:{port}"))
    deadline = time.monotonic() + 20
    for proc, endpoint in started:
        assert proc.stdout is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                raise RuntimeError(f"replica {endpoint} did not start")
            line = proc.stdout.readline()
            if line.strip() == b"ready":
                break
            if not line:
                raise RuntimeError(f"replica {endpoint} exited")
    return started


async def _play(reactor: Any) -> int:
    from twisted.internet import task

    from demos.kvstore import Get, Put
    from replicaclient import NoQuorum, ReplicatedClient

    print("kv scene: five replicas of a key-value store, one client voting (3 of 5 must agree)")
    replicas = _start(5, liars={4})
    names = {endpoint: f"replica {i + 1}" for i, (_, endpoint) in enumerate(replicas)}
    client = ReplicatedClient(reactor, [e for _, e in replicas], policy="vote", timeout=3)
    heard: list[tuple[int, str, str]] = []
    client.observers.append(lambda e: heard.append((e.seq, names[e.replica], e.text)))
    ok = True

    async def say(seq_before: int) -> None:
        await task.deferLater(reactor, 0.2, lambda: None)  # let the losers' answers arrive
        for seq, who, text in sorted(h for h in heard if h[0] > seq_before):
            print(f"      {who}: {text}")

    async def get(expect: str | None) -> None:
        nonlocal ok
        before = client._seq
        try:
            result = await client.callRemote(Get, key="greeting")
            print(f"    client: get greeting -> {result['value']!r}")
            ok = ok and result["value"] == expect
        except NoQuorum as error:
            print(f"    client: get greeting -> NoQuorum ({error.reason})")
            ok = ok and expect is None
        await say(before)

    try:
        print("  replica 5 is a liar (it forges every value it is asked for)")
        await client.callRemote(Put, key="greeting", value="hello")
        print("    client: put greeting='hello' -> ok")
        await get("hello")
        proc, _ = replicas[0]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        print("  replica 1 is killed")
        await get("hello")
        print("  the client never noticed: 3 honest answers still outvote the liar")
        os.kill(replicas[3][0].pid, signal.SIGUSR1)
        print("  replica 4 starts lying too: one more lie than the vote can bear")
        await task.deferLater(reactor, 0.2, lambda: None)
        await get(None)
        print("  the client gets a clear NoQuorum, never the forged value")
    finally:
        await client.close()
        _stop(replicas)
    ok = await _heal(reactor) and ok
    print("kv scene:", "as expected" if ok else "SOMETHING WENT WRONG")
    return 0 if ok else 1


def _stop(replicas: list[tuple[subprocess.Popen[bytes], str]]) -> None:
    for proc, _ in replicas:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def _direct(reactor: Any, endpoint: str, key: str) -> str:
    """What one replica holds, asked over a plain AMP connection, around the stub."""
    from twisted.internet.endpoints import clientFromString, connectProtocol
    from twisted.protocols import amp

    from demos.kvstore import Get

    try:
        proto = await connectProtocol(clientFromString(reactor, endpoint), amp.AMP())
    except Exception as error:  # noqa: BLE001 (shown to the audience)
        return f"<{type(error).__name__}>"
    try:
        return str((await proto.callRemote(Get, key=key))["value"])
    finally:
        proto.transport.loseConnection()


async def _heal(reactor: Any) -> bool:
    from twisted.internet import task

    from demos.kvstore import Put
    from replicaclient import ReplicatedClient

    print("kv scene: three replicas, the default policy (first): writes go to every replica")
    ports = [_free_port() for _ in range(3)]
    replicas = _start(3, liars=set(), ports=ports)
    endpoints = [e for _, e in replicas]
    client = ReplicatedClient(reactor, endpoints, timeout=3)

    async def show() -> list[str]:
        held = [await _direct(reactor, e, "colour") for e in endpoints]
        print("    asked directly: " + ", ".join(
            f"replica {i + 1} {v!r}" for i, v in enumerate(held)))
        return held

    ok = True
    try:
        await client.callRemote(Put, key="colour", value="blue")
        print("    client: put colour='blue' -> ok")
        await task.deferLater(reactor, 0.2, lambda: None)
        ok = await show() == ["blue"] * 3
        _stop(replicas[2:])
        print("  replica 3 is killed")
        await client.callRemote(Put, key="colour", value="green")
        print("    client: put colour='green' -> ok (the stub keeps it for replica 3)")
        replicas[2:] = _start(1, liars=set(), ports=ports[2:])
        print("  replica 3 is restarted with empty memory; no call goes through the stub")
        started = reactor.seconds()
        held = ""
        while reactor.seconds() - started < 10:
            held = await _direct(reactor, endpoints[2], "colour")
            if held == "green" and client.metrics.syncs:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        m = client.metrics
        print(f"  replica 3 is up to date {reactor.seconds() - started:.1f} s after it came"
              f" back: {m.hints_replayed} hinted write replayed, {m.syncs} full sync"
              f" ({m.synced_registers} register copied)")
        ok = ok and held == "green" and await show() == ["green"] * 3
    finally:
        await client.close()
        _stop(replicas)
    return ok


def _main(reactor: Any) -> Any:
    from twisted.internet import defer

    async def go() -> None:
        code = await _play(reactor)
        if code:
            raise SystemExit(code)

    return defer.ensureDeferred(go())


if __name__ == "__main__":
    if "--play" in sys.argv[1:]:
        from twisted.internet import task

        task.react(_main)
    else:
        sys.exit(run_scene())
