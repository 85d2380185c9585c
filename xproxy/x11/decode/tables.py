"""What the decoder knows of each message: the names of core and extension requests, events
and errors, and their field layouts (python-xlib's `rq.Struct` declarations, plus the layouts
python-xlib does not declare for the messages seen most). Tables only: built once at import,
never changed after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from Xlib import Xatom
from Xlib.ext import composite, damage, randr, shape, xfixes, xinput
from Xlib.protocol import event as xevent
from Xlib.protocol import request as xrequest
from Xlib.protocol import rq
from Xlib.protocol import structs as _structs

from ..opcodes import FIRST_EXTENSION_OPCODE

__all__ = [
    "CORE_ERRORS",
    "CORE_EVENTS",
    "CORE_REPLIES",
    "CORE_REQUESTS",
    "EXTENSIONS",
    "EXTENSION_ERROR",
    "MULTI_REPLY",
    "PREDEFINED_ATOMS",
    "ExtensionSpec",
    "extension_replies",
    "may_reply",
    "request_name",
]

PREDEFINED_ATOMS: dict[int, str] = {
    v: k for k, v in vars(Xatom).items() if k.isupper() and isinstance(v, int) and 0 < v < 69
}

CORE_ERRORS = ["Success", "BadRequest", "BadValue", "BadWindow", "BadPixmap", "BadAtom",
                "BadCursor", "BadFont", "BadMatch", "BadDrawable", "BadAccess", "BadAlloc",
                "BadColor", "BadGC", "BadIDChoice", "BadName", "BadLength",
                "BadImplementation"]

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
EXTENSION_ERROR = rq.Struct(rq.Card8("type"), rq.Card8("code"), rq.Card16("sequence_number"),
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
        # GLX's minors 1-35 are GLX's own requests, 101-166 the single GL commands sent
        # outside Render (xcb-proto glx.xml).
        ExtensionSpec("GLX", {**_minors(
            "Render RenderLarge CreateContext DestroyContext MakeCurrent* IsDirect* "
            "QueryVersion* WaitGL WaitX CopyContext SwapBuffers UseXFont CreateGLXPixmap "
            "GetVisualConfigs* DestroyGLXPixmap VendorPrivate VendorPrivateWithReply* "
            "QueryExtensionsString* QueryServerString* ClientInfo GetFBConfigs* CreatePixmap "
            "DestroyPixmap CreateNewContext QueryContext* MakeContextCurrent* CreatePbuffer "
            "DestroyPbuffer GetDrawableAttributes* ChangeDrawableAttributes CreateWindow "
            "DeleteWindow SetClientInfoARB CreateContextAttribsARB SetClientInfo2ARB", 1),
                               **_minors(
            "NewList EndList DeleteLists GenLists* FeedbackBuffer SelectBuffer RenderMode* "
            "Finish* PixelStoref PixelStorei ReadPixels* GetBooleanv* GetClipPlane* "
            "GetDoublev* GetError* GetFloatv* GetIntegerv* GetLightfv* GetLightiv* GetMapdv* "
            "GetMapfv* GetMapiv* GetMaterialfv* GetMaterialiv* GetPixelMapfv* GetPixelMapuiv* "
            "GetPixelMapusv* GetPolygonStipple* GetString* GetTexEnvfv* GetTexEnviv* "
            "GetTexGendv* GetTexGenfv* GetTexGeniv* GetTexImage* GetTexParameterfv* "
            "GetTexParameteriv* GetTexLevelParameterfv* GetTexLevelParameteriv* IsEnabled* "
            "IsList* Flush AreTexturesResident* DeleteTextures GenTextures* IsTexture* "
            "GetColorTable* GetColorTableParameterfv* GetColorTableParameteriv* "
            "GetConvolutionFilter* GetConvolutionParameterfv* GetConvolutionParameteriv* "
            "GetSeparableFilter* GetHistogram* GetHistogramParameterfv* "
            "GetHistogramParameteriv* GetMinmax* GetMinmaxParameterfv* GetMinmaxParameteriv* "
            "GetCompressedTexImageARB* DeleteQueriesARB GenQueriesARB* IsQueryARB* "
            "GetQueryivARB* GetQueryObjectivARB* GetQueryObjectuivARB*", 101)},
                      events={0: "PbufferClobber", 1: "BufferSwapComplete"},
                      errors=["BadContext", "BadContextState", "BadDrawable", "BadPixmap",
                              "BadContextTag", "BadCurrentWindow", "BadRenderRequest",
                              "BadLargeRequest", "UnsupportedPrivateRequest", "BadFBConfig",
                              "BadPbuffer", "BadCurrentDrawable", "BadWindow",
                              "GLXBadProfileARB"]),
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

CORE_REQUESTS: dict[int, Any] = dict(xrequest.major_codes)
#: Per major opcode: 1 for a core request that has a reply, 0 for one that has none (and for
#: extension opcodes: see `extension_replies`).
CORE_REPLIES = bytes(1 if getattr(CORE_REQUESTS.get(op), "_reply", None) is not None else 0
                     for op in range(256))


def request_name(op: int, minor: int, extension: str | None) -> str:
    """A request's name from its opcodes and, for an extension's (op >= 128), the name of the
    extension that has that major opcode on this connection (None when unknown)."""
    if op < FIRST_EXTENSION_OPCODE:
        cls = CORE_REQUESTS.get(op)
        return cls.__name__ if cls is not None else f"Request{op}"
    if extension is None:
        return f"Extension{op}:{minor}"
    spec = EXTENSIONS.get(extension)
    known = spec.requests.get(minor) if spec is not None else None
    return f"{extension}:{known[0] if known else minor}"


def may_reply(spec: ExtensionSpec | None, minor: int) -> bool:
    """Whether an extension's request may have a reply: it has one, or the minor or the whole
    extension is not known here (then it is kept until a later sequence number shows up)."""
    known = spec.requests.get(minor) if spec is not None else None
    return known[1] if known else True


def extension_replies(extension: str) -> bytes:
    """Per minor opcode of `extension`: 1 when the request may have a reply, else 0."""
    spec = EXTENSIONS.get(extension)
    return bytes(may_reply(spec, minor) for minor in range(256))


#: Requests answered by a series of replies (besides ListFontsWithInfo, which marks its last):
#: kept pending until a later sequence number shows up.
MULTI_REPLY = frozenset({"RECORD:EnableContext"})
#: Core event code -> python-xlib's event class.
CORE_EVENTS: dict[int, Any] = dict(xevent.event_class)
