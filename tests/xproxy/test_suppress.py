"""suppress/core.py byte by byte: which answers go at once, which wait, what the client sees
(every sequence number exact and in order), what is swallowed and compared, and the caches."""

from __future__ import annotations

import random
import struct

import pytest

from xproxy.suppress.core import (
    KINDS,
    DisplayCache,
    Kind,
    Suppressor,
    TrueColorMap,
    Visual,
    parse_screens,
)
from xproxy.x11.errors import ClientProtocolError

E = "<"
CMAP, ROOT, VISUAL = 0x20, 0x100, 0x21


def setup_request() -> bytes:
    return struct.pack("<BxHHHH2x", 0x6C, 11, 0, 0, 0)


def setup_reply(masks=(0xFF0000, 0xFF00, 0xFF), depth=24, bits=8) -> bytes:
    vendor = b"test"
    body = struct.pack("<IIIIHHBBBBBBBB4x", 12101007, 0x200000, 0x1FFFFF, 0, len(vendor),
                       65535, 1, 1, 0, 0, 32, 32, 8, 255) + vendor
    body += struct.pack("<BBB5x", depth, 32, 32)
    body += struct.pack("<IIIIIHHHHHHIBBBB", ROOT, CMAP, 0xFFFFFF, 0, 0, 1024, 768, 270, 203,
                        1, 1, VISUAL, 0, 0, depth, 1)
    body += struct.pack("<BxH4x", depth, 1)
    body += struct.pack("<IBBHIII4x", VISUAL, 4, bits, 1 << bits, *masks)
    return struct.pack("<BxHHH", 1, 11, 0, len(body) // 4) + body


def intern(name: bytes, only_if_exists: int = 0) -> bytes:
    n = len(name)
    padded = name + b"\0" * (-n % 4)
    return struct.pack("<BBHH2x", 16, only_if_exists, 2 + len(padded) // 4, n) + padded


def intern_reply(seq: int, atom: int) -> bytes:
    return struct.pack("<BBHII20x", 1, 0, seq & 0xFFFF, 0, atom)


def alloc_color(r: int, g: int, b: int, cmap: int = CMAP) -> bytes:
    return struct.pack("<BxHIHHH2x", 84, 4, cmap, r, g, b)


def alloc_reply(seq: int, pixel: int, r: int, g: int, b: int) -> bytes:
    return struct.pack("<BBHIHHHHI12x", 1, 0, seq & 0xFFFF, 0, r, g, b, 0, pixel)


def change_property(window: int = ROOT) -> bytes:
    return struct.pack("<BBHIIIB3xI", 18, 0, 6, window, 39, 31, 8, 0)


def no_op() -> bytes:
    return struct.pack("<BxH", 127, 1)


def event(seq: int, code: int = 28) -> bytes:
    return struct.pack("<BBH28x", code, 0, seq & 0xFFFF)


def error(seq: int, code: int = 3) -> bytes:
    return struct.pack("<BBHIHB21x", 0, code, seq & 0xFFFF, 0, 0, 18)


def messages(data: bytes) -> list[tuple[int, int]]:
    """(type, 16-bit sequence) of each 32-byte-or-longer server message in `data`."""
    out, pos = [], 0
    while pos < len(data):
        kind = data[pos]
        size = 32
        if kind == 1:
            size += 4 * struct.unpack_from("<I", data, pos + 4)[0]
        out.append((kind, struct.unpack_from("<H", data, pos + 2)[0]))
        pos += size
    return out


class Harness:
    """A Suppressor with its setup done; records what reached each side."""

    def __init__(self, cache: DisplayCache | None = None, verify: bool = False) -> None:
        self.cache = cache or DisplayCache("epoch")
        self.s = Suppressor(self.cache, 1, verify=verify)
        self.to_server = b""
        self.to_client = b""
        self.send(setup_request())
        self.server(setup_reply())
        self.to_server = self.to_client = b""

    def send(self, *requests: bytes) -> None:
        out, back = self.s.from_client(b"".join(requests))
        self.to_server += out
        self.to_client += back

    def server(self, *msgs: bytes) -> None:
        self.to_client += self.s.from_server(b"".join(msgs))

    def take(self) -> list[tuple[int, int]]:
        got = messages(self.to_client)
        self.to_client = b""
        return got


def warm_atoms(h: Harness, names: dict[bytes, int]) -> None:
    for name, atom in names.items():
        h.send(intern(name))
        h.server(intern_reply(h.s.seq, atom))
    h.take()


def test_known_atom_is_answered_at_once_and_the_servers_reply_swallowed() -> None:
    h = Harness()
    warm_atoms(h, {b"WM_PROTOCOLS": 300})
    before = h.s.seq
    h.send(intern(b"WM_PROTOCOLS"))
    assert h.to_server.endswith(intern(b"WM_PROTOCOLS"))  # still sent: same sequence numbers
    assert h.to_client == intern_reply(before + 1, 300)
    h.take()
    h.server(intern_reply(before + 1, 300))
    assert h.to_client == b""  # swallowed
    assert h.cache.stats.compared == 1 and h.cache.stats.mismatches == 0


def test_an_answer_waits_behind_a_request_that_could_fail_and_follows_its_error() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    base = h.s.seq
    h.send(change_property(window=0xDEAD))  # may fail: BadWindow
    h.send(intern(b"A"))
    assert h.to_client == b""  # held: the error for base+1, if any, must come first
    h.server(error(base + 1))
    assert h.take() == [(0, (base + 1) & 0xFFFF), (1, (base + 2) & 0xFFFF)]
    h.server(intern_reply(base + 2, 300))
    assert h.to_client == b""


def test_an_event_finishes_the_requests_before_it() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    base = h.s.seq
    h.send(change_property(), intern(b"A"))
    h.server(event(base + 1))  # PropertyNotify caused by base+1: base+1 may still fail
    assert h.take() == [(28, (base + 1) & 0xFFFF)]
    h.server(event(base + 2))  # something labelled base+2: base+1 is finished
    assert h.take() == [(1, (base + 2) & 0xFFFF), (28, (base + 2) & 0xFFFF)]


def test_events_of_their_own_behind_an_early_answer_are_relabelled_never_replies() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300, b"B": 301})
    base = h.s.seq
    h.send(intern(b"A"), intern(b"B"))  # both answered at once
    assert h.take() == [(1, (base + 1) & 0xFFFF), (1, (base + 2) & 0xFFFF)]
    # a pointer event the server labels with base+1 (it had finished only base+1)
    h.server(intern_reply(base + 1, 300), event(base + 1, code=6), intern_reply(base + 2, 301))
    assert h.take() == [(6, (base + 2) & 0xFFFF)]


def test_truecolor_alloc_color_computed_and_still_sent() -> None:
    h = Harness()
    base = h.s.seq
    h.send(alloc_color(0xFFFF, 0x8000, 0x1234))
    assert h.to_server.endswith(alloc_color(0xFFFF, 0x8000, 0x1234))
    assert h.to_client == alloc_reply(base + 1, 0xFF8012, 0xFFFF, 0x8080, 0x1212)


def test_alloc_color_on_another_colormap_goes_to_the_server() -> None:
    h = Harness()
    h.send(alloc_color(1, 2, 3, cmap=0x400001))
    assert h.to_client == b""
    assert h.cache.stats.answered == 0


def test_truecolor_565_ramp() -> None:
    tc = TrueColorMap(Visual(1, 4, 6, 0xF800, 0x07E0, 0x001F, 16, 64))
    pixel, r, g, b = tc.alloc(0xFFFF, 0xFFFF, 0xFFFF)
    assert pixel == 0xFFFF and (r, g, b) == (0xFFFF, 0xFFFF, 0xFFFF)
    pixel, r, g, b = tc.alloc(0, 0, 0)
    assert pixel == 0 and (r, g, b) == (0, 0, 0)
    assert tc.query(pixel) == (0, 0, 0)
    assert tc.query(0x10000) is None


def query_colors(*pixels: int, cmap: int = CMAP) -> bytes:
    return struct.pack(f"<BxHI{len(pixels)}I", 91, 2 + len(pixels), cmap, *pixels)


def query_colors_reply(seq: int, *rgbs: tuple[int, int, int]) -> bytes:
    return (struct.pack("<BBHIH22x", 1, 0, seq & 0xFFFF, 2 * len(rgbs), len(rgbs))
            + b"".join(struct.pack("<HHH2x", *rgb) for rgb in rgbs))


def test_truecolor_query_colors_computed_from_the_ramps_and_still_sent() -> None:
    h = Harness()
    base = h.s.seq
    request = query_colors(0xFF8012, 0, 0x0000FF)
    h.send(request)
    assert h.to_server.endswith(request)
    assert h.to_client == query_colors_reply(base + 1, (0xFFFF, 0x8080, 0x1212), (0, 0, 0),
                                             (0, 0, 0xFFFF))
    assert h.cache.stats.answered == 1
    h.take()
    h.server(query_colors_reply(base + 1, (0xFFFF, 0x8080, 0x1212), (0, 0, 0), (0, 0, 0xFFFF)))
    assert h.to_client == b"" and h.cache.stats.mismatches == 0


def test_query_colors_the_server_may_refuse_goes_to_the_server() -> None:
    h = Harness()
    h.send(query_colors(0x1000000))  # a bit outside the masks: BadValue
    h.send(query_colors(1, cmap=0x400001))  # not a default TrueColor colormap
    h.send(query_colors(*range(20000)))  # longer than any answered here: not read whole
    assert h.to_client == b"" and h.cache.stats.answered == h.cache.stats.held == 0
    assert h.to_server.endswith(query_colors(*range(20000)))


def test_a_query_colors_mismatch_stops_computing_colours() -> None:
    h = Harness()
    base = h.s.seq
    h.send(query_colors(0x010203))
    h.server(query_colors_reply(base + 1, (1, 2, 3)))
    assert h.cache.stats.mismatches == 1 and h.cache.no_color
    assert h.cache.mismatch_log[0]["kind"] == "qcolors"
    h.take()
    h.send(query_colors(0x010203), alloc_color(1, 2, 3))
    assert h.to_client == b""


def test_every_answer_kind_is_reachable() -> None:
    """A Kind no request maps to is dead code in the suppressor (as QueryColors once was)."""
    assert set(KINDS.values()) | {Kind.EXT_REQUEST, Kind.ROOT_PROPERTY, Kind.WATCHED,
                                  Kind.SELECTION_OWNER, Kind.NONE} == set(Kind)
    assert len(set(KINDS.values())) == len(KINDS)


def test_mismatch_is_counted_and_the_entry_forgotten() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    base = h.s.seq
    h.send(intern(b"A"))
    h.server(intern_reply(base + 1, 999))
    assert h.cache.stats.mismatches == 1
    assert b"A" not in h.cache.atoms
    assert h.cache.mismatch_log[0]["kind"] == "atom"


def test_verify_mode_gives_the_client_the_servers_reply() -> None:
    cache = DisplayCache("epoch")
    cache.learn_atom(b"A", 300)
    h = Harness(cache, verify=True)
    base = h.s.seq
    h.send(intern(b"A"))
    assert h.to_client == b""
    h.server(intern_reply(base + 1, 301))
    assert h.to_client == intern_reply(base + 1, 301)
    assert cache.stats.compared == 1 and cache.stats.mismatches == 1


def test_get_atom_name_learned_from_intern_atom_and_cache_persists() -> None:
    h = Harness()
    warm_atoms(h, {b"_NET_WM_NAME": 320})
    again = DisplayCache.from_json(h.cache.to_json())
    h2 = Harness(again)
    base = h2.s.seq
    h2.send(struct.pack("<BxHI", 17, 2, 320))
    name = b"_NET_WM_NAME"
    assert h2.to_client == struct.pack("<BBHIH22x", 1, 0, base + 1, 3, len(name)) + name
    assert again.stats.answered == 1


def test_keyboard_mapping_valid_while_a_witness_is_open_and_until_mapping_notify() -> None:
    cache = DisplayCache("epoch")
    a = Harness(cache)
    kbd = struct.pack("<BxHBB2x", 101, 2, 8, 2)
    a.send(kbd)
    reply = struct.pack("<BBHI24x", 1, 1, a.s.seq, 2) + b"\1\0\0\0\2\0\0\0"
    a.server(reply)
    b = Harness(cache)
    b.send(kbd)
    assert messages(b.to_client) == [(1, b.s.seq)]
    b.server(reply[:2] + struct.pack("<H", b.s.seq) + reply[4:])
    b.server(event(b.s.seq, code=34))  # MappingNotify
    b.take()
    b.send(kbd)
    assert b.to_client == b""  # no longer known
    a.s.close()


def test_sequence_numbers_wrap() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    while h.s.seq < 70000:  # as xcb does, the server speaks at least every 65536 requests
        for _ in range(min(30000, 70000 - h.s.seq)):
            h.send(no_op())
        h.server(event(h.s.seq))
        h.take()
    h.send(intern(b"A"))
    assert h.take() == [(1, 70001 & 0xFFFF)]
    h.server(intern_reply(70001, 300))
    assert h.to_client == b"" and h.cache.stats.mismatches == 0


@pytest.mark.parametrize("seed", range(5))
def test_random_chunking_changes_nothing(seed: int) -> None:
    rng = random.Random(seed)
    cache = DisplayCache("epoch")
    cache.learn_atom(b"A", 300)
    client = [setup_request(), change_property(), intern(b"A"), alloc_color(1, 2, 3),
              intern(b"NEW"), no_op(), intern(b"A")]
    server = [setup_reply(), event(1), intern_reply(2, 300), alloc_reply(3, 0, 0, 0, 0),
              intern_reply(4, 400), event(5, code=6), intern_reply(6, 300)]

    def run(split: bool) -> tuple[bytes, bytes]:
        s = Suppressor(DisplayCache.from_json(cache.to_json()), 1)
        up, down = b"", b""
        for c, m in zip(client, server):
            for data, to_server in ((c, True), (m, False)):
                pieces = [data]
                if split:
                    cuts = sorted(rng.sample(range(1, len(data)), min(3, len(data) - 1)))
                    pieces = [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)])]
                for p in pieces:
                    if to_server:
                        out, back = s.from_client(p)
                        up += out
                        down += back
                    else:
                        down += s.from_server(p)
        return up, down

    whole, chunked = run(False), run(True)
    assert whole == chunked
    assert whole[0] == b"".join(client)


def test_a_request_answered_near_the_client_cannot_be_big() -> None:
    """InternAtom is read whole to be answered: one of megabytes is refused at its header."""
    h = Harness()
    with pytest.raises(ClientProtocolError, match="longer than any request of its kind"):
        h.send(struct.pack("<BBHI", 16, 0, 0, 4_000_000) + bytes(100))


def test_parse_screens() -> None:
    [(cmap, visual)] = parse_screens(setup_reply(), E)
    assert cmap == CMAP and visual is not None and visual.cls == 4 and visual.depth == 24


def test_an_error_teaches_nothing() -> None:
    h = Harness()
    base = h.s.seq
    h.send(struct.pack("<BxHI", 17, 2, 0x7FFFFF0))  # GetAtomName of no atom
    h.server(error(base + 1, code=5))
    assert h.take() == [(0, (base + 1) & 0xFFFF)]
    assert 0x7FFFFF0 not in h.cache.atom_names
    h.send(struct.pack("<BxHI", 17, 2, 0x7FFFFF0))
    assert h.to_client == b""  # still asked of the server


def query_extension(name: bytes) -> bytes:
    n = len(name)
    padded = name + b"\0" * (-n % 4)
    return struct.pack("<BxHH2x", 98, 2 + len(padded) // 4, n) + padded


def query_extension_reply(seq: int, major: int) -> bytes:
    return struct.pack("<BBHIBBBB20x", 1, 0, seq & 0xFFFF, 0, 1, major, 0, 0)


def ext_request(major: int, minor: int, body: bytes = b"") -> bytes:
    return struct.pack("<BBH", major, minor, 1 + len(body) // 4) + body


def ext_reply(seq: int, payload: bytes = b"") -> bytes:
    return struct.pack("<BBHI", 1, 0, seq & 0xFFFF, 0) + payload.ljust(24, b"\0")


def render_session(h: Harness, client_version: tuple[int, int]) -> tuple[list, int]:
    """QueryExtension RENDER, QueryVersion, QueryPictFormats: what the client got at once,
    and the sequence number of QueryPictFormats."""
    h.send(query_extension(b"RENDER"))
    if h.to_client == b"":
        h.server(query_extension_reply(h.s.seq, 139))
    h.send(ext_request(139, 0, struct.pack("<II", *client_version)))
    version_seq = h.s.seq
    h.send(ext_request(139, 1))
    return h.take(), version_seq


def test_extension_versions_and_constant_lists_are_learned_then_answered() -> None:
    h = Harness()
    got, v = render_session(h, (0, 11))
    assert got == [(1, v - 1)]  # only the QueryExtension reply: the rest was not known
    h.server(ext_reply(v, struct.pack("<II", 0, 11)), ext_reply(v + 1, b"formats"))
    assert h.take() == [(1, v), (1, v + 1)]
    h2 = Harness(h.cache)  # another connection: all three answered, nothing waited for
    got, v2 = render_session(h2, (0, 11))
    assert got == [(1, v2 - 1), (1, v2), (1, v2 + 1)]
    assert h2.to_server.count(bytes([139])) >= 2  # still sent, replies swallowed
    h2.server(query_extension_reply(v2 - 1, 139), ext_reply(v2, struct.pack("<II", 0, 11)),
              ext_reply(v2 + 1, b"formats"))
    assert h2.to_client == b"" and h2.cache.stats.mismatches == 0


def test_an_extension_answer_depends_on_the_version_the_connection_announced() -> None:
    h = Harness()
    _, v = render_session(h, (0, 11))
    h.server(ext_reply(v, struct.pack("<II", 0, 11)), ext_reply(v + 1, b"formats"))
    h.take()
    h2 = Harness(h.cache)
    got, v = render_session(h2, (0, 5))  # an older client: its own question, its own answer
    assert got == [(1, v - 1)]
    h2.server(ext_reply(v, struct.pack("<II", 0, 5)), ext_reply(v + 1, b"no-subpixel"))
    assert h2.take() == [(1, v), (1, v + 1)]


def test_other_extension_requests_go_to_the_server_and_are_barriers() -> None:
    h = Harness()
    _, v = render_session(h, (0, 11))
    h.server(ext_reply(v, struct.pack("<II", 0, 11)), ext_reply(v + 1, b"formats"))
    warm_atoms(h, {b"A": 300})
    base = h.s.seq
    h.send(ext_request(139, 4, struct.pack("<IIII", 1, 2, 3, 4)))  # CreatePicture: may fail
    h.send(intern(b"A"))
    assert h.to_client == b""  # held behind it
    h.server(error(base + 1, 143))
    assert h.take() == [(0, (base + 1) & 0xFFFF), (1, (base + 2) & 0xFFFF)]


def test_an_extension_error_teaches_nothing() -> None:
    h = Harness()
    _, v = render_session(h, (0, 11))
    h.server(error(v, 1), ext_reply(v + 1, b"formats"))
    h.take()
    h2 = Harness(h.cache)
    got, v = render_session(h2, (0, 11))
    assert got == [(1, v - 1)]  # QueryVersion unknown, and so the list after it waits


def open_font(fid: int, name: bytes) -> bytes:
    n = len(name)
    padded = name + b"\0" * (-n % 4)
    return struct.pack("<BxHIH2x", 45, 3 + len(padded) // 4, fid, n) + padded


def test_a_font_name_that_opened_once_is_no_barrier_on_the_next_connection() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    base = h.s.seq
    h.send(open_font(0x400001, b"cursor"), open_font(0x400002, b"nosuchfont"))
    h.server(error(base + 2, 7))  # BadName for the second; the first finished before it
    h.take()
    assert h.cache.fonts_ok == {b"cursor"}
    h2 = Harness(DisplayCache.from_json(h.cache.to_json()))
    base = h2.s.seq
    h2.send(open_font(0x400001, b"cursor"), intern(b"A"))
    assert h2.take() == [(1, base + 2)]  # answered at once: the OpenFont cannot fail
    h2.send(open_font(0x400002, b"nosuchfont"), intern(b"A"))
    assert h2.to_client == b""  # still a barrier: it failed before


def test_an_answer_is_not_let_out_between_the_replies_of_a_multi_reply_request() -> None:
    """RECORD's EnableContext answers with replies until EndOfData, all with its sequence
    number; an answer for a later request waits for the last of them."""
    h = Harness()
    warm_atoms(h, {b"A": 300})
    h.send(query_extension(b"RECORD"))
    h.server(query_extension_reply(h.s.seq, 146))
    h.take()
    h.send(ext_request(146, 5, struct.pack("<I", 0x400001)))  # EnableContext
    enable = h.s.seq
    h.send(intern(b"A"))
    assert h.to_client == b""  # held behind a request that may fail
    start = struct.pack("<BBHI", 1, 4, enable & 0xFFFF, 0) + bytes(24)  # StartOfData
    data = struct.pack("<BBHI", 1, 0, enable & 0xFFFF, 2) + bytes(24) + b"\1" * 8
    end = struct.pack("<BBHI", 1, 5, enable & 0xFFFF, 0) + bytes(24)  # EndOfData
    h.server(start, data)
    assert h.take() == [(1, enable), (1, enable)]  # still held: more replies may come
    h.server(end)
    assert h.take() == [(1, enable), (1, enable + 1)]  # then the answer


def big(opcode: int, body: bytes) -> bytes:
    """A request in BIG-REQUESTS form: length 0, then the whole length in 32 bits."""
    return struct.pack("<BBHI", opcode, 0, 0, 2 + len(body) // 4) + body


def test_a_length_of_0_is_refused_until_big_requests_is_enabled() -> None:
    h = Harness()
    with pytest.raises(ClientProtocolError, match="without BIG-REQUESTS enabled"):
        h.send(big(18, bytes(24)))
    h = Harness()
    with pytest.raises(ClientProtocolError, match="less than 2 words"):
        h.send(struct.pack("<BBHI", 18, 0, 0, 1))


@pytest.mark.parametrize("cached", [False, True])
def test_big_requests_framed_after_the_enable(cached: bool) -> None:
    """After the Enable (answered near the client or not), a length of 0 is followed by the
    whole length: the request after a big one is framed where it starts."""
    cache = DisplayCache("epoch")
    if cached:
        h = Harness(cache)
        h.send(query_extension(b"BIG-REQUESTS"))
        h.server(query_extension_reply(h.s.seq, 133))
        h.send(ext_request(133, 0))
        h.server(ext_reply(h.s.seq, struct.pack("<I", 4194303)))
    h = Harness(cache)
    h.send(query_extension(b"BIG-REQUESTS"))
    if not cached:
        h.server(query_extension_reply(h.s.seq, 133))
    h.send(ext_request(133, 0))
    if not cached:
        h.server(ext_reply(h.s.seq, struct.pack("<I", 4194303)))
    h.take()
    base = h.s.seq
    payload = big(18, bytes(70000 * 4))
    h.send(payload, intern(b"A"))
    assert h.s.seq == base + 2
    assert h.to_server.endswith(payload + intern(b"A"))


@pytest.mark.parametrize("cached", [False, True])
def test_a_big_request_beyond_the_servers_maximum_is_refused(cached: bool) -> None:
    """The maximum is the Enable's reply, the server's or the cache's."""
    cache = DisplayCache("epoch")
    for connection in range(2 if cached else 1):
        h = Harness(cache)
        h.send(query_extension(b"BIG-REQUESTS"))
        if h.to_client == b"":
            h.server(query_extension_reply(h.s.seq, 133))
        h.send(ext_request(133, 0))
        if connection == 0:
            h.server(ext_reply(h.s.seq, struct.pack("<I", 1000)))
    assert (h.cache.stats.answered > 0) == cached
    h.send(big(18, bytes(3000)))
    with pytest.raises(ClientProtocolError, match="exceeds the server's maximum of 4000"):
        h.send(big(18, bytes(4000)))
