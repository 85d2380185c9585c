"""The agent's in-process upstream (agent/upstream.py) and the link's BYE, in memory: a run's
relay writes into a link channel through the suppressor, answers come straight back to the
relay, the run's counts are its own, and a clean end tells the far side."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet import protocol

from tests.xproxy.test_link import Recorder, linked_pair
from tests.xproxy.test_suppress import intern, intern_reply, setup_reply, setup_request
from xproxy.agent.upstream import AgentEndpoint, RunCounts
from xproxy.link.transport import ChannelTransport, LinkSession
from xproxy.relay.proxy import ServerSide
from xproxy.suppress.core import DisplayCache


class Host:
    """The agent, as an AgentUpstream sees it (upstream.UpstreamHost)."""

    def __init__(self, session: LinkSession, cache: DisplayCache) -> None:
        self.session = session
        self.cache: DisplayCache | None = cache
        self.suppress = True
        self.verify = False
        self.numbers = 0
        self.active = 0
        self.saved = 0

    def next_number(self) -> int:
        self.numbers += 1
        return self.numbers

    def open_channel(self) -> ChannelTransport:
        return self.session.open_channel({})

    def hold(self) -> None:
        self.active += 1

    def release(self) -> None:
        self.active -= 1

    def save(self) -> None:
        self.saved += 1


def connect(host: Host, counts: RunCounts) -> Recorder:
    got: list[Recorder] = []
    AgentEndpoint(host, counts).connect(protocol.Factory.forProtocol(Recorder)).addCallback(
        got.append)
    return got[0]


def test_answers_go_straight_back_and_every_request_goes_on_the_link_once() -> None:
    a, _b, opened, flush = linked_pair()
    cache = DisplayCache("epoch")
    cache.learn_atom(b"FOO", 77)
    host = Host(a.session, cache)
    counts = RunCounts()
    relay = connect(host, counts)
    assert host.active == 1 and not opened  # the channel opens with the first bytes
    upstream = relay.transport
    upstream.write(setup_request())
    flush()
    far = opened[0]
    far.write(setup_reply())
    flush()
    assert relay.data == [setup_reply()]
    upstream.write(intern(b"FOO"))
    assert relay.data[-1] == intern_reply(1, 77)  # at once, before the link moved anything
    flush()
    assert b"".join(far.protocol.data) == setup_request() + intern(b"FOO")
    far.write(intern_reply(1, 77))  # the server's own reply: compared and swallowed
    flush()
    assert len(relay.data) == 2
    assert (counts.stats.answered, counts.stats.compared, counts.stats.mismatches) == (1, 1, 0)
    upstream.loseConnection()
    flush()
    assert far.protocol.lost and relay.lost
    assert host.active == 0 and host.saved >= 1 and not cache.open_connections


def test_each_run_counts_only_its_own_connections() -> None:
    a, _b, opened, flush = linked_pair()
    cache = DisplayCache("epoch")
    cache.learn_atom(b"FOO", 77)
    host = Host(a.session, cache)
    first, second = RunCounts(), RunCounts()
    for counts in (first, second, second):
        relay = connect(host, counts)
        relay.transport.write(setup_request() + intern(b"FOO"))
        flush()
        far = opened[-1]
        far.write(setup_reply() + intern_reply(1, 77))
        flush()
    assert (first.stats.compared, second.stats.compared, cache.stats.compared) == (1, 2, 3)


class RelayEnd(ServerSide):
    """The relay's upstream protocol of client 7, as the agent's upstream sees it: records
    what reaches it, and how many marks the run had been told by then."""

    def __init__(self, told: list[tuple[int, int, int]]) -> None:
        super().__init__(SimpleNamespace(number=7, buffers=None))  # type: ignore[arg-type]
        self.told = told
        self.data: list[tuple[bytes, int]] = []

    def connectionMade(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        self.data.append((data, len(self.told)))

    def connectionLost(self, reason: object = None) -> None:
        pass


def test_a_traced_run_is_told_each_answer_of_its_client_before_the_answer() -> None:
    a, _b, opened, flush = linked_pair()
    cache = DisplayCache("epoch")
    cache.learn_atom(b"FOO", 77)
    told: list[tuple[int, int, int]] = []
    counts = RunCounts(marks=lambda *mark: told.append(mark))
    got: list[RelayEnd] = []
    AgentEndpoint(Host(a.session, cache), counts).connect(
        protocol.Factory.forProtocol(lambda: RelayEnd(told))).addCallback(got.append)
    relay = got[0]
    relay.transport.write(setup_request())
    flush()
    opened[0].write(setup_reply())
    flush()
    # the server's twice, then ours: held behind the last of the server's
    relay.transport.write(intern(b"BAR") + intern(b"BAZ") + intern(b"FOO"))
    assert told == [(7, 3, 2)]
    relay.transport.write(intern(b"FOO"))  # held too, behind the same
    opened[0].write(intern_reply(1, 78) + intern_reply(2, 79))
    flush()
    relay.transport.write(intern(b"FOO"))  # nothing unfinished before it: at once
    assert told == [(7, 3, 2), (7, 4, 2), (7, 5, 0)]
    # each mark was told before its answer reached the relay
    assert b"".join(d for d, _ in relay.data[1:-1]) == \
        intern_reply(1, 78) + intern_reply(2, 79) + intern_reply(3, 77) + intern_reply(4, 77)
    assert all(n >= 2 for _, n in relay.data[1:-1])
    assert relay.data[-1] == (intern_reply(5, 77), 3)
    assert (counts.stats.answered, counts.stats.held) == (1, 2)


def test_a_bye_ends_the_far_session_and_tells_its_owner() -> None:
    a, b, opened, flush = linked_pair()
    byes: list[str] = []
    b.on_bye = lambda link, reason: byes.append(reason)
    ch = a.open_channel()
    ch.attach(Recorder())
    ch.write(b"hi")
    flush()
    a.session.end("idle", bye=True)  # type: ignore[union-attr]
    flush()
    assert byes == ["idle"]
    assert opened[0].protocol.lost and not b.channels
    assert b.session.ended == "ended by the peer: idle"  # type: ignore[union-attr]
