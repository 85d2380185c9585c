"""ABD tags: the (timestamp, client id) order of writes to one register.

A third field, the client's call sequence number, makes the tags of two concurrent
writes from the same stub distinct too, so equal tags always mean the same write.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Tag:
    ts: int
    client: str
    seq: int

    def encode(self) -> bytes:
        return f"{self.ts}:{self.client}:{self.seq}".encode("ascii")

    @classmethod
    def decode(cls, raw: bytes) -> Tag:
        """Parse a tag from the wire; raises ValueError on anything malformed."""
        ts, client, seq = raw.decode("ascii").split(":")
        if not client.isalnum() and client != "":
            raise ValueError(f"bad client id in tag {raw!r}")
        return cls(int(ts), client, int(seq))


ZERO = Tag(0, "", 0)
