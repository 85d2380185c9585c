"""An X client that asks QueryColors of the default colormap and nothing else the link agent
could answer: every step of each channel's ramp, the corners, and a few mixed pixels. Prints
one JSON line: the red, green, blue of each pixel."""

from __future__ import annotations

import json
import struct
import sys

from seqcheck_client import connect, recv_exactly

QUERY_COLORS = 91


def main() -> int:
    connected = connect()
    if connected is None:
        print(json.dumps({"ok": False, "problem": "setup failed"}))
        return 1
    s, _, _, cmap = connected
    pixels = [i * 0x010101 for i in range(256)] + [0xFF0000, 0x00FF00, 0x0000FF, 0x123456]
    s.sendall(struct.pack(f"<BxHI{len(pixels)}I", QUERY_COLORS, 2 + len(pixels), cmap, *pixels))
    head = recv_exactly(s, 32)
    if head[0] != 1:
        print(json.dumps({"ok": False, "problem": f"message type {head[0]}, code {head[1]}"}))
        return 1
    body = recv_exactly(s, 4 * struct.unpack_from("<I", head, 4)[0])
    n, = struct.unpack_from("<H", head, 8)
    colors = [list(struct.unpack_from("<HHH", body, 8 * i)) for i in range(n)]
    print(json.dumps({"ok": n == len(pixels), "colors": colors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
