"""The superserver: hold a listening socket, start the server on the first connection.

Socket hand-over is systemd's (sd_listen_fds(3)): the child gets the listening socket as fd
3 with ``LISTEN_FDS=1``, ``LISTEN_FDNAMES=<name>`` and ``LISTEN_PID`` equal to its own pid.
The pid is only known after fork, so the command runs under a tiny exec wrapper,
``/bin/sh -c 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"'``: ``$$`` is the shell's pid, and
``exec`` keeps it for the command.

Like xinetd's ``wait = yes`` (and systemd's ``Accept=no``) the server accepts connections
itself; the daemon watches the socket only while no instance could take the connection:
before the first one, after an instance exits, or when a connection stays unaccepted while
fewer than ``max_instances`` run. ``rate`` = (N, T) allows at most N starts in T seconds;
beyond that the service pauses for T seconds, as xinetd's ``cps`` does.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import protocol
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from discovery.config import OnDemand

if TYPE_CHECKING:
    from discovery.reactor import ISuperserverReactor

log = Logger(namespace="discovery.superserver")

EXEC_WRAPPER = 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"'
RECHECK_AFTER = 0.25  # s an unaccepted connection waits before another instance may start


def bind_listener(address: str, port: int) -> socket.socket:
    """Bind and listen now, so the port is known and connections queue before any server runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class _Child(protocol.ProcessProtocol):
    def __init__(self, owner: OnDemandService) -> None:
        self.owner = owner

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # type: ignore[union-attr]

    def processEnded(self, reason: Any) -> None:
        self.owner._ended(self, reason)


@implementer(IReadDescriptor)
class OnDemandService:
    """One socket-activated service."""

    def __init__(
        self,
        reactor: ISuperserverReactor,
        name: str,
        sock: socket.socket,
        spec: OnDemand,
        run_as: tuple[int, int] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.name = name
        self.sock = sock
        self.spec = spec
        self.run_as = run_as
        self.on_start = on_start
        self.port = sock.getsockname()[1]
        self.children: set[_Child] = set()
        self.starts: deque[float] = deque()
        self.starts_total = 0
        self._reading = False
        self._paused: Any = None
        self._recheck: Any = None
        self.closed = False

    # IReadDescriptor, so the reactor can watch the listening socket for us
    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return f"on-demand {self.name}"

    def connectionLost(self, reason: Any) -> None:
        pass

    def doRead(self) -> None:
        self._stop_reading()
        self._start_instance()

    def start(self) -> None:
        self._arm()

    def _arm(self) -> None:
        if self.closed or self._reading or self._paused is not None:
            return
        if len(self.children) >= self.spec.max_instances:
            return
        self._reading = True
        self.reactor.addReader(self)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self.reactor.removeReader(self)

    def _start_instance(self) -> None:
        now = self.reactor.seconds()
        limit, period = self.spec.rate
        while self.starts and self.starts[0] <= now - period:
            self.starts.popleft()
        if len(self.starts) >= limit:
            log.warn(
                "{name}: {n} starts in {p} s, pausing for {p} s (rate limit)", name=self.name, n=limit, p=period
            )
            self._paused = self.reactor.callLater(period, self._unpause)
            return
        self.starts.append(now)
        self.starts_total += 1
        child = _Child(self)
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")}
        env.update(self.spec.env)
        env.update({"LISTEN_FDS": "1", "LISTEN_FDNAMES": self.name})
        uid = gid = None
        if self.run_as is not None and os.getuid() == 0 and self.run_as[0] != 0:
            uid, gid = self.run_as
        try:
            self.reactor.spawnProcess(
                child,
                "/bin/sh",
                ["/bin/sh", "-c", EXEC_WRAPPER, self.spec.command[0], *self.spec.command],
                env=env,
                path=self.spec.cwd,
                uid=uid,
                gid=gid,
                childFDs={0: "w", 1: 2, 2: 2, 3: self.sock.fileno()},
            )
        except OSError as e:
            log.error("{name}: cannot start {cmd}: {e}", name=self.name, cmd=self.spec.command, e=e)
            self._paused = self.reactor.callLater(1.0, self._unpause)
            return
        self.children.add(child)
        pid = child.transport.pid if child.transport else 0
        log.info("{name}: started {cmd} as pid {pid}", name=self.name, cmd=self.spec.command, pid=pid)
        if self.on_start:
            self.on_start(pid)
        if len(self.children) < self.spec.max_instances:
            self._recheck = self.reactor.callLater(RECHECK_AFTER, self._check_backlog)

    def _check_backlog(self) -> None:
        """A connection nobody accepted yet: the running instances are busy, start another."""
        self._recheck = None
        if self.closed or len(self.children) >= self.spec.max_instances:
            return
        try:
            readable = select.select([self.sock], [], [], 0)[0]
        except (OSError, ValueError):
            return
        if readable:
            self._start_instance()

    def _unpause(self) -> None:
        self._paused = None
        self._arm()

    def _ended(self, child: _Child, reason: Any) -> None:
        self.children.discard(child)
        code = getattr(reason.value, "exitCode", None)
        log.info("{name}: instance exited ({code}); the daemon holds the socket again", name=self.name, code=code)
        self._arm()

    def close(self) -> None:
        """Stop listening and terminate running instances."""
        self.closed = True
        self._stop_reading()
        for call in (self._paused, self._recheck):
            if call is not None and call.active():
                call.cancel()
        for child in list(self.children):
            try:
                child.transport.signalProcess("TERM")  # type: ignore[union-attr]
            except ProcessExitedAlready:
                pass
            except OSError as e:
                if e.errno != errno.ESRCH:
                    log.warn("{name}: {e}", name=self.name, e=e)
        self.sock.close()

    def status(self) -> dict[str, Any]:
        return {
            "running": len(self.children),
            "starts": self.starts_total,
            "paused": self._paused is not None,
        }
