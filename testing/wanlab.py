"""A display host and an app host on loopback with a slow link between them, for the WAN tests
and benchmarks/wan.py: a private Xvfb (TCP too), `xproxy export` on 127.0.0.1, two separate
identities (config, runtime and cache directories), and delaying relays (testing.delayrelay)
in front of the export and of the X server's TCP port.

    with WanLab(delay_ms=10) as lab:
        lab.run(["xterm", "-e", "true"])               # xproxy run through the slow link
        lab.run(["xlogo"], "--no-suppress")            # the same link, no suppression
        subprocess.run(["xdpyinfo"], env=lab.plain_env())  # plain X over TCP, same delay
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Self

from testing.xvfb import Xvfb, start_xvfb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XPROXY = [sys.executable, "-m", "xproxy.cli"]


class Relay:
    """A delayrelay process; `stats()` reads what crossed it."""

    def __init__(self, target: str, delay_ms: float, work: str, name: str,
                 listen: str = "127.0.0.1:0", rate_kbit: float = 0) -> None:
        self.stats_path = os.path.join(work, f"{name}.stats.json")
        argv = [sys.executable, "-m", "testing.delayrelay", "--listen", listen, "--to", target,
                "--delay-ms", str(delay_ms), "--stats", self.stats_path]
        if rate_kbit:
            argv += ["--rate-kbit", str(rate_kbit)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
        line = self.process.stdout.readline().strip()  # type: ignore[union-attr]
        if not line.startswith("ready port="):
            self.stop()
            raise RuntimeError(f"delayrelay did not start: {line!r}")
        self.port = int(line.partition("=")[2])

    def stats(self) -> dict[str, int]:
        time.sleep(0.12)  # the relay rewrites its file within 50 ms of a change
        try:
            with open(self.stats_path) as f:
                return json.load(f)  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {"up": 0, "down": 0, "connections": 0, "turns": 0}

    def drop(self) -> None:
        """Cut every connection through the relay at once (a link loss)."""
        self.process.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class WanLab:
    def __init__(self, delay_ms: float = 0, rate_kbit: float = 0,
                 export_args: tuple[str, ...] = ()) -> None:
        self.delay_ms = delay_ms
        self.rate_kbit = rate_kbit
        self.export_args = export_args
        self.work = tempfile.mkdtemp(prefix="xt-wan-")
        self.xvfb: Xvfb | None = None
        self.export: subprocess.Popen | None = None
        self.relays: list[Relay] = []

    def _site(self, name: str) -> dict[str, str]:
        d = os.path.join(self.work, name)
        for sub in ("config", "run", "cache"):
            os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
        env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(d, "config"),
                   XDG_RUNTIME_DIR=os.path.join(d, "run"), XDG_CACHE_HOME=os.path.join(d, "cache"),
                   PYTHONPATH=ROOT)
        env.pop("DISPLAY", None)
        return env

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.xvfb = start_xvfb(tcp=True)
        self.display_env = dict(self._site("display"), DISPLAY=self.xvfb.name,
                                XAUTHORITY=self.xvfb.xauthority)
        self.app_env = self._site("app")
        fp = json.loads(subprocess.run([*XPROXY, "id", "--json"], env=self.app_env, cwd=ROOT,
                                       capture_output=True, text=True, check=True).stdout)
        subprocess.run([*XPROXY, "authorize", fp["fingerprint"], "--name", "app"],
                       env=self.display_env, cwd=ROOT, capture_output=True, check=True)
        self.export_log = os.path.join(self.work, "export.log")
        with open(self.export_log, "w") as log:
            self.export = subprocess.Popen(
                [*XPROXY, "export", self.xvfb.name, "--name", "lab", "--port", "0",
                 "--interface", "127.0.0.1", "--no-advertise", *self.export_args],
                env=self.display_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        line = self.export.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("ready"):
            raise RuntimeError(f"export did not start: {line!r}; see {self.export_log}")
        self.export_port = int(line.split("port=")[1].split()[0])
        self.link_relay = self.relay(f"127.0.0.1:{self.export_port}", "link")

    def relay(self, target: str, name: str, listen: str = "127.0.0.1:0",
              delay_ms: float | None = None) -> Relay:
        r = Relay(target, self.delay_ms if delay_ms is None else delay_ms, self.work, name, listen,
                  self.rate_kbit)
        self.relays.append(r)
        return r

    @property
    def target(self) -> str:
        return f"xproxy://127.0.0.1:{self.link_relay.port}"

    def run_argv(self, command: list[str], *flags: str, via: Relay | None = None) -> list[str]:
        target = f"xproxy://127.0.0.1:{via.port}" if via is not None else self.target
        return [*XPROXY, "run", "--to", target, *flags, "--", *command]

    def run(self, command: list[str], *flags: str, timeout: float = 120, via: Relay | None = None,
            **kw: Any) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("check", False)
        argv = self.run_argv(command, *flags, via=via)
        return subprocess.run(argv, env=self.app_env, cwd=ROOT, timeout=timeout,  # noqa: PLW1510 (in kw)
                              **kw)

    def plain_env(self, delay_ms: float | None = None) -> dict[str, str]:
        """DISPLAY=127.0.0.1:N with the X server's TCP port behind a delaying relay."""
        return self.plain(delay_ms)[1]

    def plain(self, delay_ms: float | None = None) -> tuple[Relay, dict[str, str]]:
        key = self.delay_ms if delay_ms is None else delay_ms
        if not hasattr(self, "_plains"):
            self._plains: dict[float, tuple[Relay, dict[str, str]]] = {}
        if key not in self._plains:
            assert self.xvfb is not None
            for number in range(200, 400):
                try:
                    relay = self.relay(f"127.0.0.1:{6000 + self.xvfb.display}", f"plain{number}",
                                       listen=f"127.0.0.1:{6000 + number}", delay_ms=key)
                    break
                except RuntimeError:
                    continue
            else:
                raise RuntimeError("no free TCP display number for the plain relay")
            auth = os.path.join(self.work, f"plain{number}.auth")
            shutil.copy(self.xvfb.xauthority, auth)
            subprocess.run(["xauth", "-f", auth, "add", f"127.0.0.1:{number}",
                            "MIT-MAGIC-COOKIE-1", self.xvfb.cookie.hex()], check=True,
                           capture_output=True)
            self._plains[key] = (relay, dict(self.app_env, DISPLAY=f"127.0.0.1:{number}",
                                             XAUTHORITY=auth))
        return self._plains[key]

    @property
    def plain_relay(self) -> Relay:
        return self.plain()[0]

    def agent_stats(self, *flags: str, via: Relay | None = None) -> dict[str, Any]:
        """The counters of the link agent that `run` with these flags uses."""
        port = (via or self.link_relay).port
        from xproxy.run.paths import LinkMode

        mode = LinkMode(suppress="--no-suppress" not in flags, verify="--verify-cache" in flags,
                        compress_level=int(flags[flags.index("--compress-level") + 1])
                        if "--compress-level" in flags else 3)
        code = (f"import os; os.environ['XDG_RUNTIME_DIR']={self.app_env['XDG_RUNTIME_DIR']!r};"
                "from xproxy.run.paths import agent_socket_path;"
                f"print(agent_socket_path('127.0.0.1', {port}, "
                f"'127.0.0.1:{port}', {mode.key!r}))")
        path = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=ROOT, check=True).stdout.strip()
        deadline = time.monotonic() + 5
        while True:
            try:
                with open(path + ".stats.json") as f:
                    return json.load(f)  # type: ignore[no-any-return]
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    return {}
                time.sleep(0.05)

    def stop_agents(self) -> None:
        """Stop every link agent of the app host (their sockets are in its runtime dir)."""
        import glob

        run = os.path.join(self.app_env["XDG_RUNTIME_DIR"], "xtransparency")
        for pidfile in glob.glob(os.path.join(run, "*.pid")):
            try:
                with open(pidfile) as f:
                    os.kill(int(f.read().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass

    def stop(self) -> None:
        self.stop_agents()
        for r in self.relays:
            r.stop()
        if self.export is not None and self.export.poll() is None:
            self.export.terminate()
            try:
                self.export.wait(10)
            except subprocess.TimeoutExpired:
                self.export.kill()
                self.export.wait()
        if self.xvfb is not None:
            self.xvfb.stop()
        if not os.environ.get("WANLAB_KEEP"):
            shutil.rmtree(self.work, ignore_errors=True)
