"""Which replies a program waited for: the round trips of its X connections, from the tracer's
decoded messages, as a list of `Wait`s and as Chrome/Perfetto trace JSON. Pure: messages and
their times in, waits out.

A wait is a request that the server answers (a reply, or an error in its place) after which
the client sent nothing on that connection until the answer came: the client had nothing
else to say, so it was blocked on that answer (Xlib's XInternAtom, XGetWindowProperty, XSync;
xcb_*_reply on the last cookie sent). A request whose answer arrives while the client goes on
sending is pipelined and costs no round trip; one answered while the client waits on a later
request is not counted either (the later one is). The connection's own setup is a wait too
(`Setup`, sequence 0). The time waited runs from the proxy reading the request to it reading
the answer, so it is what the client waited, less the local socket hops.

"Answered by the link": through `xproxy run` to an exported display, the link agent answers
some requests itself (suppress/core.py). Its suppressor runs in the same process as the
tracer, and tells the analysis which requests it answered (`mark`): at once, or held until
the display host had finished an earlier request that could fail (a round trip all the same;
the wait names that request, `behind`). A wait with no mark crossed the link. A local trace
has no link: `NO_LINK`.

The program's first window is mapped at the first MapWindow of a top-level window: one
created with a parent not made by the same connection (the root, as a rule). Waits before it
are what a user waits for before seeing anything.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..x11.decode.decoder import Decoded

__all__ = [
    "MAX_MARKS",
    "MAX_NAMES",
    "MAX_WAITS",
    "NEEDED_FIELDS",
    "Answered",
    "Wait",
    "WaitAnalysis",
    "from_perfetto",
]

#: Waits kept per analysis; further ones are counted (`dropped`), not kept, so a program
#: that runs for days cannot grow the tracer.
MAX_WAITS = 100_000

#: Marks kept per connection for requests whose answer the analysis has not read yet (the
#: oldest go first; an answer is read right after its mark, so this is never reached).
MAX_MARKS = 4096

#: Request names remembered per connection, the latest, to name what a held answer waited
#: behind (a barrier further back is named by its sequence number).
MAX_NAMES = 4096

#: Top-level windows remembered per connection until the first map (a client creating windows
#: without ever mapping one cannot grow this further).
MAX_TOPLEVELS = 4096

#: The messages whose fields the analysis reads (the tracer decodes them even when its own
#: filter would not).
NEEDED_FIELDS = frozenset({"Setup", "CreateWindow", "MapWindow"})


class Answered(Enum):
    """Who answered a wait."""

    SERVER = "server"  # crossed the link to the display host's X server
    LINK = "link"  # the link agent, near the program, at once
    HELD = "held"  # the link agent, once the server had finished an earlier request
    NO_LINK = "no link"  # a local trace: the X server, with no link between
    UNKNOWN = "unknown"  # a trace file that does not say


@dataclass(frozen=True, slots=True)
class Wait:
    """One round trip the client waited for: `start` and `waited` in seconds (`start` in the
    clock the messages were stamped with)."""

    client: int
    seq: int
    name: str
    start: float
    waited: float
    answered: Answered
    error: bool = False
    behind: str = ""  # HELD: the request whose end the link agent held the answer until


@dataclass(slots=True)
class _Client:
    last_seq: int = -1  # the last request sent (-1: none since the setup)
    last_name: str = ""
    last_time: float = 0.0
    id_base: int = 0
    id_mask: int = 0
    toplevels: set[int] | None = None
    marks: deque[tuple[int, int]] = field(default_factory=deque)  # (seq, behind), in order
    names: dict[int, str] = field(default_factory=dict)  # seq -> name, the latest MAX_NAMES


class WaitAnalysis:
    """Feed it every decoded message of every client (`feed`), then read `waits`,
    `first_map`, `summary()` or `to_perfetto()`. `link`: the connections go through a link
    agent, which `mark`s the requests it answers."""

    def __init__(self, link: bool = False, max_waits: int = MAX_WAITS) -> None:
        self.link = link
        self.max_waits = max_waits
        self.waits: list[Wait] = []
        self.dropped = 0
        self.start: float | None = None  # the first message's time
        self.end: float | None = None  # the last message's time
        self.first_map: float | None = None
        self.clients: dict[int, _Client] = {}

    def feed(self, client: int, d: Decoded, now: float, awaited: bool = False) -> None:
        """One message of `client`, seen by the proxy at `now`. For an error, `awaited` says
        whether its request expected a reply (an error for a request without one ends no
        wait: the client was not waiting for it)."""
        if self.start is None:
            self.start = now
        self.end = now
        c = self._client(client)
        direction = d.direction
        if direction == "request":
            c.last_seq, c.last_name, c.last_time = d.seq, d.name, now
            if self.link:
                if len(c.names) >= MAX_NAMES:
                    del c.names[next(iter(c.names))]
                c.names[d.seq] = d.name
            if self.first_map is None:
                self._request(c, d, now)
        elif direction in ("reply", "error"):
            marks = c.marks
            while marks and marks[0][0] < d.seq:
                marks.popleft()  # answered while the client went on: no wait
            if d.seq == c.last_seq and (awaited if direction == "error"
                                        else d.latency is not None):
                answered, behind = Answered.NO_LINK, ""
                if self.link:
                    answered = Answered.SERVER
                    if marks and marks[0][0] == d.seq:
                        barrier = marks.popleft()[1]
                        answered = Answered.HELD if barrier else Answered.LINK
                        if barrier:
                            behind = c.names.get(barrier, f"request {barrier}")
                self._wait(client, c, d.seq, c.last_name, now, answered,
                           direction == "error", behind)
                c.last_seq = -2  # answered: further replies to it are not waits
        elif direction == "setup":
            c.last_seq = 0
            c.last_name = "Setup"
            c.last_time = now
        elif direction == "setup-reply":
            c.id_base = int(d.fields.get("resource_id_base", 0) or 0)
            c.id_mask = int(d.fields.get("resource_id_mask", 0) or 0)
            if c.last_seq == 0:
                self._wait(client, c, 0, "Setup", now,
                           Answered.SERVER if self.link else Answered.NO_LINK,
                           d.fields.get("status") != 1)
                c.last_seq = -1

    def mark(self, client: int, seq: int, behind: int = 0) -> None:
        """The link agent answered request `seq` of `client` itself: at once (`behind` 0) or
        only once the server had finished request `behind`. Told before the answer is fed."""
        marks = self._client(client).marks
        if len(marks) >= MAX_MARKS:
            marks.popleft()
        marks.append((seq, behind))

    def _client(self, client: int) -> _Client:
        c = self.clients.get(client)
        if c is None:
            c = self.clients[client] = _Client(toplevels=None if self.first_map else set())
        return c

    def client_done(self, client: int) -> None:
        """A client went: forget its state (its waits stay)."""
        self.clients.pop(client, None)

    def _request(self, c: _Client, d: Decoded, now: float) -> None:
        if c.toplevels is None:
            return
        if d.name == "CreateWindow":
            parent, wid = d.fields.get("parent"), d.fields.get("wid")
            if (isinstance(parent, int) and isinstance(wid, int) and c.id_mask
                    and parent & ~c.id_mask != c.id_base and len(c.toplevels) < MAX_TOPLEVELS):
                c.toplevels.add(wid)
        elif d.name == "MapWindow" and d.fields.get("window") in c.toplevels:
            self.first_map = now
            for other in self.clients.values():
                other.toplevels = None

    def _wait(self, client: int, c: _Client, seq: int, name: str, now: float,
              answered: Answered, error: bool, behind: str = "") -> None:
        if len(self.waits) >= self.max_waits:
            self.dropped += 1
            return
        self.waits.append(Wait(client, seq, name, c.last_time, max(0.0, now - c.last_time),
                               answered, error, behind))

    def before_map(self) -> list[Wait]:
        """The waits that began before the first window was mapped (all of them if none was)."""
        if self.first_map is None:
            return list(self.waits)
        return [w for w in self.waits if w.start < self.first_map]

    def summary(self) -> dict[str, Any]:
        """Counts and times, in all and before the first map, with the waits before it by
        name, by who answered, by name for those the link answered at once and for those
        that crossed the link, and by the request they were held behind for those it held."""
        before = self.before_map()
        return {
            "waits": len(self.waits), "dropped": self.dropped,
            "waited": round(sum(w.waited for w in self.waits), 6),
            "before_map": len(before),
            "waited_before_map": round(sum(w.waited for w in before), 6),
            "first_map": None if self.first_map is None or self.start is None
            else round(self.first_map - self.start, 6),
            "link": self.link,
            "by_name": dict(Counter(w.name for w in before).most_common()),
            "answered": dict(Counter(w.answered.value for w in before).most_common()),
            "link_answered_by_name": dict(Counter(
                w.name for w in before if w.answered is Answered.LINK).most_common()),
            "crossed_by_name": dict(Counter(
                w.name for w in before if w.answered is Answered.SERVER).most_common()),
            "held_behind": dict(Counter(
                w.behind for w in before if w.answered is Answered.HELD).most_common()),
        }

    def to_perfetto(self) -> dict[str, Any]:
        """The waits as Chrome/Perfetto trace JSON (the "traceEvents" object form): one
        complete event ("ph": "X", ts and dur in µs from the first message) per wait, one
        thread per client, an instant event at the first map, the summary in "otherData"."""
        t0 = self.start or 0.0
        events: list[dict[str, Any]] = []
        for client in sorted({w.client for w in self.waits}):
            events.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": client,
                           "args": {"name": f"X client {client}"}})
        for w in self.waits:
            events.append({
                "name": w.name, "cat": "wait", "ph": "X", "pid": 1, "tid": w.client,
                "ts": round((w.start - t0) * 1e6, 3), "dur": round(w.waited * 1e6, 3),
                "args": {"seq": w.seq, "answered": w.answered.value, "error": w.error,
                         "before_map": self.first_map is None or w.start < self.first_map,
                         **({"behind": w.behind} if w.behind else {})}})
        if self.first_map is not None:
            events.append({"name": "first window mapped", "cat": "map", "ph": "i", "s": "g",
                           "pid": 1, "tid": 0, "ts": round((self.first_map - t0) * 1e6, 3)})
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"xproxy_waits": 1, "start": t0, **self.summary()}}


class NotWaits(ValueError):
    """JSON that is not waits as `to_perfetto` writes them."""


def from_perfetto(obj: Any) -> WaitAnalysis:
    """The analysis back from `to_perfetto`'s JSON (to draw it elsewhere), or NotWaits."""
    if not isinstance(obj, dict) or not isinstance(obj.get("traceEvents"), list):
        raise NotWaits("not a trace: no traceEvents list")
    other = obj.get("otherData") or {}
    if not isinstance(other, dict):
        raise NotWaits("otherData is not an object")
    t0 = float(other.get("start", 0.0))
    a = WaitAnalysis(link=bool(other.get("link", False)))
    a.start = t0
    a.dropped = int(other.get("dropped", 0))
    first = other.get("first_map")
    a.first_map = None if first is None else t0 + float(first)
    end = t0
    try:
        for ev in obj["traceEvents"]:
            if not isinstance(ev, dict) or ev.get("ph") != "X" or ev.get("cat") != "wait":
                continue
            args = ev.get("args") or {}
            start = t0 + float(ev["ts"]) / 1e6
            waited = float(ev["dur"]) / 1e6
            a.waits.append(Wait(int(ev["tid"]), int(args.get("seq", 0)), str(ev["name"]),
                                start, waited, Answered(args.get("answered", "unknown")),
                                bool(args.get("error", False)), str(args.get("behind", ""))))
            end = max(end, start + waited)
    except (KeyError, TypeError, ValueError) as err:
        raise NotWaits(f"bad wait event: {err}") from None
    a.end = end
    return a
