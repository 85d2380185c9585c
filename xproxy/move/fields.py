"""Where resource ids, atoms, visuals and timestamps sit in core X11 messages (X11 protocol,
"Encoding"), and in the SHAPE extension's: the tables a moved client's messages are rewritten
by. Offsets count from the start of the message; every field listed is 32 bits. A few
requests have fields that need more than an offset (value lists under a mask, property data,
PolyText font shifts, SendEvent's event); those are named in SPECIAL_REQUESTS and handled in
mapping.py. tests/xproxy/test_move_core.py checks the resource offsets against
python-xlib's layouts (the decode package's source of truth).
"""

from __future__ import annotations

from typing import Final

from ..x11 import opcodes as op

#: Field kinds: a resource id, an atom, a visual id, a server timestamp, a RENDER PictFormat.
RES, ATOM, VISUAL, TIME, FORMAT = "r", "a", "v", "t", "f"

Fields = tuple[tuple[int, str], ...]

_W4: Fields = ((4, RES),)
_DRAW_GC: Fields = ((4, RES), (8, RES))

#: Core requests: opcode -> fixed fields.
REQUEST_FIELDS: Final[dict[int, Fields]] = {
    op.CREATE_WINDOW: ((4, RES), (8, RES), (24, VISUAL)),
    op.CHANGE_WINDOW_ATTRIBUTES: _W4,
    op.GET_WINDOW_ATTRIBUTES: _W4,
    op.DESTROY_WINDOW: _W4,
    op.DESTROY_SUB_WINDOWS: _W4,
    op.CHANGE_SAVE_SET: _W4,
    op.REPARENT_WINDOW: ((4, RES), (8, RES)),
    op.MAP_WINDOW: _W4,
    op.MAP_SUBWINDOWS: _W4,
    op.UNMAP_WINDOW: _W4,
    op.UNMAP_SUBWINDOWS: _W4,
    op.CONFIGURE_WINDOW: _W4,
    op.CIRCULATE_WINDOW: _W4,
    op.GET_GEOMETRY: _W4,
    op.QUERY_TREE: _W4,
    op.GET_ATOM_NAME: ((4, ATOM),),
    op.CHANGE_PROPERTY: ((4, RES), (8, ATOM), (12, ATOM)),
    op.DELETE_PROPERTY: ((4, RES), (8, ATOM)),
    op.GET_PROPERTY: ((4, RES), (8, ATOM), (12, ATOM)),
    op.LIST_PROPERTIES: _W4,
    op.SET_SELECTION_OWNER: ((4, RES), (8, ATOM), (12, TIME)),
    op.GET_SELECTION_OWNER: ((4, ATOM),),
    op.CONVERT_SELECTION: ((4, RES), (8, ATOM), (12, ATOM), (16, ATOM), (20, TIME)),
    op.SEND_EVENT: _W4,
    op.GRAB_POINTER: ((4, RES), (12, RES), (16, RES), (20, TIME)),
    op.UNGRAB_POINTER: ((4, TIME),),
    op.GRAB_BUTTON: ((4, RES), (12, RES), (16, RES)),
    op.UNGRAB_BUTTON: _W4,
    op.CHANGE_ACTIVE_POINTER_GRAB: ((4, RES), (8, TIME)),
    op.GRAB_KEYBOARD: ((4, RES), (8, TIME)),
    op.UNGRAB_KEYBOARD: ((4, TIME),),
    op.GRAB_KEY: _W4,
    op.UNGRAB_KEY: _W4,
    op.ALLOW_EVENTS: ((4, TIME),),
    op.QUERY_POINTER: _W4,
    op.GET_MOTION_EVENTS: ((4, RES), (8, TIME), (12, TIME)),
    op.TRANSLATE_COORDS: ((4, RES), (8, RES)),
    op.WARP_POINTER: ((4, RES), (8, RES)),
    op.SET_INPUT_FOCUS: ((4, RES), (8, TIME)),
    op.OPEN_FONT: _W4,
    op.CLOSE_FONT: _W4,
    op.QUERY_FONT: _W4,
    op.QUERY_TEXT_EXTENTS: _W4,
    op.CREATE_PIXMAP: ((4, RES), (8, RES)),
    op.FREE_PIXMAP: _W4,
    op.CREATE_GC: ((4, RES), (8, RES)),
    op.CHANGE_GC: _W4,
    op.COPY_GC: ((4, RES), (8, RES)),
    op.SET_DASHES: _W4,
    op.SET_CLIP_RECTANGLES: _W4,
    op.FREE_GC: _W4,
    op.CLEAR_AREA: _W4,
    op.COPY_AREA: ((4, RES), (8, RES), (12, RES)),
    op.COPY_PLANE: ((4, RES), (8, RES), (12, RES)),
    op.POLY_POINT: _DRAW_GC,
    op.POLY_LINE: _DRAW_GC,
    op.POLY_SEGMENT: _DRAW_GC,
    op.POLY_RECTANGLE: _DRAW_GC,
    op.POLY_ARC: _DRAW_GC,
    op.FILL_POLY: _DRAW_GC,
    op.POLY_FILL_RECTANGLE: _DRAW_GC,
    op.POLY_FILL_ARC: _DRAW_GC,
    op.PUT_IMAGE: _DRAW_GC,
    op.GET_IMAGE: _W4,
    op.POLY_TEXT8: _DRAW_GC,
    op.POLY_TEXT16: _DRAW_GC,
    op.IMAGE_TEXT8: _DRAW_GC,
    op.IMAGE_TEXT16: _DRAW_GC,
    op.CREATE_COLORMAP: ((4, RES), (8, RES), (12, VISUAL)),
    op.FREE_COLORMAP: _W4,
    op.COPY_COLORMAP_AND_FREE: ((4, RES), (8, RES)),
    op.INSTALL_COLORMAP: _W4,
    op.UNINSTALL_COLORMAP: _W4,
    op.LIST_INSTALLED_COLORMAPS: _W4,
    op.ALLOC_COLOR: _W4,
    op.ALLOC_NAMED_COLOR: _W4,
    op.ALLOC_COLOR_CELLS: _W4,
    op.ALLOC_COLOR_PLANES: _W4,
    op.FREE_COLORS: _W4,
    op.STORE_COLORS: _W4,
    op.STORE_NAMED_COLOR: _W4,
    op.QUERY_COLORS: _W4,
    op.LOOKUP_COLOR: _W4,
    op.CREATE_CURSOR: ((4, RES), (8, RES), (12, RES)),
    op.CREATE_GLYPH_CURSOR: ((4, RES), (8, RES), (12, RES)),
    op.FREE_CURSOR: _W4,
    op.RECOLOR_CURSOR: _W4,
    op.QUERY_BEST_SIZE: _W4,
    op.KILL_CLIENT: _W4,
    op.ROTATE_PROPERTIES: _W4,
}

#: Requests with fields past the fixed ones (mapping.py handles each).
SPECIAL_REQUESTS: Final = frozenset({
    op.CREATE_WINDOW, op.CHANGE_WINDOW_ATTRIBUTES, op.CONFIGURE_WINDOW, op.CHANGE_PROPERTY,
    op.SEND_EVENT, op.CREATE_GC, op.CHANGE_GC, op.POLY_TEXT8, op.POLY_TEXT16,
    op.ROTATE_PROPERTIES,
})

#: Where a value list starts (its mask is the 32-bit word before it; ConfigureWindow's is 16).
VALUE_LIST_AT: Final = {op.CREATE_WINDOW: 32, op.CHANGE_WINDOW_ATTRIBUTES: 12,
                        op.CREATE_GC: 16, op.CHANGE_GC: 12, op.CONFIGURE_WINDOW: 12}
#: Value-list bits that hold a resource id: window attributes background-pixmap,
#: border-pixmap, colormap, cursor; GC tile, stipple, font, clip-mask; ConfigureWindow sibling.
WINDOW_VALUE_RESOURCES: Final = frozenset({0, 2, 13, 14})
GC_VALUE_RESOURCES: Final = frozenset({10, 11, 14, 19})
CONFIGURE_VALUE_RESOURCES: Final = frozenset({5})
VALUE_RESOURCES: Final = {op.CREATE_WINDOW: WINDOW_VALUE_RESOURCES,
                          op.CHANGE_WINDOW_ATTRIBUTES: WINDOW_VALUE_RESOURCES,
                          op.CREATE_GC: GC_VALUE_RESOURCES, op.CHANGE_GC: GC_VALUE_RESOURCES,
                          op.CONFIGURE_WINDOW: CONFIGURE_VALUE_RESOURCES}
#: Window attribute bit of the event mask (ChangeWindowAttributes / CreateWindow).
EVENT_MASK_BIT: Final = 11

#: Core events: code -> fixed fields.
_INPUT: Fields = ((4, TIME), (8, RES), (12, RES), (16, RES))
_EV_WIN: Fields = ((4, RES), (8, RES))
EVENT_FIELDS: Final[dict[int, Fields]] = {
    op.KEY_PRESS: _INPUT, op.KEY_RELEASE: _INPUT, op.BUTTON_PRESS: _INPUT,
    op.BUTTON_RELEASE: _INPUT, op.MOTION_NOTIFY: _INPUT, op.ENTER_NOTIFY: _INPUT,
    op.LEAVE_NOTIFY: _INPUT,
    op.FOCUS_IN: ((4, RES),), op.FOCUS_OUT: ((4, RES),),
    op.EXPOSE: ((4, RES),), op.GRAPHICS_EXPOSE: ((4, RES),), op.NO_EXPOSE: ((4, RES),),
    op.VISIBILITY_NOTIFY: ((4, RES),),
    op.CREATE_NOTIFY: _EV_WIN, op.DESTROY_NOTIFY: _EV_WIN, op.UNMAP_NOTIFY: _EV_WIN,
    op.MAP_NOTIFY: _EV_WIN, op.MAP_REQUEST: _EV_WIN,
    op.REPARENT_NOTIFY: ((4, RES), (8, RES), (12, RES)),
    op.CONFIGURE_NOTIFY: ((4, RES), (8, RES), (12, RES)),
    op.CONFIGURE_REQUEST: ((4, RES), (8, RES), (12, RES)),
    op.GRAVITY_NOTIFY: _EV_WIN, op.RESIZE_REQUEST: ((4, RES),),
    op.CIRCULATE_NOTIFY: _EV_WIN, op.CIRCULATE_REQUEST: _EV_WIN,
    op.PROPERTY_NOTIFY: ((4, RES), (8, ATOM), (12, TIME)),
    op.SELECTION_CLEAR: ((4, TIME), (8, RES), (12, ATOM)),
    op.SELECTION_REQUEST: ((4, TIME), (8, RES), (12, RES), (16, ATOM), (20, ATOM), (24, ATOM)),
    op.SELECTION_NOTIFY: ((4, TIME), (8, RES), (12, ATOM), (16, ATOM), (20, ATOM)),
    op.COLORMAP_NOTIFY: ((4, RES), (8, RES)),
    op.CLIENT_MESSAGE: ((4, RES), (8, ATOM)),
}

#: Core replies: the request's opcode -> fixed fields of its reply.
REPLY_FIELDS: Final[dict[int, Fields]] = {
    op.GET_WINDOW_ATTRIBUTES: ((8, VISUAL), (28, RES)),
    op.GET_GEOMETRY: ((8, RES),),
    op.QUERY_TREE: ((8, RES), (12, RES)),
    op.INTERN_ATOM: ((8, ATOM),),
    op.GET_PROPERTY: ((8, ATOM),),
    op.GET_SELECTION_OWNER: ((8, RES),),
    op.QUERY_POINTER: ((8, RES), (12, RES)),
    op.TRANSLATE_COORDS: ((8, RES),),
    op.GET_INPUT_FOCUS: ((8, RES),),
    op.GET_IMAGE: ((8, VISUAL),),
}
#: Replies with a list of ids or atoms after the header: opcode -> (count offset, count
#: size in bytes, kind); the list starts at 32. (GetMotionEvents' list is of time+x+y.)
REPLY_LISTS: Final[dict[int, tuple[int, int, str]]] = {
    op.QUERY_TREE: (16, 2, RES),
    op.LIST_PROPERTIES: (8, 2, ATOM),
    op.LIST_INSTALLED_COLORMAPS: (8, 2, RES),
}

#: Core requests that get a reply (X11 protocol; python-xlib's request classes with _reply).
def _with_reply() -> frozenset[int]:
    from Xlib.protocol import request

    return frozenset(code for code, cls in request.major_codes.items()
                     if hasattr(cls, "_reply"))


REPLY_REQUESTS: Final = _with_reply()

#: Errors whose 32-bit bad value is a resource id, and BadAtom's.
RESOURCE_ERRORS: Final = frozenset({3, 4, 6, 7, 9, 12, 13, 14})
BAD_ATOM: Final = 5

#: Property types whose format-32 data is a list of atoms, or of resource ids (ICCCM).
ATOM_TYPE = 4
ID_TYPES: Final = frozenset({33, 20, 18, 6, 21})  # WINDOW, PIXMAP, FONT, CURSOR, DRAWABLE
#: Predefined atoms (1-68) are the same on every server.
LAST_PREDEFINED_ATOM = 68

# -- SHAPE (version 1.1): minor opcode -> fixed fields --------------------------------------
SHAPE = "SHAPE"
BIG_REQUESTS = "BIG-REQUESTS"
SHAPE_QUERY_VERSION, SHAPE_RECTANGLES, SHAPE_MASK, SHAPE_COMBINE, SHAPE_OFFSET = 0, 1, 2, 3, 4
SHAPE_QUERY_EXTENTS, SHAPE_SELECT_INPUT, SHAPE_INPUT_SELECTED, SHAPE_GET_RECTANGLES = 5, 6, 7, 8
SHAPE_REQUEST_FIELDS: Final[dict[int, Fields]] = {
    SHAPE_RECTANGLES: ((8, RES),),
    SHAPE_MASK: ((8, RES), (16, RES)),
    SHAPE_COMBINE: ((8, RES), (16, RES)),
    SHAPE_OFFSET: ((8, RES),),
    SHAPE_QUERY_EXTENTS: ((4, RES),),
    SHAPE_SELECT_INPUT: ((4, RES),),
    SHAPE_INPUT_SELECTED: ((4, RES),),
    SHAPE_GET_RECTANGLES: ((4, RES),),
}
SHAPE_REPLY_REQUESTS: Final = frozenset({SHAPE_QUERY_VERSION, SHAPE_QUERY_EXTENTS,
                                         SHAPE_INPUT_SELECTED, SHAPE_GET_RECTANGLES})
#: ShapeNotify: window at 4, server time at 16.
SHAPE_EVENT_FIELDS: Fields = ((4, RES), (16, TIME))

# -- RENDER (version 0.11): minor opcode -> fixed fields ------------------------------------
RENDER = "RENDER"
(RENDER_QUERY_VERSION, RENDER_QUERY_PICT_FORMATS, RENDER_QUERY_PICT_INDEX_VALUES) = 0, 1, 2
RENDER_CREATE_PICTURE, RENDER_CHANGE_PICTURE, RENDER_SET_PICTURE_CLIP_RECTANGLES = 4, 5, 6
RENDER_FREE_PICTURE, RENDER_COMPOSITE, RENDER_TRAPEZOIDS, RENDER_TRIANGLES = 7, 8, 10, 11
RENDER_TRI_STRIP, RENDER_TRI_FAN = 12, 13
RENDER_CREATE_GLYPH_SET, RENDER_REFERENCE_GLYPH_SET, RENDER_FREE_GLYPH_SET = 17, 18, 19
RENDER_ADD_GLYPHS, RENDER_FREE_GLYPHS = 20, 22
RENDER_COMPOSITE_GLYPHS8, RENDER_COMPOSITE_GLYPHS16, RENDER_COMPOSITE_GLYPHS32 = 23, 24, 25
RENDER_FILL_RECTANGLES, RENDER_CREATE_CURSOR, RENDER_SET_PICTURE_TRANSFORM = 26, 27, 28
RENDER_QUERY_FILTERS, RENDER_SET_PICTURE_FILTER, RENDER_CREATE_ANIM_CURSOR = 29, 30, 31
RENDER_ADD_TRAPS, RENDER_CREATE_SOLID_FILL, RENDER_CREATE_LINEAR_GRADIENT = 32, 33, 34
RENDER_CREATE_RADIAL_GRADIENT, RENDER_CREATE_CONICAL_GRADIENT = 35, 36
_PIC4: Fields = ((4, RES),)
_TRAPS: Fields = ((8, RES), (12, RES), (16, FORMAT))  # op, src, dst, mask format
RENDER_REQUEST_FIELDS: Final[dict[int, Fields]] = {
    RENDER_QUERY_PICT_INDEX_VALUES: ((4, FORMAT),),
    RENDER_CREATE_PICTURE: ((4, RES), (8, RES), (12, FORMAT)),
    RENDER_CHANGE_PICTURE: _PIC4,
    RENDER_SET_PICTURE_CLIP_RECTANGLES: _PIC4,
    RENDER_FREE_PICTURE: _PIC4,
    RENDER_COMPOSITE: ((8, RES), (12, RES), (16, RES)),
    RENDER_TRAPEZOIDS: _TRAPS, RENDER_TRIANGLES: _TRAPS, RENDER_TRI_STRIP: _TRAPS,
    RENDER_TRI_FAN: _TRAPS,
    RENDER_CREATE_GLYPH_SET: ((4, RES), (8, FORMAT)),
    RENDER_REFERENCE_GLYPH_SET: ((4, RES), (8, RES)),
    RENDER_FREE_GLYPH_SET: _PIC4,
    RENDER_ADD_GLYPHS: _PIC4,
    RENDER_FREE_GLYPHS: _PIC4,
    RENDER_COMPOSITE_GLYPHS8: (*_TRAPS, (20, RES)),
    RENDER_COMPOSITE_GLYPHS16: (*_TRAPS, (20, RES)),
    RENDER_COMPOSITE_GLYPHS32: (*_TRAPS, (20, RES)),
    RENDER_FILL_RECTANGLES: ((8, RES),),
    RENDER_CREATE_CURSOR: ((4, RES), (8, RES)),
    RENDER_SET_PICTURE_TRANSFORM: _PIC4,
    RENDER_QUERY_FILTERS: _PIC4,
    RENDER_SET_PICTURE_FILTER: _PIC4,
    RENDER_CREATE_ANIM_CURSOR: _PIC4,
    RENDER_ADD_TRAPS: _PIC4,
    RENDER_CREATE_SOLID_FILL: _PIC4,
    RENDER_CREATE_LINEAR_GRADIENT: _PIC4,
    RENDER_CREATE_RADIAL_GRADIENT: _PIC4,
    RENDER_CREATE_CONICAL_GRADIENT: _PIC4,
}
RENDER_REPLY_REQUESTS: Final = frozenset({RENDER_QUERY_VERSION, RENDER_QUERY_PICT_FORMATS,
                                          RENDER_QUERY_PICT_INDEX_VALUES, RENDER_QUERY_FILTERS})
#: Where a picture value list starts (CreatePicture, ChangePicture), and the value bits
#: that hold ids: alpha-map (a picture) and clip-mask (a pixmap).
PICTURE_VALUES_AT: Final = {RENDER_CREATE_PICTURE: 20, RENDER_CHANGE_PICTURE: 12}
PICTURE_VALUE_RESOURCES: Final = frozenset({1, 6})
PICTURE_CLIP_MASK_BIT = 6
#: RENDER errors: PictFormat, Picture, PictOp, GlyphSet, Glyph; their bad value's kind.
RENDER_ERROR_KINDS: Final = {0: FORMAT, 1: RES, 3: RES}

# -- XFIXES (version 6): minor opcode -> fixed fields ---------------------------------------
XFIXES = "XFIXES"
XFIXES_QUERY_VERSION, XFIXES_SELECT_SELECTION_INPUT, XFIXES_SELECT_CURSOR_INPUT = 0, 2, 3
XFIXES_CREATE_REGION, XFIXES_CREATE_REGION_FROM_PICTURE, XFIXES_DESTROY_REGION = 5, 9, 10
XFIXES_FETCH_REGION, XFIXES_SET_GC_CLIP_REGION, XFIXES_SET_WINDOW_SHAPE_REGION = 19, 20, 21
XFIXES_SET_PICTURE_CLIP_REGION, XFIXES_SET_CURSOR_NAME = 22, 23
_R4: Fields = ((4, RES),)
_R48: Fields = ((4, RES), (8, RES))
_R4812: Fields = ((4, RES), (8, RES), (12, RES))
XFIXES_REQUEST_FIELDS: Final[dict[int, Fields]] = {
    1: ((8, RES),),  # ChangeSaveSet
    XFIXES_SELECT_SELECTION_INPUT: ((4, RES), (8, ATOM)),
    XFIXES_SELECT_CURSOR_INPUT: _R4,
    XFIXES_CREATE_REGION: _R4, 6: _R48, 7: _R48, 8: _R48, XFIXES_CREATE_REGION_FROM_PICTURE: _R48,
    XFIXES_DESTROY_REGION: _R4, 11: _R4, 12: _R48, 13: _R4812, 14: _R4812, 15: _R4812,
    16: ((4, RES), (16, RES)), 17: _R4, 18: _R48, XFIXES_FETCH_REGION: _R4,
    XFIXES_SET_GC_CLIP_REGION: _R48, XFIXES_SET_WINDOW_SHAPE_REGION: ((4, RES), (16, RES)),
    XFIXES_SET_PICTURE_CLIP_REGION: _R48, XFIXES_SET_CURSOR_NAME: _R4, 24: _R4, 26: _R48,
    27: _R4, 28: _R48, 29: _R4, 30: _R4, 31: _R48, 32: _R4,
}
#: CreateRegion, CreateRegionFromBitmap/Window/GC/Picture: make a region (id at 4).
XFIXES_CREATES_REGION: Final = frozenset(range(XFIXES_CREATE_REGION,
                                               XFIXES_CREATE_REGION_FROM_PICTURE + 1))
XFIXES_REPLY_REQUESTS: Final = frozenset({XFIXES_QUERY_VERSION, 4, XFIXES_FETCH_REGION, 24, 25,
                                          34})
#: GetCursorName's and GetCursorImageAndName's replies name the cursor by an atom.
XFIXES_REPLY_FIELDS: Final[dict[int, Fields]] = {24: ((8, ATOM),), 25: ((24, ATOM),)}
#: XFixesSelectionNotify (window, owner, selection, time, selection time) and
#: XFixesCursorNotify (window, cursor serial, time, name).
XFIXES_EVENT_FIELDS: Final[dict[int, Fields]] = {
    0: ((4, RES), (8, RES), (12, ATOM), (16, TIME), (20, TIME)),
    1: ((4, RES), (12, TIME), (16, ATOM)),
}

# -- XKEYBOARD (version 1.0): minor opcode -> fixed fields ------------------------------------
XKB = "XKEYBOARD"
XKB_USE_EXTENSION, XKB_SELECT_EVENTS, XKB_BELL, XKB_PER_CLIENT_FLAGS = 0, 1, 3, 21
XKB_GET_NAMED_INDICATOR, XKB_SET_NAMED_INDICATOR = 15, 16
XKB_REQUEST_FIELDS: Final[dict[int, Fields]] = {
    XKB_BELL: ((20, ATOM), (24, RES)),
    XKB_GET_NAMED_INDICATOR: ((12, ATOM),),
    XKB_SET_NAMED_INDICATOR: ((12, ATOM),),
}
XKB_REPLY_REQUESTS: Final = frozenset({0, 4, 6, 8, 10, 12, 13, 15, 17, 19, 21, 22, 23, 24, 101})
XKB_REPLY_FIELDS: Final[dict[int, Fields]] = {XKB_GET_NAMED_INDICATOR: ((8, ATOM),)}
#: XKB's events share one code, told apart by the xkbType byte; each has the time at 4, and
#: XkbBellNotify (8) a name at 16 and a window at 20.
XKB_EVENT_TIME: Fields = ((4, TIME),)
XKB_EVENT_FIELDS: Final[dict[int, Fields]] = {8: ((4, TIME), (16, ATOM), (20, RES))}

# -- XInputExtension (version 2.4): minor opcode -> fixed fields ------------------------------
XI = "XInputExtension"
XI_GET_EXTENSION_VERSION = 1  # XI 1: the one request of XI 1 a client may use and move
XI_QUERY_POINTER, XI_WARP_POINTER, XI_CHANGE_CURSOR, XI_SET_CLIENT_POINTER = 40, 41, 42, 44
XI_GET_CLIENT_POINTER, XI_SELECT_EVENTS, XI_QUERY_VERSION, XI_QUERY_DEVICE = 45, 46, 47, 48
XI_SET_FOCUS, XI_GET_FOCUS, XI_GRAB_DEVICE, XI_UNGRAB_DEVICE = 49, 50, 51, 52
XI_ALLOW_EVENTS, XI_PASSIVE_GRAB_DEVICE, XI_PASSIVE_UNGRAB_DEVICE = 53, 54, 55
XI_LIST_PROPERTIES, XI_CHANGE_PROPERTY, XI_DELETE_PROPERTY, XI_GET_PROPERTY = 56, 57, 58, 59
XI_GET_SELECTED_EVENTS, XI_BARRIER_RELEASE_POINTER = 60, 61
#: XI 2 requests (XI2proto.h). XIAllowEvents' grab window (at 16) came with XI 2.2.
XI_REQUEST_FIELDS: Final[dict[int, Fields]] = {
    XI_QUERY_POINTER: _W4,
    XI_WARP_POINTER: ((4, RES), (8, RES)),
    XI_CHANGE_CURSOR: ((4, RES), (8, RES)),
    XI_SET_CLIENT_POINTER: _W4,
    XI_GET_CLIENT_POINTER: _W4,
    XI_SELECT_EVENTS: _W4,
    XI_SET_FOCUS: ((4, RES), (8, TIME)),
    XI_GRAB_DEVICE: ((4, RES), (8, TIME), (12, RES)),
    XI_UNGRAB_DEVICE: ((4, TIME),),
    XI_ALLOW_EVENTS: ((4, TIME), (16, RES)),
    XI_PASSIVE_GRAB_DEVICE: ((4, TIME), (8, RES), (12, RES)),
    XI_PASSIVE_UNGRAB_DEVICE: _W4,
    XI_CHANGE_PROPERTY: ((8, ATOM), (12, ATOM)),
    XI_DELETE_PROPERTY: ((8, ATOM),),
    XI_GET_PROPERTY: ((8, ATOM), (12, ATOM)),
    XI_GET_SELECTED_EVENTS: _W4,
}
XI_REPLY_REQUESTS: Final = frozenset({
    XI_GET_EXTENSION_VERSION, 2, 3, 5, 7, 9, 10, 11, 12, 13, 20, 22, 24, 26, 27, 28, 29, 30,
    33, 34, 35, 36, 39, XI_QUERY_POINTER, XI_GET_CLIENT_POINTER, XI_QUERY_VERSION,
    XI_QUERY_DEVICE, XI_GET_FOCUS, XI_GRAB_DEVICE, XI_PASSIVE_GRAB_DEVICE, XI_LIST_PROPERTIES,
    XI_GET_PROPERTY, XI_GET_SELECTED_EVENTS})
#: XIQueryPointer's reply: root and child; XIGetFocus': the focus; XIGetProperty's: its type.
XI_REPLY_FIELDS: Final[dict[int, Fields]] = {
    XI_QUERY_POINTER: ((8, RES), (12, RES)),
    XI_GET_FOCUS: ((8, RES),),
    XI_GET_PROPERTY: ((8, ATOM),),
}
#: XI 2 events come as GenericEvent (code 35; the extension's major opcode at 1, the event
#: type at 8, the time at 12): event type -> fixed fields. Device, enter/leave/focus, touch
#: ownership, gesture and barrier events have root, event and child (barrier: the barrier,
#: an XFIXES id) at 20, 24, 28; a property event the device property's atom at 16.
XI_EVENT_TYPE_AT = 8
_XI_TIME: Fields = ((12, TIME),)
_XI_WINDOWS: Fields = ((12, TIME), (20, RES), (24, RES), (28, RES))
XI_EVENT_FIELDS: Final[dict[int, Fields]] = {
    1: _XI_TIME, 11: _XI_TIME, 12: ((12, TIME), (16, ATOM)),
    **dict.fromkeys((*range(2, 11), *range(18, 22), 25, 26, *range(27, 33)), _XI_WINDOWS),
    **dict.fromkeys((*range(13, 18), 22, 23, 24), _XI_TIME),
}
#: DeviceChanged events (type 1) list the device's classes from 32 (their count at 16), as
#: XIQueryDevice's reply does per device: valuator and button classes name labels by atoms.
XI_DEVICE_CHANGED = 1
XI_BUTTON_CLASS, XI_VALUATOR_CLASS = 1, 2
#: XI 1 events and errors: 17 event codes (IEVENTS), 5 error codes (IERRORS).
XI_EVENTS, XI_ERRORS = 17, 5

#: Extensions a movable display lets clients see, with how many event and error codes each
#: takes. Everything else is hidden (QueryExtension answers absent).
MOVABLE_EXTENSIONS: Final = {BIG_REQUESTS: (0, 0), SHAPE: (1, 0), RENDER: (0, 5),
                              XFIXES: (2, 2), XKB: (1, 1), XI: (XI_EVENTS, XI_ERRORS)}
#: Per extension: requests with a reply; fixed fields of requests, replies and events (by
#: event index); the kind of an error's bad value (by error index).
EXTENSION_REPLY_REQUESTS: Final = {SHAPE: SHAPE_REPLY_REQUESTS, BIG_REQUESTS: frozenset({0}),
                                   RENDER: RENDER_REPLY_REQUESTS, XFIXES: XFIXES_REPLY_REQUESTS,
                                   XKB: XKB_REPLY_REQUESTS, XI: XI_REPLY_REQUESTS}
EXTENSION_REQUEST_FIELDS: Final = {SHAPE: SHAPE_REQUEST_FIELDS, RENDER: RENDER_REQUEST_FIELDS,
                                   XFIXES: XFIXES_REQUEST_FIELDS, XKB: XKB_REQUEST_FIELDS,
                                   XI: XI_REQUEST_FIELDS}
EXTENSION_REPLY_FIELDS: Final = {XFIXES: XFIXES_REPLY_FIELDS, XKB: XKB_REPLY_FIELDS,
                                 XI: XI_REPLY_FIELDS}
EXTENSION_EVENT_FIELDS: Final = {SHAPE: {0: SHAPE_EVENT_FIELDS}, XFIXES: XFIXES_EVENT_FIELDS}
#: (XFIXES: BadRegion, BadBarrier)
EXTENSION_ERROR_KINDS: Final = {RENDER: RENDER_ERROR_KINDS, XFIXES: {0: RES, 1: RES}}
