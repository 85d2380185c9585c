"""replicaclient: call a replicated AMP service as if it were one server.

``ReplicatedClient(reactor, endpoints, policy=...)`` offers ``callRemote`` and
``close`` like ``amp.AMP``; policies are ``first`` (writes to all, hedged reads),
``vote`` and ``quorum`` (linearizable registers, ABD); replicas that miss writes catch
up through hinted handoff and full sync. Commands declare what they do once, with ``read`` and
``write``; replicas wrap their responder with ``replicaclient.server``.
"""

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

__all__ = [
    "Added", "Balancer", "ClientClosed", "ClientMetrics", "DeadlineExceeded", "First",
    "HybridClock", "MembershipFeed", "NoQuorum", "NoReplicas", "OutlierDetector", "Policy",
    "Quorum", "Removed", "ReplicaFailed", "ReplicaMetrics", "ReplicatedClient",
    "ReplicationError", "RetryBudget", "Semantics",
    "Tag", "Vote", "as_policy", "declare", "read", "semantics_of", "static", "write",
]
