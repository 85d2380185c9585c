"""Replication policies as pure state machines over replies and an injected clock.

Theory of operation
-------------------
A call is one :class:`CallMachine`. The adapter feeds it what happens — ``start``, a
replica ``answered`` or ``failed``, the clock reached ``next_wake()`` — and executes the
actions it returns: :class:`Send` a message to a replica, or finish with
:class:`Succeed` / :class:`Fail`. The machine never sees a socket, a reactor or the
wall clock; ``now`` is always an argument. A message is identified by
``(replica, stage)``; a replica gets at most one message per stage of a call, so late
replies from an earlier stage are recognised and ignored.

``First`` (hedged requests, after Finagle's backup requests and "The Tail at Scale"):
a write goes to every replica at once and succeeds at the first ``write_acks``
acknowledgements (:class:`WriteAllCall`, as Dynamo and Cassandra clients write at
consistency level ONE); a read goes to one replica, the first of the candidates (the adapter orders them with
``replicaclient.balancer``: power of two choices, then cheapest first), gets the call; if
it has not answered by the hedge delay (a percentile of observed latency) the next one
gets a copy.
The first answer wins. Hedges and retries happen only for idempotent commands and only
while the retry budget has a token. A share of reads (``read_repair``) instead asks every
replica, answers with the newest-tagged reply and writes it back to the stale ones
(:class:`RepairCall`).

``Vote``: every replica gets the call; the first answer given identically by
``threshold`` replicas wins. As soon as no answer can reach the threshold any more the
call fails with :class:`~replicaclient.errors.NoQuorum`. A minority answer is never
returned.

``Quorum`` (ABD, Attiya–Bar-Noy–Dolev): linearizable read/write registers over 2f+1
crash-prone replicas. A write asks a majority for their tags, picks a tag above the
highest, and stores the write with it on a majority. A read collects answers with tags
from a majority, and if they disagree, writes the highest-tagged write back to a
majority before returning its answer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .declare import Semantics
from .errors import DeadlineExceeded, NoQuorum, NoReplicas
from .tag import ZERO, Tag

# --- events and actions ----------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A usable answer from a replica: a normal response or a declared error.

    ``value`` is what votes compare; ``payload`` is handed back untouched on success;
    ``text`` describes the answer for people (in :class:`NoQuorum`)."""

    value: Hashable
    payload: Any = None
    text: str = ""
    tag: Tag | None = None
    record: Any = None


@dataclass(frozen=True)
class Send:
    """Send stage ``stage`` of the call to ``replica``. ``kind`` says why, for metrics:
    primary, hedge, retry, probe or fanout. ``tag`` and ``record`` are for quorum."""

    replica: str
    stage: str
    kind: str = "primary"
    tag: Tag | None = None
    record: Any = None


@dataclass(frozen=True)
class Succeed:
    payload: Any
    replica: str
    kind: str


@dataclass(frozen=True)
class Fail:
    error: BaseException


Action = Send | Succeed | Fail


@dataclass
class CallContext:
    """Everything a machine needs to know about one call, decided by the adapter."""

    command: str
    semantics: Semantics
    candidates: Sequence[str]
    """Replicas to use, in the order to use them (not ejected)."""
    members: int
    """Size of the membership: thresholds count replicas that are down or ejected too."""
    now: float
    deadline: float
    probes: Sequence[str] = ()
    """Replicas back from ejection, to be tried before they get real traffic."""
    ejected: Sequence[str] = ()
    hedge_delay: float | None = None
    spend: Callable[[], bool] = lambda: True
    """Take a token from the retry budget; False when the budget is empty."""
    client: str = ""
    seq: int = 0
    repair: bool = False
    """A ``first`` read chosen for read repair (the adapter samples ``read_repair``)."""
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Members not asked, and why (e.g. still catching up), for error messages."""


class CallMachine:
    """Base of the per-call state machines. After the call is done every input
    returns no action."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.done = False
        self.outstanding: dict[str, str] = {}
        """replica -> kind of the message in flight in the current stage."""
        self.stage = "call"
        self.said: dict[str, str] = {r: "ejected, not asked" for r in ctx.ejected}
        self.said.update(ctx.skipped)

    def start(self) -> list[Action]:
        raise NotImplementedError

    def answered(self, replica: str, stage: str, reply: Reply, now: float) -> list[Action]:
        if self.done or stage != self.stage or replica not in self.outstanding:
            return []
        kind = self.outstanding.pop(replica)
        self.said[replica] = reply.text or repr(reply.value)
        return self._answered(replica, kind, reply, now)

    def failed(self, replica: str, stage: str, error: BaseException, now: float) -> list[Action]:
        if self.done or stage != self.stage or replica not in self.outstanding:
            return []
        kind = self.outstanding.pop(replica)
        self.said[replica] = f"failed: {_describe(error)}"
        return self._failed(replica, kind, error, now)

    def wake(self, now: float) -> list[Action]:
        if self.done:
            return []
        if now >= self.ctx.deadline:
            return self._expired()
        return self._wake(now)

    def next_wake(self) -> float | None:
        return None if self.done else self.ctx.deadline

    # -- for subclasses

    def _answered(self, replica: str, kind: str, reply: Reply, now: float) -> list[Action]:
        raise NotImplementedError

    def _failed(self, replica: str, kind: str, error: BaseException, now: float) -> list[Action]:
        raise NotImplementedError

    def _wake(self, now: float) -> list[Action]:
        return []

    def _expired(self) -> list[Action]:
        return self._fail(DeadlineExceeded(
            f"{self.ctx.command}: no answer before the deadline"
            f" (waiting for {', '.join(sorted(self.outstanding)) or 'nobody'})"))

    def _send(self, replica: str, kind: str, tag: Tag | None = None,
              record: Any = None) -> Send:
        self.outstanding[replica] = kind
        return Send(replica, self.stage, kind, tag, record)

    def _succeed(self, payload: Any, replica: str, kind: str) -> list[Action]:
        self.done = True
        return [Succeed(payload, replica, kind)]

    def _fail(self, error: BaseException) -> list[Action]:
        self.done = True
        return [Fail(error)]

    def _no_quorum(self, threshold: int, reason: str) -> list[Action]:
        said = dict(self.said)
        for replica in self.outstanding:
            said.setdefault(replica, "no answer yet")
        return self._fail(NoQuorum(self.ctx.command, threshold, said, reason))


def _describe(error: BaseException) -> str:
    text = str(error)
    name = type(error).__name__
    return f"{name}: {text}" if text else name


# --- first -------------------------------------------------------------------------------


class FirstCall(CallMachine):
    def __init__(self, ctx: CallContext, max_hedges: int, retries: int) -> None:
        super().__init__(ctx)
        self.queue = list(ctx.candidates)
        self.hedges_left = max_hedges if ctx.semantics.hedgeable else 0
        self.retries_left = retries if ctx.semantics.hedgeable else 0
        self.hedge_at: float | None = None
        self.last_error: BaseException | None = None

    def start(self) -> list[Action]:
        probes = [p for p in self.ctx.probes if p not in self.queue] if self.ctx.probes else []
        if not self.queue:
            if not (probes and self.ctx.semantics.hedgeable):
                return self._fail(NoReplicas(f"{self.ctx.command}: no replica available"))
            self.queue, probes = probes[:1], probes[1:]
        actions: list[Action] = [self._send(self.queue.pop(0), "primary")]
        if self.ctx.semantics.hedgeable:
            actions += [self._send(p, "probe") for p in probes]
        self._arm_hedge(self.ctx.now)
        return actions

    def _arm_hedge(self, now: float) -> None:
        delay = self.ctx.hedge_delay
        if self.hedges_left > 0 and self.queue and delay is not None:
            self.hedge_at = now + delay
        else:
            self.hedge_at = None

    def _answered(self, replica: str, kind: str, reply: Reply, now: float) -> list[Action]:
        return self._succeed(reply.payload, replica, kind)

    def _failed(self, replica: str, kind: str, error: BaseException, now: float) -> list[Action]:
        if kind != "probe" or self.last_error is None:
            self.last_error = error
        if kind != "probe" and self.retries_left > 0 and self.queue and self.ctx.spend():
            self.retries_left -= 1
            return [self._send(self.queue.pop(0), "retry")]
        if any(k != "probe" for k in self.outstanding.values()):
            return []
        if self.outstanding:
            # Only probes are left; a probe is a real attempt, so let it finish.
            return []
        return self._fail(self.last_error)

    def _wake(self, now: float) -> list[Action]:
        if self.hedge_at is None or now < self.hedge_at:
            return []
        self.hedge_at = None
        if not (self.queue and self.ctx.spend()):
            return []
        self.hedges_left -= 1
        action = self._send(self.queue.pop(0), "hedge")
        self._arm_hedge(now)
        return [action]

    def next_wake(self) -> float | None:
        if self.done:
            return None
        if self.hedge_at is not None:
            return min(self.hedge_at, self.ctx.deadline)
        return self.ctx.deadline


class WriteAllCall(CallMachine):
    """A write under ``first``: every replica gets it at once; the call succeeds at the
    ``need``-th acknowledgement and fails as soon as that many can no longer come (with
    the last error when one was needed, as one server would, else :class:`NoQuorum`)."""

    def __init__(self, ctx: CallContext, need: int) -> None:
        super().__init__(ctx)
        self.need = need
        self.acks = 0
        self.last_error: BaseException | None = None

    def start(self) -> list[Action]:
        targets = list(self.ctx.candidates) + [
            p for p in self.ctx.probes if p not in self.ctx.candidates]
        if not targets:
            return self._fail(NoReplicas(f"{self.ctx.command}: no replica available"))
        actions: list[Action] = [
            self._send(r, "probe" if r in self.ctx.probes else "fanout") for r in targets]
        if len(targets) < self.need:
            actions += self._no_quorum(
                self.need, f"only {len(targets)} of {self.ctx.members} replicas reachable")
        return actions

    def _answered(self, replica: str, kind: str, reply: Reply, now: float) -> list[Action]:
        self.acks += 1
        if self.acks >= self.need:
            return self._succeed(reply.payload, replica, kind)
        return []

    def _failed(self, replica: str, kind: str, error: BaseException, now: float) -> list[Action]:
        self.last_error = error
        if self.acks + len(self.outstanding) >= self.need:
            return []
        if self.need == 1:
            return self._fail(error)
        return self._no_quorum(self.need, "too few replicas acknowledged the write")

    def _expired(self) -> list[Action]:
        if self.need == 1:
            return super()._expired()
        return self._no_quorum(self.need, "deadline passed")


class RepairCall(CallMachine):
    """A ``first`` read sampled for read repair: every replica is asked for its answer
    and its register's tag; when all have answered (or failed, or the deadline came
    with at least one answer) the newest-tagged answer wins and its write is sent back
    to the replicas that answered with an older tag."""

    def __init__(self, ctx: CallContext) -> None:
        super().__init__(ctx)
        self.replies: dict[str, Reply] = {}
        self.last_error: BaseException | None = None

    def start(self) -> list[Action]:
        targets = list(self.ctx.candidates) + [
            p for p in self.ctx.probes if p not in self.ctx.candidates]
        if not targets:
            return self._fail(NoReplicas(f"{self.ctx.command}: no replica available"))
        self.stage = "read"
        return [self._send(r, "probe" if r in self.ctx.probes else "fanout") for r in targets]

    def _answered(self, replica: str, kind: str, reply: Reply, now: float) -> list[Action]:
        self.replies[replica] = reply
        return [] if self.outstanding else self._decide()

    def _failed(self, replica: str, kind: str, error: BaseException, now: float) -> list[Action]:
        self.last_error = error
        if self.outstanding:
            return []
        if not self.replies:
            return self._fail(error)
        return self._decide()

    def _expired(self) -> list[Action]:
        return self._decide() if self.replies else super()._expired()

    def _decide(self) -> list[Action]:
        name, best = max(self.replies.items(), key=lambda item: item[1].tag or ZERO)
        top = best.tag or ZERO
        stale = [r for r, reply in self.replies.items() if (reply.tag or ZERO) < top]
        actions: list[Action] = []
        if stale and best.record is not None:
            self.stage = "writeback"
            actions = [self._send(r, "repair", best.tag, best.record) for r in stale]
        return actions + self._succeed(best.payload, name, "fanout")


# --- vote --------------------------------------------------------------------------------


class VoteCall(CallMachine):
    def __init__(self, ctx: CallContext, threshold: int) -> None:
        super().__init__(ctx)
        self.threshold = threshold
        self.counts: dict[Hashable, int] = {}

    def start(self) -> list[Action]:
        targets = list(self.ctx.candidates) + [
            p for p in self.ctx.probes if p not in self.ctx.candidates]
        if len(targets) < self.threshold:
            for r in targets:
                self.said[r] = "not asked"
            return self._no_quorum(self.threshold, f"only {len(targets)} replicas reachable")
        return [self._send(r, "probe" if r in self.ctx.probes else "fanout") for r in targets]

    def _answered(self, replica: str, kind: str, reply: Reply, now: float) -> list[Action]:
        count = self.counts[reply.value] = self.counts.get(reply.value, 0) + 1
        if count >= self.threshold:
            return self._succeed(reply.payload, replica, kind)
        return self._check()

    def _failed(self, replica: str, kind: str, error: BaseException, now: float) -> list[Action]:
        return self._check()

    def _check(self) -> list[Action]:
        best = max(self.counts.values(), default=0)
        if best + len(self.outstanding) < self.threshold:
            return self._no_quorum(self.threshold, "no answer can reach the threshold")
        return []

    def _expired(self) -> list[Action]:
        return self._no_quorum(self.threshold, "deadline passed")


# --- quorum (ABD) --------------------------------------------------------------------------


class QuorumCall(CallMachine):
    """ABD over the replicas; stages are query→store for writes, read→writeback for reads."""

    def __init__(self, ctx: CallContext) -> None:
        super().__init__(ctx)
        self.majority = ctx.members // 2 + 1
        self.targets = list(ctx.candidates) + [
            p for p in ctx.probes if p not in ctx.candidates]
        self.replies: dict[str, Reply] = {}
        self.best: Reply | None = None
        self.best_from = ""
        self.reading = ctx.semantics.kind == "read"

    def start(self) -> list[Action]:
        if len(self.targets) < self.majority:
            return self._no_quorum(
                self.majority, f"only {len(self.targets)} of {self.ctx.members} replicas reachable")
        self.stage = "read" if self.reading else "query"
        return self._send_all()

    def _send_all(self, tag: Tag | None = None, record: Any = None) -> list[Action]:
        self.replies = {}
        return [self._send(r, "probe" if r in self.ctx.probes else "fanout", tag, record)
                for r in self.targets]

    def _answered(self, replica: str, kind: str, reply: Reply, now: float) -> list[Action]:
        if self.stage in ("query", "read") and reply.tag is None:
            self.said[replica] = "failed: answered without a tag (not a replicaclient replica?)"
            return self._check()
        self.replies[replica] = reply
        if len(self.replies) < self.majority:
            return []
        return self._advance()

    def _advance(self) -> list[Action]:
        replies = list(self.replies.values())
        if self.stage == "query":
            top = max((r.tag or ZERO) for r in replies)
            mine = Tag(top.ts + 1, self.ctx.client, self.ctx.seq)
            self.stage = "store"
            return self._send_all(tag=mine)
        if self.stage == "read":
            best = max(replies, key=lambda r: r.tag or ZERO)
            self.best, self.best_from = best, self._who(best)
            if all(r.tag == best.tag for r in replies) or best.record is None:
                return self._succeed(best.payload, self.best_from, "fanout")
            self.stage = "writeback"
            return self._send_all(tag=best.tag, record=best.record)
        if self.stage == "writeback":
            assert self.best is not None
            return self._succeed(self.best.payload, self.best_from, "fanout")
        # store: the most common acknowledgement (they are all alike for a plain write)
        counts: dict[Hashable, int] = {}
        for r in replies:
            counts[r.value] = counts.get(r.value, 0) + 1
        top_value = max(counts, key=lambda v: counts[v])
        chosen = next(r for r in replies if r.value == top_value)
        return self._succeed(chosen.payload, self._who(chosen), "fanout")

    def _who(self, reply: Reply) -> str:
        return next((name for name, r in self.replies.items() if r is reply), "")

    def _failed(self, replica: str, kind: str, error: BaseException, now: float) -> list[Action]:
        return self._check()

    def _check(self) -> list[Action]:
        if len(self.replies) + len(self.outstanding) < self.majority:
            return self._no_quorum(self.majority, f"a majority did not answer the {self.stage}")
        return []

    def _expired(self) -> list[Action]:
        return self._no_quorum(self.majority, f"deadline passed during the {self.stage}")


# --- policy objects users name ---------------------------------------------------------------


class Policy:
    """A replication policy: makes one :class:`CallMachine` per call."""

    name = "policy"

    def machine(self, ctx: CallContext) -> CallMachine:
        raise NotImplementedError


@dataclass(frozen=True)
class First(Policy):
    """First answer wins, with hedged requests after an adaptive delay.

    ``percentile`` of recent latencies (per command) is the hedge delay, never below
    ``min_delay``; ``initial_delay`` is used until ``warmup`` latencies are known.
    ``hedge=False`` turns hedging off (retries on failure stay, within the budget).

    Writes go to every replica; ``write_acks`` acknowledgements (a number, ``"majority"``
    or ``"all"`` of the membership) make the call succeed. ``read_repair`` is the share
    of reads of a declared register sent to every replica instead, to answer with the
    newest write and repair the replicas that missed it."""

    hedge: bool = True
    percentile: float = 0.95
    min_delay: float = 0.001
    initial_delay: float = 0.05
    warmup: int = 20
    max_hedges: int = 1
    retries: int = 2
    write_acks: int | str = 1
    read_repair: float = 0.0
    name = "first"

    def __post_init__(self) -> None:
        if isinstance(self.write_acks, str):
            if self.write_acks not in ("majority", "all"):
                raise ValueError(f"write_acks must be a number, 'majority' or 'all', "
                                 f"not {self.write_acks!r}")
        elif self.write_acks < 1:
            raise ValueError("write_acks must be at least 1")
        if not 0.0 <= self.read_repair <= 1.0:
            raise ValueError("read_repair is a fraction between 0 and 1")

    def acks_for(self, members: int) -> int:
        if self.write_acks == "majority":
            return members // 2 + 1
        if self.write_acks == "all":
            return max(1, members)
        return int(self.write_acks)

    def machine(self, ctx: CallContext) -> CallMachine:
        if ctx.semantics.kind == "write":
            return WriteAllCall(ctx, self.acks_for(ctx.members))
        if ctx.repair:
            return RepairCall(ctx)
        return FirstCall(ctx, self.max_hedges if self.hedge else 0, self.retries)


@dataclass(frozen=True)
class Vote(Policy):
    """Everyone answers; ``threshold`` identical answers win.

    By default the threshold is a majority of the membership (f+1 of 2f+1, for replicas
    that crash or lie one at a time). ``byzantine=True`` asks for 2f+1 of 3f+1 with
    f = (n-1)//3, for replicas that may collude. An explicit ``threshold`` overrides both."""

    threshold: int | None = None
    byzantine: bool = False
    name = "vote"

    def threshold_for(self, members: int) -> int:
        if self.threshold is not None:
            return self.threshold
        if self.byzantine:
            return 2 * ((members - 1) // 3) + 1
        return members // 2 + 1

    def machine(self, ctx: CallContext) -> CallMachine:
        return VoteCall(ctx, self.threshold_for(ctx.members))


@dataclass(frozen=True)
class Quorum(Policy):
    """Linearizable registers (ABD) over 2f+1 crash-prone replicas; every command needs a
    ``register`` declaration and every replica the ``replicaclient.server`` helper."""

    name = "quorum"

    def machine(self, ctx: CallContext) -> CallMachine:
        if ctx.semantics.register is None:
            raise ValueError(
                f"{ctx.command}: the quorum policy needs the command declared with "
                "read(register=...) or write(register=...)")
        return QuorumCall(ctx)


_NAMED: dict[str, Callable[[], Policy]] = {"first": First, "vote": Vote, "quorum": Quorum}


def as_policy(spec: str | Policy) -> Policy:
    """A policy object from a name ("first", "vote", "quorum") or a policy object."""
    if isinstance(spec, Policy):
        return spec
    try:
        return _NAMED[spec]()
    except KeyError:
        raise ValueError(f"unknown policy {spec!r}; use one of {sorted(_NAMED)}") from None


__all__ = [
    "Action", "CallContext", "CallMachine", "Fail", "First", "FirstCall", "Policy", "Quorum",
    "QuorumCall", "RepairCall", "Reply", "Send", "Succeed", "Vote", "VoteCall", "WriteAllCall",
    "as_policy",
]
