"""The PostgreSQL append function (migration 0008, ``EventLog._append_on_server``): the same rows, seqs and hashes as
the client's append, the same duplicate counts, conflicts appended the client's way, a server that hashes otherwise
caught, a database without the function still written.

The strongest check is a comparison: the same batches appended to SQLite (hashed in Python) and to PostgreSQL
(hashed by the function) give the same chain, link for link, for any text hypothesis makes up.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import exc, text
from store_helpers import T0, entry, open_log, walk

import tracker.store.event_log as event_log_module
from tracker.domain.chain import canonical, canonical_tail, link_hash, tail_link
from tracker.domain.log import NewEntry
from tracker.store.event_log import _PG_STORED, SERVER_APPEND_MAX, EventLog, ServerAppendMismatch

pytestmark = pytest.mark.postgres


def test_canonical_tail_is_canonical_without_the_seq() -> None:
    for seq in (1, 9, 10, 12345678901234):
        row = entry(seq, payload='{"x":"żółw 🐢 \\u0000","n":1e-8}')
        assert f"[{seq},{canonical_tail(row)}".encode() == canonical(seq, row)
        assert tail_link("ab" * 32, seq, canonical_tail(row)) == link_hash("ab" * 32, seq, row)


def test_the_function_appends_numbers_and_links_like_the_client(pg_log: EventLog) -> None:
    first = pg_log.append([entry(1), entry(2), entry(3)])
    second = pg_log.append([entry(4)])
    assert pg_log.server_appends == 2
    assert (first.appended, second.appended) == ((1, 2, 3), (4,))
    rows = pg_log.read_after(0)
    assert [row.hash for row in rows][-1] == second.head.hash
    assert all(row.hash == link_hash(row.prev_hash, row.seq, row) for row in rows)
    assert walk(pg_log).head == 4


def test_duplicates_stored_and_in_the_batch_are_counted_not_appended(pg_log: EventLog) -> None:
    pg_log.append([entry(1), entry(2)])
    result = pg_log.append([entry(2), entry(3), entry(3), entry(1), entry(4)])
    assert result.appended == (3, 4)
    assert (result.duplicates, result.conflicts, result.quarantined) == (3, 0, 0)
    assert [row.dedup_key for row in pg_log.read_after(0)] == [f"ws:order_created:{i}" for i in (1, 2, 3, 4)]
    assert pg_log.server_appends == 2
    assert pg_log.append([entry(1)]).appended == ()  # all duplicates: nothing written, the head unchanged
    assert pg_log.head_anchor().seq == 4


def test_a_conflict_is_appended_the_clients_way_and_quarantined(pg_log: EventLog) -> None:
    pg_log.append([entry(1)])
    changed = entry(1, payload='{"data":{"id":1,"amount_str":"0.2"}}')
    result = pg_log.append([entry(2), changed, entry(3)])
    assert pg_log.server_appends == 1  # the first append only: the function refused the second batch
    assert result.appended == (2, 3)
    assert (result.conflicts, result.quarantined) == (1, 1)
    [kept] = pg_log.quarantined()
    assert (kept.kind, kept.existing_seq, kept.raw) == ("conflict", 1, changed.payload)
    within = pg_log.append([entry(5), entry(5, payload="{}")])  # a conflict inside one batch
    assert (within.appended, within.conflicts) == ((4,), 1)
    assert walk(pg_log).head == 4


def test_a_backlog_batch_goes_the_clients_way_onto_the_same_chain(pg_log: EventLog) -> None:
    pg_log.append([entry(i) for i in range(1, SERVER_APPEND_MAX + 1)])  # the largest batch the function takes
    pg_log.append([entry(i) for i in range(SERVER_APPEND_MAX + 1, 2 * SERVER_APPEND_MAX + 2)])  # one more: COPY
    pg_log.append([entry(2 * SERVER_APPEND_MAX + 2)])
    assert pg_log.server_appends == 2
    assert walk(pg_log).head == 2 * SERVER_APPEND_MAX + 2


def test_a_server_that_hashes_otherwise_is_caught(pg_log: EventLog) -> None:
    with pg_log.engine.begin() as conn:  # the function, with the hash input changed by one character
        source = conn.execute(text("SELECT pg_get_functiondef('tracker_append'::regproc)")).scalar_one()
        conn.execute(text(source.replace("|| '[' ||", "|| '[ ' ||")))
    with pytest.raises(ServerAppendMismatch, match="tracker verify"):
        pg_log.append([entry(1)])


def test_without_the_function_the_client_appends(pg_log: EventLog) -> None:
    with pg_log.engine.begin() as conn:  # a log whose migration to 0008 is missing
        conn.execute(text("DROP FUNCTION tracker_append"))
    assert pg_log.append([entry(1), entry(2)]).appended == (1, 2)
    assert pg_log.append([entry(3)]).appended == (3,)
    assert pg_log.server_appends == 0
    assert walk(pg_log).head == 3


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
_ID = st.none() | st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=20)


@st.composite
def _entries(draw: Any) -> list[NewEntry]:
    count = draw(st.integers(1, 6))
    out = []
    for _ in range(count):
        key = draw(st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]))
        out.append(
            NewEntry(
                account=draw(st.sampled_from(["1001", "314159"])),
                source=draw(st.sampled_from(["ws", "rest", "tracker"])),
                channel=draw(_TEXT.filter(lambda t: len(t) <= 128)),
                event=draw(_TEXT.filter(lambda t: len(t) <= 64)),
                payload=key + draw(_TEXT),  # the same key with another payload would be a conflict: see below
                dedup_key=key,
                received_at=T0 + timedelta(microseconds=draw(st.integers(-(10**12), 10**12))),
                market=draw(_ID),
                order_id=draw(_ID),
                trade_id=draw(_ID),
                position_id=draw(_ID),
                event_id=draw(_ID),
                pre_event_id=draw(_ID),
                exchange_ts_us=draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
                connection_id=draw(_ID),
            )
        )
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_entries(), min_size=1, max_size=4))
def test_the_same_batches_give_the_same_chain_on_both_backends(
    batches: list[list[NewEntry]], pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sqlite_url = f"sqlite:///{tmp_path_factory.mktemp('chain') / 'log.db'}"
    with open_log(sqlite_url) as lite, open_log(pg_url) as pg:
        with pg.engine.begin() as conn:  # one schema for every example: start from an empty log
            conn.execute(text("ALTER TABLE event_log DISABLE TRIGGER USER"))
            conn.execute(text("DELETE FROM quarantine"))
            conn.execute(text("DELETE FROM event_log"))
            conn.execute(text("ALTER TABLE event_log ENABLE TRIGGER USER"))
        first_payload: dict[str, str] = {}
        for batch in batches:
            # No conflicts here (they take the client's path, tested above): a key keeps its first payload.
            batch = [
                e if first_payload.setdefault(e.dedup_key, e.payload) == e.payload else _with(e, first_payload)
                for e in batch
            ]
            expected = lite.append(batch)
            got = pg.append(batch)
            assert got == expected
        assert pg.server_appends == len(batches)
        assert [(r.seq, r.prev_hash, r.hash) for r in pg.read_after(0)] == [
            (r.seq, r.prev_hash, r.hash) for r in lite.read_after(0)
        ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_entries(), min_size=1, max_size=5))
def test_the_clients_way_without_the_lookup_decides_as_sqlite(
    batches: list[list[NewEntry]],
    pg_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every batch the client's way (the function takes none here), so PostgreSQL appends without the lookup after
    one that found nothing, and is refused by the unique index when a stored key comes back (7 keys: most batches
    after the first hold one, duplicate or conflict). The outcome of every append, the chain and the quarantine are
    SQLite's, which always looks up."""
    monkeypatch.setattr(event_log_module, "SERVER_APPEND_MAX", 0)
    sqlite_url = f"sqlite:///{tmp_path_factory.mktemp('unlooked') / 'log.db'}"
    with open_log(sqlite_url) as lite, open_log(pg_url) as pg:
        with pg.engine.begin() as conn:  # one schema for every example: start from an empty log
            for table in ("event_log", "quarantine"):
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
                conn.execute(text(f"DELETE FROM {table}"))
                conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
        for batch in batches:
            assert pg.append(batch) == lite.append(batch)
        assert pg.server_appends == 0
        assert [(r.seq, r.prev_hash, r.hash) for r in pg.read_after(0)] == [
            (r.seq, r.prev_hash, r.hash) for r in lite.read_after(0)
        ]
        kept = [[(q.kind, q.dedup_key, q.existing_seq, q.raw) for q in log.quarantined()] for log in (pg, lite)]
        assert kept[0] == kept[1]


def _with(e: NewEntry, first_payload: dict[str, str]) -> NewEntry:
    return replace(e, payload=first_payload[e.dedup_key])


# -- the dedup key's digest (migration 0009) -------------------------------------------------------------------------

TRICKY_KEYS = ["ws:1:ch:ev:1", "back\\slash", "\\\\", "\\000", "quote'\"", "é€😀", "tab\tnew\nline", "x" * 255]


def test_the_key_digest_is_the_sha256_of_the_key_and_stays_inlined(pg_log: EventLog) -> None:
    """``tracker_key_digest`` is the first 16 bytes of the sha256 of the key's UTF-8 (in a UTF8 database), backslash
    escapes included; and PostgreSQL inlines it (a lookup's index condition shows its body, not its name): a body
    with a STABLE function is never inlined and made lookups three times slower (migration 0009)."""
    with pg_log.engine.connect() as conn:
        for key in TRICKY_KEYS:
            stored = conn.execute(text("SELECT tracker_key_digest(:key)"), {"key": key}).scalar_one()
            assert bytes(stored) == hashlib.sha256(key.encode()).digest()[:16], key
        plan = "\n".join(
            conn.execute(
                text("EXPLAIN SELECT seq FROM event_log WHERE tracker_key_digest(dedup_key) = '\\x00'")
            ).scalars()
        )
    assert "ix_event_log_dedup_digest" in plan and "sha256(decode(replace(" in plan, plan


def test_a_large_lookup_probes_the_index_and_never_scans_the_log(pg_log: EventLog) -> None:
    """1,000 keys against a log of 3,000 rows: one index probe per key. A plain join let the planner hash the keys
    and scan the whole log, computing every stored key's digest (52 ms on 20,000 rows, growing with the log)."""
    for start in range(0, 3_000, 1_000):
        pg_log.append([entry(i) for i in range(start + 1, start + 1_001)])
    keys = [entry(i).dedup_key for i in range(1, 2_001, 2)]
    with pg_log.engine.connect() as conn:
        conn.execute(text("ANALYZE event_log"))
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            cursor.execute("EXPLAIN " + _PG_STORED, (keys,))
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute(_PG_STORED, (keys,))
            assert sorted(row[0] for row in cursor.fetchall()) == sorted(keys)
    assert "Index Scan using ix_event_log_dedup_digest" in plan and "Seq Scan" not in plan, plan


def test_tricky_keys_dedup_on_both_paths(pg_log: EventLog) -> None:
    """Keys with backslashes, quotes and non-ASCII are found again by the function's lookup and by the client's."""
    first = [replace(entry(i), dedup_key=key) for i, key in enumerate(TRICKY_KEYS, 1)]
    assert len(pg_log.append(first).appended) == len(TRICKY_KEYS)
    again = pg_log.append(first)  # small: the function's lookup
    assert (again.appended, again.duplicates) == ((), len(TRICKY_KEYS))
    backlog = first + [entry(1_000 + i) for i in range(SERVER_APPEND_MAX)]  # large: the client's COPY path
    result = pg_log.append(backlog)
    assert (len(result.appended), result.duplicates) == (SERVER_APPEND_MAX, len(TRICKY_KEYS))


def test_the_function_runs_on_generic_plans(pg_log: EventLog) -> None:
    """Migration 0010: planned once per connection, not once per call (the per-call planning was ~30 % of the
    server's CPU for a one-row append)."""
    with pg_log.engine.connect() as conn:
        config, source = conn.execute(
            text(
                "SELECT p.proconfig, pg_get_functiondef(p.oid) FROM pg_proc p"
                " JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE p.proname = 'tracker_append' AND n.nspname = current_schema()"
            )
        ).one()
    assert config == ["plan_cache_mode=force_generic_plan"]
    assert "IF cardinality(p_dedup_key) = 1 THEN" in source  # the one-row path


def test_one_row_batches_decide_as_larger_ones(pg_log: EventLog) -> None:
    """The one-row path (migration 0010): new, duplicate of a stored row, conflict with one, on one chain."""
    assert [pg_log.append([entry(i)]).appended for i in (1, 2, 3)] == [(1,), (2,), (3,)]
    again = pg_log.append([entry(2)])
    assert (again.appended, again.duplicates, again.conflicts) == ((), 1, 0)
    assert pg_log.server_appends == 4
    changed = entry(2, payload='{"data":{"id":2,"amount_str":"0.3"}}')
    clash = pg_log.append([changed])  # refused by the function (TK001), appended the client's way: quarantined
    assert (clash.appended, clash.conflicts, clash.quarantined) == ((), 1, 1)
    assert pg_log.server_appends == 4
    [kept] = pg_log.quarantined()
    assert (kept.kind, kept.existing_seq, kept.raw) == ("conflict", 2, changed.payload)
    assert pg_log.append([entry(4)]).appended == (4,)
    assert pg_log.append([entry(5), entry(5), entry(1)]).appended == (5,)  # the set-based path, after
    rows = pg_log.read_after(0)
    assert [row.seq for row in rows] == [1, 2, 3, 4, 5]
    assert all(row.hash == link_hash(row.prev_hash, row.seq, row) for row in rows)
    assert walk(pg_log).head == 5


def _batch(start: int, count: int = SERVER_APPEND_MAX + 1) -> list[NewEntry]:
    """A batch too large for the function: the client's COPY path."""
    return [entry(i) for i in range(start, start + count)]


def test_large_batches_skip_the_lookup_until_a_stored_key_turns_up(pg_log: EventLog) -> None:
    """After a lookup that found nothing, a large batch goes without one; a stored key in it makes the unique index
    refuse the whole transaction, and the batch is appended again with the lookup: duplicates skipped and conflicts
    quarantined exactly as with the lookup first, on one gapless chain."""
    n = SERVER_APPEND_MAX + 1
    assert pg_log.append(_batch(1)).appended == tuple(range(1, n + 1))  # looked up: nothing stored
    assert pg_log.append(_batch(n + 1)).appended == tuple(range(n + 1, 2 * n + 1))  # without the lookup
    assert pg_log.unlooked_retries == 0
    changed = entry(2, payload='{"data":{"id":2,"amount_str":"0.3"}}')
    mixed = [entry(1), changed, *_batch(2 * n + 1)]  # a stored duplicate, a conflict with a stored row, new rows
    result = pg_log.append(mixed)
    assert pg_log.unlooked_retries == 1  # refused by the index, then appended with the lookup
    assert result.appended == tuple(range(2 * n + 1, 3 * n + 1))
    assert (result.duplicates, result.conflicts, result.quarantined) == (1, 1, 1)
    [kept] = pg_log.quarantined()
    assert (kept.kind, kept.existing_seq, kept.raw) == ("conflict", 2, changed.payload)
    # That lookup found stored keys: the next batch looks up first (no refusal), and finds nothing ...
    assert pg_log.append(_batch(3 * n + 1)).appended == tuple(range(3 * n + 1, 4 * n + 1))
    assert pg_log.unlooked_retries == 1
    # ... so the one after goes without again, and a replayed batch is refused once more, then counted.
    replay = pg_log.append(_batch(3 * n + 1))
    assert (replay.appended, replay.duplicates) == ((), n)
    assert pg_log.unlooked_retries == 2
    assert pg_log.head_anchor() == replay.head
    assert walk(pg_log).head == 4 * n
    assert [row.seq for row in pg_log.read_after(0, limit=10 * n)] == list(range(1, 4 * n + 1))


def test_keys_another_writer_stored_are_found_without_the_lookup(pg_url: str) -> None:
    """Two appenders (as two processes would be) on one database, each past its first lookup: rows the other one
    stored since are refused by the index and counted as duplicates, never stored twice."""
    n = SERVER_APPEND_MAX + 1
    with open_log(pg_url) as one, open_log(pg_url) as two:
        one.append(_batch(1))
        two.append(_batch(n + 1))
        one.append(_batch(2 * n + 1))  # both now append without the lookup
        result = two.append(_batch(2 * n + 1, 2 * n))  # half of it stored by the other one
        assert (len(result.appended), result.duplicates) == (n, n)
        assert (one.unlooked_retries, two.unlooked_retries) == (0, 1)
        assert walk(two).head == 4 * n
        keys = [row.dedup_key for row in two.read_after(0, limit=10 * n)]
        assert len(keys) == len(set(keys)) == 4 * n


def test_another_violation_without_the_lookup_is_raised_and_keeps_nothing(pg_log: EventLog) -> None:
    """Only the dedup index's refusal is retried; a row the table refuses for another reason fails the append, as
    with the lookup."""
    pg_log.append(_batch(1))
    head = pg_log.head_anchor()
    bad = [*_batch(1_000), replace(entry(2_000), source="bogus")]  # type: ignore[arg-type]
    with pytest.raises(exc.IntegrityError):
        pg_log.append(bad)
    assert pg_log.unlooked_retries == 0
    assert pg_log.head_anchor() == head
    assert walk(pg_log).head == head.seq
