"""What a client of a movable display has made on its server, learned from its requests
(in virtual values, as the client sent them) and a few replies: enough to make it all again
on another server (planner.py). Raw creation requests are kept, as xmove and nxagent do;
attribute and GC changes are merged into one value per mask bit, so what is kept is bounded
by what the client holds, and a freed resource is forgotten.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..x11 import opcodes as op
from . import fields as f


@dataclass
class Window:
    wid: int
    parent: int
    depth: int
    wclass: int
    visual: int  # 0: CopyFromParent
    x: int
    y: int
    width: int
    height: int
    border: int
    values: dict[int, int] = field(default_factory=dict)  # attribute bit -> value
    properties: set[int] = field(default_factory=set)  # atoms the client set on it
    shaped: set[int] = field(default_factory=set)  # SHAPE kinds the client set
    shape_events: bool = False
    mapped: bool = False


@dataclass
class Pixmap:
    pid: int
    depth: int
    width: int
    height: int
    freed: bool = False  # freed by the client, kept for a cursor made from it


@dataclass
class GC:
    gid: int
    drawable: int
    values: dict[int, int] = field(default_factory=dict)
    clip_rectangles: bytes | None = None  # the last SetClipRectangles, raw
    dashes: bytes | None = None  # the last SetDashes, raw
    depth: int = 0  # of the drawable it was made for (which may be freed before the GC)


@dataclass
class Colormap:
    create: bytes
    visual: int
    cells: dict[int, bytes] = field(default_factory=dict)  # pixel -> AllocColor/AllocNamedColor


@dataclass
class Cursor:
    create: bytes
    recolor: bytes | None = None
    pixmaps: tuple[int, ...] = ()
    #: OpenFont requests of the fonts a glyph cursor was made from (which the client may
    #: close once the cursor is made, as Xlib does): opened again around a move's CreateGlyphCursor
    fonts: tuple[bytes, ...] = ()
    picture: int = 0  # RENDER CreateCursor: the picture it was made from
    frames: tuple[int, ...] = ()  # RENDER CreateAnimCursor: the cursors it shows
    freed: bool = False  # freed by the client, kept for an animated cursor made from it
    name: bytes | None = None  # XFIXES SetCursorName, raw


@dataclass
class Picture:
    """A RENDER picture: on a drawable (values merged per bit) or a fill (raw request)."""

    drawable: int
    format: int
    values: dict[int, int] = field(default_factory=dict)
    fill: bytes | None = None  # CreateSolidFill or Create*Gradient, raw
    clip_rectangles: bytes | None = None
    transform: bytes | None = None
    filter: bytes | None = None
    freed: bool = False  # freed by the client, kept for a cursor made from it


@dataclass
class GlyphAdds:
    """One AddGlyphs request, kept while a glyph it added is in its set."""

    request: bytes
    ids: tuple[int, ...]
    live: set[int]


@dataclass
class GlyphSet:
    """A RENDER glyph set (shared by the ids ReferenceGlyphSet gives it): RENDER cannot
    read glyphs back, so the AddGlyphs requests that made its glyphs are kept."""

    format: int
    ids: set[int] = field(default_factory=set)
    adds: dict[int, GlyphAdds] = field(default_factory=dict)
    holder: dict[int, int] = field(default_factory=dict)  # glyph -> key in adds
    size: int = 0  # bytes kept in adds
    #: glyphs beyond the client's bound were not kept: a move is refused while it lives
    incomplete: bool = False


#: Bytes of AddGlyphs requests kept per client (RENDER cannot read glyphs back), with
#: GLYPH_OVERHEAD per glyph; a glyph set whose glyphs would pass it is marked incomplete
#: and a move is refused while it lives.
MAX_GLYPH_BYTES = 32 << 20
#: What the proxy's bookkeeping of one glyph costs, counted with its AddGlyphs bytes.
GLYPH_OVERHEAD = 128


def _glyph_cost(raw: bytes, ids: tuple[int, ...]) -> int:
    return len(raw) + GLYPH_OVERHEAD * len(ids)


#: XKB SelectEvents and PerClientFlags requests kept (one per kind); the oldest goes first.
MAX_XKB_SELECTS = 256
#: Core passive grabs and XInputExtension event selections, cursors and passive grabs kept,
#: each (the oldest goes first); and the bytes of a selection's mask kept (XI 2.4's events
#: fit in 8).
MAX_XI_KEPT = 1024
XI_MASK_BYTES = 16


def _keep(table: dict[Any, bytes], key: Any, value: bytes) -> None:
    """Keep `value` as the newest in `table`, dropping the oldest past MAX_XI_KEPT."""
    table.pop(key, None)
    table[key] = value
    if len(table) > MAX_XI_KEPT:
        del table[next(iter(table))]


class Tracker:
    """Everything one client made and holds, by virtual id."""

    def __init__(self, endian: str, root: int, root_visual: int, root_depth: int,
                 static_visuals: frozenset[int] = frozenset()) -> None:
        self.endian = endian
        #: visuals whose colormaps are read-only (TrueColor, StaticColor, StaticGray): a
        #: cell allocated in one is the pixel it names on any server, so none is kept
        self.static_visuals = static_visuals
        self._u16 = struct.Struct(endian + "H").unpack_from
        self._u32 = struct.Struct(endian + "I").unpack_from
        self.root = root
        self.root_visual = root_visual
        self.root_depth = root_depth
        self.windows: dict[int, Window] = {}
        self.pixmaps: dict[int, Pixmap] = {}
        self.gcs: dict[int, GC] = {}
        self.fonts: dict[int, bytes] = {}  # font id -> OpenFont request
        self.cursors: dict[int, Cursor] = {}
        self.colormaps: dict[int, Colormap] = {}
        self.default_cells: dict[tuple[int, int], bytes] = {}  # (colormap, pixel) -> request
        self.grabs: dict[tuple[int, int, int, int], bytes] = {}  # passive grabs, raw
        #: the core events the client selected on the root window (a move selects them on
        #: the target's root)
        self.root_events = 0
        self.selections: dict[int, int] = {}  # selection atom -> owner window
        self.focus: int | None = None
        self.pictures: dict[int, Picture] = {}
        self.glyphsets: dict[int, GlyphSet] = {}  # every id, several may share one set
        self.glyph_bytes = 0
        self.render_version: bytes | None = None  # the client's RENDER QueryVersion
        self._glyph_keys = 0
        self.xfixes_version: bytes | None = None  # the client's XFIXES QueryVersion
        self.regions: dict[int, bool] = {}  # XFIXES regions (read back with FetchRegion)
        #: XFIXES SelectSelectionInput by (window, selection), SelectCursorInput by window
        self.selection_inputs: dict[tuple[int, int], bytes] = {}
        self.cursor_inputs: dict[int, bytes] = {}
        #: XKB: UseExtension, then the last SelectEvents and PerClientFlags of each kind
        #: (device, what it changes), raw, oldest first
        self.xkb_use: bytes | None = None
        self.xkb_selects: dict[tuple[int, ...], bytes] = {}
        #: XInputExtension: whether the client sent any of its requests; the XI 1 requests it
        #: sent (a move does not carry them) by minor opcode; each version request it made
        #: (GetExtensionVersion, XIQueryVersion) by minor: (raw, the version it was given);
        #: XISelectEvents masks by (window, device); XIChangeCursor and XIPassiveGrabDevice
        #: requests, raw, by (window, device) and (window, device, grab type, detail)
        self.xi_used = False
        self.xi1_used: set[int] = set()
        self.xi_versions: dict[int, tuple[bytes, bytes]] = {}
        self.xi_selects: dict[tuple[int, int], bytes] = {}
        self.xi_cursors: dict[tuple[int, int], bytes] = {}
        self.xi_grabs: dict[tuple[int, int, int, int], bytes] = {}
        self.server_grabbed = False
        self.big_requests = False
        self.extensions_used: set[str] = set()
        self.atom_names: dict[int, bytes] = {}  # virtual atom -> name, from InternAtom
        self.atoms_used: set[int] = set()  # atoms in the client's requests
        self._pending: dict[int, tuple[int, bytes]] = {}  # seq -> (opcode, request)
        #: creations not yet known to have worked: (seq, table, id), oldest first
        self._unconfirmed: deque[tuple[int, dict[int, Any], int]] = deque()

    # -- requests ---------------------------------------------------------------------------
    def request(self, seq: int, msg: bytes, ext_name: str | None = None) -> bytes | None:
        """Note a request; returns bytes to send instead, when the request must change."""
        opcode = msg[0]
        if ext_name is not None:
            return self._ext_request(seq, ext_name, msg)
        if self._u16(msg, 2)[0] == 0:  # BIG-REQUESTS form: fields 4 bytes further on
            if opcode == op.CHANGE_PROPERTY:
                self._property(seq, msg[:4] + msg[8:32])
            elif opcode == op.SET_CLIP_RECTANGLES:
                gc = self.gcs.get(self._word(msg, 8))
                if gc is not None:
                    gc.clip_rectangles = msg  # (made again in this form: BIG-REQUESTS is on)
                    gc.values.pop(19, None)
            return None
        handler = _HANDLERS.get(opcode)
        if handler is not None:
            out = handler(self, seq, msg)
            table = _CREATES.get(opcode)
            if table is not None:
                self._unconfirmed.append((seq, getattr(self, table), self._word(msg, 4)))
            return out
        return None

    def confirm(self, seq: int) -> None:
        """The server has sent a message numbered `seq`: requests before it worked."""
        q = self._unconfirmed
        while q and q[0][0] < seq:
            q.popleft()

    def _word(self, msg: bytes, at: int) -> int:
        return self._u32(msg, at)[0] if at + 4 <= len(msg) else 0

    def _values(self, msg: bytes, at: int, mask: int) -> dict[int, int]:
        out = {}
        pos = at
        for bit in range(32):
            if mask & (1 << bit):
                if pos + 4 > len(msg):
                    break
                out[bit] = self._u32(msg, pos)[0]
                pos += 4
        return out

    def _create_window(self, seq: int, msg: bytes) -> None:
        wid, parent = self._word(msg, 4), self._word(msg, 8)
        x, y, w, h, border, wclass = struct.unpack_from(self.endian + "hhHHHH", msg, 12)
        visual, mask = self._word(msg, 24), self._word(msg, 28)
        depth = msg[1]
        if depth == 0 or visual == 0:
            p = self.windows.get(parent)
            if depth == 0 and wclass != 2:
                depth = p.depth if p is not None else self.root_depth
            if visual == 0:
                visual = (p.visual if p is not None else self.root_visual)
        self.windows[wid] = Window(wid, parent, depth, wclass, visual, x, y, w, h, border,
                                   self._values(msg, 32, mask))

    def ours(self, wid: int) -> bool:
        """Whether a move carries what the client holds on window `wid`: one it made, or
        the root (its selected events, passive grabs, XFIXES and XI inputs)."""
        return wid in self.windows or wid == self.root

    def _change_attributes(self, seq: int, msg: bytes) -> None:
        wid = self._word(msg, 4)
        w = self.windows.get(wid)
        if w is not None:
            w.values.update(self._values(msg, 12, self._word(msg, 8)))
        elif wid == self.root:
            mask = self._values(msg, 12, self._word(msg, 8)).get(f.EVENT_MASK_BIT)
            if mask is not None:
                self.root_events = mask

    def _destroy_window(self, seq: int, msg: bytes) -> None:
        self._forget_tree(self._word(msg, 4), include_self=True)

    def _destroy_subwindows(self, seq: int, msg: bytes) -> None:
        self._forget_tree(self._word(msg, 4), include_self=False)

    def _forget_tree(self, top: int, include_self: bool) -> None:
        children: dict[int, list[int]] = {}
        for w in self.windows.values():
            children.setdefault(w.parent, []).append(w.wid)
        todo = [top] if include_self else list(children.get(top, ()))
        while todo:
            wid = todo.pop()
            if self.windows.pop(wid, None) is not None:
                todo.extend(children.get(wid, ()))
                for key in [k for k in self.grabs if k[0] == wid]:
                    del self.grabs[key]
                # (the server frees the pictures of a window it destroys)
                for pid in [p for p, pic in self.pictures.items() if pic.drawable == wid]:
                    del self.pictures[pid]
                for skey in [k for k in self.selection_inputs if k[0] == wid]:
                    del self.selection_inputs[skey]
                self.cursor_inputs.pop(wid, None)
                xi: tuple[dict[Any, bytes], ...] = (self.xi_selects, self.xi_cursors,
                                                    self.xi_grabs)
                for table in xi:
                    for xkey in [k for k in table if k[0] == wid]:
                        del table[xkey]

    def _reparent(self, seq: int, msg: bytes) -> None:
        w = self.windows.get(self._word(msg, 4))
        if w is not None:
            w.parent = self._word(msg, 8)

    def _map(self, seq: int, msg: bytes) -> None:
        w = self.windows.get(self._word(msg, 4))
        if w is not None:
            w.mapped = msg[0] == op.MAP_WINDOW

    def _property(self, seq: int, msg: bytes) -> None:
        w = self.windows.get(self._word(msg, 4))
        atom = self._word(msg, 8)
        self.atoms_used.add(atom)
        if msg[0] == op.CHANGE_PROPERTY:
            self.atoms_used.add(self._word(msg, 12))
        if w is not None:
            if msg[0] == op.CHANGE_PROPERTY:
                w.properties.add(atom)
            else:
                w.properties.discard(atom)

    def _selection_owner(self, seq: int, msg: bytes) -> None:
        owner, selection = self._word(msg, 4), self._word(msg, 8)
        self.atoms_used.add(selection)
        if owner in self.windows:
            self.selections[selection] = owner
        else:
            self.selections.pop(selection, None)

    def _intern(self, seq: int, msg: bytes) -> None:
        self._pending[seq] = (msg[0], msg)

    def _create_pixmap(self, seq: int, msg: bytes) -> None:
        pid = self._word(msg, 4)
        w, h = struct.unpack_from(self.endian + "HH", msg, 12)
        self.pixmaps[pid] = Pixmap(pid, msg[1], w, h)

    def _free_pixmap(self, seq: int, msg: bytes) -> bytes | None:
        pid = self._word(msg, 4)
        p = self.pixmaps.get(pid)
        if p is None:
            return None
        if self._referenced(pid):
            # A cursor, a window background or a GC tile made from it lives on, and a move
            # must make it again: the pixmap stays on the server (the request becomes a
            # NoOperation, so sequence numbers stay as the client counts them) until the
            # client disconnects.
            p.freed = True
            return bytes((op.NO_OPERATION,)) + msg[1:]
        del self.pixmaps[pid]
        return None

    def _referenced(self, pid: int) -> bool:
        return (any(pid in c.pixmaps for c in self.cursors.values())
                or any(p.drawable == pid or p.values.get(6) == pid
                       for p in self.pictures.values())
                or any(w.values.get(0) == pid or w.values.get(2) == pid
                       for w in self.windows.values())
                or any(g.values.get(10) == pid or g.values.get(11) == pid
                       or g.values.get(19) == pid for g in self.gcs.values()))

    def _create_gc(self, seq: int, msg: bytes) -> None:
        gid = self._word(msg, 4)
        drawable = self._word(msg, 8)
        w, p = self.windows.get(drawable), self.pixmaps.get(drawable)
        depth = w.depth if w is not None else p.depth if p is not None else self.root_depth
        self.gcs[gid] = GC(gid, drawable, self._values(msg, 16, self._word(msg, 12)),
                           depth=depth)

    def _change_gc(self, seq: int, msg: bytes) -> None:
        gc = self.gcs.get(self._word(msg, 4))
        if gc is not None:
            values = self._values(msg, 12, self._word(msg, 8))
            gc.values.update(values)
            if 19 in values:
                gc.clip_rectangles = None
            if 21 in values:
                gc.dashes = None

    def _copy_gc(self, seq: int, msg: bytes) -> None:
        src, dst = self.gcs.get(self._word(msg, 4)), self.gcs.get(self._word(msg, 8))
        if src is None or dst is None:
            return
        mask = self._word(msg, 12)
        for bit in range(23):
            if mask & (1 << bit):
                if bit in src.values:
                    dst.values[bit] = src.values[bit]
                else:
                    dst.values.pop(bit, None)
        if mask & (1 << 19):
            dst.clip_rectangles = src.clip_rectangles
        if mask & (1 << 21):
            dst.dashes = src.dashes

    def _gc_list(self, seq: int, msg: bytes) -> None:
        gc = self.gcs.get(self._word(msg, 4))
        if gc is not None:
            if msg[0] == op.SET_CLIP_RECTANGLES:
                gc.clip_rectangles = msg
                gc.values.pop(19, None)
            else:
                gc.dashes = msg

    def _free_gc(self, seq: int, msg: bytes) -> None:
        self.gcs.pop(self._word(msg, 4), None)

    def _open_font(self, seq: int, msg: bytes) -> None:
        self.fonts[self._word(msg, 4)] = msg

    def _close_font(self, seq: int, msg: bytes) -> None:
        self.fonts.pop(self._word(msg, 4), None)

    def _create_cursor(self, seq: int, msg: bytes) -> None:
        pixmaps: tuple[int, ...] = ()
        fonts: tuple[bytes, ...] = ()
        if msg[0] == op.CREATE_CURSOR:
            pixmaps = (self._word(msg, 8), self._word(msg, 12))
        else:
            ids = {self._word(msg, 8), self._word(msg, 12)} - {0}
            fonts = tuple(self.fonts[i] for i in sorted(ids) if i in self.fonts)
        self.cursors[self._word(msg, 4)] = Cursor(msg, None, pixmaps, fonts)

    def _recolor_cursor(self, seq: int, msg: bytes) -> None:
        c = self.cursors.get(self._word(msg, 4))
        if c is not None:
            c.recolor = msg

    def _free_cursor(self, seq: int, msg: bytes) -> bytes | None:
        cid = self._word(msg, 4)
        c = self.cursors.get(cid)
        if c is None:
            return None
        if any(cid in other.frames for other in self.cursors.values()):
            c.freed = True  # an animated cursor shows it: kept on the server, as pixmaps are
            return bytes((op.NO_OPERATION,)) + msg[1:]
        self._forget_cursor(cid)
        return None

    def _forget_cursor(self, cid: int) -> None:
        c = self.cursors.pop(cid, None)
        if c is None:
            return
        for pid in c.pixmaps:  # a pixmap freed but kept for this cursor: forget it now
            self._forget_freed_pixmap(pid)
        picture = self.pictures.get(c.picture) if c.picture else None
        if picture is not None and picture.freed and not self._picture_referenced(c.picture):
            self._forget_picture(c.picture)
        for frame in c.frames:
            other = self.cursors.get(frame)
            if other is not None and other.freed and not any(
                    frame in x.frames for x in self.cursors.values()):
                self._forget_cursor(frame)

    def _forget_freed_pixmap(self, pid: int) -> None:
        p = self.pixmaps.get(pid)
        if p is not None and p.freed and not self._referenced(pid):
            del self.pixmaps[pid]

    def _create_colormap(self, seq: int, msg: bytes) -> None:
        self.colormaps[self._word(msg, 4)] = Colormap(msg, self._word(msg, 12))

    def _free_colormap(self, seq: int, msg: bytes) -> None:
        self.colormaps.pop(self._word(msg, 4), None)
        for key in [k for k in self.default_cells if k[0] == self._word(msg, 4)]:
            del self.default_cells[key]

    def _alloc(self, seq: int, msg: bytes) -> None:
        self._pending[seq] = (msg[0], msg)

    def _free_colors(self, seq: int, msg: bytes) -> None:
        cmap = self._word(msg, 4)
        pixels = {self._u32(msg, at)[0] for at in range(12, len(msg) - 3, 4)}
        for pixel in pixels:
            self.default_cells.pop((cmap, pixel), None)
            c = self.colormaps.get(cmap)
            if c is not None:
                c.cells.pop(pixel, None)

    def _grab(self, seq: int, msg: bytes) -> None:
        if msg[0] == op.GRAB_BUTTON:
            key = (self._word(msg, 4), 0, msg[20], self._u16(msg, 22)[0])
        else:
            key = (self._word(msg, 4), 1, msg[10], self._u16(msg, 8)[0])
        if self.ours(key[0]):
            _keep(self.grabs, key, msg)

    def _ungrab(self, seq: int, msg: bytes) -> None:
        window = self._word(msg, 4)
        kind = 0 if msg[0] == op.UNGRAB_BUTTON else 1
        detail, mods = msg[1], self._u16(msg, 8)[0]
        for key in [k for k in self.grabs if k[0] == window and k[1] == kind]:
            if detail in (0, key[2]) and mods in (0x8000, key[3]):
                del self.grabs[key]

    def _set_focus(self, seq: int, msg: bytes) -> None:
        focus = self._word(msg, 4)
        self.focus = focus if focus in self.windows else None

    def _server_grab(self, seq: int, msg: bytes) -> None:
        self.server_grabbed = msg[0] == op.GRAB_SERVER

    def _query_extension(self, seq: int, msg: bytes) -> None:
        self._pending[seq] = (msg[0], msg)

    def _ext_request(self, seq: int, name: str, msg: bytes) -> bytes | None:
        if name == f.BIG_REQUESTS:
            self.big_requests = True
            return None
        if name == f.RENDER:
            return self._render(seq, msg)
        if name == f.XFIXES:
            self._xfixes(seq, msg)
            return None
        if name == f.XKB:
            self._xkb(msg)
            return None
        if name == f.XI:
            self._xi(seq, msg)
            return None
        if name != f.SHAPE:
            return None
        minor = msg[1]
        if minor in (f.SHAPE_RECTANGLES, f.SHAPE_MASK, f.SHAPE_COMBINE):
            w = self.windows.get(self._word(msg, 8))
            if w is not None:
                w.shaped.add(msg[5])
        elif minor == f.SHAPE_SELECT_INPUT:
            w = self.windows.get(self._word(msg, 4))
            if w is not None:
                w.shape_events = bool(msg[8])
        return None

    def _xkb(self, raw: bytes) -> None:
        msg = raw[:4] + raw[8:] if self._u16(raw, 2)[0] == 0 else raw
        minor = msg[1]
        if minor == f.XKB_USE_EXTENSION:
            self.xkb_use = raw
        elif minor in (f.XKB_SELECT_EVENTS, f.XKB_PER_CLIENT_FLAGS) and len(msg) >= 16:
            # A later request of the same kind sets all of what an earlier one set:
            # SelectEvents by device, affectWhich and affectMap; PerClientFlags by device,
            # change and ctrlsToChange.
            device, which, _clear, _all, affect_map = struct.unpack_from(
                self.endian + "HHHHH", msg, 4)
            key = (minor, device, which, affect_map)
            if minor == f.XKB_PER_CLIENT_FLAGS:
                key = (minor, device, self._word(msg, 8), self._word(msg, 16))
            self.xkb_selects.pop(key, None)
            self.xkb_selects[key] = raw
            if len(self.xkb_selects) > MAX_XKB_SELECTS:
                del self.xkb_selects[next(iter(self.xkb_selects))]

    def _xi(self, seq: int, raw: bytes) -> None:
        msg = raw[:4] + raw[8:] if self._u16(raw, 2)[0] == 0 else raw
        minor = msg[1]
        self.xi_used = True
        if minor in (f.XI_GET_EXTENSION_VERSION, f.XI_QUERY_VERSION):
            self._pending[seq] = (_XI_VERSION, raw)
            return
        if minor < f.XI_QUERY_POINTER:
            self.xi1_used.add(minor)
            return
        wid = self._word(msg, 4)
        ours = self.ours(wid)
        if minor == f.XI_SELECT_EVENTS:
            (n,) = self._u16(msg, 8) if len(msg) >= 10 else (0,)
            pos = 12
            for _ in range(n):
                if pos + 4 > len(msg):
                    break
                device, size = struct.unpack_from(self.endian + "HH", msg, pos)
                mask = bytes(msg[pos + 4 : pos + 4 + min(4 * size, XI_MASK_BYTES)])
                pos += 4 + 4 * size
                if ours and any(mask):
                    _keep(self.xi_selects, (wid, device), mask)
                else:
                    self.xi_selects.pop((wid, device), None)
        elif minor == f.XI_CHANGE_CURSOR and len(msg) >= 14:
            key = (wid, self._u16(msg, 12)[0])
            if ours and self._word(msg, 8):
                _keep(self.xi_cursors, key, raw)
            else:
                self.xi_cursors.pop(key, None)
        elif minor == f.XI_PASSIVE_GRAB_DEVICE and len(msg) >= 28:
            wid = self._word(msg, 8)
            gkey = (wid, self._u16(msg, 20)[0], msg[26], self._word(msg, 16))
            if self.ours(wid):
                _keep(self.xi_grabs, gkey, raw)
        elif minor == f.XI_PASSIVE_UNGRAB_DEVICE and len(msg) >= 17:
            # (all the grab's modifiers at once: an ungrab of some of them ends it here)
            self.xi_grabs.pop((wid, self._u16(msg, 12)[0], msg[16], self._word(msg, 8)), None)

    def _xfixes(self, seq: int, raw: bytes) -> None:
        msg = raw[:4] + raw[8:] if self._u16(raw, 2)[0] == 0 else raw
        minor = msg[1]
        rid = self._word(msg, 4)
        if minor == f.XFIXES_QUERY_VERSION:
            self.xfixes_version = raw
        elif minor in f.XFIXES_CREATES_REGION:
            self.regions[rid] = True
            self._unconfirmed.append((seq, self.regions, rid))
        elif minor == f.XFIXES_DESTROY_REGION:
            self.regions.pop(rid, None)
        elif minor == f.XFIXES_SELECT_SELECTION_INPUT:
            selection = self._word(msg, 8)
            self.atoms_used.add(selection)
            if self.ours(rid) and self._word(msg, 12):
                self.selection_inputs[(rid, selection)] = raw
            else:
                self.selection_inputs.pop((rid, selection), None)
        elif minor == f.XFIXES_SELECT_CURSOR_INPUT:
            if self.ours(rid) and self._word(msg, 8):
                self.cursor_inputs[rid] = raw
            else:
                self.cursor_inputs.pop(rid, None)
        elif minor == f.XFIXES_SET_WINDOW_SHAPE_REGION:
            w = self.windows.get(rid)
            if w is not None:
                w.shaped.add(msg[8])
        elif minor == f.XFIXES_SET_CURSOR_NAME:
            c = self.cursors.get(rid)
            if c is not None:
                c.name = raw

    def _render(self, seq: int, raw: bytes) -> bytes | None:
        """A RENDER request (raw; `msg` is it without the BIG-REQUESTS length word)."""
        msg = raw[:4] + raw[8:] if self._u16(raw, 2)[0] == 0 else raw
        minor = msg[1]
        rid = self._word(msg, 4)
        if minor == f.RENDER_QUERY_VERSION:
            self.render_version = raw
        elif minor == f.RENDER_CREATE_PICTURE:
            self.pictures[rid] = Picture(self._word(msg, 8), self._word(msg, 12),
                                         self._values(msg, 20, self._word(msg, 16)))
            self._unconfirmed.append((seq, self.pictures, rid))
        elif minor in (f.RENDER_CREATE_SOLID_FILL, f.RENDER_CREATE_LINEAR_GRADIENT,
                       f.RENDER_CREATE_RADIAL_GRADIENT, f.RENDER_CREATE_CONICAL_GRADIENT):
            self.pictures[rid] = Picture(0, 0, fill=raw)
            self._unconfirmed.append((seq, self.pictures, rid))
        elif minor in (f.RENDER_CHANGE_PICTURE, f.RENDER_SET_PICTURE_CLIP_RECTANGLES,
                       f.RENDER_SET_PICTURE_TRANSFORM, f.RENDER_SET_PICTURE_FILTER):
            p = self.pictures.get(rid)
            if p is None:
                return None
            if minor == f.RENDER_CHANGE_PICTURE:
                values = self._values(msg, 12, self._word(msg, 8))
                p.values.update(values)
                if f.PICTURE_CLIP_MASK_BIT in values:
                    p.clip_rectangles = None
            elif minor == f.RENDER_SET_PICTURE_CLIP_RECTANGLES:
                p.clip_rectangles = raw
                p.values.pop(f.PICTURE_CLIP_MASK_BIT, None)
            elif minor == f.RENDER_SET_PICTURE_TRANSFORM:
                p.transform = raw
            else:
                p.filter = raw
        elif minor == f.RENDER_FREE_PICTURE:
            if rid not in self.pictures:
                return None
            if self._picture_referenced(rid):
                # A cursor made from it lives on and a move must make it again: the picture
                # stays on the server (a NoOperation keeps sequence numbers) until the
                # client disconnects.
                self.pictures[rid].freed = True
                return bytes((op.NO_OPERATION,)) + raw[1:]
            self._forget_picture(rid)
        elif minor == f.RENDER_CREATE_CURSOR:
            self.cursors[rid] = Cursor(raw, picture=self._word(msg, 8))
            self._unconfirmed.append((seq, self.cursors, rid))
        elif minor == f.RENDER_CREATE_ANIM_CURSOR:
            frames = tuple(self._word(msg, at) for at in range(8, len(msg) - 7, 8))
            self.cursors[rid] = Cursor(raw, frames=frames)
            self._unconfirmed.append((seq, self.cursors, rid))
        elif minor == f.RENDER_CREATE_GLYPH_SET:
            self.glyphsets[rid] = GlyphSet(self._word(msg, 8), {rid})
            self._unconfirmed.append((seq, self.glyphsets, rid))
        elif minor == f.RENDER_REFERENCE_GLYPH_SET:
            gs = self.glyphsets.get(self._word(msg, 8))
            if gs is not None:
                gs.ids.add(rid)
                self.glyphsets[rid] = gs
        elif minor == f.RENDER_FREE_GLYPH_SET:
            gs = self.glyphsets.pop(rid, None)
            if gs is not None:
                gs.ids.discard(rid)
                if not gs.ids:
                    self.glyph_bytes -= gs.size
        elif minor == f.RENDER_ADD_GLYPHS:
            self._add_glyphs(rid, raw, msg)
        elif minor == f.RENDER_FREE_GLYPHS:
            gs = self.glyphsets.get(rid)
            if gs is not None:
                for at in range(8, len(msg) - 3, 4):
                    self._drop_glyph(gs, self._u32(msg, at)[0])
        return None

    def _add_glyphs(self, gsid: int, raw: bytes, msg: bytes) -> None:
        gs = self.glyphsets.get(gsid)
        if gs is None:
            return
        n = self._word(msg, 8)
        ids = tuple(self._u32(msg, 12 + 4 * i)[0] for i in range(min(n, (len(msg) - 12) // 4)))
        for g in ids:
            self._drop_glyph(gs, g)
        if gs.incomplete:
            return
        cost = _glyph_cost(raw, ids)
        if self.glyph_bytes + cost > MAX_GLYPH_BYTES:
            gs.incomplete = True
            self.glyph_bytes -= gs.size
            gs.adds.clear()
            gs.holder.clear()
            gs.size = 0
            return
        self._glyph_keys += 1
        key = self._glyph_keys
        gs.adds[key] = GlyphAdds(raw, ids, set(ids))
        for g in ids:
            gs.holder[g] = key
        gs.size += cost
        self.glyph_bytes += cost

    def _drop_glyph(self, gs: GlyphSet, glyph: int) -> None:
        key = gs.holder.pop(glyph, None)
        if key is None:
            return
        adds = gs.adds[key]
        adds.live.discard(glyph)
        if not adds.live:
            del gs.adds[key]
            cost = _glyph_cost(adds.request, adds.ids)
            gs.size -= cost
            self.glyph_bytes -= cost

    def _picture_referenced(self, pid: int) -> bool:
        return any(c.picture == pid for c in self.cursors.values())

    def _forget_picture(self, pid: int) -> None:
        p = self.pictures.pop(pid, None)
        if p is not None:
            self._forget_freed_pixmap(p.drawable)
            if p.values.get(f.PICTURE_CLIP_MASK_BIT):
                self._forget_freed_pixmap(p.values[f.PICTURE_CLIP_MASK_BIT])

    # -- replies ------------------------------------------------------------------------------
    def reply(self, seq: int, msg: bytes | bytearray) -> None:
        """A reply (virtual values) to the request numbered `seq`."""
        pending = self._pending.pop(seq, None)
        if pending is None:
            return
        opcode, request = pending
        if opcode == op.INTERN_ATOM:
            atom = self._u32(msg, 8)[0]
            n = self._u16(request, 4)[0]
            if atom:
                self.atom_names[atom] = bytes(request[8 : 8 + n])
        elif opcode == _XI_VERSION:
            self.xi_versions[request[1]] = (request, bytes(msg[8:12]))
        elif opcode == op.QUERY_EXTENSION:
            n = self._u16(request, 4)[0]
            if msg[8]:
                self.extensions_used.add(bytes(request[8 : 8 + n]).decode("latin-1"))
        elif opcode in (op.ALLOC_COLOR, op.ALLOC_NAMED_COLOR):
            cmap = self._word(request, 4)
            pixel = self._u32(msg, 8 if opcode == op.ALLOC_NAMED_COLOR else 16)[0]
            c = self.colormaps.get(cmap)
            if (c.visual if c is not None else self.root_visual) in self.static_visuals:
                return
            if c is not None:
                c.cells[pixel] = request
            else:
                self.default_cells[(cmap, pixel)] = request

    def no_reply(self, seq: int) -> None:
        """The request numbered `seq` ended in an error: what it made does not exist."""
        self._pending.pop(seq, None)
        self.confirm(seq)
        q = self._unconfirmed
        if q and q[0][0] == seq:
            _, table, rid = q.popleft()
            table.pop(rid, None)

    def selection_lost(self, selection: int) -> None:
        self.selections.pop(selection, None)

    # -- what a move needs --------------------------------------------------------------------
    def visuals_used(self) -> set[int]:
        out = {self.root_visual}
        out.update(w.visual for w in self.windows.values() if w.wclass != 2)
        out.update(c.visual for c in self.colormaps.values())
        return out

    def depths_used(self) -> set[int]:
        return {p.depth for p in self.pixmaps.values()}

    def unique_glyphsets(self) -> list[GlyphSet]:
        """Each glyph set once, though several ids may name it."""
        seen: dict[int, GlyphSet] = {}
        for gs in self.glyphsets.values():
            seen.setdefault(id(gs), gs)
        return list(seen.values())


#: The tracker's own key in `_pending` for XInputExtension version requests (no opcode).
_XI_VERSION = -1

#: Requests that make a resource (id at offset 4) -> the tracker's table of them.
_CREATES = {op.CREATE_WINDOW: "windows", op.CREATE_PIXMAP: "pixmaps", op.CREATE_GC: "gcs",
            op.OPEN_FONT: "fonts", op.CREATE_CURSOR: "cursors",
            op.CREATE_GLYPH_CURSOR: "cursors", op.CREATE_COLORMAP: "colormaps"}


def _atoms_in(*offsets: int):  # type: ignore[no-untyped-def]
    """A handler noting the atoms at `offsets` as used by the client."""
    def note(self: Tracker, seq: int, msg: bytes) -> None:
        for at in offsets:
            a = self._word(msg, at)
            if a:
                self.atoms_used.add(a)
    return note


_HANDLERS = {
    op.CREATE_WINDOW: Tracker._create_window,
    op.CHANGE_WINDOW_ATTRIBUTES: Tracker._change_attributes,
    op.DESTROY_WINDOW: Tracker._destroy_window,
    op.DESTROY_SUB_WINDOWS: Tracker._destroy_subwindows,
    op.REPARENT_WINDOW: Tracker._reparent,
    op.MAP_WINDOW: Tracker._map,
    op.UNMAP_WINDOW: Tracker._map,
    op.CHANGE_PROPERTY: Tracker._property,
    op.DELETE_PROPERTY: Tracker._property,
    op.GET_PROPERTY: _atoms_in(8, 12),
    op.CONVERT_SELECTION: _atoms_in(8, 12, 16),
    op.GET_SELECTION_OWNER: _atoms_in(4),
    op.GET_ATOM_NAME: _atoms_in(4),
    op.SET_SELECTION_OWNER: Tracker._selection_owner,
    op.INTERN_ATOM: Tracker._intern,
    op.CREATE_PIXMAP: Tracker._create_pixmap,
    op.FREE_PIXMAP: Tracker._free_pixmap,
    op.CREATE_GC: Tracker._create_gc,
    op.CHANGE_GC: Tracker._change_gc,
    op.COPY_GC: Tracker._copy_gc,
    op.SET_CLIP_RECTANGLES: Tracker._gc_list,
    op.SET_DASHES: Tracker._gc_list,
    op.FREE_GC: Tracker._free_gc,
    op.OPEN_FONT: Tracker._open_font,
    op.CLOSE_FONT: Tracker._close_font,
    op.CREATE_CURSOR: Tracker._create_cursor,
    op.CREATE_GLYPH_CURSOR: Tracker._create_cursor,
    op.RECOLOR_CURSOR: Tracker._recolor_cursor,
    op.FREE_CURSOR: Tracker._free_cursor,
    op.CREATE_COLORMAP: Tracker._create_colormap,
    op.FREE_COLORMAP: Tracker._free_colormap,
    op.ALLOC_COLOR: Tracker._alloc,
    op.ALLOC_NAMED_COLOR: Tracker._alloc,
    op.FREE_COLORS: Tracker._free_colors,
    op.GRAB_BUTTON: Tracker._grab,
    op.GRAB_KEY: Tracker._grab,
    op.UNGRAB_BUTTON: Tracker._ungrab,
    op.UNGRAB_KEY: Tracker._ungrab,
    op.SET_INPUT_FOCUS: Tracker._set_focus,
    op.GRAB_SERVER: Tracker._server_grab,
    op.UNGRAB_SERVER: Tracker._server_grab,
    op.QUERY_EXTENSION: Tracker._query_extension,
}
