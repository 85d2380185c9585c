"""`xproxy export` on one host, `xproxy run --to @NAME` on another: network namespaces as hosts,
discoveryd on each, a real Xvfb and real X programs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testing import netns
from testing.xserver import require, start_xvfb

from .test_serve import normalise_xdpyinfo

pytestmark = [
    pytest.mark.skipif(netns.available() is not None, reason=str(netns.available())),
    pytest.mark.timeout(180),
]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
XPROXY = [sys.executable, "-m", "xproxy.cli"]


@dataclass
class Site:
    host: netns.Host
    env: dict[str, str]
    dir: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def xproxy(self, *args: str, timeout: float = 60, env: dict | None = None):
        return self.host.run([*XPROXY, *args], env=env or self.env, cwd=ROOT, text=True,
                             timeout=timeout)

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("env", self.env)
        kw.setdefault("cwd", ROOT)
        p = self.host.popen(argv, **kw)
        self.procs.append(p)
        return p


def read_line(p: subprocess.Popen, prefix: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if line.startswith(prefix):
            return line.strip()
        if not line and p.poll() is not None:
            break
    raise AssertionError(f"no {prefix!r} line from {p.args}")


def make_site(host: netns.Host, base: str, name: str) -> Site:
    d = os.path.join(base, name)
    os.makedirs(os.path.join(d, "config"), exist_ok=True)
    os.makedirs(os.path.join(d, "run"), mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(d, "config"),
               XDG_RUNTIME_DIR=os.path.join(d, "run"),
               DISCOVERY_SOCKET=os.path.join(d, "discovery.sock"),
               XAUTHORITY=os.path.join(d, "Xauthority"), PYTHONPATH=ROOT)
    env.pop("DISPLAY", None)
    site = Site(host, env, d)
    with open(os.path.join(d, "discoveryd.log"), "w") as log:
        daemon = site.popen([os.path.join(BIN, "discoveryd"), "--socket", env["DISCOVERY_SOCKET"],
                             "--interface", host.ip, "--host-name", name],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    read_line(daemon, "ready")
    return site


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    """display host (h0: Xvfb, discoveryd, xproxy export --name office) and app host (h1)."""
    for program in ("Xvfb", "xdpyinfo", "xlogo", "xdotool"):
        require(program)
    base = str(tmp_path_factory.mktemp("launcher"))
    xvfb = start_xvfb()
    try:
        with netns.netns_lan(2, subnet="10.78.0") as hosts:
            display = make_site(hosts[0], base, "display")
            app = make_site(hosts[1], base, "app")
            with open(xvfb.xauthority, "rb") as src, open(display.env["XAUTHORITY"], "wb") as dst:
                dst.write(src.read())
            display.env["DISPLAY"] = xvfb.name
            app_fp = app.xproxy("id").stdout.strip()
            assert app_fp.startswith("SHA256:")
            assert display.xproxy("authorize", app_fp, "--name", "app").returncode == 0
            with open(os.path.join(base, "export.log"), "w") as log:
                export = display.popen([*XPROXY, "export", "--name", "office", "--stats"],
                                       stdout=subprocess.PIPE, stderr=log, text=True)
            ready = read_line(export, "ready")
            yield {"display": display, "app": app, "xvfb": xvfb, "export": export,
                   "ready": ready, "export_log": os.path.join(base, "export.log"), "base": base}
            export.send_signal(signal.SIGTERM)
            export.wait(15)
    finally:
        xvfb.stop()


def test_xdpyinfo_through_run_matches_direct_but_for_name_and_mit_shm(lan):
    app, xvfb = lan["app"], lan["xvfb"]
    proxied = app.xproxy("run", "--to", "@office", "--", "xdpyinfo")
    assert proxied.returncode == 0, proxied.stderr
    direct = subprocess.run(["xdpyinfo"], env=xvfb.env, capture_output=True, text=True, check=True)
    assert "MIT-SHM" in direct.stdout and "MIT-SHM" not in proxied.stdout
    assert normalise_xdpyinfo(proxied.stdout) == normalise_xdpyinfo(direct.stdout)


def test_exit_status_is_the_commands(lan):
    assert lan["app"].xproxy("run", "--to", "@office", "--", "sh", "-c", "exit 7").returncode == 7


def test_xlogo_maps_on_the_display_host(lan):
    app, xvfb = lan["app"], lan["xvfb"]
    logo = app.popen([*XPROXY, "run", "--to", "@office", "--", "xlogo", "-name", "launched"],
                     stderr=subprocess.PIPE)
    try:
        found = subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--classname",
                                "launched"], env=xvfb.env, capture_output=True, text=True,
                               timeout=30, check=False)
        assert found.returncode == 0 and found.stdout.strip()
    finally:
        logo.terminate()
        logo.wait(15)


def test_two_programs_at_once_share_one_link(lan):
    app = lan["app"]
    log_before = Path(lan["export_log"]).read_text().count("link from app host")
    first = app.popen([*XPROXY, "run", "--to", "@office", "--", "sh", "-c",
                       "xdpyinfo >/dev/null && sleep 2 && xdpyinfo >/dev/null"])
    time.sleep(1.0)
    second = app.xproxy("run", "--to", "@office", "--", "xdpyinfo", "-queryExtensions")
    assert first.wait(60) == 0
    assert second.returncode == 0, second.stderr
    links = Path(lan["export_log"]).read_text().count("link from app host") - log_before
    assert links <= 1, "the overlapping runs should share the link the first one made"


def test_an_unauthorized_host_is_refused_with_the_fingerprint_to_authorize(lan, tmp_path):
    app = lan["app"]
    stranger = dict(app.env, XDG_CONFIG_HOME=str(tmp_path / "stranger"),
                    XDG_RUNTIME_DIR=str(tmp_path / "run"))
    os.makedirs(stranger["XDG_RUNTIME_DIR"], mode=0o700)
    fp = app.xproxy("id", env=stranger).stdout.strip()
    result = app.xproxy("run", "--to", "@office", "--", "xdpyinfo", env=stranger)
    assert result.returncode == 1
    assert "not authorized" in result.stderr and f"xproxy authorize {fp}" in result.stderr
    listing = json.loads(app.xproxy("displays", "--json", env=stranger).stdout)
    office = next(d for d in listing if d["name"] == "office")
    assert office["authorized"] is False


def test_a_changed_display_key_is_refused(lan, tmp_path):
    app = lan["app"]
    env = dict(app.env, XDG_RUNTIME_DIR=str(tmp_path / "run"))
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
    known = os.path.join(app.env["XDG_CONFIG_HOME"], "xtransparency", "known_displays")
    assert app.xproxy("run", "--to", "@office", "--", "true").returncode == 0
    original = Path(known).read_text()
    assert "@office SHA256:" in original
    try:
        forged = re.sub(r"@office SHA256:\S+", "@office SHA256:" + "A" * 43, original)
        Path(known).write_text(forged)
        result = app.xproxy("run", "--to", "@office", "--", "xdpyinfo", env=env)
        assert result.returncode == 1
        assert "has changed" in result.stderr
    finally:
        Path(known).write_text(original)


def test_displays_lists_office_as_authorized(lan):
    listing = json.loads(lan["app"].xproxy("displays", "--json").stdout)
    office = next(d for d in listing if d["name"] == "office")
    assert office["authorized"] is True
    assert office["screen"] == "1024x768"
    assert office["addresses"] == [lan["display"].host.ip]
    assert office["fingerprint"] in lan["ready"]


def test_unknown_name_is_a_clear_error(lan):
    result = lan["app"].xproxy("run", "--to", "@nowhere", "--", "true")
    assert result.returncode == 1 and "no display named 'nowhere'" in result.stderr


def test_export_withdrawn_on_exit(lan):
    display, app = lan["display"], lan["app"]
    second = display.popen([*XPROXY, "export", "--name", "second", "--port", "7011"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    read_line(second, "ready")
    names = lambda: {d["name"] for d in json.loads(
        app.xproxy("displays", "--json", "--no-probe").stdout)}
    deadline = time.monotonic() + 10
    while "second" not in names() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "second" in names()
    second.send_signal(signal.SIGTERM)
    assert second.wait(15) == 0
    deadline = time.monotonic() + 10
    while "second" in names() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "second" not in names()
