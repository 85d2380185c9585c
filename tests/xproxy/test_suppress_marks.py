"""The suppressor's `on_answer` hook: told each request it answered from the cache, at once
or held (and behind which request), in order and exactly as often as its own counters say
(the run's wait analysis marks those waits "answered by the link" from it, observe/waits.py)."""

from __future__ import annotations

from tests.xproxy.test_suppress import Harness, change_property, error, intern, warm_atoms


def test_each_answer_is_told_once_at_once_or_held() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300, b"B": 301})
    told: list[tuple[int, int]] = []
    h.s.on_answer = lambda seq, behind: told.append((seq, behind))
    base = h.s.seq
    h.send(intern(b"A"))  # at once
    h.send(change_property(window=0xDEAD), intern(b"B"))  # held behind a request that may fail
    h.send(intern(b"C"))  # not known: the server's
    assert told == [(base + 1, 0), (base + 3, base + 2)]
    assert (h.cache.stats.answered, h.cache.stats.held) == (1, 1)
    h.server(error(base + 2))
    assert told == [(base + 1, 0), (base + 3, base + 2)]  # released, not told again


def test_with_verify_nothing_is_answered_so_nothing_is_told() -> None:
    h = Harness(verify=True)
    warm_atoms(h, {b"A": 300})
    told: list[tuple[int, int]] = []
    h.s.on_answer = lambda seq, behind: told.append((seq, behind))
    h.send(intern(b"A"))  # the client waits for the server's own reply
    assert told == [] and h.to_client == b""
