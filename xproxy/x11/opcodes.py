"""X11 core request opcodes, server message types and event codes, by name: the one table
the proxy's protocol modules use. The values are python-xlib's (its request classes in
`Xlib.protocol.request`, `Xlib.X`, `Xlib.ext.ge`), which are the X11 protocol's encoding."""

from __future__ import annotations

from typing import Any, Final

from Xlib import X
from Xlib.ext import ge
from Xlib.protocol import request

_OPCODES: dict[Any, int] = {cls: op for op, cls in request.major_codes.items()}


def _op(cls: Any) -> int:
    return _OPCODES[cls]


# -- core requests (X11 protocol, "Encoding::Requests") ------------------------------------------
CREATE_WINDOW: Final = _op(request.CreateWindow)
CHANGE_WINDOW_ATTRIBUTES: Final = _op(request.ChangeWindowAttributes)
GET_WINDOW_ATTRIBUTES: Final = _op(request.GetWindowAttributes)
DESTROY_WINDOW: Final = _op(request.DestroyWindow)
DESTROY_SUB_WINDOWS: Final = _op(request.DestroySubWindows)
CHANGE_SAVE_SET: Final = _op(request.ChangeSaveSet)
REPARENT_WINDOW: Final = _op(request.ReparentWindow)
MAP_WINDOW: Final = _op(request.MapWindow)
MAP_SUBWINDOWS: Final = _op(request.MapSubwindows)
UNMAP_WINDOW: Final = _op(request.UnmapWindow)
UNMAP_SUBWINDOWS: Final = _op(request.UnmapSubwindows)
CONFIGURE_WINDOW: Final = _op(request.ConfigureWindow)
CIRCULATE_WINDOW: Final = _op(request.CirculateWindow)
GET_GEOMETRY: Final = _op(request.GetGeometry)
QUERY_TREE: Final = _op(request.QueryTree)
INTERN_ATOM: Final = _op(request.InternAtom)
GET_ATOM_NAME: Final = _op(request.GetAtomName)
CHANGE_PROPERTY: Final = _op(request.ChangeProperty)
DELETE_PROPERTY: Final = _op(request.DeleteProperty)
GET_PROPERTY: Final = _op(request.GetProperty)
LIST_PROPERTIES: Final = _op(request.ListProperties)
SET_SELECTION_OWNER: Final = _op(request.SetSelectionOwner)
GET_SELECTION_OWNER: Final = _op(request.GetSelectionOwner)
CONVERT_SELECTION: Final = _op(request.ConvertSelection)
SEND_EVENT: Final = _op(request.SendEvent)
GRAB_POINTER: Final = _op(request.GrabPointer)
UNGRAB_POINTER: Final = _op(request.UngrabPointer)
GRAB_BUTTON: Final = _op(request.GrabButton)
UNGRAB_BUTTON: Final = _op(request.UngrabButton)
CHANGE_ACTIVE_POINTER_GRAB: Final = _op(request.ChangeActivePointerGrab)
GRAB_KEYBOARD: Final = _op(request.GrabKeyboard)
UNGRAB_KEYBOARD: Final = _op(request.UngrabKeyboard)
GRAB_KEY: Final = _op(request.GrabKey)
UNGRAB_KEY: Final = _op(request.UngrabKey)
ALLOW_EVENTS: Final = _op(request.AllowEvents)
GRAB_SERVER: Final = _op(request.GrabServer)
UNGRAB_SERVER: Final = _op(request.UngrabServer)
QUERY_POINTER: Final = _op(request.QueryPointer)
GET_MOTION_EVENTS: Final = _op(request.GetMotionEvents)
TRANSLATE_COORDS: Final = _op(request.TranslateCoords)
WARP_POINTER: Final = _op(request.WarpPointer)
SET_INPUT_FOCUS: Final = _op(request.SetInputFocus)
GET_INPUT_FOCUS: Final = _op(request.GetInputFocus)
QUERY_KEYMAP: Final = _op(request.QueryKeymap)
OPEN_FONT: Final = _op(request.OpenFont)
CLOSE_FONT: Final = _op(request.CloseFont)
QUERY_FONT: Final = _op(request.QueryFont)
QUERY_TEXT_EXTENTS: Final = _op(request.QueryTextExtents)
LIST_FONTS: Final = _op(request.ListFonts)
LIST_FONTS_WITH_INFO: Final = _op(request.ListFontsWithInfo)
SET_FONT_PATH: Final = _op(request.SetFontPath)
GET_FONT_PATH: Final = _op(request.GetFontPath)
CREATE_PIXMAP: Final = _op(request.CreatePixmap)
FREE_PIXMAP: Final = _op(request.FreePixmap)
CREATE_GC: Final = _op(request.CreateGC)
CHANGE_GC: Final = _op(request.ChangeGC)
COPY_GC: Final = _op(request.CopyGC)
SET_DASHES: Final = _op(request.SetDashes)
SET_CLIP_RECTANGLES: Final = _op(request.SetClipRectangles)
FREE_GC: Final = _op(request.FreeGC)
CLEAR_AREA: Final = _op(request.ClearArea)
COPY_AREA: Final = _op(request.CopyArea)
COPY_PLANE: Final = _op(request.CopyPlane)
POLY_POINT: Final = _op(request.PolyPoint)
POLY_LINE: Final = _op(request.PolyLine)
POLY_SEGMENT: Final = _op(request.PolySegment)
POLY_RECTANGLE: Final = _op(request.PolyRectangle)
POLY_ARC: Final = _op(request.PolyArc)
FILL_POLY: Final = _op(request.FillPoly)
POLY_FILL_RECTANGLE: Final = _op(request.PolyFillRectangle)
POLY_FILL_ARC: Final = _op(request.PolyFillArc)
PUT_IMAGE: Final = _op(request.PutImage)
GET_IMAGE: Final = _op(request.GetImage)
POLY_TEXT8: Final = _op(request.PolyText8)
POLY_TEXT16: Final = _op(request.PolyText16)
IMAGE_TEXT8: Final = _op(request.ImageText8)
IMAGE_TEXT16: Final = _op(request.ImageText16)
CREATE_COLORMAP: Final = _op(request.CreateColormap)
FREE_COLORMAP: Final = _op(request.FreeColormap)
COPY_COLORMAP_AND_FREE: Final = _op(request.CopyColormapAndFree)
INSTALL_COLORMAP: Final = _op(request.InstallColormap)
UNINSTALL_COLORMAP: Final = _op(request.UninstallColormap)
LIST_INSTALLED_COLORMAPS: Final = _op(request.ListInstalledColormaps)
ALLOC_COLOR: Final = _op(request.AllocColor)
ALLOC_NAMED_COLOR: Final = _op(request.AllocNamedColor)
ALLOC_COLOR_CELLS: Final = _op(request.AllocColorCells)
ALLOC_COLOR_PLANES: Final = _op(request.AllocColorPlanes)
FREE_COLORS: Final = _op(request.FreeColors)
STORE_COLORS: Final = _op(request.StoreColors)
STORE_NAMED_COLOR: Final = _op(request.StoreNamedColor)
QUERY_COLORS: Final = _op(request.QueryColors)
LOOKUP_COLOR: Final = _op(request.LookupColor)
CREATE_CURSOR: Final = _op(request.CreateCursor)
CREATE_GLYPH_CURSOR: Final = _op(request.CreateGlyphCursor)
FREE_CURSOR: Final = _op(request.FreeCursor)
RECOLOR_CURSOR: Final = _op(request.RecolorCursor)
QUERY_BEST_SIZE: Final = _op(request.QueryBestSize)
QUERY_EXTENSION: Final = _op(request.QueryExtension)
LIST_EXTENSIONS: Final = _op(request.ListExtensions)
CHANGE_KEYBOARD_MAPPING: Final = _op(request.ChangeKeyboardMapping)
GET_KEYBOARD_MAPPING: Final = _op(request.GetKeyboardMapping)
CHANGE_KEYBOARD_CONTROL: Final = _op(request.ChangeKeyboardControl)
GET_KEYBOARD_CONTROL: Final = _op(request.GetKeyboardControl)
BELL: Final = _op(request.Bell)
CHANGE_POINTER_CONTROL: Final = _op(request.ChangePointerControl)
GET_POINTER_CONTROL: Final = _op(request.GetPointerControl)
SET_SCREEN_SAVER: Final = _op(request.SetScreenSaver)
GET_SCREEN_SAVER: Final = _op(request.GetScreenSaver)
CHANGE_HOSTS: Final = _op(request.ChangeHosts)
LIST_HOSTS: Final = _op(request.ListHosts)
SET_ACCESS_CONTROL: Final = _op(request.SetAccessControl)
SET_CLOSE_DOWN_MODE: Final = _op(request.SetCloseDownMode)
KILL_CLIENT: Final = _op(request.KillClient)
ROTATE_PROPERTIES: Final = _op(request.RotateProperties)
FORCE_SCREEN_SAVER: Final = _op(request.ForceScreenSaver)
SET_POINTER_MAPPING: Final = _op(request.SetPointerMapping)
GET_POINTER_MAPPING: Final = _op(request.GetPointerMapping)
SET_MODIFIER_MAPPING: Final = _op(request.SetModifierMapping)
GET_MODIFIER_MAPPING: Final = _op(request.GetModifierMapping)
NO_OPERATION: Final = _op(request.NoOperation)

#: Major opcodes from here up are extensions', as QueryExtension replies assign them.
FIRST_EXTENSION_OPCODE: Final = 128

# -- server messages: the first byte is 0 for an error, 1 for a reply, else an event code ------
ERROR: Final = 0
REPLY: Final = 1
#: An event's code without the bit that marks one another client sent with SendEvent.
EVENT_CODE_MASK: Final = 0x7F

KEY_PRESS: Final[int] = X.KeyPress
KEY_RELEASE: Final[int] = X.KeyRelease
BUTTON_PRESS: Final[int] = X.ButtonPress
BUTTON_RELEASE: Final[int] = X.ButtonRelease
MOTION_NOTIFY: Final[int] = X.MotionNotify
ENTER_NOTIFY: Final[int] = X.EnterNotify
LEAVE_NOTIFY: Final[int] = X.LeaveNotify
FOCUS_IN: Final[int] = X.FocusIn
FOCUS_OUT: Final[int] = X.FocusOut
KEYMAP_NOTIFY: Final[int] = X.KeymapNotify
EXPOSE: Final[int] = X.Expose
GRAPHICS_EXPOSE: Final[int] = X.GraphicsExpose
NO_EXPOSE: Final[int] = X.NoExpose
VISIBILITY_NOTIFY: Final[int] = X.VisibilityNotify
CREATE_NOTIFY: Final[int] = X.CreateNotify
DESTROY_NOTIFY: Final[int] = X.DestroyNotify
UNMAP_NOTIFY: Final[int] = X.UnmapNotify
MAP_NOTIFY: Final[int] = X.MapNotify
MAP_REQUEST: Final[int] = X.MapRequest
REPARENT_NOTIFY: Final[int] = X.ReparentNotify
CONFIGURE_NOTIFY: Final[int] = X.ConfigureNotify
CONFIGURE_REQUEST: Final[int] = X.ConfigureRequest
GRAVITY_NOTIFY: Final[int] = X.GravityNotify
RESIZE_REQUEST: Final[int] = X.ResizeRequest
CIRCULATE_NOTIFY: Final[int] = X.CirculateNotify
CIRCULATE_REQUEST: Final[int] = X.CirculateRequest
PROPERTY_NOTIFY: Final[int] = X.PropertyNotify
SELECTION_CLEAR: Final[int] = X.SelectionClear
SELECTION_REQUEST: Final[int] = X.SelectionRequest
SELECTION_NOTIFY: Final[int] = X.SelectionNotify
COLORMAP_NOTIFY: Final[int] = X.ColormapNotify
CLIENT_MESSAGE: Final[int] = X.ClientMessage
MAPPING_NOTIFY: Final[int] = X.MappingNotify
#: The X Generic Event Extension's event: 32 bytes and 4 * length more, like a reply.
GENERIC_EVENT: Final[int] = ge.GenericEventCode

# -- visual classes (X11 protocol, VISUALTYPE) -------------------------------------------------
TRUE_COLOR: Final[int] = X.TrueColor
