"""Several "hosts" on one machine: network namespaces on a private bridge (needs root and ``ip``).

    with netns_lan(3) as hosts:
        p = hosts[0].popen(["discoveryd", "--interface", hosts[0].ip, ...])
        hosts[1].run(["ping", "-c1", hosts[0].ip])

Each host is a namespace with ``lo`` and ``eth0`` (``10.77.0.<i+1>/24`` by default), the
other end of its veth pair on a bridge that this call creates and nothing else uses, so
traffic never leaves the machine. Names carry this process's pid and a random tag: runs in
parallel do not clash, and leftovers of dead runs (a killed pytest) are removed on the next
start. Processes started with ``popen`` are killed, and everything deleted, on exit.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NS_PREFIX = "xtns"
BRIDGE_PREFIX = "xtbr"
_NS_RE = re.compile(rf"^{NS_PREFIX}-(\d+)-[0-9a-f]+-h\d+$")


def available() -> str | None:
    """None when namespaces can be used here, else the reason (for ``pytest.skip``)."""
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root, as CI does)"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    return None


def _ip(*args: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return r


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_ns(ns: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                          check=False).stdout.split()
    for p in pids:
        try:
            os.kill(int(p), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def cleanup_leftovers() -> None:
    """Remove namespaces and bridges that runs which are no longer alive left behind."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             check=False).stdout
    for line in listing.splitlines():
        ns = line.split()[0] if line.split() else ""
        m = _NS_RE.match(ns)
        if m and not _alive(int(m.group(1))):
            _delete_ns(ns)
    for dev in Path("/sys/class/net").glob(f"{BRIDGE_PREFIX}*"):
        try:
            alias = (dev / "ifalias").read_text().strip()
        except OSError:
            continue
        m = re.match(rf"^{NS_PREFIX}-(\d+)$", alias)
        if m and not _alive(int(m.group(1))):
            subprocess.run(["ip", "link", "del", dev.name], capture_output=True, check=False)


@dataclass
class Host:
    """One namespace on the LAN."""

    ns: str
    ip: str
    index: int
    procs: list[subprocess.Popen] = field(default_factory=list)

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start a process inside this host; it is killed when the LAN is torn down."""
        p = subprocess.Popen(self.argv(argv), **kw)
        self.procs.append(p)
        return p

    def run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("timeout", 30)
        kw.setdefault("check", False)
        return subprocess.run(self.argv(argv), **kw)  # noqa: PLW1510 (in kw)


@contextmanager
def netns_lan(n_hosts: int, subnet: str = "10.77.0", prefix_len: int = 24) -> Iterator[list[Host]]:
    """``n_hosts`` namespaces on a fresh bridge, ``subnet.1`` .. ``subnet.n``."""
    reason = available()
    if reason:
        raise RuntimeError(reason)
    if not 1 <= n_hosts <= 250:
        raise ValueError("n_hosts must be 1..250")
    cleanup_leftovers()
    tag = secrets.token_hex(3)
    pid = os.getpid()
    bridge = f"{BRIDGE_PREFIX}{tag}"  # interface names are limited to 15 characters
    hosts: list[Host] = []
    try:
        _ip("link", "add", "name", bridge, "type", "bridge")
        _ip("link", "set", "dev", bridge, "alias", f"{NS_PREFIX}-{pid}")
        _ip("link", "set", "dev", bridge, "up")
        for i in range(n_hosts):
            ns = f"{NS_PREFIX}-{pid}-{tag}-h{i}"
            outside = f"xtv{tag}{i}"
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            host = Host(ns, f"{subnet}.{i + 1}", i)
            hosts.append(host)
            _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", outside, "master", bridge)
            _ip("link", "set", outside, "up")
            _ip("link", "set", "lo", "up", ns=ns)
            _ip("addr", "add", f"{host.ip}/{prefix_len}", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
        yield hosts
    finally:
        for host in hosts:
            for p in host.procs:
                if p.poll() is None:
                    p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            _delete_ns(host.ns)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
