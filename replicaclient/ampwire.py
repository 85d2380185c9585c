"""AMP's box encoding, written by the stub itself: a call's entries are encoded once and
shared by every replica it goes to (``amp.AMP.callRemote`` would build and encode a box per
replica). The bytes are exactly AMP's (the ``amp`` module docstring), so replicas run plain
``amp.AMP``."""

from __future__ import annotations

import struct
from collections.abc import Iterable

from twisted.protocols import amp

from . import wire
from .declare import Semantics

U16 = struct.Struct("!H").pack
END = b"\x00\x00"


def encode_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """AMP's encoding of box entries, without the box's end marker: each key and value
    as a 2-byte big-endian length and the bytes (the ``amp`` module docstring).
    Entries may come in any order; AMP's own encoder sorts them, its parser does not
    care. Raises ``amp.TooLong`` as AMP does for a key over 255 or a value over 65535
    bytes."""
    out: list[bytes] = []
    for key, value in pairs:
        if len(key) > amp.MAX_KEY_LENGTH:
            raise amp.TooLong(True, True, key, None)
        if len(value) > amp.MAX_VALUE_LENGTH:
            raise amp.TooLong(False, True, value, key)
        out += (U16(len(key)), key, U16(len(value)), value)
    return b"".join(out)


ASK_PREFIX = encode_pairs([(amp.ASK, b"")])[:-2]  # the key and the length field of its value


READ_ENTRY = encode_pairs([(wire.READ, b"1")])
_command_entries: dict[bytes, bytes] = {}


def command_entry(name: bytes) -> bytes:
    """The encoded ``_command`` entry naming a command (a name is at most 255 bytes)."""
    found = _command_entries.get(name)
    if found is None:
        found = _command_entries[name] = encode_pairs([(amp.COMMAND, name)])
    return found


_register_wire_names: dict[tuple[type, str], bytes] = {}


def register_value(command: type[amp.Command], semantics: Semantics,
                   box: amp.AmpBox) -> bytes | None:
    """The value, in ``box``, of the argument that ``semantics`` names as the command's
    register; None for a command that names none."""
    if semantics.register is None:
        return None
    wire_name = _register_wire_names.get((command, semantics.register))
    if wire_name is None:
        for candidate, _ in command.arguments:
            if amp._wireNameToPythonIdentifier(candidate) == semantics.register:
                wire_name = _register_wire_names[(command, semantics.register)] = candidate
                break
        else:
            raise ValueError(f"{command.__name__} has no argument {semantics.register!r}")
    found: bytes | None = box.get(wire_name)
    return found
