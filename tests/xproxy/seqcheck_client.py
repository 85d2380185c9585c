"""An X client that checks every sequence number it reads: replies, errors and events
interleaved, requests pipelined in batches. Prints one JSON line: counts and any problems.

Each batch: InternAtom (known and new names), ChangeProperty on its own window (a
PropertyNotify event), ChangeProperty on a window that does not exist (BadWindow), AllocColor,
GetAtomName of an atom that does not exist (BadAtom), InternAtom again, QueryExtension,
GetInputFocus. With SEQCHECK_UNTIL_FILE set, it runs until that file exists (at most
SEQCHECK_ROUNDS batches), so something can happen to the connection meanwhile. Every reply and error must come for exactly the request expected next, with its
sequence number; and the sequence numbers of all messages, widened as xcb does, must never go
down.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from xproxy.trust import xauthfile  # noqa: E402
from xproxy.x11.display import parse_display  # noqa: E402


def pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def recv_exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("connection closed")
        out += chunk
    return out


def connect() -> tuple[socket.socket, int, int, int] | None:
    """A little-endian connection to $DISPLAY with its cookie: (socket, resource-id base,
    root window, default colormap), or None when the setup failed."""
    display = parse_display(os.environ["DISPLAY"])
    entry = xauthfile.lookup_for_display(display)
    s = socket.socket(socket.AF_UNIX)
    s.connect(display.socket_path)
    name, data = (entry.name, entry.data) if entry else (b"", b"")
    s.sendall(struct.pack("<BxHHHH2x", 0x6C, 11, 0, len(name), len(data)) + pad(name) + pad(data))
    head = recv_exactly(s, 8)
    setup = head + recv_exactly(s, 4 * struct.unpack_from("<H", head, 6)[0])
    if setup[0] != 1:
        return None
    base, = struct.unpack_from("<I", setup, 12)
    vendor_len, = struct.unpack_from("<H", setup, 24)
    n_formats = setup[29]
    screen = 40 + vendor_len + (-vendor_len % 4) + 8 * n_formats
    root, cmap = struct.unpack_from("<II", setup, screen)
    return s, base, root, cmap


def main() -> int:
    connected = connect()
    if connected is None:
        print(json.dumps({"ok": False, "problems": ["setup failed"]}))
        return 1
    s, base, root, cmap = connected
    window = base | 1

    seq = 0
    expect: list[tuple[int, int, int]] = []  # (seq, 1 reply / 0 error, error code)

    def req(data: bytes, reply: bool = False, error: int = 0) -> bytes:
        nonlocal seq
        seq += 1
        if reply:
            expect.append((seq, 1, 0))
        elif error:
            expect.append((seq, 0, error))
        return data

    def intern(n: bytes) -> bytes:
        return req(struct.pack("<BBHH2x", 16, 0, 2 + len(pad(n)) // 4, len(n)) + pad(n), True)

    batch = [req(struct.pack("<BBHIIhhHHHHII", 1, 0, 9, window, root, 0, 0, 10, 10, 0, 1, 0,
                             0x800, ) + struct.pack("<I", 0x400000))]  # PropertyChangeMask
    problems: list[str] = []
    counts = {"replies": 0, "errors": 0, "events": 0}
    last_full = 0
    until = os.environ.get("SEQCHECK_UNTIL_FILE")  # else: stop once this file exists
    for round_ in range(int(os.environ.get("SEQCHECK_ROUNDS", "20"))):
        if until and os.path.exists(until):
            break
        for i in range(5):
            batch.append(intern(b"WM_NAME"))
            batch.append(intern(f"SEQCHECK_{(round_ + i) % 7}".encode()))
            batch.append(req(struct.pack("<BBHIIIB3xI", 18, 0, 7, window, 39, 31, 8, 4) + b"abcd"))
            batch.append(req(struct.pack("<BBHIIIB3xI", 18, 0, 7, 0x1, 39, 31, 8, 4) + b"abcd",
                             error=3))
            batch.append(req(struct.pack("<BxHIHHH2x", 84, 4, cmap, 0x1000 * i, 0x2000, 0xFFFF),
                             True))
            batch.append(req(struct.pack("<BxHI", 17, 2, 0x7FFFFF0), error=5))
            batch.append(intern(b"SEQCHECK_0"))
            ext = b"RENDER"
            batch.append(req(struct.pack("<BxHH2x", 98, 2 + len(pad(ext)) // 4, len(ext))
                             + pad(ext), True))
            batch.append(req(struct.pack("<BxH", 43, 1), True))  # GetInputFocus
        s.sendall(b"".join(batch))
        batch = []
        target = seq
        while True:
            head = recv_exactly(s, 32)
            kind = head[0]
            body = recv_exactly(s, 4 * struct.unpack_from("<I", head, 4)[0]) if kind == 1 else b""
            del body
            seq16, = struct.unpack_from("<H", head, 2)
            full = last_full + ((seq16 - last_full) & 0xFFFF)
            if full > seq:
                full -= 0x10000
            if full < last_full:
                problems.append(f"sequence went down: {full} after {last_full} (type {kind})")
            last_full = max(last_full, full)
            if kind in (0, 1):
                want = expect.pop(0) if expect else None
                got = (full, kind, head[1] if kind == 0 else 0)
                if want != got:
                    problems.append(f"expected {want}, got {got}")
                counts["replies" if kind == 1 else "errors"] += 1
                if kind == 1 and full == target:
                    break
            else:
                counts["events"] += 1
    s.close()
    print(json.dumps({"ok": not problems and not expect, "problems": problems[:20],
                      "left": len(expect), **counts}))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
