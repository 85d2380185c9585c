"""Leases dropped after a restart take their records back from the LAN (the registry's effects)."""

from __future__ import annotations

from discovery.registry import Journal, Owner, Registry, Retract


def test_a_dropped_lease_is_retracted_with_this_hosts_addresses() -> None:
    now = [100.0]
    reg = Registry("h", ["10.0.0.1"], now=lambda: now[0])
    rec = {"op": "add", "name": "Office", "type": "_x11._tcp", "port": 6010, "txt": {"s": "0"}, "source": "local",
           "owner_uid": 1000, "owner_pid": 7}
    other = {**rec, "name": "kept"}
    gone = {**rec, "name": "gone"}
    assert reg.restore([rec, other, gone], grace=30) == []
    # the owner takes one back (no goodbye: it is published again), withdraws another
    _, eff = reg.register(Owner("c", 1000, 8), "kept", "_x11._tcp", 6010)
    assert not any(isinstance(e, Retract) for e in eff)
    [retract, journal] = reg.withdraw(Owner("c", 1000, 8), "gone", "_x11._tcp")
    assert isinstance(retract, Retract) and retract.service.name == "gone" and isinstance(journal, Journal)
    assert reg.expire() == []
    now[0] = 130.0
    [retract, journal] = reg.expire()
    assert isinstance(retract, Retract) and journal == Journal({"op": "remove", "name": "Office", "type": "_x11._tcp"})
    s = retract.service
    assert (s.name, s.type, s.port, s.host, s.addresses, dict(s.txt)) == \
        ("Office", "_x11._tcp", 6010, "h", ("10.0.0.1",), {"s": "0"})
    assert reg.leases() == []
