"""The code passes `make lint` (ruff over the packages, the tests, the benchmarks and the
demos; mypy over the pure cores and the adapters that type-check) with the versions pinned in
pyproject.toml's test extras, so CI catches what a reviewer's linter would; and `make check`
selects every test file it lists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


#: Everything ruff checks, as `make lint` and `make check` run it.
LINTED = ("xproxy", "discovery", "replicaclient", "testing", "tests", "benchmarks", "demos")


def test_ruff():
    done = run("ruff", "check", *LINTED)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy():
    """The modules pyproject.toml's [tool.mypy] files lists: the pure cores of all three parts
    and the adapters that type-check."""
    done = run("mypy", "--cache-dir", "/dev/null")
    assert done.returncode == 0, done.stdout + done.stderr


def test_make_lints_what_this_file_lints():
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count(f"ruff check {' '.join(LINTED)}") == 2  # lint and check


def test_every_module_make_check_lists_exists():
    """`make check` selects tests by module name (tests/conftest.py): a renamed test file
    must not drop out of it unseen."""
    from tests.conftest import NOT_UNIT, UNIT_MODULES

    files = {path.stem for path in (ROOT / "tests").rglob("test_*.py")}
    assert sorted(UNIT_MODULES - files) == []
    assert sorted(name for name in NOT_UNIT if name.partition(".py")[0] not in UNIT_MODULES) == []
