"""x11/opcodes.py is the one table of X11 core opcodes and event codes: it agrees with
python-xlib's, and the X11 and suppression modules compare opcodes with its names, not bare
numbers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from Xlib import X
from Xlib.protocol import event, request

from xproxy.x11 import opcodes

XPROXY = Path(__file__).resolve().parents[2] / "xproxy"
WIRE_MODULES = sorted([*XPROXY.joinpath("x11").glob("*.py"), *XPROXY.joinpath("suppress").glob("*.py")])


def constant(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def test_every_core_request_and_event_by_name() -> None:
    for op, cls in request.major_codes.items():
        assert getattr(opcodes, constant(cls.__name__)) == op, cls.__name__
    for code, cls in event.event_class.items():
        assert getattr(opcodes, constant(cls.__name__)) == code == getattr(X, cls.__name__)
    assert (opcodes.INTERN_ATOM, opcodes.QUERY_EXTENSION, opcodes.NO_OPERATION) == (16, 98, 127)
    assert (opcodes.KEYMAP_NOTIFY, opcodes.MAPPING_NOTIFY, opcodes.GENERIC_EVENT) == (11, 34, 35)


OPCODE_NAMES = frozenset({"op", "opcode", "major"})


def test_no_bare_opcode_numbers_in_the_protocol_modules() -> None:
    """`op == 98` hides what is meant and is a second copy of the table."""
    found = []
    assert len(WIRE_MODULES) > 8
    for path in WIRE_MODULES:
        if path.name == "opcodes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare):
                continue
            names = [n.id for n in (node.left, *node.comparators) if isinstance(n, ast.Name)]
            numbers = [n.value for n in (node.left, *node.comparators)
                       if isinstance(n, ast.Constant) and isinstance(n.value, int)
                       and n.value > 1]
            if OPCODE_NAMES.intersection(names) and numbers:
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
