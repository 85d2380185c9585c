"""X over a slow link, side by side in one run: how long xterm, xlogo, xclock and xdpyinfo take
to start at 0, 20 and 100 ms round-trip time, and the bytes and round trips on the wire.

Paths, each through its own delaying relay (testing.delayrelay, a fixed one-way delay of half
the RTT each way) on loopback:
- plain X over TCP (DISPLAY=127.0.0.1:N, the relay in front of Xvfb's TCP port);
- ssh -X (a private sshd on loopback, the relay in front of it; only as root);
- xproxy run over the link (TLS, zstd), without suppression (--no-suppress);
- xproxy run over the link with suppression, cache warm (the same programs ran once before);
  and, once, xterm with no link agent yet (the first run after 60 s idle: the agent starts and
  makes the link), and once with that and an empty cache too.

The xproxy paths are measured with their link up, as when in use: an untimed `run -- true`
before each measured run (the link agent lingers 60 s after its last user, and the plain and
ssh runs at 100 ms take longer than that).

"Start" is the wall time of `xterm -e true` and `xdpyinfo` to their exit, and of xlogo and
xclock until their window is mapped (seen with xdotool on the display host); it includes what
the user waits for: `xproxy run` starting, `ssh` logging in. Round trips are the times the
app side spoke again after the display side had answered, counted by the relay (for the link
paths this includes flow-control credit); "replies" is what the link agent forwarded.

    .venv/bin/python benchmarks/wan.py [--rtt 0,20,100] [--rounds N] [--programs xterm,...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from testing.sshlab import start_sshd
from testing.wanlab import Relay, WanLab

PROGRAMS: dict[str, tuple[list[str], str | None]] = {
    "xterm": (["xterm", "-e", "true"], None),
    "xlogo": (["xlogo"], "XLogo"),
    "xclock": (["xclock"], "XClock"),
    "xdpyinfo": (["xdpyinfo"], None),
}


@dataclass
class Cell:
    seconds: float
    wire: int
    turns: int
    replies: int | None = None


def timed(argv: list[str], env: dict[str, str], window_class: str | None,
          display_env: dict[str, str]) -> float:
    """Seconds until the command exits, or until its window is mapped on the display host."""
    start = time.monotonic()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    if window_class is None:
        p.wait(300)
        return time.monotonic() - start
    # xdotool's own --sync looks every 0.5 s; look every 20 ms instead
    deadline = start + 300
    while subprocess.run(["xdotool", "search", "--onlyvisible", "--class", window_class],
                         env=display_env, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {window_class} window")
        time.sleep(0.02)
    took = time.monotonic() - start
    try:
        os.killpg(p.pid, 15)
    except ProcessLookupError:
        pass
    p.wait(30)
    time.sleep(0.3)  # let it go before the next one looks for a window of the same class
    return took


def ssh_setup(lab: WanLab, work: str) -> tuple[int, Callable[[Relay, list[str]], list[str]]] | str:
    sshd = start_sshd(work)
    if isinstance(sshd, str):
        return sshd
    lab.extra_procs = [sshd.process]

    def wrap(relay: Relay, argv: list[str]) -> list[str]:
        return sshd.ssh_argv(argv, port=relay.port)

    return sshd.port, wrap


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rtt", default="0,20,100", help="round-trip times in ms")
    ap.add_argument("--rounds", type=int, default=1, help="runs per cell (the median is shown)")
    ap.add_argument("--programs", default=",".join(PROGRAMS))
    args = ap.parse_args()
    rtts = [float(x) for x in args.rtt.split(",")]
    programs = args.programs.split(",")
    if shutil.which("Xvfb") is None or shutil.which("xdotool") is None:
        print("benchmarks/wan.py: needs Xvfb and xdotool (make install)")
        return 0
    work = tempfile.mkdtemp(prefix="xt-wanbench-")
    results: dict[tuple[float, str, str], Cell] = {}
    notes: list[str] = []
    with WanLab(delay_ms=0) as lab:
        lab.extra_procs = []
        ssh = ssh_setup(lab, work)
        if isinstance(ssh, str):
            notes.append(f"ssh -X: {ssh}")
        display_env = lab.display_env
        try:
            for rtt in rtts:
                one_way = rtt / 2
                plain_relay, plain_env = lab.plain(one_way)
                link = lab.relay(f"127.0.0.1:{lab.export_port}", f"link{rtt}", delay_ms=one_way)
                paths: dict[str, tuple[Relay, Callable[[list[str]], tuple[list[str], dict]]]] = {
                    "plain X": (plain_relay, lambda argv, e=plain_env: (argv, e)),
                }
                if not isinstance(ssh, str):
                    sport, wrap = ssh
                    srelay = lab.relay(f"127.0.0.1:{sport}", f"ssh{rtt}", delay_ms=one_way)
                    paths["ssh -X"] = (srelay, lambda argv, r=srelay, w=wrap: (w(r, argv), display_env))
                for name, flags in (("xproxy link", ("--no-suppress",)),
                                    ("xproxy suppress", ())):
                    paths[name] = (link, lambda argv, f=flags, r=link: (
                        lab.run_argv(argv, *f, via=r), lab.app_env))
                    lab.run(["xdpyinfo"], *flags, via=link)  # the link up, as when in use
                if rtt == rtts[0]:  # fill the display host's cache once
                    for prog in programs:
                        argv, cls = PROGRAMS[prog]
                        timed(lab.run_argv(argv, via=link), lab.app_env, cls, display_env)
                if rtt == 20.0 or (20.0 not in rtts and rtt == rtts[-1]):
                    no_agent = cold_xterm(lab, link, display_env, empty_cache=False)
                    notes.append(f"xterm with no link agent yet at {rtt:g} ms (the agent starts, "
                                 f"TLS handshake): {no_agent:.2f} s")
                    cold = cold_xterm(lab, link, display_env)
                    notes.append(f"xterm with no link agent and an empty cache at {rtt:g} ms: "
                                 f"{cold:.2f} s")
                for prog in programs:
                    argv, cls = PROGRAMS[prog]
                    for path, (relay, make) in paths.items():
                        cells = []
                        for _ in range(args.rounds):
                            if path.startswith("xproxy"):  # the link up, untimed
                                lab.run(["true"], *_flags(path), via=relay)
                            before = relay.stats()
                            agent_before = lab.agent_stats(*_flags(path), via=relay) \
                                if path.startswith("xproxy") else {}
                            cmd, env = make(argv)
                            secs = timed(cmd, env, cls, display_env)
                            after = relay.stats()
                            replies = None
                            if path.startswith("xproxy"):
                                agent_after = lab.agent_stats(*_flags(path), via=relay)
                                replies = agent_after.get("forwarded_replies", 0)
                                if replies >= agent_before.get("forwarded_replies", 0):
                                    replies -= agent_before.get("forwarded_replies", 0)
                                # (else a new agent started during the run: its count is it)
                            cells.append(Cell(secs, after["up"] + after["down"] - before["up"]
                                              - before["down"], after["turns"] - before["turns"],
                                              replies))
                        cells.sort(key=lambda c: c.seconds)
                        results[(rtt, prog, path)] = cells[len(cells) // 2]
                        c = results[(rtt, prog, path)]
                        print(f"  {rtt:>5g} ms {prog:<9} {path:<16} {c.seconds:6.2f} s "
                              f"{c.wire:>9} B {c.turns:>5} turns", file=sys.stderr, flush=True)
        finally:
            for p in lab.extra_procs:
                p.terminate()
    shutil.rmtree(work, ignore_errors=True)
    print_table(results, rtts, programs, notes)
    return 0


def _flags(path: str) -> tuple[str, ...]:
    return ("--no-suppress",) if path == "xproxy link" else ()


def cold_xterm(lab: WanLab, link: Relay, display_env: dict[str, str],
               empty_cache: bool = True) -> float:
    """xterm with no link agent running; with `empty_cache`, also with nothing cached (the
    cache file moved aside for one run)."""
    import glob

    cache = os.path.join(lab.app_env["XDG_CACHE_HOME"], "xtransparency")
    lab.stop_agents()
    time.sleep(0.5)
    saved = {}
    for f in glob.glob(os.path.join(cache, "xcache-*.json")) if empty_cache else ():
        saved[f] = f + ".aside"
        os.replace(f, saved[f])
    secs = timed(lab.run_argv(["xterm", "-e", "true"], via=link), lab.app_env, None, display_env)
    lab.stop_agents()
    time.sleep(0.5)
    for f, aside in saved.items():
        os.replace(aside, f)
    lab.run(["xdpyinfo"], via=link)  # the agents again, with the warm cache
    lab.run(["xdpyinfo"], "--no-suppress", via=link)
    return secs


def print_table(results: dict[tuple[float, str, str], Cell], rtts: list[float],
                programs: list[str], notes: list[str]) -> None:
    paths = []
    for (_, _, path) in results:
        if path not in paths:
            paths.append(path)
    print("\n| RTT | program | path | start (s) | / plain X | bytes on the wire | round trips "
          "| replies waited |")
    print("|---|---|---|---|---|---|---|---|")
    for rtt in rtts:
        for prog in programs:
            base = results.get((rtt, prog, "plain X"))
            for path in paths:
                c = results.get((rtt, prog, path))
                if c is None:
                    continue
                ratio = f"{c.seconds / base.seconds:.2f}" if base and base.seconds else "-"
                print(f"| {rtt:g} ms | {prog} | {path} | {c.seconds:.2f} | {ratio} | {c.wire} | "
                      f"{c.turns} | {'' if c.replies is None else c.replies} |")
    for n in notes:
        print(f"\n{n}")
    if results:
        print(f"\nmedian of {len(results)} cells; one Xvfb, loopback, delaying relay per path")


if __name__ == "__main__":
    sys.exit(main())
