"""``tracker verify`` through the real CLI: an intact chain passes; every kind of tampering names the first bad seq.

Tampering drops the append-only triggers first (``store_helpers.tampering``), as someone with DBA rights could.
Rules: local databases only (``db_url`` runs each test on SQLite and PostgreSQL).
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from sqlalchemy import Connection, delete, select, update
from store_helpers import entry, open_log, tampering

from tracker.cli import main
from tracker.cli.verify import LARGE_LOG, Progress
from tracker.domain.chain import GENESIS, link_hash
from tracker.domain.log import LogEntry
from tracker.store.schema import event_log

ROWS = 6


@pytest.fixture
def url(db_url: str) -> str:
    """A migrated database holding ROWS chained events."""
    with open_log(db_url) as log:
        log.append([entry(i) for i in range(1, ROWS + 1)])
    return db_url


def verify(url: str, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    code = main(["verify", "--db-url", url, *flags])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _row(conn: Connection, seq: int) -> dict[str, Any]:
    return dict(conn.execute(select(event_log).where(event_log.c.seq == seq)).mappings().one())


def _set(conn: Connection, seq: int, /, **values: Any) -> None:
    conn.execute(update(event_log).where(event_log.c.seq == seq).values(**values))


def test_intact_log_passes(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = verify(url, capsys)
    assert code == 0
    assert out.startswith(f"ok: {ROWS} events intact (seq 1..{ROWS}), head hash ")
    assert out.count("\n") == 1


def test_empty_log_passes(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with open_log(db_url):
        pass
    code, out = verify(db_url, capsys, "--anchor")
    assert code == 0
    first, anchor = out.splitlines()
    assert first.startswith("ok: the event log is empty; ")  # then the database's own check (test_damaged_db.py)
    assert anchor == f"0:{GENESIS}"


def test_unmigrated_database_is_an_error(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = verify(db_url, capsys)
    assert code == 2
    assert out.startswith("tracker: error: ")
    assert "tracker db upgrade" in out


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("payload", '{"data":{"id":3,"amount_str":"9.10000000"}}'),
        ("account", "666"),
        ("order_id", None),
        ("exchange_ts_us", 1),
        ("dedup_key", "forged"),
    ],
)
def test_altered_column_is_named(url: str, capsys: pytest.CaptureFixture[str], column: str, value: object) -> None:
    with tampering(url) as conn:
        _set(conn, 3, **{column: value})
    code, out = verify(url, capsys)
    assert code == 1
    assert "the chain fails at seq 3: content does not match its hash" in out


def test_altered_received_at_is_named(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with tampering(url) as conn:
        _set(conn, 4, received_at=_row(conn, 4)["received_at"].replace(microsecond=1))
    code, out = verify(url, capsys)
    assert (code, "seq 4:" in out) == (1, True)


def test_altered_and_rehashed_row_breaks_the_next_link(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with tampering(url) as conn:
        row = _row(conn, 2)
        forged = LogEntry(**{**row, "payload": "{}"})
        _set(conn, 2, payload="{}", hash=link_hash(row["prev_hash"], 2, forged))
    code, out = verify(url, capsys)
    assert code == 1
    assert "the chain fails at seq 3: prev_hash does not match" in out


def test_deleted_row_is_named(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with tampering(url) as conn:
        conn.execute(delete(event_log).where(event_log.c.seq == 3))
    code, out = verify(url, capsys)
    assert code == 1
    assert "the chain fails at seq 3: row missing: found seq 4 next after seq 2" in out


def test_deleted_first_row_is_named(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with tampering(url) as conn:
        conn.execute(delete(event_log).where(event_log.c.seq == 1))
    code, out = verify(url, capsys)
    assert (code, "the chain fails at seq 1: row missing" in out) == (1, True)


def test_inserted_row_is_named(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A forged row slipped in at seq 4 with a correct link to seq 3; the old seq 4 moves to 5 and no longer fits."""
    with tampering(url) as conn:
        for seq in range(ROWS, 3, -1):
            _set(conn, seq, seq=seq + 1)
        prev = _row(conn, 3)["hash"]
        forged = entry(99)
        conn.execute(
            event_log.insert().values(
                seq=4,
                **{name: getattr(forged, name) for name in forged.__slots__},
                prev_hash=prev,
                hash=link_hash(prev, 4, forged),
            )
        )
    code, out = verify(url, capsys)
    assert code == 1
    assert "the chain fails at seq 5:" in out


def test_swapped_pair_is_named(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with tampering(url) as conn:
        two, three = _row(conn, 2), _row(conn, 3)
        _set(conn, 2, **{**three, "seq": 2, "dedup_key": "swapping"})
        _set(conn, 3, **{**two, "seq": 3})
        _set(conn, 2, dedup_key=three["dedup_key"])
    code, out = verify(url, capsys)
    assert code == 1
    assert "the chain fails at seq 2: " in out


def test_anchor_round_trip(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = verify(url, capsys, "--anchor")
    assert code == 0
    anchor = out.splitlines()[-1]
    seq, hash_ = anchor.split(":")
    assert seq == str(ROWS)
    assert len(hash_) == 64
    with open_log(url) as log:
        log.append([entry(100)])  # appending later keeps the anchor valid
        assert str(log.head_anchor()) != anchor
    code, out = verify(url, capsys, "--expect-anchor", anchor)
    assert code == 0
    assert f"anchor at seq {ROWS} matches" in out


def test_anchor_catches_a_cut_end(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, out = verify(url, capsys, "--anchor")
    anchor = out.splitlines()[-1]
    with tampering(url) as conn:
        conn.execute(delete(event_log).where(event_log.c.seq >= ROWS - 1))
    assert verify(url, capsys)[0] == 0  # the shorter chain is still a valid chain ...
    code, out = verify(url, capsys, "--expect-anchor", anchor)
    assert code == 1  # ... but not the one anchored
    assert f"the chain fails at seq {ROWS - 1}: the log ends at seq {ROWS - 2}, before the anchor {ROWS}" in out


def test_anchor_catches_a_rewritten_chain(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, out = verify(url, capsys, "--anchor")
    anchor = out.splitlines()[-1]
    with tampering(url) as conn:  # rewrite seq 2 and recompute every later hash: the chain itself stays valid
        prev = _row(conn, 1)["hash"]
        for seq in range(2, ROWS + 1):
            row = _row(conn, seq)
            if seq == 2:
                row["payload"] = "{}"
            new_hash = link_hash(prev, seq, LogEntry(**{**row, "prev_hash": prev}))
            _set(conn, seq, payload=row["payload"], prev_hash=prev, hash=new_hash)
            prev = new_hash
    assert verify(url, capsys)[0] == 0
    code, out = verify(url, capsys, "--expect-anchor", anchor)
    assert code == 1
    assert f"the chain fails at seq {ROWS}: hash differs from the anchor" in out


def test_bad_anchor_text_is_a_usage_error(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = verify(url, capsys, "--expect-anchor", "12:nothex")
    assert code == 2
    assert "--expect-anchor: an anchor is SEQ:HASH" in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_or_for_big_logs() -> None:
    terminal = _Terminal()
    progress = Progress(4000, terminal)
    progress.show(2000)
    progress.done()
    assert terminal.getvalue() == "\rverifying: seq 2000/4000 (50%)\r\033[K"
    quiet = io.StringIO()
    Progress(4000, quiet).show(2000)
    assert quiet.getvalue() == ""
    loud = io.StringIO()
    Progress(LARGE_LOG, loud).show(1)
    assert loud.getvalue().startswith("\rverifying: seq 1/")


def test_walks_in_pages(url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tracker.store.chain_walk.PAGE", 2)
    assert verify(url, capsys)[0] == 0
    with tampering(url) as conn:
        _set(conn, 5, payload="{}")
    code, out = verify(url, capsys)
    assert (code, "the chain fails at seq 5: content does not match" in out) == (1, True)
