"""Box keys the stub and the replica-side helper add to ordinary AMP boxes.

A replica without the helper ignores them (AMP parses only the arguments a command
declares), so ``first`` and ``vote`` work against any AMP server; ``quorum`` and
deduplication need ``replicaclient.server``.
"""

from __future__ import annotations

REQUEST_ID = b"_rc_id"  # b"<client id>:<sequence>", same for every copy of one call
REGISTER = b"_rc_reg"  # the register a quorum call reads or writes
TAG = b"_rc_tag"  # a write's tag (request) / the register's tag (response)
READ = b"_rc_rd"  # a quorum read: answer with the register's tag and last write
STALE = b"_rc_stale"  # response: the write's tag was older, nothing was applied
WRITE_COMMAND = b"_rc_wc"  # response to a quorum read: the last write's command
WRITE_ARG = b"_rc_w."  # prefix of the last write's arguments
ERROR_CODE = b"_rc_ec"  # a declared error carried in an answer box, with its tag
ERROR_DESCRIPTION = b"_rc_ed"
PREFIX = b"_rc_"

TAG_COMMAND = b"ReplicaClient.Tag"  # helper command: the tag of register _rc_reg
HELLO_COMMAND = b"ReplicaClient.Hello"  # helper command: this process's incarnation
INCARNATION = b"_rc_inc"
DUMP_COMMAND = b"ReplicaClient.Dump"  # helper command: a page of registers (sync.py)
LOAD_COMMAND = b"ReplicaClient.Load"  # helper command: apply a page of tagged writes
MAX_PAGE = 2000  # the most registers a Dump answers with, or a Load carries


def request_id(client: str, seq: int) -> bytes:
    return f"{client}:{seq}".encode("ascii")


def strip(box: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The box without any key of ours."""
    return {k: v for k, v in box.items() if not k.startswith(PREFIX)}
