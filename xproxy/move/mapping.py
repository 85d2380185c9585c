"""The mapping between what a client of a movable display sees (virtual values) and what
its current X server uses (real values): resource ids, atoms, visuals, extension codes,
sequence numbers and timestamps, and the rewriting of every message through it.

Theory of operation: while a client is on its first server the mapping is the identity (the
client saw that server's setup, so virtual values are that server's) and `identity` is True:
messages pass untouched but for hiding extensions, and only the tracker costs anything. A
move builds a new Mapping for the target (`Mapping.for_server`): from then on every request
is rewritten virtual -> real and every reply, event and error real -> virtual, by the field
tables of fields.py.

Ids of other clients' resources on the target (the root window, a window manager's frames)
that fall inside the client's virtual id range are given an alias from the top of that range
(clients allocate from the bottom, as Xlib and xcb do), so the two never meet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..x11 import opcodes as op
from . import fields as f

MASK32 = 0xFFFFFFFF


@dataclass
class Ext:
    """One extension as the client sees it (virtual codes) and as the current server has it."""

    name: str
    vmajor: int
    vevent: int
    verror: int
    rmajor: int
    revent: int
    rerror: int
    events: int = 0
    errors: int = 0


@dataclass
class Mapping:
    """Virtual <-> real for one client on one server; the identity before any move."""

    endian: str
    vbase: int
    vmask: int
    rbase: int
    rmask: int
    identity: bool = True
    #: server-owned ids (root window, default colormap) and visuals: virtual -> real
    special: dict[int, int] = field(default_factory=dict)
    visuals: dict[int, int] = field(default_factory=dict)
    atoms: dict[int, int] = field(default_factory=dict)  # virtual -> real, above predefined
    #: time offset: virtual = real + time_offset (mod 2**32); CurrentTime (0) stays 0
    time_offset: int = 0
    #: extensions by virtual major opcode (filled from QueryExtension replies)
    exts: dict[int, Ext] = field(default_factory=dict)
    #: atoms whose names the proxy knows: virtual atom -> name
    names: dict[int, bytes] = field(default_factory=dict)
    #: RENDER PictFormats: virtual -> real, matched by description
    formats: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        e = self.endian
        self._u32 = struct.Struct(e + "I")
        self._u16 = struct.Struct(e + "H")
        self.rspecial = {r: v for v, r in self.special.items()}
        self.rvisuals = {r: v for v, r in self.visuals.items()}
        self.ratoms = {r: v for v, r in self.atoms.items()}
        self.rformats = {r: v for v, r in self.formats.items()}
        self.aliases: dict[int, int] = {}  # real -> virtual, foreign ids in the virtual range
        self.ralias: dict[int, int] = {}
        self._next_alias = self.vbase | self.vmask
        self._next_atom = max([*self.atoms, *self.ratoms, f.LAST_PREDEFINED_ATOM]) + 1
        self.rexts = {x.rmajor: x for x in self.exts.values()}
        self._rebuild_events()

    def _rebuild_events(self) -> None:
        self.revents = {x.revent + i: (x, i) for x in self.exts.values() for i in range(x.events)}
        self.rerrors = {x.rerror + i: (x, i) for x in self.exts.values() for i in range(x.errors)}

    # -- values -------------------------------------------------------------------------------
    def res_to_real(self, v: int) -> int:
        if v & ~self.vmask == self.vbase:
            r = self.ralias.get(v)
            return r if r is not None else self.rbase | (v & self.vmask)
        return self.special.get(v, v)

    def res_to_virtual(self, r: int) -> int:
        if r & ~self.rmask == self.rbase:
            return self.vbase | (r & self.rmask)
        v = self.rspecial.get(r)
        if v is not None:
            return v
        if r & ~self.vmask == self.vbase:
            v = self.aliases.get(r)
            if v is None:
                v = self._next_alias
                self._next_alias -= 1
                self.aliases[r] = v
                self.ralias[v] = r
            return v
        return r

    def atom_to_real(self, v: int) -> int:
        return self.atoms.get(v, v)

    def atom_to_virtual(self, r: int) -> int:
        if r <= f.LAST_PREDEFINED_ATOM:
            return r
        v = self.ratoms.get(r)
        if v is None:
            # An atom the client has not seen from an earlier server: its own value, unless
            # that value already stands for another atom.
            v = r
            if v in self.atoms:
                v = self._next_atom
            self._next_atom = max(self._next_atom, v + 1)
            self.atoms[v] = r
            self.ratoms[r] = v
        return v

    def time_to_real(self, v: int) -> int:
        return (v - self.time_offset) & MASK32 if v else 0

    def time_to_virtual(self, r: int) -> int:
        return (r + self.time_offset) & MASK32 if r else 0

    def _convert(self, buf: bytearray, at: int, kind: str, to_real: bool) -> None:
        (value,) = self._u32.unpack_from(buf, at)
        if kind == f.RES:
            new = self.res_to_real(value) if to_real else self.res_to_virtual(value)
        elif kind == f.ATOM:
            new = self.atom_to_real(value) if to_real else self.atom_to_virtual(value)
        elif kind == f.TIME:
            new = self.time_to_real(value) if to_real else self.time_to_virtual(value)
        elif kind == f.FORMAT:
            table = self.formats if to_real else self.rformats
            new = table.get(value, value)
        else:
            table = self.visuals if to_real else self.rvisuals
            new = table.get(value, value)
        if new != value:
            self._u32.pack_into(buf, at, new)

    def _fields(self, buf: bytearray, table: f.Fields, to_real: bool, base: int = 0) -> None:
        for at, kind in table:
            if base + at + 4 <= len(buf):
                self._convert(buf, base + at, kind, to_real)

    # -- requests, virtual -> real ------------------------------------------------------------
    def request(self, msg: bytes) -> bytes:
        """A client's request (virtual values) as the current server must see it."""
        if self.identity:
            return msg
        opcode = msg[0]
        buf = bytearray(msg)
        big = self._u16.unpack_from(buf, 2)[0] == 0
        if big:  # BIG-REQUESTS form: fields sit 4 bytes further on
            body = buf[:4] + buf[8:]
        else:
            body = buf
        if opcode >= op.FIRST_EXTENSION_OPCODE:
            self._ext_request(body)
        else:
            table = f.REQUEST_FIELDS.get(opcode)
            if table is not None:
                self._fields(body, table, True)
            if opcode in f.SPECIAL_REQUESTS:
                self._special_request(opcode, body)
        if big:
            body[4:4] = buf[4:8]
        return bytes(body)

    def _ext_request(self, buf: bytearray) -> None:
        ext = self.exts.get(buf[0])
        if ext is None:
            return
        buf[0] = ext.rmajor
        table = f.EXTENSION_REQUEST_FIELDS.get(ext.name, {}).get(buf[1])
        if table is not None:
            self._fields(buf, table, True)
        if ext.name == f.RENDER:
            self._render_request(buf)
        elif ext.name == f.XI:
            self._xi_request(buf)

    def _render_request(self, buf: bytearray) -> None:
        minor = buf[1]
        at = f.PICTURE_VALUES_AT.get(minor)
        if at is not None:
            mask = self._u32.unpack_from(buf, at - 4)[0] if at <= len(buf) else 0
            self._values(buf, at, mask, f.PICTURE_VALUE_RESOURCES, True)
        elif minor in (f.RENDER_COMPOSITE_GLYPHS8, f.RENDER_COMPOSITE_GLYPHS16,
                       f.RENDER_COMPOSITE_GLYPHS32):
            # Glyph items: len, 3 pad, dx, dy, glyphs (padded to 4); a len of 255 is
            # followed by a glyph set id instead (RENDER protocol, CompositeGlyphs).
            size = {f.RENDER_COMPOSITE_GLYPHS8: 1, f.RENDER_COMPOSITE_GLYPHS16: 2}.get(minor, 4)
            pos = 28
            while pos + 8 <= len(buf):
                n = buf[pos]
                if n == 255:
                    if pos + 12 > len(buf):
                        break
                    self._convert(buf, pos + 8, f.RES, True)
                    pos += 12
                else:
                    pos += 8 + ((n * size + 3) & ~3)
        elif minor == f.RENDER_CREATE_ANIM_CURSOR:
            for pos in range(8, len(buf) - 7, 8):
                self._convert(buf, pos, f.RES, True)

    def _xi_request(self, buf: bytearray) -> None:
        minor = buf[1]
        if minor == f.XI_CHANGE_PROPERTY and len(buf) >= 20:
            (typ,) = self._u32.unpack_from(buf, 12)  # already real
            (n,) = self._u32.unpack_from(buf, 16)
            self._property_data(buf, 20, typ, buf[7], n, True)
        elif minor == f.XI_BARRIER_RELEASE_POINTER and len(buf) >= 8:
            # (deviceid, pad, barrier, eventid) per barrier
            (n,) = self._u32.unpack_from(buf, 4)
            for i in range(min(n, (len(buf) - 8) // 12)):
                self._convert(buf, 8 + 12 * i + 4, f.RES, True)

    def _special_request(self, opcode: int, buf: bytearray) -> None:
        if opcode in f.VALUE_LIST_AT:
            at = f.VALUE_LIST_AT[opcode]
            if opcode == op.CONFIGURE_WINDOW:
                mask = self._u16.unpack_from(buf, 8)[0]
            else:
                mask = self._u32.unpack_from(buf, at - 4)[0]
            self._values(buf, at, mask, f.VALUE_RESOURCES[opcode], True)
        elif opcode == op.CHANGE_PROPERTY:
            fmt = buf[16]
            (typ,) = self._u32.unpack_from(buf, 12)  # already real
            (n,) = self._u32.unpack_from(buf, 20)
            self._property_data(buf, 24, typ, fmt, n, True)
        elif opcode == op.SEND_EVENT:
            event = bytearray(buf[12:44])
            self.event(event, to_real=True)
            buf[12:44] = event
        elif opcode in (op.POLY_TEXT8, op.POLY_TEXT16):
            self._text_items(buf, 16)
        elif opcode == op.ROTATE_PROPERTIES:
            (n,) = self._u16.unpack_from(buf, 8)
            for i in range(n):
                self._convert(buf, 12 + 4 * i, f.ATOM, True)

    def _values(self, buf: bytearray, at: int, mask: int, resources: frozenset[int],
                to_real: bool) -> None:
        pos = at
        for bit in range(32):
            if mask & (1 << bit):
                if bit in resources and pos + 4 <= len(buf):
                    (value,) = self._u32.unpack_from(buf, pos)
                    if value > 1:  # None and ParentRelative / CopyFromParent stay
                        self._convert(buf, pos, f.RES, to_real)
                pos += 4

    def _property_data(self, buf: bytearray, at: int, real_type: int, fmt: int, n: int,
                       to_real: bool) -> None:
        if fmt != 32:
            return
        if real_type == f.ATOM_TYPE:
            kind = f.ATOM
        elif real_type in f.ID_TYPES:
            kind = f.RES
        else:
            return
        for i in range(min(n, (len(buf) - at) // 4)):
            (value,) = self._u32.unpack_from(buf, at + 4 * i)
            if value:
                self._convert(buf, at + 4 * i, kind, to_real)

    def _text_items(self, buf: bytearray, pos: int) -> None:
        end = len(buf)
        while pos < end:
            size = buf[pos]
            if size == 0:
                break
            if size == 255:  # a font shift: the font id, most significant byte first
                if pos + 5 > end:
                    break
                (font,) = struct.unpack_from(">I", buf, pos + 1)
                struct.pack_into(">I", buf, pos + 1, self.res_to_real(font))
                pos += 5
            else:
                pos += 2 + size * (2 if buf[0] == op.POLY_TEXT16 else 1)

    # -- server messages, real -> virtual -----------------------------------------------------
    def event(self, buf: bytearray, to_real: bool = False) -> None:
        """Rewrite a 32-byte event in place (to_real: one the client sends with SendEvent)."""
        code = buf[0] & op.EVENT_CODE_MASK
        if code == op.GENERIC_EVENT:
            if not to_real:  # (SendEvent cannot send one)
                self._generic_event(buf)
            return
        table = f.EVENT_FIELDS.get(code)
        if table is not None:
            vtype = self._u32.unpack_from(buf, 8)[0] if to_real else 0
            self._fields(buf, table, to_real)
            if code == op.CLIENT_MESSAGE and buf[1] == 32:
                if not to_real:
                    vtype = self._u32.unpack_from(buf, 8)[0]
                if self.names.get(vtype) == b"WM_PROTOCOLS":
                    self._convert(buf, 12, f.ATOM, to_real)
                    self._convert(buf, 16, f.TIME, to_real)
            return
        if code >= 64:
            if to_real:
                ext = next((x for x in self.exts.values()
                            if x.vevent <= code < x.vevent + x.events), None)
                if ext is not None:
                    buf[0] = (buf[0] & 0x80) | (ext.revent + code - ext.vevent)
                    table = _event_fields(ext.name, code - ext.vevent, buf[1])
                    if table is not None:
                        self._fields(buf, table, True)
                return
            found = self.revents.get(code)
            if found is not None:
                ext, i = found
                buf[0] = (buf[0] & 0x80) | (ext.vevent + i)
                table = _event_fields(ext.name, i, buf[1])
                if table is not None:
                    self._fields(buf, table, False)

    def _generic_event(self, buf: bytearray) -> None:
        """A GenericEvent: the extension's major opcode at 1, then its fields (XI 2's)."""
        ext = self.rexts.get(buf[1])
        if ext is None:
            return
        buf[1] = ext.vmajor
        if ext.name != f.XI or len(buf) < 12:
            return
        (evtype,) = self._u16.unpack_from(buf, f.XI_EVENT_TYPE_AT)
        table = f.XI_EVENT_FIELDS.get(evtype)
        if table is not None:
            self._fields(buf, table, False)
        if evtype == f.XI_DEVICE_CHANGED and len(buf) >= 32:
            self._xi_classes(buf, 32, self._u16.unpack_from(buf, 16)[0])

    def _xi_classes(self, buf: bytearray, pos: int, n: int) -> int:
        """An XI 2 device's input classes from `pos` (XIQueryDevice, DeviceChanged): the
        atoms of valuator and button labels; returns where they end."""
        for _ in range(n):
            if pos + 8 > len(buf):
                break
            kind, size = self._u16.unpack_from(buf, pos)[0], self._u16.unpack_from(buf, pos + 2)[0]
            if kind == f.XI_VALUATOR_CLASS:
                self._label(buf, pos + 8)
            elif kind == f.XI_BUTTON_CLASS:
                (buttons,) = self._u16.unpack_from(buf, pos + 6)
                at = pos + 8 + 4 * ((buttons + 31) // 32)
                for i in range(buttons):
                    self._label(buf, at + 4 * i)
            if size == 0:
                break
            pos += 4 * size
        return pos

    def _label(self, buf: bytearray, at: int) -> None:
        if at + 4 <= len(buf) and self._u32.unpack_from(buf, at)[0]:
            self._convert(buf, at, f.ATOM, False)

    def _xi_reply(self, buf: bytearray, minor: int) -> None:
        if minor == f.XI_LIST_PROPERTIES:
            (n,) = self._u16.unpack_from(buf, 8)
            for i in range(min(n, (len(buf) - 32) // 4)):
                self._convert(buf, 32 + 4 * i, f.ATOM, False)
        elif minor == f.XI_GET_PROPERTY:
            (typ,) = self._u32.unpack_from(buf, 8)  # virtual by now
            (n,) = self._u32.unpack_from(buf, 16)
            self._property_data(buf, 32, self.atom_to_real(typ), buf[20], n, False)
        elif minor == f.XI_QUERY_DEVICE:
            pos = 32
            for _ in range(self._u16.unpack_from(buf, 8)[0]):
                if pos + 12 > len(buf):
                    return
                n_classes, name_len = struct.unpack_from(self.endian + "HH", buf, pos + 6)
                pos = self._xi_classes(buf, pos + 12 + ((name_len + 3) & ~3), n_classes)

    def error(self, buf: bytearray) -> None:
        code = buf[1]
        if code in f.RESOURCE_ERRORS:
            self._convert(buf, 4, f.RES, False)
        elif code == f.BAD_ATOM:
            self._convert(buf, 4, f.ATOM, False)
        elif code >= 128 and code in self.rerrors:
            ext, i = self.rerrors[code]
            buf[1] = ext.verror + i
            kind = f.EXTENSION_ERROR_KINDS.get(ext.name, {}).get(i)
            if kind is not None:
                self._convert(buf, 4, kind, False)
        major = buf[10]
        if major >= op.FIRST_EXTENSION_OPCODE and major in self.rexts:
            buf[10] = self.rexts[major].vmajor

    def reply(self, buf: bytearray, opcode: int, minor: int) -> None:
        """Rewrite a reply in place; `opcode` and `minor` are those of its request (virtual)."""
        if opcode >= op.FIRST_EXTENSION_OPCODE:
            ext = self.exts.get(opcode)
            if ext is not None and ext.name == f.RENDER and minor == f.RENDER_QUERY_PICT_FORMATS:
                self._pict_formats(buf)
            elif ext is not None:
                table = f.EXTENSION_REPLY_FIELDS.get(ext.name, {}).get(minor)
                if table is not None:
                    self._fields(buf, table, False)
                if ext.name == f.XI:
                    self._xi_reply(buf, minor)
            return
        table = f.REPLY_FIELDS.get(opcode)
        if table is not None:
            self._fields(buf, table, False)
        lst = f.REPLY_LISTS.get(opcode)
        if lst is not None:
            at, size, kind = lst
            n = self._u16.unpack_from(buf, at)[0] if size == 2 else self._u32.unpack_from(
                buf, at)[0]
            for i in range(min(n, (len(buf) - 32) // 4)):
                self._convert(buf, 32 + 4 * i, kind, False)
        if opcode == op.GET_PROPERTY:
            (typ,) = self._u32.unpack_from(buf, 8)  # virtual by now
            real_type = self.atom_to_real(typ)
            (n,) = self._u32.unpack_from(buf, 16)
            self._property_data(buf, 32, real_type, buf[1], n, False)
        elif opcode == op.GET_MOTION_EVENTS:
            (n,) = self._u32.unpack_from(buf, 8)
            for i in range(min(n, (len(buf) - 32) // 8)):
                self._convert(buf, 32 + 8 * i, f.TIME, False)
        elif opcode in (op.QUERY_FONT, op.LIST_FONTS_WITH_INFO):
            (n,) = self._u16.unpack_from(buf, 46)
            for i in range(min(n, (len(buf) - 60) // 8)):
                self._convert(buf, 60 + 8 * i, f.ATOM, False)

    def _pict_formats(self, buf: bytearray) -> None:
        """QueryPictFormats' reply: format ids and visuals (RENDER protocol, encoding)."""
        n_formats, n_screens = self._u32.unpack_from(buf, 8)[0], self._u32.unpack_from(buf, 12)[0]
        pos = 32
        for _ in range(n_formats):
            if pos + 28 > len(buf):
                return
            self._convert(buf, pos, f.FORMAT, False)
            pos += 28
        for _ in range(n_screens):
            if pos + 8 > len(buf):
                return
            (n_depths,) = self._u32.unpack_from(buf, pos)
            self._convert(buf, pos + 4, f.FORMAT, False)
            pos += 8
            for _ in range(n_depths):
                if pos + 8 > len(buf):
                    return
                (n_visuals,) = self._u16.unpack_from(buf, pos + 2)
                pos += 8
                for _ in range(n_visuals):
                    if pos + 8 > len(buf):
                        return
                    self._convert(buf, pos, f.VISUAL, False)
                    self._convert(buf, pos + 4, f.FORMAT, False)
                    pos += 8


def _event_fields(name: str, index: int, subtype: int) -> f.Fields | None:
    """The fixed fields of an extension's event (XKB's by its xkbType byte)."""
    if name == f.XKB:
        return f.XKB_EVENT_FIELDS.get(subtype, f.XKB_EVENT_TIME)
    return f.EXTENSION_EVENT_FIELDS.get(name, {}).get(index)
