"""discovery.blocking: the standard-library lookup that `xproxy run` uses, against a real
discoveryd (a registration made through the CLI) and against daemons that misbehave."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from discovery.blocking import LookupFailed, lookup

from .conftest import DISCOVERY


def test_lookup_finds_a_registration_and_imports_no_twisted(daemons, stype) -> None:
    d = daemons("a")
    reg = subprocess.Popen([DISCOVERY, "--socket", d.socket, "register", "--name", "office",
                            "--type", stype, "--port", "7010", "--txt", "fp=SHA256:x", "--",
                            "sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (found := lookup(stype, name="office", socket=d.socket)):
            assert time.monotonic() < deadline, "the registration never showed"
            time.sleep(0.05)
        assert [(r["name"], r["port"], r["txt"]["fp"]) for r in found] == \
            [("office", 7010, "SHA256:x")]
        assert lookup(stype, name="nobody", socket=d.socket) == []
    finally:
        reg.terminate()
        reg.wait(10)
    code = ("import sys, discovery.blocking; "
            "print([m for m in sys.modules if m.startswith('twisted')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_refusal_carries_the_daemons_reason(daemons) -> None:
    d = daemons("b")
    with pytest.raises(LookupFailed) as err:
        lookup("not a type", socket=d.socket)
    assert err.value.code != "unavailable" and str(err.value)


def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LookupFailed, match="No such file"):
        lookup("_x._tcp", socket=str(tmp_path / "none.sock"))


@pytest.mark.parametrize("answer, match", [
    (b"", "closed the connection"),
    (b"not json\n", "not JSON"),
    (b'{"id": 1, "ok": true}\n', "no list"),
])
def test_a_daemon_that_answers_badly_is_a_clear_error(tmp_path: Path, answer, match) -> None:
    path = str(tmp_path / "bad.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b'{"event": "added", "watch": "_x._tcp", "service": {}}\n' + answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with pytest.raises(LookupFailed, match=match):
            lookup("_x._tcp", socket=path, timeout=5)
    finally:
        t.join(5)
        server.close()


def test_an_answer_of_megabytes_is_read_whole(daemons, stype) -> None:
    from .test_daemon import _hold_many

    d = daemons("c", "--no-mdns")
    holder = _hold_many(d.socket, stype, 3000)
    try:
        found = lookup(stype, socket=d.socket, wait=0)
        assert [r["name"] for r in found] == [f"i{i:05}" for i in range(3000)]
    finally:
        holder.close()


def test_a_daemon_that_never_ends_its_answer_times_out(tmp_path: Path) -> None:
    """Replies have no length cap, so the time is what bounds a lookup: `timeout` covers the
    whole answer, not each read."""
    path = str(tmp_path / "slow.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    stop = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            while not stop.is_set():
                try:
                    conn.sendall(b"x" * 1000)
                except OSError:
                    return
                time.sleep(0.05)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with pytest.raises(LookupFailed, match="did not answer within 1 s"):
            lookup("_x._tcp", socket=path, timeout=1)
    finally:
        stop.set()
        t.join(5)
        server.close()
