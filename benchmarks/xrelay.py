"""xproxy beside the alternatives, in one run: x11perf through each path, and memory.

Paths: direct (unix socket), socat (a C relay; also with a 256 KB buffer), xtrace (a C relay
decoding everything), ssh -X over loopback, xproxy, xproxy keeping metrics (--stats), and
xproxy writing a JSON trace. Each
x11perf test runs on every path in turn, several rounds (the order rotates each round, so drift
cancels); the table shows direct's median rate and, for each other path, the median of its
per-round ratio to direct with the range (a round runs a test on every path within some ten
seconds, so a slow spell of the machine moves both sides of a ratio). Then the proxy's resident
memory with 50 idle clients, and while one client floods an X server stopped with SIGSTOP.

    .venv/bin/python benchmarks/xrelay.py [--rounds N] [--time S] [--tests -prop,...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from testing.sshlab import start_sshd
from testing.xvfb import Xvfb, start_xvfb
from xproxy.relay import display_socket
from xproxy.trust import xauthfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TESTS = ["-prop", "-getimage10", "-noop", "-rect10", "-putimage100", "-getimage100"]


@dataclass
class Path:
    name: str
    env: dict[str, str]
    wrap: Callable[[list[str]], list[str]] = lambda argv: argv
    processes: list[subprocess.Popen] = field(default_factory=list)
    pid: int | None = None

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def add_cookie(xauthority: str, number: int, cookie: bytes) -> None:
    subprocess.run(["xauth", "-f", xauthority, "add", f":{number}", "MIT-MAGIC-COOKIE-1",
                    cookie.hex()], check=True, capture_output=True)


def wait_for_socket(number: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(display_socket.socket_path(number)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"display :{number} did not appear")
        time.sleep(0.05)


def socat_path(xvfb: Xvfb, work: str, buffer: int | None = None) -> Path | str:
    """socat as a relay: with its default 8 KB buffer, or with `buffer` bytes (-b), which is
    how one would run it for bulk X traffic."""
    if not shutil.which("socat"):
        return "socat is not installed"
    name = "socat" if buffer is None else f"socat -b {buffer // 1024}K"
    number = display_socket.find_free(200)
    auth = os.path.join(work, f"socat{number}.auth")
    shutil.copy(xvfb.xauthority, auth)
    add_cookie(auth, number, xvfb.cookie)
    size = [] if buffer is None else ["-b", str(buffer)]
    p = subprocess.Popen(["socat", *size,
                          f"UNIX-LISTEN:{display_socket.socket_path(number)},fork,mode=777",
                          f"UNIX-CONNECT:{display_socket.socket_path(xvfb.display)}"],
                         stderr=subprocess.DEVNULL)
    wait_for_socket(number)
    return Path(name, dict(xvfb.env, DISPLAY=f":{number}", XAUTHORITY=auth), processes=[p],
                pid=p.pid)


def xtrace_path(xvfb: Xvfb, work: str) -> Path | str:
    if not shutil.which("xtrace"):
        return "xtrace is not installed"
    number = display_socket.find_free(230)
    newauth = os.path.join(work, "xtrace.auth")
    shutil.copy(xvfb.xauthority, newauth)
    add_cookie(newauth, number, xvfb.cookie)  # xtrace -n passes the client's cookie through
    p = subprocess.Popen(["xtrace", "-d", xvfb.name, "-D", f":{number}", "-n", "-k",
                          "-o", "/dev/null"],
                         env=dict(xvfb.env, XAUTHORITY=newauth),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_socket(number)
    return Path("xtrace", dict(xvfb.env, DISPLAY=f":{number}", XAUTHORITY=newauth),
                processes=[p], pid=p.pid)


def ssh_path(xvfb: Xvfb, work: str) -> Path | str:
    sshd = start_sshd(work)
    if isinstance(sshd, str):
        return sshd
    check = subprocess.run(sshd.ssh_argv(["xdpyinfo", "-queryExtensions"]), env=xvfb.env,
                           capture_output=True, text=True, timeout=30, check=False)
    if check.returncode != 0:
        sshd.process.terminate()
        return f"ssh -X did not work here: {check.stderr.strip()[:200]}"
    return Path("ssh -X", dict(xvfb.env), wrap=sshd.ssh_argv, processes=[sshd.process])


def xproxy_path(xvfb: Xvfb, work: str, name: str, extra: list[str]) -> Path | str:
    auth = os.path.join(work, f"{name.replace(' ', '_')}.auth")
    shutil.copy(xvfb.xauthority, auth)
    env = dict(xvfb.env, XAUTHORITY=auth)
    p = subprocess.Popen([sys.executable, "-m", "xproxy.cli", "serve", "--to", xvfb.name, *extra],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         cwd=ROOT)
    line = p.stdout.readline().strip()  # type: ignore[union-attr]
    if not line.startswith("ready DISPLAY="):
        p.kill()
        return f"xproxy did not start: {line!r}"
    return Path(name, dict(env, DISPLAY=line.partition("=")[2]), processes=[p], pid=p.pid)


def x11perf(path: Path, test: str, seconds: int) -> float | None:
    argv = ["x11perf", "-repeat", "1", "-time", str(seconds), test]
    out = subprocess.run(path.wrap(argv), env=path.env, capture_output=True, text=True,
                         timeout=120, check=False).stdout
    rates = re.findall(r"\(\s*([\d.]+)/sec\)", out)
    return float(rates[-1]) if rates else None


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def raw_client(path: Path) -> socket.socket:
    number = int(path.env["DISPLAY"].lstrip(":"))
    entries = xauthfile.read_entries(path.env["XAUTHORITY"])
    cookie = next(e.data for e in entries if e.number == str(number).encode())
    s = socket.socket(socket.AF_UNIX)
    s.connect(display_socket.socket_path(number))
    name = b"MIT-MAGIC-COOKIE-1"
    s.sendall(struct.pack("<BxHHHH2x", 0x6C, 11, 0, len(name), len(cookie)) + name + b"\0\0"
              + cookie)
    head = recv_exactly(s, 8)
    recv_exactly(s, 4 * struct.unpack_from("<H", head, 6)[0])
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def memory(xvfb: Xvfb, path: Path) -> list[str]:
    assert path.pid is not None
    lines = []
    base = rss_kib(path.pid)
    idle = [raw_client(path) for _ in range(50)]
    time.sleep(0.5)
    with_idle = rss_kib(path.pid)
    lines.append(f"resident memory: {base / 1024:.1f} MB at rest, {with_idle / 1024:.1f} MB "
                 f"with 50 idle clients (target < 80 MB)")
    for s in idle:
        s.close()
    flooder = raw_client(path)
    flooder.settimeout(1.0)
    noop = struct.pack("<BBH", 127, 0, 65535) + b"\0" * (65535 * 4 - 4)
    os.kill(xvfb.process.pid, signal.SIGSTOP)
    sent = 0
    samples = []
    pending = memoryview(noop)
    stop_at = time.monotonic() + 4
    try:
        while time.monotonic() < stop_at:
            try:
                n = flooder.send(pending)
                sent += n
                pending = pending[n:] or memoryview(noop)
            except TimeoutError:
                pass
            samples.append(rss_kib(path.pid))
    finally:
        os.kill(xvfb.process.pid, signal.SIGCONT)
    flooder.settimeout(30)
    flooder.sendall(pending)  # finish the request in flight
    flooder.sendall(struct.pack("<BBH", 43, 0, 1))  # GetInputFocus: a round trip after the flood
    reply = recv_exactly(flooder, 32)
    flooder.close()
    peak = max(samples)
    last = samples[-len(samples) // 4 :]
    lines.append(
        f"flood into a stopped X server: client wrote {sent / 1e6:.1f} MB before the proxy "
        f"stopped reading; proxy memory peaked at {peak / 1024:.1f} MB and held at "
        f"{max(last) / 1024:.1f} MB over the last second (bounded by flow control); after "
        f"SIGCONT the client's round trip {'completed' if reply[0] == 1 else 'FAILED'}"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--time", type=int, default=1, help="x11perf -time per run, seconds")
    parser.add_argument("--tests", default=",".join(DEFAULT_TESTS))
    args = parser.parse_args()
    tests = args.tests.split(",")
    work = tempfile.mkdtemp(prefix="xt-bench-")
    xvfb = start_xvfb(screen="1024x768x24")
    paths: list[Path] = [Path("direct", xvfb.env)]
    skipped: list[str] = []
    trace_file = os.path.join(work, "trace.jsonl")
    builders: list[tuple[str, Callable[[], Path | str]]] = [
        ("socat", lambda: socat_path(xvfb, work)),
        ("socat -b 256K", lambda: socat_path(xvfb, work, 256 * 1024)),
        ("xtrace", lambda: xtrace_path(xvfb, work)),
        ("ssh -X", lambda: ssh_path(xvfb, work)),
        ("xproxy", lambda: xproxy_path(xvfb, work, "xproxy", [])),
    ]
    serve_help = subprocess.run([sys.executable, "-m", "xproxy.cli", "serve", "--help"],
                                capture_output=True, text=True, cwd=ROOT, check=False).stdout
    if "--stats" in serve_help:
        builders.append(("xproxy --stats", lambda: xproxy_path(
            xvfb, work, "xproxy --stats", ["--stats"])))
    else:
        skipped.append("xproxy --stats: this xproxy has no --stats yet")
    if "--trace" in serve_help:
        builders.append(("xproxy+json trace", lambda: xproxy_path(
            xvfb, work, "xproxy+json trace", ["--trace", trace_file, "--trace-format", "json"])))
    else:
        skipped.append("xproxy+json trace: this xproxy has no --trace yet")
    try:
        for name, build in builders:
            built = build()
            if isinstance(built, str):
                skipped.append(f"{name}: {built}")
            else:
                paths.append(built)
        # rates[(path, test)][round]: None when x11perf failed
        rates: dict[tuple[str, str], list[float | None]] = {}
        cpu_before = cpu_times()
        for r in range(args.rounds):
            order = paths[r % len(paths):] + paths[: r % len(paths)]
            for test in tests:
                for path in order:
                    rates.setdefault((path.name, test), []).append(
                        x11perf(path, test, args.time))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        steal = stolen(cpu_before, cpu_times())
        print(f"x11perf rate / direct: median over {args.rounds} rounds of each round's ratio "
              f"(the lowest and highest in brackets), -time {args.time}, order rotating per "
              f"round; machine: {os.cpu_count()} cores, {os.uname().sysname} "
              f"{os.uname().release}")
        header = "| test | " + " | ".join(p.name for p in paths) + " |"
        print(header)
        print("|" + "---|" * (len(paths) + 1))
        for test in tests:
            direct = rates.get(("direct", test), [])
            cells = []
            for p in paths:
                values = rates.get((p.name, test), [])
                if p.name == "direct":
                    ok = [v for v in values if v]
                    cells.append(f"{statistics.median(ok):,.0f}/s" if ok else "failed")
                    continue
                ratios = [v / d for v, d in zip(values, direct) if v and d]
                cells.append(f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–"
                             f"{max(ratios):.2f})" if ratios else "failed")
            print(f"| {test} | " + " | ".join(cells) + " |")
        for note in skipped:
            print(f"skipped: {note}")
        if steal is not None:
            print(f"CPU steal during the rounds: {steal:.1%} of the machine's CPU time (time "
                  "the VM's host ran others: a few percent makes the ratios swing)")
        proxy = next(p for p in paths if p.name == "xproxy")
        for line in memory(xvfb, proxy):
            print(line)
    finally:
        for p in paths:
            p.stop()
        xvfb.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (/proc/stat's first line), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def stolen(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of CPU time stolen by the hypervisor between two `cpu_times()` (field 8)."""
    if before is None or after is None or len(before) < 8 or len(after) < 8:
        return None
    total = sum(after[:8]) - sum(before[:8])
    return (after[7] - before[7]) / total if total > 0 else None


if __name__ == "__main__":
    sys.exit(main())
