"""One client of a movable display as a pure state machine: its requests in, what its
current server must get out; its server's messages in, what the client must get out. It
keeps the client's sequence numbers (a reply, error or event is renumbered to the client's
count), the extensions it may see, the mapping to the current server (mapping.py) and the
tracker of what it made (tracker.py). The adapter says which upstream connection a message
came from by the virtual sequence number it computes (`Upstream.virtual_seq`).
"""

from __future__ import annotations

import struct
from collections import deque

from ..x11 import opcodes as op
from ..x11.extensions import filter_list_extensions_reply, parse_list_extensions_names
from . import fields as f
from .mapping import Ext, Mapping
from .planner import ServerSetup
from .tracker import Tracker


class VirtualClient:
    """What one client sees for its whole life, whichever server shows it."""

    def __init__(self, endian: str, setup: ServerSetup,
                 allowed: dict[str, tuple[int, int]] = f.MOVABLE_EXTENSIONS) -> None:
        self.endian = endian
        self.setup = setup  # the first server's: the virtual screen
        self.allowed = allowed
        self.mapping = Mapping(endian, setup.base, setup.mask, setup.base, setup.mask)
        static = frozenset(v.vid for v in setup.visuals.values() if v.vclass in (0, 2, 4))
        self.tracker = Tracker(endian, setup.root, setup.root_visual, setup.root_depth, static)
        self.seq = 0  # requests the client has sent (the last one's number)
        self.last_seq = 0  # the sequence number of the last message given to the client
        #: the longest request in bytes, from BIG-REQUESTS Enable's reply once the client
        #: has enabled it (else the setup's)
        self.max_request_bytes = setup.max_request * 4
        self._awaiting: deque[tuple[int, int, int, bytes]] = deque()  # (seq, op, minor, name)
        self._u16 = struct.Struct(endian + "H")

    @property
    def big_requests(self) -> bool:
        return self.tracker.big_requests

    def request(self, msg: bytes) -> bytes:
        """The client's next request: returns what to send to the current server."""
        self.seq += 1
        opcode = msg[0]
        ext = self.mapping.exts.get(opcode) if opcode >= op.FIRST_EXTENSION_OPCODE else None
        changed = self.tracker.request(self.seq, msg, ext.name if ext is not None else None)
        if ext is not None:
            if msg[1] in f.EXTENSION_REPLY_REQUESTS.get(ext.name, ()):
                self._awaiting.append((self.seq, opcode, msg[1], b""))
        elif opcode in f.REPLY_REQUESTS:
            name = b""
            if opcode == op.QUERY_EXTENSION:
                name = bytes(msg[8 : 8 + self._u16.unpack_from(msg, 4)[0]])
            self._awaiting.append((self.seq, opcode, 0, name))
        return self.mapping.request(changed if changed is not None else msg)

    def _request_of(self, seq: int, final: bool) -> tuple[int, int, int, bytes] | None:
        """The awaited request numbered `seq`, forgetting those before it (and it, if final)."""
        q = self._awaiting
        while q and q[0][0] < seq:
            q.popleft()
        if q and q[0][0] == seq:
            return q.popleft() if final else q[0]
        return None

    def server_message(self, msg: bytes, vseq: int) -> bytes:
        """A message from the current server, whose sequence number counted in the client's
        requests is `vseq`: returns it as the client must see it."""
        kind = msg[0]
        buf = bytearray(msg)
        mapping = self.mapping
        if kind == op.REPLY:
            awaited = self._request_of(vseq, final=not self._more_replies(msg, vseq))
            if awaited is not None:
                _, opcode, minor, name = awaited
                if opcode == op.QUERY_EXTENSION:
                    self._query_extension(buf, name.decode("latin-1"))
                elif opcode == op.LIST_EXTENSIONS:
                    buf = bytearray(self._list_extensions(bytes(buf)))
                else:
                    mapping.reply(buf, opcode, minor)
                    ext = mapping.exts.get(opcode)
                    if ext is not None and ext.name == f.BIG_REQUESTS:
                        self.max_request_bytes = 4 * struct.unpack_from(
                            self.endian + "I", buf, 8)[0]
            self.tracker.reply(vseq, buf)
            self.tracker.confirm(vseq)
        elif kind == op.ERROR:
            self._request_of(vseq, final=True)
            if not mapping.identity:
                mapping.error(buf)
            self.tracker.no_reply(vseq)
        else:
            if not mapping.identity:
                mapping.event(buf)
            if kind & op.EVENT_CODE_MASK == op.SELECTION_CLEAR:
                self.tracker.selection_lost(struct.unpack_from(self.endian + "I", buf, 12)[0])
            if kind & op.EVENT_CODE_MASK == op.KEYMAP_NOTIFY:
                return bytes(buf)
            vseq = min(max(vseq, self.last_seq), self.seq)
            self.tracker.confirm(vseq)
        self.last_seq = vseq
        if self._u16.unpack_from(buf, 2)[0] != vseq & 0xFFFF:
            self._u16.pack_into(buf, 2, vseq & 0xFFFF)
        return bytes(buf)

    def _more_replies(self, msg: bytes, vseq: int) -> bool:
        """ListFontsWithInfo answers with several replies, the last with a name length of 0."""
        q = self._awaiting
        while q and q[0][0] < vseq:
            q.popleft()
        return bool(q and q[0][0] == vseq and q[0][1] == op.LIST_FONTS_WITH_INFO and msg[1])

    def _query_extension(self, buf: bytearray, name: str) -> None:
        present = buf[8]
        if not present or name not in self.allowed:
            buf[8:12] = b"\0\0\0\0"
            return
        rmajor, revent, rerror = buf[9], buf[10], buf[11]
        mapping = self.mapping
        known = next((x for x in mapping.exts.values() if x.name == name), None)
        if known is None:
            events, errors = self.allowed[name]
            used_majors = set(mapping.exts)
            vmajor = rmajor if rmajor not in used_majors else next(
                m for m in range(op.FIRST_EXTENSION_OPCODE, 256) if m not in used_majors)
            known = Ext(name, vmajor, revent, rerror, rmajor, revent, rerror, events, errors)
            mapping.exts[vmajor] = known
            mapping.rexts[rmajor] = known
            mapping._rebuild_events()
        buf[9], buf[10], buf[11] = known.vmajor, known.vevent, known.verror

    def _list_extensions(self, reply: bytes) -> bytes:
        names = parse_list_extensions_names(reply, reply[1])
        hidden = frozenset(n.decode("latin-1") for n in names) - set(self.allowed)
        return filter_list_extensions_reply(reply, self.endian, hidden)
