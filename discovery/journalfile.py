"""The state journal on disk (``journal.jsonl`` in ``--state-dir``): read at start, appended to
a line per record, and rewritten whole (write, fsync, rename) so that a crash leaves either
the old journal or the new one. The format is ``journal``'s."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from discovery import journal


class JournalFile:
    """One journal file; ``lines`` counts the lines it holds since it was last rewritten.
    Appending does nothing until the first ``rewrite`` opens it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._file: IO[bytes] | None = None

    def read(self) -> list[Any]:
        """The records the file holds (none if it does not exist yet)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return journal.decode(self.path.read_bytes()) if self.path.exists() else []

    def rewrite(self, records: Iterable[Any]) -> None:
        """Replace the file by ``records``, then keep it open for appending."""
        self.close()
        records = list(records)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(journal.encode_all(records))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - open for the daemon's life
        self.lines = len(records)

    def append(self, record: Any) -> None:
        if self._file is None:
            return
        self._file.write(journal.encode(record))
        self.lines += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


__all__ = ["JournalFile"]
