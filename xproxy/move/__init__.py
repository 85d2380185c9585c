"""Moving running X clients between displays: the pure core (fields, mapping, tracker,
planner, client) and the Twisted adapter (display.py, control.py)."""

from .client import VirtualClient
from .mapping import Ext, Mapping
from .planner import ServerSetup, parse_server_setup, recreate, refusals
from .tracker import Tracker

__all__ = ["Ext", "Mapping", "ServerSetup", "Tracker", "VirtualClient", "parse_server_setup",
           "recreate", "refusals"]
