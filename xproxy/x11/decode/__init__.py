"""Decoding X11 messages to names and named fields, in either byte order, for tracing.

`decoder.py` is the per-connection `Decoder`; `tables.py` what it knows of core and extension
messages (names, python-xlib layouts and the layouts python-xlib lacks); `layouts.py` the
interpreter of those layouts; `fields.py` which field names hold resources and atoms.
"""
