"""Moving a client: whether a target server can take it (`refusals`), what to read from the
old server at move time (`queries`: geometry, stacking, map state, properties, shapes, pixmap
contents, atom names, the focus), and the requests that make everything again on the target,
in dependency order (`recreate`): colormaps and their cells, fonts, pixmaps with their
contents, cursors, GCs, windows parents first and siblings bottom to top with their
properties and shapes, then map state (children before parents), XInputExtension event
selections, cursors and passive grabs, core passive grabs, selections and the focus; and
whether a client that used XInputExtension may go (`xi_refusals`). Everything here is in the client's virtual values; the adapter sends the
queries through the old server's Mapping and the recreation through the new one's.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..x11 import opcodes as op
from ..x11.setup import pad4
from . import fields as f
from .tracker import MAX_GLYPH_BYTES, Picture, Tracker

#: PutImage strips, property data and shape rectangles are sent in requests of at most
#: this many bytes of data, under the core request limit (65535 words).
STRIP_BYTES = 200_000
#: GetProperty reads at most this many 4-byte units of a property.
MAX_PROPERTY_WORDS = 1 << 24
VISUAL_CLASSES = {0: "StaticGray", 1: "GrayScale", 2: "StaticColor", 3: "PseudoColor",
                  4: "TrueColor", 5: "DirectColor"}


@dataclass(frozen=True)
class Visual:
    vid: int
    depth: int
    vclass: int
    bits_per_rgb: int
    entries: int
    masks: tuple[int, int, int]

    @property
    def kind(self) -> tuple[int, int, int, tuple[int, int, int]]:
        return (self.depth, self.vclass, self.bits_per_rgb, self.masks)


@dataclass(frozen=True)
class ServerSetup:
    """What a move needs of a server's setup reply (its first screen)."""

    base: int
    mask: int
    root: int
    colormap: int
    width: int
    height: int
    root_visual: int
    root_depth: int
    visuals: dict[int, Visual] = field(default_factory=dict)
    formats: dict[int, int] = field(default_factory=dict)  # depth -> bits per pixel
    max_request: int = 65535


def parse_server_setup(raw: bytes, endian: str) -> ServerSetup:
    """A successful setup reply's first screen (X11 protocol, section 8)."""
    u = struct.Struct
    base, mask = u(endian + "II").unpack_from(raw, 12)
    vendor_len, max_request = u(endian + "HH").unpack_from(raw, 24)
    n_formats = raw[29]
    pos = 40 + vendor_len + pad4(vendor_len)
    formats = {}
    for i in range(n_formats):
        formats[raw[pos + 8 * i]] = raw[pos + 8 * i + 1]
    pos += 8 * n_formats
    root, colormap, _white, _black, _input = u(endian + "IIIII").unpack_from(raw, pos)
    width, height = u(endian + "HH").unpack_from(raw, pos + 20)
    root_visual, = u(endian + "I").unpack_from(raw, pos + 32)
    root_depth, n_depths = raw[pos + 38], raw[pos + 39]
    pos += 40
    visuals = {}
    for _ in range(n_depths):
        depth = raw[pos]
        (n_visuals,) = u(endian + "H").unpack_from(raw, pos + 2)
        pos += 8
        for _ in range(n_visuals):
            vid, vclass, bits, entries, red, green, blue = u(endian + "IBBHIII").unpack_from(
                raw, pos)
            visuals[vid] = Visual(vid, depth, vclass, bits, entries, (red, green, blue))
            pos += 24
    return ServerSetup(base, mask, root, colormap, width, height, root_visual, root_depth,
                       visuals, formats, max_request)


def match_visuals(virtual: ServerSetup, target: ServerSetup) -> dict[int, int]:
    """Each virtual visual -> a target visual of the same depth, class and masks (each
    target visual used once, in order), for those that have one."""
    free = list(target.visuals.values())
    out = {}
    for v in virtual.visuals.values():
        for t in free:
            if t.kind == v.kind:
                out[v.vid] = t.vid
                free.remove(t)
                break
    return out


def refusals(tracker: Tracker, virtual: ServerSetup, target: ServerSetup,
             target_extensions: set[str], visuals: dict[int, int]) -> list[str]:
    """Why `target` cannot take the client (empty when it can), before reading anything."""
    reasons = []
    for vid in sorted(tracker.visuals_used()):
        if vid not in visuals:
            v = virtual.visuals.get(vid)
            what = (f"{VISUAL_CLASSES.get(v.vclass, v.vclass)} depth {v.depth}"
                    if v is not None else "unknown")
            reasons.append(f"the client uses visual 0x{vid:x} ({what}), which the target "
                           f"has not (its root is depth {target.root_depth})")
    for depth in sorted(tracker.depths_used()):
        if target.formats.get(depth) != virtual.formats.get(depth):
            reasons.append(f"the client has pixmaps of depth {depth}, which the target "
                           "stores differently or not at all")
    for name in sorted(tracker.extensions_used & set(f.MOVABLE_EXTENSIONS)):
        if name == f.XI and not tracker.xi_used:
            continue  # (asked about and never used: its absence changes nothing)
        if name not in target_extensions:
            reasons.append(f"the client uses the {name} extension, which the target has not")
    if tracker.server_grabbed:
        reasons.append("the client holds a server grab")
    if tracker.xi1_used:
        minors = ", ".join(str(m) for m in sorted(tracker.xi1_used))
        reasons.append(f"the client uses XInputExtension 1 requests (minor {minors}), which a "
                       "move does not carry")
    if any(gs.incomplete for gs in tracker.unique_glyphsets()):
        reasons.append(f"the client's RENDER glyphs passed the {MAX_GLYPH_BYTES >> 20} MiB "
                       "the proxy keeps of them, so they could not be made again")
    return reasons


#: An XI 2 device as XIQueryDevice describes it: id, use, attachment, name.
XIDevice = tuple[int, int, int, bytes]


def xi_devices(reply: bytes, endian: str) -> list[XIDevice]:
    """XIQueryDevice's devices (XI2proto, XIQueryDevice), in the order the server gave."""
    (n,) = struct.unpack_from(endian + "H", reply, 8)
    out = []
    pos = 32
    for _ in range(n):
        if pos + 12 > len(reply):
            break
        device, use, attachment, n_classes, name_len = struct.unpack_from(endian + "5H",
                                                                          reply, pos)
        out.append((device, use, attachment, bytes(reply[pos + 12 : pos + 12 + name_len])))
        pos += 12 + pad4(name_len) + name_len
        for _ in range(n_classes):
            if pos + 4 > len(reply):
                break
            (size,) = struct.unpack_from(endian + "H", reply, pos + 2)
            pos += 4 * max(size, 1)
    return out


def _version(v: bytes | None, endian: str) -> str:
    if v is None:
        return "none"
    major, minor = struct.unpack(endian + "HH", v)
    return f"{major}.{minor}"


def xi_refusals(endian: str, versions: dict[int, tuple[bytes, bytes | None]],
                old: list[XIDevice] | None, new: list[XIDevice] | None) -> list[str]:
    """Why a client that used XInputExtension cannot go to the target: `versions` holds,
    per version request the client made, the version it was given and the one the target
    gives (None: refused); `old` and `new` are both servers' devices (None: not read). The
    client may hold device ids and names, so they must be the same, with the same use and
    attachment."""
    reasons = []
    for given, target in versions.values():
        if target != given:
            reasons.append("the target's XInputExtension is version "
                           f"{_version(target, endian)}, the client was given "
                           f"{_version(given, endian)}")
    if old is None or new is None:
        reasons.append("the XInputExtension devices could not be read from both servers")
    elif sorted(old) != sorted(new):
        gone = sorted(set(old) - set(new))
        what = ", ".join(f"{d[0]} {d[3].decode('latin-1')!r}" for d in gone) or "none"
        reasons.append("the target's XInputExtension devices differ from those the client "
                       f"knows (not on the target the same way: {what})")
    return reasons


PictFormat = tuple[int, int, tuple[int, ...], bool]


def pict_formats(reply: bytes, endian: str) -> dict[int, PictFormat]:
    """QueryPictFormats' formats: id -> (type, depth, direct masks, has a colormap)."""
    (n,) = struct.unpack_from(endian + "I", reply, 8)
    out = {}
    for i in range(min(n, (len(reply) - 32) // 28)):
        at = 32 + 28 * i
        fid, ftype, depth = struct.unpack_from(endian + "IBB", reply, at)
        direct = struct.unpack_from(endian + "8H", reply, at + 8)
        (cmap,) = struct.unpack_from(endian + "I", reply, at + 24)
        out[fid] = (ftype, depth, direct, cmap != 0)
    return out


def match_formats(virtual: dict[int, PictFormat],
                  target: dict[int, PictFormat]) -> dict[int, int]:
    """Each virtual PictFormat -> the target's with the same description, where it has one."""
    by_kind: dict[PictFormat, int] = {}
    for fid, kind in target.items():
        by_kind.setdefault(kind, fid)
    return {fid: by_kind[kind] for fid, kind in virtual.items() if kind in by_kind}


@dataclass(frozen=True)
class Query:
    """A request to read something from the old server: key says what it is about."""

    key: tuple
    request: bytes
    opcode: int
    minor: int = 0


class Builder:
    """Requests in one byte order."""

    def __init__(self, endian: str) -> None:
        self.e = endian

    def pack(self, fmt: str, *values: int) -> bytes:
        return struct.pack(self.e + fmt, *values)

    def request(self, opcode: int, data: int, body: bytes) -> bytes:
        body += b"\0" * pad4(len(body))
        return struct.pack(self.e + "BBH", opcode, data, 1 + len(body) // 4) + body


def queries(tracker: Tracker, shape_major: int | None, atoms: set[int],
            xfixes_major: int | None = None) -> list[Query]:
    """What to read from the old server before a move: `atoms` are the virtual atoms whose
    names must be found."""
    b = Builder(tracker.endian)
    out = []
    if xfixes_major is not None:
        for rid in tracker.regions:
            out.append(Query(("region", rid), b.request(
                xfixes_major, f.XFIXES_FETCH_REGION, b.pack("I", rid)), xfixes_major,
                f.XFIXES_FETCH_REGION))
    for wid, w in tracker.windows.items():
        out.append(Query(("tree", wid), b.request(op.QUERY_TREE, 0, b.pack("I", wid)),
                         op.QUERY_TREE))
        out.append(Query(("geometry", wid), b.request(op.GET_GEOMETRY, 0, b.pack("I", wid)),
                         op.GET_GEOMETRY))
        out.append(Query(("attributes", wid),
                         b.request(op.GET_WINDOW_ATTRIBUTES, 0, b.pack("I", wid)),
                         op.GET_WINDOW_ATTRIBUTES))
        if w.parent not in tracker.windows:
            out.append(Query(("origin", wid), b.request(op.TRANSLATE_COORDS, 0, b.pack(
                "IIhh", wid, tracker.root, 0, 0)), op.TRANSLATE_COORDS))
        for atom in sorted(w.properties):
            out.append(Query(("property", wid, atom), b.request(op.GET_PROPERTY, 0, b.pack(
                "IIIII", wid, atom, 0, 0, MAX_PROPERTY_WORDS)), op.GET_PROPERTY))
        if shape_major is not None:
            for kind in sorted(w.shaped):
                out.append(Query(("shape", wid, kind), b.request(
                    shape_major, f.SHAPE_GET_RECTANGLES, b.pack("IB3x", wid, kind)),
                    shape_major, f.SHAPE_GET_RECTANGLES))
    for pid, p in tracker.pixmaps.items():
        if p.width and p.height:
            out.append(Query(("image", pid), b.request(op.GET_IMAGE, 2, b.pack(
                "IhhHHI", pid, 0, 0, p.width, p.height, 0xFFFFFFFF)), op.GET_IMAGE))
    for atom in sorted(atoms):
        out.append(Query(("atom", atom), b.request(op.GET_ATOM_NAME, 0, b.pack("I", atom)),
                         op.GET_ATOM_NAME))
    out.append(Query(("focus",), b.request(op.GET_INPUT_FOCUS, 0, b""), op.GET_INPUT_FOCUS))
    return out


def atom_name(reply: bytes, endian: str) -> bytes:
    (n,) = struct.unpack_from(endian + "H", reply, 8)
    return bytes(reply[32 : 32 + n])


@dataclass
class Plan:
    """The requests that make the client again on the target (virtual values), and the
    scratch ids they use (freed at their end)."""

    requests: list[bytes]
    reasons: list[str]


def recreate(tracker: Tracker, results: dict[tuple, bytes | None], target: ServerSetup,
             scratch: Iterator[int], shape_major: int | None,
             bigreq_major: int | None, current: ServerSetup | None = None,
             render_major: int | None = None, xfixes_major: int | None = None,
             xkb: bool = False, xi_major: int | None = None) -> Plan:
    """The recreation requests, from the tracker and what the old server said (`results`,
    replies by query key, None for an error); `scratch` gives free virtual ids. A mapped
    top-level window larger than the target's screen refuses the move, when that screen is
    smaller than the `current` one (a window already larger than its screen may go to a
    screen as large)."""
    e = tracker.endian
    b = Builder(e)
    u32 = struct.Struct(e + "I").unpack_from
    out: list[bytes] = []
    reasons: list[str] = []
    root = tracker.root
    if tracker.big_requests and bigreq_major is not None:
        out.append(b.request(bigreq_major, 0, b""))
    if xkb and tracker.xkb_use is not None:
        # (XKB answers nothing else before UseExtension)
        out.append(tracker.xkb_use)
        out.extend(tracker.xkb_selects.values())
    if xfixes_major is not None:
        if tracker.xfixes_version is not None:
            out.append(tracker.xfixes_version)
        for rid in tracker.regions:
            region = results.get(("region", rid))
            if region is not None:
                (n,) = u32(region, 4)
                out.append(b.request(xfixes_major, f.XFIXES_CREATE_REGION, b.pack("I", rid)
                                     + bytes(region[32 : 32 + 4 * n])))

    # colormaps and their cells
    for c in tracker.colormaps.values():
        out.append(c.create[:8] + b.pack("I", root) + c.create[12:])
        out.extend(c.cells.values())
    out.extend(tracker.default_cells.values())
    # fonts
    out.extend(tracker.fonts.values())
    # pixmaps and their contents
    frees: list[bytes] = []
    depth_gc: dict[int, int] = {}
    for pid, p in tracker.pixmaps.items():
        out.append(b.request(op.CREATE_PIXMAP, p.depth, b.pack("IIHH", pid, root, p.width,
                                                                p.height)))
        image = results.get(("image", pid))
        if image is None:
            continue
        gc = depth_gc.get(p.depth)
        if gc is None:
            gc = depth_gc[p.depth] = next(scratch)
            out.append(b.request(op.CREATE_GC, 0, b.pack("III", gc, pid, 0)))
            frees.append(b.request(op.FREE_GC, 0, b.pack("I", gc)))
        data = image[32:]
        stride = len(data) // p.height if p.height else 0
        if stride == 0:
            continue
        rows = max(1, STRIP_BYTES // stride)
        for y in range(0, p.height, rows):
            h = min(rows, p.height - y)
            out.append(b.request(op.PUT_IMAGE, 2, b.pack(
                "IIHHhhBB2x", pid, gc, p.width, h, 0, y, 0, p.depth)
                + data[y * stride : (y + h) * stride]))
    # RENDER: pictures on pixmaps and fills, glyph sets, cursors made from pictures
    if render_major is not None:
        if tracker.render_version is not None:
            out.append(tracker.render_version)
        for pid, picture in tracker.pictures.items():
            if picture.drawable not in tracker.windows:
                out.extend(_picture(b, render_major, pid, picture, tracker))
        for gs in tracker.unique_glyphsets():
            first, *others = sorted(gs.ids)
            out.append(b.request(render_major, f.RENDER_CREATE_GLYPH_SET, b.pack(
                "II", first, gs.format)))
            stale: set[int] = set()
            for adds in gs.adds.values():
                raw = adds.request
                at = 8 if struct.unpack_from(e + "H", raw, 2)[0] == 0 else 4
                out.append(raw[:at] + b.pack("I", first) + raw[at + 4:])
                stale.update(g for g in adds.ids if g not in gs.holder)
            if stale:
                out.append(b.request(render_major, f.RENDER_FREE_GLYPHS, b.pack(
                    "I", first) + b.pack(f"{len(stale)}I", *sorted(stale))))
            for other in others:
                out.append(b.request(render_major, f.RENDER_REFERENCE_GLYPH_SET, b.pack(
                    "II", other, first)))
        out.extend(c.create for c in tracker.cursors.values() if c.picture)
    # cursors
    for cursor in tracker.cursors.values():
        if cursor.picture or cursor.frames:
            continue
        closed = [font for font in cursor.fonts if u32(font, 4)[0] not in tracker.fonts]
        out.extend(closed)
        out.append(cursor.create)
        out.extend(b.request(op.CLOSE_FONT, 0, font[4:8]) for font in closed)
        if cursor.recolor is not None:
            out.append(cursor.recolor)
    if render_major is not None:
        out.extend(c.create for c in tracker.cursors.values() if c.frames)
    if xfixes_major is not None:
        out.extend(c.name for c in tracker.cursors.values() if c.name is not None)
    # GCs
    drawable_depth = {wid: w.depth for wid, w in tracker.windows.items()}
    drawable_depth.update({pid: p.depth for pid, p in tracker.pixmaps.items()})
    for gid, g in tracker.gcs.items():
        depth = drawable_depth.get(g.drawable, g.depth or tracker.root_depth)
        drawable = g.drawable if g.drawable in tracker.pixmaps else root
        if drawable == root and depth != tracker.root_depth:
            drawable = next(scratch)
            out.append(b.request(op.CREATE_PIXMAP, depth, b.pack("IIHH", drawable, root, 1, 1)))
            frees.append(b.request(op.FREE_PIXMAP, 0, b.pack("I", drawable)))
        values = _live_values(g.values, f.GC_VALUE_RESOURCES, tracker)
        out.append(b.request(op.CREATE_GC, 0, b.pack("III", gid, drawable, _mask(values))
                             + _list(values, e)))
        if g.dashes is not None:
            out.append(g.dashes)
        if g.clip_rectangles is not None:
            out.append(g.clip_rectangles)
    # windows: parents first, siblings bottom to top (the old server's stacking order)
    order = _window_order(tracker, results, e)
    for wid in order:
        w = tracker.windows[wid]
        geometry = results.get(("geometry", wid))
        tree = results.get(("tree", wid))
        if geometry is None or tree is None:
            continue  # gone from the old server (destroyed by someone else)
        x, y, width, height, border = struct.unpack_from(e + "hhHHH", geometry, 12)
        parent = u32(tree, 12)[0]
        if parent not in tracker.windows:
            origin = results.get(("origin", wid))
            parent = root
            if origin is not None:
                x, y = struct.unpack_from(e + "hh", origin, 12)
                x -= border
                y -= border
        values = _live_values(w.values, f.WINDOW_VALUE_RESOURCES, tracker)
        visual = w.visual if w.wclass != 2 else 0
        depth = w.depth if w.wclass != 2 else 0
        out.append(b.request(op.CREATE_WINDOW, depth, b.pack(
            "IIhhHHHHII", wid, parent, x, y, width, height, border, w.wclass, visual,
            _mask(values)) + _list(values, e)))
        for atom in sorted(w.properties):
            prop = results.get(("property", wid, atom))
            if prop is None:
                continue
            fmt, ptype, n = prop[1], u32(prop, 8)[0], u32(prop, 16)[0]
            if ptype == 0 or fmt not in (8, 16, 32):
                continue
            unit = fmt // 8
            data = prop[32 : 32 + n * unit]
            step = STRIP_BYTES // unit  # items per request, under the core request limit
            for i, start in enumerate(range(0, max(n, 1), step)):
                items = min(step, n - start)
                out.append(b.request(op.CHANGE_PROPERTY, 0 if i == 0 else 2, b.pack(
                    "IIIB3xI", wid, atom, ptype, fmt, items)
                    + data[start * unit : (start + items) * unit]))
        if shape_major is not None:
            for kind in sorted(w.shaped):
                rects = results.get(("shape", wid, kind))
                if rects is None:
                    continue
                (n,) = u32(rects, 8)
                step = STRIP_BYTES // 8
                for i, start in enumerate(range(0, max(n, 1), step)):
                    # the first part sets the shape, the others are united with it
                    out.append(b.request(shape_major, f.SHAPE_RECTANGLES, b.pack(
                        "BBBxIhh", 0 if i == 0 else 1, kind, 0, wid, 0, 0)
                        + rects[32 + 8 * start : 32 + 8 * min(n, start + step)]))
            if w.shape_events:
                out.append(b.request(shape_major, f.SHAPE_SELECT_INPUT, b.pack("IB3x", wid, 1)))
    if render_major is not None:
        for pid, picture in tracker.pictures.items():
            if picture.drawable in tracker.windows:
                out.extend(_picture(b, render_major, pid, picture, tracker))
    mapped = []
    for wid in order:
        attrs = results.get(("attributes", wid))
        if attrs is not None and attrs[26] != 0:
            mapped.append(wid)
            w = tracker.windows[wid]
            geometry = results.get(("geometry", wid))
            if w.parent not in tracker.windows and geometry is not None:
                _, _, width, height, _ = struct.unpack_from(e + "hhHHH", geometry, 12)
                cw, ch = (current.width, current.height) if current else (1 << 16, 1 << 16)
                if (width > target.width and target.width < cw
                        or height > target.height and target.height < ch):
                    reasons.append(f"window 0x{wid:x} ({width}x{height}) is larger than the "
                                   f"target's screen ({target.width}x{target.height})")
    for wid in reversed(mapped):
        out.append(b.request(op.MAP_WINDOW, 0, b.pack("I", wid)))
    if tracker.root_events:
        out.append(b.request(op.CHANGE_WINDOW_ATTRIBUTES, 0, b.pack(
            "III", root, 1 << f.EVENT_MASK_BIT, tracker.root_events)))
    if xfixes_major is not None:
        out.extend(raw for (wid, _), raw in tracker.selection_inputs.items()
                   if tracker.ours(wid))
        out.extend(raw for wid, raw in tracker.cursor_inputs.items() if tracker.ours(wid))
    if xi_major is not None:
        out.extend(_xi_selects(b, xi_major, tracker))
        out.extend(tracker.xi_cursors.values())
        out.extend(tracker.xi_grabs.values())
    # passive grabs, selections, focus
    out.extend(grab for key, grab in tracker.grabs.items() if tracker.ours(key[0]))
    for selection, owner in tracker.selections.items():
        if owner in tracker.windows:
            out.append(b.request(op.SET_SELECTION_OWNER, 0, b.pack("III", owner, selection, 0)))
    focus = results.get(("focus",))
    if focus is not None:
        window = u32(focus, 8)[0]
        if window in tracker.windows and window in mapped:
            out.append(b.request(op.SET_INPUT_FOCUS, focus[1], b.pack("II", window, 0)))
    out.extend(frees)
    return Plan(out, reasons)


def _xi_selects(b: Builder, xi_major: int, tracker: Tracker) -> list[bytes]:
    """One XISelectEvents per window with the masks the client selected on it."""
    by_window: dict[int, list[tuple[int, bytes]]] = {}
    for (wid, device), mask in tracker.xi_selects.items():
        by_window.setdefault(wid, []).append((device, mask))
    out = []
    for wid, masks in by_window.items():
        body = b.pack("IH2x", wid, len(masks)) + b"".join(
            b.pack("HH", device, len(mask) // 4) + mask for device, mask in masks)
        out.append(b.request(xi_major, f.XI_SELECT_EVENTS, body))
    return out


def _picture(b: Builder, render_major: int, pid: int, p: Picture,
             tracker: Tracker) -> list[bytes]:
    """The requests that make a RENDER picture again, with its clip, transform and filter."""
    if p.fill is not None:
        return [p.fill]
    values = {bit: v for bit, v in p.values.items() if not (
        bit == 1 and v and v not in tracker.pictures
        or bit == f.PICTURE_CLIP_MASK_BIT and v and v not in tracker.pixmaps)}
    out = [b.request(render_major, f.RENDER_CREATE_PICTURE, b.pack(
        "IIII", pid, p.drawable, p.format, _mask(values)) + _list(values, b.e))]
    out.extend(r for r in (p.clip_rectangles, p.transform, p.filter) if r is not None)
    return out


def _window_order(tracker: Tracker, results: dict[tuple, bytes | None], e: str) -> list[int]:
    """The client's windows, each after its parent, siblings in stacking order."""
    children: dict[int, list[int]] = {}
    for wid in tracker.windows:
        tree = results.get(("tree", wid))
        if tree is None:
            continue
        (n,) = struct.unpack_from(e + "H", tree, 16)
        kids = struct.unpack_from(e + f"{n}I", tree, 32)
        children[wid] = [k for k in kids if k in tracker.windows]
    inner = {k for kids in children.values() for k in kids}
    order = []
    todo = [wid for wid in tracker.windows if wid not in inner]
    while todo:
        wid = todo.pop(0)
        order.append(wid)
        todo[0:0] = children.get(wid, [])
    return order


def _live_values(values: dict[int, int], resources: frozenset[int],
                 tracker: Tracker) -> dict[int, int]:
    """Values whose pixmap is gone are left out (the server had kept it only while used)."""
    out = {}
    for bit, value in values.items():
        if bit in resources and value > 1 and bit in (0, 2, 10, 11, 19) and not (
                value in tracker.pixmaps):
            continue
        out[bit] = value
    return out


def _mask(values: dict[int, int]) -> int:
    mask = 0
    for bit in values:
        mask |= 1 << bit
    return mask


def _list(values: dict[int, int], e: str) -> bytes:
    return b"".join(struct.pack(e + "I", values[bit]) for bit in sorted(values))
