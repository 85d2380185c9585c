"""The Xauthority file format (libXau's), parsed and written without I/O.

Entries are `family, address, number, name, data`, each a big-endian 16-bit length followed by
the bytes. Lookup follows libXau's XauGetBestAuthByAddr: the family and address must match (or
the entry is FamilyWild), the display number must match (or the entry's is empty), and among
matches the earliest authorization name in the caller's preference order wins.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

FAMILY_INTERNET = 0
FAMILY_INTERNET6 = 6
FAMILY_LOCAL = 256
FAMILY_WILD = 65535
MIT_MAGIC_COOKIE_1 = b"MIT-MAGIC-COOKIE-1"


class XauthorityFormatError(ValueError):
    """A truncated or malformed Xauthority file."""


@dataclass(frozen=True, slots=True)
class XauthEntry:
    family: int
    address: bytes
    number: bytes
    name: bytes
    data: bytes

    def to_bytes(self) -> bytes:
        out = [struct.pack(">H", self.family)]
        for field in (self.address, self.number, self.name, self.data):
            if len(field) > 0xFFFF:
                raise XauthorityFormatError("an Xauthority field is longer than 65535 bytes")
            out.append(struct.pack(">H", len(field)))
            out.append(field)
        return b"".join(out)


def parse_xauthority(raw: bytes) -> list[XauthEntry]:
    entries = []
    pos = 0
    while pos < len(raw):
        fields: list[bytes] = []
        if pos + 2 > len(raw):
            raise XauthorityFormatError(f"truncated entry at byte {pos}")
        (family,) = struct.unpack_from(">H", raw, pos)
        pos += 2
        for _ in range(4):
            if pos + 2 > len(raw):
                raise XauthorityFormatError(f"truncated entry at byte {pos}")
            (length,) = struct.unpack_from(">H", raw, pos)
            pos += 2
            if pos + length > len(raw):
                raise XauthorityFormatError(f"truncated field at byte {pos}")
            fields.append(bytes(raw[pos : pos + length]))
            pos += length
        entries.append(XauthEntry(family, *fields))
    return entries


def serialize_xauthority(entries: Iterable[XauthEntry]) -> bytes:
    return b"".join(entry.to_bytes() for entry in entries)


def best_auth(
    entries: Iterable[XauthEntry],
    family: int,
    address: bytes,
    number: int,
    names: tuple[bytes, ...] = (MIT_MAGIC_COOKIE_1,),
) -> XauthEntry | None:
    """The entry libXau would choose, or None."""
    num = str(number).encode()
    best: XauthEntry | None = None
    best_rank = len(names)
    for entry in entries:
        if entry.family != FAMILY_WILD and (entry.family != family or entry.address != address):
            continue
        if entry.number and entry.number != num:
            continue
        if entry.name not in names:
            continue
        rank = names.index(entry.name)
        if rank < best_rank:
            best, best_rank = entry, rank
            if rank == 0:
                break
    return best


def replace_entry(entries: list[XauthEntry], new: XauthEntry) -> list[XauthEntry]:
    """Entries with `new` in place of any entry for the same family, address, number, name."""
    kept = [e for e in entries if not _same_slot(e, new)]
    return [new, *kept]


def remove_entry(entries: list[XauthEntry], old: XauthEntry) -> list[XauthEntry]:
    """Entries without `old` (matched exactly, data included, so a newer cookie survives)."""
    return [e for e in entries if e != old]


def _same_slot(a: XauthEntry, b: XauthEntry) -> bool:
    return (a.family, a.address, a.number, a.name) == (b.family, b.address, b.number, b.name)
