"""Extension policy: which extensions a client may see, and the reply rewrites that hide one.

Hiding forwards the request and rewrites the reply (never answers locally), so sequence numbers
stay exactly those the server counts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .opcodes import REPLY
from .setup import pad4

DEFAULT_HIDDEN = frozenset({"MIT-SHM"})


@dataclass(frozen=True, slots=True)
class ExtensionInfo:
    name: str
    major_opcode: int
    first_event: int
    first_error: int


@dataclass
class ExtensionPolicy:
    """Names hidden from clients. MIT-SHM is hidden by default: shared memory does not cross
    hosts, and MIT-SHM 1.2 passes file descriptors, which a relay cannot forward."""

    hidden: frozenset[str] = field(default_factory=lambda: DEFAULT_HIDDEN)

    @classmethod
    def from_options(cls, hide: list[str] = (), allow: list[str] = ()) -> ExtensionPolicy:  # type: ignore[assignment]
        return cls(frozenset((DEFAULT_HIDDEN | set(hide)) - set(allow)))

    def is_hidden(self, name: str) -> bool:
        return name in self.hidden


def hide_query_extension_reply(reply: bytes) -> bytes:
    """A QueryExtension reply saying not present (present, major, first event/error = 0)."""
    return reply[:8] + b"\0\0\0\0" + reply[12:]


def filter_list_extensions_reply(reply: bytes, endian: str, hidden: frozenset[str]) -> bytes:
    """A ListExtensions reply without the hidden names, count and length recomputed."""
    count = reply[1]
    names = parse_list_extensions_names(reply, count)
    kept = [n for n in names if n.decode("latin-1") not in hidden]
    if len(kept) == len(names):
        return reply
    body = b"".join(bytes((len(n),)) + n for n in kept)
    body += b"\0" * pad4(len(body))
    (seq,) = struct.unpack_from(endian + "H", reply, 2)
    header = struct.pack(endian + "BBHI24x", REPLY, len(kept), seq, len(body) // 4)
    return header + body


def parse_list_extensions_names(reply: bytes, count: int) -> list[bytes]:
    names = []
    pos = 32
    for _ in range(count):
        if pos >= len(reply):
            break
        length = reply[pos]
        names.append(bytes(reply[pos + 1 : pos + 1 + length]))
        pos += 1 + length
    return names
