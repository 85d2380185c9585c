"""The round trips GTK, Qt and Firefox programs wait for before their first window is mapped,
by request name: locally (`xproxy trace`, no link) and over a slow link with a warm cache
(`xproxy run --trace` through the link agent, which answers some itself).

A wait is a request whose reply the program waited for, sending nothing until it came
(xproxy/observe/waits.py); "first map" is its first MapWindow of a top-level window. Who
answered each over the link is told by the link agent's suppressor: the X server across the
link, the agent at once, or the agent holding a known answer until the server had finished
an earlier request that could fail (that request is named in the "held behind" column). Each
program runs once untraced over the link first, so the agent's cache is warm, as on a link in
daily use. The traced runs are stopped once the window is viewable.

    .venv/bin/python benchmarks/waits.py [--rtt 20] [--programs gtk3-demo,...] [--top 8]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from testing import toolkits
from testing.wanlab import ROOT, XPROXY, WanLab


def read_waits(path: str, timeout: float = 15) -> dict[str, Any]:
    """The Perfetto JSON a traced run wrote (the link agent writes it as the run ends)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                return json.load(f)  # type: ignore[no-any-return]
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def local(lab: WanLab, program: str, work: str) -> dict[str, Any]:
    out = os.path.join(work, f"{program}.local.json")
    env = toolkits.environ(lab.display_env, os.path.join(work, "home-local"))
    p = subprocess.Popen([*XPROXY, "trace", "--format", "perfetto", "-o", out, "--",
                          *toolkits.argv(program, work)], env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        toolkits.wait_window(program, lab.display_env, time.monotonic(), alive=p)
        time.sleep(0.3)
    finally:
        toolkits.stop_group(p)  # xproxy trace writes the waits as it stops
    time.sleep(0.3)
    return read_waits(out)


def over_link(lab: WanLab, program: str, work: str, trace: str | None) -> dict[str, Any] | None:
    """One run through the link; with `trace`, its waits."""
    env = toolkits.environ(lab.app_env, os.path.join(work, "home-link"))
    flags = ("--trace", trace, "--trace-format", "perfetto") if trace else ()
    p = subprocess.Popen(lab.run_argv(toolkits.argv(program, work), *flags, via=lab.link_relay),
                         env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        toolkits.wait_window(program, lab.display_env, time.monotonic(), alive=p)
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)  # `xproxy run` passes it on, then ends the run cleanly
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            pass
    finally:
        toolkits.stop_group(p)
    time.sleep(0.3)
    return read_waits(trace) if trace else None


def _counts(counts: dict[str, int], top: int) -> str:
    """'name n, ...' for the `top` most frequent names, and how many more."""
    items = list(counts.items())
    rest = sum(n for _, n in items[top:])
    text = ", ".join(f"{name} {n}" for name, n in items[:top])
    return (text + (f", {rest} more" if rest else "")) or "-"


def table(rows: dict[str, dict[str, dict[str, Any]]], top: int) -> str:
    lines = [("| program | local: waits before map | link, warm: waits before map "
              "| of those: answered by the link at once / held / crossed the link "
              "| agent's answers at once / held, whole run "
              "| top waits, local / link (answered by the link at once) "
              "| crossed the link | held behind |"),
             "|---|---|---|---|---|---|---|---|"]
    for program, r in rows.items():
        loc, link = r.get("local"), r.get("link")
        lo = loc["otherData"] if loc else {}
        li = link["otherData"] if link else {}
        names: Counter[str] = Counter()
        names.update(lo.get("by_name", {}))
        names.update(li.get("by_name", {}))
        tops = []
        for name, _ in names.most_common(top):
            a = lo["by_name"].get(name, 0) if lo else "-"
            b = li["by_name"].get(name, 0) if li else "-"
            by_link = li.get("link_answered_by_name", {}).get(name, 0)
            tops.append(f"{name} {a}/{b}" + (f" ({by_link})" if by_link else ""))
        answered = li.get("answered", {})
        split = "-" if not li else (f"{answered.get('link', 0)} / {answered.get('held', 0)} "
                                    f"/ {answered.get('server', 0)}")
        agent = (link or {}).get("agent")
        whole = "-" if not agent else f"{agent['answered']} / {agent['held']}"
        lines.append(f"| {program} | {lo.get('before_map', '-')} | {li.get('before_map', '-')} "
                     f"| {split} | {whole} | {', '.join(tops)} "
                     f"| {_counts(li.get('crossed_by_name', {}), top)} "
                     f"| {_counts(li.get('held_behind', {}), top)} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rtt", type=float, default=20.0, help="round-trip time of the link, ms")
    ap.add_argument("--programs", default=",".join(toolkits.PROGRAMS))
    ap.add_argument("--top", type=int, default=8, help="names shown per program")
    ap.add_argument("--json", metavar="FILE", help="also write every run's waits summary here")
    args = ap.parse_args()
    if shutil.which("Xvfb") is None or shutil.which("xdotool") is None:
        print("benchmarks/waits.py: needs Xvfb and xdotool (make install)")
        return 0
    programs = [p for p in args.programs.split(",") if p]
    missing = [p for p in programs if not toolkits.installed(p)]
    if missing:
        print(f"benchmarks/waits.py: not installed, skipped: {', '.join(missing)} "
              "(make install)", file=sys.stderr)
    work = tempfile.mkdtemp(prefix="xt-waits-")
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        with WanLab(delay_ms=args.rtt / 2) as lab:
            for program in programs:
                if program in missing:
                    continue
                r = rows[program] = {}
                try:
                    r["local"] = local(lab, program, work)
                    over_link(lab, program, work, None)  # the cache warm
                    before = lab.agent_stats(via=lab.link_relay)
                    r["link"] = over_link(lab, program, work,
                                          os.path.join(work, f"{program}.link.json")) or {}
                    after = lab.agent_stats(via=lab.link_relay)
                    r["link"]["agent"] = {k: after.get(k, 0) - before.get(k, 0)
                                          for k in ("answered", "held", "forwarded_replies")}
                except (TimeoutError, RuntimeError, OSError, ValueError) as err:
                    print(f"  {program}: {err}", file=sys.stderr, flush=True)
                    continue
                print(f"  {program}: local {r['local']['otherData']['before_map']}, link "
                      f"{r['link']['otherData']['before_map']} waits before the first map",
                      file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(rows, args.top))
    print(f"\nwaits before the first window mapped; link: {args.rtt:g} ms RTT, warm cache; "
          "one Xvfb, loopback, a delaying relay")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({p: {k: dict(v.get("otherData", {}), agent=v.get("agent"))
                           for k, v in r.items()} for p, r in rows.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
