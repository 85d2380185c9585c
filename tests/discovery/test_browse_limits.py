"""A real ``discoveryd``: lookups and watches of many service types do not leave a browser (and
its mDNS queries) per type behind; the browse and watch caps give typed errors."""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any


def new_type() -> str:
    return f"_t{secrets.token_hex(4)}._tcp"


class Conn:
    """One API connection, a request at a time (watch events in between are set aside)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(20)
        self.sock.connect(path)
        self.f = self.sock.makefile("rwb")
        self.n = 0

    def ask(self, op: str, **fields: Any) -> dict:
        self.n += 1
        self.f.write(json.dumps({"id": self.n, "op": op, **fields}).encode() + b"\n")
        self.f.flush()
        while "event" in (reply := json.loads(self.f.readline())):
            pass
        assert reply["id"] == self.n, reply
        return reply

    def browsers(self) -> int:
        r = self.ask("hello")
        assert r["ok"], r
        [mdns] = [b for b in r["backends"] if b["backend"] == "mdns"]
        return mdns["browsers"]

    def close(self) -> None:
        self.f.close()
        self.sock.close()


def until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (r := check()):
        assert time.monotonic() < deadline, f"not within {timeout} s (last: {r!r})"
        time.sleep(0.05)
    return r


def test_browsers_are_capped_stopped_when_idle_and_watches_capped_per_connection(daemons, base_dir) -> None:
    policy = base_dir / "policy.toml"
    policy.write_text("[limits]\nbrowsed-types = 8\nwatches-per-connection = 3\nbrowse-idle-seconds = 1\n")
    a = daemons("ha", "--policy", str(policy))
    b = daemons("hb")
    c1, c2, c3 = Conn(a.socket), Conn(a.socket), Conn(a.socket)
    try:
        # 20 lookups of distinct types: 8 are browsed, the rest answered without a browser
        looked = [new_type() for _ in range(20)]
        replies = [c1.ask("lookup", type=t, wait=0) for t in looked]
        assert all(r["ok"] and r["services"] == [] for r in replies), replies
        assert [r.get("warning", {}).get("code") for r in replies] == [None] * 8 + ["too-many-browsed-types"] * 12
        assert "browsed-types = 8" in replies[-1]["warning"]["message"]
        assert c1.browsers() == 8

        # the browse cap refuses a watch of a new type; a browsed one may be watched
        r = c1.ask("watch", type=new_type())
        assert r["ok"] is False and r["error"]["code"] == "too-many-browsed-types", r
        assert c1.ask("watch", type=looked[0])["ok"]

        # a second after their last lookup, the types nobody watches are no longer browsed
        until(lambda: c1.browsers() == 1)

        # a connection watches at most 3 types; over that it gets an error and keeps working
        assert c1.ask("watch", type=new_type())["ok"] and c1.ask("watch", type=new_type())["ok"]
        r = c1.ask("watch", type=new_type())
        assert r["ok"] is False and r["error"]["code"] == "too-many-watches", r
        assert "watches-per-connection = 3" in r["error"]["message"]
        assert c1.ask("lookup", type=looked[0], wait=0)["ok"] and c1.browsers() == 3

        # 3 + 3 + 2 watched types fill the 8; watched types stay browsed past the idle time
        assert all(c2.ask("watch", type=new_type())["ok"] for _ in range(3))
        assert all(c3.ask("watch", type=new_type())["ok"] for _ in range(2))
        r = c3.ask("watch", type=new_type())
        assert r["ok"] is False and r["error"]["code"] == "too-many-browsed-types", r
        time.sleep(1.5)
        assert c3.browsers() == 8

        # with the cap full, a lookup of a new type is answered from what the LAN announced
        other = new_type()
        bc = Conn(b.socket)
        try:
            assert bc.ask("register", name="svc", type=other, port=7)["ok"]
            found = until(lambda: (r := c3.ask("lookup", type=other, wait=0))["services"] and r)
            assert [(s["name"], s["host"], s["port"]) for s in found["services"]] == [("svc", "hb", 7)]
            assert found["warning"]["code"] == "too-many-browsed-types"
            # the CLI lists what was found and says it came from the cache
            cli = a.cli("lookup", other)
            assert cli.returncode == 0 and b"svc" in cli.stdout, cli
            assert found["services"][0]["source"] == "remote"
            assert b"discovery: warning: answered from the cache" in cli.stderr, cli.stderr
            assert c3.browsers() == 8
        finally:
            bc.close()

        # a closed connection's watched types go a second later
        c1.close()
        until(lambda: c2.browsers() == 5)
        log = a.log.read_text()
        assert log.count("browsing 8 service types, the limit") == 1, log  # once, not per refusal
        assert log.count("on one connection, the limit ([limits] watches-per-connection)") == 1, log
        assert "Traceback" not in log, log
    finally:
        for c in (c1, c2, c3):
            c.close()


def test_what_a_stopped_browser_learnt_is_dropped_and_found_again_by_the_next_lookup(daemons, base_dir) -> None:
    """Once a type is no longer browsed nothing would report its instances' departure, so the
    daemon forgets them (``list`` no longer shows them); the next lookup browses it again, and
    one of a name answers as soon as the name is known (`xproxy run @NAME` after an idle
    minute does not wait for the whole window)."""
    policy = base_dir / "policy.toml"
    policy.write_text("[limits]\nbrowse-idle-seconds = 1\n")
    a = daemons("ha", "--policy", str(policy))
    b = daemons("hb")
    t = new_type()
    holder, c = Conn(b.socket), Conn(a.socket)
    try:
        assert holder.ask("register", name="svc", type=t, port=7)["ok"]

        def remote_in_list() -> list:
            return [s["name"] for s in c.ask("list")["services"] if s["type"] == t]

        found = until(lambda: c.ask("lookup", type=t, wait=1)["services"])
        assert [(s["name"], s["source"]) for s in found] == [("svc", "remote")]
        assert remote_in_list() == ["svc"]
        until(lambda: c.browsers() == 0 and not remote_in_list())
        # a lookup of the name is answered once the new browser knows it, not after its window
        c.sock.settimeout(9)
        found = c.ask("lookup", type=t, name="svc", wait=10)["services"]
        c.sock.settimeout(20)
        assert [(s["name"], s["host"], s["port"]) for s in found] == [("svc", "hb", 7)]
        assert c.browsers() == 1
        found = c.ask("lookup", type=t, wait=0)["services"]
        assert [(s["name"], s["host"]) for s in found] == [("svc", "hb")]
    finally:
        holder.close()
        c.close()
