"""discovery: ``discoveryd``, a per-host binding daemon and superserver with mDNS/DNS-SD, its client library and CLI.

The names below are imported on first use, so that ``discovery.blocking`` (a lookup with the
standard library only) can be used without importing Twisted."""

from __future__ import annotations

import importlib
from typing import Any

_FROM = {
    **dict.fromkeys(("DiscoveryClient", "DiscoveryError", "NotConnected", "Registration",
                     "ServiceRecord", "Services", "Watch", "WatchEvent", "connect", "lookup",
                     "register",
                     "socket_path", "watch"), "discovery.client"),
    **dict.fromkeys(("Policy", "Registry", "RegistryError", "Service"), "discovery.registry"),
}

__all__ = ["DiscoveryClient", "DiscoveryError", "NotConnected", "Policy", "Registration",
           "Registry", "RegistryError", "Service", "ServiceRecord", "Services", "Watch", "WatchEvent",
           "connect", "lookup", "register", "socket_path", "watch"]


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module 'discovery' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
