"""replicaclient: call a replicated AMP service as if it were one server.

``ReplicatedClient(reactor, endpoints, policy=...)`` offers ``callRemote`` and
``close`` like ``amp.AMP``; policies are ``first`` (writes to all, hedged reads),
``vote`` and ``quorum`` (linearizable registers, ABD); replicas that miss writes catch
up through hinted handoff and full sync. Commands declare what they do once, with ``read`` and
``write``; replicas wrap their responder with ``replicaclient.server``.

The names below are imported on first use, so that the pure modules (``replicaclient.policy``
and the others the stub drives) can be imported without importing Twisted.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .balancer import Balancer
    from .budget import RetryBudget
    from .client import ReplicatedClient
    from .declare import Semantics, declare, read, semantics_of, write
    from .ejection import OutlierDetector
    from .errors import (
        ClientClosed,
        DeadlineExceeded,
        NoQuorum,
        NoReplicas,
        ReplicaFailed,
        ReplicationError,
    )
    from .membership import Added, MembershipFeed, Removed, static
    from .metrics import ClientMetrics, ReplicaMetrics
    from .policy import First, Policy, Quorum, Vote, as_policy
    from .tag import HybridClock, Tag

_FROM = {
    "Balancer": "balancer", "RetryBudget": "budget", "ReplicatedClient": "client",
    **dict.fromkeys(("Semantics", "declare", "read", "semantics_of", "write"), "declare"),
    "OutlierDetector": "ejection",
    **dict.fromkeys(("ClientClosed", "DeadlineExceeded", "NoQuorum", "NoReplicas",
                     "ReplicaFailed", "ReplicationError"), "errors"),
    **dict.fromkeys(("Added", "MembershipFeed", "Removed", "static"), "membership"),
    **dict.fromkeys(("ClientMetrics", "ReplicaMetrics"), "metrics"),
    **dict.fromkeys(("First", "Policy", "Quorum", "Vote", "as_policy"), "policy"),
    **dict.fromkeys(("HybridClock", "Tag"), "tag"),
}

__all__ = [
    "Added", "Balancer", "ClientClosed", "ClientMetrics", "DeadlineExceeded", "First",
    "HybridClock", "MembershipFeed", "NoQuorum", "NoReplicas", "OutlierDetector", "Policy",
    "Quorum", "Removed", "ReplicaFailed", "ReplicaMetrics", "ReplicatedClient",
    "ReplicationError", "RetryBudget", "Semantics",
    "Tag", "Vote", "as_policy", "declare", "read", "semantics_of", "static", "write",
]


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module 'replicaclient' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"replicaclient.{module}"), name)
    globals()[name] = value
    return value
