"""Static service files, the policy file, and socket path resolution."""

from __future__ import annotations

import pytest

from discovery.config import (
    ConfigError,
    OnDemand,
    default_socket_path,
    parse_policy,
    parse_service_file,
)

USERS = {"alice": 1000, "root": 0}


def test_service_file_full() -> None:
    s = parse_service_file(
        'name = "printer"\ntype = "_ipp._tcp.local."\nport = 631\n[txt]\nrp = "q1"\nn = 3\n'
        '[on-demand]\ncommand = ["/bin/srv", "-i"]\nmax-instances = 2\nrate = [5, 10]\n'
    )
    assert (s.name, s.type, s.port, dict(s.txt)) == ("printer", "_ipp._tcp", 631, {"rp": "q1", "n": "3"})
    assert s.on_demand == OnDemand(("/bin/srv", "-i"), 2, (5, 10.0))


@pytest.mark.parametrize(
    "text,needle",
    [
        ("name = \n", "not TOML"),
        ('name = "a"\ntype = "_a._tcp"\nport = 1\nextra = 1\n', "unknown keys"),
        ('name = "a.b"\ntype = "_a._tcp"\nport = 1\n', "dots"),
        ('name = "a"\ntype = "a"\nport = 1\n', "service type"),
        ('name = "a"\ntype = "_a._tcp"\nport = -1\n', "port"),
        ('name = "a"\ntype = "_a._tcp"\nport = 1\n[on-demand]\ncommand = "x"\n', "command"),
        ('name = "a"\ntype = "_a._tcp"\nport = 1\n[on-demand]\ncommand = ["x"]\nrate = [0, 1]\n', "rate"),
    ],
)
def test_service_file_errors_name_the_file(text, needle) -> None:
    with pytest.raises(ConfigError) as e:
        parse_service_file(text, "/etc/x.toml")
    assert str(e.value).startswith("/etc/x.toml: ") and needle in str(e.value)


def test_policy() -> None:
    p = parse_policy('default = "deny"\n[types]\n"_x11._tcp" = ["alice", 1001]\n', USERS.__getitem__)
    assert p.allows(1000, "_x11._tcp.local.") and p.allows(1001, "_X11._tcp") and not p.allows(1002, "_x11._tcp")
    assert not p.allows(1000, "_kv._tcp") and p.allows(0, "_kv._tcp")
    with pytest.raises(ConfigError, match="unknown user"):
        parse_policy('[types]\n"_a._tcp" = ["mallory"]\n', USERS.__getitem__)
    with pytest.raises(ConfigError, match="default"):
        parse_policy('default = "maybe"\n', USERS.__getitem__)


def test_socket_path_order() -> None:
    assert default_socket_path({"DISCOVERY_SOCKET": "/s", "XDG_RUNTIME_DIR": "/run/user/1"}, 1) == "/s"
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/1/"}, 1) == "/run/user/1/discovery.sock"
    assert default_socket_path({}, 0) == "/run/discovery.sock"
    assert default_socket_path({}, 1000) == "/tmp/discovery-1000.sock"


def test_policy_limits() -> None:
    from discovery.registry import Owner, Registry, RegistryError

    p = parse_policy("[limits]\nregistrations-per-uid = 2\nconnections-per-uid = 3\nconnections = 10\n", USERS.__getitem__)
    assert (p.max_registrations_per_uid, p.max_connections_per_uid, p.max_connections) == (2, 3, 10)
    d = parse_policy("", USERS.__getitem__)
    assert (d.max_registrations_per_uid, d.max_connections_per_uid, d.max_connections) == (256, 128, 512)
    for bad in ("[limits]\nregistrations-per-uid = 0\n", "[limits]\nconnections = true\n", "[limits]\nsockets = 3\n",
                "limits = 3\n"):
        with pytest.raises(ConfigError, match="limits"):
            parse_policy(bad, USERS.__getitem__)
    assert p.connection_refusal(1000, 9, 2) is None and p.connection_refusal(0, 99, 99) is None
    assert p.connection_refusal(1000, 9, 3).code == "too-many-connections"  # type: ignore[union-attr]
    assert "connections = 10" in p.connection_refusal(1000, 10, 0).message  # type: ignore[union-attr]

    reg = Registry("h", policy=p)
    alice = Owner("c1", 1000, 1)
    reg.register(alice, "a", "_a._tcp", 1)
    reg.register(alice, "a", "_a._tcp", 2)  # an update is not one more
    reg.register(Owner("c2", 1000, 2), "b", "_a._tcp", 1)
    with pytest.raises(RegistryError) as e:
        reg.register(alice, "c", "_a._tcp", 1)
    assert e.value.code == "too-many-registrations" and "registrations-per-uid = 2" in e.value.message
    reg.register(Owner("r", 0, 3), "c", "_a._tcp", 1)  # root is not limited
    reg.connection_lost("c2")
    reg.register(alice, "d", "_a._tcp", 1)  # a lost connection gives its registrations back
    assert reg.held_by(1000) == 2 and reg.held_by(0) == 1


def test_policy_browse_limits() -> None:
    p = parse_policy("[limits]\nbrowsed-types = 8\nwatches-per-connection = 3\nbrowse-idle-seconds = 1\n",
                     USERS.__getitem__)
    assert (p.max_browsed_types, p.max_watches_per_connection, p.browse_idle) == (8, 3, 1)
    d = parse_policy("", USERS.__getitem__)
    assert (d.max_browsed_types, d.max_watches_per_connection, d.browse_idle) == (256, 64, 60)
    for bad in ("[limits]\nbrowsed-types = 0\n", "[limits]\nbrowse-idle-seconds = 0.5\n"):
        with pytest.raises(ConfigError, match="limits"):
            parse_policy(bad, USERS.__getitem__)
