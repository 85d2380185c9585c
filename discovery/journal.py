"""The state journal's format: one JSON record per line (the registry's ``Journal`` effects,
folded by ``registry.replay``), and when to compact it.

Pure: records in, bytes out, and bytes in, records out; ``journalfile`` keeps the file. A
line that is not JSON (the last one, cut short by a crash) is skipped, so a damaged journal
never keeps the daemon from starting.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

#: journal lines before a rewrite is considered
COMPACT_AFTER = 1000


def encode(record: Any) -> bytes:
    """One record as its journal line."""
    return (json.dumps(record) + "\n").encode()


def encode_all(records: Iterable[Any]) -> bytes:
    """A whole journal: one line per record."""
    return b"".join(encode(rec) for rec in records)


def decode(data: bytes) -> list[Any]:
    """The records of a journal's contents, skipping lines that are not JSON."""
    records: list[Any] = []
    for line in data.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def needs_compaction(lines: int, standing: int) -> bool:
    """Whether a journal of ``lines`` lines holding ``standing`` registrations is due a
    rewrite: churn (register/withdraw cycles) must not grow the file without bound, and a
    journal mostly of live records is not worth rewriting."""
    return lines > COMPACT_AFTER and lines > 4 * standing


__all__ = ["COMPACT_AFTER", "decode", "encode", "encode_all", "needs_compaction"]
