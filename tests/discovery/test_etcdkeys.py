"""The etcd key layout, values and backend URLs (pure), and remote entries kept per origin."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery.etcdkeys import (
    DEFAULT_PREFIX,
    DEFAULT_TTL,
    BackendURLError,
    decode_value,
    encode_value,
    parse_backend_url,
    parse_etcd_key,
    range_end_b64,
    service_etcd_key,
)
from discovery.registry import (
    ETCD,
    REMOTE,
    Added,
    Notify,
    Owner,
    Registry,
    Removed,
    Service,
    Updated,
)


def test_backend_url() -> None:
    c = parse_backend_url("etcd://127.0.0.1:2379,10.0.0.2:22379")
    assert c.endpoints == ("http://127.0.0.1:2379", "http://10.0.0.2:22379")
    assert (c.prefix, c.ttl) == (DEFAULT_PREFIX, DEFAULT_TTL)
    c = parse_backend_url("etcd://h:1?ttl=10&prefix=/site-a&timeout=0.5")
    assert (c.prefix, c.ttl, c.timeout) == ("/site-a/", 10, 0.5)
    assert parse_backend_url(c.url()) == c


@pytest.mark.parametrize(
    "url,needle",
    [
        ("http://h:1", "expected etcd://"),
        ("etcd://h", "not HOST:PORT"),
        ("etcd://h:0", "not HOST:PORT"),
        ("etcd://h:1,", "not HOST:PORT"),
        ("etcd://h:1/path", "?prefix="),
        ("etcd://h:1?ttl=1", "at least"),
        ("etcd://h:1?ttl=x", "numbers"),
        ("etcd://h:1?ttl=3&timeout=3", "timeout"),
        ("etcd://h:1?prefix=rel", "start with /"),
        ("etcd://h:1?x=1", "unknown option"),
    ],
)
def test_bad_backend_urls(url: str, needle: str) -> None:
    with pytest.raises(BackendURLError, match=needle.replace("?", r"\?")):
        parse_backend_url(url)


def test_key_layout() -> None:
    assert service_etcd_key("/p/", "Office", "_X11._tcp.local.") == "/p/_x11._tcp/office"
    assert service_etcd_key("/p/", "a/b c", "_kv._tcp") == "/p/_kv._tcp/a%2Fb%20c"
    assert parse_etcd_key("/p/", "/p/_kv._tcp/a%2Fb%20c") == ("a/b c", "_kv._tcp")
    for junk in ("/q/_kv._tcp/x", "/p/_kv._tcp", "/p/_kv._tcp/", "/p//x", "/p/_kv._tcp/x/y"):
        assert parse_etcd_key("/p/", junk) is None


@given(st.text(min_size=1, max_size=20).filter(lambda s: "." not in s))
def test_key_round_trip(name: str) -> None:
    assert parse_etcd_key("/p/", service_etcd_key("/p/", name, "_a._tcp")) == (name.lower(), "_a._tcp")


def test_range_end_covers_the_prefix() -> None:
    assert base64.b64decode(range_end_b64("/p/")) == b"/p0"
    assert base64.b64decode(range_end_b64("a\xff")) == "a\xff".encode()[:-1] + bytes([0xC0])


def test_value_round_trip_and_junk() -> None:
    s = Service("Office", "_x11._tcp", 6010, "ha", ("10.0.0.1",), (("screen", "0"),), owner_uid=1000, owner_pid=42)
    got, daemon = decode_value(encode_value(s, "ha"))
    assert daemon == "ha" and got == Service(**{**s.__dict__, "source": ETCD})
    for junk in (b"", b"not json", b"[]", b'{"name": "x"}', b'{"name": 1, "type": "_a._tcp", "port": 1}'):
        assert decode_value(junk) is None


def _watching(r: Registry) -> None:
    r.watch("w", "_a._tcp")


def test_remote_entries_are_kept_per_origin_etcd_first() -> None:
    r = Registry("me")
    _watching(r)
    via_mdns = Service("x", "_a._tcp", 1, "h")
    via_etcd = Service("x", "_a._tcp", 2, "h")
    assert r.remote_upsert(via_mdns, REMOTE) == [Notify("w", Added(Service("x", "_a._tcp", 1, "h", source=REMOTE)))]
    e = Service("x", "_a._tcp", 2, "h", source=ETCD)
    assert r.remote_upsert(via_etcd, ETCD) == [Notify("w", Updated(e))]
    assert r.lookup("_a._tcp") == [e]  # one answer, saying where it came from
    assert r.remote_upsert(via_mdns, REMOTE) == []  # unchanged, and shadowed by the etcd one
    assert r.remote_remove("x", "_a._tcp", REMOTE) == []  # the etcd entry still stands
    assert r.lookup("_a._tcp") == [e]
    assert r.remote_upsert(via_mdns, REMOTE) == []
    assert r.remote_remove("x", "_a._tcp", ETCD) == [Notify("w", Updated(Service("x", "_a._tcp", 1, "h", source=REMOTE)))]
    assert r.remote_remove("x", "_a._tcp", ETCD) == []
    assert [s.source for s in r.remote_services(REMOTE)] == [REMOTE]
    assert r.remote_remove("x", "_a._tcp", REMOTE) == [Notify("w", Removed(Service("x", "_a._tcp", 1, "h", source=REMOTE)))]
    assert r.lookup("_a._tcp") == []
    with pytest.raises(ValueError):
        r.remote_upsert(via_mdns, "carrier-pigeon")


def test_a_local_name_shadows_both_origins() -> None:
    r = Registry("me")
    _watching(r)
    r.remote_upsert(Service("x", "_a._tcp", 2, "h"), ETCD)
    svc, eff = r.register(Owner("c", 0, 1), "x", "_a._tcp", 9)
    assert Notify("w", Updated(svc)) in eff
    assert r.remote_upsert(Service("x", "_a._tcp", 1, "h"), REMOTE) == []
    assert r.remote_remove("x", "_a._tcp", ETCD) == []
    assert [s.source for s in r.lookup("_a._tcp")] == ["local"]
    eff = r.connection_lost("c")
    assert Notify("w", Updated(Service("x", "_a._tcp", 1, "h", source=REMOTE))) in eff
