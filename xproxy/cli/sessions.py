"""The session commands: `move`, `detach`, `attach`, `sessions`, `run --session`, and the
session process that `run --session` starts by itself. Each runs without the reactor
(session/client.py), so the parsers here import the standard library only."""

from __future__ import annotations

import argparse

COMMANDS = ("move", "detach", "attach", "sessions", "session-agent")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from ..session.core import DEFAULT_LINGER
    from .main import positive_float

    p = sub.add_parser("move", help="move every program of a session to another display")
    p.add_argument("session", metavar="SESSION", help="a session name, or its display (:P)")
    p.add_argument("--to", dest="target", required=True, metavar="TARGET",
                   help="@NAME (found on the LAN), xproxy://HOST:PORT, or a display (:0)")
    p = sub.add_parser("detach", help="move a session's programs to a headless display")
    p.add_argument("session", metavar="SESSION", help="a session name, or its display (:P)")
    p = sub.add_parser("attach", help="bring a detached session's programs to a display")
    p.add_argument("session", metavar="SESSION", help="a session name, or its display (:P)")
    p.add_argument("--to", dest="target", required=True, metavar="TARGET",
                   help="@NAME (found on the LAN), xproxy://HOST:PORT, or a display (:0)")
    p = sub.add_parser("sessions", help="list the sessions, their programs and where they are shown")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("session-agent", help=argparse.SUPPRESS)
    p.add_argument("--name", required=True)
    p.add_argument("--to", dest="target", required=True)
    p.add_argument("--linger", type=positive_float, default=DEFAULT_LINGER)
    p.add_argument("--link-linger", type=float, default=None)


def dispatch(args: argparse.Namespace) -> int | None:
    """Run a session command; None when `args` is for none (a `move` of a movable display
    that is not a session goes to the move engine's command)."""
    from ..session import client

    if args.command == "run":
        return client.run(args) if args.session is not None else None
    if args.command == "move":
        entry = client.session_for(args.session)
        return client.move(entry, args.target) if entry is not None else None
    if args.command == "detach":
        return client.detach(args)
    if args.command == "attach":
        return client.attach(args)
    if args.command == "sessions":
        return client.sessions(args)
    if args.command == "session-agent":
        from ..session import agent

        return agent.main(args.name, args.target, args.linger, args.link_linger)
    return None
