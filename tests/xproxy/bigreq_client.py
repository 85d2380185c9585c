"""An X client that enables BIG-REQUESTS as xcb does (QueryExtension, then Enable, each
waiting for its reply) and at once sends a 1 MiB ChangeProperty on the root window, then
reads the property's length back. Prints one JSON line: whether the server got it all."""

from __future__ import annotations

import json
import struct
import sys

from seqcheck_client import connect, pad, recv_exactly

SIZE = 1 << 20
CUT_BUFFER7 = 16  # a predefined atom: no InternAtom needed
STRING = 31


def reply(s) -> bytes:  # type: ignore[no-untyped-def]
    head = recv_exactly(s, 32)
    if head[0] != 1:
        raise SystemExit(json.dumps({"ok": False, "problem": f"message type {head[0]}, "
                                     f"code {head[1]}, instead of a reply"}))
    return head + recv_exactly(s, 4 * struct.unpack_from("<I", head, 4)[0])


def main() -> int:
    connected = connect()
    if connected is None:
        print(json.dumps({"ok": False, "problem": "setup failed"}))
        return 1
    s, _, root, _ = connected
    name = b"BIG-REQUESTS"
    s.sendall(struct.pack("<BxHH2x", 98, 2 + len(pad(name)) // 4, len(name)) + pad(name))
    found = reply(s)
    if not found[8]:
        print(json.dumps({"ok": False, "problem": "no BIG-REQUESTS"}))
        return 1
    s.sendall(struct.pack("<BBH", found[9], 0, 1))  # Enable
    maximum, = struct.unpack_from("<I", reply(s), 8)
    words = 7 + SIZE // 4  # 24 bytes of ChangeProperty and the 32-bit length field
    s.sendall(struct.pack("<BBHIIIIB3xI", 18, 0, 0, words, root, CUT_BUFFER7, STRING, 8, SIZE)
              + b"x" * SIZE)
    s.sendall(struct.pack("<BBHIIIII", 20, 0, 6, root, CUT_BUFFER7, 0, 0, 0))  # GetProperty
    got = reply(s)
    after, = struct.unpack_from("<I", got, 12)
    print(json.dumps({"ok": after == SIZE, "stored": after, "maximum_words": maximum}))
    return 0 if after == SIZE else 1


if __name__ == "__main__":
    sys.exit(main())
