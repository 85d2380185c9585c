"""One proxied X11 connection as a pure state machine: bytes in, bytes out, no I/O.

`client_data(data)` takes what the X client sent and returns what to send to the server;
`server_data(data)` takes what the server sent and returns what to send to the client.
`to_client` collects what the proxy itself answers the client (a setup failure); `closing`
becomes a reason string when the connection must be closed after writing that.

An observer (a tracer) is called with each message as it is framed, and must be quick about
it; one with a `flush()` method (observe.ClientObserver) only notes the message then, and
does the slow part (decoding, writing a trace line) in `flush()`, which the relay calls once
it has sent the bytes on (`deliver()`), so decoding and tracing are never between a request
and the server or a reply and the client. `client_data` and `server_data` deliver before
they return. A tally (metrics) counts from the headers as the framers read them, and sees
no message whole (tally.py).

Authentication follows OpenSSH's X11 forwarding: the client must present the proxy's own
MIT-MAGIC-COOKIE-1 (compared in constant time), and the setup is rewritten to carry the
target's real authorization, which the client never sees.
"""

from __future__ import annotations

import hmac
import struct
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from .errors import ClientProtocolError
from .extensions import (
    ExtensionInfo,
    ExtensionPolicy,
    filter_list_extensions_reply,
    hide_query_extension_reply,
)
from .framing import (
    COUNT,
    HOLD,
    MAX_HELD_REQUEST,
    PASS,
    WATCH,
    Buffer,
    Observer,
    RequestFramer,
    ServerFramer,
    skip_requests,
)
from .opcodes import (
    ERROR,
    FIRST_EXTENSION_OPCODE,
    LIST_EXTENSIONS,
    QUERY_EXTENSION,
    REPLY,
)
from .setup import (
    STATUS_SUCCESS,
    SetupReply,
    SetupRequest,
    parse_setup_reply,
    parse_setup_request,
    setup_failed,
)
from .xauth import MIT_MAGIC_COOKIE_1

if TYPE_CHECKING:
    from .tally import Tally



@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """What a client must present (None: anything) and what the proxy presents upstream."""

    cookie: bytes | None
    upstream_name: bytes = b""
    upstream_data: bytes = b""

    def check(self, setup: SetupRequest) -> str | None:
        """None when the client may connect, else the reason it may not."""
        if self.cookie is None:
            return None
        if not setup.auth_name:
            return "No authorization protocol specified (xproxy requires MIT-MAGIC-COOKIE-1)"
        if setup.auth_name != MIT_MAGIC_COOKIE_1:
            return f"Authorization protocol {setup.auth_name.decode('latin-1')} not supported"
        if not hmac.compare_digest(setup.auth_data, self.cookie):
            return "Invalid MIT-MAGIC-COOKIE-1 key"
        return None


@dataclass
class Stats:
    requests: int = 0
    replies: int = 0
    events: int = 0
    errors: int = 0


class Watch(NamedTuple):
    """What watches one connection: an observer that sees each message whole (a tracer),
    and a tally that counts from the headers (metrics); either may be None."""

    observer: Observer | None = None
    tally: Tally | None = None


class X11Connection:
    def __init__(self, auth: AuthPolicy, policy: ExtensionPolicy | None = None,
                 observer: Observer | None = None, tally: Tally | None = None) -> None:
        self.auth = auth
        self.policy = policy or ExtensionPolicy()
        self.observer = observer
        self.tally = tally
        if tally is not None:
            tally.connection = self
        self._flush = getattr(observer, "flush", None)
        self.endian = "<"
        self.setup: SetupRequest | None = None
        self.setup_reply: SetupReply | None = None
        self.extensions: dict[str, ExtensionInfo] = {}
        self.to_client: list[bytes] = []
        self.closing: str | None = None
        # (full sequence number, kind, detail) of requests whose replies the proxy reads
        self.pending: deque[tuple[int, str, str]] = deque()
        self.client = _ClientFramer(self)
        self.server = _ServerFramer(self)

    def client_data(self, data: bytes | memoryview) -> bytes | memoryview:
        """Bytes from the client; returns bytes for the server. Raises ClientProtocolError."""
        try:
            return self.client.feed(data)
        finally:
            self.deliver()

    def server_data(self, data: bytes | memoryview) -> bytes | memoryview:
        """Bytes from the server; returns bytes for the client. Raises ServerProtocolError."""
        try:
            return self.server.feed(data)
        finally:
            self.deliver()

    def deliver(self) -> None:
        """Let the observer finish with the messages framed so far (its `flush()`)."""
        if self._flush is not None:
            self._flush()

    @property
    def stats(self) -> Stats:
        """Messages so far: requests, and the server's replies, events and errors."""
        kinds = self.server.kinds
        return Stats(self.client.seq, kinds[REPLY], sum(kinds) - kinds[ERROR] - kinds[REPLY],
                     kinds[ERROR])

    def release(self) -> None:
        """The connection is over: forget what it awaited, and the framers' and the tally's
        references back to it, so that it is freed as soon as its owner drops it (without
        waiting for the cycle collector). Its counts (`stats`) stay readable."""
        self.pending.clear()
        self.extensions.clear()
        for framer in (self.client, self.server):
            framer.release()
            framer.conn = None  # type: ignore[assignment]
        if self.tally is not None:
            self.tally.connection = None

    def take_to_client(self) -> bytes:
        out = b"".join(self.to_client)
        self.to_client.clear()
        return out

    @property
    def established(self) -> bool:
        return self.setup_reply is not None and self.setup_reply.status == STATUS_SUCCESS

    def _refuse(self, reason: str) -> None:
        self.to_client.append(setup_failed(self.endian, reason))
        self.closing = reason
        self.client.dead = True




class _ClientFramer(RequestFramer):
    def __init__(self, conn: X11Connection) -> None:
        super().__init__()
        self.conn = conn
        self.bigreq_opcode = -1
        # A client whose QueryExtension("BIG-REQUESTS") was answered near it (a link agent's
        # cache) sends the Enable, and big requests, before the server's reply can teach us
        # the opcode. Until that reply: the sequence number of the query, the first minor-0
        # request to each extension opcode after it (one may be the Enable), and whether a
        # request was framed as big on the strength of those.
        self.bigreq_query = 0
        self.enable_candidates: dict[int, int] = {}
        self.big_unconfirmed = False
        self.tally = conn.tally
        self._counts = conn.tally.core if conn.tally is not None else None
        self._holds = self._hold_table()

    def _hold_table(self) -> bytes:
        """Per opcode: whether requests with it pass, are held whole (the proxy reads them),
        are watched (an observer sees a copy) or are counted one by one (COUNT: they pass,
        and only stop the bulk loop, for the tally)."""
        table = bytearray([WATCH if self.conn.observer is not None else PASS]) * 256
        tally = self.tally
        if tally is not None:
            for op in range(256):
                if not table[op] and tally.stops(op):
                    table[op] = COUNT
        table[QUERY_EXTENSION] = table[LIST_EXTENSIONS] = HOLD
        if self.bigreq_opcode >= 0:
            table[self.bigreq_opcode] = HOLD
        elif self.bigreq_query:
            # framed one by one until the opcode is known
            for op in range(FIRST_EXTENSION_OPCODE, 256):
                if not table[op]:
                    table[op] = COUNT
        return bytes(table)

    def bigreq_answered(self, opcode: int) -> None:
        """The server's reply to QueryExtension("BIG-REQUESTS"): its major opcode, or -1
        when absent. An Enable already sent is recognised now; a request framed as big
        without one was a length of 0 with BIG-REQUESTS off after all."""
        conn = self.conn
        candidates, self.enable_candidates = self.enable_candidates, {}
        self.bigreq_query = 0
        if opcode >= 0:
            self.bigreq_opcode = opcode
        enable = candidates.get(opcode) if opcode >= 0 else None
        if enable is not None and not self.big_requests:
            self.big_requests = True
            # Its reply (the server's maximum) is still to come: replies come in order.
            at = next((i for i, p in enumerate(conn.pending) if p[0] > enable),
                      len(conn.pending))
            conn.pending.insert(at, (enable, "BigReqEnable", ""))
        unconfirmed, self.big_unconfirmed = self.big_unconfirmed, False
        self._holds = self._hold_table()
        if unconfirmed and not self.big_requests:
            raise ClientProtocolError("request of length 0 without BIG-REQUESTS enabled")

    def _set_endian(self, endian: str) -> None:
        super()._set_endian(endian)
        self.conn.endian = endian

    def _length_zero(self) -> None:
        if not self.big_requests:
            if not self.enable_candidates:
                raise ClientProtocolError("request of length 0 without BIG-REQUESTS enabled")
            self.big_unconfirmed = True

    def _request(self, buf: Buffer, pos: int, opcode: int, size: int, big: bool) -> int:
        hold = self._holds[opcode]
        if self.bigreq_query and opcode >= FIRST_EXTENSION_OPCODE and buf[pos + 1] == 0:
            self.enable_candidates.setdefault(opcode, self.seq)
        if self.tally is not None:
            self.tally.request(opcode, buf[pos + 1], self.seq)
        if hold == COUNT:
            return PASS
        if hold == HOLD and size > MAX_HELD_REQUEST:
            raise ClientProtocolError(f"request {opcode} of {size} bytes is longer than "
                                      f"any request of its kind")
        return hold

    def _skip(self, data, pos, n):  # type: ignore[no-untyped-def]
        end, count = skip_requests(data, pos, n, self._holds, self.endian == "<", self._counts)
        self.seq += count
        if end > n:
            self._stream = end - n
            return n
        return end

    def _watched(self, msg: bytes) -> None:
        self.conn.observer("request", self.seq, msg)  # type: ignore[misc]

    def _message(self, msg: bytes) -> bytes:
        conn = self.conn
        if self.in_setup:
            return self._setup(msg)
        opcode = msg[0]
        if opcode == QUERY_EXTENSION:
            if len(msg) < 8:
                raise ClientProtocolError("QueryExtension request too short")
            (n,) = struct.unpack_from(self.endian + "H", msg, 4)
            name = msg[8 : 8 + n].decode("latin-1")
            conn.pending.append((self.seq, "QueryExtension", name))
            if name == "BIG-REQUESTS" and self.bigreq_opcode < 0 and not self.bigreq_query:
                self.bigreq_query = self.seq
                self._holds = self._hold_table()
        elif opcode == LIST_EXTENSIONS:
            conn.pending.append((self.seq, "ListExtensions", ""))
        elif opcode == self.bigreq_opcode and msg[1] == 0:
            self.big_requests = True
            conn.pending.append((self.seq, "BigReqEnable", ""))
        if conn.observer is not None:
            conn.observer("request", self.seq, msg)
        return msg

    def _setup(self, msg: bytes) -> bytes:
        conn = self.conn
        self.in_setup = False
        setup = parse_setup_request(msg)
        conn.setup = setup
        refusal = conn.auth.check(setup)
        if refusal is not None:
            conn._refuse(refusal)
            return b""
        if conn.observer is not None:
            conn.observer("setup", 0, msg)
        upstream = SetupRequest(setup.byte_order, setup.major, setup.minor,
                                conn.auth.upstream_name, conn.auth.upstream_data)
        conn.server.expect_setup(self.endian)
        return upstream.to_bytes()


class _ServerFramer(ServerFramer):
    def __init__(self, conn: X11Connection) -> None:
        super().__init__()
        self.conn = conn
        self.kinds = [0] * 256  # messages by their first byte: 0 error, 1 reply, else events
        self.watch_all = WATCH if conn.observer is not None else PASS
        self.tally = conn.tally

    def _unsequenced(self, buf: Buffer, pos: int, kind: int) -> int:
        self.kinds[kind] += 1
        return self.watch_all

    def _sequenced(self, buf: Buffer, pos: int, kind: int, seq: int) -> int:
        hold = self.watch_all
        self.kinds[kind] += 1
        pending = self.conn.pending
        if pending and kind <= REPLY:
            while pending and pending[0][0] < seq:
                pending.popleft()
            if pending and pending[0][0] == seq:
                if kind == REPLY:
                    hold = HOLD
                else:
                    pending.popleft()  # an error instead of the reply
        if self.tally is not None:
            self.tally.server(kind, seq)
        return hold

    def _watched(self, msg: bytes) -> None:
        kind = msg[0]
        self.conn.observer("reply" if kind == REPLY else "error" if kind == ERROR else "event",  # type: ignore[misc]
                           self.last_seq, msg)

    def _message(self, msg: bytes) -> bytes:
        conn = self.conn
        if self.in_setup:
            self.in_setup = False
            conn.setup_reply = parse_setup_reply(msg, self.endian)
            if conn.observer is not None:
                conn.observer("setup-reply", 0, msg)
            return msg
        kind = msg[0]
        if kind == REPLY and conn.pending and conn.pending[0][0] == self.last_seq:
            _, what, detail = conn.pending.popleft()
            msg = self._reply(what, detail, msg)
        if conn.observer is not None:
            conn.observer("reply" if kind == REPLY else "error" if kind == ERROR else "event",
                          self.last_seq, msg)
        return msg

    def _reply(self, what: str, name: str, msg: bytes) -> bytes:
        conn = self.conn
        policy = conn.policy
        if what == "QueryExtension":
            if msg[8]:
                conn.extensions[name] = ExtensionInfo(name, msg[9], msg[10], msg[11])
                if conn.tally is not None:
                    conn.tally.extension(name, msg[9])
            if name == "BIG-REQUESTS" and conn.client.bigreq_opcode < 0:
                conn.client.bigreq_answered(msg[9] if msg[8] else -1)
            if policy.is_hidden(name):
                return hide_query_extension_reply(msg)
        elif what == "ListExtensions":
            return filter_list_extensions_reply(msg, self.endian, policy.hidden)
        elif what == "BigReqEnable":
            (words,) = struct.unpack_from(self.endian + "I", msg, 8)
            conn.client.max_big_request = words * 4
        return msg
