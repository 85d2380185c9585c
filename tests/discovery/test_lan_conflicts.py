"""Name conflicts and hostile traffic on a LAN of network namespaces, with real daemons.

Hostile packets are built with python-zeroconf's ``DNSOutgoing`` and sent from a plain UDP
socket in a namespace where no daemon runs; what daemons put on the wire is read back with a
plain socket and ``DNSIncoming``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testing import mdnscapture, netns

from .conftest import DISCOVERY, DISCOVERYD, wait_ready

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))

# Sends mDNS responses from <ip>:5353: stdin holds {"packets": [[record, ...], ...], "gap": s}
# with records ["ptr", type, instance, ttl], ["srv", instance, port, server, ttl],
# ["txt", instance, {key: value}, ttl], ["a", server, address, ttl]; SRV/TXT/A carry the
# cache-flush bit.
_SEND = r"""
import json, socket, sys, time
from zeroconf import DNSAddress, DNSOutgoing, DNSPointer, DNSService, DNSText
ip = sys.argv[1]
spec = json.loads(sys.stdin.read())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind((ip, 5353))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
unique = 1 | 0x8000
for packet in spec["packets"]:
    out = DNSOutgoing(0x8400)
    for r in packet:
        if r[0] == "ptr":
            rec = DNSPointer(r[1], 12, 1, r[3], r[2])
        elif r[0] == "srv":
            rec = DNSService(r[1], 33, unique, r[4], 0, 0, r[2], r[3])
        elif r[0] == "txt":
            text = b"".join(bytes([len(e)]) + e for e in (f"{k}={v}".encode() for k, v in r[2].items()))
            rec = DNSText(r[1], 16, unique, r[3], text)
        else:
            rec = DNSAddress(r[1], 1, unique, r[3], socket.inet_aton(r[2]))
        out.add_answer_at_time(rec, 0)
    for data in out.packets():
        s.sendto(data, ("224.0.0.251", 5353))
    time.sleep(spec.get("gap", 0.002))
print("sent", flush=True)
"""

class Lan:
    """Hosts on a bridge; daemons started on them on demand, each with its log file."""

    def __init__(self, hosts: list[netns.Host], base: Path) -> None:
        self.hosts = hosts
        self.base = base
        self.daemons: list[subprocess.Popen] = []

    def daemon(self, host: netns.Host, name: str, label: str, *args: str) -> str:
        sock = str(self.base / f"{label}.sock")
        log = self.base / f"{label}.log"
        with open(log, "wb") as err:
            p = host.popen([DISCOVERYD, "--socket", sock, "--interface", host.ip, "--host-name", name, *args],
                           stdout=subprocess.PIPE, stderr=err)
        p.stderr = open(log, "rb")  # noqa: SIM115 - wait_ready reads it; closed with the process
        wait_ready(p)
        self.daemons.append(p)
        return sock

    def log(self, label: str) -> str:
        return (self.base / f"{label}.log").read_text(errors="replace")

    def send(self, host: netns.Host, packets: list[list[list[Any]]], gap: float = 0.002) -> None:
        r = host.run([sys.executable, "-c", _SEND, host.ip], input=json.dumps({"packets": packets, "gap": gap}),
                     text=True, timeout=120)
        assert r.returncode == 0 and "sent" in r.stdout, r.stderr

    def capture(self, host: netns.Host, name: str) -> subprocess.Popen:
        return mdnscapture.capture(host, name)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    with netns.netns_lan(3) as hosts:
        world = Lan(hosts, tmp_path)
        yield world
        for p in world.daemons:
            p.terminate()
        for p in world.daemons:
            p.wait(10)


def lookup(host: netns.Host, sock: str, stype: str, wait: float | None = None) -> list[dict[str, Any]]:
    args = [DISCOVERY, "--socket", sock, "lookup", stype, "--json"]
    if wait is not None:
        args[4:4] = ["--wait", str(wait)]
    r = host.run(args, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def host_name(host: netns.Host, sock: str) -> str:
    """The host name a daemon says it uses, in ``hello``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(10)
        c.connect(sock)  # (a unix socket's path reaches into the namespace)
        c.sendall(b'{"id": 1, "op": "hello"}\n')
        return json.loads(c.makefile("rb").readline())["host"]


def listed_host_name(host: netns.Host, sock: str) -> str:
    r = host.run([DISCOVERY, "--socket", sock, "list", "--json"], text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["host"]


def register(host: netns.Host, sock: str, name: str, stype: str, port: int) -> subprocess.Popen:
    p = host.popen([DISCOVERY, "--socket", sock, "register", "--name", name, "--type", stype, "--port", str(port),
                    "--json", "--", "sleep", "120"], stdout=subprocess.PIPE)
    assert p.stdout is not None and b"registered" in p.stdout.readline()
    return p


def until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something true; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: last seen {got!r}"
        time.sleep(0.2)


def test_two_hosts_with_one_name_see_each_other_and_one_is_renamed(lan: Lan, stype: str) -> None:
    """Cloned machines: both daemons say ``--host-name twin``. One of them renames itself
    ``twin-2`` (logged, and shown by ``hello``/``list``); each sees the other's service, and
    a third host sees both under different host names."""
    h0, h1, h2 = lan.hosts
    s0 = lan.daemon(h0, "twin", "d0")
    s1 = lan.daemon(h1, "twin", "d1")
    s2 = lan.daemon(h2, "watcher", "d2")
    time.sleep(1.5)  # both start-up probes are over (nobody answered): two running hosts clash
    register(h0, s0, "a", stype, 7000)
    register(h1, s1, "b", stype, 7001)

    names = until("one of the twins renamed", lambda: sorted([host_name(h0, s0), host_name(h1, s1)]) == ["twin", "twin-2"]
                  and [host_name(h0, s0), host_name(h1, s1)])
    assert [listed_host_name(h0, s0), listed_host_name(h1, s1)] == names
    renamed = lan.log("d0" if names[0] == "twin-2" else "d1")
    assert "host name twin.local. is in use on the network" in renamed and "now twin-2.local." in renamed
    expect = {"a": (names[0], h0.ip, 7000), "b": (names[1], h1.ip, 7001)}

    def seen(host: netns.Host, sock: str, wanted: set[str]) -> bool:
        got = {s["name"]: (s["host"], s["addresses"][0] if s["addresses"] else None, s["port"])
               for s in lookup(host, sock, stype, wait=1.0)}
        return all(got.get(n) == expect[n] for n in wanted) and got

    until("h0 sees h1's service", lambda: seen(h0, s0, {"a", "b"}))
    until("h1 sees h0's service", lambda: seen(h1, s1, {"a", "b"}))
    until("h2 sees both, under their own host names", lambda: seen(h2, s2, {"a", "b"}))


def test_a_host_started_with_a_name_in_use_takes_another(lan: Lan, stype: str) -> None:
    """A clone that boots into a LAN where its name is in use probes the name first (RFC 6762
    §8.1), hears the holder and renames itself; the holder keeps its name (although the §8.2
    tie-break between two running hosts would have given it to the clone's later address)."""
    h0, h1, h2 = lan.hosts
    s0 = lan.daemon(h0, "twin", "d0")
    s2 = lan.daemon(h2, "watcher", "d2")
    register(h0, s0, "a", stype, 7000)
    until("h2 sees a", lambda: [s["host"] for s in lookup(h2, s2, stype, wait=1.0)] == ["twin"])
    time.sleep(2.5)  # probing over: h0 answers for its name
    s1 = lan.daemon(h1, "twin", "d1")
    until("the newcomer renamed", lambda: host_name(h1, s1) == "twin-2")
    register(h1, s1, "b", stype, 7001)
    until("h2 sees both", lambda: sorted((s["name"], s["host"], s["addresses"]) for s in lookup(h2, s2, stype))
          == [("a", "twin", [h0.ip]), ("b", "twin-2", [h1.ip])])
    assert host_name(h0, s0) == "twin" and "is in use" not in lan.log("d0")


def test_own_echo_is_told_by_packet_not_by_host_name(lan: Lan, stype: str) -> None:
    """Two daemons on one host under one name (same address, same port 5353): no conflict, no
    rename, and each lists the other's service, which a host-name echo rule would hide."""
    h0 = lan.hosts[0]
    s0 = lan.daemon(h0, "same", "d0")
    s1 = lan.daemon(h0, "same", "d1")
    register(h0, s0, "a", stype, 7000)
    register(h0, s1, "b", stype, 7001)
    for sock, other in ((s0, "b"), (s1, "a")):
        until(f"{other} seen", lambda sock=sock, other=other: [(s["name"], s["host"], s["source"])
              for s in lookup(h0, sock, stype, wait=1.0) if s["name"] == other] == [(other, "same", "remote")])
    assert host_name(h0, s0) == host_name(h0, s1) == "same"


def test_a_flood_of_instances_is_capped_per_type(lan: Lan, stype: str) -> None:
    """A host announcing 400 instances of a type: the daemon keeps its limit of them (here 100,
    ``--max-remote-per-type``) and logs the limit once, not per packet."""
    h0, h1, _ = lan.hosts
    s0 = lan.daemon(h0, "h0", "d0", "--max-remote-per-type", "100")
    t = stype + ".local."
    packets = []
    for start in range(0, 400, 10):
        recs: list[list[Any]] = []
        for i in range(start, start + 10):
            inst = f"fake{i}.{t}"
            recs += [["ptr", t, inst, 4500], ["srv", inst, 9000 + i, "evil.local.", 120], ["txt", inst, {"n": str(i)}, 4500]]
        recs.append(["a", "evil.local.", h1.ip, 120])
        packets.append(recs)
    assert lookup(h0, s0, stype, wait=0) == []  # browsing from here on
    lan.send(h1, packets, gap=0.02)
    until("100 instances known", lambda: len(lookup(h0, s0, stype)) >= 100)
    time.sleep(2)  # (late resolutions would show here)
    found = lookup(h0, s0, stype)
    assert len(found) == 100 and all(s["host"] == "evil" for s in found)
    lan.send(h1, packets[10:15])  # 50 more refused: still one log line
    time.sleep(1)
    assert len(lookup(h0, s0, stype)) == 100
    assert lan.log("d0").count("instances of " + t.lower()) == 1, lan.log("d0")


def test_absurd_ttls_are_clamped_and_oversized_txt_dropped(lan: Lan, stype: str) -> None:
    """TTL 2^32-1 is kept as 75 minutes at most (seen in the known answers of the daemon's own
    queries); a service with an 8 KB TXT record is not taken, one next to it is."""
    h0, h1, _ = lan.hosts
    s0 = lan.daemon(h0, "h0", "d0")
    t = stype + ".local."
    forever, big, fine = f"forever.{t}", f"big.{t}", f"fine.{t}"
    capture = lan.capture(h1, "forever")
    try:
        lan.send(h1, [
            [["ptr", t, big, 4500], ["srv", big, 1, "evil.local.", 120], ["txt", big, {f"k{i}": "y" * 240 for i in range(33)}, 4500],
             ["a", "evil.local.", h1.ip, 120]],
            [["ptr", t, forever, 2**32 - 1], ["srv", forever, 2, "evil.local.", 2**32 - 1],
             ["txt", forever, {"k": "v"}, 2**32 - 1], ["a", "evil.local.", h1.ip, 2**32 - 1]],
            [["ptr", t, fine, 4500], ["srv", fine, 3, "evil.local.", 120], ["txt", fine, {"k": "v"}, 4500]],
        ])
        # browsing starts now: the daemon's first queries carry what it holds as known answers
        until("forever and fine listed", lambda: {"forever", "fine"} <= {s["name"] for s in lookup(h0, s0, stype, 1.0)})
        time.sleep(2)
        assert sorted(s["name"] for s in lookup(h0, s0, stype)) == ["fine", "forever"]
        assert "TXT record(s) over 1300 bytes" in lan.log("d0")
    finally:
        out, _ = capture.communicate("", timeout=30)
    known = [ttl for _, src, response, recs in json.loads(out) if src == h0.ip and not response
             for typ, _, ttl, _, _ in recs if typ == 12]
    assert known and max(known) <= 4500, known


def test_a_name_this_host_owns_is_defended(lan: Lan, stype: str) -> None:
    """Another host announces an SRV for an instance this host holds: the owner logs it and
    answers with its own records, so a third host ends up with the owner's."""
    h0, h1, h2 = lan.hosts
    s0 = lan.daemon(h0, "h0", "d0")
    s2 = lan.daemon(h2, "h2", "d2")
    register(h0, s0, "office", stype, 6010)

    def view() -> Any:
        found = lookup(h2, s2, stype, wait=1.0)
        return [(s["name"], s["host"], s["port"]) for s in found]

    until("h2 sees office", lambda: view() == [("office", "h0", 6010)])
    time.sleep(2.5)  # probing over: the name is h0's
    inst = f"office.{stype}.local."
    capture = lan.capture(h2, "office")
    try:
        rival = [["srv", inst, 9999, "evil.local.", 120], ["txt", inst, {"evil": "1"}, 4500],
                 ["a", "evil.local.", h1.ip, 120]]
        lan.send(h1, [rival])
        sent_at = time.monotonic()
        until("the owner logs the rival", lambda: "which this host holds" in lan.log("d0"))
        until("h2 sees the owner's record again", lambda: view() == [("office", "h0", 6010)])
        time.sleep(2.5)  # the owner's second answer, a second after the first
        assert view() == [("office", "h0", 6010)]
    finally:
        out, _ = capture.communicate("", timeout=30)
    answers = [(at, recs) for at, src, response, recs in json.loads(out) if src == h0.ip and response]
    after = [at for at, recs in answers if at > sent_at and any(r[0] == 33 and r[3] == 6010 and r[4] for r in recs)]
    assert after, answers  # the owner's SRV, with the cache-flush bit, after the rival's
