"""Moving running X programs, in one run: how long a move takes, what the movable display's
bookkeeping costs beside the plain relay, and the memory per tracked client.

1. Move time: each program (xterm, xclock, a GTK 3 program) runs in a session
   (`xproxy run --session`) on one Xvfb; once its window is mapped it is moved to a second
   Xvfb and back, `--moves` times; the table gives the engine's own time for a move (the
   `seconds` of its reply: recreating every resource on the target and letting go of the old
   server) and the wall time of the `xproxy move` command (a Python start and a request on
   the session's control socket more), medians with the range.
2. x11perf -prop and -putimage100 on four paths in turn, the order rotating per round:
   direct, the plain relay (`xproxy serve`), a movable display (`xproxy serve --movable`);
   each cell the median of each round's rate / direct.
3. Memory: the resident memory of a plain relay and of a movable display with N xlogo
   clients connected, over the same at rest: per client, and what tracking adds; and the
   session process's own.

    .venv/bin/python benchmarks/move.py [--rounds N] [--moves N] [--clients N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from testing.xvfb import Xvfb, start_xvfb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XPROXY = [sys.executable, "-m", "xproxy.cli"]
PROGRAMS = {
    "xterm": (["xterm"], "XTerm"),
    "xclock": (["xclock", "-update", "1"], "XClock"),
    "gtk3-demo": (["gtk3-demo"], "Gtk3-demo"),
}
GTK_ENV = {"NO_AT_BRIDGE": "1", "GDK_BACKEND": "x11"}
#: The resident memory of each session process (session/agent.py), KiB.
SESSION_RSS: list[int] = []


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_window(env: dict[str, str], cls: str, timeout: float = 60) -> str:
    found = subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--class", cls],
                           env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if found.returncode != 0 or not found.stdout.split():
        raise RuntimeError(f"no {cls} window on {env['DISPLAY']}")
    return found.stdout.split()[0]


def move_times(name: str, argv: list[str], cls: str, a: Xvfb, b: Xvfb, env: dict[str, str],
               moves: int) -> tuple[list[float], list[float]] | str:
    """(engine seconds, command wall seconds) per move of `argv` between a and b."""
    session = f"bench-{name}"
    program = subprocess.Popen([*XPROXY, "run", "--session", session, "--to", a.name, "--",
                                *argv], env=dict(env, **GTK_ENV), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    engine, wall = [], []
    try:
        try:
            wait_window(a.env, cls)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            return f"{err}"
        time.sleep(1.0)  # let it finish its start (GTK keeps talking after the map)
        entry = os.path.join(env["XDG_RUNTIME_DIR"], "xtransparency", "sessions",
                             f"{session}.json")
        with open(entry) as f:
            SESSION_RSS.append(rss_kib(json.load(f)["pid"]))
        for i in range(moves):
            to = b if i % 2 == 0 else a
            start = time.monotonic()
            r = subprocess.run([*XPROXY, "move", session, "--to", to.name], env=env, cwd=ROOT,
                               capture_output=True, text=True, timeout=180, check=False)
            wall.append(time.monotonic() - start)
            if r.returncode != 0 or not r.stdout.startswith("moved "):
                return f"move {i + 1} failed: {r.stderr.strip()[-300:] or r.stdout.strip()}"
            # the command rounds to 10 ms; the session's log has the engine's own figure
            with open(entry[: -len(".json")] + ".log") as f:
                logged = re.findall(r"moved \d+ clients to \S+ in ([\d.]+) s", f.read())
            engine.append(float(logged[-1]))
            wait_window(to.env, cls)
        return engine, wall
    finally:
        program.terminate()
        try:
            program.wait(15)
        except subprocess.TimeoutExpired:
            program.kill()
        subprocess.run([*XPROXY, "sessions"], env=env, cwd=ROOT, capture_output=True,
                       check=False)


def serve(xvfb: Xvfb, env: dict[str, str], movable: bool) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([*XPROXY, "serve", "--to", xvfb.name, *(["--movable"] if movable
                                                                 else [])],
                         env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    line = p.stdout.readline().strip()  # type: ignore[union-attr]
    if not line.startswith("ready DISPLAY="):
        p.kill()
        raise RuntimeError(f"xproxy serve{' --movable' if movable else ''} did not start")
    return p, line.partition("=")[2]


def x11perf(env: dict[str, str], test: str, seconds: int) -> float | None:
    out = subprocess.run(["x11perf", "-repeat", "1", "-time", str(seconds), test], env=env,
                         capture_output=True, text=True, timeout=120, check=False).stdout
    rates = re.findall(r"\(\s*([\d.]+)/sec\)", out)
    return float(rates[-1]) if rates else None


def memory(pid: int, env: dict[str, str], n: int) -> tuple[float, float]:
    """(MB at rest, KiB per client with n xlogo clients mapped)."""
    rest = rss_kib(pid)
    clients = [subprocess.Popen(["xlogo", "-geometry", "100x100"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(n)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = subprocess.run(["xdotool", "search", "--onlyvisible", "--class", "XLogo"],
                                   env=env, capture_output=True, text=True, check=False)
            if len(found.stdout.split()) >= n:
                break
            time.sleep(0.2)
        time.sleep(0.5)
        loaded = rss_kib(pid)
    finally:
        for c in clients:
            c.terminate()
            c.wait(10)
    return rest / 1024, (loaded - rest) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--time", type=int, default=1, help="x11perf -time per run, seconds")
    parser.add_argument("--moves", type=int, default=4, help="moves per program")
    parser.add_argument("--clients", type=int, default=20, help="xlogo clients for memory")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="xt-move-bench-")
    a = start_xvfb(screen="1024x768x24")
    b = start_xvfb(screen="1024x768x24")
    auth = os.path.join(work, "Xauthority")
    shutil.copy(a.xauthority, auth)
    subprocess.run(["xauth", "-f", auth, "merge", b.xauthority], check=True, capture_output=True)
    run_dir = os.path.join(work, "run")
    os.makedirs(run_dir, mode=0o700)
    env = dict(os.environ, XAUTHORITY=auth, XDG_RUNTIME_DIR=run_dir, PYTHONPATH=ROOT)
    a.extra_env = b.extra_env = {"XAUTHORITY": auth}
    processes: list[subprocess.Popen] = []
    out: list[str] = []
    try:
        out.append(f"move time, {args.moves} moves each between two Xvfb 1024x768x24 (median, "
                   "lowest–highest):")
        out.append("| program | engine's move | `xproxy move` command |")
        out.append("|---|---|---|")
        for name, (argv, cls) in PROGRAMS.items():
            if shutil.which(argv[0]) is None:
                out.append(f"| {name} | not installed | |")
                continue
            got = move_times(name, argv, cls, a, b, env, args.moves)
            if isinstance(got, str):
                out.append(f"| {name} | failed: {got} | |")
                continue
            engine, wall = got
            out.append(f"| {name} | {statistics.median(engine):.3f} s ({min(engine):.3f}–"
                       f"{max(engine):.3f}) | {statistics.median(wall):.3f} s ({min(wall):.3f}–"
                       f"{max(wall):.3f}) |")
        print("\n".join(out), flush=True)
        out = []

        plain, plain_display = serve(a, env, movable=False)
        processes.append(plain)
        movable, movable_display = serve(a, env, movable=True)
        processes.append(movable)
        paths = {"direct": a.env, "xproxy serve": dict(env, DISPLAY=plain_display),
                 "xproxy serve --movable": dict(env, DISPLAY=movable_display)}
        names = list(paths)
        rates: dict[tuple[str, str], list[float | None]] = {}
        tests = ["-prop", "-putimage100"]
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for test in tests:
                for path in order:
                    rates.setdefault((path, test), []).append(
                        x11perf(paths[path], test, args.time))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        out.append(f"\nx11perf rate / direct, median over {args.rounds} rounds of each round's "
                   f"ratio (lowest–highest), -time {args.time}:")
        out.append("| test | " + " | ".join(names) + " | bookkeeping (plain − movable) |")
        out.append("|" + "---|" * (len(names) + 2))
        for test in tests:
            direct = rates[("direct", test)]
            cells: list[str] = []
            medians: dict[str, float] = {}
            for path in names:
                values = rates[(path, test)]
                if path == "direct":
                    ok = [v for v in values if v]
                    cells.append(f"{statistics.median(ok):,.0f}/s" if ok else "failed")
                    continue
                ratios = [v / d for v, d in zip(values, direct) if v and d]
                if ratios:
                    medians[path] = statistics.median(ratios)
                    cells.append(f"{medians[path]:.2f} ({min(ratios):.2f}–{max(ratios):.2f})")
                else:
                    cells.append("failed")
            cost = (f"{medians['xproxy serve'] - medians['xproxy serve --movable']:+.2f}"
                    if len(medians) == 2 else "?")
            out.append(f"| {test} | " + " | ".join(cells) + f" | {cost} |")

        out.append(f"\nresident memory, {args.clients} xlogo clients mapped:")
        out.append("| path | at rest | per client |")
        out.append("|---|---|---|")
        for label, p, display in (("xproxy serve", plain, plain_display),
                                  ("xproxy serve --movable", movable, movable_display)):
            rest, per = memory(p.pid, dict(env, DISPLAY=display), args.clients)
            out.append(f"| {label} | {rest:.1f} MB | {per:.0f} KiB |")
        if SESSION_RSS:
            out.append(f"\nsession process (session/agent.py, beside its movable display): "
                       f"{statistics.median(SESSION_RSS) / 1024:.1f} MB resident")
        out.append(f"\nmachine: {os.cpu_count()} cores, {os.uname().sysname} "
                   f"{os.uname().release}, load average {os.getloadavg()[0]:.1f} at the end")
        print("\n".join(out))
    finally:
        for p in processes:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        _stop_sessions(env)
        a.stop()
        b.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _stop_sessions(env: dict[str, str]) -> None:
    """Stop the sessions this run started (their processes live on their own otherwise)."""
    from xproxy.session.agent import ask

    listed: list[dict[str, Any]] = json.loads(subprocess.run(
        [*XPROXY, "sessions", "--json"], env=env, cwd=ROOT, capture_output=True, text=True,
        check=False).stdout or "[]")
    for s in listed:
        path = os.path.join(env["XDG_RUNTIME_DIR"], "xtransparency", "sessions",
                            f"{s['name']}.ctl")
        with contextlib.suppress(Exception):  # already gone
            ask(path, {"op": "stop"}, 10)


if __name__ == "__main__":
    sys.exit(main())
