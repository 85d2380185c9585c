"""How a service declares, once, what each of its commands does to replicated state.

A decorator on the AMP ``Command`` class records a :class:`Semantics`; the stub reads it
at every call, so no call site repeats it::

    @read(register="key")
    class Get(amp.Command): ...

    @write(idempotent=True, register="key")
    class Put(amp.Command): ...

``register`` names the argument that identifies the register a command reads or
overwrites; only the ``quorum`` policy needs it. An undeclared command is treated as a
non-idempotent write: never hedged, never retried, which is the safe default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")

ATTRIBUTE = "replication"


@dataclass(frozen=True)
class Semantics:
    """What a command does: reads or writes, whether repeating it is harmless, and
    the argument that names its register (for linearizable quorum calls)."""

    kind: Literal["read", "write"]
    idempotent: bool
    register: str | None = None

    @property
    def hedgeable(self) -> bool:
        """A call may be sent again (hedged or retried) only if repeating it is harmless."""
        return self.idempotent


UNDECLARED = Semantics("write", idempotent=False)


def read(register: str | None = None) -> Callable[[T], T]:
    """Declare a command a read: no effect on state, so always safe to hedge."""
    return _declare(Semantics("read", True, register))


def write(idempotent: bool = False, register: str | None = None) -> Callable[[T], T]:
    """Declare a command a write. ``idempotent=True`` when doing it twice equals doing
    it once (an overwrite, or a write the replica deduplicates by request id)."""
    return _declare(Semantics("write", idempotent, register))


def declare(command: object, semantics: Semantics) -> None:
    """Declare a command class's semantics without the decorator syntax, e.g. for a
    command defined by a library you do not own."""
    setattr(command, ATTRIBUTE, semantics)


def semantics_of(command: object) -> Semantics:
    """The declared semantics of a command class, or :data:`UNDECLARED`."""
    found = getattr(command, ATTRIBUTE, None)
    return found if isinstance(found, Semantics) else UNDECLARED


def _declare(semantics: Semantics) -> Callable[[T], T]:
    def decorate(command: T) -> T:
        declare(command, semantics)
        return command

    return decorate
