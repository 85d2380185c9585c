"""The `xproxy` command line: `main` (the parser, the reactor, `serve` and `trace`) and `remote`
(`export`, `run`, `link-agent`, the keys). `run` is the console script's entry point; it loads
the standard library only until a command needs more."""

from .main import run

__all__ = ["run"]
