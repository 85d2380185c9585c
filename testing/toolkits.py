"""The GTK, Qt and Firefox programs the WAN benchmarks start (Debian packages: gtk-3-examples,
gtk-4-examples, zenity, mousepad, featherpad, firefox-esr), how to run each on X alone (no
accessibility bus, no Wayland), the class of the window that shows it is up, and how to find
that window and stop a program's whole process group."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

#: program -> (argv, given a private directory for its state; its window's WM_CLASS, a
#: regular expression as `xdotool search --class` takes it, case-insensitive)
PROGRAMS: dict[str, tuple[Callable[[str], list[str]], str]] = {
    "gtk3-demo": (lambda d: ["gtk3-demo"], "gtk3-demo"),
    "gtk3-widget-factory": (lambda d: ["gtk3-widget-factory"], "gtk3-widget-factory"),
    "zenity": (lambda d: ["zenity", "--entry", "--text", "name"], "zenity"),
    "mousepad": (lambda d: ["mousepad", "--disable-server"], "mousepad"),
    "featherpad": (lambda d: ["featherpad", "--standalone"], "featherpad"),
    "firefox-esr": (lambda d: ["firefox-esr", "--no-remote", "--profile",
                               os.path.join(d, "firefox-profile"), "about:blank"], "firefox"),
    "gtk4-widget-factory": (lambda d: ["gtk4-widget-factory"], "gtk4-widget-factory"),
}

#: X11 only, no accessibility bus (it would wait for D-Bus), no GL on a virtual screen.
ENV = {"NO_AT_BRIDGE": "1", "GDK_BACKEND": "x11", "QT_QPA_PLATFORM": "xcb",
       "GTK_A11Y": "none", "MOZ_ENABLE_WAYLAND": "0"}


def installed(program: str) -> bool:
    return shutil.which(PROGRAMS[program][0]("/")[0]) is not None


def argv(program: str, state_dir: str) -> list[str]:
    """The command line, with its state (Firefox's profile) under `state_dir`."""
    os.makedirs(os.path.join(state_dir, "firefox-profile"), exist_ok=True)
    return PROGRAMS[program][0](state_dir)


def environ(base: dict[str, str], home: str) -> dict[str, str]:
    """`base` with the toolkit settings and a private HOME and XDG directories under `home`
    (so no program finds a session bus or another run's settings)."""
    env = dict(base, **ENV, HOME=home)
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"),
                     ("XDG_CACHE_HOME", "cache")):
        if var not in base:
            env[var] = os.path.join(home, sub)
            os.makedirs(env[var], exist_ok=True)
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    return env


def window_up(program: str, display_env: dict[str, str]) -> bool:
    """Whether a viewable window of `program` is on the display."""
    return subprocess.run(["xdotool", "search", "--onlyvisible", "--class", PROGRAMS[program][1]],
                          env=display_env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False).returncode == 0


def wait_window(program: str, display_env: dict[str, str], start: float,
                timeout: float = 120, alive: subprocess.Popen | None = None) -> float:
    """Seconds from `start` (time.monotonic) until the window is viewable; looks every
    20 ms (xdotool's own --sync looks every 0.5 s)."""
    deadline = start + timeout
    while not window_up(program, display_env):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {program} window in {timeout:g} s")
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"{program} exited ({alive.returncode}) before its window showed")
        time.sleep(0.02)
    return time.monotonic() - start


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM,
               timeout: float = 30) -> None:
    """Stop a process started with start_new_session=True and everything it started."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    end = time.monotonic() + 5  # what it started may outlive it a moment
    while time.monotonic() < end:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
