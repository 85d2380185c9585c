"""Xauthority parsing, lookup as libXau does it, and updates under xauth's lock."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from testing.xserver import require
from xproxy.trust import xauthfile
from xproxy.x11.display import DisplayNameError, parse_display
from xproxy.x11.xauth import (
    FAMILY_INTERNET,
    FAMILY_LOCAL,
    FAMILY_WILD,
    MIT_MAGIC_COOKIE_1,
    XauthEntry,
    XauthorityFormatError,
    best_auth,
    parse_xauthority,
    replace_entry,
    serialize_xauthority,
)

LOCAL = XauthEntry(FAMILY_LOCAL, b"box", b"3", MIT_MAGIC_COOKIE_1, b"a" * 16)
INET = XauthEntry(FAMILY_INTERNET, bytes([10, 0, 0, 2]), b"0", MIT_MAGIC_COOKIE_1, b"b" * 16)
WILD = XauthEntry(FAMILY_WILD, b"", b"", MIT_MAGIC_COOKIE_1, b"c" * 16)


def test_round_trip():
    raw = serialize_xauthority([LOCAL, INET, WILD])
    assert parse_xauthority(raw) == [LOCAL, INET, WILD]


def test_truncated_file_is_an_error():
    raw = serialize_xauthority([LOCAL])
    with pytest.raises(XauthorityFormatError):
        parse_xauthority(raw[:-3])


def test_lookup_matches_family_address_and_number():
    entries = [INET, LOCAL]
    assert best_auth(entries, FAMILY_LOCAL, b"box", 3) == LOCAL
    assert best_auth(entries, FAMILY_LOCAL, b"box", 4) is None
    assert best_auth(entries, FAMILY_LOCAL, b"other", 3) is None
    assert best_auth(entries, FAMILY_INTERNET, bytes([10, 0, 0, 2]), 0) == INET
    assert best_auth([*entries, WILD], FAMILY_LOCAL, b"other", 9) == WILD


def test_replace_keeps_other_displays():
    new = XauthEntry(FAMILY_LOCAL, b"box", b"3", MIT_MAGIC_COOKIE_1, b"z" * 16)
    assert replace_entry([LOCAL, INET], new) == [new, INET]


def test_file_written_by_us_reads_back_with_xauth(tmp_path):
    require("xauth")
    path = str(tmp_path / "Xauthority")
    entry = XauthEntry(FAMILY_LOCAL, b"box", b"7", MIT_MAGIC_COOKIE_1, bytes(range(16)))
    xauthfile.update(path, lambda entries: replace_entry(entries, entry))
    listed = subprocess.run(["xauth", "-f", path, "list"], capture_output=True, text=True,
                            check=True).stdout
    assert listed.split() == ["box/unix:7", "MIT-MAGIC-COOKIE-1", bytes(range(16)).hex()]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    subprocess.run(["xauth", "-f", path, "add", "box/unix:8", ".", "ab" * 16], check=True)
    assert len(xauthfile.read_entries(path)) == 2


def test_concurrent_updates_lose_nothing(tmp_path):
    path = str(tmp_path / "Xauthority")

    def add(n: int) -> None:
        entry = XauthEntry(FAMILY_LOCAL, b"box", str(n).encode(), MIT_MAGIC_COOKIE_1, b"x" * 16)
        xauthfile.update(path, lambda entries: replace_entry(entries, entry))

    threads = [threading.Thread(target=add, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(int(e.number) for e in xauthfile.read_entries(path)) == list(range(20))
    assert not os.path.exists(path + "-c") and not os.path.exists(path + "-l")


def test_stale_lock_is_broken(tmp_path):
    path = str(tmp_path / "Xauthority")
    for suffix in ("-c", "-l"):
        open(path + suffix, "w").close()
        os.utime(path + suffix, (0, 0))
    xauthfile.update(path, lambda entries: [LOCAL])
    assert xauthfile.read_entries(path) == [LOCAL]


@pytest.mark.parametrize(
    "name,host,number,screen,local",
    [(":0", "", 0, 0, True), ("unix:3", "unix", 3, 0, True), ("box:12.1", "box", 12, 1, False),
     ("[::1]:4", "::1", 4, 0, False), ("box/unix:2", "box", 2, 0, True)],
)
def test_display_names(name, host, number, screen, local):
    d = parse_display(name)
    assert (d.host, d.number, d.screen, d.is_local) == (host, number, screen, local)


@pytest.mark.parametrize("name", ["", "0", ":x", "host:1.y", "a/bogus:1", ":99999"])
def test_bad_display_names(name):
    with pytest.raises(DisplayNameError):
        parse_display(name)


@pytest.mark.parametrize("before", [None, "/nonexistent/Xauthority"])
def test_xlib_display_uses_the_given_file_and_leaves_the_environment(xvfb, tmp_path,
                                                                      monkeypatch, before):
    """python-xlib reads its cookie from $XAUTHORITY only; `open_xlib_display` gives it the
    file asked for and puts the variable back as it was, also when it was unset."""
    if before is None:
        monkeypatch.delenv("XAUTHORITY", raising=False)
    else:
        monkeypatch.setenv("XAUTHORITY", before)
    d = xauthfile.open_xlib_display(xvfb.name, xvfb.xauthority)
    try:
        assert d.screen().width_in_pixels > 0
    finally:
        d.close()
    assert os.environ.get("XAUTHORITY") == before
    with pytest.raises(Exception):  # noqa: B017 - python-xlib's refusal, whatever its class
        xauthfile.open_xlib_display(xvfb.name, str(tmp_path / "missing"))
    assert os.environ.get("XAUTHORITY") == before
