"""Round-trip suppression: answer, near the application, the requests whose replies are known,
keeping every sequence number the client and the server see exact. Pure: bytes in, bytes out.

Theory of operation
-------------------
Every request is forwarded to the server, unchanged, so the server's sequence numbers are the
client's and the server's state is the same as without us (AllocColor still allocates). When a
request's reply is known (`DisplayCache`), the client gets our copy of it and the server's reply,
when it comes, is swallowed and compared byte for byte (a mismatch is logged, counted and the
cache entry dropped; `verify` mode instead delivers the server's reply and only compares).
nxcomp's other choice, a NoOperation in the request's place, would save the server a little
work, but loses that comparison, and AllocColor must be sent anyway.

Ordering. X promises that a reply to request N follows everything the server sent for requests
before N: an error for N-3 arrives before reply N, and xcb widens 16-bit sequence numbers from
the last one read and marks requests before N complete (no error) when reply N arrives. So a
known answer for N is delivered at once only when no request still unconfirmed before N could
produce an error or an event: every request after the last one the server has finished
(`done`) must itself be one of ours (known answers cannot fail and make no events). Otherwise
the answer is held until the server has finished the last unknown request before N; at worst
that is when the server's own reply to N comes, which is no slower than not suppressing.
"Finished" is learned from the server's messages: a reply or error with sequence s finishes s,
an event with sequence s finishes s - 1.

Events the server generates on its own (input, other clients' requests) while it works through
our known requests carry a sequence number below one we already answered. They are relabelled
with the last sequence number the client has seen: exactly what the server would have sent had
the event happened a moment later, and it keeps the sequence numbers a client reads monotonic.
Replies and errors are never relabelled (none can be in that range, see above).

Answers: InternAtom/GetAtomName (atoms never change for the life of the server),
QueryExtension/ListExtensions, QueryFont (for a font this connection opened by name),
ListFonts/ListFontsWithInfo, LookupColor, GetKeyboardMapping/GetModifierMapping (while a
connection that has been open since the answer was learned is still open, so any MappingNotify
would have been seen, and until one is), and AllocColor/AllocNamedColor on a screen's default
colormap when its visual is TrueColor, computed as the X.Org server computes it
(miResolveColor, then the nearest entry of the colormap's ramp in each channel), and
QueryColors on such a colormap from the same ramps; and the extension requests of
`EXT_ANSWERS` (versions, RENDER's picture formats, BIG-REQUESTS' length), whose opcodes come
from this connection's own QueryExtension answers; GetGeometry, GetWindowAttributes and
QueryTree of None with their error (None is never a resource; learnt from the server); and,
while the display host's watch vouches for them, the answers of `WATCHED`. An OpenFont of a
name that opened once is not a barrier, nor are the requests `_quiet` proves cannot fail. Everything else goes to the server. GetInputFocus is not answered: its reply
names the focus window, which other clients change without this client hearing of it.

The two streams are cut by framing.py's RequestFramer and ServerFramer (sizes, BIG-REQUESTS,
sequence numbers); the Suppressor is their hold policy (`_client_request`, `_server_header`).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..x11.errors import ClientProtocolError, ServerProtocolError
from ..x11.framing import (
    HOLD,
    MAX_HELD_REQUEST,
    PASS,
    U32,
    Buffer,
    RequestFramer,
    ServerFramer,
)
from ..x11.opcodes import (
    ALLOC_COLOR,
    ALLOC_NAMED_COLOR,
    CHANGE_KEYBOARD_CONTROL,
    CHANGE_KEYBOARD_MAPPING,
    CHANGE_PROPERTY,
    CHANGE_WINDOW_ATTRIBUTES,
    CLOSE_FONT,
    CONFIGURE_NOTIFY,
    CREATE_GC,
    CREATE_PIXMAP,
    DELETE_PROPERTY,
    ERROR,
    EVENT_CODE_MASK,
    FIRST_EXTENSION_OPCODE,
    GENERIC_EVENT,
    GET_ATOM_NAME,
    GET_GEOMETRY,
    GET_KEYBOARD_MAPPING,
    GET_MODIFIER_MAPPING,
    GET_PROPERTY,
    GET_SELECTION_OWNER,
    GET_WINDOW_ATTRIBUTES,
    GRAB_SERVER,
    INTERN_ATOM,
    LIST_EXTENSIONS,
    LIST_FONTS,
    LIST_FONTS_WITH_INFO,
    LOOKUP_COLOR,
    MAPPING_NOTIFY,
    NO_OPERATION,
    OPEN_FONT,
    PROPERTY_NOTIFY,
    QUERY_COLORS,
    QUERY_EXTENSION,
    QUERY_FONT,
    QUERY_TREE,
    REPLY,
    ROTATE_PROPERTIES,
    SELECTION_CLEAR,
    SEND_EVENT,
    SET_MODIFIER_MAPPING,
    SET_SELECTION_OWNER,
    TRUE_COLOR,
    UNGRAB_SERVER,
)
from ..x11.setup import STATUS_SUCCESS

#: Extension requests whose replies are a function of the request and of the X server alone
#: (versions, constant lists), by extension name and minor opcode. They cannot fail but with
#: BadLength, which a request identical to one the server accepted does not get. A reply may
#: also depend on the version the same connection announced first (QueryPictFormats leaves
#: out sub-pixel orders for RENDER clients below 0.6), so the connection's own minor-0
#: request to the extension is part of the key. XInput is not here: XIQueryVersion fails
#: for a client that announced another version before.
EXT_ANSWERS: dict[bytes, frozenset[int]] = {
    b"BIG-REQUESTS": frozenset({0}),  # Enable: the maximum request length
    b"RENDER": frozenset({0, 1, 29}),  # QueryVersion, QueryPictFormats, QueryFilters
    b"XKEYBOARD": frozenset({0, 21}),  # UseExtension, PerClientFlags
    b"XFIXES": frozenset({0}), b"RANDR": frozenset({0}), b"SHAPE": frozenset({0}),
    b"Composite": frozenset({0}), b"DAMAGE": frozenset({0}), b"Present": frozenset({0}),
    b"XC-MISC": frozenset({0}), b"SYNC": frozenset({0}), b"MIT-SHM": frozenset({0}),
    b"Generic Event Extension": frozenset({0}),  # QueryVersion
    b"XInputExtension": frozenset({1, 47}),  # GetExtensionVersion, XIQueryVersion
    # QueryVersion, GetVisualConfigs, QueryExtensionsString, QueryServerString, GetFBConfigs
    b"GLX": frozenset({7, 14, 18, 19, 21}),
}

#: The requests that announce a client's version of an extension, which the replies to it
#: may depend on (minor 0 but for these). RENDER and the like keep the last version
#: announced; XInput keeps the first (a later XIQueryVersion that asks for less fails), and
#: GLX's client info may matter, so for these every one of them so far is part of the key
#: (as a digest: GLX's client info carries the client's extension strings).
VERSION_REQUESTS: dict[bytes, frozenset[int]] = {
    b"XInputExtension": frozenset({1, 47}),
    b"GLX": frozenset({7, 20, 33, 35}),  # QueryVersion, ClientInfo, SetClientInfo(2)ARB
    b"XKEYBOARD": frozenset({0, 21}),  # PerClientFlags answers with the flags it leaves set
}

#: Extension requests whose replies change only when the display host's configuration does:
#: answered while the display host's export watches for those changes (export/watch.py) and
#: forgotten when it says one happened, by group. The requests that change a group (any other
#: request to the extension) forget it too, as do its events passing to any client.
#: Not here: RANDR GetScreenInfo and GetScreenResources
#: (they ask the hardware again), GetPanning and GetCrtcTransform (not seen to send one),
#: XIQueryDevice (it carries the pointer's position).
WATCHED: dict[bytes, tuple[str, frozenset[int]]] = {
    # GetScreenSizeRange, GetOutputInfo, ListOutputProperties, QueryOutputProperty,
    # GetOutputProperty, GetCrtcInfo, GetCrtcGammaSize, GetScreenResourcesCurrent,
    # GetOutputPrimary, GetMonitors
    b"RANDR": ("randr", frozenset({6, 9, 10, 11, 15, 20, 22, 25, 31, 42})),
    # GetState, GetControls, GetMap, GetCompatMap, GetIndicatorMap, GetNames
    b"XKEYBOARD": ("xkb", frozenset({4, 6, 8, 10, 13, 17})),
    # XIListProperties, XIGetProperty (device properties)
    b"XInputExtension": ("xi", frozenset({56, 59})),
}
#: Watched requests that the watch must also vouch for another group to answer: RANDR
#: GetMonitors, whose SetMonitor and DeleteMonitor send no RANDR event but a ConfigureNotify
#: of the root window, which a watch that selects StructureNotify there vouches for
#: ("monitors"; it reports the ConfigureNotify as a "randr" change).
#: XKB GetState of the core keyboard, whose answer is kept under its own group ("xkbstate",
#: which the watch reports on a StateNotify, so a modifier pressed does not forget the keymap).
WATCHED_ALSO: dict[tuple[bytes, int], str] = {(b"RANDR", 42): "monitors",
                                              (b"XKEYBOARD", 4): "xkbstate"}
#: Watched requests kept under another group than their extension's.
WATCHED_SCOPE: dict[tuple[bytes, int], str] = {(b"XKEYBOARD", 4): "xkbstate"}
#: The groups a watched extension's events, or its requests that change something, forget.
EXT_GROUPS: dict[bytes, frozenset[str]] = {
    b"RANDR": frozenset({"randr"}), b"XKEYBOARD": frozenset({"xkb", "xkbstate"}),
    b"XInputExtension": frozenset({"xi"})}
#: Watched requests that delete what they read when a flag is set: its offset. Never answered
#: with it set, and sending one forgets the group.
DELETE_FLAG: dict[tuple[bytes, int], int] = {(b"RANDR", 15): 24, (b"XInputExtension", 59): 6}
#: XInput's requests that change a device's properties or the devices (the rest change none):
#: ChangeKeyboardDevice, ChangePointerDevice, Change/Delete/GetDeviceProperty (that one may
#: delete), XIChangeHierarchy, XIChangeProperty, XIDeleteProperty, XIGetProperty.
_XI_CHANGES = frozenset({11, 12, 37, 38, 39, 43, 57, 58, 59})
#: Requests to a watched extension that change nothing it answers (the rest forget its group).
WATCHED_QUIET: dict[bytes, frozenset[int]] = {
    b"RANDR": frozenset({0, 4, 23, 27, 28, 32, 33, 36, 37, 42}),
    b"XKEYBOARD": frozenset({0, 1, 3, 4, 12, 15, 21, 22, 24}),
    b"XInputExtension": frozenset(range(256)) - _XI_CHANGES,
}
#: Answerable requests whose first argument is a window: answered only for a root window
#: (the window of another connection's id may not exist here, and the answer is BadWindow).
ROOT_ARGUMENT: frozenset[tuple[bytes, int]] = frozenset({
    (b"RENDER", 29), (b"RANDR", 6), (b"RANDR", 25), (b"RANDR", 31), (b"RANDR", 42)})
#: Answerable requests whose first argument is a device: answered only for the core keyboard,
#: by XkbUseCoreKbd or its device id (the watch selects the state events of that one).
CORE_KEYBOARD_ARGUMENT: frozenset[tuple[bytes, int]] = frozenset({(b"XKEYBOARD", 4)})
#: The extension events that say a watched group changed: RANDR's two, XKB's one (any kind).
WATCHED_EVENTS: dict[bytes, int] = {b"RANDR": 2, b"XKEYBOARD": 1}
#: The GenericEvents that say a watched group changed, by extension: XInput's
#: HierarchyChanged and PropertyEvent.
WATCHED_GENERIC: dict[bytes, tuple[str, frozenset[int]]] = {
    b"XInputExtension": ("xi", frozenset({11, 12}))}
#: The core requests that change the keyboard (XKB's group).
_KEYBOARD_CHANGES = frozenset({CHANGE_KEYBOARD_MAPPING, SET_MODIFIER_MAPPING,
                               CHANGE_KEYBOARD_CONTROL})
#: Requests that cannot fail and make no event: they are no barrier to known answers.
#: GrabServer and UngrabServer have no error; see `_quiet` for ChangeWindowAttributes.
NEVER_FAIL = frozenset({NO_OPERATION, GRAB_SERVER, UNGRAB_SERVER})
#: ChangeWindowAttributes' event-mask bit, the event bits only one client may select on a
#: window (SubstructureRedirect, ResizeRedirect, ButtonPress: BadAccess), and all event bits.
CW_EVENT_MASK = 0x800
EXCLUSIVE_EVENTS = 0x100000 | 0x40000 | 0x4
ALL_EVENTS = 0x1FFFFFF
#: RRSelectInput's ScreenChangeNotify bit: known to every RANDR version, so a mask with it is
#: never BadValue; and the RANDR minor opcode of SelectInput.
RR_SCREEN_CHANGE_MASK = 0x1
RR_SELECT_INPUT = 4
#: The longest side of a pixmap that is no barrier: X.Org refuses one over 32767 (BadAlloc),
#: and a big one may not find the memory (BadAlloc too); cursors and icons are far smaller.
MAX_PIXMAP_SIDE = 4096
#: The core event types SendEvent takes (not GenericEvent, which it refuses), ClientMessage
#: and its formats.
SEND_EVENT_TYPES = range(2, 35)
CLIENT_MESSAGE = 33
#: XkbSelectEvents (its extension name and minor opcode), the longest read whole, the core
#: keyboard's device spec, and the events it may select without a chance of an error here:
#: new-keyboard, map and state, the first and last with 16-bit details within these masks
#: (XkbAllNewKeyboardEventsMask, XkbAllStateEventsMask).
XKB_SELECT_EVENTS = (b"XKEYBOARD", 1)
MAX_XKB_SELECT = 64
XKB_USE_CORE_KBD = 0x100
#: The device specs that name the core keyboard: XkbUseCoreKbd, and its device id (the X.Org
#: server makes the virtual core pointer and keyboard first, as devices 2 and 3, for good).
XKB_CORE_KEYBOARD = frozenset({XKB_USE_CORE_KBD, 3})
XKB_QUIET_EVENTS = 0x1 | 0x2 | 0x4
XKB_EVENT_DETAILS = ((0x1, 0x7), (0x4, 0x3FFF))
#: Requests whose only argument is a window or drawable: with None (0), never a resource,
#: the server's answer is an error that depends on nothing but the request (Kind.NONE).
NONE_ERRORS = frozenset({GET_WINDOW_ATTRIBUTES, GET_GEOMETRY, QUERY_TREE})
#: CreateGC's Foreground and Background bits.
GC_FOREGROUND_BACKGROUND = 0x4 | 0x8
#: XFixesSelectSelectionInput's event bits: SetSelectionOwner, SelectionWindowDestroy,
#: SelectionClientClose.
XFIXES_SELECTION_EVENTS = 0x7
#: Bounds on the watched answers kept: the bytes of one reply, of all of them.
MAX_WATCHED_REPLY = 64 * 1024
MAX_WATCHED_BYTES = 4 * 1024 * 1024

#: Extension requests answered by a series of replies with one sequence number, and how to
#: tell the last one: RECORD's EnableContext sends replies until EndOfData (category 5).
#: The request is finished only by its last reply (as ListFontsWithInfo's), so an answer held
#: behind it is not let out between them.
MULTI_REPLY: dict[tuple[bytes, int], Callable[[int], bool]] = {
    (b"RECORD", 5): lambda category: category == 5,
}



class Kind(Enum):
    """What kind of answer a request has: how it is keyed, answered, learnt and forgotten.
    The values name the kind in the cache file and the mismatch log."""

    ATOM = "atom"  # InternAtom
    ATOM_NAME = "name"  # GetAtomName
    FONT = "font"  # QueryFont
    LIST_FONTS = "lf"
    LIST_FONTS_WITH_INFO = "lfi"
    ALLOC_COLOR = "color"
    ALLOC_NAMED_COLOR = "named"
    QUERY_COLORS = "qcolors"
    LOOKUP_COLOR = "lookup"
    EXTENSION = "ext"  # QueryExtension
    EXTENSIONS = "exts"  # ListExtensions
    KEYBOARD = "kbd"  # GetKeyboardMapping
    MODIFIERS = "mod"  # GetModifierMapping
    EXT_REQUEST = "xreq"  # an extension request of EXT_ANSWERS
    ROOT_PROPERTY = "rprop"  # GetProperty of a root window: while the display host watches
    SELECTION_OWNER = "owner"  # GetSelectionOwner of a selection the display host watches
    WATCHED = "wreq"  # an extension request of WATCHED: while the display host watches
    NONE = "none"  # a request of NONE_ERRORS naming None: its error, learnt


#: Requests this module may answer, by opcode (extension requests aside: Kind.EXT_REQUEST).
KINDS: dict[int, Kind] = {
    INTERN_ATOM: Kind.ATOM, GET_ATOM_NAME: Kind.ATOM_NAME, QUERY_FONT: Kind.FONT,
    LIST_FONTS: Kind.LIST_FONTS, LIST_FONTS_WITH_INFO: Kind.LIST_FONTS_WITH_INFO,
    ALLOC_COLOR: Kind.ALLOC_COLOR, ALLOC_NAMED_COLOR: Kind.ALLOC_NAMED_COLOR,
    QUERY_COLORS: Kind.QUERY_COLORS, LOOKUP_COLOR: Kind.LOOKUP_COLOR,
    QUERY_EXTENSION: Kind.EXTENSION, LIST_EXTENSIONS: Kind.EXTENSIONS,
    GET_KEYBOARD_MAPPING: Kind.KEYBOARD, GET_MODIFIER_MAPPING: Kind.MODIFIERS,
}
_KEYMAP_KINDS = frozenset({Kind.KEYBOARD, Kind.MODIFIERS})
#: The most pixels of a QueryColors answered here; a longer one goes to the server unread.
MAX_QUERY_COLORS = 16000


def _stamp(reply: bytes, endian: str, seq: int) -> bytes:
    return reply[:2] + struct.pack(endian + "H", seq & 0xFFFF) + reply[4:]


def _unstamp(reply: bytes) -> bytes:
    return reply[:2] + b"\0\0" + reply[4:]


# -- TrueColor allocation, as X.Org's dix/colormap.c and mi/micmap.c compute it ---------------

@dataclass(frozen=True, slots=True)
class Visual:
    id: int
    cls: int
    bits_per_rgb: int
    red_mask: int
    green_mask: int
    blue_mask: int
    depth: int
    entries: int = 256


def _shift_of(mask: int) -> int:
    return (mask & -mask).bit_length() - 1 if mask else 0


class TrueColorMap:
    """The default colormap of a TrueColor visual: its three ramps and how AllocColor picks."""

    def __init__(self, v: Visual) -> None:
        self.v = v
        bits = v.bits_per_rgb
        self.shift = 16 - bits
        self.lim = (1 << bits) - 1
        self.offsets = [_shift_of(m) for m in (v.red_mask, v.green_mask, v.blue_mask)]
        self.ramps = []
        for mask, off in zip((v.red_mask, v.green_mask, v.blue_mask), self.offsets):
            top = mask >> off
            # miInitializeColormap: rescale to [0..65535], then to the visual's rgb bits
            self.ramps.append([((((i * 65535) // top) >> self.shift) * 65535) // self.lim
                               for i in range(top + 1)])

    def resolve(self, value: int) -> int:
        return ((value >> self.shift) * 65535) // self.lim  # miResolveColor

    def query(self, pixel: int) -> tuple[int, int, int] | None:
        """The r, g, b QueryColors replies for a pixel, or None where the server would
        answer BadValue (bits outside the masks, or an index past the colormap's entries)."""
        v = self.v
        if pixel & ~(v.red_mask | v.green_mask | v.blue_mask):
            return None
        out = []
        for mask, off, ramp in zip((v.red_mask, v.green_mask, v.blue_mask), self.offsets,
                                   self.ramps):
            i = (pixel & mask) >> off
            if i >= v.entries:
                return None
            out.append(ramp[i])
        return out[0], out[1], out[2]

    def alloc(self, r: int, g: int, b: int) -> tuple[int, int, int, int]:
        """(pixel, red, green, blue) as AllocColor replies for a requested r, g, b."""
        pixel = 0
        out = []
        for value, ramp, off in zip((r, g, b), self.ramps, self.offsets):
            want = self.resolve(value)
            best, best_d = 0, None
            for i, entry in enumerate(ramp):  # FindBestPixel: the first smallest distance
                d = (entry - want) ** 2
                if best_d is None or d < best_d:
                    best, best_d = i, d
            pixel |= best << off
            out.append(ramp[best])
        return pixel, out[0], out[1], out[2]


def _screens(setup: bytes, e: str,
             depths: dict[int, frozenset[int]] | None = None) -> list[tuple[int, int, Visual | None]]:
    """(root window, default colormap, its visual) of each screen of a successful setup; and
    into `depths`, each root's allowed depths."""
    vendor_len, = struct.unpack_from(e + "H", setup, 24)
    n_screens, n_formats = setup[28], setup[29]
    pos = 40 + vendor_len + (-vendor_len % 4) + 8 * n_formats
    screens = []
    for _ in range(n_screens):
        root, cmap = struct.unpack_from(e + "II", setup, pos)
        root_visual, = struct.unpack_from(e + "I", setup, pos + 32)
        n_depths = setup[pos + 39]
        pos += 40
        found = None
        allowed = set()
        for _ in range(n_depths):
            depth = setup[pos]
            allowed.add(depth)
            n_vis, = struct.unpack_from(e + "H", setup, pos + 2)
            pos += 8
            for _ in range(n_vis):
                vid, cls, bits, entries, rm, gm, bm = struct.unpack_from(e + "IBBHIII", setup, pos)
                if vid == root_visual:
                    found = Visual(vid, cls, bits, rm, gm, bm, depth, entries)
                pos += 24
        screens.append((root, cmap, found))
        if depths is not None:
            depths[root] = frozenset(allowed)
    return screens


def parse_screens(setup: bytes, e: str) -> list[tuple[int, Visual | None]]:
    """(default colormap, its visual) of each screen of a successful setup reply."""
    return [(cmap, visual) for _, cmap, visual in _screens(setup, e)]


def parse_roots(setup: bytes, e: str) -> frozenset[int]:
    """The root windows of a successful setup reply."""
    return frozenset(root for root, _, _ in _screens(setup, e))


def parse_depths(setup: bytes, e: str) -> dict[int, frozenset[int]]:
    """Each root window's allowed depths (a pixmap of another is BadValue), from a successful
    setup reply."""
    depths: dict[int, frozenset[int]] = {}
    _screens(setup, e, depths)
    return depths


# -- the caches ---------------------------------------------------------------------------------

@dataclass
class Stats:
    answered: int = 0  # answers given without waiting for the server
    held: int = 0  # answers known, held until the server had caught up
    forwarded_replies: int = 0  # replies the client had to wait for from the server
    compared: int = 0
    mismatches: int = 0
    changes: int = 0  # changes the display host's watch reported


class DisplayCache:
    """What one display host's X server answers, for the life of that server (its `epoch`).
    Shared by every connection to it; atoms, extensions, fonts and colour names persist
    (`to_json`/`from_json`), keyboard mappings only while a witness connection stays open."""

    def __init__(self, epoch: str = "") -> None:
        self.epoch = epoch
        self.atoms: dict[bytes, int] = {}
        self.atom_names: dict[int, bytes] = {}
        self.replies: dict[tuple[str, Kind, bytes], bytes | tuple[bytes, ...]] = {}
        self.colors: dict[bytes, tuple[int, int, int]] = {}  # name -> exact r, g, b
        self.keymaps: dict[tuple[str, Kind, bytes], tuple[bytes, set[int]]] = {}
        self.open_connections: set[int] = set()
        self.stats = Stats()
        self.mismatch_log: list[dict[str, Any]] = []
        self.changed = False
        self.no_color = False  # set if a computed AllocColor ever differed from the server's
        self.fonts_ok: set[bytes] = set()  # names an OpenFont has opened without error
        # Answers valid while the display host watches for what changes them (`watch`), in
        # memory only: key -> (reply, what forgets it: a root property's atom or a group).
        self.watching = False
        self.groups: frozenset[str] = frozenset()  # what the watch vouches for
        self.watched: dict[tuple[str, Kind, bytes], tuple[bytes, int | str]] = {}
        self.watched_bytes = 0
        self.generation = 0  # counts the changes, so a reply read before one is not learnt
        self.randr_changes = 0  # counts the changes of the RANDR configuration reported
        self.unique = 0  # counts keys made to match nothing

    # watched answers: valid from the reply until the display host says they changed
    def watch(self, groups: Any) -> None:
        """The display host watches for changes of these groups from now on (its HELLO's
        list: "props", "randr", "xkb", "xi", "sel:ATOM"), or of none (no list: it no longer
        can, or its reports may have been lost): forget every watched answer either way."""
        if isinstance(groups, list):
            self.groups = frozenset(g for g in groups if isinstance(g, str))
        else:
            self.groups = frozenset()
        self.watching = bool(self.groups)
        self.display_changed(everything=True)

    def vouched(self, group: str) -> bool:
        return self.watching and group in self.groups

    def display_changed(self, props: frozenset[int] = frozenset(),
                        groups: frozenset[str] = frozenset(), everything: bool = False) -> None:
        """Root properties (atoms) or groups of extension answers changed on the display."""
        self.generation += 1
        if everything or "randr" in groups:
            self.randr_changes += 1
        for key, (reply, scope) in list(self.watched.items()):
            if everything or scope in props or scope in groups:
                del self.watched[key]
                self.watched_bytes -= len(reply)

    def learn_watched(self, key: tuple[str, Kind, bytes], reply: bytes, scope: int | str,
                      generation: int) -> None:
        """Keep a reply read with nothing changed since its request went (`generation`)."""
        if not self.watching or generation != self.generation or key in self.watched \
                or len(reply) > MAX_WATCHED_REPLY \
                or self.watched_bytes + len(reply) > MAX_WATCHED_BYTES:
            return
        self.watched[key] = (reply, scope)
        self.watched_bytes += len(reply)

    # keyboard mappings: valid while a connection that has seen every MappingNotify since
    def keymap(self, key: tuple[str, Kind, bytes]) -> bytes | None:
        entry = self.keymaps.get(key)
        return entry[0] if entry else None

    def learn_keymap(self, key: tuple[str, Kind, bytes], reply: bytes) -> None:
        self.keymaps[key] = (reply, set(self.open_connections))

    def mapping_changed(self) -> None:
        self.keymaps.clear()

    def connection_opened(self, number: int) -> None:
        self.open_connections.add(number)

    def connection_closed(self, number: int) -> None:
        self.open_connections.discard(number)
        for key, (_, witnesses) in list(self.keymaps.items()):
            witnesses.discard(number)
            if not witnesses:
                del self.keymaps[key]

    def learn_atom(self, name: bytes, atom: int) -> None:
        if atom and self.atoms.get(name) != atom:
            self.atoms[name] = atom
            self.atom_names[atom] = name
            self.changed = True

    def forget(self, kind: Kind, e: str, arg: bytes) -> None:
        self.changed = True
        if kind is Kind.ATOM:
            atom = self.atoms.pop(arg, None)
            self.atom_names.pop(atom or 0, None)
        elif kind is Kind.ATOM_NAME:
            (atom,) = struct.unpack(">I", arg)
            name = self.atom_names.pop(atom, None)
            self.atoms.pop(name or b"", None)
        elif kind in _KEYMAP_KINDS:
            self.keymaps.pop((e, kind, arg), None)
        elif kind is Kind.ALLOC_NAMED_COLOR:
            self.colors.pop(arg[4:], None)
        elif kind in (Kind.ALLOC_COLOR, Kind.QUERY_COLORS):
            self.no_color = True
        elif kind in (Kind.ROOT_PROPERTY, Kind.WATCHED):
            entry = self.watched.pop((e, kind, arg), None)
            if entry is not None:
                self.watched_bytes -= len(entry[0])
        else:
            self.replies.pop((e, kind, arg), None)

    def to_json(self) -> dict[str, Any]:
        def enc(b: bytes) -> str:
            return base64.b64encode(b).decode()

        replies = {}
        for (e, kind, arg), value in self.replies.items():
            key = f"{e}|{kind.value}|{enc(arg)}"
            replies[key] = [enc(v) for v in value] if isinstance(value, tuple) else enc(value)
        return {"epoch": self.epoch,
                "atoms": {enc(k): v for k, v in self.atoms.items()},
                "colors": {enc(k): list(v) for k, v in self.colors.items()},
                "replies": replies, "fonts": sorted(enc(f) for f in self.fonts_ok)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DisplayCache:
        dec = base64.b64decode
        cache = cls(str(data.get("epoch", "")))
        for k, v in data.get("atoms", {}).items():
            cache.learn_atom(dec(k), int(v))
        for k, v in data.get("colors", {}).items():
            cache.colors[dec(k)] = (int(v[0]), int(v[1]), int(v[2]))
        kinds = {k.value: k for k in Kind}
        for key, value in data.get("replies", {}).items():
            e, kind, arg = key.split("|", 2)
            if kind in kinds:  # a kind this version does not know is relearnt
                cache.replies[(e, kinds[kind], dec(arg))] = (
                    tuple(dec(v) for v in value) if isinstance(value, list) else dec(value))
        cache.fonts_ok = {dec(f) for f in data.get("fonts", [])}
        cache.changed = False
        return cache


# -- one connection -------------------------------------------------------------------------------

@dataclass
class _Held:
    seq: int
    barrier: int
    replies: tuple[bytes, ...]  # already stamped


_HEADER_READ = frozenset({CHANGE_PROPERTY, DELETE_PROPERTY, CHANGE_WINDOW_ATTRIBUTES,
                          SET_SELECTION_OWNER, CREATE_GC, SEND_EVENT, CREATE_PIXMAP})


class _Requests(RequestFramer):
    """The client's byte stream, cut by the one X11 request framer; the Suppressor is its
    hold policy (`_client_request`: from each request's header, whether it is read whole)."""

    def __init__(self, policy: Suppressor) -> None:
        super().__init__()
        self.policy = policy

    def _length_zero(self) -> None:
        """Checked in `_client_request`, after the bound on a request read whole."""

    def _frame(self, buf: Buffer, pos: int, avail: int) -> tuple[int, int] | None:
        # the policy reads the window and atom of these at their header (16 bytes, or the
        # whole request when shorter)
        if not self.in_setup and 4 <= avail < 16 and buf[pos] in self.policy.header_read:
            size = 4 * self._u16(buf, pos + 2)[0]
            if size == 0 and self.big_requests:
                if avail < 8:
                    return None
                size = 4 * self._u32(buf, pos + 4)[0]  # a bad one is refused by the framer
            if avail < min(size, 16):
                return None
        return super()._frame(buf, pos, avail)

    def _request(self, buf: Buffer, pos: int, opcode: int, size: int, big: bool) -> int:
        return self.policy._client_request(buf, pos, opcode, size, big)

    def _message(self, msg: bytes) -> bytes:
        if self.in_setup:
            self.in_setup = False
            self.policy.e = self.endian
            self.policy.server.expect_setup(self.endian)
            return msg
        return self.policy._client_message(msg)


class _ServerMessages(ServerFramer):
    """The server's byte stream, cut by the one X11 server-message framer; the Suppressor is
    its hold policy (`_server_header`: a message is read whole to be dropped, relabelled,
    learnt from, or to put answers beside it)."""

    def __init__(self, policy: Suppressor) -> None:
        super().__init__()
        self.policy = policy

    def _sequenced(self, buf: Buffer, pos: int, kind: int, seq: int) -> int:
        return self.policy._server_header(buf, pos, kind, seq)

    def _message(self, msg: bytes) -> bytes:
        if self.in_setup:
            self.in_setup = False
            return self.policy._server_setup(msg)
        return self.policy._server_message(msg)

    @property
    def at_boundary(self) -> bool:
        """No message is part way through: answers may go to the client now."""
        return not self._stream and not self._held


class Suppressor:
    """One X connection seen from the app side, between the client and the link.

    `from_client(data)` returns (bytes for the server, bytes for the client);
    `from_server(data)` returns bytes for the client. `number` identifies the connection to
    the shared cache (keyboard-mapping witnesses)."""

    #: Told (sequence number, behind) of each request answered from the cache, before the
    #: answer is returned: `behind` is 0 for an answer given at once, else the earlier request
    #: that could fail whose end it is held until.
    on_answer: Callable[[int, int], None] | None = None

    def __init__(self, cache: DisplayCache, number: int = 0, verify: bool = False,
                 enabled: bool = True) -> None:
        self.cache = cache
        self.number = number
        self.verify = verify
        self.enabled = enabled
        self.e = "<"
        self.barrier = 0  # full number of the last forwarded request we cannot vouch for
        self.done = 0  # full number of the last request the server has finished
        self.delivered = 0  # highest sequence number the client has been given
        self.ext_names: dict[int, bytes] = {}  # major opcode -> extension, from its replies
        self.ext_version: dict[bytes, bytes] = {}  # extension -> our minor-0 request's body
        self.multi: dict[int, Callable[[int], bool]] = {}  # seq -> "is this its last reply"
        self.colormaps: dict[int, TrueColorMap] = {}
        self.roots: frozenset[int] = frozenset()
        self.depths: dict[int, frozenset[int]] = {}  # root -> its allowed depths
        self.header_read = set(_HEADER_READ)  # requests whose first 16 bytes the policy reads
        self.id_base = self.id_mask = 0  # this client's resource ids, from the setup
        self.watch_events: dict[int, frozenset[str]] = {}  # event code -> the groups it changes
        # GenericEvents by major opcode: the group they change, and their event types that do
        self.watch_generic: dict[int, tuple[str, frozenset[int]]] = {}
        self.selection_event = -1  # XFIXES' SelectionNotify, once this connection asked
        # RANDR changes reported before this connection's setup: the server's RRSelectInput
        # sends this client events if the configuration changed since (`_quiet`)
        self.randr_seen = cache.randr_changes
        self.root_events: dict[int, int] = {}  # root -> every event bit this client selected
        # seq -> the cache's generation when it went, and what forgets its answer
        self.learn_gen: dict[int, tuple[int, int | str]] = {}
        self.fonts: dict[int, bytes] = {}
        self.opening: dict[int, bytes] = {}  # seq -> name of an OpenFont not yet finished
        self.learn: dict[int, tuple[Kind, bytes]] = {}  # seq -> what its reply teaches
        self.partial: dict[int, list[bytes]] = {}  # ListFontsWithInfo replies so far
        self.swallow: dict[int, tuple[Kind, bytes, tuple[bytes, ...]]] = {}
        self.held: deque[_Held] = deque()
        self.to_client: list[bytes] = []
        self.bigreq_enable = 0  # sequence number of BIG-REQUESTS' Enable, until its reply
        self.xkb_use = 0  # sequence number of the last XKB UseExtension
        self.xkb_ready = False  # the server accepted one (else XKB requests are BadAccess)
        self.client = _Requests(self)
        self.server = _ServerMessages(self)
        cache.connection_opened(number)

    def close(self) -> None:
        self.cache.connection_closed(self.number)

    @property
    def seq(self) -> int:
        """The full sequence number of the last request sent."""
        return self.client.seq

    # -- client to server -------------------------------------------------------------------

    def from_client(self, data: bytes) -> tuple[bytes, bytes]:
        out = bytes(self.client.feed(data))
        # answers wait while a server message streams through; it carries them at its end
        back = self._take_answers() if self.server.at_boundary and self.to_client else b""
        return out, back

    def _client_request(self, buf: Buffer, pos: int, opcode: int, size: int,
                        big: bool) -> int:
        """The hold policy for requests: whether this one is read whole (HOLD) or passes."""
        if (opcode in KINDS or opcode in (OPEN_FONT, CLOSE_FONT)) \
                and (opcode != QUERY_COLORS or size <= 8 + 4 * MAX_QUERY_COLORS) \
                or (opcode in NONE_ERRORS and size == 8):
            return self._held(opcode, size, big)
        cache = self.cache
        if (opcode == GET_PROPERTY and size == 24 and cache.vouched("props")) \
                or (opcode == GET_SELECTION_OWNER and size == 8 and cache.watching):
            return self._held(opcode, size, big)
        if opcode >= FIRST_EXTENSION_OPCODE:
            name = self.ext_names.get(opcode, b"")
            minor = buf[pos + 1]
            answers = EXT_ANSWERS.get(name)
            if answers is not None and minor in answers \
                    or (name, minor) == XKB_SELECT_EVENTS and size <= MAX_XKB_SELECT:
                return self._held(opcode, size, big)
            if minor in VERSION_REQUESTS.get(name, ()):
                if size <= MAX_HELD_REQUEST:
                    return self._held(opcode, size, big)
                cache.unique += 1  # too long to read: a history no other connection has
                self.ext_version[name] = b"unique %d" % cache.unique
            watched = WATCHED.get(name)
            if watched is not None:
                if minor in watched[1] and cache.vouched(watched[0]) \
                        and cache.vouched(WATCHED_ALSO.get((name, minor), watched[0])):
                    return self._held(opcode, size, big)
                if minor not in WATCHED_QUIET[name]:
                    cache.display_changed(groups=EXT_GROUPS[name])
            last = MULTI_REPLY.get((name, minor))
            if last is not None:
                self.multi[self.seq] = last
        elif opcode == SET_SELECTION_OWNER:
            atom, = struct.unpack_from(self.e + "I", buf, pos + (12 if big else 8))
            cache.display_changed(groups=frozenset({f"sel:{atom}"}))
        elif opcode in (CHANGE_PROPERTY, DELETE_PROPERTY):
            window, atom = struct.unpack_from(self.e + "II", buf, pos + (8 if big else 4))
            if window in self.roots:
                cache.display_changed(props=frozenset({atom}))
        elif opcode == ROTATE_PROPERTIES:
            cache.display_changed(props=frozenset(
                scope for _, scope in cache.watched.values() if isinstance(scope, int)))
        elif opcode in _KEYBOARD_CHANGES:
            cache.display_changed(groups=frozenset({"xkb"}))
        elif opcode == CHANGE_WINDOW_ATTRIBUTES and size >= 12:
            self._root_selection(buf, pos, size, big)
        if big:
            self.client.require_big_requests()
        if opcode not in NEVER_FAIL and not self._quiet(buf, pos, opcode, size):
            self.barrier = self.seq
        return PASS

    def _root_selection(self, buf: Buffer, pos: int, size: int, big: bool) -> None:
        """Remember the event bits a ChangeWindowAttributes selects on a root window for
        this client (all of them when its event mask is past the header, or it is big)."""
        window, mask = struct.unpack_from(self.e + "II", buf, pos + (8 if big else 4))
        if window not in self.roots or not mask & CW_EVENT_MASK:
            return
        at = 12 + 4 * (mask & (CW_EVENT_MASK - 1)).bit_count()
        events = ALL_EVENTS
        if not big and at + 4 <= min(size, 16):
            events, = struct.unpack_from(self.e + "I", buf, pos + at)
        self.root_events[window] = self.root_events.get(window, 0) | events

    def _quiet(self, buf: Buffer, pos: int, opcode: int, size: int) -> bool:
        """Whether this request cannot fail and makes no event: a ChangeWindowAttributes of
        a root window (which always exists) that sets only its event mask, without the bits
        one client at a time may select (BadAccess) or bits no event has (BadValue); an
        XFixesSelectSelectionInput on a root window, of an atom the server has named (atoms
        last as long as the server), with known event bits, from a connection that announced
        XFIXES 1 or later (else BadRequest); a CreateGC on a root window setting at most its
        foreground and background (any value goes), with an id of the client's own range
        (Xlib's default GC of each screen: its allocator gives no id in use); a CreatePixmap
        on a root window, of one of its depths, of a size between 1 and 4096 pixels a side,
        with an id of the client's own range (the same); an RRSelectInput
        on a root window with a mask that has ScreenChangeNotify (or none), while the display
        host watches RANDR and has reported no change since this connection's setup (the
        server sends this client events for it only if the configuration changed since);
        a SendEvent to a root window of a core event type (ClientMessage with a valid
        format), not propagating beyond it, with event bits none of which this client
        selected there (so the event goes to other clients only)."""
        e = self.e
        if opcode == CREATE_PIXMAP and size == 16:
            pid, drawable, width, height = struct.unpack_from(e + "IIHH", buf, pos + 4)
            return (buf[pos + 1] == 1 or buf[pos + 1] in self.depths.get(drawable, ())) \
                and 0 < width <= MAX_PIXMAP_SIDE and 0 < height <= MAX_PIXMAP_SIDE \
                and pid & ~self.id_mask == self.id_base
        if opcode == SEND_EVENT and size == 44:
            destination, events = struct.unpack_from(e + "II", buf, pos + 4)
            kind, detail = buf[pos + 12], buf[pos + 13]
            return destination in self.roots and buf[pos + 1] in (0, 1) \
                and kind in SEND_EVENT_TYPES \
                and (kind != CLIENT_MESSAGE or detail in (8, 16, 32)) \
                and events != 0 and not events & ~ALL_EVENTS \
                and not events & self.root_events.get(destination, 0)
        if size == 12 and self.ext_names.get(opcode) == b"RANDR" \
                and buf[pos + 1] == RR_SELECT_INPUT:
            window, enable = struct.unpack_from(e + "IH", buf, pos + 4)
            return window in self.roots and (enable & RR_SCREEN_CHANGE_MASK or enable == 0) \
                and self.cache.vouched("randr") and self.cache.randr_changes == self.randr_seen
        if opcode == CREATE_GC and 16 <= size <= 24:
            gc, drawable, mask = struct.unpack_from(e + "III", buf, pos + 4)
            return drawable in self.roots and not mask & ~GC_FOREGROUND_BACKGROUND \
                and size == 16 + 4 * mask.bit_count() \
                and gc & ~self.id_mask == self.id_base
        if size != 16:
            return False
        if opcode == CHANGE_WINDOW_ATTRIBUTES:
            window, mask, events = struct.unpack_from(e + "III", buf, pos + 4)
            return window in self.roots and mask == CW_EVENT_MASK \
                and not events & (EXCLUSIVE_EVENTS | ~ALL_EVENTS)
        if self.ext_names.get(opcode) == b"XFIXES" and buf[pos + 1] == 2:
            window, atom, events = struct.unpack_from(e + "III", buf, pos + 4)
            version = self.ext_version.get(b"XFIXES", b"")
            return window in self.roots and atom in self.cache.atom_names \
                and not events & ~XFIXES_SELECTION_EVENTS \
                and len(version) >= 4 and U32[e](version, 0)[0] >= 1
        return False

    def _xkb_select_quiet(self, msg: bytes) -> bool:
        """Whether an XkbSelectEvents cannot fail (it makes no event): on the core keyboard
        (as XkbUseCoreKbd or its device id, as GDK's keymap selects both ways),
        from a connection whose UseExtension the server accepted, of new-keyboard, map and
        state events only, each detail mask within what it may select and each value within
        its mask, with no bytes over (X.Org's ProcXkbSelectEvents)."""
        e = self.e
        if not self.xkb_ready or len(msg) < 16:
            return False
        device, which, clear, select_all = struct.unpack_from(e + "HHHH", msg, 4)
        if device not in XKB_CORE_KEYBOARD or which & ~XKB_QUIET_EVENTS:
            return False
        pos = 16
        for bit, legal in XKB_EVENT_DETAILS:
            if not which & bit or (clear | select_all) & bit:
                continue  # no details: all of them cleared or selected
            if pos + 4 > len(msg):
                return False  # BadLength
            affect, values = struct.unpack_from(e + "HH", msg, pos)
            if affect & ~legal or values & ~affect:
                return False  # BadValue, BadMatch
            pos += 4
        return len(msg) - pos <= 2

    def _held(self, opcode: int, size: int, big: bool) -> int:
        if size > MAX_HELD_REQUEST:
            raise ClientProtocolError(f"request {opcode} of {size} bytes is longer than "
                                      f"any request of its kind")
        if big:
            self.client.require_big_requests()
        return HOLD

    def _client_message(self, msg: bytes) -> bytes:
        opcode = msg[0]
        seq = self.seq
        e = self.e
        if opcode == OPEN_FONT:
            fid, n = struct.unpack_from(e + "IH", msg, 4)
            name = msg[12 : 12 + n]
            # A name this server has opened before (an OpenFont of it finished without an
            # error, or we hold its QueryFont reply) cannot fail with BadName; a fresh id
            # cannot fail with BadIDChoice unless the client reuses a live id, which its own
            # allocator never does. Anything else may fail: a barrier, and if it succeeds,
            # the name is known to open from then on.
            c = self.cache
            if not (self.enabled and (name in c.fonts_ok or (e, Kind.FONT, name) in c.replies)
                    and fid not in self.fonts):
                self.barrier = seq
                if name not in c.fonts_ok:
                    self.opening[seq] = name
            self.fonts[fid] = name
            return msg
        if opcode == CLOSE_FONT:
            self.fonts.pop(struct.unpack_from(e + "I", msg, 4)[0], None)
            self.barrier = seq
            return msg
        if opcode in NONE_ERRORS:
            if U32[e](msg, 4)[0] != 0:
                self.barrier = seq
                return msg
            key = msg[:1] + b"\0" + msg[2:]  # the unused byte (Xlib leaves it unset)
            error = self.cache.replies.get((e, Kind.NONE, key)) if self.enabled else None
            if not isinstance(error, bytes):
                self.barrier = seq
                self.learn[seq] = (Kind.NONE, key)
                return msg
            return self._known(Kind.NONE, key, (error,), msg)
        if opcode == GET_PROPERTY:
            return self._root_property(msg)
        if opcode == GET_SELECTION_OWNER:
            atom, = struct.unpack_from(e + "I", msg, 4)
            return self._watched(msg, Kind.SELECTION_OWNER, msg[4:8], f"sel:{atom}")
        known: tuple[bytes, tuple[bytes, ...]] | None
        if opcode >= FIRST_EXTENSION_OPCODE:
            name, minor = self.ext_names[opcode], msg[1]
            if name == b"BIG-REQUESTS" and minor == 0:
                self.client.big_requests = True  # Enable: lengths of 0 from the next one
                self.bigreq_enable = seq
            elif (name, minor) == XKB_SELECT_EVENTS:
                if not self._xkb_select_quiet(msg):
                    self.barrier = seq
                return msg
            elif name == b"XKEYBOARD" and minor == 0:
                self.xkb_use = seq
            watched = WATCHED.get(name)
            kind = Kind.WATCHED if watched is not None and minor in watched[1] \
                else Kind.EXT_REQUEST
            context = self.ext_version.get(name, b"")
            arg = name + struct.pack(">BBH", 0, minor, len(context)) + context + msg[4:]
            versions = VERSION_REQUESTS.get(name)
            if versions is None:
                if minor == 0:
                    self.ext_version[name] = msg[4:]
            elif minor in versions:
                self.ext_version[name] = hashlib.sha256(context + bytes([minor]) + msg).digest()
            if minor not in EXT_ANSWERS.get(name, ()) and kind is not Kind.WATCHED or (
                    (name, minor) in ROOT_ARGUMENT
                    and (len(msg) < 8 or U32[e](msg, 4)[0] not in self.roots)) or (
                    (name, minor) in CORE_KEYBOARD_ARGUMENT
                    and (len(msg) != 8
                         or struct.unpack_from(e + "H", msg, 4)[0] not in XKB_CORE_KEYBOARD)):
                self.barrier = seq  # neither answered nor learnt
                return msg
            c = self.cache
            value: bytes | tuple[bytes, ...] | None
            if kind is Kind.WATCHED:
                assert watched is not None
                flag = DELETE_FLAG.get((name, minor))
                if flag is not None and (len(msg) <= flag or msg[flag]):
                    c.display_changed(groups=EXT_GROUPS[name])  # deletes a property
                    self.barrier = seq
                    return msg
                if not c.vouched(WATCHED_ALSO.get((name, minor), watched[0])):
                    self.barrier = seq  # the watch cannot vouch for this one
                    return msg
                entry = c.watched.get((e, kind, arg)) \
                    if self.enabled and c.vouched(watched[0]) else None
                value = entry[0] if entry is not None else None
            else:
                value = c.replies.get((e, kind, arg)) if self.enabled else None
            if not isinstance(value, bytes):
                self.barrier = seq
                self.learn[seq] = (kind, arg)
                if kind is Kind.WATCHED:
                    assert watched is not None
                    self.learn_gen[seq] = (c.generation,
                                           WATCHED_SCOPE.get((name, minor), watched[0]))
                return msg
            if seq == self.bigreq_enable:
                self.client.max_big_request = 4 * U32[e](value, 8)[0]
            elif seq == self.xkb_use:
                self.xkb_ready = self.xkb_ready or value[1] != 0
            known = (arg, (value,))
        else:
            kind = KINDS[opcode]
            known = self._answer(kind, msg) if self.enabled else None
        if known is None:
            self.barrier = seq
            learn = self._learn_key(kind, msg)
            if learn is not None:
                self.learn[seq] = learn
            return msg
        key, replies = known
        if opcode == QUERY_EXTENSION:
            self._extension(key, replies[0])
        return self._known(kind, key, replies, msg)

    def _extension(self, name: bytes, reply: bytes) -> None:
        """A QueryExtension reply this connection gets: the extension's opcode and events."""
        if reply[8]:
            self.ext_names[reply[9]] = name
            count = WATCHED_EVENTS.get(name)
            if count is not None:
                for code in range(reply[10], reply[10] + count):
                    self.watch_events[code] = EXT_GROUPS[name]
            if name in WATCHED_GENERIC:
                self.watch_generic[reply[9]] = WATCHED_GENERIC[name]
            if name == b"XFIXES":
                self.selection_event = reply[10]
            if name in (b"XFIXES", b"RANDR"):  # for `_quiet`
                self.header_read.add(reply[9])

    def _root_property(self, msg: bytes) -> bytes:
        """GetProperty: answered when it reads a root window's property without deleting
        it, and the display host watches the root windows' properties."""
        seq, e, c = self.seq, self.e, self.cache
        window, atom = struct.unpack_from(e + "II", msg, 4)
        if window not in self.roots or not c.vouched("props"):
            self.barrier = seq
            return msg
        if msg[1]:  # delete: the property may go, and a PropertyNotify with it
            c.display_changed(props=frozenset({atom}))
            self.barrier = seq
            return msg
        return self._watched(msg, Kind.ROOT_PROPERTY, msg[4:24], atom)

    def _watched(self, msg: bytes, kind: Kind, arg: bytes, scope: int | str) -> bytes:
        """A request the watch vouches for: answered if known, else learnt."""
        seq, c = self.seq, self.cache
        entry = None
        if self.enabled and (isinstance(scope, int) or c.vouched(scope)):
            entry = c.watched.get((self.e, kind, arg))
            if entry is None:
                self.learn[seq] = (kind, arg)
                self.learn_gen[seq] = (c.generation, scope)
        if entry is None:
            self.barrier = seq
            return msg
        return self._known(kind, arg, (entry[0],), msg)

    def _known(self, kind: Kind, key: bytes, replies: tuple[bytes, ...], msg: bytes) -> bytes:
        """A request whose replies are known: the client gets them as soon as nothing
        before it can still make an error or an event; the server's are compared."""
        seq, e = self.seq, self.e
        stamped = tuple(_stamp(r, e, seq) for r in replies)
        self.swallow[seq] = (kind, key, stamped)
        if self.verify:
            self.barrier = seq  # the client waits for the server's own reply
            return msg
        if self.barrier <= self.done and not self.held:
            self.to_client.extend(stamped)
            self.delivered = max(self.delivered, seq)
            self.cache.stats.answered += 1
            if self.on_answer is not None:
                self.on_answer(seq, 0)
        else:
            # behind its own barrier, or (that one finished) the held answers queued before it
            behind = self.barrier if self.barrier > self.done else self.held[-1].barrier
            self.held.append(_Held(seq, self.barrier, stamped))
            self.cache.stats.held += 1
            if self.on_answer is not None:
                self.on_answer(seq, behind)
        return msg

    def _learn_key(self, kind: Kind, msg: bytes) -> tuple[Kind, bytes] | None:
        """What the reply to this request teaches (its kind and cache key), or None when it
        teaches nothing: AllocColor and QueryColors are computed, not learnt."""
        e = self.e
        if kind is Kind.ATOM:
            n, = struct.unpack_from(e + "H", msg, 4)
            return kind, msg[8 : 8 + n]
        if kind is Kind.ATOM_NAME:
            return kind, struct.pack(">I", *struct.unpack_from(e + "I", msg, 4))
        if kind is Kind.FONT:
            name = self.fonts.get(struct.unpack_from(e + "I", msg, 4)[0])
            return (kind, name) if name is not None else None
        if kind in (Kind.LIST_FONTS, Kind.LIST_FONTS_WITH_INFO):
            return kind, msg[4:]
        if kind in (Kind.ALLOC_NAMED_COLOR, Kind.LOOKUP_COLOR):
            cmap, n = struct.unpack_from(e + "IH", msg, 4)
            if cmap not in self.colormaps:
                return None
            return kind, struct.pack(">I", cmap) + msg[12 : 12 + n]
        if kind is Kind.EXTENSION:
            n, = struct.unpack_from(e + "H", msg, 4)
            return kind, msg[8 : 8 + n]
        if kind is Kind.KEYBOARD:
            return kind, msg[4:6]
        if kind in (Kind.EXTENSIONS, Kind.MODIFIERS):
            return kind, b""
        return None

    def _answer(self, kind: Kind, msg: bytes) -> tuple[bytes, tuple[bytes, ...]] | None:
        """(cache key, the server's replies) when the answer is known, else None."""
        c, e = self.cache, self.e
        if kind is Kind.ALLOC_COLOR:
            cmap, r, g, b = struct.unpack_from(e + "IHHH", msg, 4)
            tc = self.colormaps.get(cmap)
            if tc is None or c.no_color:
                return None
            pixel, rr, gg, bb = tc.alloc(r, g, b)
            return b"", (struct.pack(e + "BBHIHHHHI12x", 1, 0, 0, 0, rr, gg, bb, 0, pixel),)
        if kind is Kind.QUERY_COLORS:
            cmap, = struct.unpack_from(e + "I", msg, 4)
            tc = self.colormaps.get(cmap)
            n = (len(msg) - 8) // 4
            if tc is None or c.no_color or not 0 < n <= MAX_QUERY_COLORS:
                return None
            items = []
            for pixel in struct.unpack_from(e + f"{n}I", msg, 8):
                rgb = tc.query(pixel)
                if rgb is None:
                    return None  # BadValue: let the server say so
                items.append(struct.pack(e + "HHH2x", *rgb))
            return b"", (struct.pack(e + "BBHIH22x", 1, 0, 0, 2 * n, n) + b"".join(items),)
        learn = self._learn_key(kind, msg)
        if learn is None:
            return None
        _, arg = learn
        if kind is Kind.ATOM:
            if msg[1] > 1:
                return None  # BadValue
            atom = c.atoms.get(arg)
            if atom is None:
                return None
            return arg, (struct.pack(e + "BBHII20x", 1, 0, 0, 0, atom),)
        if kind is Kind.ATOM_NAME:
            name = c.atom_names.get(struct.unpack(">I", arg)[0])
            if name is None:
                return None
            n = len(name)
            body = name + b"\0" * (-n % 4)
            return arg, (struct.pack(e + "BBHIH22x", 1, 0, 0, len(body) // 4, n) + body,)
        if kind is Kind.ALLOC_NAMED_COLOR:
            exact = c.colors.get(arg[4:])
            tc = self.colormaps.get(struct.unpack_from(e + "I", msg, 4)[0])
            if exact is None or tc is None or c.no_color:
                return None
            pixel, rr, gg, bb = tc.alloc(*exact)
            return arg, (struct.pack(e + "BBHII3H3H8x", 1, 0, 0, 0, pixel, *exact, rr, gg, bb),)
        if kind in _KEYMAP_KINDS:
            reply = c.keymap((e, kind, arg))
            return (arg, (reply,)) if reply is not None else None
        value = c.replies.get((e, kind, arg))
        if value is None:
            return None
        return arg, value if isinstance(value, tuple) else (value,)

    # -- server to client -------------------------------------------------------------------

    def from_server(self, data: bytes) -> bytes:
        out = bytes(self.server.feed(data))
        if self.opening:
            self._opened()
        if self.server.at_boundary and (self.held or self.to_client):
            return out + self._release(self.done)  # (answers queued while a message streamed)
        return out

    def _opened(self) -> None:
        """Fonts whose OpenFont the server has finished: without an error (an error would
        have come first and taken it out of `opening`), so the name opens."""
        for seq in [s for s in self.opening if s <= self.done]:
            self.cache.fonts_ok.add(self.opening.pop(seq))
            self.cache.changed = True

    def _take_answers(self) -> bytes:
        out = b"".join(self.to_client)
        self.to_client.clear()
        return out

    def _release(self, done: int, below: int | None = None) -> bytes:
        """Queue the held answers whose barrier the server has finished (with `below`: also
        every one for a request before that sequence number); returns everything queued."""
        held = self.held
        while held and (held[0].barrier <= done or (below is not None and held[0].seq < below)):
            h = held.popleft()
            self.to_client.extend(h.replies)
            self.delivered = max(self.delivered, h.seq)
        return self._take_answers() if self.to_client else b""

    def _server_header(self, buf: Buffer, pos: int, kind: int, seq: int) -> int:
        """The hold policy for server messages: whether this one is read whole (HOLD)."""
        if seq > self.seq:  # the server is never ahead of the requests sent
            seq -= 0x10000
            self.server.last_seq = seq
        if seq < 0:
            raise ServerProtocolError(f"sequence number {seq & 0xFFFF} of a request not sent")
        if kind == ERROR and self.opening:
            self.opening.pop(seq, None)  # that font did not open
        # whole: to drop or relabel it, to learn from it, or to put answers before or after it
        code = kind & EVENT_CODE_MASK
        whole = (kind <= REPLY and (seq in self.swallow or seq in self.learn)) \
            or code == MAPPING_NOTIFY or seq < self.delivered \
            or (kind > REPLY and self.cache.watching
                and (code in (PROPERTY_NOTIFY, SELECTION_CLEAR, CONFIGURE_NOTIFY,
                              self.selection_event)
                     or code in self.watch_events
                     or (code == GENERIC_EVENT and buf[pos + 1] in self.watch_generic))) \
            or bool(self.held) or bool(self.to_client)
        if not whole:  # passes through as it is
            if kind == REPLY and seq in self.multi and not self.multi[seq](buf[pos + 1]):
                finished = seq - 1  # more replies to come for it
            else:
                finished = seq if kind <= REPLY else seq - 1
                if kind <= REPLY:
                    self.multi.pop(seq, None)
            self.done = max(self.done, finished)
            self.delivered = max(self.delivered, seq)
            if kind == REPLY:
                self.cache.stats.forwarded_replies += 1
        return HOLD if whole else PASS

    def _server_setup(self, msg: bytes) -> bytes:
        if msg[0] == STATUS_SUCCESS:
            self.roots = parse_roots(msg, self.e)
            self.depths = parse_depths(msg, self.e)
            self.id_base, self.id_mask = struct.unpack_from(self.e + "II", msg, 12)
            for cmap, visual in parse_screens(msg, self.e):
                if visual is not None and visual.cls == TRUE_COLOR and visual.depth < 32:
                    self.colormaps[cmap] = TrueColorMap(visual)
        return msg

    def _server_message(self, msg: bytes) -> bytes:
        kind = msg[0]
        seq = self.server.last_seq
        if kind == REPLY and seq == self.bigreq_enable:
            self.client.max_big_request = 4 * U32[self.e](msg, 8)[0]
            self.bigreq_enable = 0
        elif kind == REPLY and seq == self.xkb_use:
            self.xkb_ready = self.xkb_ready or msg[1] != 0
        # everything before `seq` is finished; answers for requests before it go first
        self.done = max(self.done, seq - 1)
        before = self._release(self.done, below=seq)
        if kind > REPLY:
            code = kind & EVENT_CODE_MASK
            if code == MAPPING_NOTIFY:
                self.cache.mapping_changed()
                self.cache.display_changed(groups=frozenset({"xkb"}))
            elif code == PROPERTY_NOTIFY:  # the client hears of it: so must the cache
                window, atom = struct.unpack_from(self.e + "II", msg, 4)
                if window in self.roots:
                    self.cache.display_changed(props=frozenset({atom}))
            elif code == CONFIGURE_NOTIFY:  # a root's: its size, or RANDR's monitors changed
                if U32[self.e](msg, 8)[0] in self.roots:
                    self.cache.display_changed(groups=frozenset({"randr"}))
            elif code in (SELECTION_CLEAR, self.selection_event):  # an owner changed
                atom, = struct.unpack_from(self.e + "I", msg, 12)
                self.cache.display_changed(groups=frozenset({f"sel:{atom}"}))
            elif code in self.watch_events:
                self.cache.display_changed(groups=self.watch_events[code])
            elif code == GENERIC_EVENT and msg[1] in self.watch_generic:
                group, types = self.watch_generic[msg[1]]
                if struct.unpack_from(self.e + "H", msg, 8)[0] in types:
                    self.cache.display_changed(groups=frozenset({group}))
            if seq < self.delivered:  # an event of its own, while our answers went ahead
                msg = _stamp(msg, self.e, self.delivered)
            self.delivered = max(self.delivered, seq)
            return before + msg + self._release(self.done)
        final = True
        if seq in self.swallow:
            final = self._compare(seq, msg)
            msg = b""
        else:
            if kind == REPLY and seq in self.learn:
                final = self._learn(seq, msg)
            elif seq in self.partial:
                final = msg[1] == 0
            if seq in self.multi:
                final = kind == ERROR or self.multi[seq](msg[1])
                if final:
                    del self.multi[seq]
            if kind == ERROR:
                learnt = self.learn.pop(seq, None)
                if learnt is not None and learnt[0] is Kind.NONE:
                    self.cache.replies[(self.e, Kind.NONE, learnt[1])] = _unstamp(msg)
                    self.cache.changed = True
                self.learn_gen.pop(seq, None)
                self.partial.pop(seq, None)
                final = True
            if kind == REPLY and final:
                self.cache.stats.forwarded_replies += 1
            self.delivered = max(self.delivered, seq)
        if final:
            self.done = max(self.done, seq)
        return before + msg + self._release(self.done)

    def _compare(self, seq: int, msg: bytes) -> bool:
        """Check the server's reply against ours; True once the request has all its replies."""
        kind, key, ours = self.swallow[seq]
        if kind is Kind.LIST_FONTS_WITH_INFO and msg[0] == REPLY:
            got = self.partial.setdefault(seq, [])
            got.append(msg)
            if msg[1] != 0:
                return False  # more to come
            del self.partial[seq]
            theirs = tuple(got)
        else:
            theirs = (msg,)
        del self.swallow[seq]
        stats = self.cache.stats
        stats.compared += 1
        if theirs != ours:
            stats.mismatches += 1
            self.cache.mismatch_log.append({
                "kind": kind.value, "key": base64.b64encode(key).decode(), "seq": seq,
                "ours": [r.hex() for r in ours], "server": [r.hex() for r in theirs]})
            self.cache.forget(kind, self.e, key)
        if self.verify:  # the client gets the server's own reply
            self.to_client.extend(theirs)
            self.delivered = max(self.delivered, seq)
        return True

    def _learn(self, seq: int, msg: bytes) -> bool:
        """Remember what the reply teaches; True once the request has all its replies."""
        kind, arg = self.learn[seq]
        c, e = self.cache, self.e
        if kind is Kind.LIST_FONTS_WITH_INFO:
            got = self.partial.setdefault(seq, [])
            got.append(msg)
            if msg[1] != 0:
                return False
            del self.partial[seq]
            del self.learn[seq]
            c.replies[(e, kind, arg)] = tuple(_unstamp(r) for r in got)
            c.changed = True
            return True
        del self.learn[seq]
        if kind is Kind.ATOM:
            c.learn_atom(arg, struct.unpack_from(e + "I", msg, 8)[0])
        elif kind is Kind.ATOM_NAME:
            n, = struct.unpack_from(e + "H", msg, 8)
            c.learn_atom(msg[32 : 32 + n], struct.unpack(">I", arg)[0])
        elif kind is Kind.ALLOC_NAMED_COLOR:
            c.colors[arg[4:]] = struct.unpack_from(e + "3H", msg, 12)
            c.changed = True
        elif kind in _KEYMAP_KINDS:
            c.learn_keymap((e, kind, arg), _unstamp(msg))
        elif seq in self.learn_gen:
            generation, scope = self.learn_gen.pop(seq)
            c.learn_watched((e, kind, arg), _unstamp(msg), scope, generation)
        else:
            if kind is Kind.LOOKUP_COLOR:
                c.colors[arg[4:]] = struct.unpack_from(e + "3H", msg, 8)
            if kind is Kind.EXTENSION:
                self._extension(arg, msg)
            c.replies[(e, kind, arg)] = _unstamp(msg)
            c.changed = True
        return True


__all__ = ["DisplayCache", "Kind", "Stats", "Suppressor", "TrueColorMap", "Visual",
           "parse_depths", "parse_roots", "parse_screens"]
