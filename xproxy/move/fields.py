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

#: Field kinds: a resource id, an atom, a visual id, a server timestamp.
RES, ATOM, VISUAL, TIME = "r", "a", "v", "t"

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

#: Extensions a movable display lets clients see, with how many event and error codes each
#: takes. Everything else is hidden (QueryExtension answers absent).
MOVABLE_EXTENSIONS: Final = {BIG_REQUESTS: (0, 0), SHAPE: (1, 0)}
