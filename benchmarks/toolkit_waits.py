"""GTK and Qt programs over the link: the round trips each waits for before its first window is
mapped, and the time from launch to the mapped window, with a warm cache and link agent, beside
plain X over TCP through the same delay.

The waits are the link agent's own count (`waits_before_map` and `wait_rounds_before_map` in
its stats file: replies the program waited for from the display host, or known ones held
behind a request that could fail, until its first MapNotify, or its first MapWindow for a
program that hears of none; replies that came back together count as one round). One Xvfb, a
delaying relay of `--rtt / 2` each way in front of the export (testing.wanlab).

    .venv/bin/python benchmarks/toolkit_waits.py [--rtt 20] [--rounds 5] [--programs ...] [-v]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

from testing.wanlab import ROOT, WanLab

PROGRAMS: dict[str, tuple[list[str], str]] = {
    "gtk3-widget-factory": (["gtk3-widget-factory"], "gtk3-widget-factory"),
    "zenity": (["zenity", "--entry"], "zenity"),
    "featherpad": (["featherpad", "--standalone"], "featherpad"),
    "gtk4-widget-factory": (["gtk4-widget-factory"], "gtk4-widget-factory"),
}
TOOLKIT_ENV = {"NO_AT_BRIDGE": "1", "GDK_BACKEND": "x11", "QT_QPA_PLATFORM": "xcb"}


def launch_to_map(lab: WanLab, argv: list[str], cls: str, plain: bool = False) -> float:
    """Seconds from `xproxy run` (or the program, over plain X) to the program's window
    mapped on the display host."""
    start = time.monotonic()
    env = lab.plain_env() if plain else lab.app_env
    p = subprocess.Popen(argv if plain else lab.run_argv(argv), env={**env, **TOOLKIT_ENV},
                         cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        while subprocess.run(["xdotool", "search", "--onlyvisible", "--class", cls],
                             env=lab.display_env, stdout=subprocess.DEVNULL,
                             check=False).returncode:
            if p.poll() is not None or time.monotonic() - start > 300:
                raise RuntimeError(f"{argv[0]} showed no window")
            time.sleep(0.02)
        return time.monotonic() - start
    finally:
        time.sleep(0.5)  # let it finish starting before it goes: its connection's log is whole
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        p.wait(30)
        time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rtt", type=float, default=20, help="round-trip time in ms")
    ap.add_argument("--rounds", type=int, default=5, help="warm runs per program")
    ap.add_argument("--programs", default=",".join(PROGRAMS))
    ap.add_argument("-v", "--verbose", action="store_true", help="what each still waits for")
    args = ap.parse_args()
    if shutil.which("Xvfb") is None or shutil.which("xdotool") is None:
        print("benchmarks/toolkit_waits.py: needs Xvfb and xdotool (make install)")
        return 0
    rows = []
    with WanLab(delay_ms=args.rtt / 2) as lab:
        for name in args.programs.split(","):
            argv, cls = PROGRAMS[name]
            if shutil.which(argv[0]) is None:
                print(f"{name}: not installed")
                continue
            launch_to_map(lab, argv, cls)  # fills the cache and starts the link agent
            times, rounds, waits = [], [], []
            for _ in range(args.rounds):
                times.append(launch_to_map(lab, argv, cls))
                stats = lab.agent_stats()
                rounds.append(stats.get("wait_rounds_before_map", 0))
                waits = stats.get("waits_before_map", [])
            plain = statistics.median(launch_to_map(lab, argv, cls, plain=True)
                                      for _ in range(args.rounds))
            rows.append((name, statistics.median(rounds), statistics.median(times), plain))
            if args.verbose:
                print(name, dict(collections.Counter(waits).most_common()))
    print(f"\n| program | round trips waited before the first map | launch to map at "
          f"{args.rtt:g} ms RTT (s, median of {args.rounds}) | plain X (s) | / plain X |")
    print("|---|---|---|---|---|")
    for name, r, t, plain in rows:
        print(f"| {name} | {r:g} | {t:.2f} | {plain:.2f} | {t / plain:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
