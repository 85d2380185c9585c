"""Where the app host keeps its link agents, and how a run finds one: standard library only,
so that `xproxy run` can reach a running agent without importing Twisted (see run/client.py).

Each link agent has, in the private runtime directory (0700):

    link-<digest>.ctl    runs ask here for a display of their own (newline JSON)
    link-<digest>.pid    the agent's pid;  .log its log;  .sock.stats.json its counters

(`link-<digest>.sock` is the name the others are made from; no socket is served there: each
X connection of a run's display becomes a channel of the link inside the agent.)

and, when it was found by name (`--to @office`), `name-<digest>.ctl`, a symbolic link to its
.ctl, so a later run of `@office` needs no lookup on the LAN while the agent lives.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

#: DNS-SD service type of an exported display (the link protocol, not raw X11).
LINK_SERVICE_TYPE = "_xproxy._tcp"

#: How long an idle link agent keeps its link (as ssh's ControlPersist): the next program
#: shown on the same display host then starts without a TLS handshake or a process start.
DEFAULT_LINGER = 60.0


class RunError(RuntimeError):
    """A target that cannot be reached or trusted; the message is for the user."""


@dataclass
class LinkTarget:
    host: str
    port: int
    trust_name: str  # how known_displays remembers it: "@office" or "host:port"
    fingerprint: str | None  # advertised, when found through discovery
    label: str


def parse_direct(target: str) -> LinkTarget:
    rest = target[len("xproxy://"):].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RunError(f"{target!r}: expected xproxy://HOST:PORT")
    host = host.strip("[]")
    return LinkTarget(host, int(port), f"{host}:{port}", None, target)


def is_link_target(target: str) -> bool:
    return target.startswith(("@", "xproxy://"))


def runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = os.path.join(base, "xtransparency") if base else f"/tmp/xtransparency-{os.getuid()}"
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


@dataclass(frozen=True)
class LinkMode:
    """How the link agent treats X: round-trip suppression (`verify`: compare every known
    answer with the server's and give the client the server's), and compression."""

    suppress: bool = True
    verify: bool = False
    compress_level: int = 3  # 0: off

    @property
    def key(self) -> str:
        if self == LinkMode():
            return ""  # the default agent keeps issue 6's socket name
        return f"s{int(self.suppress)}v{int(self.verify)}z{self.compress_level}"

    def argv(self) -> list[str]:
        out = ["--compress-level", str(self.compress_level)]
        if not self.suppress:
            out.append("--no-suppress")
        if self.verify:
            out.append("--verify-cache")
        return out


def agent_socket_path(host: str, port: int, trust_name: str, mode: str = "") -> str:
    """One agent per display host and mode (suppression on/off/verify, compression)."""
    key = f"{trust_name}\0{host}\0{port}" + (f"\0{mode}" if mode else "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(runtime_dir(), f"link-{digest}.sock")


def control_path(socket_path: str) -> str:
    """The agent's control socket (from its `agent_socket_path`)."""
    return socket_path[: -len(".sock")] + ".ctl"


def name_alias_path(trust_name: str, mode: str = "") -> str:
    """The symbolic link by which a run of `@NAME` finds the agent of that name."""
    digest = hashlib.sha256(f"{trust_name}\0{mode}".encode()).hexdigest()[:16]
    return os.path.join(runtime_dir(), f"name-{digest}.ctl")
