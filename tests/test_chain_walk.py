"""The chain walk in parts (``store/chain_walk.py``, ``ChainWalker.open_part``/``join``) finds what one walk finds.

Pure: a walk split at any point, of a log tampered anywhere (first half, second half, at the boundary), gives the same
count, head and first break as one walk (hypothesis). Store: ``tracker verify`` walking in two parts (worker processes
on SQLite, one after the other on PostgreSQL) names the same seq for a tamper in either half and at the boundary; the
fast hash inputs (orjson, SQLite's ``json_array``) write the reference's bytes, and where they do not (a row stored
in a form no writer makes) the reference decides. Rules: local databases only; no sleeps.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text, update
from store_helpers import entry, open_log, tampering

from tracker.cli import main
from tracker.domain import chain
from tracker.domain.chain import (
    CANONICAL_COLUMNS,
    GENESIS,
    Anchor,
    ChainWalker,
    canonical,
    canonical_values,
    chain_row,
    hashed_values,
    link_hash,
)
from tracker.domain.log import LogEntry
from tracker.domain.timeutil import datetime_to_us
from tracker.store import chain_walk
from tracker.store.chain_walk import split, walk_chain
from tracker.store.engine import open_engine
from tracker.store.schema import event_log

ROWS = 40
MID = ROWS // 2  # split(ROWS, 2): part 1 is seq 1..MID, part 2 seq MID+1..ROWS


# -- pure: parts joined == one walk ------------------------------------------------------------------------------------


def _chain(n: int) -> list[LogEntry]:
    rows, prev = [], GENESIS
    for seq in range(1, n + 1):
        new = entry(seq)
        fields = {name: getattr(new, name) for name in new.__slots__}
        row = LogEntry(seq=seq, **fields, prev_hash=prev, hash=link_hash(prev, seq, new))
        rows.append(row)
        prev = row.hash
    return rows


def _tamper(rows: list[LogEntry], kind: str, at: int) -> list[LogEntry]:
    out = list(rows)
    i = at - 1
    if kind == "content":
        out[i] = replace(out[i], payload="{}")
    elif kind == "prev":
        out[i] = replace(out[i], prev_hash="f" * 64)
    elif kind == "hash":  # altered and rehashed: the next row's link fails
        forged = replace(out[i], payload="{}")
        out[i] = replace(forged, hash=link_hash(forged.prev_hash, forged.seq, forged))
    elif kind == "delete":
        del out[i]
    elif kind == "swap" and i + 1 < len(out):  # two rows' contents exchanged, each under the other's seq
        out[i], out[i + 1] = replace(out[i + 1], seq=out[i].seq), replace(out[i], seq=out[i + 1].seq)
    elif kind == "insert":  # a forged row linked to the one before, the rest moved up one seq
        forged = entry(99)
        prev = out[i - 1].hash if i else GENESIS
        fields = {name: getattr(forged, name) for name in forged.__slots__}
        row = LogEntry(seq=at, **fields, prev_hash=prev, hash=link_hash(prev, at, forged))
        out = [*out[:i], row, *(replace(r, seq=r.seq + 1) for r in out[i:])]
    return out


def _one_walk(rows: list[LogEntry], expect: Anchor | None = None) -> tuple[int, int, str, object]:
    walker = ChainWalker(expect)
    walker.feed(rows)
    return walker.count, walker.head, walker.head_hash, walker.finish()


def _parts_walk(rows: list[LogEntry], cuts: list[int], expect: Anchor | None = None) -> tuple[int, int, str, object]:
    """Walk the rows in parts split at the seqs ``cuts`` (part k is the rows with seq in (cut k-1, cut k]), each part
    fed its rows as tuples, then join them in order."""
    edges = [0, *sorted(cuts), max([0, *(row.seq for row in rows)])]
    parts = []
    for k in range(len(edges) - 1):
        walker = ChainWalker(expect) if k == 0 else ChainWalker.open_part(expect)
        walker.feed_rows([chain_row(row) for row in rows if edges[k] < row.seq <= edges[k + 1]], orjson.dumps)
        parts.append(walker)
    joined = parts[0]
    for part in parts[1:]:
        if joined.join(part) is not None:
            break
    return joined.count, joined.head, joined.head_hash, joined.finish()


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 30),
    kind=st.sampled_from(["none", "content", "prev", "hash", "delete", "swap", "insert"]),
    data=st.data(),
)
def test_parts_joined_find_what_one_walk_finds(n: int, kind: str, data: st.DataObject) -> None:
    rows = _chain(n)
    at = data.draw(st.integers(1, n))
    tampered = rows if kind == "none" else _tamper(rows, kind, at)
    cuts = data.draw(st.lists(st.integers(1, n), max_size=3, unique=True))
    anchor = data.draw(st.sampled_from([None, Anchor(rows[-1].seq, rows[-1].hash), Anchor(n + 1, "a" * 64)]))
    assert _parts_walk(tampered, cuts, anchor) == _one_walk(tampered, anchor)


@pytest.mark.parametrize("kind", ["content", "prev", "hash", "delete", "swap", "insert"])
@pytest.mark.parametrize("at", [1, MID - 1, MID, MID + 1, MID + 2, ROWS - 1, ROWS])
def test_tamper_in_either_half_and_at_the_boundary(kind: str, at: int) -> None:
    tampered = _tamper(_chain(ROWS), kind, at)
    one = _one_walk(tampered)
    cut_or_rehashed_end = (
        kind in ("hash", "delete", "swap") and at == ROWS
    )  # a valid shorter chain: only anchors see it
    assert (one[3] is None) == cut_or_rehashed_end
    assert _parts_walk(tampered, [MID]) == one


def test_split_covers_every_seq_once() -> None:
    assert split(0, 2) == [(0, 0)]
    assert split(1, 2) == [(0, 1)]
    assert split(5, 2) == [(0, 2), (2, 5)]
    assert split(1_000_000, 2) == [(0, 500_000), (500_000, 1_000_000)]


# -- the fast hash inputs write the reference's bytes ----------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)  # no lone surrogates: not storable as UTF-8
_value = st.one_of(st.none(), _text, st.integers(-(2**63), 2**63 - 1))


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_value, min_size=len(CANONICAL_COLUMNS), max_size=len(CANONICAL_COLUMNS)))
def test_orjson_writes_the_reference_bytes(values: list[Any]) -> None:
    assert orjson.dumps(tuple(values)) == canonical_values(values)


# The writer's own hash input (chain._fast_values, orjson with the reference behind it) is the reference's, byte for
# byte, for any value, surrogates and integers beyond 64 bits included (those go to the reference, which writes or
# raises as it always did).
_any_text = st.text(max_size=40)  # lone surrogates included
_any_value = st.one_of(
    st.none(), _any_text, st.integers(-(2**80), 2**80), st.sampled_from([2**64 - 1, 2**64, -(2**63) - 1])
)


def _outcome(encode: Any, values: list[Any]) -> object:
    try:
        return encode(values)
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        return type(exc)


@settings(max_examples=500, deadline=None)
@given(values=st.lists(_any_value, min_size=len(CANONICAL_COLUMNS), max_size=len(CANONICAL_COLUMNS)))
def test_the_writers_hash_input_is_the_reference(values: list[Any]) -> None:
    assert _outcome(chain._fast_values, values) == _outcome(canonical_values, values)


def test_the_writer_hashes_the_reference_bytes() -> None:
    new = entry(1, payload='{"é":"\\u00e9 \\" \\n"}\n\t\x7f\u2028')
    row = hashed_values(7, new)
    assert canonical(7, new) == canonical_values(row)
    assert link_hash(GENESIS, 7, new) == hashlib.sha256(GENESIS.encode() + canonical_values(row)).hexdigest()
    with pytest.raises(TypeError):  # a datetime is no canonical value: orjson must not write it as text
        chain._fast_values([datetime(2026, 1, 1, tzinfo=UTC)])


@pytest.fixture(scope="module")
def memory() -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(":memory:")) as conn:
        yield conn


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_value, min_size=3, max_size=3))
def test_sqlite_json_array_writes_the_reference_bytes(memory: sqlite3.Connection, values: list[Any]) -> None:
    (written,) = memory.execute("SELECT json_array(?, ?, ?)", values).fetchone()
    assert written.encode("utf-8") == canonical_values(values)


def _sqlite_us(memory: sqlite3.Connection, stored: object) -> object:
    sql = "SELECT " + chain_walk._RECEIVED_US + " FROM (SELECT ? AS received_at)"  # the walk's own expression
    return memory.execute(sql, (stored,)).fetchone()[0]


@settings(max_examples=300, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)))
def test_sqlite_reads_received_at_as_the_column_type_does(memory: sqlite3.Connection, moment: datetime) -> None:
    stored = moment.isoformat(" ", "microseconds")  # what the writer stores (SQLAlchemy's SQLite DATETIME: %04d-...)
    assert _sqlite_us(memory, stored) == datetime_to_us(moment.replace(tzinfo=UTC))


@pytest.mark.parametrize(
    "stored",
    [
        "2026-02-30 12:00:00.000000",  # SQLite would roll it over to March 2
        "2026-11-29 24:00:00.000000",
        "2026-11-29 12:00:60.000000",
        "2026-11-29T12:00:00.000000",  # readable by Python, but not the writer's form
        "2026-11-29 12:00:00.000000 ",
        "2026-11-29 12:00:00.00001x",
        "2026-11-29 12:00:00",
        "2026-11-29 12:00:00.123456+01:00",
        "0000-01-01 00:00:00.000000",
        1_764_417_600,
    ],
)
def test_sqlite_leaves_any_other_received_at_to_the_reference(memory: sqlite3.Connection, stored: object) -> None:
    assert _sqlite_us(memory, stored) is None


# -- through the store and the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def url(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A log of ROWS entries that every walk here splits in two (workers on SQLite), in pages of 7 rows."""
    with open_log(db_url) as log:
        log.append([entry(i) for i in range(1, ROWS + 1)])
    monkeypatch.setattr(chain_walk, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(chain_walk, "PAGE", 7)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    return db_url


def verify(url: str, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    code = main(["verify", "--db-url", url, *flags])
    return code, capsys.readouterr().out


def test_two_parts_verify_an_intact_log(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = open_engine(url, write=False)
    try:
        walked = walk_chain(engine)
        with engine.connect() as conn:
            head = conn.execute(select(event_log.c.hash).where(event_log.c.seq == ROWS)).scalar_one()
    finally:
        engine.dispose()
    assert (walked.walker.count, walked.walker.head, walked.walker.head_hash, walked.unreadable) == (
        ROWS,
        ROWS,
        head,
        None,
    )
    code, out = verify(url, capsys, "--anchor", "--expect-anchor", f"{MID + 1}:" + _hash_at(url, MID + 1))
    assert code == 0
    assert out.startswith(f"ok: {ROWS} events intact (seq 1..{ROWS})")
    assert f"anchor at seq {MID + 1} matches" in out


def _hash_at(url: str, seq: int) -> str:
    engine = open_engine(url, write=False)
    try:
        with engine.connect() as conn:
            return str(conn.execute(select(event_log.c.hash).where(event_log.c.seq == seq)).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("seq", [3, MID, MID + 1, ROWS - 2])
def test_two_parts_name_an_altered_row(url: str, capsys: pytest.CaptureFixture[str], seq: int) -> None:
    with tampering(url) as conn:
        conn.execute(update(event_log).where(event_log.c.seq == seq).values(payload="{}"))
    code, out = verify(url, capsys)
    assert code == 1
    assert f"the chain fails at seq {seq}: content does not match its hash" in out


@pytest.mark.parametrize("seq", [MID, MID + 1, MID + 2])
def test_two_parts_name_a_removed_row_at_the_boundary(url: str, capsys: pytest.CaptureFixture[str], seq: int) -> None:
    with tampering(url) as conn:
        conn.execute(event_log.delete().where(event_log.c.seq == seq))
    code, out = verify(url, capsys)
    assert code == 1
    assert f"the chain fails at seq {seq}: row missing: found seq {seq + 1} next after seq {seq - 1}" in out


def test_two_parts_check_the_link_across_the_boundary(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The second part trusts its first row's stored prev_hash only until the join compares it with the first part's
    last hash: a forged link there is named."""
    with tampering(url) as conn:
        conn.execute(update(event_log).where(event_log.c.seq == MID + 1).values(prev_hash="f" * 64))
    code, out = verify(url, capsys)
    assert code == 1
    assert f"the chain fails at seq {MID + 1}: prev_hash does not match" in out


def test_the_first_break_wins_over_a_later_one(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with tampering(url) as conn:
        conn.execute(update(event_log).where(event_log.c.seq.in_([MID - 3, MID + 4])).values(payload="{}"))
    code, out = verify(url, capsys)
    assert (code, f"the chain fails at seq {MID - 3}: content" in out) == (1, True)


def test_a_row_stored_in_another_form_is_judged_by_the_reference(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own encoding is only a shortcut: received_at written with a 'T' (a form the writer never stores, which
    the column type reads as the same moment) is re-read and accepted; a BLOB where text belongs (SQLite refuses to
    encode the page) is re-read and named."""
    with open_log(sqlite_url) as log:
        log.append([entry(i) for i in range(1, ROWS + 1)])
    monkeypatch.setattr(chain_walk, "PAGE", 7)
    with tampering(sqlite_url) as conn:
        conn.execute(text("UPDATE event_log SET received_at = replace(received_at, ' ', 'T') WHERE seq = 5"))
        conn.execute(text("UPDATE event_log SET payload = CAST(payload AS BLOB) WHERE seq = 9"))
    code, out = verify(sqlite_url, capsys)
    assert (code, "the chain fails at seq 9: content does not match its hash" in out) == (1, True)  # seq 5 held


def test_the_audit_walk_is_the_verify_walk(url: str) -> None:
    from tracker.store.audit_queries import integrity

    with tampering(url) as conn:
        conn.execute(update(event_log).where(event_log.c.seq == MID + 1).values(account="666"))
    engine = open_engine(url, write=False)
    try:
        result = integrity(engine)
    finally:
        engine.dispose()
    assert result.broken == f"seq {MID + 1}: content does not match its hash (the row was altered or moved)"
    assert (result.chain_rows, result.head_seq) == (MID, MID)


def test_received_at_moments_read_back_exactly(db_url: str) -> None:
    """Microseconds at the edges (0, 999999, before 1970) hash the same through every reading."""
    moments = [datetime(2026, 11, 29, 12, tzinfo=UTC) + timedelta(microseconds=us) for us in (0, 1, 999_999)]
    moments.append(datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC))
    with open_log(db_url) as log:
        log.append([replace(entry(i), received_at=moment) for i, moment in enumerate(moments, 1)])
        engine = log.engine
        assert walk_chain(engine, parts=2).walker.finish() is None
        assert walk_chain(engine, parts=1).walker.count == len(moments)


def test_json_reference_is_what_link_hash_covers() -> None:
    row = _chain(1)[0]
    values = list(chain_row(row)[: len(CANONICAL_COLUMNS)])
    assert canonical_values(values) == json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode()


def test_two_parts_stop_at_a_damaged_page_in_the_second(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page the second worker cannot read ends the walk there, after every row of the first part: the report says
    how far the chain reads, as one walk would."""
    from test_damaged_db import damage, make_log, pages_of

    path = make_log(sqlite_url)
    rows = 600
    pages = pages_of(path, "event_log")
    damage(path, pages[-3], offset=100, size=300)  # near the end of the table: rows of the second half
    monkeypatch.setattr(chain_walk, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert main(["verify", "--db-url", sqlite_url]) == 1
    out = capsys.readouterr().out
    assert out.startswith("BROKEN: the database file is damaged (SQLite integrity_check found ")
    last = out.strip().splitlines()[-1]
    assert last.startswith("BROKEN: the chain cannot be read past seq "), out
    assert rows // 2 <= int(last.split("past seq ")[1].split(":")[0]) < rows
