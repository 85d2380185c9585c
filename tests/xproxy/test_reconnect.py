"""Link loss and reconnect, end to end on loopback (issue 7): a real Xvfb, `xproxy export`, the
link agent that `xproxy run` starts, and a delaying relay between them whose connections we cut
(SIGUSR1) or which we stop. An X client doing round trips all along keeps every sequence number
right across the cuts; a link down for longer than the grace period ends its clients with the
reason in the agent's log, the display host closes their X connections after its own grace,
and an export that restarted refuses to resume a session it does not know."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from testing.wanlab import ROOT, XPROXY, Relay, WanLab
from testing.xserver import require

pytestmark = pytest.mark.timeout(120)

SEQCHECK = [sys.executable, os.path.join(ROOT, "tests", "xproxy", "seqcheck_client.py")]
EXPORT_GRACE = 6.0


@pytest.fixture(scope="module")
def lab():
    require("Xvfb")
    with WanLab(delay_ms=2, export_args=("--link-grace", str(EXPORT_GRACE))) as lab:
        yield lab


def agent_socket(lab: WanLab, relay: Relay) -> str:
    """Where `run --to xproxy://127.0.0.1:PORT` looks for its link agent (default mode)."""
    code = (f"import os; os.environ['XDG_RUNTIME_DIR']={lab.app_env['XDG_RUNTIME_DIR']!r};"
            "from xproxy.run.paths import agent_socket_path;"
            f"print(agent_socket_path('127.0.0.1', {relay.port}, '127.0.0.1:{relay.port}'))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True).stdout.strip()


def agent_log(lab: WanLab, relay: Relay) -> str:
    with open(agent_socket(lab, relay)[: -len(".sock")] + ".log") as f:
        return f.read()


def start_agent(lab: WanLab, relay: Relay, grace: float) -> subprocess.Popen:
    """The link agent `run` would start, started first with a short grace (run then uses it)."""
    path = agent_socket(lab, relay)
    with open(path[: -len(".sock")] + ".log", "a") as log:
        agent = subprocess.Popen(
            [*XPROXY, "link-agent", "--host", "127.0.0.1", "--port", str(relay.port),
             "--trust-name", f"127.0.0.1:{relay.port}", "--socket", path, "--grace", str(grace),
             "--linger", "30"],
            env=lab.app_env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=log, text=True)
    line = agent.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("ready"), line
    return agent


def windows(lab: WanLab, cls: str) -> bool:
    return subprocess.run(["xdotool", "search", "--onlyvisible", "--class", cls],
                          env=lab.display_env, capture_output=True, check=False).returncode == 0


def wait_for(what, timeout: float, step: float = 0.05) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not what():
        assert time.monotonic() - start < timeout, f"timed out after {timeout} s"
        time.sleep(step)
    return time.monotonic() - start


def result(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_link_loss_and_reconnect_keep_a_client_doing_round_trips(lab) -> None:
    relay = lab.relay(f"127.0.0.1:{lab.export_port}", "cut", delay_ms=5)
    env = dict(lab.app_env, SEQCHECK_ROUNDS="300")
    direct = subprocess.run(SEQCHECK, env=dict(lab.display_env, SEQCHECK_ROUNDS="300"),
                            capture_output=True, text=True, timeout=60, check=False)
    want = result(direct.stdout)
    assert want["ok"], want
    client = subprocess.Popen(lab.run_argv(SEQCHECK, via=relay), env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = 0
        for _ in range(3):  # cut the link three times while the client is busy
            wait_for(lambda seen=seen: relay.stats()["down"] > seen + 20_000, 30, step=0.01)
            assert client.poll() is None, "the client finished before the cut"
            relay.drop()
            seen = relay.stats()["down"]
        out, err = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, err[-2000:]
    got = result(out)
    assert got["ok"] and got["left"] == 0, got
    assert (got["replies"], got["errors"], got["events"]) == \
        (want["replies"], want["errors"], want["events"])
    assert relay.stats()["connections"] >= 4  # the first, and one per cut
    stats = lab.agent_stats(via=relay)
    assert stats["reconnects"] == 3, stats
    log = agent_log(lab, relay)
    assert log.count(" resumed after ") == 3, log[-3000:]


def test_a_link_down_longer_than_the_grace_ends_its_clients_with_the_reason(lab) -> None:
    require("xdotool")
    require("xlogo")
    relay = lab.relay(f"127.0.0.1:{lab.export_port}", "dead", delay_ms=1)
    agent = start_agent(lab, relay, grace=2)
    xlogo = subprocess.Popen(lab.run_argv(["xlogo"], via=relay), env=lab.app_env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: windows(lab, "XLogo"), 30, step=0.1)
        relay.stop()  # the link is down, and stays down: every reconnection is refused
        lost_at = time.monotonic()
        assert xlogo.wait(20) != 0  # xlogo: connection to the X server lost
        ended = time.monotonic() - lost_at
        assert 1.5 < ended < 10, ended  # the agent's 2 s, not the export's 6
        assert agent.wait(10) == 0  # and the agent is done
        log = agent_log(lab, relay)
        assert "reconnecting for up to 2 s, keeping 1 X clients" in log, log[-3000:]
        assert "not resumed within 2 s" in log and "closing its 1 X clients" in log, log[-3000:]
        # the display host kept the X connection for its own grace, then closed it
        assert windows(lab, "XLogo")
        wait_for(lambda: not windows(lab, "XLogo"), EXPORT_GRACE + 5, step=0.2)
        assert time.monotonic() - lost_at > EXPORT_GRACE - 1
        with open(lab.export_log) as f:
            assert f"not resumed within {EXPORT_GRACE:g} s; closing its 1 X connections" in \
                f.read()
    finally:
        for p in (xlogo, agent):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_an_export_that_restarted_refuses_to_resume_and_the_clients_end(lab) -> None:
    """The session lives in the export's memory: a new export process on the same port (same
    key), after the first one crashed, does not know it, says so, and the agent closes its
    clients at once."""
    require("xdotool")
    require("xlogo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def export() -> subprocess.Popen:
        p = subprocess.Popen(
            [*XPROXY, "export", lab.xvfb.name, "--name", "again", "--port", str(port),  # type: ignore[union-attr]
             "--interface", "127.0.0.1", "--no-advertise"],
            env=lab.display_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        line = p.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("ready"), line
        return p

    first = export()
    relay = lab.relay(f"127.0.0.1:{port}", "restart", delay_ms=1)
    xlogo = subprocess.Popen(lab.run_argv(["xlogo"], via=relay), env=lab.app_env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        wait_for(lambda: windows(lab, "XLogo"), 30, step=0.1)
        first.kill()  # a crash: it says nothing to the agent
        first.wait(10)
        second = export()
        assert xlogo.wait(20) != 0
        log = agent_log(lab, relay)
        assert "the display host refused to resume the link: the display host does not know " \
               "this link session" in log, log[-3000:]
        assert "closing its 1 X clients" in log
    finally:
        for p in (xlogo, first, second):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)


def test_an_export_that_stops_ends_its_clients_at_once_not_after_the_grace(lab) -> None:
    """A clean stop (SIGTERM) closes every channel with a reason before the link goes, so
    the app host's X clients end now rather than after the agent's 60 s of reconnecting."""
    require("xdotool")
    require("xlogo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    export = subprocess.Popen(
        [*XPROXY, "export", lab.xvfb.name, "--name", "stops", "--port", str(port),  # type: ignore[union-attr]
         "--interface", "127.0.0.1", "--no-advertise"],
        env=lab.display_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    assert export.stdout.readline().startswith("ready")  # type: ignore[union-attr]
    xlogo = subprocess.Popen([*XPROXY, "run", "--to", f"xproxy://127.0.0.1:{port}", "--", "xlogo"],
                             env=lab.app_env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: windows(lab, "XLogo"), 30, step=0.1)
        export.terminate()
        assert export.wait(10) == 0
        assert xlogo.wait(20) != 0  # the agent's grace is 60 s: this is the CLOSE, not it
    finally:
        for p in (xlogo, export):
            if p.poll() is None:
                p.kill()
                p.wait(10)


def test_reconnect_delays_are_the_documented_ones():
    """0.1 s, doubling up to 2 s, no jitter (docs/xproxy.md and agent/link_agent.py say so)."""
    from xproxy.agent.link_agent import RECONNECT_BACKOFF

    assert [RECONNECT_BACKOFF(n) for n in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
