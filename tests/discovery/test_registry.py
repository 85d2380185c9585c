"""The pure registry: ownership, conflicts, leases, watches, journal; time is a plain variable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery.registry import (
    LOCAL,
    ON_DEMAND,
    STATIC,
    Added,
    Journal,
    Notify,
    Owner,
    Policy,
    Publish,
    Registry,
    RegistryError,
    Removed,
    Service,
    Unpublish,
    Updated,
    replay,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


ALICE = Owner(conn="c1", uid=1000, pid=11)
ALICE2 = Owner(conn="c2", uid=1000, pid=12)
BOB = Owner(conn="c3", uid=1001, pid=13)
ROOT = Owner(conn="c4", uid=0, pid=14)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reg(clock: Clock) -> Registry:
    return Registry("h1", ["10.0.0.1"], now=clock)


def kinds(effects):
    return [type(e).__name__ for e in effects]


def test_register_publishes_journals_and_is_visible_at_once(reg: Registry) -> None:
    s, eff = reg.register(ALICE, "office", "_x11._tcp", 6010, {"screen": "0"})
    assert s == Service("office", "_x11._tcp", 6010, "h1", ("10.0.0.1",), (("screen", "0"),), LOCAL, 1000, 11)
    assert Publish(s) in eff
    assert any(isinstance(e, Journal) and e.record["op"] == "add" for e in eff)
    assert reg.lookup("_x11._tcp") == [s]
    assert reg.lookup("_x11._tcp.local.", name="OFFICE") == [s]
    assert reg.lookup("_kv._tcp") == []


def test_second_owner_is_refused_with_a_clear_error(reg: Registry) -> None:
    reg.register(ALICE, "office", "_x11._tcp", 6010)
    for who in (ALICE2, BOB, ROOT):
        with pytest.raises(RegistryError) as e:
            reg.register(who, "Office", "_x11._tcp", 6011)
        assert e.value.code == "conflict"
        assert "already registered by uid 1000 pid 11" in e.value.message


def test_same_connection_updates(reg: Registry) -> None:
    reg.register(ALICE, "office", "_x11._tcp", 6010)
    reg.watch("w", "_x11._tcp")
    s, eff = reg.register(ALICE, "office", "_x11._tcp", 6011, {"a": "b"})
    assert Publish(s) in eff and Notify("w", Updated(s)) in eff
    _, eff = reg.register(ALICE, "office", "_x11._tcp", 6011, {"a": "b"})
    assert eff == []


def test_connection_lost_withdraws_everything_it_held_only(reg: Registry) -> None:
    a, _ = reg.register(ALICE, "a", "_x11._tcp", 1)
    b, _ = reg.register(ALICE, "b", "_kv._tcp", 2)
    c, _ = reg.register(BOB, "c", "_kv._tcp", 3)
    eff = reg.connection_lost("c1")
    assert {e.service for e in eff if isinstance(e, Unpublish)} == {a, b}
    assert reg.lookup() == [c]


def test_withdraw_owner_or_root_only(reg: Registry) -> None:
    reg.register(ALICE, "a", "_x11._tcp", 1)
    with pytest.raises(RegistryError) as e:
        reg.withdraw(BOB, "a", "_x11._tcp")
    assert e.value.code == "denied"
    reg.withdraw(ALICE2, "a", "_x11._tcp")  # same uid, other connection
    reg.register(ALICE, "a", "_x11._tcp", 1)
    assert kinds(reg.withdraw(ROOT, "a", "_x11._tcp"))[0] == "Unpublish"
    with pytest.raises(RegistryError) as e:
        reg.withdraw(ROOT, "a", "_x11._tcp")
    assert e.value.code == "not-found"


@pytest.mark.parametrize(
    "args,code",
    [
        (("a.b", "_x11._tcp", 1), "bad-name"),
        (("", "_x11._tcp", 1), "bad-name"),
        (("x" * 64, "_x11._tcp", 1), "bad-name"),
        (("a", "x11._tcp", 1), "bad-type"),
        (("a", "_x11._sctp", 1), "bad-type"),
        (("a", "_x11._tcp", 70000), "bad-port"),
        (("a", "_x11._tcp", "1"), "bad-port"),
    ],
)
def test_validation(reg: Registry, args, code) -> None:
    with pytest.raises(RegistryError) as e:
        reg.register(ALICE, *args)
    assert e.value.code == code


def test_bad_txt(reg: Registry) -> None:
    for txt in ({"a": 1}, {"": "x"}, {"a=b": "c"}, {"k": "v" * 2000}, ["a"]):
        with pytest.raises(RegistryError) as e:
            reg.register(ALICE, "a", "_x11._tcp", 1, txt)  # type: ignore[arg-type]
        assert e.value.code == "bad-txt"


def test_policy_restricts_types_but_not_root(clock: Clock) -> None:
    reg = Registry("h", now=clock, policy=Policy({"_x11._tcp": frozenset({1000})}, default_allow=False))
    reg.register(ALICE, "a", "_x11._tcp", 1)
    with pytest.raises(RegistryError) as e:
        reg.register(BOB, "b", "_x11._tcp", 1)
    assert e.value.code == "denied" and "policy" in e.value.message
    with pytest.raises(RegistryError):
        reg.register(ALICE, "c", "_kv._tcp", 1)
    reg.register(ROOT, "d", "_kv._tcp", 1)


def test_watches_get_added_updated_removed(reg: Registry) -> None:
    assert reg.watch("w", "_kv._tcp") == []
    s, eff = reg.register(ALICE, "a", "_kv._tcp", 1)
    assert Notify("w", Added(s)) in eff
    _, eff = reg.register(ALICE, "x", "_x11._tcp", 1)
    assert not [e for e in eff if isinstance(e, Notify)]
    eff = reg.connection_lost("c1")
    assert Notify("w", Removed(s)) in eff
    reg.unwatch("w")
    _, eff = reg.register(ALICE, "a", "_kv._tcp", 1)
    assert not [e for e in eff if isinstance(e, Notify)]


def test_remote_services_merge_and_are_shadowed_by_local(reg: Registry) -> None:
    reg.watch("w", "_kv._tcp")
    r = Service("b", "_kv._tcp", 5, "h2", ("10.0.0.2",))
    eff = reg.remote_upsert(r)
    rr = reg.lookup("_kv._tcp")[0]
    assert rr.source == "remote" and eff == [Notify("w", Added(rr))]
    assert reg.remote_upsert(r) == []
    mine, _ = reg.register(ALICE, "a", "_kv._tcp", 1)
    # our own announcement comes back from the LAN: no event, no duplicate
    assert reg.remote_upsert(Service("a", "_kv._tcp", 1, "h1")) == []
    assert reg.lookup("_kv._tcp") == [mine, rr]
    assert reg.remote_remove("a", "_kv._tcp") == []
    assert reg.remote_remove("b", "_kv._tcp") == [Notify("w", Removed(rr))]
    assert reg.remote_remove("b", "_kv._tcp") == []


def test_forget_remote_drops_one_origins_entries_of_a_type(reg: Registry) -> None:
    reg.watch("w", "_kv._tcp")
    mine, _ = reg.register(ALICE, "a", "_kv._tcp", 1)
    reg.remote_upsert(Service("a", "_kv._tcp", 1, "h1"))  # our own, come back
    reg.remote_upsert(Service("b", "_kv._tcp", 5, "h2"))
    reg.remote_upsert(Service("c", "_kv._tcp", 6, "h3"), "etcd")
    reg.remote_upsert(Service("d", "_other._tcp", 7, "h2"))
    b, c = reg.lookup("_kv._tcp", "b")[0], reg.lookup("_kv._tcp", "c")[0]
    assert reg.forget_remote("_KV._tcp.local.") == [Notify("w", Removed(b))]
    assert reg.lookup("_kv._tcp") == [mine, c]  # local and etcd entries stay
    assert [s.name for s in reg.lookup("_other._tcp")] == ["d"]
    assert reg.forget_remote("_kv._tcp") == []
    reg.withdraw(ALICE, "a", "_kv._tcp")
    assert reg.lookup("_kv._tcp") == [c]  # the echo of ours went with the rest


def test_restart_leases_hold_names_for_their_owner(clock: Clock) -> None:
    reg = Registry("h1", now=clock)
    journal = []
    for op in (
        lambda: reg.register(ALICE, "a", "_kv._tcp", 1)[1],
        lambda: reg.register(BOB, "b", "_kv._tcp", 2)[1],
        lambda: reg.register(ROOT, "od", "_kv._tcp", 3, source=ON_DEMAND, extra={"command": ["x"]})[1],
        lambda: reg.connection_lost("c3"),
    ):
        journal += [e.record for e in op() if isinstance(e, Journal)]
    standing = replay(journal)
    assert sorted(r["name"] for r in standing) == ["a", "od"]

    reg2 = Registry("h1", now=clock)
    daemon_held = reg2.restore(standing, grace=30)
    assert [r["name"] for r in daemon_held] == ["od"] and daemon_held[0]["extra"] == {"command": ["x"]}
    assert reg2.lookup() == []  # a lease is not a publication
    with pytest.raises(RegistryError) as e:
        reg2.register(BOB, "a", "_kv._tcp", 9)
    assert e.value.code == "conflict" and "reserved for uid 1000" in e.value.message
    reg2.register(ALICE2, "a", "_kv._tcp", 1)  # the owner's client re-registers
    assert reg2.leases() == []


def test_leases_expire(clock: Clock) -> None:
    reg = Registry("h1", now=clock)
    reg.restore([{"op": "add", "name": "a", "type": "_kv._tcp", "port": 1, "source": "local", "owner_uid": 1000}], grace=30)
    assert reg.next_expiry() == clock.t + 30
    clock.t += 29
    assert reg.expire() == []
    clock.t += 1
    assert [e.record["op"] for e in reg.expire() if isinstance(e, Journal)] == ["remove"]
    reg.register(BOB, "a", "_kv._tcp", 9)


def test_static_set_add_change_remove_and_no_stealing(reg: Registry) -> None:
    reg.register(ALICE, "taken", "_kv._tcp", 1)
    eff = reg.set_static([("p", "_ipp._tcp", 631, {}, {}), ("taken", "_kv._tcp", 2, {}, {})])
    assert [e.service.name for e in eff if isinstance(e, Publish)] == ["p"]
    assert not [e for e in eff if isinstance(e, Journal)]
    assert "taken._kv._tcp" in reg.last_static_errors[0]
    assert reg.set_static([("p", "_ipp._tcp", 631, {}, {})]) == []
    eff = reg.set_static([("p", "_ipp._tcp", 632, {}, {})])
    assert [e.service.port for e in eff if isinstance(e, Publish)] == [632]
    eff = reg.set_static([])
    assert kinds(eff) == ["Unpublish"]
    assert [s.name for s in reg.lookup()] == ["taken"]
    assert reg.local_services()[0].source == LOCAL and STATIC


def test_replay_skips_garbage() -> None:
    recs = [{"op": "add", "name": "a", "type": "_kv._tcp"}, {"nonsense": 1}, "x", {"op": "zap", "name": "a", "type": "_kv._tcp"}]
    assert [r["name"] for r in replay(recs)] == ["a"]  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.sampled_from(["reg", "drop", "lost"]), st.sampled_from("ab"), st.sampled_from([ALICE, BOB, ALICE2]))))
def test_journal_replay_matches_live_state(ops) -> None:
    reg = Registry("h")
    journal = []
    for op, name, who in ops:
        try:
            if op == "reg":
                eff = reg.register(who, name, "_kv._tcp", 1)[1]
            elif op == "drop":
                eff = reg.withdraw(who, name, "_kv._tcp")
            else:
                eff = reg.connection_lost(who.conn)
        except RegistryError:
            continue
        journal += [e.record for e in eff if isinstance(e, Journal)]
    assert sorted(r["name"] for r in replay(journal)) == sorted(s.name for s in reg.lookup())
    assert sorted(r["name"] for r in reg.journal_snapshot()) == sorted(s.name for s in reg.lookup())
