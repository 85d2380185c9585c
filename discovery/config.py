"""Parsing of the files the daemon reads: static service files and the policy file (TOML).

Pure: text in, values out; a file's problems are reported as ``ConfigError`` with the
file name, so one bad file is logged and skipped while the others load.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from discovery.registry import (
    Policy,
    RegistryError,
    normalize_type,
    validate_name,
    validate_port,
    validate_txt,
    validate_type,
)


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class OnDemand:
    """The superserver part of a service: what to start on the first connection, and limits."""

    command: tuple[str, ...]
    max_instances: int = 1
    rate: tuple[int, float] = (10, 60.0)  # at most N starts per period seconds, like xinetd cps
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "command": list(self.command),
            "max_instances": self.max_instances,
            "rate": list(self.rate),
        }
        if self.env:
            d["env"] = dict(self.env)
        if self.cwd:
            d["cwd"] = self.cwd
        return d


def parse_on_demand(d: Mapping[str, Any]) -> OnDemand:
    """Validate an on-demand spec as the wire protocol or a static file gives it."""
    cmd = d.get("command")
    if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
        raise ConfigError("on-demand 'command' must be a non-empty list of strings")
    mi = d.get("max_instances", d.get("max-instances", 1))
    if not isinstance(mi, int) or isinstance(mi, bool) or mi < 1:
        raise ConfigError("'max-instances' must be a positive integer")
    rate = d.get("rate", [10, 60])
    if (
        not isinstance(rate, (list, tuple))
        or len(rate) != 2
        or not isinstance(rate[0], int)
        or not isinstance(rate[1], (int, float))
        or rate[0] < 1
        or rate[1] <= 0
    ):
        raise ConfigError("'rate' must be [starts, seconds], e.g. [10, 60]")
    env = d.get("env", {})
    if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ConfigError("'env' must be a table of strings")
    cwd = d.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ConfigError("'cwd' must be a string")
    return OnDemand(tuple(cmd), mi, (int(rate[0]), float(rate[1])), dict(env), cwd)


@dataclass(frozen=True)
class StaticService:
    name: str
    type: str
    port: int
    txt: Mapping[str, str]
    on_demand: OnDemand | None = None


def parse_service_file(text: str, filename: str = "<service>") -> StaticService:
    """One service per file::

        name = "printer"
        type = "_ipp._tcp"
        port = 631
        [txt]
        rp = "queue1"
        [on-demand]                 # optional: start the server on the first connection
        command = ["/usr/sbin/ippd", "--socket-activated"]
        max-instances = 1
        rate = [10, 60]             # at most 10 starts in 60 s
    """
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{filename}: not TOML: {e}") from None
    unknown = set(d) - {"name", "type", "port", "txt", "on-demand"}
    if unknown:
        raise ConfigError(f"{filename}: unknown keys {sorted(unknown)}")
    try:
        name = validate_name(d.get("name"))  # type: ignore[arg-type]
        type_ = validate_type(str(d.get("type", "")))
        port = validate_port(d.get("port"))
        txt = dict(validate_txt({str(k): str(v) for k, v in d.get("txt", {}).items()}))
    except RegistryError as e:
        raise ConfigError(f"{filename}: {e.message}") from None
    except AttributeError:
        raise ConfigError(f"{filename}: [txt] must be a table") from None
    od = None
    if "on-demand" in d:
        try:
            od = parse_on_demand(d["on-demand"])
        except ConfigError as e:
            raise ConfigError(f"{filename}: {e}") from None
    return StaticService(name, type_, port, txt, od)


def parse_policy(text: str, uid_of: Callable[[str], int], filename: str = "<policy>") -> Policy:
    """The policy file::

        default = "allow"            # or "deny": types not listed below
        [types]
        "_x11._tcp" = ["alice", 1000]   # user names or uids allowed to register this type
        [limits]                        # per uid other than root; defaults shown
        registrations-per-uid = 256
        connections-per-uid = 128
        connections = 512               # over all uids
        browsed-types = 256             # these three bind root too
        watches-per-connection = 64
        browse-idle-seconds = 60

    Root may always register.
    """
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{filename}: not TOML: {e}") from None
    default = d.get("default", "allow")
    if default not in ("allow", "deny"):
        raise ConfigError(f"{filename}: default must be 'allow' or 'deny'")
    rules: dict[str, frozenset[int]] = {}
    for type_, users in d.get("types", {}).items():
        if not isinstance(users, list):
            raise ConfigError(f"{filename}: types.{type_} must be a list of users")
        uids: set[int] = set()
        for u in users:
            if isinstance(u, int) and not isinstance(u, bool):
                uids.add(u)
            elif isinstance(u, str):
                try:
                    uids.add(uid_of(u))
                except KeyError:
                    raise ConfigError(f"{filename}: unknown user {u!r}") from None
            else:
                raise ConfigError(f"{filename}: bad user {u!r}")
        rules[normalize_type(type_).lower()] = frozenset(uids)
    limits = d.get("limits", {})
    if not isinstance(limits, dict) or set(limits) - set(LIMITS):
        raise ConfigError(f"{filename}: [limits] takes {', '.join(LIMITS)}")
    for key, value in limits.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{filename}: limits.{key} must be a positive integer")
    return Policy(rules, default == "allow", **{LIMITS[k]: v for k, v in limits.items()})


#: The policy file's ``[limits]`` keys and the ``Policy`` fields they set.
LIMITS = {
    "registrations-per-uid": "max_registrations_per_uid",
    "connections-per-uid": "max_connections_per_uid",
    "connections": "max_connections",
    "browsed-types": "max_browsed_types",
    "watches-per-connection": "max_watches_per_connection",
    "browse-idle-seconds": "browse_idle",
}


def default_socket_path(env: Mapping[str, str], uid: int) -> str:
    """Explicit ``--socket`` wins (the caller checks it); then this order."""
    if env.get("DISCOVERY_SOCKET"):
        return env["DISCOVERY_SOCKET"]
    if env.get("XDG_RUNTIME_DIR"):
        return env["XDG_RUNTIME_DIR"].rstrip("/") + "/discovery.sock"
    if uid == 0:
        return "/run/discovery.sock"
    return f"/tmp/discovery-{uid}.sock"
