"""`make demo`: the main job end to end on a display it starts itself.

An Xvfb plays the remote display; `xproxy serve` stands in front of it as another display
with its own cookie; xlogo runs through the proxy; a screenshot of the real display (an X
GetImage through python-xlib, saved with Pillow) shows it arrived; the proxy's traffic
summary says what crossed. Then the replicated key-value scene. Every process started here is
stopped before the demo ends, whatever happens.
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

from xproxy.xvfb import Xvfb, start_xvfb

OUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo-output")


def say(text: str) -> None:
    print(text, flush=True)


LOGO_RGB = (0xFF, 0xB0, 0x00)


def screenshot(xvfb: Xvfb, path: str) -> tuple[int, int, int]:
    """Save the real display's root window as PNG; returns (width, height, pixels in the
    logo's colour)."""
    from PIL import Image
    from Xlib import X, display

    with _env(XAUTHORITY=xvfb.xauthority), contextlib.redirect_stdout(sys.stderr):
        d = display.Display(xvfb.name)
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


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_window(xvfb: Xvfb, classname: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--classname", classname],
            env=xvfb.env, capture_output=True, text=True,
        )
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.split()[0]
        time.sleep(0.1)
    raise TimeoutError(f"no visible {classname} window on {xvfb.name} after {timeout} s")


def relay_scene() -> int:
    os.makedirs(OUT_DIR, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="xt-demo-")
    xvfb: Xvfb | None = None
    proxy: subprocess.Popen | None = None
    logo: subprocess.Popen | None = None
    try:
        xvfb = start_xvfb(screen="640x480x24")
        say(f"1. Xvfb is the remote display {xvfb.name} (MIT-MAGIC-COOKIE-1 required)")
        xauthority = os.path.join(workdir, "Xauthority")
        shutil.copy(xvfb.xauthority, xauthority)
        env = dict(xvfb.env, XAUTHORITY=xauthority)
        proxy_log = os.path.join(workdir, "xproxy.log")
        with open(proxy_log, "w") as log:
            proxy = subprocess.Popen(
                [sys.executable, "-m", "xproxy.cli", "serve", "--to", xvfb.name],
                env=env, stdout=subprocess.PIPE, stderr=log, text=True,
            )
        ready = proxy.stdout.readline().strip()  # type: ignore[union-attr]
        if not ready.startswith("ready DISPLAY="):
            say("xproxy did not start:\n" + open(proxy_log).read())
            return 1
        proxied = ready.partition("=")[2]
        say(f"2. xproxy serve --to {xvfb.name}: listening as {proxied} with a fresh cookie of "
            "its own in XAUTHORITY; it substitutes the real one upstream")
        app_env = dict(env, DISPLAY=proxied)
        logo = subprocess.Popen(
            ["xlogo", "-name", "xtdemo", "-geometry", "300x300+170+90", "-render",
             "-fg", "#ffb000", "-bg", "#183048"],
            env=app_env, stderr=subprocess.DEVNULL,
        )
        window = wait_for_window(xvfb, "xtdemo")
        time.sleep(0.5)  # let xlogo finish drawing after the map
        say(f"3. xlogo ran with DISPLAY={proxied}; its window {window} is mapped on {xvfb.name}")
        path = os.path.join(OUT_DIR, "xlogo-through-xproxy.png")
        w, h, lit = screenshot(xvfb, path)
        say(f"4. screenshot of the real display ({w}x{h}; {lit} pixels of the logo's amber): {path}")
        stop(logo)
        time.sleep(0.2)
        stop(proxy)
        summary = [line.split("] ", 1)[1] for line in open(proxy_log)
                   if "] client" in line or "stopped:" in line]
        say("5. traffic through the proxy:")
        for line in summary:
            say("     " + line.strip())
        return 0 if lit > 0 else 1
    finally:
        stop(logo)
        stop(proxy)
        if xvfb is not None:
            xvfb.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    for program in ("Xvfb", "xlogo", "xdotool", "xauth"):
        if shutil.which(program) is None:
            say(f"{program} is missing: run `make install` (as root) or "
                "`sudo apt-get install xvfb x11-apps xdotool xauth`")
            return 1
    say("== xproxy: an X program shown through the proxy")
    status = relay_scene()
    try:
        from demos.kv_scene import run_scene
    except ImportError:
        return status
    say("")
    say("== replicaclient: one key-value service on five replicas")
    return status or run_scene()


if __name__ == "__main__":
    sys.exit(main())
