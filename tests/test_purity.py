"""The pure cores stay pure: no module listed here imports an event loop, a socket, a process
or a clock, directly, inside a function, or through another project module (DESIGN.md: "a pure
core, thin adapters"). Imports are read with `ast`, so a module is checked without being run;
a second test imports each one in a fresh interpreter and looks at what got loaded, which also
covers the third-party libraries they use."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("xproxy", "discovery", "replicaclient")

# What a pure module may not import: event loops and Twisted, sockets and TLS, processes and
# threads, the clock (time is injected), the operating system's I/O, and the adapters' libraries.
FORBIDDEN = frozenset({
    "twisted", "asyncio", "uvloop", "zeroconf", "socket", "ssl", "OpenSSL", "select",
    "selectors", "subprocess", "threading", "multiprocessing", "signal", "time", "datetime",
    "os", "shutil", "tempfile", "fcntl", "prometheus_client",
})

# Every module of the X11 wire and of round-trip suppression, the link's protocol, plus the
# listed cores of discovery and replicaclient. An entry in IMPURE must say why the module is an
# adapter.
PURE_PACKAGES = ("xproxy.x11", "xproxy.suppress")
PURE = sorted(
    {".".join((package, *p.relative_to(ROOT.joinpath(*package.split("."))).with_suffix("").parts))
     for package in PURE_PACKAGES
     for p in ROOT.joinpath(*package.split(".")).rglob("*.py") if p.stem != "__init__"} | {
        "xproxy.link.protocol", "xproxy.observe.waits",
        "xproxy.move.fields", "xproxy.move.mapping", "xproxy.move.tracker",
        "xproxy.move.planner", "xproxy.move.client", "xproxy.session.core",
        "discovery.registry", "discovery.guard", "discovery.schema", "discovery.pacing",
        "discovery.etcdkeys", "discovery.wire", "discovery.browsing", "discovery.journal",
        "replicaclient.policy", "replicaclient.sync", "replicaclient.handoff",
        "replicaclient.tag", "replicaclient.replica", "replicaclient.budget",
        "replicaclient.ejection", "replicaclient.latency", "replicaclient.balancer",
        "replicaclient.declare", "replicaclient.membership", "replicaclient.metrics",
        "replicaclient.errors", "replicaclient.wire", "replicaclient.wakeups",
    })
IMPURE: dict[str, str] = {}
# Compiled project modules: no Python source to read. _speedups is the framer's inner loop in
# C (xproxy/_speedups.c); it includes nothing but Python.h.
COMPILED = frozenset({"xproxy._speedups"})


def source_of(module: str, root: Path = ROOT) -> Path | None:
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def walk_runtime(tree: ast.AST):
    """`ast.walk`, less the bodies of `if TYPE_CHECKING:` (their `else:` is kept)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and ast.unparse(node.test) in TYPE_CHECKING:
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


TYPE_CHECKING = frozenset({"TYPE_CHECKING", "typing.TYPE_CHECKING"})


def imports_of(module: str, root: Path = ROOT) -> set[str]:
    """Every module `module`'s source imports, anywhere in the file (inside functions too),
    with relative imports resolved and `from package import name` read as the submodule when
    there is one. Imports under `if TYPE_CHECKING:` are left out: they never run."""
    path = source_of(module, root)
    assert path is not None, module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in walk_runtime(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target == "__future__":
                continue
            found.add(target)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if source_of(sub, root) is not None or sub in COMPILED:
                    found.add(sub)
    return found


def loaded_with(module: str, root: Path = ROOT) -> set[str]:
    """`module` and every project module importing it runs: what it imports, transitively,
    and the packages above each (Python runs a package's __init__ before its modules)."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        if name.split(".")[0] in PROJECT and name not in COMPILED:
            if source_of(name, root) is None:
                raise AssertionError(f"{name} is imported but has no source in the project")
            todo.extend(imports_of(name, root))
    return seen


def forbidden_imports(module: str, root: Path = ROOT) -> dict[str, set[str]]:
    """The forbidden modules reachable from `module`, by the project module importing them."""
    found: dict[str, set[str]] = {}
    for name in loaded_with(module, root):
        if name.split(".")[0] in PROJECT and name not in COMPILED:
            bad = {i for i in imports_of(name, root) if i.split(".")[0] in FORBIDDEN}
            if bad:
                found[name] = bad
    return found


@pytest.mark.parametrize("module", [m for m in PURE if m not in IMPURE])
def test_a_pure_module_imports_no_loop_socket_process_or_clock(module: str) -> None:
    assert forbidden_imports(module) == {}


def test_every_module_named_pure_exists_and_every_exception_is_listed_pure() -> None:
    assert [m for m in PURE if source_of(m) is None] == []
    assert [p for p in PURE_PACKAGES if not any(m.startswith(f"{p}.") for m in PURE)] == []
    assert set(IMPURE) <= set(PURE)


def test_mypy_checks_every_pure_module() -> None:
    """`make lint` types what this file keeps pure: [tool.mypy] files covers PURE."""
    files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    covered = {(ROOT / f).resolve() for f in files}

    def is_covered(module: str) -> bool:
        path = source_of(module)
        return path is not None and any(c == path or c in path.parents for c in covered)

    assert [m for m in PURE if not is_covered(m)] == []


def test_the_check_sees_imports_in_functions_and_through_other_modules(tmp_path: Path) -> None:
    """The rule itself: a clock read inside a function, and Twisted reached through a sibling
    or through the package's __init__, all count; an import only a type checker runs does not."""
    def write(relative: str, text: str) -> None:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))

    write("xproxy/__init__.py", "")
    write("xproxy/a.py", "def now():\n    from time import monotonic\n    return monotonic()\n")
    write("xproxy/b.py", "from . import c\n")
    write("xproxy/c.py", "import twisted.internet.reactor\n")
    write("xproxy/d.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    import twisted\nelse:\n    X = 1\n")
    write("xproxy/p/__init__.py", "from xproxy.c import *\n")
    write("xproxy/p/e.py", "from ..d import X\n")
    assert forbidden_imports("xproxy.a", tmp_path) == {"xproxy.a": {"time"}}
    assert forbidden_imports("xproxy.b", tmp_path) == {"xproxy.c": {"twisted.internet.reactor"}}
    assert forbidden_imports("xproxy.d", tmp_path) == {}
    assert forbidden_imports("xproxy.p.e", tmp_path) == {"xproxy.c": {"twisted.internet.reactor"}}


RUNTIME = ("twisted", "asyncio", "uvloop", "zeroconf", "socket", "ssl", "OpenSSL", "selectors",
           "subprocess", "threading", "prometheus_client")


def test_importing_the_pure_modules_loads_no_loop_socket_or_process() -> None:
    """Each pure module, imported alone in a fresh interpreter, loads none of RUNTIME, third-party
    libraries included (the interpreter itself loads `os` and `time`, so those are left to the
    `ast` check)."""
    script = ("import importlib, sys; importlib.import_module(sys.argv[1]); "
              f"print(' '.join(m for m in sys.modules if m.split('.')[0] in {RUNTIME!r}))")
    found = {}
    for module in [m for m in PURE if m not in IMPURE]:
        done = subprocess.run([sys.executable, "-c", script, module], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        if done.stdout.strip():
            found[module] = sorted(done.stdout.split())
    assert found == {}
