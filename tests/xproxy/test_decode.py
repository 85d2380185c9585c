"""Golden decoding of X11 messages, core and extensions, in both byte orders; the decoder
never raises on any framed message."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testing import x11wire as wire
from xproxy.observe.instruments import ClientObserver, observers
from xproxy.x11.connection import AuthPolicy, X11Connection
from xproxy.x11.decode.decoder import MAX_PENDING, Decoder
from xproxy.x11.decode.tables import EXTENSIONS, may_reply

ORDERS = pytest.mark.parametrize("e", ["<", ">"], ids=["lsb", "msb"])

# Opcodes deliberately unlike Xorg's, to show they come from QueryExtension replies.
EXTS = {  # name: (major, first_event, first_error)
    "BIG-REQUESTS": (200, 0, 0),
    "XC-MISC": (201, 0, 0),
    "MIT-SHM": (202, 65, 170),
    "SHAPE": (203, 66, 0),
    "XFIXES": (204, 67, 171),
    "RENDER": (205, 0, 172),
    "RANDR": (206, 70, 180),
    "XInputExtension": (207, 72, 190),
    "Composite": (208, 0, 0),
    "DAMAGE": (209, 95, 200),
    "Present": (210, 0, 0),
    "XKEYBOARD": (211, 96, 201),
}


def learned(e: str, names=EXTS) -> Decoder:
    """A decoder that learned `names` through QueryExtension round trips, as on a wire."""
    d = Decoder(e)
    for seq, (name, (major, event, error)) in enumerate(names.items(), 1):
        d.decode("request", seq, wire.query_extension(e, name.encode()))
        r = d.decode("reply", seq, wire.query_extension_reply(e, seq, True, major, event, error))
        assert r.name == "QueryExtension" and r.fields["major_opcode"] == major
    return d


def ext_request(e: str, major: int, minor: int, body: bytes = b"") -> bytes:
    return wire.request(e, major, minor, body)


def ev(e: str, code: int, seq: int, fmt: str = "", *values: int, byte1: int = 0) -> bytes:
    body = struct.pack(e + fmt, *values) if fmt else b""
    return (struct.pack(e + "BBH", code, byte1, seq & 0xFFFF) + body).ljust(32, b"\0")


# -- core ---------------------------------------------------------------------------------------


@ORDERS
def test_core_requests_with_value_lists_strings_and_lists(e):
    d = Decoder(e)
    create = wire.request(e, 1, 24, struct.pack(e + "IIhhHHHHII", 0x200001, 0x1E0, -5, 2, 100,
                                                   50, 1, 1, 0, 0x2 | 0x800)
                          + struct.pack(e + "II", 0xFFFFFF, 0x8001))
    m = d.decode("request", 1, create)
    assert m.name == "CreateWindow"
    assert m.fields == {"depth": 24, "wid": 0x200001, "parent": 0x1E0, "x": -5, "y": 2,
                        "width": 100, "height": 50, "border_width": 1, "window_class": 1,
                        "visual": 0, "attrs": {"background_pixel": 0xFFFFFF,
                                               "event_mask": 0x8001}}
    # ConfigureWindow: a 16-bit mask, an INT16 value sign-extended from its 32-bit slot
    conf = wire.request(e, 12, 0, struct.pack(e + "IH2xii", 0x200001, 0x1 | 0x40, -7, 1))
    m = d.decode("request", 2, conf)
    assert (m.name, m.fields) == ("ConfigureWindow",
                                  {"window": 0x200001, "attrs": {"x": -7, "stack_mode": 1}})
    m = d.decode("request", 3, wire.request(e, 8, 0, struct.pack(e + "I", 0x200001)))
    assert (m.name, m.fields) == ("MapWindow", {"window": 0x200001})
    line = wire.request(e, 65, 0, struct.pack(e + "IIhhhh", 0x200001, 0x200002, 1, 2, -3, 4))
    m = d.decode("request", 4, line)
    assert m.name == "PolyLine"
    assert m.fields["points"] == [{"x": 1, "y": 2}, {"x": -3, "y": 4}]
    text = wire.request(e, 76, 5, struct.pack(e + "IIhh", 0x200001, 0x200002, 10, 20) + b"hello")
    m = d.decode("request", 5, text)
    assert (m.name, m.fields["string"], m.fields["x"]) == ("ImageText8", "hello", 10)
    # QueryTextExtents: CHAR2B strings are byte pairs in either order; odd length in byte 1
    qte = wire.request(e, 48, 1, struct.pack(e + "I", 0x400001) + b"\x00A\x00B\x00C\x00\x00")
    m = d.decode("request", 6, qte)
    assert m.name == "QueryTextExtents" and m.fields["string"] == [65, 66, 67]


@ORDERS
def test_property_data_in_each_format(e):
    d = Decoder(e)
    for fmt, data, n in ((8, b"xlogo", 5), (16, struct.pack(e + "HHH", 1, 2, 65535), 3),
                         (32, struct.pack(e + "II", 243, 7), 2)):
        req = wire.request(e, 18, 0, struct.pack(e + "IIIB3xI", 0x200003, 39, 31, fmt, n) + data)
        m = d.decode("request", 1, req)
        assert m.name == "ChangeProperty"
        expect = {8: "xlogo", 16: [1, 2, 65535], 32: [243, 7]}[fmt]
        assert m.fields["data"] == {"format": fmt, "data": expect}
        assert m.fields["property"] == 39 and m.fields["type"] == 31


@ORDERS
def test_replies_carry_their_request_name_and_layout(e):
    d = Decoder(e)
    d.decode("request", 5, wire.request(e, 20, 0, struct.pack(e + "IIIII", 1, 39, 31, 0, 9)),
             now=1.0)
    d.decode("request", 6, wire.request(e, 14, 0, struct.pack(e + "I", 1)), now=1.5)
    r = d.decode("reply", 5, wire.reply(e, 5, 32, struct.pack(e + "III", 6, 0, 2),
                                        struct.pack(e + "II", 10, 0xFFFFFFFF)), now=1.25)
    assert r.name == "GetProperty"
    assert r.fields == {"property_type": 6, "bytes_after": 0,
                        "value": {"format": 32, "data": [10, 0xFFFFFFFF]}}
    assert r.latency == pytest.approx(0.25)
    r = d.decode("reply", 6, wire.reply(e, 6, 24, struct.pack(e + "IhhHHH", 0x1E0, -1, 2, 30,
                                                                40, 3)), now=2.0)
    assert r.name == "GetGeometry"
    assert r.fields == {"depth": 24, "root": 0x1E0, "x": -1, "y": 2, "width": 30,
                        "height": 40, "border_width": 3}
    assert r.latency == pytest.approx(0.5)
    assert not d.pending
    # a reply nobody asked for is named so, not guessed
    assert d.decode("reply", 9, wire.reply(e, 9)).name == "UnknownReply"


@ORDERS
def test_keyboard_mapping_reply(e):
    d = Decoder(e)
    d.decode("request", 1, wire.request(e, 101, 0, struct.pack(e + "BB2x", 8, 2)))
    r = d.decode("reply", 1, wire.reply(e, 1, 3, b"", struct.pack(e + "6I", 1, 2, 3, 4, 5, 6)))
    assert r.name == "GetKeyboardMapping"
    assert r.fields["keysyms"] == [[1, 2, 3], [4, 5, 6]]


@ORDERS
def test_list_fonts_with_info_has_many_replies(e):
    d = Decoder(e)
    d.decode("request", 3, wire.request(e, 50, 0, struct.pack(e + "HH", 10, 1) + b"*"))

    def info(name: bytes) -> bytes:
        fixed = bytes(48)  # min/max bounds, then the rest of the fixed part
        return wire.reply(e, 3, len(name), fixed[:24], fixed[24:] + bytes(4) + name)

    first = d.decode("reply", 3, info(b"fixed"), now=1.0)
    second = d.decode("reply", 3, info(b"cursor"), now=2.0)
    last = d.decode("reply", 3, info(b""), now=3.0)
    assert [m.name for m in (first, second, last)] == ["ListFontsWithInfo"] * 3
    assert first.latency is not None and second.latency is None and last.latency is None
    assert first.fields["name"] == "fixed" and second.fields["name"] == "cursor"
    # a later reply ends it
    d.decode("request", 4, wire.request(e, 43))
    assert d.decode("reply", 4, wire.reply(e, 4)).name == "GetInputFocus"
    assert not d.pending


@ORDERS
def test_atoms_learned_from_intern_atom_and_get_atom_name(e):
    d = Decoder(e)
    assert d.atoms[39] == "WM_NAME"  # predefined
    d.decode("request", 1, wire.request(e, 16, 0, struct.pack(e + "H2x", 12) + b"WM_PROTOCOLS"))
    r = d.decode("reply", 1, wire.reply(e, 1, 0, struct.pack(e + "I", 244)))
    assert (r.name, r.fields) == ("InternAtom", {"atom": 244})
    d.decode("request", 2, wire.request(e, 17, 0, struct.pack(e + "I", 300)))
    r = d.decode("reply", 2, wire.reply(e, 2, 0, struct.pack(e + "H", 6), b"_NET_X"))
    assert r.fields["name"] == "_NET_X"
    assert d.atoms[244] == "WM_PROTOCOLS" and d.atoms[300] == "_NET_X"


@ORDERS
def test_core_events(e):
    d = Decoder(e)
    m = d.decode("event", 7, ev(e, 19, 7, "IIB", 0x200001, 0x200002, 0))
    assert (m.name, m.fields) == ("MapNotify", {"event": 0x200001, "window": 0x200002,
                                                "override": 0})
    m = d.decode("event", 7, ev(e, 12, 7, "IHHHHH", 0x200006, 1, 2, 100, 50, 0))
    assert (m.name, m.fields) == ("Expose", {"window": 0x200006, "x": 1, "y": 2, "width": 100,
                                             "height": 50, "count": 0})
    key = ev(e, 2, 8, "IIIIhhhhHB", 5000, 0x1E0, 0x200001, 0, 10, 20, 3, 4, 0x4, 1, byte1=38)
    m = d.decode("event", 8, key)
    assert m.name == "KeyPress" and m.fields["detail"] == 38
    assert (m.fields["root_x"], m.fields["event_y"], m.fields["state"]) == (10, 4, 4)
    # SendEvent bit
    msg = ev(e, 33, 9, "II", 0x200001, 244, byte1=32)
    msg = bytes([33 | 0x80]) + msg[1:12] + struct.pack(e + "I", 243) + msg[16:]
    m = d.decode("event", 9, msg)
    assert m.name == "ClientMessage" and m.fields["send_event"] is True
    assert m.fields["client_type"] == 244
    assert m.fields["data"] == {"format": 32, "data": [243, 0, 0, 0, 0]}


@ORDERS
def test_send_event_carries_a_decoded_event(e):
    d = Decoder(e)
    inner = ev(e, 19, 0, "IIB", 0x200001, 0x200002, 1)
    m = d.decode("request", 1, wire.request(e, 25, 1, struct.pack(e + "II", 0x200001, 0x20000)
                                            + inner))
    assert m.name == "SendEvent" and m.fields["propagate"] is True
    assert m.fields["event"]["name"] == "MapNotify"
    assert m.fields["event"]["window"] == 0x200002


@ORDERS
def test_core_errors_name_the_failed_request(e):
    d = Decoder(e)
    d.decode("request", 4, wire.request(e, 14, 0, struct.pack(e + "I", 0xDEAD)))
    m = d.decode("error", 4, struct.pack(e + "BBHIHB21x", 0, 9, 4, 0xDEAD, 0, 14))
    assert m.name == "BadDrawable"
    assert m.fields == {"code": 9, "bad_value": 0xDEAD, "minor_opcode": 0, "major_opcode": 14,
                        "request": "GetGeometry"}
    assert not d.pending  # the error answered the request


@ORDERS
def test_big_requests_length_is_removed_before_the_layout(e):
    d = learned(e, {"BIG-REQUESTS": (200, 0, 0)})
    d.decode("request", 2, ext_request(e, 200, 0))
    r = d.decode("reply", 2, wire.reply(e, 2, 0, struct.pack(e + "I", 4194303)))
    assert (r.name, r.fields) == ("BIG-REQUESTS:Enable", {"maximum_request_length": 4194303})
    image = struct.pack(e + "IIHHhhBB2x", 0x200001, 0x200002, 2, 2, 0, 0, 0, 24) + bytes(16)
    m = d.decode("request", 3, wire.big_request(e, 72, image, data=2))
    assert m.name == "PutImage" and m.fields["big_request"] is True
    assert (m.fields["drawable"], m.fields["width"], m.fields["depth"]) == (0x200001, 2, 24)
    assert m.fields["data"] == "00" * 16
    big = struct.pack(e + "IIHHhhBB2x", 0x200001, 0x200002, 100, 100, 0, 0, 0, 24)
    m = d.decode("request", 4, wire.request(e, 72, 2, big + bytes(range(256)) * 156 + bytes(64)))
    assert m.fields["data"] == bytes(range(32)).hex() + "...(40000 bytes)"


# -- extensions --------------------------------------------------------------------------------


@ORDERS
def test_extension_request_names_come_from_the_connection(e):
    d = learned(e)
    expect = {
        ("BIG-REQUESTS", 0): "BIG-REQUESTS:Enable",
        ("XC-MISC", 1): "XC-MISC:GetXIDRange",
        ("MIT-SHM", 3): "MIT-SHM:PutImage",
        ("SHAPE", 1): "SHAPE:Rectangles",
        ("XFIXES", 19): "XFIXES:FetchRegion",
        ("RENDER", 23): "RENDER:CompositeGlyphs8",
        ("RANDR", 8): "RANDR:GetScreenResources",
        ("XInputExtension", 46): "XInputExtension:XISelectEvents",
        ("Composite", 2): "Composite:RedirectSubwindows",
        ("DAMAGE", 1): "DAMAGE:Create",
        ("Present", 1): "Present:Pixmap",
        ("XKEYBOARD", 8): "XKEYBOARD:GetMap",
    }
    for (ext, minor), name in expect.items():
        msg = ext_request(e, EXTS[ext][0], minor, bytes(4))
        assert d.decode("request", 100, msg).name == name
    # the same bytes on a connection where the server gave other opcodes
    other = learned(e, {"RENDER": (201, 0, 0)})
    assert other.decode("request", 2, ext_request(e, 201, 23, bytes(4))).name == \
        "RENDER:CompositeGlyphs8"
    assert other.decode("request", 3, ext_request(e, 205, 23, bytes(4))).name == \
        "Extension205:23"


@ORDERS
def test_unknown_extension_requests_are_named_by_minor_with_raw_length(e):
    d = learned(e, {"DRI3": (150, 0, 0), "RENDER": (151, 0, 0)})
    m = d.decode("request", 3, ext_request(e, 150, 7, bytes(8)))
    assert (m.name, m.fields) == ("DRI3:7", {"length": 12})
    m = d.decode("request", 4, ext_request(e, 151, 99))
    assert (m.name, m.fields) == ("RENDER:99", {"length": 4})
    r = d.decode("reply", 3, wire.reply(e, 3, extra=bytes(8)))
    assert (r.name, r.fields) == ("DRI3:7", {"length": 40})


@ORDERS
def test_glx_requests_are_named_and_paired_with_their_replies(e):
    d = learned(e, {"GLX": (150, 0, 0)})
    assert d.decode("request", 3, ext_request(e, 150, 19, bytes(8))).name == \
        "GLX:QueryServerString"
    assert d.decode("request", 4, ext_request(e, 150, 1, bytes(8))).name == "GLX:Render"
    assert d.decode("request", 5, ext_request(e, 150, 108, bytes(4))).name == "GLX:Finish"
    assert d.decode("reply", 3, wire.reply(e, 3, extra=bytes(8))).name == \
        "GLX:QueryServerString"
    assert [may_reply(EXTENSIONS["GLX"], m) for m in (1, 16, 17, 19, 101, 108, 142)] == \
        [False, False, True, True, False, True, False]


@ORDERS
def test_extension_request_fields(e):
    d = learned(e)
    render = EXTS["RENDER"][0]
    m = d.decode("request", 20, ext_request(e, render, 8, struct.pack(
        e + "B3xIIIhhhhhhHH", 3, 0x400001, 0, 0x400002, 1, 2, 0, 0, -3, 4, 50, 60)))
    assert m.name == "RENDER:Composite"
    assert (m.fields["op"], m.fields["src"], m.fields["dst"], m.fields["dst_x"]) == \
        (3, 0x400001, 0x400002, -3)
    shape_ = EXTS["SHAPE"][0]
    rects = ext_request(e, shape_, 1, struct.pack(e + "BBB1xIhhhhHH", 0, 0, 0, 0x200001, 5, 6,
                                                  0, 0, 10, 20))
    m = d.decode("request", 21, rects)
    assert m.name == "SHAPE:Rectangles"
    assert m.fields["destination_window"] == 0x200001 and m.fields["x_offset"] == 5
    assert m.fields["rectangles"] == [{"x": 0, "y": 0, "width": 10, "height": 20}]
    xi = EXTS["XInputExtension"][0]
    select = ext_request(e, xi, 46, struct.pack(e + "IH2xHHI", 0x200001, 1, 2, 1, 0x7C))
    m = d.decode("request", 22, select)
    assert m.name == "XInputExtension:XISelectEvents"
    assert m.fields["masks"] == [{"deviceid": 2, "mask": [0x7C]}]
    damage_ = EXTS["DAMAGE"][0]
    m = d.decode("request", 23, ext_request(e, damage_, 1, struct.pack(e + "IIB3x", 0x600001,
                                                                        0x200001, 3)))
    assert m.name == "DAMAGE:Create" and m.fields["damage"] == 0x600001
    assert m.fields["drawable"] == 0x200001 and m.fields["level"] == 3
    comp = EXTS["Composite"][0]
    m = d.decode("request", 24, ext_request(e, comp, 1, struct.pack(e + "IB3x", 0x1E0, 1)))
    assert m.name == "Composite:RedirectWindow" and m.fields["window"] == 0x1E0
    xfixes_ = EXTS["XFIXES"][0]
    m = d.decode("request", 25, ext_request(e, xfixes_, 5, struct.pack(e + "IhhHH", 0x700001,
                                                                        1, 2, 3, 4)))
    assert m.name == "XFIXES:CreateRegion"
    assert m.fields["rectangles"] == [{"x": 1, "y": 2, "width": 3, "height": 4}]
    shm = EXTS["MIT-SHM"][0]
    m = d.decode("request", 26, ext_request(e, shm, 1, struct.pack(e + "IIB3x", 0x800001, 42,
                                                                    1)))
    assert (m.name, m.fields["shmseg"], m.fields["shmid"], m.fields["read_only"]) == \
        ("MIT-SHM:Attach", 0x800001, 42, True)
    present = EXTS["Present"][0]
    m = d.decode("request", 27, ext_request(e, present, 1, struct.pack(
        e + "IIIIIhhIIII4x6I", 0x200001, 0x200009, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0)))
    assert (m.name, m.fields["pixmap"], m.fields["serial"]) == ("Present:Pixmap", 0x200009, 5)
    xkb = EXTS["XKEYBOARD"][0]
    m = d.decode("request", 28, ext_request(e, xkb, 0, struct.pack(e + "HH", 1, 0)))
    assert (m.name, m.fields) == ("XKEYBOARD:UseExtension", {"wanted_major": 1,
                                                              "wanted_minor": 0})
    xcmisc = EXTS["XC-MISC"][0]
    assert d.decode("request", 29, ext_request(e, xcmisc, 1)).name == "XC-MISC:GetXIDRange"


@ORDERS
def test_extension_replies(e):
    d = learned(e)
    cases = [
        ("RENDER", 0, struct.pack(e + "II", 0, 11), {"major_version": 0, "minor_version": 11}),
        ("XC-MISC", 1, struct.pack(e + "II", 0x200000, 0x1000),
         {"start_id": 0x200000, "count": 0x1000}),
        ("XKEYBOARD", 0, struct.pack(e + "HH", 1, 0),
         {"supported": False, "server_major": 1, "server_minor": 0}),
        ("Present", 0, struct.pack(e + "II", 1, 2), {"major_version": 1, "minor_version": 2}),
        ("SHAPE", 0, struct.pack(e + "HH", 1, 1), {"major_version": 1, "minor_version": 1}),
        ("DAMAGE", 0, struct.pack(e + "II", 1, 1), {"major_version": 1, "minor_version": 1}),
        ("Composite", 0, struct.pack(e + "II", 0, 4), {"major_version": 0, "minor_version": 4}),
        ("XFIXES", 0, struct.pack(e + "II", 6, 0), {"major_version": 6, "minor_version": 0}),
        ("RANDR", 0, struct.pack(e + "II", 1, 6), {"major_version": 1, "minor_version": 6}),
        ("XInputExtension", 47, struct.pack(e + "HH", 2, 4),
         {"major_version": 2, "minor_version": 4}),
    ]
    for seq, (ext, minor, body, fields) in enumerate(cases, 50):
        req = ext_request(e, EXTS[ext][0], minor, bytes(8))
        assert d.decode("request", seq, req).name.startswith(ext + ":")
        r = d.decode("reply", seq, wire.reply(e, seq, body=body))
        assert r.fields == fields, ext
    shm = EXTS["MIT-SHM"][0]
    d.decode("request", 70, ext_request(e, shm, 0))
    r = d.decode("reply", 70, wire.reply(e, 70, 1, struct.pack(e + "HHHHB", 1, 2, 1000, 1000, 2)))
    assert r.name == "MIT-SHM:QueryVersion"
    assert r.fields["shared_pixmaps"] is True and r.fields["uid"] == 1000


@ORDERS
def test_extension_events_by_first_event_of_the_connection(e):
    d = learned(e)
    base = {k: v[1] for k, v in EXTS.items()}
    m = d.decode("event", 9, ev(e, base["SHAPE"], 9, "IhhHHIB", 0x200001, 1, 2, 3, 4, 77, 1))
    assert m.name == "SHAPE:Notify" and m.fields["affected_window"] == 0x200001
    assert m.fields["shaped"] == 1 and m.fields["extents_width"] == 3
    m = d.decode("event", 9, ev(e, base["DAMAGE"], 9, "IIIhhHHhhHH", 0x200001, 0x600001, 5,
                                0, 0, 10, 10, 0, 0, 100, 100, byte1=3))
    assert m.name == "DAMAGE:Notify" and m.fields["damage"] == 0x600001
    assert m.fields["level"] == 3
    m = d.decode("event", 9, ev(e, base["XFIXES"], 9, "III", 0x200001, 0x200002, 1, byte1=0))
    assert m.name == "XFIXES:SelectionNotify" and m.fields["window"] == 0x200001
    assert d.decode("event", 9, ev(e, base["XFIXES"] + 1, 9)).name == "XFIXES:CursorNotify"
    m = d.decode("event", 9, ev(e, base["RANDR"], 9, "IIII", 1, 2, 0x1E0, 0x200001, byte1=1))
    assert m.name == "RANDR:ScreenChangeNotify" and m.fields["root"] == 0x1E0
    m = d.decode("event", 9, ev(e, base["RANDR"] + 1, 9, "II", 1000, 0x1E0, byte1=1))
    assert m.name == "RANDR:OutputChangeNotify"
    assert d.decode("event", 9, ev(e, base["RANDR"] + 1, 9, byte1=6)).name == \
        "RANDR:LeaseNotify"
    m = d.decode("event", 9, ev(e, base["MIT-SHM"], 9, "IHBxII", 0x200001, 3, 202, 0x800001,
                                64))
    assert m.name == "MIT-SHM:Completion" and m.fields["shmseg"] == 0x800001
    m = d.decode("event", 9, ev(e, base["XKEYBOARD"], 9, "IB", 1234, 3, byte1=2))
    assert (m.name, m.fields["time"], m.fields["device_id"]) == ("XKEYBOARD:StateNotify", 1234, 3)
    assert d.decode("event", 9, ev(e, base["XInputExtension"] + 5, 9)).name == \
        "XInputExtension:DeviceMotionNotify"


@ORDERS
def test_generic_events_by_the_extension_major_opcode(e):
    d = learned(e)
    xi = EXTS["XInputExtension"][0]
    data = struct.pack(e + "HIIIIIiiiiHHH2xI", 2, 5000, 1, 0x1E0, 0x200001, 0, 10 << 16,
                       20 << 16, (3 << 16) | 0x8000, 4 << 16, 0, 0, 4, 0) + bytes(20)
    msg = struct.pack(e + "BBHIH", 35, xi, 9, (len(data) + 10 - 32) // 4, 6) + data
    m = d.decode("event", 9, msg)
    assert m.name == "XInputExtension:Motion"
    assert m.fields["evtype"] == 6 and m.fields["deviceid"] == 2
    assert m.fields["event"] == 0x200001 and m.fields["event_x"] == 3.5
    assert m.fields["sourceid"] == 4
    present = EXTS["Present"][0]
    msg = struct.pack(e + "BBHIH2xII", 35, present, 9, 10, 1, 77, 0x200001) + bytes(42)
    m = d.decode("event", 9, msg)
    assert m.name == "Present:CompleteNotify" and m.fields["event_id"] == 77
    assert d.decode("event", 9, wire.generic_event(e, 9, 99, 2)).name == "Extension99:1"


@ORDERS
def test_extension_errors_by_first_error_of_the_connection(e):
    d = learned(e)
    expect = {"RENDER": "RENDER:BadPicture", "XFIXES": "XFIXES:BadRegion",
              "DAMAGE": "DAMAGE:BadDamage", "RANDR": "RANDR:BadCrtc",
              "XInputExtension": "XInputExtension:BadEvent", "MIT-SHM": "MIT-SHM:BadSeg",
              "XKEYBOARD": "XKEYBOARD:BadKeyboard"}
    offsets = {"RENDER": 1, "RANDR": 1, "XInputExtension": 1}
    for ext, name in expect.items():
        code = EXTS[ext][2] + offsets.get(ext, 0)
        msg = struct.pack(e + "BBHIHB21x", 0, code, 5, 0x400001, 7, EXTS[ext][0])
        m = d.decode("error", 5, msg)
        assert m.name == name
        assert m.fields["major_opcode"] == EXTS[ext][0] and m.fields["bad_value"] == 0x400001
        assert m.fields["request"].startswith(ext + ":")


def test_every_listed_extension_has_a_table():
    for name in ("BIG-REQUESTS", "XC-MISC", "MIT-SHM", "SHAPE", "XFIXES", "RENDER", "RANDR",
                 "XInputExtension", "Composite", "DAMAGE", "Present", "XKEYBOARD"):
        assert EXTENSIONS[name].requests, name


# -- robustness and laziness -------------------------------------------------------------------


@ORDERS
def test_malformed_content_decodes_to_a_name_and_an_error(e):
    d = Decoder(e)
    # CreateWindow claiming a value the body does not hold
    m = d.decode("request", 1, wire.request(e, 1, 24, struct.pack(e + "IIhhHHHHII", 1, 2, 0, 0,
                                                                      1, 1, 0, 1, 0, 0xFFFF)))
    assert m.name == "CreateWindow" and "error" in m.fields
    # GetProperty reply with format 7
    d.decode("request", 2, wire.request(e, 20, 0, bytes(20)))
    r = d.decode("reply", 2, wire.reply(e, 2, 7, struct.pack(e + "III", 31, 0, 3)))
    assert r.name == "GetProperty" and "error" in r.fields
    json.dumps(m.fields), json.dumps(r.fields)


def test_names_only_decodes_no_fields():
    d = Decoder("<")
    m = d.decode("request", 1, wire.request("<", 8, 0, struct.pack("<I", 5)), fields=False)
    assert (m.name, m.fields) == ("MapWindow", {})
    d.decode("request", 2, wire.query_extension("<", b"RENDER"), fields=False)
    d.decode("reply", 2, wire.query_extension_reply("<", 2, True, 139, 0, 142), fields=False)
    assert d.decode("request", 3, ext_request("<", 139, 4, bytes(16)),
                    fields=False).name == "RENDER:CreatePicture"


def test_requests_awaiting_replies_are_bounded():
    """A client that sends requests with replies and never reads them cannot grow a traced
    connection's decoder: past MAX_PENDING the oldest are forgotten."""
    d = Decoder("<")
    get_input_focus = wire.request("<", 43)
    for seq in range(1, MAX_PENDING + 1001):
        d.decode("request", seq, get_input_focus, fields=False)
    assert len(d.pending) == MAX_PENDING
    newest = MAX_PENDING + 1000
    assert d.decode("reply", newest, wire.reply("<", newest), fields=False).name == "GetInputFocus"


def test_fields_only_for_the_names_a_filter_keeps():
    """A trace filtered by name (--only, --skip) decodes the fields of only what it keeps;
    every message still gets its name, and atoms and extensions are still learned."""
    asked: list[str] = []

    def keep(name: str) -> bool:
        asked.append(name)
        return name in ("GetProperty", "Expose", "BadValue", "RENDER:CreatePicture")

    d = Decoder("<")
    d.decode("setup", 0, wire.setup_request("<"), fields=keep)
    d.decode("request", 1, wire.request("<", 16, 0, struct.pack("<H2x", 7) + b"MY_ATOM\0"),
             fields=keep)
    intern = d.decode("reply", 1, wire.reply("<", 1, 0, struct.pack("<I", 301)), fields=keep)
    assert intern.name == "InternAtom" and d.atoms[301] == "MY_ATOM"
    d.decode("request", 2, wire.query_extension("<", b"RENDER"), fields=keep)
    d.decode("reply", 2, wire.query_extension_reply("<", 2, True, 139, 0, 142), fields=keep)
    get = d.decode("request", 3, wire.request("<", 20, 0, struct.pack("<IIIII", 5, 301, 0, 0, 9)),
                   fields=keep)
    assert get.name == "GetProperty" and get.fields["property"] == 301
    assert d.decode("request", 4, wire.request("<", 8, 0, struct.pack("<I", 5)),
                    fields=keep).fields == {}
    assert d.decode("request", 5, ext_request("<", 139, 4, bytes(16)),
                    fields=keep).fields != {}
    assert d.decode("event", 5, ev("<", 12, 5, "I", 5), fields=keep).fields["window"] == 5
    assert d.decode("event", 5, ev("<", 19, 5, "I", 5), fields=keep).fields == {}  # MapNotify
    err = d.decode("error", 5, wire.error("<", 5, code=2), fields=keep)
    assert err.name == "BadValue" and err.fields["code"] == 2
    assert asked == ["Setup", "InternAtom", "InternAtom", "QueryExtension", "QueryExtension",
                     "GetProperty", "MapWindow", "RENDER:CreatePicture", "Expose", "MapNotify",
                     "BadValue"]


def test_no_observer_without_tracer_or_metrics():
    """Nothing watching: the relay only frames (no decoder is made, nothing is held)."""
    assert observers(lambda: 0.0) is None
    conn = X11Connection(AuthPolicy(None), observer=None)
    conn.client_data(wire.setup_request("<"))
    conn.server_data(wire.setup_success("<"))
    put = wire.request("<", 72, 2, bytes(4000))
    assert conn.client_data(put) is put  # streamed through untouched, not copied


def test_observer_on_a_connection_sees_decoded_messages():
    seen = []

    class Trace:
        fields = True

        def emit(self, client, d, now, atoms):
            seen.append((client, d.direction, d.seq, d.name))

    obs = ClientObserver(7, lambda: 1.0, Trace())  # type: ignore[arg-type]
    conn = X11Connection(AuthPolicy(None), observer=obs)
    conn.client_data(wire.setup_request(">"))
    conn.server_data(wire.setup_success(">"))
    conn.client_data(wire.query_extension(">", b"RENDER") + wire.request(">", 43))
    conn.server_data(wire.query_extension_reply(">", 1, True, 139, 0, 142) + wire.reply(">", 2))
    conn.client_data(wire.request(">", 139, 7, struct.pack(">I", 0x400001)))
    assert seen == [(7, "setup", 0, "Setup"), (7, "setup-reply", 0, "Setup"),
                    (7, "request", 1, "QueryExtension"), (7, "request", 2, "GetInputFocus"),
                    (7, "reply", 1, "QueryExtension"), (7, "reply", 2, "GetInputFocus"),
                    (7, "request", 3, "RENDER:FreePicture")]


_FULL = learned("<")
_FULL_MSB = learned(">")


def _framed(e: str, kind: str, code: int, minor: int, words: int, tail: bytes) -> bytes:
    if kind == "request":
        body = (bytes([minor]) + tail).ljust(4 * words + 1, b"\0")[: 4 * words + 1]
        msg = bytes([code]) + body[:1] + struct.pack(e + "H", words + 1) + body[1:]
        return msg
    if kind == "big":
        body = tail.ljust(4 * words, b"\0")[: 4 * words]
        return struct.pack(e + "BBHI", code, minor, 0, words + 2) + body
    if kind == "reply":
        return struct.pack(e + "BBHI", 1, minor, 0, words) + tail.ljust(24 + 4 * words,
                                                                        b"\0")[: 24 + 4 * words]
    if kind == "generic":
        return struct.pack(e + "BBHI", 35, code, 0, words) + tail.ljust(24 + 4 * words,
                                                                        b"\0")[: 24 + 4 * words]
    if kind == "error":
        return bytes([0, code]) + tail.ljust(30, b"\0")[:30]
    return bytes([code | 0x80 if minor & 1 else code]) + tail.ljust(31, b"\0")[:31]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(e=st.sampled_from("<>"),
       kind=st.sampled_from(["request", "big", "reply", "generic", "error", "event"]),
       code=st.integers(0, 255), minor=st.integers(0, 255), words=st.integers(0, 40),
       tail=st.binary(max_size=200), pending=st.integers(0, 255))
def test_decoder_never_raises_on_any_framed_message(e, kind, code, minor, words, tail, pending):
    d = _FULL if e == "<" else _FULL_MSB
    msg = _framed(e, kind, code, minor, words, tail)
    if kind == "reply":
        # a reply to some request: any core or extension opcode
        d.decode("request", 1000, _framed(e, "request", pending, minor, 2, tail))
        m = d.decode("reply", 1000, msg)
        d.pending.clear()
    else:
        direction = {"big": "request", "generic": "event"}.get(kind, kind)
        m = d.decode(direction, 1000, msg)
        d.pending.clear()
    assert isinstance(m.name, str) and m.name
    assert m.size == len(msg)
    json.dumps(m.fields)


def test_a_layout_made_after_another_is_freed_gets_its_own_plan() -> None:
    """Plans are cached per layout object: a layout created where a freed one lived (same
    id()) is read with its own fields, not the freed layout's."""
    from Xlib.protocol import rq

    from xproxy.x11.decode.layouts import parse

    dec = Decoder()
    for i in range(50):
        names = [f"a{i}", f"b{i}"] if i % 2 else [f"c{i}"]
        layout = rq.Struct(*(rq.Card16(n) for n in names))
        out: dict = {}
        parse(layout, b"\x01\x00\x02\x00", "<", dec, out)
        assert list(out) == names
        del layout


def test_resource_fields_are_read_from_every_layout_once_and_cannot_change() -> None:
    from xproxy.x11.decode.fields import RESOURCE_FIELDS

    assert isinstance(RESOURCE_FIELDS, frozenset)
    assert {"window", "drawable", "resource_id", "bad_value_resource"} <= RESOURCE_FIELDS
