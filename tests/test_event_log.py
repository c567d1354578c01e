"""Contract tests of the event log, one suite run against SQLite and PostgreSQL (the ``db_url`` fixture).

Rules: local databases only; no sleep as synchronisation (threads meet on barriers and joins); every test is bounded by
pytest-timeout.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, exc, text
from store_helpers import T0, entry, open_log

from tracker.domain.chain import GENESIS, Anchor, ChainWalker, link_hash
from tracker.domain.log import NewEntry, QuarantineItem
from tracker.store.event_log import SERVER_APPEND_MAX, EventLog, _sqlite_stamp


@pytest.fixture
def log(db_url: str) -> Any:
    with open_log(db_url) as log:
        yield log


def test_empty_log(log: EventLog) -> None:
    assert log.head() == 0
    assert log.head_anchor() == Anchor(0, GENESIS)
    assert log.read_after(0) == []


def test_append_assigns_gapless_seqs_and_chains_hashes(log: EventLog) -> None:
    first = log.append([entry(1), entry(2)])
    second = log.append([entry(3)])
    assert first.appended == (1, 2)
    assert second.appended == (3,)
    rows = log.read_after(0)
    assert [row.seq for row in rows] == [1, 2, 3]
    assert rows[0].prev_hash == GENESIS
    for before, row in zip([None, *rows], rows, strict=False):
        assert row.prev_hash == (before.hash if before else GENESIS)
        assert row.hash == link_hash(row.prev_hash, row.seq, row)
    assert log.head_anchor() == Anchor(3, rows[-1].hash) == second.head


@pytest.mark.parametrize("before", [0, SERVER_APPEND_MAX], ids=["alone", "in a large batch"])
def test_stored_row_round_trips_every_field(log: EventLog, before: int) -> None:
    """Alone (on PostgreSQL: the server's append function) and last of a batch too large for it (the client's binary
    COPY), with NULLs before it."""
    paris = timezone(timedelta(hours=1))
    new = NewEntry(
        account="1001",
        source="rest",
        channel="user_transactions",
        event="trade",
        payload=' {"id": 7, "price": "1e-8",\t"note": "żółw 🐢"}\n',  # odd spacing and non-ASCII kept byte for byte
        dedup_key="rest:trade:7",
        received_at=datetime(2026, 1, 2, 4, 5, 6, 999999, tzinfo=paris),
        market="btcusd-perp",
        order_id="123456789012345678",
        trade_id="7",
        position_id="p-9",
        event_id="e-1",
        pre_event_id="e-0",
        exchange_ts_us=1_767_323_106_999_999,
        connection_id="c-1",
    )
    nulls = [NewEntry("1", "tracker", "c", "e", "{}", f"k{i}", T0) for i in range(before)]
    log.append([*nulls, new])
    *_, row = log.read_after(0, limit=before + 1)
    assert row.seq == before + 1
    assert row.payload == new.payload
    assert row.received_at == new.received_at  # the same instant, to the microsecond
    assert row.received_at.tzinfo == UTC
    assert row.received_at.utcoffset() == timedelta(0)
    for name in ("account", "source", "channel", "event", "dedup_key", "market", "order_id", "trade_id"):
        assert getattr(row, name) == getattr(new, name)
    for name in ("position_id", "event_id", "pre_event_id", "exchange_ts_us", "connection_id"):
        assert getattr(row, name) == getattr(new, name)
    # The append's hand-written row tuple, the schema and the hash chain agree: every field went to its own column
    # (each value above is distinct), and the chain recomputed from the stored row is the stored hash.
    prev = GENESIS if before == 0 else log.read_after(before - 1, limit=1)[0].hash
    assert row.prev_hash == prev
    assert row.hash == link_hash(prev, before + 1, row) == link_hash(prev, before + 1, new)


def test_empty_append_writes_nothing(log: EventLog) -> None:
    log.append([entry(1)])
    result = log.append([])
    assert (result.appended, result.duplicates, result.conflicts, result.quarantined) == ((), 0, 0, 0)
    assert result.head == log.head_anchor()


def test_append_is_idempotent(log: EventLog) -> None:
    batch = [entry(i) for i in range(1, 6)]
    assert log.append(batch).appended == (1, 2, 3, 4, 5)
    again = log.append(batch)
    assert again.appended == ()
    assert again.duplicates == 5
    assert again.conflicts == 0
    assert log.head() == 5
    mixed = log.append([entry(5), entry(6)])
    assert mixed.appended == (6,)
    assert mixed.duplicates == 1
    assert log.quarantined() == []


def test_duplicates_within_one_batch(log: EventLog) -> None:
    result = log.append([entry(1), entry(2), entry(1)])
    assert result.appended == (1, 2)
    assert result.duplicates == 1
    assert [row.dedup_key for row in log.read_after(0)] == ["ws:order_created:1", "ws:order_created:2"]


def test_conflict_is_quarantined_with_both_payloads(log: EventLog) -> None:
    log.append([entry(1)])
    result = log.append([entry(1, payload='{"data":{"id":1,"amount_str":"0.2"}}'), entry(2)])
    assert result.appended == (2,)
    assert result.conflicts == 1
    assert result.duplicates == 0
    [item] = log.quarantined()
    assert item.kind == "conflict"
    assert item.dedup_key == "ws:order_created:1"
    assert item.existing_seq == 1
    assert item.existing_payload == entry(1).payload
    assert item.raw == '{"data":{"id":1,"amount_str":"0.2"}}'
    assert "seq 1" in item.reason
    assert log.read_after(0)[0].payload == entry(1).payload  # the stored row is untouched


def test_a_replayed_conflict_is_counted_but_stored_once(log: EventLog) -> None:
    log.append([entry(1)])
    for _ in range(2):
        result = log.append([entry(1, payload="other"), entry(1, payload="other")])
        assert (result.conflicts, result.appended) == (2, ())
    third = log.append([entry(1, payload="third")])
    assert third.quarantined == 1
    assert [(item.raw, item.existing_payload) for item in log.quarantined()] == [
        ("other", entry(1).payload),
        ("third", entry(1).payload),
    ]


def test_conflict_within_one_batch(log: EventLog) -> None:
    result = log.append([entry(1), entry(1, payload="other")])
    assert (result.appended, result.conflicts) == ((1,), 1)
    [item] = log.quarantined()
    assert (item.existing_seq, item.existing_payload, item.raw) == (1, entry(1).payload, "other")


def test_quarantine_items_are_stored_with_the_batch(log: EventLog) -> None:
    bad = QuarantineItem(
        kind="malformed", reason="not JSON", raw="{nope", received_at=T0, account="1001", source="ws", channel="x"
    )
    result = log.append([entry(1)], quarantine=[bad])
    assert result.quarantined == 1
    [item] = log.quarantined()
    assert (item.kind, item.reason, item.raw, item.received_at) == ("malformed", "not JSON", "{nope", T0)
    assert (item.account, item.source, item.channel) == ("1001", "ws", "x")
    assert item.dedup_key is None


def test_failed_batch_appends_nothing(log: EventLog) -> None:
    log.append([entry(1)])
    broken = NewEntry(**{**{f: getattr(entry(3), f) for f in NewEntry.__slots__}, "source": "bogus"})  # type: ignore[arg-type]
    with pytest.raises(exc.IntegrityError):
        log.append([entry(2), broken])
    assert log.head() == 1
    assert log.append([entry(2)]).appended == (2,)


def test_naive_received_at_is_refused(log: EventLog) -> None:
    naive = NewEntry(**{**{f: getattr(entry(1), f) for f in NewEntry.__slots__}, "received_at": datetime(2026, 1, 1)})
    with pytest.raises(ValueError, match="aware"):
        log.append([naive])


def test_read_after_pages_in_order(log: EventLog) -> None:
    log.append([entry(i, account="A" if i % 3 else "B") for i in range(1, 26)])
    pages = list(log.iter_after(0, page=10))
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [row.seq for page in pages for row in page] == list(range(1, 26))
    assert [row.seq for row in log.read_after(20, limit=3)] == [21, 22, 23]
    assert [row.seq for row in log.read_after(0, account="B")] == [3, 6, 9, 12, 15, 18, 21, 24]
    assert [row.seq for row in log.read_after(10, limit=2, account="B")] == [12, 15]


def test_large_batch_dedups_across_chunks(log: EventLog) -> None:
    log.append([entry(i) for i in range(1, 1201)])
    result = log.append([entry(i) for i in range(1, 1301)])
    assert result.duplicates == 1200
    assert result.appended == tuple(range(1201, 1301))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE event_log SET payload = 'x' WHERE seq = 1",
        "UPDATE event_log SET seq = 9 WHERE seq = 1",
        "DELETE FROM event_log WHERE seq = 1",
        "DELETE FROM event_log",
        "UPDATE quarantine SET raw = 'x'",
        "DELETE FROM quarantine",
    ],
)
def test_update_and_delete_are_refused_by_the_database(log: EventLog, statement: str) -> None:
    log.append([entry(1), entry(1, payload="other")])
    with pytest.raises(exc.DBAPIError, match="append-only"), log.engine.begin() as conn:
        conn.execute(text(statement))
    assert log.read_after(0)[0].payload == entry(1).payload
    assert len(log.quarantined()) == 1


@pytest.mark.postgres
def test_truncate_is_refused_on_postgresql(pg_url: str) -> None:
    with open_log(pg_url) as log:
        log.append([entry(1)])
        with pytest.raises(exc.DBAPIError, match="append-only"), log.engine.begin() as conn:
            conn.execute(text("TRUNCATE event_log"))
        assert log.head() == 1


def test_concurrent_appenders_leave_a_gapless_log_in_commit_order(log: EventLog) -> None:
    """Threads append overlapping batches while a reader tails the log; nothing is skipped, duplicated or reordered.

    The ``commit`` event fires just before each append transaction commits (while it still holds the write lock), and
    records the highest seq that transaction sees: those must rise strictly, i.e. seq order is commit order.
    """
    writers, batches, size = 4, 25, 8
    total_keys = batches * size + (writers - 1) * size  # each writer starts `size` keys after the previous one
    committed: list[int] = []
    record = threading.Lock()

    @event.listens_for(log.engine, "commit")
    def before_commit(conn: Any) -> None:
        top = conn.exec_driver_sql("SELECT max(seq) FROM event_log").scalar()
        with record:
            committed.append(top)

    start = threading.Barrier(writers + 1)
    failures: list[BaseException] = []
    duplicates: list[int] = []

    def append_all(offset: int) -> None:
        try:
            start.wait()
            for b in range(batches):
                first = offset + b * size + 1
                duplicates.append(log.append([entry(i) for i in range(first, first + size)]).duplicates)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    seen: list[int] = []

    def tail() -> None:
        try:
            start.wait()
            cursor = 0
            while cursor < total_keys:
                page = log.read_after(cursor, limit=50)
                seen.extend(row.seq for row in page)
                if page:
                    cursor = page[-1].seq
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=append_all, args=(w * size,)) for w in range(writers)]
    threads.append(threading.Thread(target=tail))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    event.remove(log.engine, "commit", before_commit)

    rows = [row for page in log.iter_after(0, page=500) for row in page]
    assert [row.seq for row in rows] == list(range(1, total_keys + 1))
    assert len({row.dedup_key for row in rows}) == total_keys
    assert sum(duplicates) == writers * batches * size - total_keys
    assert seen == list(range(1, total_keys + 1))  # the tailing reader skipped nothing
    appends = [top for top in committed if top is not None]
    assert appends == sorted(appends)  # equal tops: an append of only duplicates, which wrote nothing
    walker = ChainWalker()
    assert walker.feed(rows) is None
    assert walker.finish() is None


_ZONES = [UTC, timezone(timedelta(0)), timezone(timedelta(hours=-3, minutes=-30))]  # UTC itself takes the shortcut


@given(st.datetimes(timezones=st.sampled_from(_ZONES)))
def test_sqlite_stamp_is_sqlalchemys_text(moment: datetime) -> None:
    """The SQLite append's ``received_at`` text (with its shortcut for ``UTC``) is what ``UtcDateTime`` stores."""
    expected = moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    assert _sqlite_stamp(moment) == expected
