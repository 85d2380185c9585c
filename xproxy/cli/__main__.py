"""`python -m xproxy.cli`."""

from .main import run

run()
