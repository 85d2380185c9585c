"""X over a slow link, side by side in one run: how long X programs take to start at 0, 20 and
100 ms round-trip time, and the bytes and round trips on the wire: xterm, xlogo, xclock and
xdpyinfo, and the GTK, Qt and Firefox programs of testing/toolkits.py (gtk3-demo,
gtk3-widget-factory, zenity --entry, mousepad, featherpad, firefox-esr, gtk4-widget-factory).

Paths, each through its own delaying relay (testing.delayrelay, a fixed one-way delay of half
the RTT each way) on loopback:
- local: the program on the display host itself, no relay (the floor);
- plain X over TCP (DISPLAY=127.0.0.1:N, the relay in front of Xvfb's TCP port);
- ssh -X (a private sshd on loopback, the relay in front of it; only as root);
- xproxy run over the link (TLS, zstd), without suppression (--no-suppress);
- xproxy run over the link with suppression, cache warm (the same programs ran once before);
- and cold starts, at 20 ms (or the last RTT given): with no link agent yet (the first run
  after 60 s idle: the agent starts and makes the link), and with that and an empty cache too.

The warm xproxy paths are measured with their link up, as when in use: an untimed
`run -- true` before each measured run (the link agent lingers 60 s after its last user, and
the plain and ssh runs at 100 ms take longer than that).

"Start" is the wall time of `xterm -e true` and `xdpyinfo` to their exit, and of the others
until their window is viewable (seen with xdotool on the display host); it includes what the
user waits for: `xproxy run` starting, `ssh` logging in. Bytes are what crossed the path's
relay both ways (for the link: TLS and compression included). Round trips are the times the
app side spoke again after the display side had answered, counted by the relay (for the link
paths this includes flow-control credit); "replies" is what the link agent forwarded.

    .venv/bin/python benchmarks/wan.py [--rtt 0,20,100] [--rounds N] [--programs xterm,...]
        [--paths local,plain X,...] [--no-cold]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from testing import toolkits
from testing.sshlab import start_sshd
from testing.wanlab import Relay, WanLab

PROGRAMS: dict[str, tuple[list[str], str | None]] = {
    "xterm": (["xterm", "-e", "true"], None),
    "xlogo": (["xlogo"], "XLogo"),
    "xclock": (["xclock"], "XClock"),
    "xdpyinfo": (["xdpyinfo"], None),
}
DEFAULT_PROGRAMS = list(PROGRAMS)
#: The toolkits' programs, with their own command lines and window classes.
for _name, (_argv, _cls) in toolkits.PROGRAMS.items():
    PROGRAMS[_name] = ([], _cls)
PATHS = ("local", "plain X", "ssh -X", "xproxy link", "xproxy suppress")
#: The cold cells (once per program at the RTT of the cold starts).
COLD = ("xproxy no agent", "xproxy cold cache")


@dataclass
class Cell:
    seconds: float
    wire: int
    turns: int
    replies: int | None = None


def command(prog: str, state_dir: str) -> list[str]:
    """The program's command line (a toolkit program's state under `state_dir`)."""
    if prog in toolkits.PROGRAMS:
        return toolkits.argv(prog, state_dir)
    return PROGRAMS[prog][0]


def timed(argv: list[str], env: dict[str, str], window_class: str | None,
          display_env: dict[str, str]) -> float:
    """Seconds until the command exits, or until its window is viewable on the display host;
    then the command and everything it started are stopped."""
    start = time.monotonic()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    if window_class is None:
        p.wait(300)
        return time.monotonic() - start
    try:
        deadline = start + 300
        while subprocess.run(["xdotool", "search", "--onlyvisible", "--class", window_class],
                             env=display_env, stdout=subprocess.DEVNULL,
                             check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {window_class} window")
            if p.poll() is not None:
                raise RuntimeError(f"{argv[-1]} exited ({p.returncode}) before its window showed")
            time.sleep(0.02)
        took = time.monotonic() - start
    finally:
        toolkits.stop_group(p)
    gone = time.monotonic() + 10  # before the next run looks for a window of the same class
    while subprocess.run(["xdotool", "search", "--onlyvisible", "--class", window_class],
                         env=display_env, stdout=subprocess.DEVNULL,
                         check=False).returncode == 0 and time.monotonic() < gone:
        time.sleep(0.05)
    time.sleep(0.2)
    return took


def ssh_setup(lab: WanLab, work: str) -> tuple[int, Callable[[Relay, list[str]], list[str]]] | str:
    sshd = start_sshd(work)
    if isinstance(sshd, str):
        return sshd
    lab.extra_procs = [sshd.process]

    def wrap(relay: Relay, argv: list[str]) -> list[str]:
        # sshd gives the command its own environment: the toolkit settings go on its line
        settings = [f"{k}={v}" for k, v in toolkits.ENV.items()]
        return sshd.ssh_argv(["env", *settings, *(shlex.quote(a) for a in argv)],
                             port=relay.port)

    return sshd.port, wrap


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rtt", default="0,20,100", help="round-trip times in ms")
    ap.add_argument("--rounds", type=int, default=1, help="runs per cell (the median is shown)")
    ap.add_argument("--programs", default=",".join(DEFAULT_PROGRAMS),
                    help=f"among {','.join(PROGRAMS)} (default: the x11-apps)")
    ap.add_argument("--paths", default=",".join(PATHS), help="among " + ",".join(PATHS))
    ap.add_argument("--no-cold", action="store_true", help="no cold-start cells")
    args = ap.parse_args()
    rtts = [float(x) for x in args.rtt.split(",")]
    programs = [p for p in args.programs.split(",") if p]
    wanted = [p for p in args.paths.split(",") if p]
    if shutil.which("Xvfb") is None or shutil.which("xdotool") is None:
        print("benchmarks/wan.py: needs Xvfb and xdotool (make install)")
        return 0
    missing = [p for p in programs if p in toolkits.PROGRAMS and not toolkits.installed(p)]
    if missing:
        print(f"benchmarks/wan.py: not installed, skipped: {', '.join(missing)}", file=sys.stderr)
        programs = [p for p in programs if p not in missing]
    work = tempfile.mkdtemp(prefix="xt-wanbench-")
    results: dict[tuple[float, str, str], Cell] = {}
    notes: list[str] = []
    cold_rtt = 20.0 if 20.0 in rtts else rtts[-1]
    with WanLab(delay_ms=0) as lab:
        lab.extra_procs = []
        ssh = ssh_setup(lab, work) if "ssh -X" in wanted else "not asked for"
        if isinstance(ssh, str) and "ssh -X" in wanted:
            notes.append(f"ssh -X: {ssh}")
        display_env = lab.display_env
        home = os.path.join(work, "home")
        local_env = toolkits.environ(display_env, home)
        app_env = toolkits.environ(lab.app_env, home)
        try:
            for rtt in rtts:
                one_way = rtt / 2
                link = lab.relay(f"127.0.0.1:{lab.export_port}", f"link{rtt}", delay_ms=one_way)
                paths: dict[str, tuple[Relay | None, Callable[[list[str]], tuple[list[str], dict]]]] = {}
                if "local" in wanted:
                    paths["local"] = (None, lambda argv: (argv, local_env))
                if "plain X" in wanted:
                    plain_relay, plain_env = lab.plain(one_way)
                    plain_env = toolkits.environ(plain_env, home)
                    paths["plain X"] = (plain_relay, lambda argv, e=plain_env: (argv, e))
                if not isinstance(ssh, str):
                    sport, wrap = ssh
                    srelay = lab.relay(f"127.0.0.1:{sport}", f"ssh{rtt}", delay_ms=one_way)
                    paths["ssh -X"] = (srelay, lambda argv, r=srelay, w=wrap: (w(r, argv), display_env))
                for name, flags in (("xproxy link", ("--no-suppress",)),
                                    ("xproxy suppress", ())):
                    if name not in wanted:
                        continue
                    paths[name] = (link, lambda argv, f=flags, r=link: (
                        lab.run_argv(argv, *f, via=r), app_env))
                    lab.run(["xdpyinfo"], *flags, via=link)  # the link up, as when in use
                if rtt == rtts[0]:  # fill the display host's cache (and Firefox's profile) once
                    for prog in programs:
                        timed(lab.run_argv(command(prog, work), via=link), app_env,
                              PROGRAMS[prog][1], display_env)
                for prog in programs:
                    argv, cls = command(prog, work), PROGRAMS[prog][1]
                    for path, (relay, make) in paths.items():
                        cells = []
                        for _ in range(args.rounds):
                            cells.append(measure(lab, path, relay, make, argv, cls, display_env))
                        keep(results, (rtt, prog, path), cells)
                    if rtt == cold_rtt and not args.no_cold:
                        for path in COLD:
                            cells = [cold(lab, link, argv, cls, app_env, display_env,
                                          empty_cache=path == "xproxy cold cache")
                                     for _ in range(args.rounds)]
                            keep(results, (rtt, prog, path), cells)
        finally:
            for p in lab.extra_procs:
                p.terminate()
    shutil.rmtree(work, ignore_errors=True)
    print_table(results, rtts, programs, notes, args.rounds)
    return 0


def measure(lab: WanLab, path: str, relay: Relay | None,
            make: Callable[[list[str]], tuple[list[str], dict]], argv: list[str],
            cls: str | None, display_env: dict[str, str]) -> Cell:
    """One timed start on one path, with what crossed its relay."""
    if path.startswith("xproxy"):  # the link up, untimed
        lab.run(["true"], *_flags(path), via=relay)
    before = relay.stats() if relay else {}
    agent_before = lab.agent_stats(*_flags(path), via=relay) \
        if path.startswith("xproxy") else {}
    cmd, env = make(argv)
    secs = timed(cmd, env, cls, display_env)
    after = relay.stats() if relay else {}
    replies = None
    if path.startswith("xproxy"):
        agent_after = lab.agent_stats(*_flags(path), via=relay)
        replies = agent_after.get("forwarded_replies", 0)
        if replies >= agent_before.get("forwarded_replies", 0):
            replies -= agent_before.get("forwarded_replies", 0)
        # (else a new agent started during the run: its count is it)
    return _cell(secs, before, after, replies)


def _cell(secs: float, before: dict, after: dict, replies: int | None = None) -> Cell:
    if not after:
        return Cell(secs, 0, 0, replies)
    return Cell(secs, after["up"] + after["down"] - before["up"] - before["down"],
                after["turns"] - before["turns"], replies)


def keep(results: dict[tuple[float, str, str], Cell], key: tuple[float, str, str],
         cells: list[Cell]) -> None:
    cells.sort(key=lambda c: c.seconds)
    c = results[key] = cells[len(cells) // 2]
    rtt, prog, path = key
    print(f"  {rtt:>5g} ms {prog:<20} {path:<18} {c.seconds:6.2f} s "
          f"{c.wire:>9} B {c.turns:>5} turns", file=sys.stderr, flush=True)


def _flags(path: str) -> tuple[str, ...]:
    return ("--no-suppress",) if path == "xproxy link" else ()


def cold(lab: WanLab, link: Relay, argv: list[str], cls: str | None, app_env: dict[str, str],
         display_env: dict[str, str], empty_cache: bool = True) -> Cell:
    """A start with no link agent running (it starts, makes the link: TLS handshake); with
    `empty_cache`, also with nothing cached (the cache file moved aside for the run)."""
    import glob

    cache = os.path.join(lab.app_env["XDG_CACHE_HOME"], "xtransparency")
    lab.stop_agents()
    time.sleep(0.5)
    saved = {}
    for f in glob.glob(os.path.join(cache, "xcache-*.json")) if empty_cache else ():
        saved[f] = f + ".aside"
        os.replace(f, saved[f])
    before = link.stats()
    secs = timed(lab.run_argv(argv, via=link), app_env, cls, display_env)
    after = link.stats()
    lab.stop_agents()
    time.sleep(0.5)
    for f, aside in saved.items():
        os.replace(aside, f)
    lab.run(["xdpyinfo"], via=link)  # the agents again, with the warm cache
    lab.run(["xdpyinfo"], "--no-suppress", via=link)
    return _cell(secs, before, after)


def print_table(results: dict[tuple[float, str, str], Cell], rtts: list[float],
                programs: list[str], notes: list[str], rounds: int = 1) -> None:
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
                wire = c.wire if path != "local" else "-"
                print(f"| {rtt:g} ms | {prog} | {path} | {c.seconds:.2f} | {ratio} | {wire} | "
                      f"{c.turns} | {'' if c.replies is None else c.replies} |")
    # the same, one row per program: seconds (kilobytes on the wire)
    print("\n| RTT | program | " + " | ".join(paths) + " |")
    print("|---|---|" + "---|" * len(paths))
    for rtt in rtts:
        for prog in programs:
            cells = []
            for path in paths:
                c = results.get((rtt, prog, path))
                cells.append("" if c is None else f"{c.seconds:.2f}" if path == "local"
                             else f"{c.seconds:.2f} ({c.wire / 1000:,.0f} KB)")
            if any(cells):
                print(f"| {rtt:g} ms | {prog} | " + " | ".join(cells) + " |")
    for n in notes:
        print(f"\n{n}")
    if results:
        print(f"\nmedian of {rounds} run(s) per cell; one Xvfb, loopback, a delaying relay "
              "per path")


if __name__ == "__main__":
    sys.exit(main())
