"""How the `xproxy` commands end on an error, with the standard library only (the `run`
client imports it before any Twisted is loaded)."""

from __future__ import annotations

import sys
from typing import NoReturn


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `xproxy: message` on stderr and exit with `code` (2 for a usage error)."""
    print(f"xproxy: {message}", file=sys.stderr)
    raise SystemExit(code)
