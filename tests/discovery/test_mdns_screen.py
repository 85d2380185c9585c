"""The mDNS adapter's screen of other hosts' records, on a zeroconf cache without sockets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest_twisted
from zeroconf import DNSCache, DNSText

from discovery.backends.mdns import Limits, MdnsAdapter

OTHER = ("10.0.0.9", 5353)


def txt(name: str, ttl: int = 120, text: bytes = b"\x03a=b") -> DNSText:
    return DNSText(name, 16, 1, ttl, text)


@pytest_twisted.ensureDeferred
async def test_records_of_new_names_are_dropped_once_the_cache_holds_max_names() -> None:
    """Past `max_names` cached names, records of new names are dropped (goodbyes pass); a TXT
    over 1,300 bytes is dropped; a TTL is clamped. (Run on the reactor: the adapter's clock
    is the running asyncio loop's.)"""
    a = MdnsAdapter(["10.0.0.1"], "me", on_upsert=lambda s: None, on_remove=lambda n, t: None,
                    on_conflict=lambda s, m: None, limits=Limits(max_names=2))
    cache = DNSCache()
    a.azc = SimpleNamespace(zeroconf=SimpleNamespace(cache=cache))  # type: ignore[assignment]
    cache.async_add_records([txt("n0.local."), txt("n1.local.")])
    known, new, bye = txt("n0.local.", text=b"\x03a=c"), txt("n9.local."), txt("n8.local.", ttl=0)
    assert a._screen([known, new, bye], OTHER) == [known, bye]
    big = txt("n1.local.", ttl=2**32 - 1, text=b"\xff" + b"x" * 255 + b"\xff" + b"y" * 1100)
    assert a._screen([big], OTHER) == []  # 1,312 bytes: over 1,300
    forever = txt("n1.local.", ttl=2**32 - 1)
    assert a._screen([forever], OTHER) == [forever] and forever.ttl == 4500


@pytest_twisted.ensureDeferred
async def test_records_of_one_name_are_capped() -> None:
    """zeroconf keeps records of one name that differ in data side by side (a TXT without the
    cache-flush bit, an address), so a host sending new ones for one name would grow the cache
    until their TTLs ran out: past `max_per_name` records of a name, new ones are dropped;
    known ones are refreshed, goodbyes pass, and PTRs are left to the per-type cap."""
    from zeroconf import DNSAddress, DNSPointer

    a = MdnsAdapter(["10.0.0.1"], "me", on_upsert=lambda s: None, on_remove=lambda n, t: None,
                    on_conflict=lambda s, m: None, limits=Limits(max_per_name=2))
    cache = DNSCache()
    a.azc = SimpleNamespace(zeroconf=SimpleNamespace(cache=cache))  # type: ignore[assignment]
    cache.async_add_records([txt("i._q._tcp.local.", text=b"\x03a=1"), txt("i._q._tcp.local.", text=b"\x03a=2")])
    cache.async_add_records([DNSAddress("h.local.", 1, 1, 120, bytes([10, 1, 0, j])) for j in (1, 2)])
    new_txt, old_txt = txt("i._q._tcp.local.", text=b"\x03a=3"), txt("i._q._tcp.local.", text=b"\x03a=2")
    bye = txt("i._q._tcp.local.", ttl=0, text=b"\x03a=4")
    new_addr, old_addr = (DNSAddress("h.local.", 1, 1, 120, bytes([10, 1, 0, j])) for j in (3, 1))
    assert a._screen([new_txt, old_txt, bye, new_addr, old_addr], OTHER) == [old_txt, bye, old_addr]
    cache.async_add_records([DNSPointer("_q._tcp.local.", 12, 1, 4500, f"p{j}._q._tcp.local.") for j in range(3)])
    ptr = DNSPointer("_q._tcp.local.", 12, 1, 4500, "p9._q._tcp.local.")
    assert a._screen([ptr], OTHER) == [ptr]
