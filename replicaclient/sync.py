"""Full sync of a replica, pure: the wire form of a page of registers, and which
register states to copy from what the source replicas sent.

Theory of operation
-------------------
A replica that restarted with empty memory, or missed more writes than the stub could
keep for it, is brought up to date by a state transfer. The stub asks every live
source replica for the registers named after a cursor (``after``), a page at a time;
each register comes with its tag and the write that made it (command and arguments),
so replaying that write with that tag into the target reproduces it there, and the
target's own newer-tag-wins rule keeps anything newer it already holds.

:func:`select` decides what one page copies. A source whose answer cannot be trusted
— malformed, naming a register it was not asked for, or carrying a tag further in the
future than ``future_ms`` — is rejected for the whole sync and nothing it sent is
used. Of the rest, without a threshold the newest tag of each register wins (crash
faults: every source is honest, some are behind); with a threshold (``vote``) a
register's state is copied only when that many sources sent exactly the same state,
so a lying source cannot make up a write.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .tag import Tag, physical_ms

_U32 = struct.Struct("!I")
COUNT = b"_rc_n"
MORE = b"_rc_more"
AFTER = b"_rc_after"
LIMIT = b"_rc_limit"
RECORD = b"_rc_s"  # _rc_s<j>: chunk j of the page's records, one after another
_CHUNK = 65535  # AMP's longest value


class BadPage(ValueError):
    """A page a source sent that cannot be used (the message says why)."""


@dataclass(frozen=True)
class Entry:
    """One register's state: its tag and the write that made it."""

    register: bytes
    tag: Tag
    command: bytes
    args: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    more: bool
    """The source has registers after the last one of this page."""


def _pack(parts: Iterable[bytes]) -> bytes:
    return b"".join(_U32.pack(len(p)) + p for p in parts)


def _unpack(raw: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise BadPage("truncated record")
        (n,) = _U32.unpack_from(raw, at)
        at += 4
        if at + n > len(raw):
            raise BadPage("truncated record")
        out.append(raw[at:at + n])
        at += n
    return out


def encode_page(entries: Iterable[Entry], more: bool) -> dict[bytes, bytes]:
    """The answer box entries of one page (for the replica-side helper): the records,
    each a length-prefixed list of fields, end to end, cut into AMP-sized values."""
    records = []
    for entry in entries:
        parts = [entry.register, entry.tag.encode(), entry.command]
        for k, v in entry.args:
            parts += (k, v)
        record = _pack(parts)
        records.append(_U32.pack(len(record)) + record)
    blob = b"".join(records)
    box = {RECORD + b"%d" % (j // _CHUNK): blob[j:j + _CHUNK]
           for j in range(0, len(blob), _CHUNK)}
    box[COUNT] = b"%d" % len(records)
    box[MORE] = b"1" if more else b"0"
    return box


def parse_page(box: Mapping[bytes, bytes], limit: int) -> Page:
    """A page from a source's answer box; raises :class:`BadPage` on anything malformed
    or on more registers than ``limit``."""
    try:
        count = int(box[COUNT])
        more = {b"1": True, b"0": False}[box[MORE]]
    except (KeyError, ValueError) as error:
        raise BadPage(f"not a sync page ({error!r})") from None
    if not 0 <= count <= limit:
        raise BadPage(f"{count} registers on a page of at most {limit}")
    chunks, j = [], 0
    while (chunk := box.get(RECORD + b"%d" % j)) is not None:
        chunks.append(chunk)
        j += 1
    records = _unpack(b"".join(chunks))
    if len(records) != count:
        raise BadPage(f"{len(records)} register records for a count of {count}")
    entries = []
    for i, record in enumerate(records):
        parts = _unpack(record)
        if len(parts) < 3 or len(parts) % 2 == 0:
            raise BadPage(f"register record {i} malformed")
        try:
            tag = Tag.decode(parts[1])
        except (ValueError, UnicodeDecodeError):
            raise BadPage(f"register record {i}: malformed tag {parts[1][:40]!r}") from None
        args = tuple(zip(parts[3::2], parts[4::2], strict=True))
        entries.append(Entry(parts[0], tag, parts[2], args))
    return Page(entries, more)


@dataclass
class Selection:
    """What one page copies, and which sources were rejected (source -> why)."""

    entries: list[Entry] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    undecided: list[bytes] = field(default_factory=list)
    """Registers no state of which reached the threshold: not copied."""
    upto: bytes | None = None
    """The last register this page decided; the next page starts after it (None: done)."""


def select(pages: Mapping[str, Page | BaseException], *, after: bytes | None, now_ms: int,
           future_ms: int, threshold: int | None = None) -> Selection:
    """Decide one page of a sync from what each source answered for the registers after
    ``after`` (None: from the first). ``threshold`` None: the newest tag wins; else that many sources must
    agree on a register's exact state. Entries past the page's bound (the smallest last
    register of the sources that have more) are left for the next page."""
    result = Selection()
    good: dict[str, Page] = {}
    for source, page in pages.items():
        why = _distrust(page, after, now_ms, future_ms)
        if why is None:
            assert isinstance(page, Page)
            good[source] = page
        else:
            result.rejected[source] = why
    bounds = [p.entries[-1].register for p in good.values() if p.more and p.entries]
    bound = min(bounds) if bounds else None
    states: dict[bytes, dict[Entry, int]] = {}
    for page in good.values():
        for entry in page.entries:
            if bound is not None and entry.register > bound:
                break
            seen = states.setdefault(entry.register, {})
            seen[entry] = seen.get(entry, 0) + 1
    for register in sorted(states):
        seen = states[register]
        if threshold is None:
            result.entries.append(max(seen, key=lambda e: e.tag))
            continue
        agreed = [e for e, n in seen.items() if n >= threshold]
        if agreed:
            result.entries.append(max(agreed, key=lambda e: e.tag))
        else:
            result.undecided.append(register)
    if bound is not None:
        result.upto = bound
    return result


def _distrust(page: Page | BaseException, after: bytes | None, now_ms: int,
              future_ms: int) -> str | None:
    if isinstance(page, BaseException):
        text = str(page)
        return f"{type(page).__name__}: {text}" if text else type(page).__name__
    last = after
    for entry in page.entries:
        if last is not None and entry.register <= last:
            if after is not None and entry.register <= after:
                return f"sent register {entry.register[:40]!r}, which it was not asked for"
            return f"sent register {entry.register[:40]!r} out of order or twice"
        last = entry.register
        if physical_ms(entry.tag.ts) > now_ms + future_ms:
            return (f"sent register {entry.register[:40]!r} with a tag "
                    f"{physical_ms(entry.tag.ts) - now_ms} ms in the future")
    return None


def sync_reason(known: str | None, seen: str | None, *, pending: str | None = None,
                joined: bool = False, hints_dropped: bool = False) -> str | None:
    """Why a replica that is back needs a full sync, or None if replaying its hints is
    enough. ``known``: the incarnation seen before; ``seen``: the one it reports now
    (None: it has no helper, so it cannot be synced); ``pending``: the reason of an
    earlier sync that did not complete (it still holds)."""
    if seen is None:
        return None
    if pending is not None:
        return pending
    if known is not None and seen != known:
        return f"restarted (incarnation {known} -> {seen})"
    if joined:
        return "joined"
    if hints_dropped:
        return "writes it missed were dropped past the hint queue's bounds"
    return None
