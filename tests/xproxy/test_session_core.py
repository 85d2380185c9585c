"""The session's pure core (xproxy/session/core.py): names, targets, control requests, the
lifetime policy, the detached screen and the listing."""

from __future__ import annotations

import json

import pytest

from xproxy.session.core import (
    Lifetime,
    Op,
    Request,
    RequestError,
    SessionError,
    TargetKind,
    check_name,
    format_listing,
    headless_screen,
    listing,
    parse_request,
    program_name,
    target_kind,
)


@pytest.mark.parametrize("name", ["work", "a", "my-session_2.b", "x" * 64])
def test_good_names(name) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "-flag", "a/b", "../x", "a b", "x" * 65, "é"])
def test_bad_names_are_refused(name) -> None:
    with pytest.raises(SessionError, match="bad session name"):
        check_name(name)


@pytest.mark.parametrize("target, kind", [
    ("@home", TargetKind.LINK), ("xproxy://10.0.0.1:7010", TargetKind.LINK),
    (":3", TargetKind.DISPLAY), ("unix:3", TargetKind.DISPLAY), ("host:0.1", TargetKind.DISPLAY),
])
def test_target_kinds(target, kind) -> None:
    assert target_kind(target) is kind


@pytest.mark.parametrize("target", ["", "@", "xproxy://", "home", "3", "x" * 2000])
def test_bad_targets_say_what_a_target_is(target) -> None:
    with pytest.raises(SessionError, match="target"):
        target_kind(target)


@pytest.mark.parametrize("req, expected", [
    ({"op": "run"}, Request(Op.RUN)),
    ({"op": "describe"}, Request(Op.DESCRIBE)),
    ({"op": "detach"}, Request(Op.DETACH)),
    ({"op": "stop"}, Request(Op.STOP)),
    ({"op": "move", "to": "@home"}, Request(Op.MOVE, "@home")),
    ({"op": "attach", "to": ":4"}, Request(Op.ATTACH, ":4")),
])
def test_requests(req, expected) -> None:
    assert parse_request(json.dumps(req).encode()) == expected


@pytest.mark.parametrize("line, match", [
    (b"{nope", "bad JSON"),
    (b"[1]", "JSON object"),
    (b'{"op": "shell"}', "unknown op"),
    (b'{"op": "move"}', "needs \"to\""),
    (b'{"op": "attach", "to": 3}', "needs \"to\""),
    (b'{"op": "move", "to": "nowhere"}', "not a target"),
])
def test_bad_requests_get_a_reason(line, match) -> None:
    with pytest.raises(RequestError, match=match):
        parse_request(line)


def test_a_session_lingers_once_unused_and_not_while_used() -> None:
    life = Lifetime(10, now=0)
    assert not life.observe(5, runs=0, clients=0)
    assert life.observe(10, runs=0, clients=0)  # unused since it started
    life = Lifetime(10, now=0)
    assert not life.observe(9, runs=1, clients=0)
    assert not life.observe(15, runs=0, clients=2)  # a detached program keeps it
    assert not life.observe(20, runs=0, clients=0)
    assert not life.observe(29, runs=0, clients=0)
    assert life.observe(30, runs=0, clients=0)


def test_headless_screen_from_describe() -> None:
    assert headless_screen({"geometry": [1280, 800], "depth": 24}) == (1280, 800, 24)


@pytest.mark.parametrize("described", [
    {}, {"geometry": [0, 800], "depth": 24}, {"geometry": [800], "depth": 24},
    {"geometry": [800, 600], "depth": 7}, {"geometry": ["800", 600], "depth": 24},
])
def test_headless_screen_refuses_what_xvfb_cannot_be(described) -> None:
    with pytest.raises(SessionError, match="did not say its screen"):
        headless_screen(described)


def test_program_names_prefer_wm_class_then_the_pid_then_the_name() -> None:
    assert program_name({"wm_class": "xclock\0XClock"}) == "XClock"
    assert program_name({"wm_class": ["xterm", "XTerm"]}) == "XTerm"
    assert program_name({"wm_class": None, "pid": 4}, comm="xeyes") == "xeyes"
    assert program_name({"name": "client 3"}) == "client 3"
    assert program_name({}) == "?"


def test_listing_and_its_line() -> None:
    described = {"ok": True, "shown_on": "@home", "since": 100.0, "detached": False,
                 "geometry": [1024, 768], "depth": 24,
                 "clients": [{"id": 1, "wm_class": "xclock\0XClock", "pid": 42, "name": "c1"},
                             {"id": 2, "wm_class": None, "pid": 43, "name": "c2"}, "junk"]}
    entry = listing("work", ":12", described, comms={43: "xeyes"})
    assert entry["clients"] == [
        {"id": 1, "program": "XClock", "wm_class": "xclock\0XClock", "pid": 42, "name": "c1"},
        {"id": 2, "program": "xeyes", "wm_class": None, "pid": 43, "name": "c2"}]
    assert entry["shown_on"] == "@home" and entry["since"] == 100.0 and not entry["detached"]
    assert format_listing(entry, "10:00:00") == (
        "work             :12    on @home since 10:00:00, 2 clients: XClock (42), xeyes (43)")
