"""QueryColors on a TrueColor default colormap is answered by the link agent, from the same
ramps as AllocColor, and what it answers is what the X server answers: a raw client that asks
QueryColors alone (so the agent's counters move by exactly that answer), and xwd(1), which
reads the colormap with QueryColors, checked with `--verify-cache`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest

from testing.wanlab import ROOT, WanLab
from testing.xserver import require

pytestmark = pytest.mark.timeout(120)

QCOLORS = [sys.executable, os.path.join(ROOT, "tests", "xproxy", "qcolors_client.py")]


@pytest.fixture(scope="module")
def lab():
    require("Xvfb")
    with WanLab(delay_ms=1) as lab:
        yield lab


def colors(run: subprocess.CompletedProcess) -> list[list[int]]:
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["ok"], out
    return out["colors"]  # type: ignore[no-any-return]


def stats_after(lab: WanLab, before: dict[str, Any], key: str, *flags: str) -> dict[str, Any]:
    """The agent's counters once `key` has moved past `before` (they are written when a
    connection closes, which may be just after `run` returns)."""
    deadline = time.monotonic() + 30
    while True:
        stats = lab.agent_stats(*flags)
        if stats.get(key, 0) > before.get(key, 0) or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def test_query_colors_answered_near_the_client_as_the_server_answers(lab) -> None:
    direct = colors(subprocess.run(QCOLORS, check=True, env=lab.display_env, capture_output=True,
                                   text=True, timeout=60))
    first = colors(lab.run(QCOLORS))  # starts the agent
    before = lab.agent_stats()
    assert colors(lab.run(QCOLORS)) == first == direct
    after = stats_after(lab, before, "answered")
    assert after["answered"] + after["held"] == before["answered"] + before["held"] + 1
    assert after["mismatches"] == 0, after["mismatch_log"]


def test_xwd_reads_the_colormap_through_verify_cache_with_no_mismatch(lab) -> None:
    require("xwd")
    xwd = ["xwd", "-root", "-silent"]
    direct = subprocess.run(xwd, check=True, env=lab.display_env, capture_output=True,
                            timeout=60).stdout
    assert lab.run(xwd, text=False).stdout == direct  # the colormap answered by the agent
    colors(lab.run(QCOLORS, "--verify-cache"))  # starts the verifying agent
    before = lab.agent_stats("--verify-cache")
    r = lab.run(xwd, "--verify-cache", text=False)
    assert r.returncode == 0 and r.stdout == direct
    stderr = r.stderr.decode()
    assert re.search(r"verify-cache: \d+ answers compared with the server's, 0 mismatches",
                     stderr), stderr[-1000:]
    after = stats_after(lab, before, "compared", "--verify-cache")
    assert after["compared"] > before["compared"]
    assert after["mismatches"] == 0, after["mismatch_log"]
