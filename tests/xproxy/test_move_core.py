"""The pure core of a movable display (xproxy/move): field tables, mapping, tracker, planner
and the virtual client, with byte builders in both byte orders."""

from __future__ import annotations

import re
import struct

import pytest
from Xlib.protocol import event, request, rq

from testing.x11wire import error, pad, reply, setup_with_screen
from testing.x11wire import request as req
from xproxy.move import fields as f
from xproxy.move import planner
from xproxy.move.client import VirtualClient
from xproxy.move.mapping import Ext, Mapping
from xproxy.move.planner import (
    match_visuals,
    parse_server_setup,
    queries,
    recreate,
    refusals,
)
from xproxy.move.tracker import GLYPH_OVERHEAD, Tracker
from xproxy.x11 import opcodes as op

E = ("<", ">")


def resource_offsets(s) -> set[int]:
    """Offsets of the rq.Resource fields in a python-xlib layout's fixed part."""
    tokens = re.findall(r"\d*[a-zA-Z]", s.static_codes[1:])
    fields = iter(s.static_fields)
    out, prefix, i = set(), "=", 0
    while i < len(tokens):
        if tokens[i].endswith("x"):
            prefix += tokens[i]
            i += 1
            continue
        fld = next(fields)
        n = len(re.findall(r"\d*[a-zA-Z]", fld.structcode))
        if isinstance(fld, rq.Resource) and fld.name:
            out.add(struct.calcsize(prefix))
        prefix += "".join(tokens[i : i + n])
        i += n
    return out


def test_resource_offsets_agree_with_python_xlib_layouts():
    for code, cls in request.major_codes.items():
        mine = {at for at, kind in f.REQUEST_FIELDS.get(code, ()) if kind == f.RES}
        assert mine == resource_offsets(cls._request), cls.__name__
        if hasattr(cls, "_reply"):
            mine = {at for at, kind in f.REPLY_FIELDS.get(code, ()) if kind == f.RES}
            assert mine == resource_offsets(cls._reply), cls.__name__ + " reply"
    for code, cls in event.event_class.items():
        mine = {at for at, kind in f.EVENT_FIELDS.get(code, ()) if kind == f.RES}
        assert mine == resource_offsets(cls._fields), cls.__name__


# -- mapping ----------------------------------------------------------------------------------
VBASE, RBASE, MASK = 0x200000, 0x800000, 0x1FFFFF


def moved_mapping(e: str) -> Mapping:
    return Mapping(e, VBASE, MASK, RBASE, MASK, identity=False,
                   special={0x50D: 0x60D, 0x20: 0x30}, visuals={0x21: 0x41},
                   atoms={300: 400}, time_offset=1000, names={300: b"WM_PROTOCOLS"},
                   exts={129: Ext("SHAPE", 129, 64, 0, 140, 80, 0, 1, 0)})


@pytest.mark.parametrize("e", E)
def test_identity_mapping_passes_requests_untouched(e):
    m = Mapping(e, VBASE, MASK, VBASE, MASK)
    msg = req(e, op.MAP_WINDOW, 0, struct.pack(e + "I", VBASE | 5))
    assert m.request(msg) is msg


@pytest.mark.parametrize("e", E)
def test_create_window_ids_visual_and_value_list_are_mapped(e):
    m = moved_mapping(e)
    # values: background-pixmap (bit 0), event-mask (11), cursor (14)
    body = struct.pack(e + "IIhhHHHHII", VBASE | 7, 0x50D, 0, 0, 10, 10, 0, 1, 0x21,
                       (1 << 0) | (1 << 11) | (1 << 14)) + struct.pack(
        e + "III", VBASE | 3, 0x8000, VBASE | 4)
    out = m.request(req(e, op.CREATE_WINDOW, 24, body))
    wid, parent = struct.unpack_from(e + "II", out, 4)
    visual, _mask, pixmap, evmask, cursor = struct.unpack_from(e + "IIIII", out, 24)
    assert (wid, parent, visual) == (RBASE | 7, 0x60D, 0x41)
    assert (pixmap, evmask, cursor) == (RBASE | 3, 0x8000, RBASE | 4)


@pytest.mark.parametrize("e", E)
def test_property_atoms_types_and_atom_data_are_mapped(e):
    m = moved_mapping(e)
    body = struct.pack(e + "IIIB3xI", VBASE | 1, 300, 4, 32, 2) + struct.pack(e + "II", 300, 39)
    out = m.request(req(e, op.CHANGE_PROPERTY, 0, body))
    assert struct.unpack_from(e + "IIIB3xIII", out, 4) == (RBASE | 1, 400, 4, 32, 2, 400, 39)


@pytest.mark.parametrize("e", E)
def test_poly_text_font_shift_is_mapped(e):
    m = moved_mapping(e)
    items = bytes((2, 0)) + b"ab" + bytes((255,)) + struct.pack(">I", VBASE | 9)
    out = m.request(req(e, op.POLY_TEXT8, 0, struct.pack(e + "IIhh", VBASE | 1, VBASE | 2, 0, 0)
                        + pad(items)))
    assert struct.unpack_from(">I", out, 16 + 5)[0] == RBASE | 9


@pytest.mark.parametrize("e", E)
def test_big_request_fields_are_found_past_the_extra_length(e):
    m = moved_mapping(e)
    body = struct.pack(e + "IIHHhhBB2x", VBASE | 1, VBASE | 2, 1, 1, 0, 0, 0, 24) + b"\0" * 4
    msg = struct.pack(e + "BBHI", op.PUT_IMAGE, 2, 0, 2 + len(body) // 4) + body
    out = m.request(msg)
    assert struct.unpack_from(e + "II", out, 8) == (RBASE | 1, RBASE | 2)
    assert len(out) == len(msg)


@pytest.mark.parametrize("e", E)
def test_events_come_back_virtual_with_time_offset(e):
    m = moved_mapping(e)
    key = bytearray(struct.pack(e + "BBHIIIIhhhhHBx", op.KEY_PRESS, 38, 5, 50, 0x60D,
                                RBASE | 7, 0, 1, 1, 1, 1, 0, 1))
    m.event(key)
    assert struct.unpack_from(e + "IIII", key, 4) == (1050, 0x50D, VBASE | 7, 0)
    shape = bytearray(struct.pack(e + "BBHIhhHHIB11x", 80, 0, 5, RBASE | 7, 0, 0, 5, 5, 20, 1))
    m.event(shape)
    assert shape[0] == 64 and struct.unpack_from(e + "I", shape, 4)[0] == VBASE | 7
    assert struct.unpack_from(e + "I", shape, 16)[0] == 1020 and shape[20] == 1


@pytest.mark.parametrize("e", E)
def test_wm_protocols_client_message_data_is_mapped(e):
    m = moved_mapping(e)
    msg = bytearray(struct.pack(e + "BBHII", op.CLIENT_MESSAGE, 32, 1, RBASE | 7, 400)
                    + struct.pack(e + "II12x", 400, 2000))
    m.event(msg)
    assert struct.unpack_from(e + "IIII", msg, 4) == (VBASE | 7, 300, 300, 3000)


@pytest.mark.parametrize("e", E)
def test_foreign_ids_in_the_virtual_range_get_an_alias_both_ways(e):
    m = moved_mapping(e)
    foreign = VBASE | 0x42  # another client's window on the new server
    v = m.res_to_virtual(foreign)
    assert v != foreign and v & ~MASK == VBASE
    assert m.res_to_real(v) == foreign
    assert m.res_to_virtual(foreign) == v


@pytest.mark.parametrize("e", E)
def test_errors_name_virtual_resources(e):
    m = moved_mapping(e)
    msg = bytearray(struct.pack(e + "BBHIHB21x", 0, 3, 1, RBASE | 7, 0, 2))
    m.error(msg)
    assert struct.unpack_from(e + "I", msg, 4)[0] == VBASE | 7


def test_an_atom_new_to_the_client_keeps_its_value_unless_taken():
    m = moved_mapping("<")
    assert m.atom_to_virtual(500) == 500
    assert m.atom_to_real(500) == 500
    taken = m.atom_to_virtual(300)  # real 300 is not the client's 300 (that is real 400)
    assert taken != 300 and m.atom_to_real(taken) == 300


# -- virtual client ---------------------------------------------------------------------------
def client(e: str) -> VirtualClient:
    return VirtualClient(e, parse_server_setup(setup_with_screen(e), e))


@pytest.mark.parametrize("e", E)
def test_setup_is_parsed(e):
    s = parse_server_setup(setup_with_screen(e, visuals=((0x21, 4), (0x22, 5))), e)
    assert (s.base, s.mask, s.root, s.colormap, s.root_visual, s.root_depth) == (
        0x200000, 0x1FFFFF, 0x50D, 0x20, 0x21, 24)
    assert set(s.visuals) == {0x21, 0x22} and s.formats == {1: 1, 24: 32}


@pytest.mark.parametrize("e", E)
def test_extensions_outside_the_movable_set_are_hidden(e):
    vc = client(e)
    for name in (b"MIT-SHM", b"SHAPE", b"DAMAGE"):
        vc.request(req(e, op.QUERY_EXTENSION, 0, struct.pack(e + "H2x", len(name)) + name))
    out = [vc.server_message(reply(e, i + 1, body=bytes((1, 130 + i, 70, 150))), i + 1)
           for i in range(3)]
    assert [o[8:12] for o in out] == [b"\0\0\0\0", bytes((1, 131, 70, 150)), b"\0\0\0\0"]
    vc.request(req(e, op.LIST_EXTENSIONS))
    names = [b"MIT-SHM", b"SHAPE", b"BIG-REQUESTS", b"GLX"]
    listed = vc.server_message(reply(e, 4, data1=4, extra=b"".join(
        bytes((len(n),)) + n for n in names)), 4)
    assert listed[1] == 2 and b"SHAPE" in listed and b"GLX" not in listed


@pytest.mark.parametrize("e", E)
def test_sequence_numbers_are_the_clients_and_events_never_go_back(e):
    vc = client(e)
    for _ in range(5):
        vc.request(req(e, op.GET_INPUT_FOCUS))
    out = vc.server_message(reply(e, 0x1234), 3)
    assert struct.unpack_from(e + "H", out, 2)[0] == 3
    late = vc.server_message(struct.pack(e + "BxH28x", op.EXPOSE, 1), 1)
    assert struct.unpack_from(e + "H", late, 2)[0] == 3  # not below what the client saw
    ahead = vc.server_message(struct.pack(e + "BxH28x", op.EXPOSE, 9), 9)
    assert struct.unpack_from(e + "H", ahead, 2)[0] == 5  # not past what the client sent


# -- tracker ----------------------------------------------------------------------------------
def window(e: str, wid: int, parent: int, mask: int = 0, values: bytes = b"") -> bytes:
    return req(e, op.CREATE_WINDOW, 0, struct.pack(e + "IIhhHHHHII", wid, parent, 0, 0, 10, 10,
                                                   0, 1, 0, mask) + values)


@pytest.mark.parametrize("e", E)
def test_destroying_a_window_forgets_its_subtree(e):
    t = Tracker(e, 0x50D, 0x21, 24)
    t.request(1, window(e, VBASE | 1, 0x50D))
    t.request(2, window(e, VBASE | 2, VBASE | 1))
    t.request(3, window(e, VBASE | 3, VBASE | 2))
    t.request(4, window(e, VBASE | 4, 0x50D))
    assert t.windows[VBASE | 3].visual == 0x21 and t.windows[VBASE | 3].depth == 24
    t.request(5, req(e, op.DESTROY_WINDOW, 0, struct.pack(e + "I", VBASE | 1)))
    assert set(t.windows) == {VBASE | 4}


@pytest.mark.parametrize("e", E)
def test_freeing_a_pixmap_a_cursor_uses_becomes_a_no_operation(e):
    t = Tracker(e, 0x50D, 0x21, 24)
    t.request(1, req(e, op.CREATE_PIXMAP, 1, struct.pack(e + "IIHH", VBASE | 1, 0x50D, 8, 8)))
    t.request(2, req(e, op.CREATE_PIXMAP, 1, struct.pack(e + "IIHH", VBASE | 2, 0x50D, 8, 8)))
    t.request(3, req(e, op.CREATE_CURSOR, 0, struct.pack(e + "III12xHH", VBASE | 3, VBASE | 1,
                                                         VBASE | 2, 0, 0)))
    free = req(e, op.FREE_PIXMAP, 0, struct.pack(e + "I", VBASE | 1))
    out = t.request(4, free)
    assert out is not None and out[0] == op.NO_OPERATION and len(out) == len(free)
    assert t.pixmaps[VBASE | 1].freed
    t.request(5, req(e, op.FREE_CURSOR, 0, struct.pack(e + "I", VBASE | 3)))
    assert VBASE | 1 not in t.pixmaps
    assert t.request(6, req(e, op.FREE_PIXMAP, 0, struct.pack(e + "I", VBASE | 2))) is None
    assert not t.pixmaps


@pytest.mark.parametrize("e", E)
def test_a_creation_that_failed_is_forgotten(e):
    vc = client(e)
    font = b"no-such-font"
    vc.request(req(e, op.OPEN_FONT, 0, struct.pack(e + "IH2x", VBASE | 1, len(font)) + font))
    vc.request(req(e, op.OPEN_FONT, 0, struct.pack(e + "IH2x", VBASE | 2, 5) + b"fixed"))
    vc.server_message(error(e, 1, code=15, major=op.OPEN_FONT), 1)
    vc.request(req(e, op.GET_INPUT_FOCUS))
    vc.server_message(reply(e, 3), 3)
    assert set(vc.tracker.fonts) == {VBASE | 2}


@pytest.mark.parametrize("e", E)
def test_gc_changes_are_merged_and_clip_rectangles_kept(e):
    t = Tracker(e, 0x50D, 0x21, 24)
    t.request(1, req(e, op.CREATE_GC, 0, struct.pack(e + "IIIII", VBASE | 1, 0x50D, 0b1100, 1, 2)))
    t.request(2, req(e, op.CHANGE_GC, 0, struct.pack(e + "III", VBASE | 1, 0b1000, 7)))
    clip = req(e, op.SET_CLIP_RECTANGLES, 0, struct.pack(e + "IhhhhHH", VBASE | 1, 0, 0, 0, 0,
                                                          5, 5))
    t.request(3, clip)
    gc = t.gcs[VBASE | 1]
    assert gc.values == {2: 1, 3: 7} and gc.clip_rectangles == clip
    t.request(4, req(e, op.FREE_GC, 0, struct.pack(e + "I", VBASE | 1)))
    assert not t.gcs


# -- planner ----------------------------------------------------------------------------------
@pytest.mark.parametrize("e", E)
def test_a_16_bit_target_a_missing_extension_and_a_server_grab_are_refused(e):
    vc = client(e)
    vc.request(window(e, VBASE | 1, 0x50D))
    vc.request(req(e, op.QUERY_EXTENSION, 0, struct.pack(e + "H2x", 5) + b"SHAPE"))
    vc.server_message(reply(e, 2, body=bytes((1, 129, 64, 0))), 2)
    vc.request(req(e, op.GRAB_SERVER))
    target = parse_server_setup(setup_with_screen(e, depth=16, formats=((1, 1), (16, 16))), e)
    visuals = match_visuals(vc.setup, target)
    reasons = refusals(vc.tracker, vc.setup, target, set(), visuals)
    assert any("visual 0x21 (TrueColor depth 24)" in r for r in reasons)
    assert any("SHAPE" in r for r in reasons)
    assert any("server grab" in r for r in reasons)
    same = parse_server_setup(setup_with_screen(e, base=RBASE, visuals=((0x41, 4),)), e)
    vc.request(req(e, op.UNGRAB_SERVER))
    assert refusals(vc.tracker, vc.setup, same, {"SHAPE"}, match_visuals(vc.setup, same)) == []


@pytest.mark.parametrize("e", E)
def test_recreation_comes_in_dependency_order(e):
    t = Tracker(e, 0x50D, 0x21, 24)
    top, child, pix, gc, cur = (VBASE | i for i in range(1, 6))
    t.request(1, req(e, op.CREATE_PIXMAP, 24, struct.pack(e + "IIHH", pix, 0x50D, 2, 2)))
    t.request(2, window(e, top, 0x50D, 1 << 0, struct.pack(e + "I", pix)))
    t.request(3, window(e, child, top))
    t.request(4, req(e, op.CREATE_GC, 0, struct.pack(e + "III", gc, top, 0)))
    t.request(5, req(e, op.CREATE_GLYPH_CURSOR, 0, struct.pack(e + "III", cur, VBASE | 9, 0)
                     + b"\0" * 16))
    t.request(6, req(e, op.MAP_WINDOW, 0, struct.pack(e + "I", child)))
    t.request(7, req(e, op.MAP_WINDOW, 0, struct.pack(e + "I", top)))
    keys = {q.key for q in queries(t, None, set())}
    assert ("image", pix) in keys and ("tree", top) in keys and ("origin", top) in keys
    assert ("origin", child) not in keys

    def tree(parent: int, kids: list[int]) -> bytes:
        return reply(e, 1, body=struct.pack(e + "IIH", 0x50D, parent, len(kids)),
                     extra=b"".join(struct.pack(e + "I", k) for k in kids))

    geometry = reply(e, 1, 24, struct.pack(e + "IhhHHH", 0x50D, 5, 6, 10, 10, 0))
    mapped = reply(e, 1, body=b"\0" * 18 + b"\2")
    results = {("tree", top): tree(0x50D, [child]), ("tree", child): tree(top, []),
               ("geometry", top): geometry, ("geometry", child): geometry,
               ("attributes", top): mapped, ("attributes", child): mapped,
               ("origin", top): reply(e, 1, body=struct.pack(e + "Ihh", 0, 50, 60)),
               ("image", pix): reply(e, 1, 24, extra=b"\x11" * 16)}
    target = parse_server_setup(setup_with_screen(e, base=RBASE), e)
    plan = recreate(t, results, target, iter(range(VBASE | 0x1000, VBASE | 0x2000)), None, None)
    assert plan.reasons == []
    ops = [(m[0], struct.unpack_from(e + "I", m, 4)[0]) for m in plan.requests]
    order = [o for o, _ in ops]
    assert order.index(op.CREATE_PIXMAP) < order.index(op.PUT_IMAGE) < order.index(
        op.CREATE_WINDOW)
    assert order.index(op.CREATE_GLYPH_CURSOR) < order.index(op.CREATE_WINDOW)
    assert ops.index((op.CREATE_WINDOW, top)) < ops.index((op.CREATE_WINDOW, child))
    assert ops.index((op.MAP_WINDOW, child)) < ops.index((op.MAP_WINDOW, top))
    created_top = plan.requests[ops.index((op.CREATE_WINDOW, top))]
    assert struct.unpack_from(e + "hh", created_top, 12) == (50, 60)  # where it was on screen
    assert struct.unpack_from(e + "II", created_top, 28) == (1, pix)  # its background pixmap
    too_small = parse_server_setup(setup_with_screen(e, size=(8, 8)), e)
    assert recreate(t, results, too_small, iter(range(VBASE | 0x1000, VBASE | 0x2000)), None,
                    None, target).reasons
    # (a window already larger than its screen may go to a screen as large)
    assert not recreate(t, results, too_small, iter(range(VBASE | 0x1000, VBASE | 0x2000)),
                        None, None, too_small).reasons


@pytest.mark.parametrize("e", E)
def test_a_long_property_is_made_again_in_parts_under_the_request_limit(e):
    t = Tracker(e, 0x50D, 0x21, 24)
    t.request(1, window(e, VBASE | 1, 0x50D))
    t.request(2, req(e, op.CHANGE_PROPERTY, 0, struct.pack(e + "IIIB3xI", VBASE | 1, 39, 6, 32,
                                                           1) + b"\0" * 4))
    n = 100_000  # 400 KB: more than one core request holds
    data = b"".join(struct.pack(e + "I", i) for i in range(n))
    results = {("tree", VBASE | 1): reply(e, 1, body=struct.pack(e + "IIH", 0x50D, 0x50D, 0)),
               ("geometry", VBASE | 1): reply(e, 1, 24, struct.pack(e + "IhhHHH", 0x50D, 0, 0,
                                                                    10, 10, 0)),
               ("property", VBASE | 1, 39): reply(e, 1, 32, struct.pack(e + "III", 6, 0, n),
                                                  extra=data)}
    target = parse_server_setup(setup_with_screen(e, base=RBASE), e)
    plan = recreate(t, results, target, iter(range(VBASE | 0x1000, VBASE | 0x2000)), None, None)
    parts = [m for m in plan.requests if m[0] == op.CHANGE_PROPERTY]
    assert len(parts) > 1 and all(len(m) <= 0xFFFF * 4 for m in plan.requests)
    assert [m[1] for m in parts] == [0] + [2] * (len(parts) - 1)  # Replace, then Append
    assert b"".join(m[24:] for m in parts) == data


@pytest.mark.parametrize("e", E)
def test_a_property_set_by_a_big_request_is_noted(e):
    t = Tracker(e, 0x50D, 0x21, 24)
    t.request(1, window(e, VBASE | 1, 0x50D))
    body = struct.pack(e + "IIIB3xI", VBASE | 1, 300, 31, 8, 8) + b"abcdefgh"
    t.request(2, struct.pack(e + "BBHI", op.CHANGE_PROPERTY, 0, 0, 2 + len(body) // 4) + body)
    assert t.windows[VBASE | 1].properties == {300}


@pytest.mark.parametrize(("vclass", "kept"), [(4, 0), (3, 1)])  # TrueColor, PseudoColor
def test_colour_cells_are_kept_only_where_the_colormap_can_change(vclass, kept):
    e = "<"
    vc = VirtualClient(e, parse_server_setup(setup_with_screen(e, visuals=((0x21, vclass),)), e))
    vc.request(req(e, op.ALLOC_COLOR, 0, struct.pack(e + "IHHH2x", 0x20, 1, 2, 3)))
    vc.server_message(reply(e, 1, body=struct.pack(e + "HHH2xI", 1, 2, 3, 77)), 1)
    assert len(vc.tracker.default_cells) == kept


# -- RENDER -----------------------------------------------------------------------------------
RENDER_V, RENDER_R = 139, 150


def render_mapping(e: str) -> Mapping:
    return Mapping(e, VBASE, MASK, RBASE, MASK, identity=False, special={0x50D: 0x60D},
                   visuals={0x21: 0x41}, formats={0x25: 0x35, 0x26: 0x36},
                   exts={RENDER_V: Ext("RENDER", RENDER_V, 0, 160, RENDER_R, 0, 170, 0, 5)})


def render(e: str, minor: int, body: bytes) -> bytes:
    return req(e, RENDER_V, minor, body)


@pytest.mark.parametrize("e", E)
def test_render_ids_formats_and_picture_values_are_mapped(e):
    m = render_mapping(e)
    # CreatePicture: pid, drawable, format, then alpha-map (bit 1) and clip-mask (bit 6)
    out = m.request(render(e, f.RENDER_CREATE_PICTURE, struct.pack(
        e + "IIIIIII", VBASE | 1, 0x50D, 0x25, 0b1000011, 1, VBASE | 2, VBASE | 3)))
    assert out[0] == RENDER_R
    assert struct.unpack_from(e + "IIIIIII", out, 4) == (
        RBASE | 1, 0x60D, 0x35, 0b1000011, 1, RBASE | 2, RBASE | 3)
    # CompositeGlyphs8: a glyph item, then a glyph set switch (len 255, then the id)
    items = struct.pack(e + "B3xhh", 2, 0, 0) + b"ab\0\0" + struct.pack(
        e + "B3xhhI", 255, 0, 0, VBASE | 7)
    out = m.request(render(e, f.RENDER_COMPOSITE_GLYPHS8, struct.pack(
        e + "B3xIIIIhh", 3, VBASE | 1, 0x50D, 0x26, VBASE | 6, 0, 0) + items))
    assert struct.unpack_from(e + "IIII", out, 8) == (RBASE | 1, 0x60D, 0x36, RBASE | 6)
    assert struct.unpack_from(e + "I", out, len(out) - 4)[0] == RBASE | 7
    out = m.request(render(e, f.RENDER_CREATE_ANIM_CURSOR, struct.pack(
        e + "IIIII", VBASE | 9, VBASE | 4, 50, VBASE | 5, 50)))
    assert struct.unpack_from(e + "IIIII", out, 4) == (RBASE | 9, RBASE | 4, 50, RBASE | 5, 50)
    bad = bytearray(error(e, 1, code=171, major=RENDER_R))
    struct.pack_into(e + "I", bad, 4, RBASE | 1)  # BadPicture's bad value
    m.error(bad)
    assert bad[1] == 161 and bad[10] == RENDER_V
    assert struct.unpack_from(e + "I", bad, 4)[0] == VBASE | 1


@pytest.mark.parametrize("e", E)
def test_query_pict_formats_reply_comes_back_virtual(e):
    m = render_mapping(e)
    fmt = struct.pack(e + "IBB2x8HI", 0x35, 1, 32, 16, 255, 8, 255, 0, 255, 24, 255, 0)
    screen = struct.pack(e + "II", 1, 0x36) + struct.pack(e + "BxH4x", 24, 1) + struct.pack(
        e + "II", 0x41, 0x35)
    buf = bytearray(reply(e, 1, body=struct.pack(e + "IIIII", 1, 1, 1, 1, 0),
                          extra=fmt + screen))
    m.reply(buf, RENDER_V, f.RENDER_QUERY_PICT_FORMATS)
    assert struct.unpack_from(e + "I", buf, 32)[0] == 0x25
    assert struct.unpack_from(e + "II", buf, 60) == (1, 0x26)
    assert struct.unpack_from(e + "II", buf, 76) == (0x21, 0x25)


def add_glyphs(e: str, gsid: int, ids: list[int], image: bytes = b"\xff" * 4) -> bytes:
    info = struct.pack(e + "HHhhhh", 1, 1, 0, 0, 1, 0)
    return render(e, f.RENDER_ADD_GLYPHS, struct.pack(e + "II", gsid, len(ids))
                  + b"".join(struct.pack(e + "I", g) for g in ids) + info * len(ids)
                  + image * len(ids))


@pytest.mark.parametrize("e", E)
def test_glyphs_are_kept_while_in_their_set_and_made_again(e):
    t = Tracker(e, 0x50D, 0x21, 24)
    gs, ref = VBASE | 1, VBASE | 2
    t.request(1, render(e, f.RENDER_CREATE_GLYPH_SET, struct.pack(e + "II", gs, 0x25)), "RENDER")
    t.request(2, add_glyphs(e, gs, [1, 2]), "RENDER")
    t.request(3, add_glyphs(e, gs, [3]), "RENDER")
    t.request(4, render(e, f.RENDER_REFERENCE_GLYPH_SET, struct.pack(e + "II", ref, gs)),
              "RENDER")
    t.request(5, render(e, f.RENDER_FREE_GLYPHS, struct.pack(e + "III", gs, 3, 1)), "RENDER")
    t.request(6, render(e, f.RENDER_FREE_GLYPH_SET, struct.pack(e + "I", gs)), "RENDER")
    (kept,) = t.unique_glyphsets()
    assert kept.ids == {ref} and len(kept.adds) == 1  # the second AddGlyphs is all gone
    assert t.glyph_bytes == len(add_glyphs(e, gs, [1, 2])) + 2 * GLYPH_OVERHEAD
    target = parse_server_setup(setup_with_screen(e, base=RBASE), e)
    plan = recreate(t, {}, target, iter(range(VBASE | 0x1000, VBASE | 0x2000)), None, None,
                    render_major=RENDER_V)
    minors = [(m[1], struct.unpack_from(e + "I", m, 4)[0]) for m in plan.requests
              if m[0] == RENDER_V]
    assert minors == [(f.RENDER_CREATE_GLYPH_SET, ref), (f.RENDER_ADD_GLYPHS, ref),
                      (f.RENDER_FREE_GLYPHS, ref)]
    assert plan.requests[-1][8:] == struct.pack(e + "I", 1)  # glyph 1 freed again
    t.request(7, render(e, f.RENDER_FREE_GLYPH_SET, struct.pack(e + "I", ref)), "RENDER")
    assert not t.glyphsets and t.glyph_bytes == 0


@pytest.mark.parametrize("e", E)
def test_glyphs_past_the_bound_are_not_kept_and_refuse_a_move(e, monkeypatch):
    from xproxy.move import tracker as tracker_module

    monkeypatch.setattr(tracker_module, "MAX_GLYPH_BYTES", 1000)
    t = Tracker(e, 0x50D, 0x21, 24)
    gs = VBASE | 1
    t.request(1, render(e, f.RENDER_CREATE_GLYPH_SET, struct.pack(e + "II", gs, 0x25)), "RENDER")
    for i in range(20):
        t.request(2 + i, add_glyphs(e, gs, [i]), "RENDER")
    assert t.glyph_bytes <= 1000 and t.glyphsets[gs].incomplete
    same = parse_server_setup(setup_with_screen(e, base=RBASE, visuals=((0x41, 4),)), e)
    reasons = refusals(t, parse_server_setup(setup_with_screen(e), e), same, set(), {0x21: 0x41})
    assert any("glyphs" in r for r in reasons)
    t.request(30, render(e, f.RENDER_FREE_GLYPH_SET, struct.pack(e + "I", gs)), "RENDER")
    assert refusals(t, parse_server_setup(setup_with_screen(e), e), same, set(),
                    {0x21: 0x41}) == []


@pytest.mark.parametrize("e", E)
def test_render_cursor_keeps_its_picture_and_comes_after_it(e):
    t = Tracker(e, 0x50D, 0x21, 24)
    pix, pic, cur, anim, win, wpic, gc = (VBASE | i for i in range(1, 8))
    t.request(1, req(e, op.CREATE_PIXMAP, 32, struct.pack(e + "IIHH", pix, 0x50D, 2, 2)))
    t.request(2, req(e, op.CREATE_GC, 0, struct.pack(e + "III", gc, pix, 0)))
    t.request(3, render(e, f.RENDER_CREATE_PICTURE, struct.pack(e + "IIII", pic, pix, 0x25, 0)),
              "RENDER")
    # the pixmap is freed while a picture uses it, the picture while a cursor uses it
    assert t.request(4, req(e, op.FREE_PIXMAP, 0, struct.pack(e + "I", pix)))[0] == \
        op.NO_OPERATION
    t.request(5, render(e, f.RENDER_CREATE_CURSOR, struct.pack(e + "IIHH", cur, pic, 0, 0)),
              "RENDER")
    out = t.request(6, render(e, f.RENDER_FREE_PICTURE, struct.pack(e + "I", pic)), "RENDER")
    assert out is not None and out[0] == op.NO_OPERATION
    t.request(7, render(e, f.RENDER_CREATE_ANIM_CURSOR, struct.pack(e + "III", anim, cur, 10)),
              "RENDER")
    assert t.request(8, req(e, op.FREE_CURSOR, 0, struct.pack(e + "I", cur)))[0] == \
        op.NO_OPERATION
    t.request(9, window(e, win, 0x50D, 1 << 14, struct.pack(e + "I", anim)))
    t.request(10, render(e, f.RENDER_CREATE_PICTURE, struct.pack(e + "IIII", wpic, win, 0x26,
                                                                 0)), "RENDER")
    target = parse_server_setup(setup_with_screen(e, base=RBASE), e)
    results = {("image", pix): reply(e, 1, 32, extra=b"\x11" * 16),
               ("tree", win): reply(e, 1, body=struct.pack(e + "IIH", 0x50D, 0x50D, 0)),
               ("geometry", win): reply(e, 1, 24, struct.pack(e + "IhhHHH", 0x50D, 0, 0, 9, 9,
                                                              0))}
    plan = recreate(t, results, target, iter(range(VBASE | 0x1000, VBASE | 0x2000)), None, None,
                    render_major=RENDER_V)
    ops = [(m[0], m[1] if m[0] == RENDER_V else 0, struct.unpack_from(e + "I", m, 4)[0])
           for m in plan.requests]
    at = ops.index
    assert at((op.PUT_IMAGE, 0, pix)) < at((RENDER_V, f.RENDER_CREATE_PICTURE, pic)) < at(
        (RENDER_V, f.RENDER_CREATE_CURSOR, cur)) < at(
        (RENDER_V, f.RENDER_CREATE_ANIM_CURSOR, anim)) < at((op.CREATE_WINDOW, 0, win)) < at(
        (RENDER_V, f.RENDER_CREATE_PICTURE, wpic))
    # a GC made for a depth-32 pixmap since freed is made again for depth 32
    made_gc = plan.requests[at((op.CREATE_GC, 0, gc))]
    drawable = struct.unpack_from(e + "I", made_gc, 8)[0]
    assert drawable == pix
    # freeing the animated cursor lets go of everything kept for it
    t.request(11, req(e, op.FREE_CURSOR, 0, struct.pack(e + "I", anim)))
    assert cur not in t.cursors and pic not in t.pictures and pix not in t.pixmaps


def test_pict_formats_are_matched_by_description():
    from xproxy.move.planner import match_formats

    argb = (1, 32, (16, 255, 8, 255, 0, 255, 24, 255), False)
    a8 = (1, 8, (0, 0, 0, 0, 0, 0, 0, 255), False)
    assert match_formats({0x25: argb, 0x26: a8, 0x27: (1, 4, (0,) * 8, False)},
                         {0x40: a8, 0x41: argb}) == {0x25: 0x41, 0x26: 0x40}


@pytest.mark.parametrize("e", E)
def test_a_gc_outliving_its_pixmap_is_made_again_for_that_pixmap_depth(e):
    """cairo keeps a GC per depth, made on a pixmap it frees soon after."""
    t = Tracker(e, 0x50D, 0x21, 24)
    pix, gc = VBASE | 1, VBASE | 2
    t.request(1, req(e, op.CREATE_PIXMAP, 32, struct.pack(e + "IIHH", pix, 0x50D, 2, 2)))
    t.request(2, req(e, op.CREATE_GC, 0, struct.pack(e + "III", gc, pix, 0)))
    t.request(3, req(e, op.FREE_PIXMAP, 0, struct.pack(e + "I", pix)))
    target = parse_server_setup(setup_with_screen(e, base=RBASE), e)
    plan = recreate(t, {}, target, iter(range(VBASE | 0x1000, VBASE | 0x2000)), None, None)
    (made,) = [m for m in plan.requests if m[0] == op.CREATE_GC]
    drawable = struct.unpack_from(e + "I", made, 8)[0]
    (scratch,) = [m for m in plan.requests if m[0] == op.CREATE_PIXMAP
                  and struct.unpack_from(e + "I", m, 4)[0] == drawable]
    assert scratch[1] == 32


# -- XFIXES -----------------------------------------------------------------------------------
XFIXES_V, XFIXES_R = 138, 145


@pytest.mark.parametrize("e", E)
def test_xfixes_events_errors_and_requests_are_mapped(e):
    m = Mapping(e, VBASE, MASK, RBASE, MASK, identity=False, atoms={300: 400},
                time_offset=1000,
                exts={XFIXES_V: Ext("XFIXES", XFIXES_V, 87, 140, XFIXES_R, 90, 150, 2, 2)})
    out = m.request(req(e, XFIXES_V, f.XFIXES_SELECT_SELECTION_INPUT, struct.pack(
        e + "III", VBASE | 1, 300, 1)))
    assert out[0] == XFIXES_R and struct.unpack_from(e + "II", out, 4) == (RBASE | 1, 400)
    ev = bytearray(struct.pack(e + "BBHIIIII8x", 90, 0, 1, RBASE | 1, RBASE | 2, 400, 5, 5))
    m.event(ev)
    assert ev[0] == 87 and struct.unpack_from(e + "IIIII", ev, 4) == (
        VBASE | 1, VBASE | 2, 300, 1005, 1005)
    cursor = bytearray(struct.pack(e + "BBHIIII12x", 91, 0, 1, RBASE | 1, 7, 5, 400))
    m.event(cursor)
    assert cursor[0] == 88 and struct.unpack_from(e + "IIII", cursor, 4) == (
        VBASE | 1, 7, 1005, 300)
    bad = bytearray(error(e, 1, code=150, major=XFIXES_R))
    struct.pack_into(e + "I", bad, 4, RBASE | 3)  # BadRegion's bad value
    m.error(bad)
    assert bad[1] == 140 and struct.unpack_from(e + "I", bad, 4)[0] == VBASE | 3
    name = bytearray(reply(e, 1, body=struct.pack(e + "I", 400)))
    m.reply(name, XFIXES_V, 24)  # GetCursorName
    assert struct.unpack_from(e + "I", name, 8)[0] == 300


@pytest.mark.parametrize("e", E)
def test_xfixes_regions_and_selection_input_are_made_again(e):
    t = Tracker(e, 0x50D, 0x21, 24)
    win, region, gone = VBASE | 1, VBASE | 2, VBASE | 3
    version = req(e, XFIXES_V, f.XFIXES_QUERY_VERSION, struct.pack(e + "II", 5, 0))
    t.request(1, version, "XFIXES")
    t.request(2, window(e, win, 0x50D))
    select = req(e, XFIXES_V, f.XFIXES_SELECT_SELECTION_INPUT, struct.pack(e + "III", win, 300,
                                                                             7))
    t.request(3, select, "XFIXES")
    t.request(4, req(e, XFIXES_V, f.XFIXES_CREATE_REGION, struct.pack(e + "I", region)),
              "XFIXES")
    t.request(5, req(e, XFIXES_V, 7, struct.pack(e + "IIB3x", gone, win, 0)), "XFIXES")
    t.request(6, req(e, XFIXES_V, f.XFIXES_DESTROY_REGION, struct.pack(e + "I", gone)), "XFIXES")
    assert set(t.regions) == {region} and 300 in t.atoms_used
    keys = [q.key for q in queries(t, None, set(), XFIXES_V)]
    assert keys[0] == ("region", region)
    rects = struct.pack(e + "hhHH", 1, 2, 3, 4)
    results = {("region", region): reply(e, 1, body=b"\0" * 24, extra=rects),
               ("tree", win): reply(e, 1, body=struct.pack(e + "IIH", 0x50D, 0x50D, 0)),
               ("geometry", win): reply(e, 1, 24, struct.pack(e + "IhhHHH", 0x50D, 0, 0, 9, 9,
                                                              0))}
    target = parse_server_setup(setup_with_screen(e, base=RBASE), e)
    plan = recreate(t, results, target, iter(range(VBASE | 0x1000, VBASE | 0x2000)), None, None,
                    xfixes_major=XFIXES_V)
    assert plan.requests[0] == version  # XFIXES answers nothing else before it
    made = plan.requests[1]
    assert made[:2] == bytes((XFIXES_V, f.XFIXES_CREATE_REGION)) and made[8:] == rects
    assert plan.requests.index(select) > [m[0] for m in plan.requests].index(op.CREATE_WINDOW)
    t.request(7, req(e, op.DESTROY_WINDOW, 0, struct.pack(e + "I", win)))
    assert not t.selection_inputs


# -- XKEYBOARD --------------------------------------------------------------------------------
@pytest.mark.parametrize("e", E)
def test_xkb_events_are_told_apart_by_their_xkb_type(e):
    m = Mapping(e, VBASE, MASK, RBASE, MASK, identity=False, atoms={300: 400},
                time_offset=1000,
                exts={135: Ext("XKEYBOARD", 135, 85, 137, 140, 95, 160, 1, 1)})
    state = bytearray(struct.pack(e + "BBHIB23x", 95, 2, 1, 5, 3))  # XkbStateNotify
    m.event(state)
    assert state[0] == 85 and state[1] == 2 and struct.unpack_from(e + "I", state, 4)[0] == 1005
    bell = bytearray(struct.pack(e + "BBHIBBBBHHII4x", 95, 8, 1, 5, 3, 0, 0, 50, 400, 100, 400,
                                 RBASE | 1))  # XkbBellNotify: name, window
    m.event(bell)
    assert bell[0] == 85 and struct.unpack_from(e + "II", bell, 16) == (300, VBASE | 1)
    out = m.request(req(e, 135, f.XKB_BELL, struct.pack(e + "HHHBBBxHH2xII", 0x100, 0, 0, 50, 0,
                                                      0, 0, 0, 300, VBASE | 1)))
    assert out[0] == 140 and struct.unpack_from(e + "II", out, 20) == (400, RBASE | 1)


@pytest.mark.parametrize("e", E)
def test_xkb_selections_are_kept_one_per_kind_and_bounded(e, monkeypatch):
    from xproxy.move import tracker as tracker_module

    t = Tracker(e, 0x50D, 0x21, 24)
    use = req(e, 135, f.XKB_USE_EXTENSION, struct.pack(e + "HH", 1, 0))
    t.request(1, use, "XKEYBOARD")

    def select(which: int, on: int) -> bytes:
        return req(e, 135, f.XKB_SELECT_EVENTS, struct.pack(e + "HHHHHH", 0x100, which, 0, on,
                                                            0, 0))

    t.request(2, select(4, 4), "XKEYBOARD")
    t.request(3, select(1, 1), "XKEYBOARD")
    t.request(4, select(4, 0), "XKEYBOARD")  # the same kind again: the last one counts
    target = parse_server_setup(setup_with_screen(e, base=RBASE), e)
    plan = recreate(t, {}, target, iter(range(VBASE | 0x1000, VBASE | 0x2000)), None, None,
                    xkb=True)
    assert plan.requests[:3] == [use, select(1, 1), select(4, 0)]
    monkeypatch.setattr(tracker_module, "MAX_XKB_SELECTS", 4)
    for which in range(8, 20):
        t.request(which, select(which, which), "XKEYBOARD")
    assert len(t.xkb_selects) == 4


@pytest.mark.parametrize("e", E)
def test_the_pictures_of_a_destroyed_window_are_forgotten(e):
    t = Tracker(e, 0x50D, 0x21, 24)
    t.request(1, window(e, VBASE | 1, 0x50D))
    t.request(2, render(e, f.RENDER_CREATE_PICTURE, struct.pack(e + "IIII", VBASE | 2,
                                                                VBASE | 1, 0x25, 0)), "RENDER")
    t.request(3, req(e, op.DESTROY_WINDOW, 0, struct.pack(e + "I", VBASE | 1)))
    assert not t.pictures


# -- XInputExtension --------------------------------------------------------------------------
XI_V, XI_R = 131, 141


def field_offsets(s) -> dict[str, tuple[int, object]]:
    """Each named field of a python-xlib layout's fixed part: (offset, field)."""
    tokens = re.findall(r"\d*[a-zA-Z]", s.static_codes[1:])
    fields = iter(s.static_fields)
    out, prefix, i = {}, "=", 0
    while i < len(tokens):
        if tokens[i].endswith("x"):
            prefix += tokens[i]
            i += 1
            continue
        fld = next(fields)
        n = len(re.findall(r"\d*[a-zA-Z]", fld.structcode))
        if fld.name:
            out.setdefault(fld.name, (struct.calcsize(prefix), fld))
        prefix += "".join(tokens[i : i + n])
        i += n
    return out


def test_xi_offsets_agree_with_python_xlib_layouts():
    """Windows and cursors (resources), times and atoms of python-xlib's XI 2 requests and
    events sit where fields.py says; XI 2 event data starts after the GenericEvent header and
    the event type (10 bytes)."""
    import inspect

    from Xlib.ext import xinput

    checked = 0
    for _, cls in inspect.getmembers(xinput, inspect.isclass):
        if not (issubclass(cls, (rq.Request, rq.ReplyRequest)) and hasattr(cls, "_request")):
            continue
        layout = field_offsets(cls._request)
        minor = next(x for x in cls._request.static_fields if isinstance(x, rq.Opcode)).value
        table = dict(f.XI_REQUEST_FIELDS.get(minor, ()))
        for name, (at, fld) in layout.items():
            if isinstance(fld, rq.Resource):
                assert table.get(at) == f.RES, (cls.__name__, name)
            elif name == "time":
                assert table.get(at) == f.TIME, (cls.__name__, name)
            elif name in ("property", "type"):
                assert table.get(at) == f.ATOM, (cls.__name__, name)
        assert {at for at, kind in table.items() if kind == f.RES} == {
            at for at, fld in layout.values() if isinstance(fld, rq.Resource)}, cls.__name__
        checked += 1
    assert checked >= 10
    events = {xinput.KeyPress: xinput.DeviceEventData, xinput.Motion: xinput.DeviceEventData,
              xinput.DeviceChanged: xinput.DeviceChangedEventData,
              xinput.HierarchyChanged: xinput.HierarchyEventData,
              xinput.PropertyEvent: xinput.PropertyEventData}
    for evtype, data in events.items():
        layout = {name: (at + 10, fld) for name, (at, fld) in field_offsets(data).items()}
        table = dict(f.XI_EVENT_FIELDS[evtype])
        expected = {at: f.RES for at, fld in layout.values() if isinstance(fld, rq.Resource)}
        expected[layout["time"][0]] = f.TIME
        if "property" in layout:
            expected[layout["property"][0]] = f.ATOM
        assert table == expected, evtype


def xi_mapping(e: str) -> Mapping:
    return Mapping(e, VBASE, MASK, RBASE, MASK, identity=False, atoms={300: 400, 301: 401},
                   time_offset=1000, special={0x50D: 0x60D},
                   exts={XI_V: Ext(f.XI, XI_V, 66, 140, XI_R, 70, 150, 17, 5)})


def xi(e: str, minor: int, body: bytes) -> bytes:
    return req(e, XI_V, minor, body)


@pytest.mark.parametrize("e", E)
def test_xi_requests_windows_cursors_times_and_atoms_are_mapped(e):
    m = xi_mapping(e)
    out = m.request(xi(e, f.XI_GRAB_DEVICE, struct.pack(e + "IIIHBBBxH", VBASE | 1, 2000,
                                                        VBASE | 2, 2, 1, 1, 0, 1) + b"\0" * 4))
    assert out[0] == XI_R and struct.unpack_from(e + "III", out, 4) == (RBASE | 1, 1000,
                                                                        RBASE | 2)
    out = m.request(xi(e, f.XI_PASSIVE_GRAB_DEVICE, struct.pack(
        e + "IIIIHHHBBBB2x", 2000, VBASE | 3, VBASE | 4, 1, 2, 0, 0, 0, 1, 1, 0)))
    assert struct.unpack_from(e + "III", out, 4) == (1000, RBASE | 3, RBASE | 4)
    out = m.request(xi(e, f.XI_CHANGE_CURSOR, struct.pack(e + "IIH2x", 0x50D, VBASE | 5, 2)))
    assert struct.unpack_from(e + "II", out, 4) == (0x60D, RBASE | 5)
    # a device property of type ATOM: its property, type and data
    out = m.request(xi(e, f.XI_CHANGE_PROPERTY, struct.pack(
        e + "HBBIII", 2, 0, 32, 300, 4, 2) + struct.pack(e + "II", 301, 39)))
    assert struct.unpack_from(e + "IIIII", out, 8) == (400, 4, 2, 401, 39)
    out = m.request(xi(e, f.XI_SELECT_EVENTS, struct.pack(e + "IH2xHHI", VBASE | 6, 1, 0, 1,
                                                          1 << 2)))
    assert struct.unpack_from(e + "I", out, 4)[0] == RBASE | 6 and out[8:] == struct.pack(
        e + "H2xHHI", 1, 0, 1, 1 << 2)


@pytest.mark.parametrize("e", E)
def test_xi2_events_come_as_generic_events_with_the_virtual_opcode(e):
    m = xi_mapping(e)
    # XI_ButtonPress: deviceid, time, detail, root, event, child, then more (length 1 here)
    ev = bytearray(struct.pack(e + "BBHIHHIIIII", op.GENERIC_EVENT, XI_R, 7, 1, 4, 2, 5, 1,
                               0x60D, RBASE | 8, 0) + b"\0" * 4)
    m.event(ev)
    assert ev[1] == XI_V
    assert struct.unpack_from(e + "IIIII", ev, 12) == (1005, 1, 0x50D, VBASE | 8, 0)
    prop = bytearray(struct.pack(e + "BBHIHHII12x", op.GENERIC_EVENT, XI_R, 7, 0, 12, 2, 5,
                                 401))
    m.event(prop)
    assert struct.unpack_from(e + "II", prop, 12) == (1005, 301)
    # DeviceChanged: a valuator class (its label at 8) and a button class (labels after the
    # state mask); classes from 32
    valuator = struct.pack(e + "HHHHI", 2, 11, 2, 0, 400) + b"\0" * 32
    buttons = struct.pack(e + "HHHHIII", 1, 5, 2, 2, 0, 400, 0)
    changed = bytearray(struct.pack(e + "BBHIHHIHHB11x", op.GENERIC_EVENT, XI_R, 7,
                                    (len(valuator) + len(buttons)) // 4, 1, 2, 5, 2, 2, 0)
                        + valuator + buttons)
    m.event(changed)
    assert struct.unpack_from(e + "I", changed, 32 + 8)[0] == 300
    assert struct.unpack_from(e + "II", changed, 32 + 44 + 12) == (300, 0)
    other = bytearray(struct.pack(e + "BBHIH22x", op.GENERIC_EVENT, 99, 7, 0, 4))
    m.event(other)
    assert other[1] == 99  # (another extension's: not the client's to see, left alone)


@pytest.mark.parametrize("e", E)
def test_xi_replies_come_back_virtual(e):
    m = xi_mapping(e)
    pointer = bytearray(reply(e, 1, body=struct.pack(e + "II", 0x60D, RBASE | 9)))
    m.reply(pointer, XI_V, f.XI_QUERY_POINTER)
    assert struct.unpack_from(e + "II", pointer, 8) == (0x50D, VBASE | 9)
    props = bytearray(reply(e, 1, body=struct.pack(e + "H", 2), extra=struct.pack(e + "II", 401,
                                                                                   39)))
    m.reply(props, XI_V, f.XI_LIST_PROPERTIES)
    assert struct.unpack_from(e + "II", props, 32) == (301, 39)
    prop = bytearray(reply(e, 1, body=struct.pack(e + "IIIB", 4, 0, 1, 32),
                           extra=struct.pack(e + "I", 400)))
    m.reply(prop, XI_V, f.XI_GET_PROPERTY)
    assert struct.unpack_from(e + "I", prop, 8)[0] == 4
    assert struct.unpack_from(e + "I", prop, 32)[0] == 300
    # XIQueryDevice: two devices, the second with a valuator whose label is an atom
    first = struct.pack(e + "HHHHHBx", 2, 1, 3, 0, 5, 1) + pad(b"core1")
    valuator = struct.pack(e + "HHHHI", 2, 11, 4, 0, 401) + b"\0" * 32
    second = struct.pack(e + "HHHHHBx", 4, 3, 2, 1, 3, 1) + pad(b"abc") + valuator
    devices = bytearray(reply(e, 1, body=struct.pack(e + "H", 2), extra=first + second))
    m.reply(devices, XI_V, f.XI_QUERY_DEVICE)
    assert struct.unpack_from(e + "I", devices, 32 + len(first) + 16 + 8)[0] == 301
    assert planner.xi_devices(bytes(devices), e) == [(2, 1, 3, b"core1"), (4, 3, 2, b"abc")]


@pytest.mark.parametrize("e", E)
def test_xi_event_selections_cursors_and_passive_grabs_are_made_again(e):
    t = Tracker(e, 0x50D, 0x21, 24)
    win, other = VBASE | 1, VBASE | 2
    t.request(1, window(e, win, 0x50D))
    t.request(2, window(e, other, 0x50D))

    def select(wid: int, *masks: tuple[int, int]) -> bytes:
        return xi(e, f.XI_SELECT_EVENTS, struct.pack(e + "IH2x", wid, len(masks)) + b"".join(
            struct.pack(e + "HHI", device, 1, mask) for device, mask in masks))

    t.request(3, select(win, (2, 1 << 4), (3, 1 << 2)), f.XI)
    t.request(4, select(win, (3, 0)), f.XI)  # an empty mask ends the selection
    t.request(5, select(0x50D, (0, 1 << 11)), f.XI)  # the root's: kept as well
    t.request(6, select(0x77, (0, 1 << 11)), f.XI)  # not the client's window: not kept
    t.request(7, select(other, (2, 1 << 6)), f.XI)
    cursor = xi(e, f.XI_CHANGE_CURSOR, struct.pack(e + "IIH2x", win, VBASE | 0x30, 2))
    t.request(8, cursor, f.XI)
    grab = xi(e, f.XI_PASSIVE_GRAB_DEVICE, struct.pack(e + "IIIIHHHBBBB2x", 0, win, 0, 3, 2,
                                                       0, 0, 0, 1, 1, 0))
    t.request(9, grab, f.XI)
    gone = xi(e, f.XI_PASSIVE_GRAB_DEVICE, struct.pack(e + "IIIIHHHBBBB2x", 0, win, 0, 1, 2, 0,
                                                       0, 0, 1, 1, 0))
    t.request(10, gone, f.XI)
    t.request(11, xi(e, f.XI_PASSIVE_UNGRAB_DEVICE, struct.pack(e + "IIHHB3x", win, 1, 2, 0,
                                                                0)), f.XI)
    t.request(12, req(e, op.DESTROY_WINDOW, 0, struct.pack(e + "I", other)))
    assert t.xi_used and not t.xi1_used
    assert t.xi_selects == {(win, 2): struct.pack(e + "I", 1 << 4),
                            (0x50D, 0): struct.pack(e + "I", 1 << 11)}
    results = {("tree", win): reply(e, 1, body=struct.pack(e + "IIH", 0x50D, 0x50D, 0)),
               ("geometry", win): reply(e, 1, 24, struct.pack(e + "IhhHHH", 0x50D, 0, 0, 9, 9,
                                                              0))}
    target = parse_server_setup(setup_with_screen(e, base=RBASE), e)
    scratch = iter(range(VBASE | 0x1000, VBASE | 0x2000))
    plan = recreate(t, results, target, scratch, None, None, xi_major=XI_V)
    made = [r[0] for r in plan.requests].index(op.CREATE_WINDOW)
    selects = [r for r in plan.requests if r[:2] == bytes((XI_V, f.XI_SELECT_EVENTS))]
    assert selects == [select(win, (2, 1 << 4)), select(0x50D, (0, 1 << 11))]
    assert plan.requests.index(selects[0]) > made
    assert cursor in plan.requests and grab in plan.requests and gone not in plan.requests
    assert recreate(t, results, target, scratch, None, None).requests == [
        r for r in plan.requests if r[0] != XI_V]  # (the target has no XI: nothing of it)


@pytest.mark.parametrize("e", E)
def test_xi_version_requests_are_kept_with_the_version_given(e):
    vc = client(e)
    name = b"XInputExtension"
    vc.request(req(e, op.QUERY_EXTENSION, 0, struct.pack(e + "H2x", len(name)) + name))
    out = vc.server_message(reply(e, 1, body=bytes((1, XI_V, 66, 140))), 1)
    assert out[8:12] == bytes((1, XI_V, 66, 140))  # shown, with the server's codes
    version = xi(e, f.XI_QUERY_VERSION, struct.pack(e + "HH", 2, 4))
    vc.request(version)
    vc.server_message(reply(e, 2, body=struct.pack(e + "HH", 2, 3)), 2)
    assert vc.tracker.xi_versions == {f.XI_QUERY_VERSION: (version, struct.pack(e + "HH", 2, 3))}
    assert f.XI in vc.tracker.extensions_used and vc.tracker.xi_used


@pytest.mark.parametrize("e", E)
def test_a_move_is_refused_for_xi1_use_another_xi_version_or_other_devices(e):
    virtual = parse_server_setup(setup_with_screen(e), e)
    visuals = match_visuals(virtual, virtual)
    t = Tracker(e, 0x50D, 0x21, 24)
    t.extensions_used.add(f.XI)
    assert refusals(t, virtual, virtual, set(), visuals) == []  # asked about, never used
    t.request(1, xi(e, f.XI_QUERY_VERSION, struct.pack(e + "HH", 2, 4)), f.XI)
    assert refusals(t, virtual, virtual, {f.XI}, visuals) == []
    assert "XInputExtension extension" in refusals(t, virtual, virtual, set(), visuals)[0]
    t.request(2, xi(e, 2, b""), f.XI)  # XI 1 ListInputDevices
    assert "XInputExtension 1 requests (minor 2)" in refusals(t, virtual, virtual, {f.XI},
                                                               visuals)[0]
    v23, v24 = struct.pack(e + "HH", 2, 3), struct.pack(e + "HH", 2, 4)
    devices = [(2, 1, 3, b"Virtual core pointer"), (3, 2, 2, b"Virtual core keyboard")]
    assert planner.xi_refusals(e, {47: (v24, v24)}, devices, list(reversed(devices))) == []
    assert planner.xi_refusals(e, {47: (v24, v23)}, devices, devices) == [
        "the target's XInputExtension is version 2.3, the client was given 2.4"]
    why = planner.xi_refusals(e, {47: (v24, v24)}, devices, devices[:1] + [
        (3, 2, 2, b"another keyboard")])
    assert len(why) == 1 and "devices differ" in why[0] and "'Virtual core keyboard'" in why[0]
    assert planner.xi_refusals(e, {}, devices, None) == [
        "the XInputExtension devices could not be read from both servers"]


@pytest.mark.parametrize("e", E)
def test_big_requests_are_bounded_by_the_enable_reply_not_the_setup(e):
    """GTK 4 sends PutImage requests of 4 MB once BIG-REQUESTS is on: the bound is what
    BIG-REQUESTS Enable answered (the setup's 65535 words holds only until then)."""
    vc = client(e)
    assert vc.max_request_bytes == vc.setup.max_request * 4
    name = b"BIG-REQUESTS"
    vc.request(req(e, op.QUERY_EXTENSION, 0, struct.pack(e + "H2x", len(name)) + name))
    vc.server_message(reply(e, 1, body=bytes((1, 133, 0, 0))), 1)
    vc.request(req(e, 133, 0))
    vc.server_message(reply(e, 2, body=struct.pack(e + "I", 4194303)), 2)
    assert vc.max_request_bytes == 4194303 * 4


@pytest.mark.parametrize("e", E)
def test_xi_selections_kept_are_bounded(e, monkeypatch):
    from xproxy.move import tracker

    monkeypatch.setattr(tracker, "MAX_XI_KEPT", 3)
    t = Tracker(e, 0x50D, 0x21, 24)
    for device in range(5):
        long_mask = struct.pack(e + "I", 1 << 4) + b"\0" * 60 + struct.pack(e + "I", 1)
        t.request(1 + device, xi(e, f.XI_SELECT_EVENTS, struct.pack(
            e + "IH2xHH", 0x50D, 1, device, len(long_mask) // 4) + long_mask), f.XI)
    assert list(t.xi_selects) == [(0x50D, 2), (0x50D, 3), (0x50D, 4)]
    assert t.xi_selects[(0x50D, 4)] == struct.pack(e + "I", 1 << 4) + b"\0" * 12


@pytest.mark.parametrize("e", E)
def test_the_root_windows_events_grabs_and_xfixes_inputs_are_made_again(e):
    """What a client selects or grabs on the root window is its own to carry: its core event
    mask there, a passive key grab there (a hotkey) and an XFIXES selection input there are
    made again on the target's root; the attributes of another client's window are not."""
    root = 0x50D
    t = Tracker(e, root, 0x21, 24)
    mask = (1 << 22) | (1 << 17)  # PropertyChange, StructureNotify... as GTK selects
    t.request(1, req(e, op.CHANGE_WINDOW_ATTRIBUTES, 0,
                     struct.pack(e + "III", root, 1 << f.EVENT_MASK_BIT, mask)))
    t.request(2, req(e, op.CHANGE_WINDOW_ATTRIBUTES, 0,
                     struct.pack(e + "III", 0x77, 1 << f.EVENT_MASK_BIT, 1)))
    hotkey = req(e, op.GRAB_KEY, 1, struct.pack(e + "IHBBBxxx", root, 0x8, 38, 1, 1))
    t.request(3, hotkey)
    other = req(e, op.GRAB_KEY, 1, struct.pack(e + "IHBBBxxx", 0x77, 0x8, 39, 1, 1))
    t.request(4, other)
    selection = req(e, XFIXES_V, f.XFIXES_SELECT_SELECTION_INPUT,
                    struct.pack(e + "III", root, 1, 1))
    t.request(5, selection, f.XFIXES)
    assert t.root_events == mask
    target = parse_server_setup(setup_with_screen(e, base=RBASE), e)
    scratch = iter(range(VBASE | 0x1000, VBASE | 0x2000))
    plan = recreate(t, {}, target, scratch, None, None, xfixes_major=XFIXES_V)
    assert req(e, op.CHANGE_WINDOW_ATTRIBUTES, 0, struct.pack(
        e + "III", root, 1 << f.EVENT_MASK_BIT, mask)) in plan.requests
    assert hotkey in plan.requests and other not in plan.requests
    assert selection in plan.requests
    assert not any(r[0] == op.CHANGE_WINDOW_ATTRIBUTES and 0x77 in struct.unpack_from(
        e + "I", r, 4) for r in plan.requests)
