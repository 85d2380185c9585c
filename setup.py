"""The C part, which pyproject.toml cannot declare yet without setuptools' experimental keys:
the framer's inner loop (xproxy/_speedups.c). It is optional: where it cannot be built, the
same loop runs in Python (xproxy/x11/framing.py), slower."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("xproxy._speedups", ["xproxy/_speedups.c"], optional=True)])
