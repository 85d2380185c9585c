"""Decoding X11 messages to names and named fields, in either byte order.

Theory of operation: one `Decoder` per connection sees every message the connection's observer
sees, in order. It keeps what the meaning of later messages depends on: the byte order (from
the setup), the requests still waiting for replies by full sequence number (so each reply is
decoded with its request's layout and carries its name; multi-reply requests such as
ListFontsWithInfo stay pending until a later sequence number shows up), the extensions from
QueryExtension replies (major opcode, first event, first error: never constants), and the
atom names learned from InternAtom and GetAtomName.

Field layouts are python-xlib's `rq.Struct` declarations, interpreted here rather than through
python-xlib's parser, which reads the host's byte order only and wants a live display for
resources. Framing is not redone: a message is whatever the framer cut, and a BIG-REQUESTS
request has its extended length removed before its layout is applied.

`decode` never raises: a message whose content does not fit its layout decodes to its name
with an `error` field and the raw length. With `fields=False` only names (and the state
above) are computed.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from Xlib import Xatom
from Xlib.ext import composite, damage, randr, shape, xfixes, xinput
from Xlib.protocol import event as xevent
from Xlib.protocol import request as xrequest
from Xlib.protocol import rq
from Xlib.protocol import structs as _structs

from .opcodes import (
    EVENT_CODE_MASK,
    FIRST_EXTENSION_OPCODE,
    GENERIC_EVENT,
    GET_ATOM_NAME,
    INTERN_ATOM,
    QUERY_EXTENSION,
)

__all__ = [
    "ATOM_FIELDS",
    "EXTENSIONS",
    "PREDEFINED_ATOMS",
    "RESOURCE_FIELDS",
    "Decoded",
    "Decoder",
    "ExtensionSpec",
]

#: How many items of a list are kept in decoded fields; the rest is counted, not listed.
MAX_ITEMS = 64
#: How many bytes of opaque data are shown (as hex).
MAX_BYTES = 32
#: How many characters of a string are kept.
MAX_TEXT = 256

PREDEFINED_ATOMS: dict[int, str] = {
    v: k for k, v in vars(Xatom).items() if k.isupper() and isinstance(v, int) and 0 < v < 69
}

#: Field names that hold resource ids (shown in hex by the text tracer), from the
#: Resource field types of every layout known here.
RESOURCE_FIELDS: set[str] = {"resource_id", "bad_value_resource"}
#: Field names that hold atoms, resolved to names by the tracer.
ATOM_FIELDS = frozenset({"atom", "property", "type", "selection", "target", "property_type",
                         "client_type", "atoms", "properties", "name_atom", "label"})

_CORE_ERRORS = ["Success", "BadRequest", "BadValue", "BadWindow", "BadPixmap", "BadAtom",
                "BadCursor", "BadFont", "BadMatch", "BadDrawable", "BadAccess", "BadAlloc",
                "BadColor", "BadGC", "BadIDChoice", "BadName", "BadLength",
                "BadImplementation"]


@dataclass(frozen=True, slots=True)
class Decoded:
    """One message: `direction` as the observer said it (`setup`, `setup-reply`, `request`,
    `reply`, `error`, `event`), the full sequence number, the name (a reply carries its
    request's name) and the fields (JSON-ready values). For the first reply to a request,
    `latency` is the time since the request was seen (in the clock passed to `decode`)."""

    direction: str
    seq: int
    name: str
    fields: dict[str, Any]
    size: int
    latency: float | None = None


class _Bad(Exception):
    """Content that does not fit its layout."""


# --------------------------------------------------------------------------------------------
# Extension tables. Names are those of the extension's protocol specification (xcb-proto);
# a trailing "*" marks a request that has a reply; "-" is an unused minor opcode.


def _minors(spec: str, start: int = 0) -> dict[int, tuple[str, bool]]:
    out = {}
    for i, word in enumerate(spec.split(), start):
        if word != "-":
            out[i] = (word.rstrip("*"), word.endswith("*"))
    return out


@dataclass
class ExtensionSpec:
    name: str
    requests: dict[int, tuple[str, bool]]
    #: event offset from first_event -> name, or {subcode (byte 1) -> name}
    events: dict[int, str | dict[int, str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: GenericEvent evtype -> name
    generic: dict[int, str] = field(default_factory=dict)
    #: minor -> (request layout, reply layout or None), from python-xlib or our own
    layouts: dict[int, tuple[rq.Struct, rq.Struct | None]] = field(default_factory=dict)
    #: event offset (or (offset, subcode)) -> layout of the whole 32 bytes
    event_layouts: dict[Any, rq.Struct] = field(default_factory=dict)
    #: GenericEvent evtype -> layout of the bytes from offset 10
    generic_layouts: dict[int, rq.Struct] = field(default_factory=dict)


def _xlib_layouts(module: Any) -> dict[int, tuple[rq.Struct, rq.Struct | None]]:
    out = {}
    for obj in vars(module).values():
        req = getattr(obj, "_request", None)
        if isinstance(obj, type) and isinstance(req, rq.Struct):
            for f in req.fields:
                if isinstance(f, rq.Opcode):
                    out[f.value] = (req, getattr(obj, "_reply", None))
                    break
    return out


_XI2_EVENTS = {
    1: "DeviceChanged", 2: "KeyPress", 3: "KeyRelease", 4: "ButtonPress", 5: "ButtonRelease",
    6: "Motion", 7: "Enter", 8: "Leave", 9: "FocusIn", 10: "FocusOut", 11: "HierarchyChanged",
    12: "PropertyEvent", 13: "RawKeyPress", 14: "RawKeyRelease", 15: "RawButtonPress",
    16: "RawButtonRelease", 17: "RawMotion", 18: "TouchBegin", 19: "TouchUpdate",
    20: "TouchEnd", 21: "TouchOwnership", 22: "RawTouchBegin", 23: "RawTouchUpdate",
    24: "RawTouchEnd", 25: "BarrierHit", 26: "BarrierLeave", 27: "GesturePinchBegin",
    28: "GesturePinchUpdate", 29: "GesturePinchEnd", 30: "GestureSwipeBegin",
    31: "GestureSwipeUpdate", 32: "GestureSwipeEnd",
}

# Layouts python-xlib does not declare, for the requests and replies seen most.
_VERSION_REPLY = rq.Struct(rq.ReplyCode(), rq.Pad(1), rq.Card16("sequence_number"),
                           rq.ReplyLength(), rq.Card32("major_version"),
                           rq.Card32("minor_version"), rq.Pad(16))
_VERSION_REQUEST = rq.Struct(rq.Card8("opcode"), rq.Card8("minor"), rq.RequestLength(),
                             rq.Card32("major_version"), rq.Card32("minor_version"))
_HEADER_REQUEST = rq.Struct(rq.Card8("opcode"), rq.Card8("minor"), rq.RequestLength())
_BIGREQ_REPLY = rq.Struct(rq.ReplyCode(), rq.Pad(1), rq.Card16("sequence_number"),
                          rq.ReplyLength(), rq.Card32("maximum_request_length"), rq.Pad(20))
_XCMISC_RANGE = rq.Struct(rq.ReplyCode(), rq.Pad(1), rq.Card16("sequence_number"),
                          rq.ReplyLength(), rq.Card32("start_id"), rq.Card32("count"),
                          rq.Pad(16))
_XCMISC_VERSION = rq.Struct(rq.ReplyCode(), rq.Pad(1), rq.Card16("sequence_number"),
                            rq.ReplyLength(), rq.Card16("major_version"),
                            rq.Card16("minor_version"), rq.Pad(20))
_SHM_VERSION = rq.Struct(rq.ReplyCode(), rq.Bool("shared_pixmaps"), rq.Card16("sequence_number"),
                         rq.ReplyLength(), rq.Card16("major_version"), rq.Card16("minor_version"),
                         rq.Card16("uid"), rq.Card16("gid"), rq.Card8("pixmap_format"),
                         rq.Pad(15))
_SHM_ATTACH = rq.Struct(rq.Card8("opcode"), rq.Card8("minor"), rq.RequestLength(),
                        rq.Card32("shmseg"), rq.Card32("shmid"), rq.Bool("read_only"), rq.Pad(3))
_SHM_PUTIMAGE = rq.Struct(
    rq.Card8("opcode"), rq.Card8("minor"), rq.RequestLength(), rq.Drawable("drawable"),
    rq.GC("gc"), rq.Card16("total_width"), rq.Card16("total_height"), rq.Card16("src_x"),
    rq.Card16("src_y"), rq.Card16("src_width"), rq.Card16("src_height"), rq.Int16("dst_x"),
    rq.Int16("dst_y"), rq.Card8("depth"), rq.Card8("format"), rq.Bool("send_event"),
    rq.Pad(1), rq.Card32("shmseg"), rq.Card32("offset"))
_SHM_COMPLETION = rq.Struct(rq.Card8("type"), rq.Pad(1), rq.Card16("sequence_number"),
                            rq.Drawable("drawable"), rq.Card16("minor_event"),
                            rq.Card8("major_event"), rq.Pad(1), rq.Card32("shmseg"),
                            rq.Card32("offset"), rq.Pad(12))
_XFIXES_REGION_RECTS = rq.Struct(rq.Card8("opcode"), rq.Card8("minor"), rq.RequestLength(),
                                 rq.Resource("region"), rq.List("rectangles", _structs.Rectangle))
_XFIXES_REGION = rq.Struct(rq.Card8("opcode"), rq.Card8("minor"), rq.RequestLength(),
                           rq.Resource("region"))
_RENDER_CREATE_PICTURE = rq.Struct(
    rq.Card8("opcode"), rq.Card8("minor"), rq.RequestLength(), rq.Resource("pid"),
    rq.Drawable("drawable"), rq.Card32("format"), rq.Card32("value_mask"))
_RENDER_COMPOSITE = rq.Struct(
    rq.Card8("opcode"), rq.Card8("minor"), rq.RequestLength(), rq.Card8("op"), rq.Pad(3),
    rq.Resource("src"), rq.Resource("mask"), rq.Resource("dst"), rq.Int16("src_x"),
    rq.Int16("src_y"), rq.Int16("mask_x"), rq.Int16("mask_y"), rq.Int16("dst_x"),
    rq.Int16("dst_y"), rq.Card16("width"), rq.Card16("height"))
_RENDER_FREE_PICTURE = rq.Struct(rq.Card8("opcode"), rq.Card8("minor"), rq.RequestLength(),
                                 rq.Resource("picture"))
_RENDER_FILL = rq.Struct(
    rq.Card8("opcode"), rq.Card8("minor"), rq.RequestLength(), rq.Card8("op"), rq.Pad(3),
    rq.Resource("dst"), rq.Card16("red"), rq.Card16("green"), rq.Card16("blue"),
    rq.Card16("alpha"), rq.List("rects", rq.Struct(rq.Int16("x"), rq.Int16("y"),
                                                   rq.Card16("width"), rq.Card16("height"))))
_RENDER_QUERY_FORMATS = rq.Struct(
    rq.ReplyCode(), rq.Pad(1), rq.Card16("sequence_number"), rq.ReplyLength(),
    rq.Card32("num_formats"), rq.Card32("num_screens"), rq.Card32("num_depths"),
    rq.Card32("num_visuals"), rq.Card32("num_subpixel"), rq.Pad(4))
_PRESENT_PIXMAP = rq.Struct(
    rq.Card8("opcode"), rq.Card8("minor"), rq.RequestLength(), rq.Window("window"),
    rq.Pixmap("pixmap"), rq.Card32("serial"), rq.Card32("valid"), rq.Card32("update"),
    rq.Int16("x_off"), rq.Int16("y_off"), rq.Card32("target_crtc"), rq.Card32("wait_fence"),
    rq.Card32("idle_fence"), rq.Card32("options"), rq.Pad(4), rq.Card32("target_msc_hi"),
    rq.Card32("target_msc_lo"), rq.Card32("divisor_hi"), rq.Card32("divisor_lo"),
    rq.Card32("remainder_hi"), rq.Card32("remainder_lo"))
_PRESENT_GENERIC = rq.Struct(rq.Pad(2), rq.Card32("event_id"), rq.Window("window"))
_XKB_USE = rq.Struct(rq.Card8("opcode"), rq.Card8("minor"), rq.RequestLength(),
                     rq.Card16("wanted_major"), rq.Card16("wanted_minor"))
_XKB_USE_REPLY = rq.Struct(rq.ReplyCode(), rq.Bool("supported"), rq.Card16("sequence_number"),
                           rq.ReplyLength(), rq.Card16("server_major"), rq.Card16("server_minor"),
                           rq.Pad(20))
_XKB_EVENT = rq.Struct(rq.Card8("type"), rq.Card8("xkb_type"), rq.Card16("sequence_number"),
                       rq.Card32("time"), rq.Card8("device_id"), rq.Pad(23))
_XI2_HEADER = rq.Struct(rq.Card16("deviceid"), rq.Card32("time"))
_XI2_RAW = rq.Struct(rq.Card16("deviceid"), rq.Card32("time"), rq.Card32("detail"),
                     rq.Card16("sourceid"), rq.Card16("valuators_len"), rq.Card32("flags"))
_XI2_ENTER = rq.Struct(
    rq.Card16("deviceid"), rq.Card32("time"), rq.Card16("sourceid"), rq.Card8("mode"),
    rq.Card8("detail"), rq.Window("root"), rq.Window("event"), rq.Window("child"),
    xinput.FP1616("root_x"), xinput.FP1616("root_y"), xinput.FP1616("event_x"),
    xinput.FP1616("event_y"), rq.Bool("same_screen"), rq.Bool("focus"),
    rq.Card16("buttons_len"))
_EXT_ERROR = rq.Struct(rq.Card8("type"), rq.Card8("code"), rq.Card16("sequence_number"),
                       rq.Card32("bad_value"), rq.Card16("minor_opcode"),
                       rq.Card8("major_opcode"), rq.Pad(21))


def _build_extensions() -> dict[str, ExtensionSpec]:
    specs = [
        ExtensionSpec("BIG-REQUESTS", _minors("Enable*"),
                      layouts={0: (_HEADER_REQUEST, _BIGREQ_REPLY)}),
        ExtensionSpec("XC-MISC", _minors("GetVersion* GetXIDRange* GetXIDList*"),
                      layouts={0: (_HEADER_REQUEST, _XCMISC_VERSION),
                               1: (_HEADER_REQUEST, _XCMISC_RANGE)}),
        ExtensionSpec("MIT-SHM", _minors("QueryVersion* Attach Detach PutImage GetImage* "
                                         "CreatePixmap AttachFd CreateSegment*"),
                      events={0: "Completion"}, errors=["BadSeg"],
                      layouts={0: (_HEADER_REQUEST, _SHM_VERSION), 1: (_SHM_ATTACH, None),
                               3: (_SHM_PUTIMAGE, None)},
                      event_layouts={0: _SHM_COMPLETION}),
        ExtensionSpec("SHAPE", _minors("QueryVersion* Rectangles Mask Combine Offset "
                                       "QueryExtents* SelectInput InputSelected* "
                                       "GetRectangles*"),
                      events={0: "Notify"},
                      # python-xlib's SHAPE QueryVersion request lacks its minor opcode
                      layouts={**_xlib_layouts(shape),
                               0: (_HEADER_REQUEST, shape.QueryVersion._reply)},
                      event_layouts={0: shape.NotifyEventData._fields}),
        ExtensionSpec("XFIXES", _minors(
            "QueryVersion* ChangeSaveSet SelectSelectionInput SelectCursorInput "
            "GetCursorImage* CreateRegion CreateRegionFromBitmap CreateRegionFromWindow "
            "CreateRegionFromGC CreateRegionFromPicture DestroyRegion SetRegion CopyRegion "
            "UnionRegion IntersectRegion SubtractRegion InvertRegion TranslateRegion "
            "RegionExtents FetchRegion* SetGCClipRegion SetWindowShapeRegion "
            "SetPictureClipRegion SetCursorName GetCursorName* GetCursorImageAndName* "
            "ChangeCursor ChangeCursorByName ExpandRegion HideCursor ShowCursor "
            "CreatePointerBarrier DeletePointerBarrier SetClientDisconnectMode "
            "GetClientDisconnectMode*"),
                      events={0: "SelectionNotify", 1: "CursorNotify"}, errors=["BadRegion"],
                      layouts={**_xlib_layouts(xfixes), 5: (_XFIXES_REGION_RECTS, None),
                               10: (_XFIXES_REGION, None), 11: (_XFIXES_REGION_RECTS, None)},
                      event_layouts={0: xfixes.SelectionNotify._fields,
                                     1: xfixes.DisplayCursorNotify._fields}),
        ExtensionSpec("RENDER", _minors(
            "QueryVersion* QueryPictFormats* QueryPictIndexValues* QueryDithers CreatePicture "
            "ChangePicture SetPictureClipRectangles FreePicture Composite Scale Trapezoids "
            "Triangles TriStrip TriFan ColorTrapezoids ColorTriangles Transform "
            "CreateGlyphSet ReferenceGlyphSet FreeGlyphSet AddGlyphs AddGlyphsFromPicture "
            "FreeGlyphs CompositeGlyphs8 CompositeGlyphs16 CompositeGlyphs32 FillRectangles "
            "CreateCursor SetPictureTransform QueryFilters* SetPictureFilter CreateAnimCursor "
            "AddTraps CreateSolidFill CreateLinearGradient CreateRadialGradient "
            "CreateConicalGradient"),
                      errors=["BadPictFormat", "BadPicture", "BadPictOp", "BadGlyphSet",
                              "BadGlyph"],
                      layouts={0: (_VERSION_REQUEST, _VERSION_REPLY),
                               1: (_HEADER_REQUEST, _RENDER_QUERY_FORMATS),
                               4: (_RENDER_CREATE_PICTURE, None),
                               7: (_RENDER_FREE_PICTURE, None),
                               8: (_RENDER_COMPOSITE, None),
                               26: (_RENDER_FILL, None)}),
        ExtensionSpec("RANDR", _minors(
            "QueryVersion* - SetScreenConfig* - SelectInput GetScreenInfo* "
            "GetScreenSizeRange* SetScreenSize GetScreenResources* GetOutputInfo* "
            "ListOutputProperties* QueryOutputProperty* ConfigureOutputProperty "
            "ChangeOutputProperty DeleteOutputProperty GetOutputProperty* CreateMode* "
            "DestroyMode AddOutputMode DeleteOutputMode GetCrtcInfo* SetCrtcConfig* "
            "GetCrtcGammaSize* GetCrtcGamma* SetCrtcGamma GetScreenResourcesCurrent* "
            "SetCrtcTransform GetCrtcTransform* GetPanning* SetPanning* SetOutputPrimary "
            "GetOutputPrimary* GetProviders* GetProviderInfo* SetProviderOffloadSink "
            "SetProviderOutputSource ListProviderProperties* QueryProviderProperty* "
            "ConfigureProviderProperty ChangeProviderProperty DeleteProviderProperty "
            "GetProviderProperty* GetMonitors* SetMonitor DeleteMonitor CreateLease* "
            "FreeLease"),
                      events={0: "ScreenChangeNotify",
                              1: {0: "CrtcChangeNotify", 1: "OutputChangeNotify",
                                  2: "OutputPropertyNotify", 3: "ProviderChangeNotify",
                                  4: "ProviderPropertyNotify", 5: "ResourceChangeNotify",
                                  6: "LeaseNotify"}},
                      errors=["BadOutput", "BadCrtc", "BadMode", "BadProvider"],
                      layouts=_xlib_layouts(randr),
                      event_layouts={0: randr.ScreenChangeNotify._fields,
                                     (1, 0): randr.CrtcChangeNotify._fields,
                                     (1, 1): randr.OutputChangeNotify._fields,
                                     (1, 2): randr.OutputPropertyNotify._fields}),
        ExtensionSpec("XInputExtension", _minors(
            "GetExtensionVersion* ListInputDevices* OpenDevice* CloseDevice SetDeviceMode* "
            "SelectExtensionEvent GetSelectedExtensionEvents* ChangeDeviceDontPropagateList "
            "GetDeviceDontPropagateList* GetDeviceMotionEvents* ChangeKeyboardDevice* "
            "ChangePointerDevice* GrabDevice* UngrabDevice GrabDeviceKey UngrabDeviceKey "
            "GrabDeviceButton UngrabDeviceButton AllowDeviceEvents GetDeviceFocus* "
            "SetDeviceFocus GetFeedbackControl* ChangeFeedbackControl GetDeviceKeyMapping* "
            "ChangeDeviceKeyMapping GetDeviceModifierMapping* SetDeviceModifierMapping* "
            "GetDeviceButtonMapping* SetDeviceButtonMapping* QueryDeviceState* "
            "SendExtensionEvent DeviceBell SetDeviceValuators* GetDeviceControl* "
            "ChangeDeviceControl* ListDeviceProperties* ChangeDeviceProperty "
            "DeleteDeviceProperty GetDeviceProperty* XIQueryPointer* XIWarpPointer "
            "XIChangeCursor XIChangeHierarchy XISetClientPointer XIGetClientPointer* "
            "XISelectEvents XIQueryVersion* XIQueryDevice* XISetFocus XIGetFocus* "
            "XIGrabDevice* XIUngrabDevice XIAllowEvents XIPassiveGrabDevice* "
            "XIPassiveUngrabDevice XIListProperties* XIChangeProperty XIDeleteProperty "
            "XIGetProperty* XIGetSelectedEvents* XIBarrierReleasePointer", 1),
                      events=dict(enumerate(
                          ["DeviceValuator", "DeviceKeyPress", "DeviceKeyRelease", "DeviceButtonPress", "DeviceButtonRelease", "DeviceMotionNotify", "DeviceFocusIn", "DeviceFocusOut", "ProximityIn", "ProximityOut", "DeviceStateNotify", "DeviceMappingNotify", "ChangeDeviceNotify", "DeviceKeyStateNotify", "DeviceButtonStateNotify", "DevicePresenceNotify", "DevicePropertyNotify"])),
                      errors=["BadDevice", "BadEvent", "BadMode", "DeviceBusy", "BadClass"],
                      generic=_XI2_EVENTS, layouts=_xlib_layouts(xinput),
                      generic_layouts={
                          1: xinput.DeviceChangedEventData,
                          **{k: xinput.DeviceEventData for k in (2, 3, 4, 5, 6, 18, 19, 20)},
                          7: _XI2_ENTER, 8: _XI2_ENTER, 9: _XI2_ENTER, 10: _XI2_ENTER,
                          11: xinput.HierarchyEventData, 12: xinput.PropertyEventData,
                          **{k: _XI2_RAW for k in (13, 14, 15, 16, 17, 22, 23, 24)},
                      }),
        ExtensionSpec("Composite", _minors(
            "QueryVersion* RedirectWindow RedirectSubwindows UnredirectWindow "
            "UnredirectSubwindows CreateRegionFromBorderClip NameWindowPixmap "
            "GetOverlayWindow* ReleaseOverlayWindow"), layouts=_xlib_layouts(composite)),
        ExtensionSpec("DAMAGE", _minors("QueryVersion* Create Destroy Subtract Add"),
                      events={0: "Notify"}, errors=["BadDamage"],
                      layouts=_xlib_layouts(damage),
                      event_layouts={0: damage.DamageNotify._fields}),
        ExtensionSpec("Present", _minors("QueryVersion* Pixmap NotifyMSC SelectInput "
                                         "QueryCapabilities* PixmapSynced"),
                      generic={0: "ConfigureNotify", 1: "CompleteNotify", 2: "IdleNotify",
                               3: "RedirectNotify"},
                      layouts={0: (_VERSION_REQUEST, _VERSION_REPLY),
                               1: (_PRESENT_PIXMAP, None)},
                      generic_layouts={k: _PRESENT_GENERIC for k in range(4)}),
        ExtensionSpec("XKEYBOARD", {**_minors(
            "UseExtension* SelectEvents - Bell GetState* LatchLockState GetControls* "
            "SetControls GetMap* SetMap GetCompatMap* SetCompatMap GetIndicatorState* "
            "GetIndicatorMap* SetIndicatorMap GetNamedIndicator* SetNamedIndicator "
            "GetNames* SetNames - - PerClientFlags* ListComponents* GetKbdByName* "
            "GetDeviceInfo* SetDeviceInfo"), 101: ("SetDebuggingFlags", True)},
                      events={0: dict(enumerate(
                          ["NewKeyboardNotify", "MapNotify", "StateNotify", "ControlsNotify", "IndicatorStateNotify", "IndicatorMapNotify", "NamesNotify", "CompatMapNotify", "BellNotify", "ActionMessage", "AccessXNotify", "ExtensionDeviceNotify"]))},
                      errors=["BadKeyboard"],
                      layouts={0: (_XKB_USE, _XKB_USE_REPLY)},
                      event_layouts={0: _XKB_EVENT}),
        ExtensionSpec("SYNC", _minors(
            "Initialize* ListSystemCounters* CreateCounter SetCounter ChangeCounter "
            "QueryCounter* DestroyCounter Await CreateAlarm ChangeAlarm QueryAlarm* "
            "SetPriority GetPriority* DestroyAlarm CreateFence TriggerFence ResetFence "
            "DestroyFence QueryFence* AwaitFence"),
                      events={0: "CounterNotify", 1: "AlarmNotify"},
                      errors=["BadCounter", "BadAlarm", "BadFence"]),
        ExtensionSpec("XTEST", _minors("GetVersion* CompareCursor* FakeInput GrabControl")),
        ExtensionSpec("Generic Event Extension", _minors("QueryVersion*")),
        ExtensionSpec("XINERAMA", _minors("QueryVersion* GetState* GetScreenCount* "
                                          "GetScreenSize* IsActive* QueryScreens*")),
    ]
    return {s.name: s for s in specs}


EXTENSIONS: dict[str, ExtensionSpec] = _build_extensions()

_CORE_REQUESTS: dict[int, Any] = dict(xrequest.major_codes)
#: Per major opcode: 1 for a core request that has a reply, 0 for one that has none (and for
#: extension opcodes: see `extension_replies`).
CORE_REPLIES = bytes(1 if getattr(_CORE_REQUESTS.get(op), "_reply", None) is not None else 0
                     for op in range(256))


def request_name(op: int, minor: int, extension: str | None) -> str:
    """A request's name from its opcodes and, for an extension's (op >= 128), the name of the
    extension that has that major opcode on this connection (None when unknown)."""
    if op < FIRST_EXTENSION_OPCODE:
        cls = _CORE_REQUESTS.get(op)
        return cls.__name__ if cls is not None else f"Request{op}"
    if extension is None:
        return f"Extension{op}:{minor}"
    spec = EXTENSIONS.get(extension)
    known = spec.requests.get(minor) if spec is not None else None
    return f"{extension}:{known[0] if known else minor}"


def _may_reply(spec: ExtensionSpec | None, minor: int) -> bool:
    """Whether an extension's request may have a reply: it has one, or the minor or the whole
    extension is not known here (then it is kept until a later sequence number shows up)."""
    known = spec.requests.get(minor) if spec is not None else None
    return known[1] if known else True


def extension_replies(extension: str) -> bytes:
    """Per minor opcode of `extension`: 1 when the request may have a reply, else 0."""
    spec = EXTENSIONS.get(extension)
    return bytes(_may_reply(spec, minor) for minor in range(256))


#: Requests answered by a series of replies (besides ListFontsWithInfo, which marks its last):
#: kept pending until a later sequence number shows up.
_MULTI_REPLY = frozenset({"RECORD:EnableContext"})
_CORE_EVENTS: dict[int, Any] = dict(xevent.event_class)


def _resource_names(layouts: Any) -> None:
    seen: set[int] = set()

    def walk(s: Any) -> None:
        if not isinstance(s, rq.Struct) or id(s) in seen:
            return
        seen.add(id(s))
        for f in s.fields:
            if isinstance(f, rq.Resource) and f.name:
                RESOURCE_FIELDS.add(f.name)
            walk(getattr(f, "type", None))

    for s in layouts:
        walk(s)


_resource_names([*(c._request for c in _CORE_REQUESTS.values()),
                 *(getattr(c, "_reply", None) for c in _CORE_REQUESTS.values()),
                 *(c._fields for c in _CORE_EVENTS.values()),
                 *(s for spec in EXTENSIONS.values() for pair in spec.layouts.values()
                   for s in pair),
                 *(s for spec in EXTENSIONS.values() for s in spec.event_layouts.values()),
                 *(s for spec in EXTENSIONS.values() for s in spec.generic_layouts.values())])


#: Message bytes as the decoder walks them: a bulk tail is a view, not a copy.
Buffer = bytes | bytearray | memoryview

#: Whether to decode a message's fields: always, never, or as a filter on its name says.
Want = bool | Callable[[str], bool]


#: Requests awaiting replies that are remembered, the oldest forgotten first (its reply is
#: then named UnknownReply): a client that sends faster than it reads cannot grow this.
#: The server's 16-bit sequence numbers cannot tell further ones apart anyway.
MAX_PENDING = 1 << 16


@dataclass(slots=True)
class _Pending:
    name: str
    reply: rq.Struct | None
    time: float
    detail: Any = None
    replied: bool = False


@dataclass(frozen=True, slots=True)
class _Ext:
    name: str
    major: int
    first_event: int
    first_error: int
    spec: ExtensionSpec | None


class Decoder:
    """Per-connection decoding state; see the module docstring."""

    def __init__(self, endian: str = "<") -> None:
        self.endian = endian
        self.pending: dict[int, _Pending] = {}
        self.by_major: dict[int, _Ext] = {}
        self.extensions: dict[str, _Ext] = {}
        self._event_bases: list[_Ext] = []
        self._error_bases: list[_Ext] = []
        self.atoms: dict[int, str] = dict(PREDEFINED_ATOMS)

    # -- public ------------------------------------------------------------------------------

    def add_extension(self, name: str, major: int, first_event: int = 0,
                      first_error: int = 0) -> None:
        ext = _Ext(name, major, first_event, first_error, EXTENSIONS.get(name))
        self.extensions[name] = ext
        self.by_major[major] = ext
        if first_event:
            self._event_bases = sorted(
                (e for e in self.extensions.values() if e.first_event), key=lambda e: -e.first_event)
        if first_error:
            self._error_bases = sorted(
                (e for e in self.extensions.values() if e.first_error), key=lambda e: -e.first_error)

    def decode(self, direction: str, seq: int, msg: bytes, now: float = 0.0,
               fields: Want = True) -> Decoded:
        """Name and (when `fields`, or when `fields(name)` says so) fields of one whole
        message. Never raises."""
        try:
            if direction == "request":
                return self._request(seq, msg, now, fields)
            if direction == "reply":
                return self._reply(seq, msg, now, fields)
            if direction == "event":
                return self._event(seq, msg, fields)
            if direction == "error":
                return self._error(seq, msg, fields)
            if direction == "setup":
                return self._setup(msg, fields)
            if direction == "setup-reply":
                return self._setup_reply(msg, fields)
            return Decoded(direction, seq, "Unknown", {"length": len(msg)}, len(msg))
        except Exception as err:  # noqa: BLE001 - the decoder must never take the relay down
            return Decoded(direction, seq, "Undecodable",
                           {"error": f"{type(err).__name__}: {err}", "length": len(msg)},
                           len(msg))

    def request_name(self, msg: bytes) -> str:
        op = msg[0]
        ext = self.by_major.get(op)
        return request_name(op, msg[1] if len(msg) > 1 else 0,
                            ext.name if ext is not None else None)

    # -- messages ----------------------------------------------------------------------------

    def _request(self, seq: int, msg: bytes, now: float, want: Want) -> Decoded:
        e = self.endian
        op = msg[0]
        size = len(msg)
        name = self.request_name(msg)
        tracing = want is not False  # (atom names are learned for any trace, filtered or not)
        if type(want) is not bool:
            want = want(name)
        layout: rq.Struct | None = None
        reply: rq.Struct | None = None
        has_reply = False
        if op < FIRST_EXTENSION_OPCODE:
            cls = _CORE_REQUESTS.get(op)
            if cls is not None:
                layout = cls._request
                reply = getattr(cls, "_reply", None)
                has_reply = reply is not None
        else:
            ext = self.by_major.get(op)
            minor = msg[1] if size > 1 else 0
            spec = ext.spec if ext is not None else None
            has_reply = _may_reply(spec, minor)
            if spec is not None:
                layout, reply = spec.layouts.get(minor, (None, None))
        detail = None
        out: dict[str, Any] = {}
        body = msg
        if size >= 8 and msg[2] == 0 and msg[3] == 0:
            body = msg[:4] + msg[8:]  # BIG-REQUESTS: drop the extended length
            if want:
                out["big_request"] = True
        if op == QUERY_EXTENSION or op == GET_ATOM_NAME or (op == INTERN_ATOM and tracing):
            parsed = self._fields(xrequest.major_codes[op]._request, body, e, "request")
            detail = parsed.get("name") if op != GET_ATOM_NAME else parsed.get("atom")
            if want:
                out.update(parsed)
        elif want:
            if layout is not None:
                out.update(self._fields(layout, body, e, "request"))
            else:
                out["length"] = size
        if has_reply:
            pending = self.pending
            pending[seq] = _Pending(name, reply, now, detail)
            if len(pending) > MAX_PENDING:
                del pending[next(iter(pending))]
        for k in ("opcode", "minor"):
            out.pop(k, None)
        return Decoded("request", seq, name, out, size)

    def _prune(self, seq: int) -> None:
        pending = self.pending
        while pending:
            first = next(iter(pending))
            if first >= seq:
                break
            del pending[first]

    def _reply(self, seq: int, msg: bytes, now: float, want: Want) -> Decoded:
        self._prune(seq)
        p = self.pending.get(seq)
        size = len(msg)
        if p is None:
            want = want if type(want) is bool else want("UnknownReply")
            return Decoded("reply", seq, "UnknownReply", {"length": size} if want else {}, size)
        latency = None
        if not p.replied:
            p.replied = True
            latency = now - p.time
        if p.name == "ListFontsWithInfo":
            if size > 1 and msg[1] == 0:  # the last reply has a name of length 0
                del self.pending[seq]
        elif p.name not in _MULTI_REPLY:
            del self.pending[seq]
        out: dict[str, Any] = {}
        name = p.name
        if type(want) is not bool:
            want = want(name)
        if name == "QueryExtension" and size >= 12:
            present, major, first_event, first_error = msg[8], msg[9], msg[10], msg[11]
            if present:
                self.add_extension(str(p.detail), major, first_event, first_error)
            if want:
                out = {"present": bool(present), "major_opcode": major,
                       "first_event": first_event, "first_error": first_error,
                       "name": p.detail}
            return Decoded("reply", seq, name, out, size, latency)
        if want or name in ("InternAtom", "GetAtomName"):
            if p.reply is not None:
                out = self._fields(p.reply, msg, self.endian, "reply")
                out.pop("sequence_number", None)
            else:
                out = {"length": size}
            if name == "InternAtom" and out.get("atom") and isinstance(p.detail, str):
                self.atoms[out["atom"]] = p.detail
            elif name == "GetAtomName" and isinstance(p.detail, int) and "name" in out:
                self.atoms[p.detail] = out["name"]
        return Decoded("reply", seq, name, out, size, latency)

    def _event(self, seq: int, msg: bytes, want: Want) -> Decoded:
        self._prune(seq)
        e = self.endian
        code = msg[0] & EVENT_CODE_MASK
        size = len(msg)
        head: dict[str, Any] = {}  # fields before the layout's
        bare: dict[str, Any] = {}  # what stands for the layout's fields when it has none
        body = msg
        layout: rq.Struct | None
        if code == GENERIC_EVENT:
            ext = self.by_major.get(msg[1])
            (evtype,) = struct.unpack_from(e + "H", msg, 8)
            spec = ext.spec if ext is not None else None
            ename = spec.generic.get(evtype) if spec is not None else None
            extname = ext.name if ext is not None else f"Extension{msg[1]}"
            name = f"{extname}:{ename or evtype}"
            layout = spec.generic_layouts.get(evtype) if spec is not None else None
            head = {"evtype": evtype}
            body = msg[10:]
        elif code in _CORE_EVENTS:
            cls = _CORE_EVENTS[code]
            name, layout = cls.__name__, cls._fields
        else:
            name, layout = self._ext_event(code, msg)
            bare = {"code": code}
        if type(want) is not bool:
            want = want(name)
        out: dict[str, Any] = {}
        if want:
            out = head | (self._fields(layout, body, e, "event") if layout is not None
                          else {**bare, "length": size})
            out.pop("type", None)
            out.pop("sequence_number", None)
            if msg[0] & 0x80:
                out["send_event"] = True
        return Decoded("event", seq, name, out, size)

    def _ext_event(self, code: int, msg: bytes) -> tuple[str, rq.Struct | None]:
        for ext in self._event_bases:
            if code >= ext.first_event:
                offset = code - ext.first_event
                spec = ext.spec
                if spec is None or offset not in spec.events:
                    if spec is not None and spec.events and offset > max(spec.events):
                        break
                    return f"{ext.name}:{offset}", None
                ename = spec.events[offset]
                if isinstance(ename, dict):
                    sub = msg[1]
                    layout = spec.event_layouts.get((offset, sub), spec.event_layouts.get(offset))
                    return f"{ext.name}:{ename.get(sub, f'{offset}.{sub}')}", layout
                return f"{ext.name}:{ename}", spec.event_layouts.get(offset)
        return f"Event{code}", None

    def _error(self, seq: int, msg: bytes, want: Want) -> Decoded:
        self._prune(seq)
        self.pending.pop(seq, None)
        code = msg[1]
        name = None
        if code < len(_CORE_ERRORS):
            name = _CORE_ERRORS[code]
        else:
            for ext in self._error_bases:
                if code >= ext.first_error:
                    offset = code - ext.first_error
                    errs = ext.spec.errors if ext.spec is not None else []
                    if offset < len(errs):
                        name = f"{ext.name}:{errs[offset]}"
                    elif ext.spec is None:
                        name = f"{ext.name}:Error{offset}"
                    if name is not None:
                        break
            if name is None:
                name = f"Error{code}"
        if type(want) is not bool:
            want = want(name)
        out: dict[str, Any] = {}
        if want:
            f = self._fields(_EXT_ERROR, msg, self.endian, "error")
            out = {"code": code, "bad_value": f.get("bad_value"),
                   "minor_opcode": f.get("minor_opcode"), "major_opcode": f.get("major_opcode")}
            major = f.get("major_opcode")
            if isinstance(major, int):
                minor = f.get("minor_opcode") or 0
                out["request"] = self.request_name(bytes((major, minor & 0xFF)))
        return Decoded("error", seq, name, out, len(msg))

    def _setup(self, msg: bytes, want: Want) -> Decoded:
        if msg[:1] == b"B":
            self.endian = ">"
        elif msg[:1] == b"l":
            self.endian = "<"
        out: dict[str, Any] = {}
        if type(want) is not bool:
            want = want("Setup")
        if want and len(msg) >= 12:
            e = self.endian
            major, minor, n, d = struct.unpack_from(e + "HHHH", msg, 2)
            out = {"byte_order": "MSB" if e == ">" else "LSB", "protocol_major": major,
                   "protocol_minor": minor,
                   "auth_name": bytes(msg[12 : 12 + n]).decode("latin-1"),
                   "auth_data_length": d}  # never the cookie itself
        return Decoded("setup", 0, "Setup", out, len(msg))

    def _setup_reply(self, msg: bytes, want: Want) -> Decoded:
        from .setup import parse_setup_reply

        out: dict[str, Any] = {}
        if type(want) is not bool:
            want = want("Setup")
        if want:
            r = parse_setup_reply(msg, self.endian)
            out = {"status": r.status, "protocol_major": r.major, "protocol_minor": r.minor}
            if r.status == 1:
                out.update(release=r.release, vendor=r.vendor,
                           resource_id_base=r.resource_id_base,
                           resource_id_mask=r.resource_id_mask,
                           max_request_length=r.max_request_length)
                if len(msg) >= 32:
                    out["roots"] = msg[28]
            else:
                out["reason"] = r.reason
        return Decoded("setup-reply", 0, "Setup", out, len(msg))

    # -- layouts -----------------------------------------------------------------------------

    def _fields(self, layout: rq.Struct, data: bytes, e: str, kind: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            _parse(layout, data, e, self, out)
        except Exception as err:  # noqa: BLE001 - content that does not fit, whatever the way
            out["error"] = f"{kind} does not fit its layout: {type(err).__name__}: {err}"
            out["length"] = len(data)
        return out


# --------------------------------------------------------------------------------------------
# The interpreter of python-xlib layouts, in either byte order.

_ORDER_FREE = (rq.String8, rq.String16, rq.Binary, rq.ModifierMapping, rq.TextElements8,
               xinput.ButtonState)
_INT_CODES = frozenset("bBhHiIlLqQ")


class _Plan:
    """A layout's fixed part, worked out once per layout and byte order: the struct that
    reads it, and per named field where its values are and how to turn them into JSON-ready
    values, so that decoding a message is one unpack and a loop with no type tests."""

    __slots__ = ("formats", "lengths", "size", "tail_is_binary", "unpack", "values", "var")

    def __init__(self, s: Any, e: str) -> None:
        code = e + s.static_codes[1:]
        self.unpack = struct.Struct(code).unpack_from
        self.size = struct.calcsize(code)
        values = []
        lengths = []
        formats = []
        i = 0
        for f in s.static_fields:
            n = f.structvalues
            if f.name:
                if isinstance(f, rq.LengthField):
                    lengths.append((i, f.parse_value, (f.name, *(f.other_fields or ()))))
                elif isinstance(f, rq.FormatField):
                    formats.append((f.name, i))
                else:
                    values.append((f.name, i, n, _converter(f)))
            i += n
        self.values = tuple(values)
        self.lengths = tuple(lengths)
        self.formats = tuple(formats)
        self.var = tuple(s.var_fields)
        self.tail_is_binary = len(self.var) == 1 and type(self.var[0]) is rq.Binary


def _converter(f: Any) -> Callable[[Any], Any] | None:
    """How a fixed field's value (one int, or a tuple of them, or bytes) becomes JSON-ready;
    None when it already is."""
    if isinstance(f, rq.Resource):
        return None
    if isinstance(f, rq.Bool):
        return bool
    if isinstance(f, rq.Object):
        t = f.type
        return lambda v: _static_struct(t, v if isinstance(v, tuple) else (v,))
    code = f.structcode or ""
    if "s" in code:
        return _bytes
    if f.parse_value is not None:
        pv = f.parse_value
        return lambda v: pv(v, None)
    if code and all(c in _INT_CODES or c.isdigit() for c in code):
        return None
    return _static_value  # anything else: decided by the value, as python-xlib would


def _static_value(v: Any) -> Any:
    return _bytes(v) if isinstance(v, bytes) else v


_plans: dict[tuple[int, str], _Plan] = {}


def _plan(s: Any, e: str) -> _Plan:
    key = (id(s), e)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _Plan(s, e)
    return plan


def _static_struct(s: Any, vals: tuple) -> dict[str, Any]:
    out = {}
    for name, i, n, conv in _plan(s, "<").values:  # (the values are read already)
        v = vals[i] if n == 1 else vals[i : i + n]
        out[name] = v if conv is None else conv(v)
    return out


def _parse(s: Any, data: Buffer, e: str, dec: Decoder, out: dict[str, Any]) -> Buffer:
    plan = _plan(s, e)
    size = plan.size
    if len(data) < size:
        raise _Bad(f"{len(data)} bytes, layout needs {size}")
    vals = plan.unpack(data)
    for name, i, n, conv in plan.values:
        v = vals[i] if n == 1 else vals[i : i + n]
        out[name] = v if conv is None else conv(v)
    if not plan.var:
        rest = data[size:]
        return bytes(rest) if type(rest) is memoryview else rest
    lengths: dict[str, Any] = {}
    for i, parse_value, names in plan.lengths:
        v = vals[i] if parse_value is None else parse_value(vals[i], None)
        for name in names:
            lengths[name] = v
    formats = {name: vals[i] for name, i in plan.formats}
    if plan.tail_is_binary:
        data = memoryview(data)[size:]  # image data and the like: no copy of the bulk
    else:
        data = data[size:]
    for f in plan.var:
        out[f.name], data = _var(f, data, e, lengths.get(f.name), formats.get(f.name), dec)
    return bytes(data) if type(data) is memoryview else data  # what follows, for the caller


def _var(f: Any, data: Buffer, e: str, length: Any, fmt: int | None,
         dec: Decoder) -> tuple[Any, Buffer]:
    if isinstance(f, _ORDER_FREE):
        v, rest = f.parse_binary_value(data, None, length, fmt)
        return _plain(v), rest
    if isinstance(f, rq.List):
        n = f.size if isinstance(f, rq.FixedList) else length
        v, rest = _list(f.type, data, e, n, dec)
        if f.pad:
            rest = rest[len(rest) % 4 :]
        return v, rest
    if isinstance(f, rq.Object):
        sub: dict[str, Any] = {}
        rest = _parse(f.type, data, e, dec, sub)
        return sub, rest
    if isinstance(f, rq.PropertyData):
        fmt = fmt or 0
        if fmt not in (0, 8, 16, 32):
            raise _Bad(f"property format {fmt}")
        if fmt == 0:
            return None, data
        unit = fmt // 8
        if isinstance(f, rq.FixedPropertyData):
            length = f.size // unit
        elif length is None:
            length = len(data) // unit
        length = int(length)
        raw = data[: length * unit]
        if len(raw) < length * unit:
            raise _Bad("property data shorter than its length")
        if fmt == 8:
            value: Any = _text(raw)
            rest = data[length + (-length % 4) :]
        else:
            value = _ints(raw, e, "H" if fmt == 16 else "I", length)
            rest = data[unit * (length + (length % 2 if fmt == 16 else 0)) :]
        return {"format": fmt, "data": value}, rest
    if isinstance(f, rq.ValueList):
        (mask,) = struct.unpack_from(e + f.maskcode.decode()[1:], data)
        data = data[f.maskcodelen :]
        values: dict[str, Any] = {}
        vf: Any
        for vf, flag in f.fields:
            if mask & flag:
                if len(data) < 4:
                    raise _Bad("value list shorter than its mask")
                (word,) = struct.unpack_from(e + "I", data)
                sc = vf.structcode
                if sc and sc in "bhl":
                    bits = struct.calcsize(sc) * 8
                    word &= (1 << bits) - 1
                    if word >> (bits - 1):
                        word -= 1 << bits
                elif sc and sc in "BH":
                    word &= (1 << (struct.calcsize(sc) * 8)) - 1
                values[vf.name] = bool(word) if isinstance(vf, rq.Bool) else word
                data = data[4:]
        return values, data
    if isinstance(f, rq.KeyboardMapping):
        per = fmt or 1
        count = length if length is not None else len(data) // (4 * per)
        ints = _ints(data[: 4 * count * per], e, "I", count * per, cap=False)
        rows = [ints[i : i + per] for i in range(0, len(ints), per)]
        return _cap(rows), data[4 * count * per :]
    if isinstance(f, rq.EventField):
        ev = dec._event(0, bytes(data[:32]), True) if len(data) >= 32 else None
        if ev is None:
            raise _Bad("event field shorter than 32 bytes")
        return {"name": ev.name, **ev.fields}, data[32:]
    if e == "<":  # a layout of python-xlib's own, for the host byte order only
        v, rest = f.parse_binary_value(data, None, length, fmt)
        return _plain(v), rest
    raise _Bad(f"no big-endian decoding for {type(f).__name__}")


def _list(t: Any, data: Buffer, e: str, n: Any, dec: Decoder) -> tuple[list[Any], Buffer]:
    if n is not None:
        n = int(n)
    sc = getattr(t, "structcode", None)
    if sc is not None:
        code = e + sc
        slen = struct.calcsize(code)
        count = len(data) // slen if n is None else n
        if count * slen > len(data):
            raise _Bad(f"list of {count} items of {slen} bytes in {len(data)} bytes")
        keep = min(count, MAX_ITEMS)
        items: list[Any] = []
        one = t.structvalues == 1
        is_struct = isinstance(t, rq.Struct)
        for v in struct.iter_unpack(code, data[: keep * slen]):
            if is_struct:
                items.append(_static_struct(t, v))
            elif one:
                items.append(v[0])
            else:
                items.append(list(v))
        if count > keep:
            items.append(f"...{count - keep} more")
        return items, data[count * slen :]
    items = []
    parse_one: Any
    if isinstance(t, rq.Struct):
        def parse_one(d: Buffer) -> tuple[Any, Buffer]:
            sub: dict[str, Any] = {}
            return sub, _parse(t, d, e, dec, sub)
    elif isinstance(t, rq.StrClass):
        def parse_one(d: Buffer) -> tuple[Any, Buffer]:
            k = d[0] + 1
            if len(d) < k:
                raise _Bad("string longer than the data")
            return _text(d[1:k]), d[k:]
    elif isinstance(t, xinput.ClassInfoClass):
        def parse_one(d: Buffer) -> tuple[Any, Buffer]:
            ctype, clen = struct.unpack_from(e + "HH", d)
            sub: dict[str, Any] = {}
            _parse(xinput.INFO_CLASSES.get(ctype, xinput.AnyInfo), d, e, dec, sub)
            if clen == 0:
                raise _Bad("device class of length 0")
            return sub, d[clen * 4 :]
    elif e == "<":
        def parse_one(d: Buffer) -> tuple[Any, Buffer]:
            v, rest = t.parse_binary(d, None)
            return _plain(v), rest
    else:
        raise _Bad(f"no big-endian decoding for {type(t).__name__}")
    i = 0
    while (n is None and data) or (n is not None and i < n):
        v, data = parse_one(data)
        if i < MAX_ITEMS:
            items.append(v)
        i += 1
    if i > MAX_ITEMS:
        items.append(f"...{i - MAX_ITEMS} more")
    return items, data


def _ints(raw: Buffer, e: str, code: str, count: int, cap: bool = True) -> list[Any]:
    keep = min(count, MAX_ITEMS) if cap else count
    a = array(code)
    if a.itemsize != struct.calcsize(code):
        a = array("L" if code == "I" else code)
    a.frombytes(bytes(raw[: keep * a.itemsize]))
    if e == ">":
        a.byteswap()
    out: list[Any] = a.tolist()
    if count > keep:
        out.append(f"...{count - keep} more")
    return out


def _cap(items: list[Any]) -> list[Any]:
    if len(items) > MAX_ITEMS:
        return items[:MAX_ITEMS] + [f"...{len(items) - MAX_ITEMS} more"]
    return items


def _text(raw: Buffer) -> str:
    s = bytes(raw[:MAX_TEXT]).decode("latin-1")
    return s if len(raw) <= MAX_TEXT else s + f"...({len(raw)} bytes)"


def _bytes(raw: Buffer) -> str:
    s = bytes(raw[:MAX_BYTES]).hex()
    return s if len(raw) <= MAX_BYTES else s + f"...({len(raw)} bytes)"


def _plain(v: Any) -> Any:
    """python-xlib's parse results as JSON-ready values."""
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _bytes(v)
    if isinstance(v, rq.DictWrapper):
        return {k: _plain(x) for k, x in v._data.items()}
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, array)):
        return _cap([_plain(x) for x in v])
    if isinstance(v, xinput.ButtonMask):
        return v._value
    return repr(v)
