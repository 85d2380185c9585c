"""Integration on loopback: real ``discoveryd`` processes, the client library and the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, utils

from discovery import client
from discovery.client import DiscoveryError

from .conftest import DISCOVERY


async def sleep(s: float) -> None:
    await task.deferLater(reactor, s, lambda: None)


async def eventually(check, timeout: float = 5.0, interval: float = 0.05):
    """Poll an async ``check`` until it returns something truthy; generous deadline, no timing assert."""
    deadline = reactor.seconds() + timeout
    while True:
        r = await check()
        if r:
            return r
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {r!r})")
        await sleep(interval)


async def cli(d, *args: str) -> tuple[bytes, bytes, int]:
    return await utils.getProcessOutputAndValue(DISCOVERY, ["--socket", d.socket, *args], env=dict(os.environ))


def names(recs) -> list[str]:
    return sorted(r.name for r in recs)


@pytest_twisted.ensureDeferred
async def test_register_lookup_watch_and_owner_death_across_daemons(daemons, stype) -> None:
    a, b = daemons("ha"), daemons("hb")
    w = client.watch(stype, socket=b.socket)
    await w.ready
    reg = await client.register("office", stype, 6010, {"screen": "0"}, socket=a.socket)
    # visible locally at once
    local = await client.lookup(stype, wait=0, socket=a.socket)
    assert [(r.name, r.port, r.txt, r.source, r.host) for r in local] == [("office", 6010, {"screen": "0"}, "local", "ha")]
    ev = await w.next_event(timeout=5)
    assert (ev.kind, ev.service.name, ev.service.host, ev.service.port) == ("added", "office", "ha", 6010)
    assert ev.service.addresses == ("127.0.0.1",) and ev.service.txt == {"screen": "0"} and ev.service.source == "remote"
    remote = await client.lookup(stype, socket=b.socket)
    assert [(r.name, r.source) for r in remote] == [("office", "remote")]
    await reg.withdraw()
    ev = await w.next_event(timeout=5)
    assert (ev.kind, ev.service.name) == ("removed", "office")
    assert await client.lookup(stype, wait=0, socket=a.socket) == []
    await w.close()


@pytest_twisted.ensureDeferred
async def test_killed_owner_is_removed_everywhere(daemons, stype) -> None:
    a, b = daemons("ha"), daemons("hb")
    w = client.watch(stype, socket=b.socket)
    await w.ready
    # the CLI keeps the registration exactly while its command runs
    owner = subprocess.Popen(
        [DISCOVERY, "--socket", a.socket, "register", "--name", "victim", "--type", stype, "--port", "7000",
         "--txt", "k=v", "--json", "--", "sleep", "60"],
        stdout=subprocess.PIPE,
    )
    try:
        ev = await w.next_event(timeout=10)
        assert (ev.kind, ev.service.name, ev.service.txt) == ("added", "victim", {"k": "v"})
        out, _, code = await cli(b, "lookup", stype, "--json")
        assert code == 0 and [s["name"] for s in json.loads(out)] == ["victim"]
        assert set(json.loads(out)[0]) >= {"name", "type", "host", "addresses", "port", "txt"}
        owner.kill()  # SIGKILL: no goodbye from the owner; the daemon sees the connection close
        ev = await w.next_event(timeout=5)
        assert (ev.kind, ev.service.name) == ("removed", "victim")
        assert await client.lookup(stype, wait=0, socket=a.socket) == []
    finally:
        owner.kill()
        owner.wait()
        await w.close()


@pytest_twisted.ensureDeferred
async def test_cli_register_exits_with_command_status_and_withdraws(daemons, stype) -> None:
    a = daemons("ha")
    out, err, code = await cli(a, "register", "--name", "x", "--type", stype, "--port", "1", "--json", "--",
                               sys.executable, "-c", f"import subprocess,sys; r=subprocess.run(['{DISCOVERY}','--socket','{a.socket}','lookup','{stype}','--json','--wait','0'],capture_output=True); sys.stdout.write(r.stdout.decode()); sys.exit(3)")
    assert code == 3, err
    lines = out.decode().splitlines()
    assert json.loads(lines[0])["registered"]["name"] == "x"
    assert [s["name"] for s in json.loads(lines[1])] == ["x"]  # registered while the command ran
    assert await client.lookup(stype, wait=0, socket=a.socket) == []  # and not after


@pytest_twisted.ensureDeferred
async def test_conflicts_are_refused_and_owner_or_root_withdraws(daemons, stype) -> None:
    a = daemons("ha")
    c1 = await client.connect(a.socket)
    c2 = await client.connect(a.socket)
    try:
        await c1.register("one", stype, 1)
        with pytest.raises(DiscoveryError) as e:
            await c2.register("ONE", stype, 2)
        assert e.value.code == "conflict" and "already registered by uid" in e.value.message
        with pytest.raises(DiscoveryError) as e:
            await c1.register("bad.name", stype, 1)
        assert e.value.code == "bad-name"
        with pytest.raises(DiscoveryError) as e:
            await c1.lookup("nonsense")
        assert e.value.code == "bad-type"
        await c2.withdraw("one", stype)  # same uid (root here) may
        await c2.register("one", stype, 2)
        # cannot withdraw what is not there
        with pytest.raises(DiscoveryError) as e:
            await c1.withdraw("nothing", stype)
        assert e.value.code == "not-found"
    finally:
        await c1.close()
        await c2.close()


OTHER_UID_CLIENT = r"""
import json, os, socket, sys
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rwb")
for i, req in enumerate(json.loads(sys.argv[2])):
    f.write(json.dumps({"id": i, **req}).encode() + b"\n"); f.flush()
    print(f.readline().decode().strip())
"""


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as a second uid (SO_PEERCRED ownership)")
def test_ownership_by_peer_credentials_and_policy(daemons, stype, base_dir) -> None:
    policy = base_dir / "policy.toml"
    policy.write_text(f'default = "allow"\n[types]\n"{stype}" = ["root"]\n')
    a = daemons("ha", "--policy", str(policy))
    owner = subprocess.Popen([DISCOVERY, "--socket", a.socket, "register", "--name", "mine", "--type", "_o" + stype[2:],
                              "--port", "1", "--json", "--", "sleep", "30"], stdout=subprocess.PIPE)
    try:
        assert b"registered" in owner.stdout.readline()
        reqs = [
            {"op": "hello"},
            {"op": "withdraw", "name": "mine", "type": "_o" + stype[2:]},
            {"op": "register", "name": "mine", "type": "_o" + stype[2:], "port": 2},
            {"op": "register", "name": "p", "type": stype, "port": 2},
            {"op": "register", "name": "free", "type": "_f" + stype[2:], "port": 2},
            {"op": "register", "name": "od", "type": "_f" + stype[2:], "port": 80, "on_demand": {"command": ["true"]}},
        ]
        out = subprocess.run([sys.executable, "-c", OTHER_UID_CLIENT, a.socket, json.dumps(reqs)],
                             capture_output=True, timeout=10, check=True).stdout.decode().splitlines()
        hello, withdraw, steal, denied, free, privileged = map(json.loads, out)
        assert privileged["error"]["code"] == "denied" and "privileged port 80" in privileged["error"]["message"]
        assert hello["uid"] == 65534 and hello["pid"] > 0
        assert withdraw["error"]["code"] == "denied" and "owned by uid 0" in withdraw["error"]["message"]
        assert steal["error"]["code"] == "conflict"
        assert denied["error"]["code"] == "denied" and "policy" in denied["error"]["message"]
        assert free["ok"] and free["service"]["owner_uid"] == 65534
        # root may withdraw anyone's
        r = a.cli("withdraw", "--name", "mine", "--type", "_o" + stype[2:], "--json")
        assert r.returncode == 0, r.stderr
    finally:
        owner.kill()
        owner.wait()


def _raw(sock_path: str, payload: bytes, timeout: float = 5.0) -> bytes:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock_path)
    try:
        s.sendall(payload)
    except BrokenPipeError:
        pass
    chunks = []
    while True:
        try:
            c = s.recv(65536)
        except ConnectionResetError:
            break
        if not c:
            break
        chunks.append(c)
    s.close()
    return b"".join(chunks)


@pytest.mark.parametrize(
    "payload,needle",
    [
        (b"x" * 70000, "longer than"),
        (b'{"id": 1, "op": "hello", "pad": "' + b"y" * 70000 + b'"}\n', "longer than"),
    ],
)
def test_an_oversized_line_gets_an_error_then_close_and_the_daemon_keeps_serving(daemons, stype, payload, needle) -> None:
    a = daemons("ha", "--no-mdns")
    holder = subprocess.Popen([DISCOVERY, "--socket", a.socket, "register", "--name", "keep", "--type", stype,
                               "--port", "1", "--json", "--", "sleep", "30"], stdout=subprocess.PIPE)
    try:
        assert b"registered" in holder.stdout.readline()
        reply = _raw(a.socket, payload)  # returns only once the daemon closed the connection
        last = json.loads(reply.splitlines()[-1])
        assert last["ok"] is False and last["error"]["code"] == "bad-request" and needle in last["error"]["message"]
        r = a.cli("lookup", stype, "--json", "--wait", "0")
        assert [s["name"] for s in json.loads(r.stdout)] == ["keep"]
    finally:
        holder.kill()
        holder.wait()


DEEP = b"[" * 30000 + b"]" * 30000


@pytest.mark.parametrize(
    "payload,id_,code,needle",
    [
        (b'{"id":1,"op":"lookup","type":"_t._tcp","name":5}', 1, "bad-request", "'name' must be a string, not a number"),
        (b'{"id":2,"op":"lookup","type":5}', 2, "bad-request", "'type' must be a string"),
        (b'{"id":3,"op":"lookup","type":null}', 3, "bad-request", "missing field 'type'"),
        (b'{"id":"w","op":"withdraw","name":["x"],"type":"_t._tcp"}', "w", "bad-request", "'name' must be a string"),
        (b'{"id":5,"op":"register","name":"a","type":"_t._tcp","port":1,"on_demand":5}', 5, "bad-request",
         "'on_demand' must be an object"),
        (b'{"id":6,"op":"register","name":"a","type":"_t._tcp","port":1,"on_demand":{"command":[1]}}', 6,
         "bad-request", "'on_demand.command' must be a list of strings"),
        (b'{"id":7,"op":"lookup","type":"_t._tcp","name":' + DEEP + b"}", None, "bad-request", "too deeply"),
        (DEEP, None, "bad-request", "too deeply"),
        (b'{"id":12,"op":"lookup","type":"_t._tcp","name":' + b"[" * 500 + b"]" * 500 + b"}", 12, "bad-request",
         "'name' must be a string, not a list"),
        (b'{"id":8,"op":"watch","type":"_t._tcp","wiat":1}', 8, "bad-request", "unknown field 'wiat'"),
        (b'{"id":9,"op":"frobnicate"}', 9, "bad-op", "unknown op"),
        (b'{"id":10,"op":"register","name":"a","type":"_t._tcp","port":true}', 10, "bad-request", "'port' must be an integer"),
        (b'{"id":11,"op":"unwatch"}', 11, "bad-request", "missing field 'type'"),
        (b"garbage", None, "bad-request", "not JSON"),
        (b"\xff\xfe", None, "bad-request", "not UTF-8"),
        (b"[1,2]", None, "bad-request", "JSON object"),
        (b'{"id": 5}', 5, "bad-request", "missing field 'op'"),
        (b'{"id": {}, "op": "hello"}', None, "bad-request", "id must be"),
    ],
)
def test_a_bad_request_is_answered_and_the_connection_and_its_registrations_stay(
        daemons, stype, payload, id_, code, needle) -> None:
    """Each request is checked against the one declared schema (discovery/schema.py) before any
    handler runs: the error names the field, carries the request's id, and the connection goes on."""
    a = daemons("ha", "--no-mdns")
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(a.socket)
    f = s.makefile("rwb")

    def ask(line: bytes) -> dict:
        f.write(line + b"\n")
        f.flush()
        return json.loads(f.readline())

    try:
        assert ask(json.dumps({"id": 0, "op": "register", "name": "mine", "type": stype, "port": 1}).encode())["ok"]
        r = ask(payload)
        assert r["ok"] is False and r["id"] == id_ and r["error"]["code"] == code and needle in r["error"]["message"], r
        # the same connection still works, and still holds its registration
        r = ask(json.dumps({"id": "after", "op": "lookup", "type": stype, "wait": 0}).encode())
        assert r["id"] == "after" and [x["name"] for x in r["services"]] == ["mine"], r
        assert [x["name"] for x in json.loads(a.cli("lookup", stype, "--json", "--wait", "0").stdout)] == ["mine"]
    finally:
        s.close()
    log = a.log.read_text()
    assert "Traceback" not in log and "#critical" not in log, log


def test_a_watcher_that_never_reads_is_dropped_and_the_daemon_keeps_serving(daemons, stype) -> None:
    """Watch events for a client that does not read pile up only to api.MAX_UNREAD (4 MiB);
    then that client is disconnected with a logged reason. A watcher that keeps up gets every
    event, and the daemon goes on serving."""
    a = daemons("ha", "--no-mdns")
    stuck = socket.socket(socket.AF_UNIX)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.settimeout(10)
    stuck.connect(a.socket)
    stuck.sendall(json.dumps({"id": 1, "op": "watch", "type": stype}).encode() + b"\n")
    watcher = subprocess.Popen([DISCOVERY, "--socket", a.socket, "browse", stype, "--watch", "--json"],
                               stdout=subprocess.PIPE)
    events: list[dict] = []
    reading = threading.Thread(target=lambda: events.extend(map(json.loads, watcher.stdout)),  # type: ignore[arg-type]
                               daemon=True)
    reading.start()
    churn = socket.socket(socket.AF_UNIX)
    churn.settimeout(30)
    churn.connect(a.socket)
    replies = churn.makefile("rb")
    txt = {"pad": "x" * 1200}
    rounds = 2000  # 4,000 events of about 1.4 KB: 5.6 MB for each watcher
    try:
        time.sleep(0.5)  # both watches are in place
        for batch in range(0, rounds, 100):
            ops = []
            for i in range(batch, batch + 100):
                ops.append({"id": i, "op": "register", "name": f"n{i}", "type": stype, "port": 1, "txt": txt})
                ops.append({"id": i, "op": "withdraw", "name": f"n{i}", "type": stype})
            churn.sendall(b"".join(json.dumps(op).encode() + b"\n" for op in ops))
            for _ in ops:
                r = json.loads(replies.readline())
                assert r["ok"] is True, r
            deadline = time.monotonic() + 30  # the reading watcher keeps up (one that falls
            while len(events) < 2 * (batch + 100) and time.monotonic() < deadline:  # 4 MiB
                time.sleep(0.02)  # behind is cut off too, and resynchronized by its client)
        # the stuck watcher was cut off: what it can still read ends well short of 5.6 MB
        got = 0
        while True:
            try:
                chunk = stuck.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
        assert got < 2 << 20, got
        assert "left more than 4194304 bytes of replies and events unread" in a.log.read_text()
        # the reading watcher saw all of it, in order, on one connection
        assert [(e["event"], e["name"]) for e in events] == [
            (kind, f"n{i}") for i in range(rounds) for kind in ("added", "removed")]
        r = a.cli("lookup", stype, "--json", "--wait", "0")
        assert r.returncode == 0 and json.loads(r.stdout) == []
    finally:
        watcher.terminate()
        watcher.wait()
        reading.join(10)
        churn.close()
        stuck.close()


def test_unknown_op_and_bad_fields_keep_the_connection(daemons) -> None:
    a = daemons("ha", "--no-mdns")
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(a.socket)
    f = s.makefile("rwb")
    for req, code in [({"op": "frobnicate"}, "bad-op"), ({"op": "register", "name": "x"}, "bad-request"),
                      ({"op": "register", "name": "x", "type": "_a._tcp", "port": "80"}, "bad-request"),
                      ({"op": "register", "name": "x", "type": "_a._tcp", "port": 70000}, "bad-port"),
                      ({"op": "lookup", "type": "_a._tcp", "wait": 1e9}, "bad-request")]:
        f.write(json.dumps({"id": 9, **req}).encode() + b"\n")
        f.flush()
        r = json.loads(f.readline())
        assert r["id"] == 9 and r["error"]["code"] == code, r
    f.write(b'{"id": "s", "op": "hello"}\n')
    f.flush()
    assert json.loads(f.readline())["ok"] is True
    s.close()


@pytest_twisted.ensureDeferred
async def test_restart_restores_on_demand_and_clients_reregister(daemons, stype, base_dir) -> None:
    a = daemons("ha")
    c = await client.connect(a.socket)
    reconnected = defer.Deferred()
    c.on_reconnect = lambda: reconnected.called or reconnected.callback(None)
    try:
        await c.register("live", stype, 4242)
        od = await c.register_on_demand("od", stype, 0, [sys.executable, "-c", "pass"])
        a.stop()
        a.start()  # the journal's lease keeps "live" for its owner until the client is back
        await reconnected
        recs = await c.lookup(stype, wait=0)
        assert sorted((r.name, r.source, r.port) for r in recs) == [("live", "local", 4242), ("od", "on-demand", od.port)]
        # the re-registration belongs to the new connection: closing it withdraws
        await c.close()
        recs = await eventually(lambda: client.lookup(stype, wait=0, socket=a.socket))
        assert names(recs) == ["od"]
    finally:
        await c.close()


@pytest_twisted.ensureDeferred
async def test_lease_keeps_a_name_for_its_owner_after_restart(daemons, stype) -> None:
    a = daemons("ha", "--no-mdns", "--grace", "30")
    holder = subprocess.Popen([DISCOVERY, "--socket", a.socket, "register", "--name", "held", "--type", stype,
                               "--port", "1", "--json", "--", "sleep", "30"], stdout=subprocess.PIPE)
    try:
        assert b"registered" in holder.stdout.readline()
        holder.kill()
        holder.wait()
        await eventually(lambda: _async_true(not client_lookup_sync(a, stype)))
        # a crash (SIGKILL) leaves the journal with the name still standing
        holder2 = subprocess.Popen([DISCOVERY, "--socket", a.socket, "register", "--name", "held2", "--type", stype,
                                    "--port", "1", "--json", "--", "sleep", "30"], stdout=subprocess.PIPE)
        assert b"registered" in holder2.stdout.readline()
        a.stop(signal.SIGKILL)
        holder2.kill()
        holder2.wait()
        a.start()
        r = a.cli("list", "--json")
        leases = json.loads(r.stdout)["leases"]
        assert [(x["name"], x["owner_uid"]) for x in leases] == [("held2", 0)]
        # the owner's uid (root here) may take it back; it is then an ordinary registration
        c = await client.connect(a.socket)
        await c.register("held2", stype, 1)
        assert json.loads(a.cli("list", "--json").stdout)["leases"] == []
        await c.close()
    finally:
        holder.kill()
        holder.wait()


async def _async_true(v):
    return v


def client_lookup_sync(d, stype):
    return json.loads(d.cli("lookup", stype, "--json", "--wait", "0").stdout)


SERVER = r"""
import os, socket, sys
out = sys.argv[1]
fds, pid, names = os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDNAMES")
s = socket.socket(fileno=3)
info = dict(fds=fds, pid=pid, mypid=os.getpid(), names=names, listening=s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
c, _ = s.accept()
c.sendall((repr(info) + "\n").encode())
c.close()
with open(out, "a") as f:
    f.write(repr(info) + "\n")
"""


def _connect_read(port: int, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        return s.makefile("rb").readline()


def test_superserver_hands_over_the_socket_systemd_style(daemons, stype, base_dir) -> None:
    a = daemons("ha")
    log = base_dir / "server.log"
    script = base_dir / "server.py"
    script.write_text(SERVER)
    r = a.cli("register", "--on-demand", "--name", "od", "--type", stype, "--port", "0", "--json", "--",
              sys.executable, str(script), str(log))
    assert r.returncode == 0, r.stderr
    port = json.loads(r.stdout)["registered"]["port"]
    assert not log.exists()  # nothing runs before the first connection
    st = json.loads(a.cli("list", "--json").stdout)["services"][0]["on_demand"]
    assert st == {"running": 0, "starts": 0, "paused": False}
    for _ in range(2):  # after the server exits, the daemon takes the socket back
        info = eval(_connect_read(port))
        assert info["fds"] == "1" and info["pid"] == str(info["mypid"]) and info["names"] == "od"
        assert info["listening"] == 1
    deadline = time.monotonic() + 10
    while json.loads(a.cli("list", "--json").stdout)["services"][0]["on_demand"]["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    st = json.loads(a.cli("list", "--json").stdout)["services"][0]["on_demand"]
    assert st["starts"] == 2 and st["running"] == 0
    assert len(log.read_text().splitlines()) == 2


def test_superserver_rate_limit_pauses_the_service(daemons, stype, base_dir) -> None:
    a = daemons("ha", "--no-mdns")
    log = base_dir / "server.log"
    script = base_dir / "server.py"
    script.write_text(SERVER)
    r = a.cli("register", "--on-demand", "--name", "od", "--type", stype, "--port", "0", "--rate", "2/30", "--json",
              "--", sys.executable, str(script), str(log))
    port = json.loads(r.stdout)["registered"]["port"]
    for _ in range(2):
        assert b"fds" in _connect_read(port)
    with socket.create_connection(("127.0.0.1", port), timeout=1.5) as s:
        s.settimeout(1.5)
        with pytest.raises(socket.timeout):
            s.recv(10)  # queued in the backlog, but nobody is started for it
    st = json.loads(a.cli("list", "--json").stdout)["services"][0]["on_demand"]
    assert st["paused"] is True and st["starts"] == 2


def test_superserver_max_instances(daemons, stype, base_dir) -> None:
    """A busy instance (not accepting) gets a second one, but never more than max-instances."""
    a = daemons("ha", "--no-mdns")
    script = base_dir / "slow.py"
    script.write_text("import os, socket, time\ns = socket.socket(fileno=3)\nc, _ = s.accept()\nc.sendall(str(os.getpid()).encode() + b'\\n')\ntime.sleep(30)\n")
    r = a.cli("register", "--on-demand", "--name", "od", "--type", stype, "--port", "0", "--max-instances", "2",
              "--json", "--", sys.executable, str(script))
    port = json.loads(r.stdout)["registered"]["port"]
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        pids = {conns[0].makefile("rb").readline(), conns[1].makefile("rb").readline()}
        assert len(pids) == 2
        conns[2].settimeout(1.0)
        with pytest.raises(socket.timeout):
            conns[2].recv(10)
        st = json.loads(a.cli("list", "--json").stdout)["services"][0]["on_demand"]
        assert st["running"] == 2 and st["starts"] == 2
    finally:
        for c in conns:
            c.close()
        r = a.cli("withdraw", "--name", "od", "--type", stype)
        assert r.returncode == 0


def test_static_services_and_sighup_reload(daemons, stype, base_dir) -> None:
    sdir = base_dir / "services"
    sdir.mkdir()
    (sdir / "printer.toml").write_text(f'name = "printer"\ntype = "{stype}"\nport = 631\n[txt]\nrp = "q1"\n')
    (sdir / "broken.toml").write_text("name = \n")
    a = daemons("ha", "--no-mdns", "--services-dir", str(sdir))
    got = json.loads(a.cli("lookup", stype, "--json").stdout)
    assert [(s["name"], s["port"], s["txt"], s["source"]) for s in got] == [("printer", 631, {"rp": "q1"}, "static")]
    (sdir / "printer.toml").write_text(f'name = "printer"\ntype = "{stype}"\nport = 632\n')
    (sdir / "scanner.toml").write_text(f'name = "scanner"\ntype = "{stype}"\nport = 6566\n')
    a.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = json.loads(a.cli("lookup", stype, "--json").stdout)
        if sorted((s["name"], s["port"]) for s in got) == [("printer", 632), ("scanner", 6566)]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(got)
    (sdir / "printer.toml").unlink()
    a.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while [s["name"] for s in json.loads(a.cli("lookup", stype, "--json").stdout)] != ["scanner"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "broken.toml" in a.log.read_text()


@pytest_twisted.ensureDeferred
async def test_same_name_on_two_hosts_is_a_conflict_for_the_newcomer(daemons, stype) -> None:
    a, b = daemons("ha"), daemons("hb")
    first = await client.register("dup", stype, 1000, socket=a.socket)
    await sleep(1.5)  # let ha finish probing and announcing: it is the established owner
    second = await client.register("dup", stype, 2000, socket=b.socket)
    err = await second.lost.addTimeout(10, reactor)
    assert err.code == "conflict" and "in use on the network" in err.message
    await eventually(lambda: _async_true(all(r.port == 1000 for r in client_lookup_records(b, stype))))
    # the established owner is untouched
    recs = await client.lookup(stype, wait=0, socket=a.socket)
    assert [(r.name, r.port, r.source) for r in recs] == [("dup", 1000, "local")]
    await first.withdraw()


def client_lookup_records(d, stype):
    from discovery.client import ServiceRecord

    return [ServiceRecord.from_json(s) for s in json.loads(d.cli("lookup", stype, "--json", "--wait", "0").stdout)]


def test_cli_with_no_daemon_says_so_and_exits_2(base_dir, stype) -> None:
    for command in (["register", "--name", "x", "--type", stype, "--port", "1"],
                    ["browse", stype, "--watch"], ["lookup", stype]):
        done = subprocess.run([DISCOVERY, "--socket", str(base_dir / "none.sock"), *command],
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.startswith("discovery: cannot connect to discoveryd at "), done.stderr


def test_browse_cli_json_lines(daemons, stype) -> None:
    a = daemons("ha")
    browse = subprocess.Popen([DISCOVERY, "--socket", a.socket, "browse", stype, "--watch", "--json"], stdout=subprocess.PIPE)
    try:
        time.sleep(0.8)  # the subscription is in place (no event is lost either way: see below)
        r = a.cli("register", "--name", "b1", "--type", stype, "--port", "9", "--", "true")
        assert r.returncode == 0
        events = [json.loads(browse.stdout.readline()) for _ in range(2)]
        assert [(e["event"], e["name"]) for e in events] == [("added", "b1"), ("removed", "b1")]
    finally:
        browse.terminate()
        browse.wait(5)


@pytest_twisted.ensureDeferred
async def test_malformed_mdns_packets_are_ignored(daemons, stype) -> None:
    a, b = daemons("ha"), daemons("hb")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    for junk in (b"", b"\x00" * 3, os.urandom(12), b"\x00\x00\x84\x00\x00\x00\x00\x05\x00\x00\x00\x00" + os.urandom(200)):
        u.sendto(junk, ("224.0.0.251", 5353))
    u.close()
    w = client.watch(stype, socket=b.socket)
    await w.ready
    reg = await client.register("after-junk", stype, 1, socket=a.socket)
    ev = await w.next_event(timeout=5)
    assert (ev.kind, ev.service.name) == ("added", "after-junk")
    await reg.withdraw()
    await w.close()


@pytest_twisted.ensureDeferred
async def test_watch_resubscribes_after_daemon_restart(daemons, stype) -> None:
    a = daemons("ha", "--no-mdns")
    c = await client.connect(a.socket)
    try:
        w = c.watch(stype)
        await w.ready
        before = await client.register("before", stype, 1, socket=a.socket)
        assert (await w.next_event(timeout=5)).kind == "added"
        a.stop()  # "before" goes with the daemon (its owner's client reconnects on its own)
        a.start()
        after = await client.register("after", stype, 2, socket=a.socket)
        seen = set()
        while ("added", "after") not in seen:
            ev = await w.next_event(timeout=10)
            seen.add((ev.kind, ev.service.name))
        await after.withdraw()
        await before.withdraw()
    finally:
        await c.close()


@pytest_twisted.ensureDeferred
async def test_a_watch_made_before_the_daemon_starts_sees_it_once_it_does(daemons, stype) -> None:
    a = daemons("ha", "--no-mdns", start=False)
    w = client.watch(stype, socket=a.socket)
    try:
        await task.deferLater(reactor, 0.3, lambda: None)  # a few attempts find no daemon
        assert not w.ready.called
        a.start()
        await w.ready
        reg = await client.register("late", stype, 1, socket=a.socket)
        ev = await w.next_event(timeout=10)
        assert (ev.kind, ev.service.name) == ("added", "late")
        await reg.withdraw()
    finally:
        await w.close()


def test_journal_is_compacted_under_churn(daemons, stype) -> None:
    a = daemons("ha", "--no-mdns")
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(a.socket)
    f = s.makefile("rwb")
    for i in range(1500):
        f.write(json.dumps({"id": i, "op": "register", "name": "churn", "type": stype, "port": i % 60000 + 1}).encode() + b"\n")
        f.write(json.dumps({"id": -i, "op": "withdraw", "name": "churn", "type": stype}).encode() + b"\n")
    f.write(json.dumps({"id": "last", "op": "register", "name": "stays", "type": stype, "port": 1}).encode() + b"\n")
    f.flush()
    for _ in range(3001):
        assert json.loads(f.readline())["ok"]
    journal = (a.base / "ha-state" / "journal.jsonl").read_text().splitlines()
    assert len(journal) < 1100
    a.stop(signal.SIGKILL)  # the compacted journal still says what stands
    s.close()
    a.start()
    leases = json.loads(a.cli("list", "--json").stdout)["leases"]
    assert [x["name"] for x in leases] == ["stays"]


def _hold_many(sock_path: str, stype: str, n: int, pad: int = 1000) -> socket.socket:
    """One connection holding ``n`` registrations of ``stype`` with ``pad`` bytes of TXT each."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(sock_path)
    txt = {"pad": "x" * pad}
    s.sendall(b"".join(json.dumps({"id": i, "op": "register", "name": f"i{i:05}", "type": stype, "port": 1,
                                   "txt": txt}).encode() + b"\n" for i in range(n)))
    replies = s.makefile("rb")
    for _ in range(n):
        r = json.loads(replies.readline())
        assert r["ok"] is True, r
    return s


@pytest_twisted.ensureDeferred
async def test_a_lookup_answer_longer_than_the_request_cap_reaches_the_client(daemons, stype) -> None:
    """3,000 instances of 1 KB make a 3.5 MB answer: the CLI and the client library read it
    whole (the request side stays capped at 64 KiB a line)."""
    a = daemons("ha", "--no-mdns")
    holder = _hold_many(a.socket, stype, 3000)
    try:
        out, err, code = await cli(a, "lookup", stype, "--json", "--wait", "0")
        assert code == 0, err
        assert len(out) > 3 << 20 and [s["name"] for s in json.loads(out)] == [f"i{i:05}" for i in range(3000)]
        c = await client.connect(a.socket, reconnect=False)
        try:
            recs = await c.lookup(stype, wait=0)
            assert len(recs) == 3000 and recs[-1].txt == {"pad": "x" * 1000}
            assert (await c.list())["services"][0]["name"] == "i00000"  # the connection is still good
        finally:
            await c.close()
    finally:
        holder.close()


AS_UID = r"""
import json, os, socket, sys
path, uid, n, reqs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
os.setgid(uid); os.setuid(uid)
conns = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(path); f = s.makefile("rwb")
    conns.append(f)
    f.write(b'{"id": "hello", "op": "hello"}\n'); f.flush()
    reply = json.loads(f.readline())
    eof = f.readline() == b"" if not reply["ok"] else False
    print(json.dumps({"conn": i, "reply": reply, "eof": eof}), flush=True)
for i, req in enumerate(reqs):
    conns[0].write(json.dumps({"id": i, **req}).encode() + b"\n"); conns[0].flush()
    print(json.dumps({"conn": 0, "reply": json.loads(conns[0].readline())}), flush=True)
print(json.dumps("holding"), flush=True)
sys.stdin.readline()
"""


def _as_uid(path: str, uid: int, conns: int, reqs: list[dict]) -> tuple[subprocess.Popen, list]:
    """Run AS_UID as ``uid``: ``conns`` connections, then ``reqs`` on the first; returns the process
    (holding its connections until its stdin closes) and what it printed until then."""
    p = subprocess.Popen([sys.executable, "-c", AS_UID, path, str(uid), str(conns), json.dumps(reqs)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out = []
    while (line := json.loads(p.stdout.readline())) != "holding":
        out.append(line)
    return p, out


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as other uids (SO_PEERCRED ownership)")
def test_registrations_and_connections_are_capped_per_uid_with_clear_errors(daemons, stype, base_dir) -> None:
    policy = base_dir / "policy.toml"
    policy.write_text("[limits]\nregistrations-per-uid = 5\nconnections-per-uid = 3\nconnections = 4\n")
    a = daemons("ha", "--no-mdns", "--policy", str(policy))
    regs = [{"op": "register", "name": f"r{i}", "type": stype, "port": 1} for i in range(6)]
    held: list[subprocess.Popen] = []
    try:
        p, out = _as_uid(a.socket, 65534, 4, [*regs, {"op": "hello"}])
        held.append(p)
        hellos, replies = out[:4], [o["reply"] for o in out[4:]]
        assert [h["reply"]["ok"] for h in hellos] == [True, True, True, False]
        refused = hellos[3]
        assert refused["eof"] and refused["reply"]["id"] is None
        assert refused["reply"]["error"]["code"] == "too-many-connections"
        assert "uid 65534 already has 3 connections" in refused["reply"]["error"]["message"]
        assert "connections-per-uid = 3" in refused["reply"]["error"]["message"]
        assert [r["ok"] for r in replies] == [True] * 5 + [False, True]  # the connection stays
        assert replies[5]["error"]["code"] == "too-many-registrations"
        assert "uid 65534 already holds 5 registrations" in replies[5]["error"]["message"]
        # a second uid: one connection fits under the total of 4, the next does not
        p2, out2 = _as_uid(a.socket, 65533, 2, [])
        held.append(p2)
        assert out2[0]["reply"]["ok"] is True and out2[1]["reply"]["error"]["code"] == "too-many-connections"
        assert "already serves 4 connections" in out2[1]["reply"]["error"]["message"]
        # root is not limited; the CLI says why it was refused
        assert a.cli("lookup", stype, "--wait", "0").returncode == 0
        assert sorted(s["name"] for s in json.loads(a.cli("lookup", stype, "--json", "--wait", "0").stdout)) == \
            [f"r{i}" for i in range(5)]
        log = a.log.read_text()
        assert log.count("refusing connections from uid 65534") == 1, log
        # once the first uid's connections close, its registrations go and it may connect again
        p.stdin.close()
        p.wait(10)
        deadline = time.monotonic() + 10
        while json.loads(a.cli("lookup", stype, "--json", "--wait", "0").stdout):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        p3, out3 = _as_uid(a.socket, 65534, 1, regs[:1])
        held.append(p3)
        assert [o["reply"]["ok"] for o in out3] == [True, True]
    finally:
        for h in held:
            h.kill()
            h.wait()


def test_a_refused_connection_is_a_clear_error_for_the_client(daemons, base_dir) -> None:
    """With a limit of 1 connection in all, a second uid's lookup (discovery.blocking, as
    `xproxy run` makes it) is refused with the daemon's reason. (Root is exempt, so the client
    runs as another uid; the venv's CLI cannot, its interpreter lives under /root.)"""
    if os.getuid() != 0:
        pytest.skip("needs root to act as another uid")
    policy = base_dir / "policy.toml"
    policy.write_text("[limits]\nconnections = 1\n")
    a = daemons("ha", "--no-mdns", "--policy", str(policy))
    p, out = _as_uid(a.socket, 65534, 1, [])
    try:
        assert out[0]["reply"]["ok"] is True
        code = ("import os, sys; from discovery.blocking import lookup, LookupFailed; os.setgid(65533); os.setuid(65533)\n"
                "try: lookup('_a._tcp', socket=sys.argv[1])\nexcept LookupFailed as e: print(e.code, e)")
        r = subprocess.run([sys.executable, "-c", code, a.socket], capture_output=True, text=True, timeout=20, check=True)
        assert r.stdout.startswith("too-many-connections discoveryd already serves 1 connections"), r
    finally:
        p.kill()
        p.wait()


CHILD = r"""
import signal, sys, time
out = sys.argv[1]
def term(*_):
    open(out, "a").write("SIGTERM\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
open(out, "a").write("started\n")
time.sleep(60)
open(out, "a").write("slept\n")
"""


@pytest_twisted.ensureDeferred
async def test_cli_register_says_its_name_is_lost_stops_the_command_and_fails(daemons, stype, base_dir) -> None:
    """`discovery register NAME -- CMD` whose name another host already holds: the daemon's
    conflict event reaches the CLI, which says so, stops CMD with SIGTERM and exits 69."""
    a, b = daemons("ha"), daemons("hb")
    first = await client.register("dup", stype, 1000, socket=a.socket)
    await eventually(lambda: _async_true(client_lookup_records(b, stype)))
    await sleep(2.0)  # let ha finish probing and announcing: it is the established owner
    out = base_dir / "child.out"
    child = base_dir / "child.py"
    child.write_text(CHILD)
    stdout, stderr, code = await cli(b, "register", "--name", "dup", "--type", stype, "--port", "2000", "--json",
                                     "--", sys.executable, str(child), str(out))
    lines = [json.loads(x) for x in stdout.decode().splitlines()]
    assert code == 69, (code, stderr)
    assert lines[0]["registered"]["name"] == "dup"
    assert lines[1]["lost"]["code"] == "conflict" and "in use on the network" in lines[1]["lost"]["message"]
    assert b"dup." + stype.encode() + b" is no longer registered" in stderr and b"; stopping" in stderr, stderr
    assert out.read_text().splitlines() == ["started", "SIGTERM"]
    recs = await client.lookup(stype, wait=0, socket=a.socket)
    assert [(r.name, r.port, r.source) for r in recs] == [("dup", 1000, "local")]
    await first.withdraw()


@pytest_twisted.ensureDeferred
async def test_a_lease_dropped_after_a_restart_sends_goodbyes(daemons, stype) -> None:
    """A daemon killed with a registration standing keeps the name for its owner for --grace
    seconds after its restart; when the owner does not come back, another host sees the name
    go at once (goodbye), not when its cached records expire (75 min for the PTR)."""
    a, b = daemons("ha", "--grace", "8"), daemons("hb")
    w = client.watch(stype, socket=b.socket)
    await w.ready
    holder = subprocess.Popen([DISCOVERY, "--socket", a.socket, "register", "--name", "held", "--type", stype,
                               "--port", "7000", "--json", "--", "sleep", "60"], stdout=subprocess.PIPE)
    try:
        ev = await w.next_event(timeout=10)
        assert (ev.kind, ev.service.name, ev.service.host) == ("added", "held", "ha")
        a.stop(signal.SIGKILL)  # no goodbye from the daemon itself
        holder.kill()  # and the owner does not come back
        holder.wait()
        a.start()
        assert [x["name"] for x in json.loads(a.cli("list", "--json").stdout)["leases"]] == ["held"]
        assert [r.name for r in client_lookup_records(b, stype)] == ["held"]  # still known elsewhere
        ev = await w.next_event(timeout=30)
        assert (ev.kind, ev.service.name) == ("removed", "held")
        assert json.loads(a.cli("list", "--json").stdout)["leases"] == []
        assert "held." + stype + ", kept for its owner since the restart, is dropped: goodbye sent" in a.log.read_text()
    finally:
        holder.kill()
        holder.wait()
        await w.close()


def test_cli_register_stops_when_its_name_is_withdrawn_elsewhere(daemons, stype, base_dir) -> None:
    """Root (or the same uid) withdrawing a name from another connection: the holder is told
    (a `lost` event), and `discovery register -- CMD` stops CMD and exits 69."""
    a = daemons("ha", "--no-mdns")
    out = base_dir / "child.out"
    child = base_dir / "child.py"
    child.write_text(CHILD)
    reg = subprocess.Popen([DISCOVERY, "--socket", a.socket, "register", "--name", "w", "--type", stype, "--port", "1",
                            "--json", "--", sys.executable, str(child), str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert b"registered" in reg.stdout.readline()
        deadline = time.monotonic() + 10
        while not out.exists() or "started" not in out.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = a.cli("withdraw", "--name", "w", "--type", stype)
        assert r.returncode == 0, r.stderr
        assert reg.wait(20) == 69
        lost = json.loads(reg.stdout.readline())["lost"]
        assert lost["code"] == "withdrawn" and lost["message"].startswith("withdrawn by uid 0")
        assert b"is no longer registered: withdrawn by uid 0" in reg.stderr.read()
        assert out.read_text().splitlines() == ["started", "SIGTERM"]
    finally:
        reg.kill()
        reg.wait()


@pytest_twisted.ensureDeferred
async def test_the_client_library_reports_a_refused_connection(base_dir) -> None:
    """A daemon at its connection limit answers with one error line (id null) and closes: the
    client library raises it as DiscoveryError with the daemon's code and reason, not as a
    lost connection. (The daemon side is tested with real uids above; root is exempt.)"""
    path = str(base_dir / "full.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    line = b'{"id":null,"ok":false,"error":{"code":"too-many-connections","message":"discoveryd already serves 1 connections"}}\n'

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(line)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(4096)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with pytest.raises(DiscoveryError) as e:
            await client.connect(path, reconnect=False)
        assert e.value.code == "too-many-connections" and "already serves 1" in e.value.message
    finally:
        t.join(5)
        server.close()
