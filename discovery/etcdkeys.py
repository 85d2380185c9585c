"""How discoveryd lays out services in etcd, and the backend URL: pure functions, no I/O.

Key layout: ``<prefix><type>/<name>``, e.g. ``/xtransparency/services/_kv._tcp/kv1``, the
type and name lower-cased (names compare case-insensitively, as in DNS, so ``KV1`` and
``kv1`` are one key) and the name percent-encoded (it may hold ``/``). The value is JSON:
the service as lookups return it (display-case name, host, addresses, port, txt, owner
uid/pid) plus ``daemon``, the ``--host-name`` of the daemon that holds it. Every key is
bound to its daemon's lease.

The etcd v3 JSON gateway carries keys and values base64-encoded and 64-bit integers as
decimal strings; ``b64``/``unb64`` and ``range_end_b64`` follow it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from discovery.registry import ETCD, Service, normalize_type

DEFAULT_PREFIX = "/xtransparency/services/"
DEFAULT_TTL = 6  # s; keepalive every TTL/3, so one lost keepalive is survived
MIN_TTL = 2


class BackendURLError(ValueError):
    pass


@dataclass(frozen=True)
class EtcdConfig:
    """``etcd://HOST:PORT[,HOST:PORT...][?ttl=S&prefix=/p/&timeout=S]``."""

    endpoints: tuple[str, ...]  # "http://host:port"
    prefix: str = DEFAULT_PREFIX
    ttl: int = DEFAULT_TTL
    timeout: float = 1.5  # s for one request; a stopped member must not hold us longer

    def url(self) -> str:
        hosts = ",".join(e.removeprefix("http://") for e in self.endpoints)
        return f"etcd://{hosts}?ttl={self.ttl}&timeout={self.timeout:g}&prefix={self.prefix}"


def parse_backend_url(url: str) -> EtcdConfig:
    parts = urlsplit(url)
    if parts.scheme != "etcd":
        raise BackendURLError(f"backend {url!r}: expected etcd://HOST:PORT[,HOST:PORT...] (or mdns)")
    endpoints = []
    for hp in parts.netloc.split(","):
        host, sep, port = hp.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BackendURLError(f"backend {url!r}: {hp!r} is not HOST:PORT")
        endpoints.append(f"http://{host}:{int(port)}")
    if parts.path not in ("", "/"):
        raise BackendURLError(f"backend {url!r}: give the key prefix as ?prefix=/path/")
    q = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(q) - {"ttl", "prefix", "timeout"}
    if unknown:
        raise BackendURLError(f"backend {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        ttl = int(q.get("ttl", DEFAULT_TTL))
        timeout = float(q.get("timeout", 1.5))
    except ValueError:
        raise BackendURLError(f"backend {url!r}: ttl and timeout are numbers of seconds") from None
    if ttl < MIN_TTL:
        raise BackendURLError(f"backend {url!r}: ttl must be at least {MIN_TTL} s")
    if not 0 < timeout < ttl:
        raise BackendURLError(f"backend {url!r}: timeout must be between 0 and the ttl")
    prefix = q.get("prefix", DEFAULT_PREFIX)
    if not prefix.startswith("/"):
        raise BackendURLError(f"backend {url!r}: prefix must start with /")
    if not prefix.endswith("/"):
        prefix += "/"
    return EtcdConfig(tuple(endpoints), prefix, ttl, timeout)


def service_etcd_key(prefix: str, name: str, type_: str) -> str:
    return f"{prefix}{normalize_type(type_).lower()}/{quote(name.lower(), safe='')}"


def parse_etcd_key(prefix: str, key: str) -> tuple[str, str] | None:
    """(name, type) of a service key, lower-case; None for anything else under the prefix."""
    if not key.startswith(prefix):
        return None
    type_, sep, name = key[len(prefix):].partition("/")
    if not sep or not type_ or not name or "/" in name:
        return None
    return unquote(name), type_


def encode_value(service: Service, daemon: str) -> bytes:
    d = service.to_json()
    d.pop("source", None)
    d["daemon"] = daemon
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


def decode_value(value: bytes) -> tuple[Service, str] | None:
    """(service, daemon) from a value, or None if it is not one of ours (bad JSON, fields)."""
    try:
        d = json.loads(value)
        if not isinstance(d, dict):
            return None
        svc = Service.from_json(d)
        if not isinstance(svc.name, str) or not isinstance(svc.host, str):
            return None
        return Service(**{**svc.__dict__, "source": ETCD}), str(d.get("daemon", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s: str | None) -> bytes:
    return base64.b64decode(s or "")


def range_end_b64(prefix: str) -> str:
    """The key just past every key starting with ``prefix`` (etcd's ``--prefix``), base64."""
    p = bytearray(prefix.encode())
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return base64.b64encode(bytes(p)).decode()
        p.pop()
    return base64.b64encode(b"\0").decode()


def kv_fields(kv: Mapping[str, Any]) -> tuple[str, bytes, int, int]:
    """(key, value, mod_revision, lease) of a gateway ``kv`` object."""
    return (
        unb64(kv.get("key")).decode("utf-8", "replace"),
        unb64(kv.get("value")),
        int(kv.get("mod_revision", 0)),
        int(kv.get("lease", 0)),
    )
