"""discoveryd beside plain python-zeroconf: lookup latency and memory with 10,000 names held,
time until another host sees a registration, time until a dead owner is gone elsewhere; and
discoveryd's two backends side by side for the last two (mDNS vs a three-member etcd cluster,
``--backend etcd://``), plus how long a killed daemon's names linger elsewhere.

Run: ``.venv/bin/python benchmarks/discovery.py`` (as root the cross-host figures use two
network namespaces on a private bridge; otherwise two daemons on loopback). Traffic stays on
loopback or in the namespaces this script creates.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
BIN = Path(PY).parent
DISCOVERYD = str(BIN / "discoveryd")

N_HELD = 10_000
N_LOOKUPS = 3_000
ROUNDS_D = 10
ROUNDS_ZC = 3
ZC_GONE_CAP = 10.0
ETCD = "/usr/bin/etcd"
ETCD_TTL = 6  # the backend's default lease


# -- helpers run as subprocesses (inside a namespace when there is one) --------------------


def _zc_helper(argv: list[str]) -> None:
    """``_zc ROLE IP TYPE [NAME PORT]``: plain python-zeroconf on its own asyncio loop."""
    import asyncio

    from zeroconf import IPVersion, ServiceInfo, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

    role, ip, type_ = argv[:3]

    async def main() -> None:
        azc = AsyncZeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
        await azc.zeroconf.async_wait_for_start()
        loop = asyncio.get_running_loop()
        if role == "browse":
            def on(zeroconf, service_type, name, state_change):
                kind = {ServiceStateChange.Added: "added", ServiceStateChange.Removed: "removed"}.get(state_change)
                if kind:
                    print(kind, name, flush=True)

            AsyncServiceBrowser(azc.zeroconf, [type_ + ".local."], handlers=[on])
            print("ready", flush=True)
            await asyncio.Event().wait()
        elif role == "register":
            name, port = argv[3], int(argv[4])
            info = ServiceInfo(type_ + ".local.", f"{name}.{type_}.local.", port=port, server=f"zc{os.getpid()}.local.",
                               addresses=[socket.inet_aton(ip)])
            print("ready", flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)
            await azc.async_register_service(info)
            print("registered", flush=True)
            await asyncio.Event().wait()
        elif role == "hold":  # N_HELD services in the registry, for memory and local lookups
            n = int(argv[3])
            infos = [ServiceInfo(type_ + ".local.", f"s{i}.{type_}.local.", port=1000 + i % 60000,
                                 server="held.local.", addresses=[socket.inet_aton(ip)], properties={"k": "v"})
                     for i in range(n)]
            azc.zeroconf.registry.async_add(infos[0])
            for info in infos[1:]:
                azc.zeroconf.registry.async_add(info)
            print("ready", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())


def _owner_helper(argv: list[str]) -> None:
    """``_owner SOCK NAME TYPE``: connect, wait for a line on stdin, register, hold."""
    sock_path, name, type_ = argv
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    f = s.makefile("rwb")
    print("ready", flush=True)
    sys.stdin.readline()
    f.write(json.dumps({"id": 1, "op": "register", "name": name, "type": type_, "port": 4000}).encode() + b"\n")
    f.flush()
    f.readline()
    print("registered", flush=True)
    time.sleep(3600)


# -- the driver ------------------------------------------------------------------------------


def readline_until(p: subprocess.Popen, want: str, timeout: float) -> float | None:
    """Time at which a line starting with ``want`` was read, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([p.stdout], [], [], left)
        if not r:
            return None
        line = p.stdout.readline().decode()
        if not line:
            return None
        if line.startswith(want):
            return time.monotonic()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


class Hosts:
    """Two places to run things: namespaces as root, else the host's loopback."""

    def __init__(self) -> None:
        from testing import netns

        self.ctx = None
        # hosts 0 and 1 run the daemons; host 2 runs the etcd cluster
        if netns.available() is None:
            self.ctx = netns.netns_lan(3, subnet="10.78.0")
            hs = self.ctx.__enter__()
            self.ips = [h.ip for h in hs]
            self.wrap = [h.argv for h in hs]
            self.where = "2 network namespaces on a bridge (etcd in a third)"
        else:
            self.ips = ["127.0.0.1"] * 3
            self.wrap = [lambda a: list(a)] * 3
            self.where = "loopback (not root: no namespaces)"
        self.procs: list[subprocess.Popen] = []

    def popen(self, i: int, argv: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(self.wrap[i](argv), **kw)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if self.ctx is not None:
            self.ctx.__exit__(None, None, None)


def start_daemon(hosts: Hosts, i: int, sock: str, *extra: str) -> subprocess.Popen:
    p = hosts.popen(i, [DISCOVERYD, "--socket", sock, "--interface", hosts.ips[i], "--host-name", f"bench{i}", *extra])
    if readline_until(p, "ready", 20) is None:
        raise SystemExit("discoveryd did not start")
    return p


def bench_local(tmp: Path) -> dict[str, float]:
    """10,000 names held by one client connection; name lookups from another connection."""
    sock = str(tmp / "local.sock")
    d = subprocess.Popen([DISCOVERYD, "--socket", sock, "--no-mdns", "--host-name", "bench"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    try:
        readline_until(d, "ready", 20)
        base_rss = rss_kib(d.pid)
        holder = socket.socket(socket.AF_UNIX)
        holder.connect(sock)
        hf = holder.makefile("rwb")
        t0 = time.monotonic()
        for i in range(N_HELD):
            hf.write(json.dumps({"id": i, "op": "register", "name": f"s{i}", "type": "_bench._tcp", "port": 1000 + i,
                                 "txt": {"k": "v"}}).encode() + b"\n")
        hf.flush()
        for _ in range(N_HELD):
            assert json.loads(hf.readline())["ok"]
        reg_rate = N_HELD / (time.monotonic() - t0)
        q = socket.socket(socket.AF_UNIX)
        q.connect(sock)
        qf = q.makefile("rwb")
        lat = []
        for i in range(N_LOOKUPS):
            name = f"s{random.randrange(N_HELD)}"
            t = time.perf_counter()
            qf.write(b'{"id":1,"op":"lookup","type":"_bench._tcp","wait":0,"name":"' + name.encode() + b'"}\n')
            qf.flush()
            r = qf.readline()
            lat.append((time.perf_counter() - t) * 1000)
            assert b'"ok":true' in r and name.encode() in r
        rss = rss_kib(d.pid)
        holder.close()
        q.close()
        return {"p50": pct(lat, 50), "p99": pct(lat, 99), "rss": rss, "rss_base": base_rss, "reg_rate": reg_rate}
    finally:
        d.terminate()
        d.wait()


def bench_zc_local() -> dict[str, float]:
    """Plain python-zeroconf: a process holding 10,000 ServiceInfos; lookups are mDNS queries."""
    import asyncio

    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    # an isolated loopback (own namespace) when root, so 10,000 names do not flood the host's
    held = subprocess.Popen([PY, __file__, "_zc", "hold", "127.0.0.1", "_zbench._tcp", str(N_HELD)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        readline_until(held, "ready", 60)
        rss = rss_kib(held.pid)

        async def lookups() -> list[float]:
            azc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
            await azc.zeroconf.async_wait_for_start()
            lat = []
            for _ in range(100):
                name = f"s{random.randrange(N_HELD)}._zbench._tcp.local."
                t = time.perf_counter()
                info = await azc.async_get_service_info("_zbench._tcp.local.", name, timeout=3000)
                lat.append((time.perf_counter() - t) * 1000)
                assert info is not None
            await azc.async_close()
            return lat

        lat = asyncio.run(lookups())
        return {"p50": pct(lat, 50), "p99": pct(lat, 99), "rss": rss}
    finally:
        held.kill()
        held.wait()


def start_etcd(hosts: Hosts, tmp: Path) -> tuple[str, list[subprocess.Popen]]:
    """Three etcd members on host 2 (its own namespace as root); returns the --backend URL."""
    from testing.etcd_cluster import free_ports

    ip = hosts.ips[2]
    ports = free_ports(6) if ip == "127.0.0.1" else [2379, 2380, 22379, 22380, 32379, 32380]
    peers = ",".join(f"e{i}=http://{ip}:{ports[2 * i + 1]}" for i in range(3))
    procs = []
    for i in range(3):
        c, p = ports[2 * i], ports[2 * i + 1]
        procs.append(hosts.popen(2, [ETCD, "--name", f"e{i}", "--data-dir", str(tmp / f"e{i}.etcd"),
                                     "--listen-client-urls", f"http://{ip}:{c}", "--advertise-client-urls", f"http://{ip}:{c}",
                                     "--listen-peer-urls", f"http://{ip}:{p}", "--initial-advertise-peer-urls", f"http://{ip}:{p}",
                                     "--initial-cluster", peers, "--initial-cluster-token", f"bench{os.getpid()}",
                                     "--logger", "zap", "--log-outputs", "stderr", "--log-level", "error"],
                                 stdout=subprocess.DEVNULL))
    url = f"etcd://{','.join(f'{ip}:{ports[2 * i]}' for i in range(3))}?ttl={ETCD_TTL}&prefix=/bench-{secrets.token_hex(3)}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = (f"import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
                 f"'http://{ip}:{ports[0]}/health', timeout=1).read().decode())")
        r = hosts.popen(2, [PY, "-c", probe])
        out, _ = r.communicate()
        if b'"health":"true"' in out:
            return url, procs
        time.sleep(0.2)
    raise SystemExit("etcd did not become healthy")


def bench_daemons(hosts: Hosts, tmp: Path, tag: str, *extra: str) -> dict[str, list[float]]:
    """Owner registers on host 0, a watcher on host 1 sees it; the owner is killed; then the
    daemon on host 0 is killed (SIGKILL) with a registration held."""
    out: dict[str, list[float]] = {"seen": [], "gone": [], "daemon_gone": []}
    type_ = f"_b{secrets.token_hex(3)}._tcp"
    s0, s1 = str(tmp / f"{tag}0.sock"), str(tmp / f"{tag}1.sock")
    d0, d1 = start_daemon(hosts, 0, s0, *extra), start_daemon(hosts, 1, s1, *extra)
    watcher = hosts.popen(1, [str(BIN / "discovery"), "--socket", s1, "browse", type_, "--watch", "--json"])
    time.sleep(1.0)  # the watch is in place and the browser has sent its first queries
    for i in range(ROUNDS_D):
        owner = hosts.popen(0, [PY, __file__, "_owner", s0, f"d{i}", type_], stdin=subprocess.PIPE)
        readline_until(owner, "ready", 10)
        t0 = time.monotonic()
        owner.stdin.write(b"go\n")
        owner.stdin.flush()
        t = readline_until(watcher, '{"event": "added"', 5)
        out["seen"].append((t - t0) if t else float("inf"))
        readline_until(owner, "registered", 5)
        time.sleep(0.3)
        t0 = time.monotonic()
        owner.kill()
        t = readline_until(watcher, '{"event": "removed"', 5)
        out["gone"].append((t - t0) if t else float("inf"))
        owner.wait()
        time.sleep(0.2)
    owner = hosts.popen(0, [PY, __file__, "_owner", s0, "last", type_], stdin=subprocess.PIPE)
    readline_until(owner, "ready", 10)
    owner.stdin.write(b"go\n")
    owner.stdin.flush()
    readline_until(watcher, '{"event": "added"', 5)
    time.sleep(0.3)
    t0 = time.monotonic()
    d0.kill()  # no goodbye, no revoke
    t = readline_until(watcher, '{"event": "removed"', ZC_GONE_CAP)
    out["daemon_gone"].append((t - t0) if t else float("inf"))
    owner.kill()
    d1.terminate()
    d0.wait()
    d1.wait()
    watcher.kill()
    return out


def bench_cross_host(hosts: Hosts, tmp: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"zc_seen": [], "zc_gone": []}
    m = bench_daemons(hosts, tmp, "m")
    out["d_seen"], out["d_gone"], out["d_daemon_gone"] = m["seen"], m["gone"], m["daemon_gone"]
    url, etcd = start_etcd(hosts, tmp)
    try:
        e = bench_daemons(hosts, tmp, "e", "--no-mdns", "--backend", url)
        out["e_seen"], out["e_gone"], out["e_daemon_gone"] = e["seen"], e["gone"], e["daemon_gone"]
    finally:
        for p in etcd:
            p.kill()
            p.wait()

    ztype = f"_z{secrets.token_hex(3)}._tcp"
    browser = hosts.popen(1, [PY, __file__, "_zc", "browse", hosts.ips[1], ztype])
    readline_until(browser, "ready", 20)
    time.sleep(1.0)
    for i in range(ROUNDS_ZC):
        reg = hosts.popen(0, [PY, __file__, "_zc", "register", hosts.ips[0], ztype, f"z{i}", "4000"], stdin=subprocess.PIPE)
        readline_until(reg, "ready", 20)
        t0 = time.monotonic()
        reg.stdin.write(b"go\n")
        reg.stdin.flush()
        t = readline_until(browser, "added", 10)
        out["zc_seen"].append((t - t0) if t else float("inf"))
        readline_until(reg, "registered", 10)
        if i == ROUNDS_ZC - 1:  # one kill: it can only end at TTL expiry, so it is capped
            t0 = time.monotonic()
            reg.kill()
            t = readline_until(browser, "removed", ZC_GONE_CAP)
            out["zc_gone"].append((t - t0) if t else float("inf"))
        else:
            reg.kill()  # leaves a stale entry behind, which is the point of the next figure
        reg.wait()
    return out


def fmt_ms(x: float) -> str:
    return "never" if x == float("inf") else f"{x * 1000:.0f} ms"


def main() -> None:
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="discovery-bench-"))
    loc = bench_local(tmp)
    zl = bench_zc_local()
    hosts = Hosts()
    try:
        x = bench_cross_host(hosts, tmp)
    finally:
        hosts.close()
    d_seen, z_seen = statistics.median(x["d_seen"]), statistics.median(x["zc_seen"])
    d_gone, z_gone = statistics.median(x["d_gone"]), x["zc_gone"][0]
    rows = [
        ("local lookup p50, 10k names held", f"{loc['p50']:.3f} ms", f"{zl['p50']:.1f} ms", zl["p50"] / loc["p50"]),
        ("local lookup p99, 10k names held", f"{loc['p99']:.3f} ms", f"{zl['p99']:.1f} ms", zl["p99"] / loc["p99"]),
        ("RSS holding 10k names", f"{loc['rss'] / 1024:.0f} MiB", f"{zl['rss'] / 1024:.0f} MiB", zl["rss"] / loc["rss"]),
        ("another host sees a registration (median)", fmt_ms(d_seen), fmt_ms(z_seen), z_seen / d_seen),
        ("another host sees a registration (max)", fmt_ms(max(x["d_seen"])), fmt_ms(max(x["zc_seen"])),
         max(x["zc_seen"]) / max(x["d_seen"])),
        ("dead owner gone on another host (median)", fmt_ms(d_gone),
         fmt_ms(z_gone) if z_gone != float("inf") else f"> {ZC_GONE_CAP:.0f} s (TTL)", None),
        ("dead owner gone on another host (max)", fmt_ms(max(x["d_gone"])), "", None),
    ]
    print(f"discovery benchmark: cross-host over {hosts.where}; {N_LOOKUPS} daemon lookups, 100 zeroconf lookups;"
          f" {ROUNDS_D} daemon rounds, {ROUNDS_ZC} zeroconf rounds")
    print(f"{'measure':45} {'discoveryd':>12} {'python-zeroconf':>16} {'zeroconf/discoveryd':>20}")
    for name, a, b, ratio in rows:
        r = "" if ratio is None or math.isnan(ratio) else (
            f"{ratio:.1f}x" if ratio != float("inf") else "inf")
        print(f"{name:45} {a:>12} {b:>16} {r:>20}")
    print(f"(discoveryd: {loc['reg_rate']:.0f} registrations/s over one connection; RSS at start "
          f"{loc['rss_base'] / 1024:.0f} MiB; local figures with --no-mdns; zeroconf lookups are mDNS queries to a"
          f" process holding the names in its registry; run took {time.monotonic() - t_start:.0f} s)")
    targets = [("lookup p99 < 2 ms", loc["p99"] < 2), ("seen elsewhere < 0.3 s", d_seen < 0.3),
               ("dead owner gone elsewhere < 1 s", max(x["d_gone"]) < 1)]
    print("targets: " + ", ".join(f"{n}: {'met' if ok else 'MISSED'}" for n, ok in targets))
    print()
    print(f"discoveryd backends: mDNS vs etcd (3 members, lease ttl {ETCD_TTL} s), {ROUNDS_D} rounds each; "
          "times from the owner's request to the event on the other host's watch")
    print(f"{'measure':45} {'mDNS':>12} {'etcd':>12}")
    for name, key, agg in [("another host sees a registration (median)", "seen", statistics.median),
                           ("another host sees a registration (max)", "seen", max),
                           ("dead owner gone on another host (median)", "gone", statistics.median),
                           ("dead owner gone on another host (max)", "gone", max),
                           ("killed daemon's names gone elsewhere", "daemon_gone", max)]:
        mv, ev = agg(x["d_" + key]), agg(x["e_" + key])
        mtxt = fmt_ms(mv) if mv != float("inf") else f"> {ZC_GONE_CAP:.0f} s (TTL)"
        etxt = fmt_ms(ev) if ev != float("inf") else f"> {ZC_GONE_CAP:.0f} s"
        print(f"{name:45} {mtxt:>12} {etxt:>12}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_zc":
        _zc_helper(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_owner":
        _owner_helper(sys.argv[2:])
    else:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        main()
