"""``Registry.rename_host``: after a host-name conflict, local services carry the new name."""

from __future__ import annotations

from dataclasses import replace

from discovery.registry import REMOTE, Notify, Owner, Publish, Registry, Service, Updated


def test_rename_republishes_local_services_and_tells_watchers() -> None:
    reg = Registry("twin", ["10.0.0.1"])
    owner = Owner(conn="c1", uid=1000, pid=11)
    a, _ = reg.register(owner, "a", "_kv._tcp", 1)
    reg.remote_upsert(Service("r", "_kv._tcp", 2, "other", source=REMOTE))
    reg.watch("w", "_kv._tcp")
    effects = reg.rename_host("twin-2")
    renamed = replace(a, host="twin-2")
    assert effects == [Publish(renamed), Notify("w", Updated(renamed))]
    assert [s.host for s in reg.lookup("_kv._tcp")] == ["twin-2", "other"]
    b, _ = reg.register(owner, "b", "_kv._tcp", 3)
    assert b.host == "twin-2"
