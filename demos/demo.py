"""`make demo`: the whole story on one machine.

Two hosts: "office", whose screen is an Xvfb, and "laptop", where programs run. As root they
are two network namespaces on a private bridge (else two sets of processes on loopback). Each
runs discoveryd; office exports its display by name; laptop's key is authorized there; laptop
runs `xproxy run --to @office -- xlogo`, and a screenshot of office's screen (an X GetImage
through python-xlib, saved with Pillow) shows it arrived. Then the replicated key-value scene.
Every process started here is stopped before the demo ends, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from testing.xvfb import Xvfb, start_xvfb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "demo-output")
BIN = os.path.dirname(sys.executable)
XPROXY = [sys.executable, "-m", "xproxy.cli"]
LOGO_RGB = (0xFF, 0xB0, 0x00)


def say(text: str) -> None:
    print(text, flush=True)


@dataclass
class Host:
    """A host of the demo: its address, environment and how to run a command there."""

    name: str
    ip: str
    env: dict[str, str]
    prefix: list[str] = field(default_factory=list)  # `ip netns exec NS` or nothing
    procs: list[subprocess.Popen] = field(default_factory=list)

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:  # type: ignore[no-untyped-def]
        kw.setdefault("env", self.env)
        kw.setdefault("cwd", ROOT)
        p = subprocess.Popen([*self.prefix, *argv], **kw)
        self.procs.append(p)
        return p

    def run(self, argv: list[str], check: bool = False,
            **kw: Any) -> subprocess.CompletedProcess:
        kw.setdefault("env", self.env)
        kw.setdefault("cwd", ROOT)
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True,
                              timeout=60, check=check, **kw)

    def stop(self) -> None:
        for p in reversed(self.procs):
            stop(p)


def stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_line(p: subprocess.Popen, prefix: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()  # type: ignore[union-attr]
        if line.startswith(prefix):
            return line.strip()
        if not line and p.poll() is not None:
            break
    raise RuntimeError(f"{' '.join(map(str, p.args))} did not say {prefix!r}")


def screenshot(xvfb: Xvfb, path: str) -> tuple[int, int, int]:
    """Save the display's root window as PNG; returns (width, height, pixels in the logo's
    colour)."""
    from PIL import Image
    from Xlib import X, display

    old = os.environ.get("XAUTHORITY")
    os.environ["XAUTHORITY"] = xvfb.xauthority
    try:
        with contextlib.redirect_stdout(sys.stderr):
            d = display.Display(xvfb.name)
    finally:
        if old is None:
            os.environ.pop("XAUTHORITY", None)
        else:
            os.environ["XAUTHORITY"] = old
    try:
        root = d.screen().root
        geometry = root.get_geometry()
        w, h = geometry.width, geometry.height
        raw = root.get_image(0, 0, w, h, X.ZPixmap, 0xFFFFFFFF)
        image = Image.frombytes("RGB", (w, h), raw.data, "raw", "BGRX")
    finally:
        d.close()
    image.save(path)
    logo = sum(count for count, colour in image.getcolors(w * h) or [] if colour == LOGO_RGB)
    return w, h, logo


def wait_for_window(xvfb: Xvfb, classname: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = subprocess.run(["xdotool", "search", "--onlyvisible", "--classname", classname],
                               env=xvfb.env, capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.split()[0]
        time.sleep(0.1)
    raise TimeoutError(f"no visible {classname} window on {xvfb.name} after {timeout} s")


def make_host(name: str, ip: str, prefix: list[str], workdir: str) -> Host:
    home = os.path.join(workdir, name)
    os.makedirs(os.path.join(home, "run"), mode=0o700)
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(home, "config"),
               XDG_RUNTIME_DIR=os.path.join(home, "run"),
               DISCOVERY_SOCKET=os.path.join(home, "discovery.sock"),
               XAUTHORITY=os.path.join(home, "Xauthority"), PYTHONPATH=ROOT)
    env.pop("DISPLAY", None)
    host = Host(name, ip, env, prefix)
    with open(os.path.join(home, "discoveryd.log"), "w") as log:
        daemon = host.popen([os.path.join(BIN, "discoveryd"), "--socket", env["DISCOVERY_SOCKET"],
                             "--interface", ip, "--host-name", name], stdout=subprocess.PIPE,
                            stderr=log, text=True)
    wait_line(daemon, "ready")
    return host


@contextlib.contextmanager
def two_hosts(workdir: str):  # type: ignore[no-untyped-def]
    """(office, laptop): network namespaces when we are root, else loopback."""
    from testing import netns

    if netns.available() is None and not os.environ.get("XT_DEMO_LOOPBACK"):
        with netns.netns_lan(2, subnet="10.79.0") as hosts:
            office = make_host("office", hosts[0].ip, hosts[0].argv([]), workdir)
            laptop = make_host("laptop", hosts[1].ip, hosts[1].argv([]), workdir)
            try:
                yield office, laptop, (f"two network namespaces on a private bridge "
                                       f"({office.ip} and {laptop.ip})")
            finally:
                laptop.stop()
                office.stop()
    else:
        office = make_host("office", "127.0.0.1", [], workdir)
        laptop = make_host("laptop", "127.0.0.1", [], workdir)
        try:
            yield office, laptop, ("two sets of processes on loopback (run as root for "
                                   "network namespaces)")
        finally:
            laptop.stop()
            office.stop()


def launcher_scene() -> int:
    os.makedirs(OUT_DIR, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="xt-demo-")
    xvfb: Xvfb | None = None
    try:
        xvfb = start_xvfb(screen="640x480x24")
        with two_hosts(workdir) as (office, laptop, how):
            say(f"1. two hosts, office and laptop: {how}; discoveryd runs on each")
            shutil.copy(xvfb.xauthority, office.env["XAUTHORITY"])
            office.env["DISPLAY"] = xvfb.name
            export_log = os.path.join(workdir, "export.log")
            with open(export_log, "w") as log:
                export = office.popen([*XPROXY, "export", "--name", "office", "--stats"],
                                      stdout=subprocess.PIPE, stderr=log, text=True)
            ready = wait_line(export, "ready")
            fields = dict(part.split("=", 1) for part in ready.split()[1:])
            say(f"2. office: xproxy export --name office  (its screen {xvfb.name} is an Xvfb, "
                f"{fields['screen']}; TLS on port {fields['port']}, host key "
                f"{fields['fingerprint'][:20]}...)")
            laptop_fp = laptop.run([*XPROXY, "id"]).stdout.strip()
            refused = laptop.run([*XPROXY, "run", "--to", "@office", "--", "true"])
            say(f"3. laptop is not yet authorized, so office refuses it:\n     "
                f"{refused.stderr.strip()}")
            office.run([*XPROXY, "authorize", laptop_fp, "--name", "laptop"])
            say(f"4. office: xproxy authorize {laptop_fp[:20]}... --name laptop")
            listing = laptop.run([*XPROXY, "displays"]).stdout.strip()
            say("5. laptop: xproxy displays\n     " + listing.replace("\n", "\n     "))
            logo = laptop.popen(
                [*XPROXY, "run", "--to", "@office", "--", "xlogo", "-name", "xtdemo",
                 "-geometry", "300x300+170+90", "-render", "-fg", "#ffb000", "-bg", "#183048"],
                stderr=subprocess.DEVNULL)
            window = wait_for_window(xvfb, "xtdemo")
            time.sleep(0.5)  # let xlogo finish drawing after the map
            say(f"6. laptop: xproxy run --to @office -- xlogo   -> window {window} is mapped "
                f"on office's screen")
            path = os.path.join(OUT_DIR, "xlogo-on-office.png")
            w, h, lit = screenshot(xvfb, path)
            say(f"7. screenshot of office's screen ({w}x{h}; {lit} pixels of the logo's "
                f"amber): {path}")
            stop(logo)
            time.sleep(0.3)
            stop(export)
            with open(export_log) as log:
                summary = [line.strip() for line in log if line.startswith("xproxy: ")]
            say("8. traffic through office's export:")
            for line in summary:
                say("     " + line.removeprefix("xproxy: "))
            return 0 if lit > 0 else 1
    finally:
        if xvfb is not None:
            xvfb.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    for program in ("Xvfb", "xlogo", "xdotool", "xauth"):
        if shutil.which(program) is None:
            say(f"{program} is missing: run `make install` (as root) or "
                "`sudo apt-get install xvfb x11-apps xdotool xauth`")
            return 1
    say("== xproxy: run an X program on another host's screen")
    status = launcher_scene()
    from demos.kv_scene import run_scene

    say("")
    say("== replicaclient: one key-value service on five replicas, then one restarted empty")
    return status or run_scene()


if __name__ == "__main__":
    sys.exit(main())
