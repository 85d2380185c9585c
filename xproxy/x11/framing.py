"""Cutting the two X11 byte streams into messages without holding them back.

Theory of operation: a framer sees each message's header, decides from it alone whether the
message must be held whole (because a policy may rewrite it), and otherwise lets the bytes
stream through untouched: the bytes that leave are the bytes that came in, in the same chunks
where possible, and a PutImage of megabytes is never held back. Only a partial header (at most
32 bytes) or a held message waits for more input. A message an observer wants (a tracer,
metrics) is watched: its bytes pass on as they come, and the observer gets a copy once it is
all there.

Sizes (X11 protocol, sections 8 and 5; BIG-REQUESTS extension):
- setup request: 12 + pad(n) + pad(d); setup reply: 8 + 4 * length.
- request: 4 * length (16 bits at offset 2); with BIG-REQUESTS enabled, a length of 0 means a
  32-bit length follows at offset 4, counting the whole request in 4-byte units.
- server message: 32 bytes; a reply (type 1) or a GenericEvent (35, SendEvent bit ignored as
  xcb does) has 4 * length (32 bits at offset 4) more.

`RequestFramer` and `ServerFramer` are the one implementation of these rules (and of request
counting and sequence-number widening); a user of them is a hold policy that says, per
message header, what is held, watched or passed: connection.py's relay and tracer, and
suppress.py's answers near the client.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable

from .errors import ClientProtocolError, ServerProtocolError
from .opcodes import EVENT_CODE_MASK, GENERIC_EVENT, KEYMAP_NOTIFY, REPLY
from .setup import (
    SETUP_REPLY_HEADER,
    SETUP_REQUEST_HEADER,
    endian_of,
    setup_reply_size,
    setup_request_size,
)

#: 16- and 32-bit readers (`unpack_from`) per byte order ("<" or ">").
U16 = {e: struct.Struct(e + "H").unpack_from for e in "<>"}
U32 = {e: struct.Struct(e + "I").unpack_from for e in "<>"}

#: What `_frame` says to do with a message: let it pass, hold it whole (it may be
#: rewritten), or let it pass and show a copy to `_watched` once it is all there. COUNT is
#: for a framer's own table of what stops `skip_requests`: a message that passes but must be
#: framed on its own (`_frame` answers PASS for it).
PASS, HOLD, WATCH, COUNT = 0, 1, 2, 3

#: The largest request a proxy reads whole: every request it may rewrite or answer carries at
#: most one string of up to 65535 bytes (a name, a pattern) after a 12-byte header, so anything
#: longer is a client making the proxy hold a big request in memory, not a real request.
MAX_HELD_REQUEST = 1 << 17
#: Xorg's maxBigRequestSize (4194303 words), used until the server tells its own.
DEFAULT_MAX_BIG_REQUEST = 4194303 * 4
#: A bound on any server message; the largest real ones (GetImage of a big screen) are far less.
MAX_SERVER_MESSAGE = 1 << 30


class StreamFramer:
    """Base: streams data through `feed`, calling `_frame` once per message header (or
    `_skip` once over a run of messages that need no holding), `_message` for each message
    that `_frame` asked to hold and `_watched` for each it asked to watch."""

    #: Bytes enough for any header this framer reads.
    HEADER_MAX = 32

    def __init__(self) -> None:
        self._held = bytearray()  # a partial header, or the part of a held message seen so far
        self._need = 0  # when holding a whole message: its size; 0 while holding a header
        self._stream = 0  # bytes of a passing message still to come
        self._watch: bytearray | None = None  # a watched message's bytes so far
        self.bytes = 0
        self.dead = False

    def release(self) -> None:
        """Done: no more input; drop what is held."""
        self.dead = True
        self._held = bytearray()
        self._watch = None

    def _frame(self, buf: bytes | bytearray | memoryview, pos: int,
               avail: int) -> tuple[int, int] | None:
        """The message starting at buf[pos] (avail bytes there): (size, PASS, HOLD or WATCH;
        a bool means PASS or HOLD), or None when
        the header is incomplete. Called at most once per message (not for those that
        `_skip` passes); must not change state when it returns None."""
        raise NotImplementedError

    def _message(self, msg: bytes) -> bytes:
        """A held message, complete: returns the bytes to send on in its place."""
        raise NotImplementedError

    def _watched(self, msg: bytes) -> None:
        """A watched message, complete (its bytes have been passed on already)."""

    def feed(self, data: bytes | memoryview) -> bytes | memoryview:
        """Consume `data`; return the bytes to send on: `data` itself when it all passes,
        else new bytes. `data` may be a memoryview of a buffer that is reused once this
        returns (the relay's buffered reads): nothing keeps a reference to it."""
        n = len(data)
        self.bytes += n
        if self._stream or self._held or self.dead:
            return self._feed(data, n, _UNFRAMED)
        # The common case, first: data starts at a message boundary and holds one message
        # that passes, or the start of one.
        framed = self._frame(data, 0, n)
        if framed is not None and not framed[1]:
            size = framed[0]
            if size >= n:
                self._stream = size - n
                return data
        return self._feed(data, n, framed)

    def _feed(self, data: bytes | memoryview, n: int, first: object) -> bytes | memoryview:
        """The general case; `first` is _frame's answer for a message at data[0] when feed
        already asked (_frame is asked at most once per message), else _UNFRAMED."""
        if self.dead:
            return b""
        out: list[bytes | memoryview] = []
        pos = 0
        start = 0  # start of the current run of pass-through bytes in data
        while pos < n:
            if self._stream:
                take = min(self._stream, n - pos)
                self._stream -= take
                if self._watch is not None:
                    self._watch += data[pos : pos + take]
                    if not self._stream:
                        self._end_watch()
                pos += take
                continue
            if self._held:
                if self._need:
                    take = min(self._need - len(self._held), n - pos)
                    self._held += data[pos : pos + take]
                    pos += take
                    start = pos
                    if len(self._held) == self._need:
                        msg = bytes(self._held)
                        self._held.clear()
                        self._need = 0
                        out.append(self._message(msg))
                        if self.dead:
                            return b"".join(out)
                    continue
                had = len(self._held)
                take = min(self.HEADER_MAX, n - pos)
                trial = self._held + data[pos : pos + take]
                framed = self._frame(trial, 0, len(trial))
                if framed is None:
                    self._held = trial
                    pos += take
                    start = pos
                    continue
                size, hold = framed
                if hold == HOLD:
                    self._need = size
                    continue  # the branch above copies the rest of it
                out.append(bytes(self._held))
                if hold == WATCH:
                    self._watch = bytearray(self._held)
                self._held.clear()
                start = pos
                # the rest of it passes, as the continuation of a message (branch at the top)
                self._stream = size - had
                continue
            if first is not _UNFRAMED:
                framed, first = first, _UNFRAMED  # type: ignore[assignment]
            else:
                framed = self._frame(data, pos, n - pos)
            if framed is None:
                if start < pos:
                    out.append(data[start:pos])
                self._held = bytearray(data[pos:])
                return b"".join(out)
            size, hold = framed
            if not hold:
                if pos + size <= n:
                    pos += size
                    if pos < n:
                        pos = self._skip(data, pos, n)  # the plain ones after it, in one go
                else:
                    self._stream = pos + size - n
                    pos = n
                continue
            if hold == WATCH:
                if pos + size <= n:
                    self._watched(bytes(data[pos : pos + size]))
                    pos += size
                else:
                    self._watch = bytearray(data[pos:])
                    self._stream = pos + size - n
                    pos = n
                continue
            if start < pos:
                out.append(data[start:pos])
            if pos + size <= n:
                out.append(self._message(bytes(data[pos : pos + size])))
                pos += size
                start = pos
                if self.dead:
                    return b"".join(out)
            else:
                self._held = bytearray(data[pos:])
                self._need = size
                pos = start = n
        if start == 0 and not out:
            return data
        if start < n:
            out.append(data[start:n])
        return b"".join(out)

    def _end_watch(self) -> None:
        msg = bytes(self._watch)  # type: ignore[arg-type]
        self._watch = None
        self._watched(msg)

    def _skip(self, data: bytes | memoryview, pos: int, n: int) -> int:
        """Pass the messages from data[pos] on that need no holding, without framing each
        in Python: returns where the first message that needs `_frame` starts, or n (and
        sets `_stream`) when the last one passed is not all there. The base class skips
        nothing."""
        return pos

    @property
    def unfinished(self) -> int:
        """Bytes still to come of a message whose start has been passed on (0 at a message
        boundary, or while a held message or header is being collected)."""
        return self._stream

    @property
    def pending_bytes(self) -> int:
        """Bytes held back, waiting for the rest of their message."""
        return len(self._held)


Buffer = bytes | bytearray | memoryview


class _X11Framer(StreamFramer):
    """What both X11 streams keep: whether the setup is still to come, and the byte order
    (the client's, which the server answers in) with its readers."""

    def __init__(self) -> None:
        super().__init__()
        self.in_setup = True
        _X11Framer._set_endian(self, "<")  # not a subclass's: it may need what it has not set yet

    def _set_endian(self, endian: str) -> None:
        self.endian = endian
        self._u16 = U16[endian]
        self._u32 = U32[endian]


class RequestFramer(_X11Framer):
    """The client's stream: the setup request, then requests by their length, counted
    (`seq`, the number the server gives the last one). A subclass is the hold policy: it
    says in `_request` what becomes of each request and handles the held ones in `_message`
    (clearing `in_setup` when the setup request is there).

    A length of 0 is BIG-REQUESTS' form: a 32-bit length of at least 2 words follows,
    counting the whole request, no more than `max_big_request` bytes. `_length_zero` says
    whether the form is allowed; by default, once `big_requests` is set (the Enable sent)."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = 0
        self.big_requests = False
        self.max_big_request = DEFAULT_MAX_BIG_REQUEST

    def _frame(self, buf: Buffer, pos: int, avail: int) -> tuple[int, int] | None:
        if self.in_setup:
            if avail < SETUP_REQUEST_HEADER:
                return None
            self._set_endian(endian_of(buf[pos]))
            return setup_request_size(bytes(buf[pos : pos + SETUP_REQUEST_HEADER])), HOLD
        if avail < 4:
            return None
        opcode = buf[pos]
        length = self._u16(buf, pos + 2)[0]
        big = length == 0
        if big:
            self._length_zero()
            if avail < 8:
                return None
            length = self._u32(buf, pos + 4)[0]
            if length < 2:
                raise ClientProtocolError(f"BIG-REQUESTS length {length} is less than 2 words")
            if length * 4 > self.max_big_request:
                raise ClientProtocolError(
                    f"request of {length * 4} bytes exceeds the server's maximum "
                    f"of {self.max_big_request}"
                )
        self.seq += 1
        return length * 4, self._request(buf, pos, opcode, length * 4, big)

    def _length_zero(self) -> None:
        """A request's 16-bit length is 0: raise unless BIG-REQUESTS allows it."""
        self.require_big_requests()

    def require_big_requests(self) -> None:
        """Raise ClientProtocolError unless the client has enabled BIG-REQUESTS."""
        if not self.big_requests:
            raise ClientProtocolError("request of length 0 without BIG-REQUESTS enabled")

    def _request(self, buf: Buffer, pos: int, opcode: int, size: int, big: bool) -> int:
        """The hold policy for the request at buf[pos] (numbered `seq`, `size` bytes, `big`
        when in BIG-REQUESTS form): PASS, HOLD or WATCH."""
        raise NotImplementedError


class ServerFramer(_X11Framer):
    """The server's stream: the setup reply, then errors, replies and events, each 32 bytes
    but a reply or a GenericEvent (4 * length more), each but KeymapNotify with a 16-bit
    sequence number, widened from the last one read (`last_seq`) as xcb does. A subclass is
    the hold policy (`_sequenced`, `_unsequenced`, `_message`, clearing `in_setup`)."""

    def __init__(self) -> None:
        super().__init__()
        self.last_seq = 0  # full sequence number of the last server message that had one

    def expect_setup(self, endian: str) -> None:
        """The client's byte order, which the server answers in."""
        self._set_endian(endian)

    def _frame(self, buf: Buffer, pos: int, avail: int) -> tuple[int, int] | None:
        if self.in_setup:
            if avail < SETUP_REPLY_HEADER:
                return None
            return setup_reply_size(bytes(buf[pos : pos + SETUP_REPLY_HEADER]), self.endian), HOLD
        if avail < 32:
            return None
        kind = buf[pos]
        size = 32
        if kind == REPLY or kind & EVENT_CODE_MASK == GENERIC_EVENT:
            size = 32 + 4 * self._u32(buf, pos + 4)[0]
            if size > MAX_SERVER_MESSAGE:
                raise ServerProtocolError(f"server message of {size} bytes")
        if kind == KEYMAP_NOTIFY:  # no sequence number: it follows its event at once
            return size, self._unsequenced(buf, pos, kind)
        last = self.last_seq
        seq = last + ((self._u16(buf, pos + 2)[0] - last) & 0xFFFF)
        self.last_seq = seq
        return size, self._sequenced(buf, pos, kind, seq)

    def _unsequenced(self, buf: Buffer, pos: int, kind: int) -> int:
        """The hold policy for a message without a sequence number (KeymapNotify)."""
        return PASS

    def _sequenced(self, buf: Buffer, pos: int, kind: int, seq: int) -> int:
        """The hold policy for an error, reply or event with full sequence number `seq`."""
        raise NotImplementedError


Observer = Callable[[str, int, bytes], None]

_UNFRAMED = object()




def py_skip_requests(buf: bytes | memoryview, pos: int, end: int, holds: bytes,
                     little: bool, counts: array | None = None) -> tuple[int, int]:
    """What xproxy._speedups.skip_requests does (its docstring says what), in Python."""
    if (len(holds) != 256 or pos < 0 or end < pos or end > len(buf)
            or (counts is not None and (counts.typecode != "Q" or len(counts) != 256))):
        raise ValueError("skip_requests: holds must be 256 bytes, counts 256 'Q' items, "
                         "and pos <= end <= len(buf)")
    u16 = U16["<" if little else ">"]
    count = 0
    while end - pos >= 4:
        length = u16(buf, pos + 2)[0]
        op = buf[pos]
        if not length or holds[op]:
            break
        if counts is not None:
            counts[op] += 1
        count += 1
        pos += length * 4
    return pos, count


try:
    from xproxy._speedups import skip_requests
except ImportError:  # not built (no C compiler where it was installed): the same, slower
    skip_requests = py_skip_requests
