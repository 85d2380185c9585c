"""Display names as in DISPLAY: `:N`, `unix:N`, `host:N`, `host:N.S`, `host/unix:N`, `[::1]:N`."""

from __future__ import annotations

from dataclasses import dataclass

X_TCP_PORT = 6000
UNIX_SOCKET_DIR = "/tmp/.X11-unix"


class DisplayNameError(ValueError):
    """A display name that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class DisplayName:
    """A parsed display name; `host` is empty for a local (unix socket) display."""

    host: str
    number: int
    screen: int = 0
    protocol: str = ""

    @property
    def is_local(self) -> bool:
        return self.host in ("", "unix") or self.protocol == "unix"

    @property
    def socket_path(self) -> str:
        return f"{UNIX_SOCKET_DIR}/X{self.number}"

    @property
    def tcp_port(self) -> int:
        return X_TCP_PORT + self.number

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.protocol:
            host = f"{host}/{self.protocol}"
        suffix = f".{self.screen}" if self.screen else ""
        return f"{host}:{self.number}{suffix}"


def parse_display(name: str) -> DisplayName:
    """Parse a DISPLAY-style name the way Xlib/xcb do (without DECnet's `::`)."""
    text = name.strip()
    if not text:
        raise DisplayNameError("empty display name")
    colon = text.rfind(":")
    if colon < 0:
        raise DisplayNameError(f"{name!r}: a display name needs ':NUMBER'")
    host, rest = text[:colon], text[colon + 1 :]
    protocol = ""
    if "/" in host:
        host, protocol = host.split("/", 1)
        if protocol not in ("unix", "tcp", "inet", "inet6", "local"):
            raise DisplayNameError(f"{name!r}: unknown protocol {protocol!r}")
        if protocol == "local":
            protocol = "unix"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number_text, _, screen_text = rest.partition(".")
    if not number_text.isdigit():
        raise DisplayNameError(f"{name!r}: display number must be a non-negative integer")
    if screen_text and not screen_text.isdigit():
        raise DisplayNameError(f"{name!r}: screen number must be a non-negative integer")
    number = int(number_text)
    if number > 59535:
        raise DisplayNameError(f"{name!r}: display number too large for a TCP port")
    return DisplayName(host, number, int(screen_text or 0), protocol)
