"""replicaclient against one plain AMP connection, on loopback with real replica processes.

1. Overhead: sequential Get latency through the stub vs one plain ``amp.AMP``.
2. Tail: three replicas answering in ~1 ms, one of them 10x slower on 5% of its calls;
   p50/p99/p99.9 with and without hedging, and the extra requests hedging cost.
3. Throughput: calls per second with 32 calls in flight, stub (3 replicas) vs plain.

Targets (issue 5): overhead < 100 µs per call; hedging cuts p99 by >= 50% for <= 5%
extra requests. Run: .venv/bin/python benchmarks/replica.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install(asyncio.new_event_loop())

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.endpoints import clientFromString, connectProtocol  # noqa: E402
from twisted.protocols import amp  # noqa: E402

from demos.kvstore import Get, Put  # noqa: E402
from replicaclient import First, ReplicatedClient  # noqa: E402
from tests.replicaclient import processes  # noqa: E402

SEQUENTIAL = 3000
TAIL_CALLS = 4000
THROUGHPUT_CALLS = 6000
IN_FLIGHT = 32


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


CPU: dict[str, float] = {}


async def sequential(call: Any, n: int, label: str = "") -> list[float]:
    out = []
    cpu = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        await call()
        out.append(time.perf_counter() - start)
    CPU[label] = (time.process_time() - cpu) / n
    return out


async def throughput(call: Any, n: int, in_flight: int) -> float:
    left = [n]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await call()

    start = time.perf_counter()
    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(in_flight)])
    return n / (time.perf_counter() - start)


async def plain_connection(reactor: Any, endpoint: str) -> amp.AMP:
    return await connectProtocol(clientFromString(reactor, endpoint), amp.AMP())


async def run(reactor: Any) -> None:
    fast = processes.start((), (), ())
    try:
        plain = await plain_connection(reactor, fast[0].endpoint)
        await plain.callRemote(Put, key="k", value="v")
        stubs = {
            "stub, 1 replica, first (no hedge)": ReplicatedClient(
                reactor, [fast[0].endpoint], policy=First(hedge=False)),
            "stub, 3 replicas, first": ReplicatedClient(
                reactor, [r.endpoint for r in fast], policy="first"),
            "stub, 3 replicas, vote": ReplicatedClient(
                reactor, [r.endpoint for r in fast], policy="vote"),
            "stub, 3 replicas, quorum": ReplicatedClient(
                reactor, [r.endpoint for r in fast], policy="quorum"),
        }
        for stub in stubs.values():
            await stub.callRemote(Put, key="k", value="v")
            await sequential(lambda s=stub: s.callRemote(Get, key="k"), 200)  # warm up
        await sequential(lambda: plain.callRemote(Get, key="k"), 200)
        base = await sequential(lambda: plain.callRemote(Get, key="k"), SEQUENTIAL, "plain")
        base_mean = sum(base) / len(base)
        print(f"\n1. sequential Get, mean of {SEQUENTIAL} (one plain AMP connection = 1.00)")
        print("   (client CPU: CPU time of this process per call; its overhead is the stub's"
              " own cost, free of scheduling noise)")
        print(f"   {'path':40} {'mean µs':>9} {'p50 µs':>8} {'overhead µs':>12} {'ratio':>6}"
              f" {'client CPU µs':>14} {'CPU overhead':>13}")
        print(f"   {'plain amp.AMP':40} {base_mean * 1e6:9.0f} {pct(base, .5) * 1e6:8.0f}"
              f" {'':>12} {1.0:6.2f} {CPU['plain'] * 1e6:14.0f}")
        for name, stub in stubs.items():
            lat = await sequential(lambda s=stub: s.callRemote(Get, key="k"), SEQUENTIAL, name)
            mean = sum(lat) / len(lat)
            print(f"   {name:40} {mean * 1e6:9.0f} {pct(lat, .5) * 1e6:8.0f}"
                  f" {(mean - base_mean) * 1e6:12.0f} {mean / base_mean:6.2f}"
                  f" {CPU[name] * 1e6:14.0f} {(CPU[name] - CPU['plain']) * 1e6:13.0f}")

        print(f"\n3. throughput, {IN_FLIGHT} calls in flight, {THROUGHPUT_CALLS} Gets"
              " (plain = 1.00)")
        plain_rate = await throughput(lambda: plain.callRemote(Get, key="k"),
                                      THROUGHPUT_CALLS, IN_FLIGHT)
        print(f"   {'plain amp.AMP':40} {plain_rate:9.0f} calls/s {1.0:6.2f}")
        for name, stub in stubs.items():
            if "1 replica" in name:
                continue
            rate = await throughput(lambda s=stub: s.callRemote(Get, key="k"),
                                    THROUGHPUT_CALLS, IN_FLIGHT)
            print(f"   {name:40} {rate:9.0f} calls/s {rate / plain_rate:6.2f}")
        for stub in stubs.values():
            await stub.close()
        plain.transport.loseConnection()
    finally:
        processes.stop(fast)

    slow_flags = ("--delay-ms", "1", "--slow-percent", "5", "--slow-ms", "10", "--seed", "1")
    tail = processes.start(("--delay-ms", "1"), ("--delay-ms", "1"), slow_flags)
    try:
        print(f"\n2. tail: 3 replicas ~1 ms, one 10x slower on 5% of its answers;"
              f" {TAIL_CALLS} sequential Gets")
        print(f"   {'policy':34} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>9} {'extra req':>10}")
        results = {}
        for name, policy in (("first, no hedging", First(hedge=False)),
                             ("first, hedged at p95", First()),
                             ("first, hedged at p97", First(percentile=0.97))):
            stub = ReplicatedClient(reactor, [r.endpoint for r in tail], policy=policy)
            await stub.callRemote(Put, key="k", value="v")
            await sequential(lambda s=stub: s.callRemote(Get, key="k"), 300)  # learn latency
            before_calls, before_req = stub.metrics.calls, stub.metrics.requests
            lat = await sequential(lambda s=stub: s.callRemote(Get, key="k"), TAIL_CALLS)
            calls = stub.metrics.calls - before_calls
            extra = (stub.metrics.requests - before_req - calls) / calls
            results[name] = lat
            print(f"   {name:34} {pct(lat, .5) * 1e3:7.2f} {pct(lat, .99) * 1e3:7.2f}"
                  f" {pct(lat, .999) * 1e3:9.2f} {extra * 100:9.1f}%")
            await stub.close()
        base99 = pct(results["first, no hedging"], .99)
        for name in ("first, hedged at p95", "first, hedged at p97"):
            cut = 1 - pct(results[name], .99) / base99
            print(f"   p99 {name}: {cut * 100:.0f}% lower than without hedging")
    finally:
        processes.stop(tail)


def main(reactor: Any) -> Any:
    return defer.ensureDeferred(run(reactor))


if __name__ == "__main__":
    started = time.perf_counter()
    task.react(main)
