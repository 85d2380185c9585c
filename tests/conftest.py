"""Suite-wide rules: in CI (CI=true) a skipped test is a failure, never a silent pass; the
`unit` marker that `make check` selects."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {reason}"


# -- `make check`: the pure-core unit tests, marked `unit` here so test files carry no marker.
# A test is a unit test when its module is listed below and it uses none of the fixtures that
# start processes or open sockets; while it runs, starting a process or making a socket fails
# it, so the list cannot quietly grow a test that belongs in `make test` only.

UNIT_MODULES = frozenset({
    # xproxy: the X11 and link protocols, the suppressor, the decoder, in-memory adapters
    "test_connection", "test_decode", "test_suppress", "test_speedups", "test_outbox",
    "test_link", "test_link_compress", "test_link_resume", "test_identity", "test_xauth",
    "test_metrics", "test_opcodes", "test_waits", "test_agent_upstream", "test_suppress_boundary",
    "test_session_core", "test_suppress_marks",
    # discovery: the registry, its guards, pacing, the wire and key formats, configuration
    "test_registry", "test_registry_leases", "test_registry_rename", "test_guard",
    "test_pacing", "test_schema", "test_wire", "test_etcdkeys", "test_config",
    "test_mdns_screen", "test_browsing", "test_journal", "test_client_reconnect",
    # replicaclient: the policies and the stub's plumbing driven by a task.Clock
    "test_policy", "test_balancer", "test_budget", "test_ejection", "test_errors",
    "test_handoff", "test_latency", "test_linearizability", "test_replica", "test_sync",
    "test_client",
    # the rule that keeps the cores pure
    "test_purity",
})
# Fixtures that start a real X server, a proxy or a listening port.
PROCESS_FIXTURES = frozenset({"xvfb", "xauthority", "start_proxy", "listen"})
# Tests in a unit module that run a program of the host without a fixture.
NOT_UNIT = frozenset({
    "test_xauth.py::test_file_written_by_us_reads_back_with_xauth",  # runs xauth(1)
    # imports each pure module in a fresh interpreter
    "test_purity.py::test_importing_the_pure_modules_loads_no_loop_socket_or_process",
})


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "unit: a pure-core unit test: no process, no socket (`make check` runs these)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.stem
        name = f"{item.path.name}::{item.originalname}"
        if (module in UNIT_MODULES and name not in NOT_UNIT
                and not PROCESS_FIXTURES.intersection(item.fixturenames)):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process_and_open_no_socket(request, monkeypatch):
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(what: str):
        def refused(*args, **kwargs):
            raise AssertionError(f"a test marked unit (tests/conftest.py) {what}; list it in "
                                 "NOT_UNIT or give it a process fixture")
        return refused

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts a process"))
    monkeypatch.setattr(socket.socket, "__init__", refuse("opens a socket"))
