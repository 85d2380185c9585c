"""The mDNS adapter's screen of other hosts' records, on a zeroconf cache without sockets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest_twisted
from zeroconf import DNSCache, DNSText

from discovery.mdns import Limits, MdnsAdapter

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
