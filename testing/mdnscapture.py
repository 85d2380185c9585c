"""Record the mDNS packets one test host sees that mention a name, for tests that check what
went on the wire (pacing, goodbyes, defences).

    python -m testing.mdnscapture IP NAME      # in the host's namespace

Joins 224.0.0.251 on IP's interface (sharing port 5353 with any daemon there), prints
``listening``, and when its standard input closes (or after 90 s) prints one JSON list:
``[time, source, is_response, [[type, name, ttl, port, unique], ...]]`` for every packet with
a record whose name or PTR target contains NAME (lower case); a query's known answers count as
its records. `capture` starts it in a host and waits for ``listening``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from zeroconf import DNSIncoming

LIMIT = 90.0  # seconds: a capture whose test died does not outlive it by much


def capture(host: Any, name: str) -> subprocess.Popen[str]:
    """Start a capture of `name` in `host` (a testing.netns.Host); close its stdin
    (`communicate("")`) to read what it saw."""
    p = host.popen([sys.executable, "-m", "testing.mdnscapture", host.ip, name],
                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "listening"
    return p


def main(ip: str, name: str) -> None:
    name = name.lower()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("", 5353))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 socket.inet_aton("224.0.0.251") + socket.inet_aton(ip))
    s.settimeout(0.2)
    seen: list[list[Any]] = []
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    print("listening", flush=True)
    end = time.monotonic() + LIMIT
    while not done.is_set() and time.monotonic() < end:
        try:
            data, (addr, _) = s.recvfrom(9000)
        except TimeoutError:
            continue
        msg = DNSIncoming(data)
        recs = [[r.type, r.name, r.ttl, getattr(r, "port", None), r.unique]
                for r in msg.answers()
                if name in r.name.lower() or name in getattr(r, "alias", "").lower()]
        if recs:
            seen.append([time.monotonic(), addr, msg.is_response(), recs])
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
