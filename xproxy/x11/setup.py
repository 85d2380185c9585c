"""The connection setup exchange (X11 protocol, section 8), in both byte orders."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import ClientProtocolError

SETUP_REQUEST_HEADER = 12
SETUP_REPLY_HEADER = 8
STATUS_FAILED, STATUS_SUCCESS, STATUS_AUTHENTICATE = 0, 1, 2


def pad4(n: int) -> int:
    return (4 - n % 4) % 4


def endian_of(byte_order: int) -> str:
    """'<' or '>' for the byte-order byte of a setup request."""
    if byte_order == 0x6C:  # 'l'
        return "<"
    if byte_order == 0x42:  # 'B'
        return ">"
    raise ClientProtocolError(f"bad byte-order byte 0x{byte_order:02x} in connection setup")


@dataclass(frozen=True, slots=True)
class SetupRequest:
    byte_order: int
    major: int
    minor: int
    auth_name: bytes
    auth_data: bytes

    @property
    def endian(self) -> str:
        return endian_of(self.byte_order)

    def to_bytes(self) -> bytes:
        e = self.endian
        return b"".join(
            (
                struct.pack(
                    e + "BxHHHH2x",
                    self.byte_order,
                    self.major,
                    self.minor,
                    len(self.auth_name),
                    len(self.auth_data),
                ),
                self.auth_name,
                b"\0" * pad4(len(self.auth_name)),
                self.auth_data,
                b"\0" * pad4(len(self.auth_data)),
            )
        )


def setup_request_size(header: bytes) -> int:
    """Total size of a setup request from its first 12 bytes."""
    e = endian_of(header[0])
    n, d = struct.unpack_from(e + "HH", header, 6)
    return SETUP_REQUEST_HEADER + n + pad4(n) + d + pad4(d)


def parse_setup_request(raw: bytes) -> SetupRequest:
    e = endian_of(raw[0])
    major, minor, n, d = struct.unpack_from(e + "HHHH", raw, 2)
    name_at = SETUP_REQUEST_HEADER
    data_at = name_at + n + pad4(n)
    if len(raw) < data_at + d:
        raise ClientProtocolError("truncated connection setup")
    return SetupRequest(raw[0], major, minor, bytes(raw[name_at : name_at + n]),
                        bytes(raw[data_at : data_at + d]))


def setup_reply_size(header: bytes, endian: str) -> int:
    """Total size of a setup reply (any status) from its first 8 bytes."""
    (words,) = struct.unpack_from(endian + "H", header, 6)
    return SETUP_REPLY_HEADER + 4 * words


def setup_failed(endian: str, reason: str, major: int = 11, minor: int = 0) -> bytes:
    """A setup Failed reply with a reason string, as a server sends it."""
    text = reason.encode("latin-1", "replace")[:255]
    padded = text + b"\0" * pad4(len(text))
    return struct.pack(endian + "BBHHH", STATUS_FAILED, len(text), major, minor,
                       len(padded) // 4) + padded


@dataclass(frozen=True, slots=True)
class SetupReply:
    """The parts of a successful setup reply that the proxy uses."""

    status: int
    major: int
    minor: int
    release: int
    resource_id_base: int
    resource_id_mask: int
    max_request_length: int
    vendor: str
    reason: str


def parse_setup_reply(raw: bytes, endian: str) -> SetupReply:
    status = raw[0]
    major, minor = struct.unpack_from(endian + "HH", raw, 2)
    if status != STATUS_SUCCESS:
        if status == STATUS_FAILED:
            reason = bytes(raw[8 : 8 + raw[1]]).decode("latin-1")
        else:
            reason = bytes(raw[8:]).rstrip(b"\0").decode("latin-1")
        return SetupReply(status, major, minor, 0, 0, 0, 0, "", reason)
    release, base, mask, _motion, vendor_len, max_req = struct.unpack_from(
        endian + "IIIIHH", raw, 8
    )
    vendor = bytes(raw[40 : 40 + vendor_len]).decode("latin-1")
    return SetupReply(status, major, minor, release, base, mask, max_req, vendor, "")
