"""Builders for X11 wire messages in either byte order, for golden-byte tests."""

from __future__ import annotations

import struct

COOKIE = bytes(range(16))
REAL = bytes(range(100, 116))
MIT = b"MIT-MAGIC-COOKIE-1"


def pad(b: bytes) -> bytes:
    return b + b"\0" * ((4 - len(b) % 4) % 4)


def setup_request(e: str, name: bytes = MIT, data: bytes = COOKIE) -> bytes:
    order = 0x6C if e == "<" else 0x42
    return struct.pack(e + "BxHHHH2x", order, 11, 0, len(name), len(data)) + pad(name) + pad(data)


def setup_success(e: str, max_request: int = 65535, extra: int = 0) -> bytes:
    vendor = pad(b"The X.Org Foundation")
    body = struct.pack(e + "IIIIHHBBBBBBBB4x", 12101011, 0x200000, 0x1FFFFF, 256, 20,
                       max_request, 0, 0, 0, 0, 32, 32, 8, 255) + vendor + b"\0" * (4 * extra)
    return struct.pack(e + "BxHHH", 1, 11, 0, len(body) // 4) + body


def request(e: str, opcode: int, data: int = 0, body: bytes = b"") -> bytes:
    body = pad(body)
    return struct.pack(e + "BBH", opcode, data, 1 + len(body) // 4) + body


def big_request(e: str, opcode: int, body: bytes, data: int = 0) -> bytes:
    body = pad(body)
    return struct.pack(e + "BBHI", opcode, data, 0, 2 + len(body) // 4) + body


def query_extension(e: str, name: bytes) -> bytes:
    return request(e, 98, 0, struct.pack(e + "H2x", len(name)) + name)


def reply(e: str, seq: int, data1: int = 0, body: bytes = b"", extra: bytes = b"") -> bytes:
    """A reply: 24 bytes of fixed body after the header, then `extra` (padded)."""
    body = body.ljust(24, b"\0")
    extra = pad(extra)
    return struct.pack(e + "BBHI", 1, data1, seq & 0xFFFF, len(extra) // 4) + body + extra


def query_extension_reply(e: str, seq: int, present: bool, major: int, event: int = 0,
                          error: int = 0) -> bytes:
    return reply(e, seq, body=bytes((int(present), major, event, error)))


def list_extensions_reply(e: str, seq: int, names: list[bytes]) -> bytes:
    extra = b"".join(bytes((len(n),)) + n for n in names)
    return reply(e, seq, data1=len(names), extra=extra)


def error(e: str, seq: int, code: int = 2, major: int = 98) -> bytes:
    return struct.pack(e + "BBHIHB21x", 0, code, seq & 0xFFFF, 0, 0, major)


def event(e: str, seq: int, code: int = 12) -> bytes:
    return struct.pack(e + "BxH28x", code, seq & 0xFFFF)


def generic_event(e: str, seq: int, extension: int, words: int) -> bytes:
    return struct.pack(e + "BBHIH22x", 35, extension, seq & 0xFFFF, words, 1) + b"\xab" * (4 * words)


def setup_with_screen(e: str, base: int = 0x200000, mask: int = 0x1FFFFF, root: int = 0x50D,
                      colormap: int = 0x20, size: tuple[int, int] = (1024, 768),
                      depth: int = 24, visuals: tuple[tuple[int, int], ...] = ((0x21, 4),),
                      formats: tuple[tuple[int, int], ...] = ((1, 1), (24, 32))) -> bytes:
    """A successful setup reply with one screen: `visuals` are (id, class) at `depth`, the
    first the root visual; `formats` are (depth, bits per pixel) pixmap formats."""
    vendor = pad(b"Test")
    masks = {24: (0xFF0000, 0xFF00, 0xFF), 16: (0xF800, 0x7E0, 0x1F)}.get(depth, (0, 0, 0))
    fmt = b"".join(struct.pack(e + "BBB5x", d, bpp, 32) for d, bpp in formats)
    vis = b"".join(struct.pack(e + "IBBHIII4x", vid, cls, 8, 256, *masks) for vid, cls in visuals)
    screen = struct.pack(e + "IIIIIHHHHHHIBBBB", root, colormap, 0xFFFFFF, 0, 0, size[0],
                         size[1], 300, 200, 1, 1, visuals[0][0], 0, 0, depth, 1)
    screen += struct.pack(e + "BxH4x", depth, len(visuals)) + vis
    body = struct.pack(e + "IIIIHHBBBBBBBB4x", 12101011, base, mask, 256, 4, 65535, 1,
                       len(formats), 0, 0, 32, 32, 8, 255) + vendor + fmt + screen
    return struct.pack(e + "BxHHH", 1, 11, 0, len(body) // 4) + body
