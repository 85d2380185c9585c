"""An X client that draws without waiting: N rounds of a PolyFillRectangle and a
ChangeProperty appending the round's number to a property of its window, sent in batches
without reading anything, then one GetProperty. Prints one JSON line: whether the property
holds every number in order (nothing lost, nothing twice) and how many it holds. It says
"drawing" on a line once it has sent 140000 requests (more than 16 bits count) without
reading anything, and goes on.
"""

from __future__ import annotations

import json
import struct
import sys

from seqcheck_client import connect, pad, recv_exactly


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    connected = connect()
    if connected is None:
        print(json.dumps({"ok": False, "problems": ["setup failed"]}))
        return 1
    s, base, root, _cmap = connected
    window, gc = base | 1, base | 2
    name = b"XPROXY_FLOOD"
    out = [struct.pack("<BBHIIhhHHHHII", 1, 0, 8, window, root, 0, 0, 100, 100, 0, 1, 0, 0),
           struct.pack("<BxHIII", 55, 4, gc, window, 0),
           struct.pack("<BBHH2x", 16, 0, 2 + len(pad(name)) // 4, len(name)) + pad(name)]
    s.sendall(b"".join(out))
    head = recv_exactly(s, 32)
    while head[0] != 1:  # (an event or error before the InternAtom reply: none expected)
        head = recv_exactly(s, 32)
    atom, = struct.unpack_from("<I", head, 8)
    batch = []
    for i in range(n):
        batch.append(struct.pack("<BxHIIhhHH", 70, 5, window, gc, i % 90, i % 90, 10, 10))
        batch.append(struct.pack("<BBHIIIB3xII", 18, 2, 7, window, atom, 6, 32, 1, i))
        if len(batch) >= 400:
            s.sendall(b"".join(batch))
            batch = []
        if i == 70000:  # more requests than 16 bits count, and a property over 256 KB
            print("drawing", flush=True)
    batch.append(struct.pack("<BBHIIIII", 20, 0, 6, window, atom, 0, 0, n + 10))
    s.sendall(b"".join(batch))
    problems = []
    while True:
        head = recv_exactly(s, 32)
        if head[0] == 0:
            problems.append(f"error {head[1]} for request {head[10]}")
            continue
        if head[0] == 1:
            break
    body = recv_exactly(s, 4 * struct.unpack_from("<I", head, 4)[0])
    count, = struct.unpack_from("<I", head, 16)
    values = list(struct.unpack_from(f"<{count}I", body))
    if values != list(range(n)):
        missing = sorted(set(range(n)) - set(values))[:10]
        problems.append(f"{count} values, missing {missing}")
    s.close()
    print(json.dumps({"ok": not problems, "count": count, "problems": problems[:10]}))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
