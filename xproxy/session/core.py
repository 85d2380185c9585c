"""What a session decides without I/O: names, targets, the requests on its control socket,
when it may end, the screen a detached session gets, and how `xproxy sessions` shows one.

The session's control socket (session/agent.py) takes one JSON request per line:

    {"op": "run"}                 -> {"ok": true, "display": ":P", "xauthority": PATH, ...}
                                     (the connection then holds the session until it closes)
    {"op": "describe"}            -> the engine's describe, plus name, shown_on, since, detached
    {"op": "move", "to": TARGET}  -> {"ok": true, "clients": N, "seconds": S, "to": TARGET}
    {"op": "detach"}              -> as move, to a headless Xvfb the session starts
    {"op": "attach", "to": TARGET}-> as move, from that Xvfb, which then stops
    {"op": "stop"}                -> {"ok": true}; the session ends (its programs lose X)

Errors are {"ok": false, "error": REASON}. TARGET is as for `xproxy run`: `@NAME`,
`xproxy://HOST:PORT`, or a display name.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from ..x11.display import DisplayNameError, parse_display

#: A request line longer than this is refused (and the connection closed).
MAX_LINE = 64 * 1024

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")

#: How long a session nothing uses lives on (no run connected, no X client on it).
DEFAULT_LINGER = 10.0

#: How `sessions` and `describe` name where a detached session is shown.
DETACHED = "(detached)"


class SessionError(RuntimeError):
    """A session command that cannot be done; the message is for the user."""


class RequestError(ValueError):
    """A control request that cannot be served; the reply says why."""


def check_name(name: str) -> str:
    """A session name: it names files in the runtime directory, so letters, digits, `.`, `_`
    and `-`, 64 at most, not starting with a dot or a dash."""
    if not _NAME.match(name):
        raise SessionError(f"bad session name {name!r}: use letters, digits, '.', '_' and '-' "
                           "(64 at most, starting with a letter or digit)")
    return name


class TargetKind(enum.Enum):
    DISPLAY = "display"  # a display of this host's reach, as in DISPLAY
    LINK = "link"  # an exported display, through the link agent for it


def target_kind(target: str) -> TargetKind:
    """What kind of place `target` names, or SessionError."""
    if not isinstance(target, str) or not target or len(target) > 1024:
        raise SessionError("a target is @NAME, xproxy://HOST:PORT or a display (:N)")
    if target.startswith(("@", "xproxy://")):
        if target == "@" or target == "xproxy://":
            raise SessionError(f"{target!r}: a target needs a name or an address")
        return TargetKind.LINK
    try:
        parse_display(target)
    except DisplayNameError as err:
        raise SessionError(f"{target!r} is not a target: {err} "
                           "(expected @NAME, xproxy://HOST:PORT or a display such as :3)") from None
    return TargetKind.DISPLAY


class Op(enum.Enum):
    RUN = "run"
    DESCRIBE = "describe"
    MOVE = "move"
    DETACH = "detach"
    ATTACH = "attach"
    STOP = "stop"


@dataclass(frozen=True)
class Request:
    op: Op
    to: str | None = None


def parse_request(line: bytes) -> Request:
    """A control request, checked: what the session may act on, or RequestError."""
    try:
        req = json.loads(line)
    except ValueError as err:
        raise RequestError(f"bad JSON: {err}") from None
    if not isinstance(req, dict):
        raise RequestError("expected a JSON object")
    try:
        op = Op(req.get("op"))
    except ValueError:
        raise RequestError(f"unknown op {req.get('op')!r} (one of "
                           f"{', '.join(o.value for o in Op)})") from None
    if op not in (Op.MOVE, Op.ATTACH):
        return Request(op)
    to = req.get("to")
    if not isinstance(to, str):
        raise RequestError(f"{op.value} needs \"to\": a target")
    try:
        target_kind(to)
    except SessionError as err:
        raise RequestError(str(err)) from None
    return Request(op, to)


class Lifetime:
    """When a session ends by itself: once nothing has used it for `linger` seconds, where a
    use is a `run` still connected or an X client still on its display. A detached session
    whose programs still run is in use, so it lives on. Time comes from the caller."""

    def __init__(self, linger: float, now: float) -> None:
        self.linger = linger
        self.idle_since: float | None = now

    def observe(self, now: float, runs: int, clients: int) -> bool:
        """Record what is using the session now; true when it should end."""
        if runs > 0 or clients > 0:
            self.idle_since = None
            return False
        if self.idle_since is None:
            self.idle_since = now
        return now - self.idle_since >= self.linger


def headless_screen(describe: dict[str, Any]) -> tuple[int, int, int]:
    """The width, height and depth a headless display needs to take the session, from the
    engine's describe reply."""
    geometry, depth = describe.get("geometry"), describe.get("depth")
    if (not isinstance(geometry, list) or len(geometry) != 2
            or not all(isinstance(v, int) and 1 <= v <= 32767 for v in geometry)
            or not isinstance(depth, int) or depth not in (8, 15, 16, 24, 30, 32)):
        raise SessionError(f"the session did not say its screen: geometry {geometry!r}, "
                           f"depth {depth!r}")
    return geometry[0], geometry[1], depth


def program_name(client: dict[str, Any], comm: str | None = None) -> str:
    """How `sessions` names a client's program: the class in WM_CLASS where the program set
    one, else the command of its _NET_WM_PID (`comm`, read by the caller), else its name."""
    wm_class = client.get("wm_class")
    if isinstance(wm_class, (list, tuple)) and wm_class:
        wm_class = wm_class[-1]
    if isinstance(wm_class, str) and wm_class:
        return wm_class.split("\0")[-1] or wm_class.split("\0")[0]
    if comm:
        return comm
    name = client.get("name")
    return name if isinstance(name, str) and name else "?"


def listing(name: str, display: str, describe: dict[str, Any],
            comms: dict[int, str] | None = None) -> dict[str, Any]:
    """One session as `xproxy sessions --json` shows it."""
    comms = comms or {}
    clients = []
    for c in describe.get("clients") or []:
        if not isinstance(c, dict):
            continue
        pid = c.get("pid") if isinstance(c.get("pid"), int) else None
        clients.append({"id": c.get("id"), "program": program_name(c, comms.get(pid or -1)),
                        "wm_class": c.get("wm_class"), "pid": pid, "name": c.get("name")})
    return {"name": name, "display": display, "shown_on": describe.get("shown_on", "?"),
            "since": describe.get("since"), "detached": bool(describe.get("detached")),
            "geometry": describe.get("geometry"), "depth": describe.get("depth"),
            "clients": clients}


def format_listing(entry: dict[str, Any], clock_text: str) -> str:
    """One session as `xproxy sessions` prints it; `clock_text` is `since`, formatted."""
    programs = ", ".join(f"{c['program']}" + (f" ({c['pid']})" if c["pid"] else "")
                         for c in entry["clients"]) or "no clients"
    n = len(entry["clients"])
    return (f"{entry['name']:<16} {entry['display']:<6} on {entry['shown_on']} since "
            f"{clock_text}, {n} client{'' if n == 1 else 's'}: {programs}")
