"""Bringing a replica that is behind up to date: learn its incarnation, replay the writes it
missed (hinted handoff), sync it fully from the others when it restarted, lost hints or
joined, then let it have reads. What to do is decided by the pure ``handoff`` and ``sync``;
this drives it over the replicas' connections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import DeferredList, ensureDeferred, fail
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import sync, wire
from .policy import Vote

if TYPE_CHECKING:
    from .client import ReplicatedClient
    from .connection import Replica, ReplicaAMP

_log = Logger(namespace="replicaclient.client")  # one namespace for the stub's log lines


def catch_up(client: ReplicatedClient, replica: Replica) -> None:
    """Bring ``replica`` up to date (:func:`bring_up`) unless that is running, it is not
    connected, or the stub is closed; tried again a second later while it fails."""
    if replica.catching_up or replica.proto is None or client._closed or replica.closed:
        return
    replica.catching_up = True
    if replica.retry is not None and replica.retry.active():
        replica.retry.cancel()
    replica.retry = None

    def done(ok: Any) -> None:
        replica.catching_up = False
        if ok is True or replica.closed or client._closed:
            return
        if isinstance(ok, Failure):
            _log.failure("replica {name}: catching up failed", ok, name=replica.name)
        if replica.proto is not None:  # try again; a new connection starts anew itself
            replica.retry = client.reactor.callLater(1.0, catch_up, client, replica)

    ensureDeferred(bring_up(client, replica, replica.proto)).addBoth(done)


async def bring_up(client: ReplicatedClient, replica: Replica, proto: ReplicaAMP) -> bool:
    """Learn the replica's incarnation, replay its hints in tag order, sync it fully
    if it restarted, lost hints or is new, then let it have reads. False if the
    connection changed or the sync could not be done (to be tried again)."""
    generation = replica.generation
    incarnation = await hello(client, proto)
    if replica.generation != generation:
        return False
    if incarnation is None and replica.needs_sync is not None:
        return False  # no answer to Hello this time: the sync still due waits
    known, replica.incarnation = replica.incarnation, incarnation or replica.incarnation
    reason = replica.needs_sync = sync.sync_reason(
        known, incarnation, pending=replica.needs_sync, joined=replica.fresh,
        hints_dropped=replica.hints.overflowed)
    if not await replay(client, replica, proto):
        return False
    if reason is not None:
        _log.info("replica {name}: full sync: {why}", name=replica.name, why=reason)
        if not await full_sync(client, replica, proto, generation):
            return False
        replica.needs_sync = None
    if replica.generation != generation or len(replica.hints):
        return False
    replica.hints.synced()
    replica.fresh = False
    replica.readable = True
    return True


async def hello(client: ReplicatedClient, proto: ReplicaAMP) -> str | None:
    """The replica's incarnation; None without the replica-side helper."""
    try:
        box = await proto.callRemoteString(wire.HELLO_COMMAND).addTimeout(
            min(client.timeout, 10.0), client.reactor)
        return str(box[wire.INCARNATION].decode("ascii"))
    except Exception:  # noqa: BLE001 (no helper, or no answer: nothing to compare)
        return None


async def replay(client: ReplicatedClient, replica: Replica, proto: ReplicaAMP) -> bool:
    """Send ``replica`` the writes it missed, in tag order; False if any was not
    delivered (those are kept for the next attempt)."""
    hints = replica.hints.take()
    if not hints:
        return True
    asks = [proto.ask(h.head, h.command, client.timeout) for h in hints]
    results = await DeferredList(asks, consumeErrors=True)
    delivered = True
    for hint, (ok, _) in zip(hints, results, strict=True):
        if ok:
            client.metrics.hints_replayed += 1
        else:
            replica.hints.add(hint)
            delivered = False
    if delivered:
        _log.info("replica {name}: {n} hinted writes replayed", name=replica.name,
                  n=len(hints))
    return delivered


async def full_sync(client: ReplicatedClient, target: Replica, proto: ReplicaAMP,
                    generation: int) -> bool:
    """Copy the newest state of every register from the live replicas into
    ``target`` (under ``vote``, only states a threshold of them agree on)."""
    started = client.reactor.seconds()
    sources = {n: r for n, r in client.replicas.items()
               if r is not target and r.proto is not None and r.readable
               and r.incarnation is not None}
    had_sources = bool(sources)  # none: this stub has no replica it trusts yet
    threshold = (client.policy.threshold_for(len(sources))
                 if isinstance(client.policy, Vote) else None)
    chosen: dict[bytes, sync.Entry] = {}
    after: bytes | None = None
    while True:
        pages = await fetch_pages(client, sources, after)
        if target.generation != generation:
            return False
        picked = sync.select(pages, after=after, now_ms=client.clock.now_ms(),
                             future_ms=client.future_ms, threshold=threshold)
        if picked.rejected:
            for source, why in picked.rejected.items():
                _log.warn("sync of {target}: source {source} not used: {why}",
                          target=target.name, source=source, why=why)
                del sources[source]
            chosen, after = {}, None  # start again without what they sent
            continue
        for entry in picked.entries:
            chosen[entry.register] = entry
        if picked.upto is None:
            break
        after = picked.upto
    if not sources and had_sources:
        client.metrics.sync_failures += 1
        _log.warn("sync of {target}: no source could be used", target=target.name)
        return False
    entries = list(chosen.values())
    for entry in entries:
        client.clock.observe(entry.tag.ts)
    loads = []
    for at in range(0, len(entries), client.sync_page):
        box = sync.encode_page(entries[at:at + client.sync_page], more=False)
        loads.append(proto.callRemoteString(
            wire.LOAD_COMMAND, **{k.decode("ascii"): v for k, v in box.items()}
        ).addTimeout(client.timeout, client.reactor))
    results = await DeferredList(loads, consumeErrors=True)
    if target.generation != generation or not all(ok for ok, _ in results):
        client.metrics.sync_failures += 1
        return False
    elapsed = client.reactor.seconds() - started
    client.metrics.syncs += 1
    client.metrics.synced_registers += len(chosen)
    client.metrics.sync_seconds.observe(elapsed)
    _log.info("replica {name} synced: {n} registers from {sources} in {s:.3f} s",
              name=target.name, n=len(chosen), sources=sorted(sources), s=elapsed)
    return True


async def fetch_pages(client: ReplicatedClient, sources: Mapping[str, Replica],
                      after: bytes | None) -> dict[str, sync.Page | BaseException]:
    """One page of registers after ``after`` from each source, or why it sent none."""
    names = list(sources)
    asks = []
    for name in names:
        proto = sources[name].proto
        if proto is None:
            asks.append(fail(ConnectionLost(f"{name} is not connected")))
            continue
        args = {"_rc_limit": b"%d" % client.sync_page}
        if after is not None:
            args["_rc_after"] = after
        asks.append(proto.callRemoteString(wire.DUMP_COMMAND, **args).addTimeout(
            client.timeout, client.reactor))
    results = await DeferredList(asks, consumeErrors=True)
    pages: dict[str, sync.Page | BaseException] = {}
    for name, (ok, found) in zip(names, results, strict=True):
        if not ok:
            pages[name] = found.value
            continue
        try:
            pages[name] = sync.parse_page(found, client.sync_page)
        except sync.BadPage as error:
            pages[name] = error
    return pages
