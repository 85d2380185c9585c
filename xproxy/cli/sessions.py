"""The session commands: `move`, `detach`, `attach`, `sessions`, `run --session`, and the
session process that `run --session` starts by itself. Each runs without the reactor
(session/client.py), so the parsers here import the standard library only."""

from __future__ import annotations

import argparse

COMMANDS = ("move", "detach", "attach", "sessions", "session-agent")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from ..session.core import DEFAULT_LINGER
    from .main import positive_float

    p = sub.add_parser("move", help="move every program of a session or movable display to "
                                    "another display")
    p.add_argument("session", metavar="SESSION",
                   help="a session name, or a movable display (:P: a session's, or one of "
                        "`xproxy serve --movable`)")
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
    """Run a session command; None when `args` is for none (a plain `run`)."""
    from ..session import client

    if args.command == "run":
        return client.run(args) if args.session is not None else None
    if args.command == "move":
        entry = client.session_for(args.session)
        if entry is not None:
            return client.move(entry, args.target)
        return _move_display(args)
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


def _move_display(args: argparse.Namespace) -> int:
    """`xproxy move :P --to TARGET` for a movable display that is no session: the engine's
    own command (a link target needs a session, which holds the link agent)."""
    from ..session.core import SessionError, TargetKind, target_kind
    from .errors import fail
    from .main import _display_number, move

    try:
        args.display = _display_number(args.session.removeprefix("unix"))
    except argparse.ArgumentTypeError as err:
        fail(str(err), 2)
    if not args.target.startswith("/"):
        try:
            if target_kind(args.target) is TargetKind.LINK:
                fail(f"{args.target}: a move over the link needs a session "
                     "(xproxy run --session NAME --to TARGET -- COMMAND)", 2)
        except SessionError as err:
            fail(str(err), 2)
    return move(args)
