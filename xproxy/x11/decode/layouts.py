"""The interpreter of python-xlib layouts (`rq.Struct`), in either byte order: a message's
bytes to JSON-ready named fields, lists and strings capped so that a trace line stays short.
python-xlib's own parser reads the host's byte order only and wants a live display for
resources; here a layout's fixed part is worked out once (`_Plan`) and its variable part
walked field by field.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable
from typing import Any, Protocol

from Xlib.ext import xinput
from Xlib.protocol import rq

__all__ = ["MAX_BYTES", "MAX_ITEMS", "MAX_TEXT", "Buffer", "EventDecoder", "parse"]


class EventDecoder(Protocol):
    """What decodes an event carried inside another message (SendEvent's)."""

    def embedded_event(self, msg: bytes) -> dict[str, Any]:
        """The 32-byte event `msg` as its name (under "name") and fields."""
        ...


#: How many items of a list are kept in decoded fields; the rest is counted, not listed.
MAX_ITEMS = 64
#: How many bytes of opaque data are shown (as hex).
MAX_BYTES = 32
#: How many characters of a string are kept.
MAX_TEXT = 256

class _Bad(Exception):
    """Content that does not fit its layout."""

#: Message bytes as the decoder walks them: a bulk tail is a view, not a copy.
Buffer = bytes | bytearray | memoryview

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


#: Each layout's plan per byte order, keyed by the layout itself (an `rq.Struct` compares and
#: hashes by identity, and the key keeps it alive, so a key cannot be reused by another
#: layout). The layouts are the module-level tables of python-xlib and `tables.py`, so this
#: holds at most two plans per known layout.
_PLANS: dict[str, dict[Any, _Plan]] = {"<": {}, ">": {}}


def _plan(s: Any, e: str) -> _Plan:
    plans = _PLANS[e]
    plan = plans.get(s)
    if plan is None:
        plan = plans[s] = _Plan(s, e)
    return plan


def _static_struct(s: Any, vals: tuple) -> dict[str, Any]:
    out = {}
    for name, i, n, conv in _plan(s, "<").values:  # (the values are read already)
        v = vals[i] if n == 1 else vals[i : i + n]
        out[name] = v if conv is None else conv(v)
    return out


def parse(s: Any, data: Buffer, e: str, dec: EventDecoder, out: dict[str, Any]) -> Buffer:
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
         dec: EventDecoder) -> tuple[Any, Buffer]:
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
        rest = parse(f.type, data, e, dec, sub)
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
        if len(data) < 32:
            raise _Bad("event field shorter than 32 bytes")
        return dec.embedded_event(bytes(data[:32])), data[32:]
    if e == "<":  # a layout of python-xlib's own, for the host byte order only
        v, rest = f.parse_binary_value(data, None, length, fmt)
        return _plain(v), rest
    raise _Bad(f"no big-endian decoding for {type(f).__name__}")


def _list(t: Any, data: Buffer, e: str, n: Any, dec: EventDecoder) -> tuple[list[Any], Buffer]:
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
            return sub, parse(t, d, e, dec, sub)
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
            parse(xinput.INFO_CLASSES.get(ctype, xinput.AnyInfo), d, e, dec, sub)
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
