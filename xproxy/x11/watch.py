"""The display host's watch: an X client of the export's own that listens for the changes
that make a remembered answer stale (the root windows' properties, the RANDR configuration,
the XKB keyboard), so that the app host may answer those requests from its cache and forget
them when told. Pure: bytes in, requests and changes out.

Theory of operation: after the setup, select PropertyChange and StructureNotify on every
root window (RANDR's SetMonitor and DeleteMonitor send only a ConfigureNotify of the root);
intern the names of the selections toolkits look up at start (`SELECTIONS`, for every screen;
creating them: toolkits intern them anyway) and the names toolkits ask for only if they exist
(`INTERNED`: an atom that exists lasts, where the absence of one can end at any time unseen,
so the app host may answer those from its cache); and ask for RANDR, XKEYBOARD,
XInputExtension and XFIXES. Where they are present, announce versions (RANDR 1.6, XKB 1.0,
XI 2.0 and XFIXES 5, which their event selections need) and select their configuration events
(RANDR's screen, CRTC, output and output-property changes on every root; XKB's new-keyboard,
map, state, controls, indicator-map, names and compat-map changes on the core keyboard; XI's
hierarchy and device-property changes of all devices on every root; XFIXES' owner changes of
the selections). A GetInputFocus after all of them is the barrier: its reply means every
selection is in force (`ready`). From then on every event is a `Change`: a PropertyNotify on
a root window names its atom, a RANDR, XKB or XI event its group (an XKB StateNotify
"xkbstate"), a ConfigureNotify of a root window the group "randr" (with RANDR the watch
vouches for its monitors too, "monitors"), an XFIXES selection event the group `sel:ATOM`
(the app host's suppress/core.py keys its watched answers on the same atoms and groups). An
error before `ready` means the watch cannot vouch for anything (`failed`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import ServerProtocolError
from .framing import HOLD, Buffer, ServerFramer
from .opcodes import (
    CHANGE_WINDOW_ATTRIBUTES,
    CONFIGURE_NOTIFY,
    ERROR,
    EVENT_CODE_MASK,
    GET_INPUT_FOCUS,
    MAPPING_NOTIFY,
    PROPERTY_NOTIFY,
    QUERY_EXTENSION,
    REPLY,
)
from .setup import STATUS_SUCCESS, SetupRequest, parse_setup_reply

PROPERTY_CHANGE_MASK = 0x400000
STRUCTURE_NOTIFY_MASK = 0x20000
CW_EVENT_MASK = 0x800
#: RRSelectInput: ScreenChange, CrtcChange, OutputChange, OutputProperty (RANDR 1.2).
RANDR_EVENTS = 0x0F
#: XkbSelectEvents: NewKeyboard, Map, State, Controls, IndicatorMap, Names, CompatMap
#: notifies (all their details); StateNotify's XKB event type.
XKB_EVENTS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80
XKB_STATE_NOTIFY = 2
XKB_ALL_MAP_PARTS = 0xFF
XKB_USE_CORE_KBD = 0x100
#: XISelectEvents for XIAllDevices: HierarchyChanged and PropertyEvent (XI 2.0).
XI_ALL_DEVICES = 0
XI_EVENTS = (1 << 11) | (1 << 12)
GENERIC_EVENT = 35
INTERN_ATOM = 16
#: Selections whose owner is watched; `%d` is the screen number.
SELECTIONS = ("_XSETTINGS_S%d", "_NET_WM_CM_S%d", "_NET_SYSTEM_TRAY_S%d", "CLIPBOARD_MANAGER")
#: Names GTK 3 and 4 and Qt 5 intern only if they exist, at start and again and again (GTK 4:
#: _NET_WORKAREA 200 times): once interned here, the answer is an atom that lasts as long as
#: the server, known to the app host after the first ask.
INTERNED = ("_NET_WORKAREA", "_NET_CURRENT_DESKTOP", "Device Product ID")
#: XFixesSelectSelectionInput: SetSelectionOwner, SelectionWindowDestroy, SelectionClientClose.
XFIXES_SELECTION_EVENTS = 0x7


@dataclass(frozen=True, slots=True)
class Change:
    """What changed on the display: root-window properties by atom, and groups of answers."""

    props: frozenset[int] = frozenset()
    groups: frozenset[str] = frozenset()


class DisplayWatch:
    """One watching connection to the display host's X server, without I/O: `start()` gives
    the setup request, `receive(data)` takes the server's bytes and returns the changes seen,
    `data_to_send()` the requests to write."""

    def __init__(self, auth_name: bytes = b"", auth_data: bytes = b"") -> None:
        self._setup = SetupRequest(0x6C, 11, 0, auth_name, auth_data)
        self._out: list[bytes] = []
        self._framer = _Messages(self)
        self.roots: list[int] = []
        self.seq = 0
        self._queries: dict[int, bytes] = {}  # seq of a QueryExtension -> the extension
        self._barrier = 0  # seq of the closing GetInputFocus, once sent
        self.events: dict[int, str] = {}  # event code -> the group it changes
        self.generic: dict[int, str] = {}  # GenericEvent's extension -> the group it changes
        self._atoms: dict[int, bytes] = {}  # seq of an InternAtom -> the selection's name
        self.selections: set[int] = set()  # the watched selections' atoms
        self.selection_event = -1  # XFIXES' SelectionNotify
        self.groups: set[str] = {"props"}  # what this watch vouches for, once ready
        self.ready = False
        self.failed: str | None = None
        self._changes: list[Change] = []

    def start(self) -> bytes:
        self._framer.expect_setup("<")
        return self._setup.to_bytes()

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def receive(self, data: bytes) -> list[Change]:
        self._framer.feed(data)
        changes, self._changes = self._changes, []
        return changes

    def _request(self, data: bytes) -> int:
        self._out.append(data)
        self.seq += 1
        return self.seq

    def _setup_reply(self, msg: bytes) -> None:
        if msg[0] != STATUS_SUCCESS:
            self._fail(f"the X server refused the watch: {parse_setup_reply(msg, '<').reason}")
            return
        vendor_len, = struct.unpack_from("<H", msg, 24)
        n_screens, n_formats = msg[28], msg[29]
        pos = 40 + vendor_len + (-vendor_len % 4) + 8 * n_formats
        for _ in range(n_screens):
            self.roots.append(struct.unpack_from("<I", msg, pos)[0])
            n_depths = msg[pos + 39]
            pos += 40
            for _ in range(n_depths):
                n_vis, = struct.unpack_from("<H", msg, pos + 2)
                pos += 8 + 24 * n_vis
        for root in self.roots:
            self._request(struct.pack("<BxHIII", CHANGE_WINDOW_ATTRIBUTES, 4, root,
                                      CW_EVENT_MASK, PROPERTY_CHANGE_MASK | STRUCTURE_NOTIFY_MASK))
        names = {(s % n if "%" in s else s).encode() for s in SELECTIONS
                 for n in range(len(self.roots))}
        for name in sorted(names):
            padded = name + b"\0" * (-len(name) % 4)
            seq = self._request(struct.pack("<BBHH2x", INTERN_ATOM, 0, 2 + len(padded) // 4,
                                            len(name)) + padded)
            self._atoms[seq] = name
        for name in (b"RANDR", b"XKEYBOARD", b"XInputExtension", b"XFIXES"):
            padded = name + b"\0" * (-len(name) % 4)
            seq = self._request(struct.pack("<BxHH2x", QUERY_EXTENSION, 2 + len(padded) // 4,
                                            len(name)) + padded)
            self._queries[seq] = name
        for text in INTERNED:
            name = text.encode()
            padded = name + b"\0" * (-len(name) % 4)
            self._request(struct.pack("<BBHH2x", INTERN_ATOM, 0, 2 + len(padded) // 4,
                                      len(name)) + padded)

    def _extension(self, name: bytes, reply: bytes) -> None:
        if not reply[8]:
            return
        major, first_event = reply[9], reply[10]
        if name == b"RANDR":
            self._request(struct.pack("<BBHII", major, 0, 3, 1, 6))  # QueryVersion 1.6
            for root in self.roots:
                self._request(struct.pack("<BBHIH2x", major, 4, 3, root, RANDR_EVENTS))
            self.events[first_event] = self.events[first_event + 1] = "randr"
            self.groups |= {"randr", "monitors"}
        elif name == b"XFIXES":
            self._request(struct.pack("<BBHII", major, 0, 3, 5, 0))  # QueryVersion 5.0
            for atom in sorted(self.selections):
                self._request(struct.pack("<BBHIII", major, 2, 4, self.roots[0], atom,
                                          XFIXES_SELECTION_EVENTS))
                self.groups.add(f"sel:{atom}")
            self.selection_event = first_event
        elif name == b"XInputExtension":
            self._request(struct.pack("<BBHHH", major, 47, 2, 2, 0))  # XIQueryVersion 2.0
            for root in self.roots:
                self._request(struct.pack("<BBHIH2xHHI", major, 46, 5, root, 1, XI_ALL_DEVICES,
                                          1, XI_EVENTS))
            self.generic[major] = "xi"
            self.groups.add("xi")
        else:
            self._request(struct.pack("<BBHHH", major, 0, 2, 1, 0))  # UseExtension 1.0
            self._request(struct.pack("<BBHHHHHHH", major, 1, 4, XKB_USE_CORE_KBD, XKB_EVENTS,
                                      0, XKB_EVENTS, XKB_ALL_MAP_PARTS, XKB_ALL_MAP_PARTS))
            self.events[first_event] = "xkb"
            self.groups |= {"xkb", "xkbstate"}

    def _message(self, msg: bytes) -> None:
        kind = msg[0]
        seq = self._framer.last_seq
        if kind == ERROR:
            if not self.ready:
                self._fail(f"the X server refused the watch's request {seq} "
                           f"(error {msg[1]}, major {msg[10]})")
            return
        if kind == REPLY:
            if seq in self._atoms:
                del self._atoms[seq]
                self.selections.add(struct.unpack_from("<I", msg, 8)[0])
                return
            name = self._queries.pop(seq, None)
            if name is not None:
                self._extension(name, msg)
                if not self._queries:
                    self._barrier = self._request(struct.pack("<BxH", GET_INPUT_FOCUS, 1))
            elif seq == self._barrier and self.failed is None:
                self.ready = True
            return
        code = kind & EVENT_CODE_MASK
        if code == PROPERTY_NOTIFY:
            window, atom = struct.unpack_from("<II", msg, 4)
            if window in self.roots:
                self._changes.append(Change(props=frozenset({atom})))
        elif code == CONFIGURE_NOTIFY:
            if struct.unpack_from("<I", msg, 8)[0] in self.roots:
                self._changes.append(Change(groups=frozenset({"randr"})))
        elif code in self.events:
            group = self.events[code]
            if group == "xkb" and msg[1] == XKB_STATE_NOTIFY:
                group = "xkbstate"  # a modifier, group or button: not the keymap
            self._changes.append(Change(groups=frozenset({group})))
        elif code == self.selection_event:
            atom, = struct.unpack_from("<I", msg, 12)
            self._changes.append(Change(groups=frozenset({f"sel:{atom}"})))
        elif code == GENERIC_EVENT and msg[1] in self.generic \
                and struct.unpack_from("<H", msg, 8)[0] in (11, 12):
            self._changes.append(Change(groups=frozenset({self.generic[msg[1]]})))
        elif code == MAPPING_NOTIFY:
            self._changes.append(Change(groups=frozenset({"xkb"})))

    def _fail(self, why: str) -> None:
        if self.failed is None:
            self.failed = why


class _Messages(ServerFramer):
    """The server's stream to the watch, every message read whole (they are few)."""

    def __init__(self, watch: DisplayWatch) -> None:
        super().__init__()
        self.watch = watch

    def _sequenced(self, buf: Buffer, pos: int, kind: int, seq: int) -> int:
        if seq > self.watch.seq:
            seq -= 0x10000
            self.last_seq = seq
        if seq < 0:
            raise ServerProtocolError(f"sequence number {seq & 0xFFFF} of a request not sent")
        return HOLD

    def _unsequenced(self, buf: Buffer, pos: int, kind: int) -> int:
        return HOLD

    def _message(self, msg: bytes) -> bytes:
        if self.in_setup:
            self.in_setup = False
            self.watch._setup_reply(msg)
        else:
            self.watch._message(msg)
        return b""


def merge(changes: list[Change]) -> Change:
    """The changes of one read, as one."""
    props: set[int] = set()
    groups: set[str] = set()
    for c in changes:
        props |= c.props
        groups |= c.groups
    return Change(frozenset(props), frozenset(groups))


__all__ = ["Change", "DisplayWatch", "merge"]
