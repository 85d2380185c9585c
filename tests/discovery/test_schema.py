"""The local API's one declared schema: every op's fields and their JSON types."""

from __future__ import annotations

import pytest

from discovery.schema import OPS, Refusal, check


@pytest.mark.parametrize(
    "body",
    [
        {"op": "hello"},
        {"id": "x", "op": "ping"},
        {"id": 1, "op": "register", "name": "a", "type": "_a._tcp", "port": 1, "txt": {"k": "v"}},
        {"op": "register", "name": "a", "type": "_a._tcp", "port": 0, "txt": None,
         "on_demand": {"command": ["x"], "max_instances": 2, "rate": [5, 1.5], "env": {"A": "b"}, "cwd": "/"}},
        {"op": "withdraw", "name": "a", "type": "_a._tcp"},
        {"op": "lookup", "type": "_a._tcp", "name": None, "wait": 0.5},
        {"op": "watch", "type": "_a._tcp"},
        {"op": "unwatch", "type": "_a._tcp"},
        {"op": "list"},
    ],
)
def test_well_typed_requests_pass(body) -> None:
    assert check(body) is None


@pytest.mark.parametrize(
    "body,refusal",
    [
        ({"op": "lookup", "type": "_a._tcp", "name": 5},
         Refusal("bad-request", "lookup: field 'name' must be a string, not a number")),
        ({"op": "lookup", "type": None}, Refusal("bad-request", "lookup: missing field 'type'")),
        ({"op": "lookup", "type": "_a._tcp", "wait": "1"},
         Refusal("bad-request", "lookup: field 'wait' must be a number, not a string")),
        ({"op": "withdraw", "name": True, "type": "_a._tcp"},
         Refusal("bad-request", "withdraw: field 'name' must be a string, not a boolean")),
        ({"op": "register", "name": "a", "type": "_a._tcp", "port": 1.0},
         Refusal("bad-request", "register: field 'port' must be an integer, not a number")),
        ({"op": "register", "name": "a", "type": "_a._tcp", "port": 1, "txt": {"k": 1}},
         Refusal("bad-request", "register: field 'txt' must be an object of strings, not an object")),
        ({"op": "register", "name": "a", "type": "_a._tcp", "port": 1, "on_demand": 5},
         Refusal("bad-request", "register: field 'on_demand' must be an object, not a number")),
        ({"op": "register", "name": "a", "type": "_a._tcp", "port": 1, "on_demand": {}},
         Refusal("bad-request", "register: missing field 'on_demand.command'")),
        ({"op": "register", "name": "a", "type": "_a._tcp", "port": 1, "on_demand": {"command": ["x"], "user": "r"}},
         Refusal("bad-request", "register: unknown field 'on_demand.user'")),
        ({"op": "watch", "type": "_a._tcp", "wiat": 1}, Refusal("bad-request", "watch: unknown field 'wiat'")),
        ({"op": "nope"}, Refusal("bad-op", "unknown op 'nope'")),
        ({"id": 1}, Refusal("bad-request", "missing field 'op'")),
        ({"op": ["hello"]}, Refusal("bad-request", "field 'op' must be a string, not a list")),
        ({"id": 1.5, "op": "hello"}, Refusal("bad-request", "field 'id' must be an integer or a string, not a number")),
    ],
)
def test_badly_typed_requests_are_refused_naming_the_field(body, refusal) -> None:
    assert check(body) == refusal


def test_every_op_has_a_handler() -> None:
    from discovery.api import API

    assert all(callable(getattr(API, "op_" + op, None)) for op in OPS)
