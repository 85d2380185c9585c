"""The etcd backend: publishes the registry's local services as leased keys in etcd and mirrors
what other daemons put there, through etcd's v3 JSON gateway (HTTP/1.1 + JSON, served by
etcd 3.4+ at ``/v3/...``) with Twisted's own HTTP client.

Why the JSON gateway and ``twisted.web.client.Agent``: both run on the reactor with no
thread and no new dependency; the watch API is a streaming HTTP response of newline-
delimited JSON that a ``Protocol`` reads as it arrives; etcd 3.4 (Debian's) and later
serve it unchanged. The gRPC clients on PyPI either pin old protobuf/grpcio (``etcd3``,
unmaintained since 2020) or are asyncio-only with their own channel threads; a blocking
client would need a thread per watch and hand-offs to the reactor for every event.

Theory of operation
-------------------
The daemon holds **one lease** (``ttl``, default 6 s) for all of its keys and renews it
every ``ttl/3`` (``/v3/lease/keepalive``), like etcd's own ``concurrency.Session``:

- an owner's death withdraws its registrations in the registry, which deletes their keys at
  once (a transaction guarded by ``lease == ours``, so we never delete another daemon's key);
- a clean daemon stop revokes the lease: every key goes at once;
- a daemon's death or partition stops the keepalives: etcd deletes the keys within ``ttl``.

A registration is created with a transaction ``create_revision == 0 -> put(lease)``, else
the holder is read: a key held under our lease, or left by an earlier life of this daemon
(same ``--host-name``), is taken over (``mod_revision`` guarded); any other holder makes it a
conflict, reported like an mDNS conflict (the owner's ``Registration.lost``).

Other daemons' keys are mirrored: a range read of the whole prefix, then a watch from the
next revision. Each (re)connection re-reads the prefix and diffs it against the mirror.

Failure: any request without an answer within ``timeout`` (a stopped member accepts TCP but
never answers), a closed watch stream or a canceled watch ends the session; the backend is
reported ``down`` with the reason, the next endpoint is tried (backoff up to 2 s), and on
recovery the old lease is kept if it is still alive, else a new one is granted and every
local registration is made again. Meanwhile local clients are served as before and the
mirror keeps the last known remote entries.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer, protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from discovery.etcdkeys import (
    EtcdConfig,
    b64,
    decode_value,
    encode_value,
    kv_fields,
    parse_etcd_key,
    range_end_b64,
    service_etcd_key,
)
from discovery.registry import Service, service_key

if TYPE_CHECKING:
    from discovery.reactor import IEtcdReactor

log = Logger(namespace="discovery.etcd")

UP, DOWN, CONNECTING = "up", "down", "connecting"
_HEADERS = Headers({b"content-type": [b"application/json"]})
_UNAVAILABLE_CODES = {4, 14}  # gRPC DEADLINE_EXCEEDED, UNAVAILABLE (no leader, timeouts)
MAX_BACKOFF = 2.0


class EtcdError(Exception):
    """etcd answered, with an error (a bad request, a lease not found, ...)."""


class EtcdUnavailable(Exception):
    """No usable answer from the endpoint: refused, reset, timed out, no leader."""


@implementer(IBodyProducer)
class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    @classmethod
    def of(cls, obj: Any) -> IBodyProducer:
        return cls(json.dumps(obj).encode())

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.data)
        return defer.succeed(None)

    def stopProducing(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


class _Lines(protocol.Protocol):
    """A streaming response body of newline-delimited JSON (the gateway's watch stream)."""

    def __init__(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        self.on_message = on_message
        self.buf = b""
        self.done: Deferred[None] = Deferred()
        self.reason: Any = None  # the Failure the stream ended with
        self.cancelled = False

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if not line.strip() or self.cancelled:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                log.error("etcd watch: not JSON: {line!r}", line=line[:200])
                continue
            if isinstance(msg, dict):
                self.on_message(msg)

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        if not self.done.called:
            self.done.callback(None)

    def cancel(self) -> None:
        self.cancelled = True
        if self.transport is not None:
            # a response body's transport is a producer (IResponse.deliverBody)
            cast(IPushProducer, self.transport).stopProducing()


def _describe(exc: BaseException) -> str:
    reasons = getattr(exc, "reasons", None)  # ResponseFailed / ResponseNeverReceived
    if reasons:
        return "; ".join(_describe(r.value) for r in reasons)
    text = str(exc).strip() or type(exc).__name__
    return text


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False  # one log line per connection is noise when a watch reconnects


class Gateway:
    """POSTs to the v3 JSON gateway of one endpoint at a time; ``rotate`` moves to the next."""

    def __init__(self, reactor: IEtcdReactor, endpoints: tuple[str, ...], timeout: float) -> None:
        self.reactor = reactor
        self.endpoints = endpoints
        self.timeout = timeout
        self.index = 0
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.retryAutomatically = False
        self._pool._factory = _QuietFactory
        self._agent = Agent(reactor, connectTimeout=timeout, pool=self._pool)
        self._stream_pool = HTTPConnectionPool(reactor, persistent=False)
        self._stream_pool._factory = _QuietFactory
        self._stream_agent = Agent(reactor, connectTimeout=timeout, pool=self._stream_pool)

    @property
    def endpoint(self) -> str:
        return self.endpoints[self.index]

    def rotate(self) -> None:
        self.index = (self.index + 1) % len(self.endpoints)

    async def call(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        endpoint = self.endpoint
        t = self.timeout if timeout is None else timeout

        async def go() -> tuple[int, bytes]:
            resp = await self._agent.request(b"POST", (endpoint + path).encode(), _HEADERS, _Body.of(body))
            return resp.code, await readBody(resp)

        code, data = await self._deadline(defer.ensureDeferred(go()), t, endpoint, path)
        return _answer(endpoint, path, code, data)

    async def _deadline(self, d: Deferred[Any], t: float, endpoint: str, path: str) -> Any:
        """``d``'s result, or ``EtcdUnavailable`` when it fails or takes longer than ``t``."""
        late: list[bool] = []

        def expire() -> None:
            late.append(True)
            d.cancel()

        timer = self.reactor.callLater(t, expire)
        try:
            return await d
        except Exception as e:  # noqa: BLE001 - refused, reset, DNS...: all mean "not reachable now"
            if late:  # a cancelled request fails with whatever the agent makes of it
                raise EtcdUnavailable(f"{endpoint}: no answer to {path} within {t:g} s") from None
            raise EtcdUnavailable(f"{endpoint}: {path}: {_describe(e)}") from None
        finally:
            if timer.active():
                timer.cancel()

    async def watch(self, body: dict[str, Any], on_message: Callable[[dict[str, Any]], None]) -> _Lines:
        endpoint = self.endpoint
        d = self._stream_agent.request(b"POST", (endpoint + "/v3/watch").encode(), _HEADERS, _Body.of(body))
        resp = await self._deadline(d, self.timeout, endpoint, "/v3/watch")
        if resp.code != 200:
            _answer(endpoint, "/v3/watch", resp.code, await readBody(resp))
        lines = _Lines(on_message)
        resp.deliverBody(lines)
        return lines

    async def close(self) -> None:
        await self._pool.closeCachedConnections()
        await self._stream_pool.closeCachedConnections()


def _answer(endpoint: str, path: str, code: int, data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError:
        raise EtcdUnavailable(f"{endpoint}: {path}: HTTP {code}, not JSON: {data[:100]!r}") from None
    if not isinstance(obj, dict):
        raise EtcdUnavailable(f"{endpoint}: {path}: HTTP {code}, unexpected answer")
    if code != 200 or "error" in obj:
        message = obj.get("message") or obj.get("error") or f"HTTP {code}"
        if obj.get("code") in _UNAVAILABLE_CODES or code >= 500 and obj.get("code") is None:
            raise EtcdUnavailable(f"{endpoint}: {path}: {message}")
        raise EtcdError(f"{endpoint}: {path}: {message}")
    return obj


def _cmp(target: str, key: str, **value: Any) -> dict[str, Any]:
    return {"target": target, "key": b64(key), "result": "EQUAL", **{k: str(v) for k, v in value.items()}}


class EtcdAdapter:
    """Carries out ``Publish``/``Unpublish`` in etcd and feeds other daemons' keys back."""

    def __init__(
        self,
        reactor: IEtcdReactor,
        config: EtcdConfig,
        daemon: str,
        on_upsert: Callable[[Service], None],
        on_remove: Callable[[str, str], None],
        on_conflict: Callable[[Service, str], None],
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.daemon = daemon  # our --host-name: keys whose value names it are ours
        self.on_upsert = on_upsert
        self.on_remove = on_remove
        self.on_conflict = on_conflict
        self.gw = Gateway(reactor, config.endpoints, config.timeout)
        self.state = CONNECTING
        self.error: str | None = None
        self.changed_at = reactor.seconds()
        self.lease = 0
        self.remade = 0  # registrations made again after a lost lease, over the daemon's life
        self._wanted: dict[str, Service] = {}
        self._held: dict[str, bytes] = {}  # key -> value we put under self.lease
        self._busy: set[str] = set()
        self._dirty: set[str] = set()
        self._mirror: dict[str, tuple[str, str]] = {}  # other daemons' keys -> (name, type)
        self._stream: _Lines | None = None
        self._broken: str | None = None
        self._wake: Deferred[None] | None = None
        self._wake_call: Any = None
        self._stopped = False
        self._first: list[Deferred[None]] = []
        self._loop: Deferred[None] | None = None
        self._session_no = 0

    # -- life cycle ----------------------------------------------------------------------

    async def start(self, wait: float = 2.0) -> None:
        """Start connecting; return once connected (or failed) or after ``wait`` seconds."""
        d: Deferred[None] = Deferred()
        self._first.append(d)
        self._loop = defer.ensureDeferred(self._run())
        self._loop.addErrback(lambda f: log.failure("etcd backend stopped", f))
        if not d.called:
            d.addTimeout(wait, self.reactor, onTimeoutCancel=lambda *_: None)
            await d

    async def stop(self) -> None:
        """Revoke the lease (every key goes at once) and close the connections."""
        self._stopped = True
        self._interrupt()
        self._end_stream()
        if self.lease and self.state == UP:
            try:
                await self.gw.call("/v3/lease/revoke", {"ID": str(self.lease)}, timeout=1.0)
            except (EtcdError, EtcdUnavailable) as e:
                log.warn("etcd: could not revoke lease {lease:x}: {e}", lease=self.lease, e=e)
        await self.gw.close()

    def status(self) -> dict[str, Any]:
        return {
            "backend": "etcd",
            "state": self.state,
            "endpoint": self.gw.endpoint,
            "endpoints": list(self.config.endpoints),
            "for": round(self.reactor.seconds() - self.changed_at, 1),
            "error": self.error,
            "lease": f"{self.lease:x}" if self.lease else None,
            "ttl": self.config.ttl,
            "prefix": self.config.prefix,
            "published": len(self._held),
            "pending": sum(1 for k, s in self._wanted.items() if k not in self._held),
            "remote": len(self._mirror),
            "remade": self.remade,
        }

    def _settle_first(self) -> None:
        waiters, self._first = self._first, []
        for d in waiters:
            if not d.called:
                d.callback(None)

    def _set_state(self, state: str, error: str | None = None) -> None:
        if state != self.state:
            self.changed_at = self.reactor.seconds()
        if state == DOWN and (self.state != DOWN or error != self.error):
            log.error(
                "etcd backend down: {error}; serving local clients, retrying {endpoints}",
                error=error,
                endpoints=",".join(self.config.endpoints),
            )
        self.state = state
        self.error = error
        if state == UP:
            self._settle_first()

    # -- the session loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.1
        failures = 0
        while not self._stopped:
            try:
                await self._session()
            except (EtcdUnavailable, EtcdError) as e:
                error = str(e)
            except Exception as e:  # noqa: BLE001 - a bug must not kill the backend for good
                log.failure("etcd session failed", failure=_failure(e))
                error = f"internal error: {e!r}"
            finally:
                self._end_stream()
            if self._stopped:
                break
            if self.state == UP:
                backoff, failures = 0.1, 0
            self._set_state(DOWN, error)
            self.gw.rotate()
            failures += 1
            if failures % len(self.config.endpoints) == 0:  # a whole round failed: back off
                self._settle_first()
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _session(self) -> None:
        self._broken = None
        self._session_no += 1
        gw = self.gw
        ttl = self.config.ttl
        if self.lease:
            r = await gw.call("/v3/lease/keepalive", {"ID": str(self.lease)})
            if int(r.get("result", {}).get("TTL", 0)) <= 0:
                log.info("etcd: lease {lease:x} expired meanwhile; making registrations again", lease=self.lease)
                self.lease = 0
        if not self.lease:
            r = await gw.call("/v3/lease/grant", {"TTL": ttl})
            self.lease = int(r["ID"])
            if self._held:
                self.remade += len(self._held)
            self._held.clear()
        revision = await self._load_remote()
        self._stream = await gw.watch(
            {"create_request": {"key": b64(self.config.prefix), "range_end": range_end_b64(self.config.prefix),
                                "start_revision": str(revision + 1)}},
            self._on_watch,
        )
        stream = self._stream
        stream.done.addCallback(lambda _: self._stream_ended(stream))
        was = self.state
        self._set_state(UP)
        log.info("etcd backend up at {endpoint} (was {was}); lease {lease:x}, ttl {ttl} s; {n} registrations to make",
                 endpoint=gw.endpoint, was=was, lease=self.lease, ttl=ttl, n=len(self._wanted))
        for key in list(self._wanted) + [k for k in self._held if k not in self._wanted]:
            self._kick(key)
        while True:
            if not self._broken and not self._stopped:
                await self._sleep(ttl / 3)
            if self._stopped:
                return
            if self._broken:
                raise EtcdUnavailable(self._broken)
            r = await gw.call("/v3/lease/keepalive", {"ID": str(self.lease)})
            if int(r.get("result", {}).get("TTL", 0)) <= 0:
                lease, self.lease = self.lease, 0
                raise EtcdUnavailable(f"{gw.endpoint}: lease {lease:x} expired (keepalives did not reach etcd in time)")

    def _sleep(self, seconds: float) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._wake = d
        self._wake_call = self.reactor.callLater(seconds, self._interrupt)
        return d

    def _interrupt(self) -> None:
        if self._wake_call is not None and self._wake_call.active():
            self._wake_call.cancel()
        self._wake_call = None
        d, self._wake = self._wake, None
        if d is not None and not d.called:
            d.callback(None)

    def _break(self, reason: str) -> None:
        if self._broken is None:
            self._broken = reason
        self._interrupt()

    def _end_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()

    def _stream_ended(self, stream: _Lines) -> None:
        if stream is self._stream and not stream.cancelled:
            why = _describe(stream.reason.value) if stream.reason is not None else "EOF"
            self._break(f"{self.gw.endpoint}: watch stream closed ({why})")

    # -- other daemons' keys ---------------------------------------------------------------------

    async def _load_remote(self) -> int:
        prefix = self.config.prefix
        r = await self.gw.call("/v3/kv/range", {"key": b64(prefix), "range_end": range_end_b64(prefix)})
        seen = set()
        for kv in r.get("kvs", []):
            key, value, _, _ = kv_fields(kv)
            seen.add(key)
            self._remote_put(key, value)
        for key in [k for k in self._mirror if k not in seen]:
            self._remote_gone(key)
        return int(r.get("header", {}).get("revision", 0))

    def _on_watch(self, msg: dict[str, Any]) -> None:
        if "error" in msg:
            err = msg["error"]
            self._break(f"{self.gw.endpoint}: watch: {err.get('message', err) if isinstance(err, dict) else err}")
            return
        res = msg.get("result") or {}
        if res.get("canceled"):
            why = res.get("cancel_reason") or (f"compacted at {res['compact_revision']}" if res.get("compact_revision") else "")
            self._break(f"{self.gw.endpoint}: watch canceled {why}".rstrip())
            return
        for ev in res.get("events", ()):
            key, value, _, _ = kv_fields(ev.get("kv", {}))
            if ev.get("type") == "DELETE":
                self._remote_gone(key)
            else:
                self._remote_put(key, value)

    def _remote_put(self, key: str, value: bytes) -> None:
        parsed = parse_etcd_key(self.config.prefix, key)
        decoded = decode_value(value) if parsed else None
        if parsed is None or decoded is None:
            log.debug("etcd: ignoring key {key!r}", key=key)
            return
        service, daemon = decoded
        if daemon == self.daemon or service_key(service.name, service.type) != parsed:
            return  # ours (this life or an earlier one), or a value that does not match its key
        self._mirror[key] = (service.name, service.type)
        self.on_upsert(service)

    def _remote_gone(self, key: str) -> None:
        known = self._mirror.pop(key, None)
        if known is not None:
            self.on_remove(*known)

    # -- our keys --------------------------------------------------------------------------------

    def publish(self, service: Service) -> None:
        key = service_etcd_key(self.config.prefix, service.name, service.type)
        self._wanted[key] = service
        self._kick(key)

    def unpublish(self, service: Service) -> None:
        key = service_etcd_key(self.config.prefix, service.name, service.type)
        self._wanted.pop(key, None)
        self._kick(key)

    def _kick(self, key: str) -> None:
        if key in self._busy:
            self._dirty.add(key)
            return
        self._busy.add(key)
        defer.ensureDeferred(self._sync_loop(key)).addErrback(lambda f: log.failure("etcd sync {key}", f, key=key))

    async def _sync_loop(self, key: str) -> None:
        try:
            while True:
                self._dirty.discard(key)
                if self.state != UP:
                    return  # the next session reconciles every key
                session = self._session_no
                try:
                    await self._sync(key)
                except EtcdUnavailable as e:
                    if session == self._session_no:
                        self._break(str(e))
                    return
                except EtcdError as e:
                    log.error("etcd: {key}: {e}", key=key, e=e)
                    return
                if key not in self._dirty:
                    return
        finally:
            self._busy.discard(key)

    async def _txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]], failure: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.gw.call("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure})

    async def _sync(self, key: str) -> None:
        """Make etcd agree with ``_wanted`` for one key."""
        lease = self.lease
        want = self._wanted.get(key)
        if want is None:
            if key in self._held:
                await self._txn([_cmp("LEASE", key, lease=lease)], [{"request_delete_range": {"key": b64(key)}}], [])
                if self.lease == lease:
                    self._held.pop(key, None)
            return
        value = encode_value(want, self.daemon)
        if self._held.get(key) == value:
            return
        put = {"request_put": {"key": b64(key), "value": b64(value), "lease": str(lease)}}
        read = {"request_range": {"key": b64(key)}}
        for _ in range(3):
            if key in self._held:
                r = await self._txn([_cmp("LEASE", key, lease=lease)], [put], [read])
            else:
                r = await self._txn([_cmp("CREATE", key, create_revision=0)], [put], [read])
            if r.get("succeeded"):
                if self.lease == lease:
                    self._held[key] = value
                return
            self._held.pop(key, None)
            kvs = r.get("responses", [{}])[0].get("response_range", {}).get("kvs", [])
            if not kvs:
                continue  # deleted in between: create it
            _, old_value, mod, old_lease = kv_fields(kvs[0])
            old = decode_value(old_value)
            if old_lease == lease or (old is not None and old[1] == self.daemon):
                # ours: under this lease, or left by an earlier life of this daemon
                r = await self._txn([_cmp("MOD", key, mod_revision=mod)], [put], [])
                if r.get("succeeded"):
                    if self.lease == lease:
                        self._held[key] = value
                    return
                continue
            if self._wanted.get(key) is want:
                del self._wanted[key]
            who = f"daemon {old[1]!r} (uid {old[0].owner_uid} pid {old[0].owner_pid})" if old else "another client"
            self.on_conflict(want, f"{want.name}.{want.type} is already registered in etcd by {who}")
            return
        raise EtcdError(f"{key}: the key kept changing under us")


def _failure(e: BaseException) -> Any:
    from twisted.python.failure import Failure

    return Failure(e, type(e), e.__traceback__)


__all__ = ["CONNECTING", "DOWN", "UP", "EtcdAdapter", "EtcdError", "EtcdUnavailable", "Gateway"]
