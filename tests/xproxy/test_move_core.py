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
from xproxy.move.client import VirtualClient
from xproxy.move.mapping import Ext, Mapping
from xproxy.move.planner import (
    match_visuals,
    parse_server_setup,
    queries,
    recreate,
    refusals,
)
from xproxy.move.tracker import Tracker
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
    for name in (b"MIT-SHM", b"SHAPE", b"RENDER"):
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
