"""The state journal: its format and compaction rule (pure), and the file that keeps it."""

from __future__ import annotations

from pathlib import Path

from discovery import journal
from discovery.journalfile import JournalFile
from discovery.registry import replay

ADD = {"op": "add", "name": "printer", "type": "_ipp._tcp", "port": 631, "source": "local"}
REMOVE = {"op": "remove", "name": "printer", "type": "_ipp._tcp"}


def test_a_record_is_one_line_of_json() -> None:
    assert journal.encode(REMOVE) == b'{"op": "remove", "name": "printer", "type": "_ipp._tcp"}\n'
    assert journal.encode({"name": "caf\u00e9"}) == b'{"name": "caf\\u00e9"}\n'
    assert journal.encode_all([ADD, REMOVE]) == journal.encode(ADD) + journal.encode(REMOVE)
    assert journal.encode_all([]) == b""


def test_records_read_back_and_a_line_cut_short_or_garbled_is_skipped() -> None:
    data = journal.encode_all([ADD, REMOVE, ADD])
    assert journal.decode(data) == [ADD, REMOVE, ADD]
    assert journal.decode(b"\xff\xfe\n" + data + b'{"op": "add", "na') == [ADD, REMOVE, ADD]
    assert journal.decode(b"") == []
    assert replay(journal.decode(data[: -len(journal.encode(ADD)) + 5])) == []


def test_compaction_waits_for_churn_past_the_threshold_and_four_times_what_stands() -> None:
    n = journal.COMPACT_AFTER
    assert not journal.needs_compaction(n, 0)
    assert journal.needs_compaction(n + 1, 0)
    assert not journal.needs_compaction(4 * n, n)
    assert journal.needs_compaction(4 * n + 1, n)


def test_the_file_appends_after_a_rewrite_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.jsonl"
    f = JournalFile(path)
    assert f.read() == []
    f.append(ADD)  # not open yet: nothing is written
    assert not path.exists()
    f.rewrite([ADD])
    f.append(REMOVE)
    f.append(ADD)
    assert f.lines == 3
    assert JournalFile(path).read() == [ADD, REMOVE, ADD]
    f.rewrite(replay(f.read()))
    assert f.lines == 1
    assert path.read_bytes() == journal.encode(ADD)
    assert not path.with_suffix(".tmp").exists()
    f.close()
    f.append(REMOVE)  # closed: nothing is written
    assert path.read_bytes() == journal.encode(ADD)
