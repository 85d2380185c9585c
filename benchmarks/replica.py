"""replicaclient against one plain AMP connection, on loopback with real replica processes.

1. Overhead: sequential calls through the stub vs one plain ``amp.AMP`` connection to the
   same kind of replica process (``demos.kvstore serve``), on the same reactor, in the same
   process. Every path runs once per round, in a rotated order; a round measures wall time
   per call (median of its calls), this process's CPU time per call, and the replica
   processes' CPU time per call. The overhead of a path is its figure minus plain AMP's
   *in the same round*; the table shows the median over rounds (and the range).
2. Tail: three replicas answering after 1 ms, one of them 10x slower on a random 5% of
   its calls; p50/p99/p99.9 with and without hedging, the extra requests hedging cost and
   the slow replica's share of the calls; medians over rounds in a rotated order.
3. Throughput: calls per second with 32 calls in flight, stub (3 replicas) vs plain.
4. Writes: sequential Put latency under ``first`` (sent to all three replicas, returning
   at the first acknowledgement, W=1; and W=majority) against one plain AMP connection
   and against ``vote`` and ``quorum``; medians over rounds in a rotated order.
5. Sync: time to bring an empty replica that joins (membership) up to date with two
   replicas holding 10,000 registers: from its joining to its first read allowed, and
   the sync itself (pages fetched, selection, writes replayed); target under 2 s.

Targets (issue 5): overhead < 100 µs per call; hedging cuts p99 by >= 50% for <= 5%
extra requests. Run: .venv/bin/python benchmarks/replica.py [--rounds 15] [--calls 500]
[--sections overhead,throughput,tail,writes,sync]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # demos/ (the replicated server) is not an installed package

from twisted.internet import asyncioreactor

asyncioreactor.install(asyncio.new_event_loop())

from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.protocols import amp

from demos.kvstore import Get, Put
from replicaclient import Balancer, First, MembershipFeed, ReplicatedClient
from testing import replicas as processes

THROUGHPUT_CALLS = 6000
IN_FLIGHT = 32
PLAIN_SPREAD = "plain amp.AMP, 3 replicas in turn"
ALL_TO_ONE = "3 replicas, first, all to one"


class AllToOne(Balancer):
    """Candidates always in the order given: every call goes to the first replica."""

    def order(self, candidates: Sequence[str], now: float) -> list[str]:
        return list(candidates)
TICK = os.sysconf("SC_CLK_TCK")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def process_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of other processes (the replicas), from /proc."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICK


async def sequential(call: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        out.append(time.perf_counter() - start)
    return out


async def measure(call: Callable[[], Any], n: int, pids: list[int]) -> dict[str, float]:
    """One round of one path: wall (median and mean), client CPU and replica CPU per call."""
    await sequential(call, 50)  # warm up (connections, latency windows, caches)
    cpu, replicas = time.process_time(), process_cpu(pids)
    lat = await sequential(call, n)
    return {"wall": statistics.median(lat), "mean": statistics.fmean(lat),
            "cpu": (time.process_time() - cpu) / n,
            "server": (process_cpu(pids) - replicas) / n}


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


def rotated(items: list[Any], by: int) -> list[Any]:
    by %= len(items)
    return items[by:] + items[:by]


async def run(reactor: Any, args: argparse.Namespace) -> None:
    if "overhead" in args.sections or "throughput" in args.sections:
        await overhead_and_throughput(reactor, args)
    if "tail" in args.sections:
        await tail(reactor, args)
    if "writes" in args.sections:
        await writes(reactor, args)
    if "sync" in args.sections:
        await sync_time(reactor, args)


async def writes(reactor: Any, args: argparse.Namespace) -> None:
    replicas = processes.start((), (), ())
    everyone = [r.endpoint for r in replicas]
    try:
        plain = await plain_connection(reactor, everyone[0])
        stubs = {
            "3 replicas, first (W=1, default)": ReplicatedClient(reactor, everyone),
            "3 replicas, first (W=majority)": ReplicatedClient(
                reactor, everyone, policy=First(write_acks="majority")),
            "3 replicas, vote": ReplicatedClient(reactor, everyone, policy="vote"),
            "3 replicas, quorum": ReplicatedClient(reactor, everyone, policy="quorum"),
        }
        paths: list[tuple[str, Callable[[], Any]]] = [
            ("plain amp.AMP, 1 replica", lambda: plain.callRemote(Put, key="k", value="v"))]
        paths += [(name, lambda s=stub: s.callRemote(Put, key="k", value="v"))
                  for name, stub in stubs.items()]
        got: dict[str, list[float]] = {name: [] for name, _ in paths}
        for i in range(args.rounds):
            for name, call in rotated(paths, i):
                await sequential(call, 50)
                got[name].append(statistics.median(await sequential(call, args.calls)))
        print(f"\n4. writes: sequential Puts, {args.rounds} rounds x {args.calls} calls per"
              " path, order rotating per round;\n   median latency of a round's calls,"
              " median over rounds [min-max], µs")
        base = statistics.median(got["plain amp.AMP, 1 replica"])
        for name, values in got.items():
            print(f"   {name:34} {statistics.median(values) * 1e6:6.0f}"
                  f" [{min(values) * 1e6:.0f}-{max(values) * 1e6:.0f}]"
                  f"  x{statistics.median(values) / base:.2f}")
        for stub in stubs.values():
            await stub.close()
        plain.transport.loseConnection()
    finally:
        processes.stop(replicas)


SYNC_REGISTERS = 10_000


async def sync_time(reactor: Any, args: argparse.Namespace) -> None:
    sources = processes.start((), ())
    try:
        feed = MembershipFeed({f"r{i}": r.endpoint for i, r in enumerate(sources)})
        stub = ReplicatedClient(reactor, membership=feed, timeout=30)
        left = iter(range(SYNC_REGISTERS))

        async def writer() -> None:
            for n in left:
                await stub.callRemote(Put, key=f"key-{n:05d}", value=f"value {n} " + "x" * 20)

        await defer.gatherResults([defer.ensureDeferred(writer()) for _ in range(IN_FLIGHT)])
        print(f"\n5. sync: an empty replica joins two that hold {SYNC_REGISTERS:,} registers"
              f" (about 40 bytes each); {args.sync_rounds} rounds, a new empty replica each")
        joined, synced = [], []
        for i in range(args.sync_rounds):
            target = processes.start(())[0]
            before = stub.metrics.sync_seconds.total
            start = reactor.seconds()
            feed.add(f"new{i}", target.endpoint)
            while not stub.replicas[f"new{i}"].readable:
                await task.deferLater(reactor, 0.001, lambda: None)
            joined.append(reactor.seconds() - start)
            synced.append(stub.metrics.sync_seconds.total - before)
            holds = await plain_connection(reactor, target.endpoint)
            last = await holds.callRemote(Get, key=f"key-{SYNC_REGISTERS - 1:05d}")
            assert last["value"].startswith(f"value {SYNC_REGISTERS - 1}"), last
            holds.transport.loseConnection()
            feed.remove(f"new{i}")
            processes.stop([target])
        print(f"   joined -> first read allowed: {statistics.median(joined):.2f} s"
              f" [{min(joined):.2f}-{max(joined):.2f}]; the sync itself"
              f" {statistics.median(synced):.2f} s [{min(synced):.2f}-{max(synced):.2f}]"
              " (target: < 2 s)")
        await stub.close()
    finally:
        processes.stop(sources)


async def overhead_and_throughput(reactor: Any, args: argparse.Namespace) -> None:
    fast = processes.start((), (), ())
    pids = [r.proc.pid for r in fast]
    try:
        plains = [await plain_connection(reactor, r.endpoint) for r in fast]
        plain = plains[0]
        for connection in plains:
            await connection.callRemote(Put, key="k", value="v")
        in_turn = itertools.cycle(plains)
        everyone = [r.endpoint for r in fast]
        stubs = {
            "1 replica, first (no hedge)": ReplicatedClient(
                reactor, [fast[0].endpoint], policy=First(hedge=False)),
            "3 replicas, first": ReplicatedClient(reactor, everyone, policy="first"),
            # the load as the replica ranking before the balancer left it (1,990 of
            # 2,000 calls to one replica): is spreading it worth anything here?
            ALL_TO_ONE: ReplicatedClient(reactor, everyone, policy="first",
                                         balancer=AllToOne()),
            "3 replicas, vote": ReplicatedClient(reactor, everyone, policy="vote"),
            "3 replicas, quorum": ReplicatedClient(reactor, everyone, policy="quorum"),
        }
        for stub in stubs.values():
            await stub.callRemote(Put, key="k", value="v")
        # (label, command, call): Put under quorum takes two phases (query, store); a
        # quorum Get takes one (read; the write-back runs only when tags disagree).
        paths: list[tuple[str, str, Callable[[], Any]]] = [
            ("plain amp.AMP", "Get", lambda: plain.callRemote(Get, key="k")),
            ("plain amp.AMP", "Put", lambda: plain.callRemote(Put, key="k", value="v")),
            # What spreading calls over three replica processes costs by itself (waking
            # three processes instead of one, on two cores): the stub's `first` does it.
            (PLAIN_SPREAD, "Get", lambda: next(in_turn).callRemote(Get, key="k")),
        ]
        for name, stub in stubs.items():
            paths.append((name, "Get", lambda s=stub: s.callRemote(Get, key="k")))
        quorum = stubs["3 replicas, quorum"]
        paths.append(("3 replicas, quorum", "Put",
                      lambda: quorum.callRemote(Put, key="k", value="v")))
        first = stubs["3 replicas, first"]
        before_calls, before_requests = first.metrics.calls, first.metrics.requests

        rounds: list[dict[tuple[str, str], dict[str, float]]] = []
        if "overhead" in args.sections:
            for i in range(args.rounds):
                got = {}
                for label, command, call in rotated(paths, i):
                    got[(label, command)] = await measure(call, args.calls, pids)
                rounds.append(got)
            report_overhead(rounds, args)
            calls = first.metrics.calls - before_calls
            extra = (first.metrics.requests - before_requests - calls) / max(1, calls)
            print(f"   (3 replicas, first: {extra * 100:.1f}% of calls were hedged or retried)")

        if "throughput" in args.sections:
            print(f"\n3. throughput, {IN_FLIGHT} calls in flight, {THROUGHPUT_CALLS} Gets,"
                  f" median of {args.rounds} rounds (plain = 1.00)")
            rates: dict[str, list[float]] = {}
            contenders: list[tuple[str, Callable[[], Any]]] = [
                ("plain amp.AMP", lambda: plain.callRemote(Get, key="k")),
                (PLAIN_SPREAD, lambda: next(in_turn).callRemote(Get, key="k")),
            ] + [(name, lambda s=stub: s.callRemote(Get, key="k"))
                 for name, stub in stubs.items() if "1 replica" not in name]
            for i in range(args.rounds):
                for name, call in rotated(contenders, i):
                    rates.setdefault(name, []).append(await throughput(
                        call, THROUGHPUT_CALLS, IN_FLIGHT))
            plain_rate = statistics.median(rates["plain amp.AMP"])
            for name, got in rates.items():
                rate = statistics.median(got)
                print(f"   {name:34} {rate:9.0f} calls/s {rate / plain_rate:6.2f}")
            shares = sorted(r.sent for r in first.metrics.replicas.values())
            print(f"   (3 replicas, first: requests per replica over the run {shares})")
        for stub in stubs.values():
            await stub.close()
        for connection in plains:
            connection.transport.loseConnection()
    finally:
        processes.stop(fast)


def report_overhead(rounds: list[dict[tuple[str, str], dict[str, float]]],
                    args: argparse.Namespace) -> None:
    print(f"\n1. sequential calls: {args.rounds} rounds x {args.calls} calls per path, order"
          " rotating per round;")
    print("   wall = median latency of a round's calls; CPU = this process's CPU time per"
          " call;")
    print("   replica CPU = all replica processes' CPU per call (/proc, 10 ms ticks);"
          " overhead = path - plain")
    print("   AMP (same command) in the same round. Figures: median over rounds [min-max],"
          " µs per call.")
    print(f"   {'path':34} {'cmd':4} {'wall':>5} {'wall overhead':>17} {'CPU':>5}"
          f" {'CPU overhead':>16} {'replica CPU':>11}")

    def cell(values: list[float]) -> str:
        return (f"{statistics.median(values) * 1e6:5.0f} [{min(values) * 1e6:3.0f}-"
                f"{max(values) * 1e6:3.0f}]")

    for label, command in rounds[0]:
        if not label.startswith("plain"):
            continue
        got = [r[(label, command)] for r in rounds]
        print(f"   {label:34} {command:4} {statistics.median(g['wall'] for g in got) * 1e6:5.0f}"
              f" {'':17} {statistics.median(g['cpu'] for g in got) * 1e6:5.0f} {'':16}"
              f" {statistics.median(g['server'] for g in got) * 1e6:11.0f}")
    for label, command in sorted(rounds[0], key=lambda k: (k[1], k[0])):
        if label.startswith("plain"):
            continue
        got = [r[(label, command)] for r in rounds]
        base = [r[("plain amp.AMP", command)] for r in rounds]
        wall_over = [g["wall"] - b["wall"] for g, b in zip(got, base, strict=True)]
        cpu_over = [g["cpu"] - b["cpu"] for g, b in zip(got, base, strict=True)]
        print(f"   {'stub, ' + label:34} {command:4}"
              f" {statistics.median(g['wall'] for g in got) * 1e6:5.0f} {cell(wall_over):>17}"
              f" {statistics.median(g['cpu'] for g in got) * 1e6:5.0f} {cell(cpu_over):>16}"
              f" {statistics.median(g['server'] for g in got) * 1e6:11.0f}")


    got = [r[("3 replicas, first", "Get")] for r in rounds]
    base = [r[(PLAIN_SPREAD, "Get")] for r in rounds]
    wall_over = [g["wall"] - b["wall"] for g, b in zip(got, base, strict=True)]
    cpu_over = [g["cpu"] - b["cpu"] for g, b in zip(got, base, strict=True)]
    print(f"   stub, 3 replicas, first - {PLAIN_SPREAD} (same spread): wall"
          f" {cell(wall_over)}, CPU {cell(cpu_over)}")


TAIL_POLICIES = (("first, no hedging", First(hedge=False)),
                 ("first, hedged at p95 (default)", First()))


async def tail(reactor: Any, args: argparse.Namespace) -> None:
    """The issue's scenario: three replicas, one of them 10x slower on a random 5% of its
    calls; the balancer spreads the load, so about 5% / 3 of all calls meet a slow answer
    without hedging. Each round makes a fresh client per policy (it learns latencies in
    300 untimed calls), in an order that rotates per round."""
    slow_flags = ("--delay-ms", "1", "--slow-percent", "5", "--slow-ms", "10", "--seed", "1")
    slow = processes.start(("--delay-ms", "1"), ("--delay-ms", "1"), slow_flags)
    endpoints = [r.endpoint for r in slow]
    try:
        print(f"\n2. tail: 3 replicas answering after 1 ms, the third after 10 ms on a random 5%"
              f" of its calls;\n   {args.tail_rounds} rounds x {args.tail_calls} sequential Gets"
              " per policy, order rotating per round; median over rounds [min-max]")
        got: dict[str, list[dict[str, float]]] = {name: [] for name, _ in TAIL_POLICIES}
        for i in range(args.tail_rounds):
            for name, policy in rotated(list(TAIL_POLICIES), i):
                got[name].append(await tail_round(reactor, endpoints, policy, args.tail_calls))
        print(f"   {'policy':31} {'p50 ms':>7} {'p99 ms':>17} {'p99.9 ms':>17}"
              f" {'extra req':>15} {'slow replica share':>18}")

        def cell(rows: list[dict[str, float]], key: str, scale: float, form: str) -> str:
            values = [r[key] * scale for r in rows]
            return (f"{statistics.median(values):{form}} [{min(values):{form}}-"
                    f"{max(values):{form}}]").replace(" ", "")

        for name, rows in got.items():
            print(f"   {name:31} {statistics.median(r['p50'] for r in rows) * 1e3:7.2f}"
                  f" {cell(rows, 'p99', 1e3, '.2f'):>17} {cell(rows, 'p99.9', 1e3, '.2f'):>17}"
                  f" {cell(rows, 'extra', 100, '.1f') + '%':>15}"
                  f" {cell(rows, 'share', 100, '.0f') + '%':>18}")
        base, hedged = (got[name] for name, _ in TAIL_POLICIES)
        cuts = [1 - h["p99"] / b["p99"] for b, h in zip(base, hedged, strict=True)]
        cuts999 = [1 - h["p99.9"] / b["p99.9"] for b, h in zip(base, hedged, strict=True)]
        print(f"   hedging cut p99 by {statistics.median(cuts) * 100:.0f}%"
              f" [{min(cuts) * 100:.0f}-{max(cuts) * 100:.0f}%], p99.9 by"
              f" {statistics.median(cuts999) * 100:.0f}%, paired by round"
              " (target: >= 50% for <= 5% extra requests)")
    finally:
        processes.stop(slow)


async def tail_round(reactor: Any, endpoints: list[str], policy: First,
                     calls: int) -> dict[str, float]:
    stub = ReplicatedClient(reactor, endpoints, policy=policy)
    try:
        await stub.callRemote(Put, key="k", value="v")
        await sequential(lambda: stub.callRemote(Get, key="k"), 300)  # learn latencies
        metrics = stub.metrics
        before_calls, before_req = metrics.calls, metrics.requests
        slow = metrics.replicas[endpoints[2]]
        slow_primaries = slow.sent - slow.hedges_sent
        lat = await sequential(lambda: stub.callRemote(Get, key="k"), calls)
        made = metrics.calls - before_calls
        return {"p50": pct(lat, .5), "p99": pct(lat, .99), "p99.9": pct(lat, .999),
                "extra": (metrics.requests - before_req - made) / made,
                "share": (slow.sent - slow.hedges_sent - slow_primaries) / made}
    finally:
        await stub.close()


def main(reactor: Any, argv: list[str]) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds of the overhead and"
                        " throughput sections (default 15); figures are medians over rounds")
    parser.add_argument("--calls", type=int, default=500,
                        help="sequential calls per path per round (default 500)")
    parser.add_argument("--tail-rounds", type=int, default=5,
                        help="rounds of the tail section (default 5)")
    parser.add_argument("--tail-calls", type=int, default=3000,
                        help="sequential Gets per policy per tail round (default 3000)")
    parser.add_argument("--sync-rounds", type=int, default=5,
                        help="rounds of the sync section (default 5)")
    parser.add_argument("--sections", default="overhead,throughput,tail,writes,sync",
                        help="comma-separated: overhead, throughput, tail, writes, sync")
    args = parser.parse_args(argv)
    args.sections = set(args.sections.split(","))
    return defer.ensureDeferred(run(reactor, args))


if __name__ == "__main__":
    task.react(main, [sys.argv[1:]])
