"""A private sshd on loopback with X11 forwarding, for comparing against `ssh -X` (root only)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass


@dataclass
class PrivateSshd:
    process: subprocess.Popen
    port: int
    userkey: str
    known_hosts: str

    def ssh_argv(self, argv: list[str], port: int | None = None) -> list[str]:
        """`ssh -X root@127.0.0.1 COMMAND` to this sshd (or through a relay on `port`)."""
        return ["ssh", "-X", "-T", "-p", str(port or self.port), "-i", self.userkey,
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "LogLevel=ERROR",
                "root@127.0.0.1", " ".join(argv)]


def start_sshd(work: str) -> PrivateSshd | str:
    """The running sshd, or why there is none."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or not shutil.which("ssh"):
        return "openssh-server/openssh-client are not installed"
    if os.geteuid() != 0:
        return "ssh -X needs a private sshd, which the benchmarks run only as root"
    os.makedirs("/run/sshd", exist_ok=True)
    hostkey, userkey = os.path.join(work, "hostkey"), os.path.join(work, "userkey")
    for key in (hostkey, userkey):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    shutil.copy(userkey + ".pub", os.path.join(work, "authorized_keys"))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    config = os.path.join(work, "sshd_config")
    with open(config, "w") as f:
        f.write(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hostkey}\n"
                f"AuthorizedKeysFile {work}/authorized_keys\nPermitRootLogin yes\n"
                "PasswordAuthentication no\nUsePAM no\nX11Forwarding yes\nX11UseLocalhost yes\n"
                "X11DisplayOffset 300\nXAuthLocation /usr/bin/xauth\nStrictModes no\n"
                f"PidFile {work}/sshd.pid\n")
    process = subprocess.Popen([sshd, "-D", "-e", "-f", config], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return PrivateSshd(process, port, userkey, os.path.join(work, "known_hosts"))
