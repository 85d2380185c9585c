"""discovery: ``discoveryd``, a per-host binding daemon and superserver with mDNS/DNS-SD, its client library and CLI."""

from discovery.client import (
    DiscoveryClient,
    DiscoveryError,
    NotConnected,
    Registration,
    ServiceRecord,
    Watch,
    WatchEvent,
    connect,
    lookup,
    register,
    socket_path,
    watch,
)
from discovery.registry import Policy, Registry, RegistryError, Service

__all__ = [
    "DiscoveryClient",
    "DiscoveryError",
    "NotConnected",
    "Policy",
    "Registration",
    "Registry",
    "RegistryError",
    "Service",
    "ServiceRecord",
    "Watch",
    "WatchEvent",
    "connect",
    "lookup",
    "register",
    "socket_path",
    "watch",
]
