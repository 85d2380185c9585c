"""A private Xvfb with MIT-MAGIC-COOKIE-1 authentication, for demos, tests and benchmarks."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field


@dataclass
class Xvfb:
    """One running Xvfb; `env` gives DISPLAY and XAUTHORITY for its clients."""

    display: int
    cookie: bytes
    xauthority: str
    process: subprocess.Popen
    tmpdir: str
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f":{self.display}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DISPLAY"] = self.name
        env["XAUTHORITY"] = self.xauthority
        env.update(self.extra_env)
        return env

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def start_xvfb(
    screen: str = "1024x768x24", tcp: bool = False, extra_args: tuple[str, ...] = (),
    display: int | None = None,
) -> Xvfb:
    """Start Xvfb with a fresh cookie, on `display` or else a free display number (the
    server learns it itself, -displayfd); the client Xauthority names exactly that display.
    It is ready when this returns."""
    if shutil.which("Xvfb") is None:
        raise FileNotFoundError("Xvfb is not installed (make install brings it: apt-get install xvfb)")
    tmpdir = tempfile.mkdtemp(prefix="xt-xvfb-")
    cookie = secrets.token_bytes(16)
    server_auth = os.path.join(tmpdir, "server.auth")
    client_auth = os.path.join(tmpdir, "Xauthority")
    subprocess.run(
        ["xauth", "-f", server_auth, "add", ":0", "MIT-MAGIC-COOKIE-1", cookie.hex()],
        check=True, capture_output=True,
    )
    read_fd, write_fd = os.pipe()
    args = ["Xvfb"] if display is None else ["Xvfb", f":{display}"]
    args += ["-displayfd", str(write_fd), "-screen", "0", screen, "-auth", server_auth,
            "-noreset"]
    args += ["-listen", "tcp"] if tcp else ["-nolisten", "tcp"]
    args += list(extra_args)
    process = subprocess.Popen(
        args, pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    os.close(write_fd)
    data = b""
    with os.fdopen(read_fd, "rb") as reader:
        while not data.endswith(b"\n"):
            chunk = reader.read(1)
            if not chunk:
                break
            data += chunk
    if not data.strip():
        process.kill()
        raise RuntimeError("Xvfb did not report a display number")
    display = int(data.strip())  # (with a display given, said once it is ready)
    for name in (f":{display}", f"{os.uname().nodename}/unix:{display}"):
        subprocess.run(
            ["xauth", "-f", client_auth, "add", name, "MIT-MAGIC-COOKIE-1", cookie.hex()],
            check=True, capture_output=True,
        )
    return Xvfb(display, cookie, client_auth, process, tmpdir)
