"""A linearizability checker for read/write registers: Wing & Gong's search, with
Lowe's memoisation of (operations left, register value).

An operation whose outcome is unknown (it failed or timed out) may have taken effect at
any time after it was invoked, or never: it gets ``end = inf`` and may be left out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

INF = math.inf


@dataclass(frozen=True)
class Op:
    client: int
    kind: str  # "put" or "get"
    key: str
    value: str  # the value written, or the value read
    start: float
    end: float  # INF when the outcome is unknown


def check(history: list[Op], initial: str = "") -> dict[str, bool]:
    """Linearizability of each key's sub-history (registers are independent)."""
    per_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if op.kind == "get" and op.end == INF:
            continue  # a read with no answer constrains nothing
        per_key[op.key].append(op)
    return {key: linearizable(ops, initial) for key, ops in per_key.items()}


def linearizable(ops: list[Op], initial: str = "") -> bool:
    ops = sorted(ops, key=lambda o: o.start)
    n = len(ops)
    optional = 0
    for i, op in enumerate(ops):
        if op.end == INF:
            optional |= 1 << i
    full = (1 << n) - 1
    dead: set[tuple[int, str]] = set()

    def search(left: int, state: str) -> bool:
        if left & ~optional == 0:
            return True
        if (left, state) in dead:
            return False
        horizon = min(ops[i].end for i in range(n) if left >> i & 1)
        for i in range(n):
            if not left >> i & 1:
                continue
            op = ops[i]
            if op.start > horizon:
                break  # sorted by start: every later op began after something returned
            if op.kind == "get":
                if op.value == state and search(left & ~(1 << i), state):
                    return True
            elif search(left & ~(1 << i), op.value):
                return True
        dead.add((left, state))
        return False

    return search(full, initial)
