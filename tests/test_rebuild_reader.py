"""The one-process rebuild's reader process (``tracker/store/rebuild_reader.py``): the events it sends are the
parser's, value for value; a rebuild with it equals the incremental projection on both backends; a reader that fails
is a warning and the rebuild goes on; it gets no secrets and is stopped whenever its reading stops.

Rules: local databases only (``db_url``: SQLite and PostgreSQL); no sleeps.
"""

from __future__ import annotations

import logging
import subprocess
import typing
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, update
from test_projection_store import fake_entries
from test_rebuild import private_tempdir, seeded_log

from tracker.bitstamp.parse import parse_entry
from tracker.store import child_processes, migrate
from tracker.store import rebuild as rebuild_module
from tracker.store.engine import open_engine, writer
from tracker.store.event_log import EventLog
from tracker.store.projection_schema import PROJECTION_TABLES
from tracker.store.projections import ProjectionStore
from tracker.store.rebuild import rebuild
from tracker.store.rebuild_reader import (
    EVENT_TYPES,
    EventDecoder,
    ReaderSpec,
    encode_events,
    read_parsed,
    reader_environment,
)

# --- the round trip --------------------------------------------------------------------------------------------------


def _round_trip(events: list[Any]) -> list[Any]:
    return EventDecoder()(encode_events(events, msgspec.msgpack.Encoder()))


def test_the_parsers_events_come_back_as_they_were() -> None:
    memory = open_engine("sqlite://")
    try:
        migrate.upgrade(memory)
        log = EventLog(memory)
        log.append(fake_entries(5, 800))
        events = [parse_entry(record) for record in log.read_records_after(0, 100_000)]
    finally:
        memory.dispose()
    kinds = {type(event).__name__ for event in events}
    assert {"OrderEvent", "Fill", "SelfTrade", "Settlement", "LiquidationAlert"} <= kinds
    back = _round_trip(events)
    # repr: a Decimal's exponent (1.0 against 1.00) and a time's zone show in it, where == would not tell
    assert [repr(event) for event in back] == [repr(event) for event in events]
    assert [type(event) for event in back] == [type(event) for event in events]


def _values(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of a field's type as the parser makes them: times aware UTC (``fold`` 0), ints within 64 bits."""
    origin = get_origin(annotation)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        return st.one_of([_values(arm) for arm in get_args(annotation)])
    if origin is Literal:
        return st.sampled_from(get_args(annotation))
    if origin is tuple:
        return st.lists(_values(get_args(annotation)[0]), max_size=3).map(tuple)
    if annotation is type(None):
        return st.none()
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(-(2**63), 2**63 - 1)
    if annotation is str:
        return st.text()
    if annotation is Decimal:
        return st.decimals(allow_nan=False, allow_infinity=False, places=None)
    if annotation is datetime:
        return st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.replace(fold=0))
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return _events(annotation)
    raise AssertionError(f"no strategy for {annotation!r}: add one (a new field type must round-trip too)")


def _events(event_type: type[Any]) -> st.SearchStrategy[Any]:
    hints = get_type_hints(event_type)
    return st.builds(event_type, **{name: _values(hints[name]) for name in event_type.__struct_fields__})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of([_events(event_type) for event_type in EVENT_TYPES]), min_size=1, max_size=8))
def test_any_events_come_back_as_they_were(events: list[Any]) -> None:
    assert [repr(event) for event in _round_trip(events)] == [repr(event) for event in events]


# --- the rebuild with a reader ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory (``tempfile``'s): a PostgreSQL rebuild's scratch file goes there, one per test."""
    return private_tempdir(tmp_path, monkeypatch)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    with seeded_log(db_url) as engine:
        yield engine


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """Every child process started meanwhile (``child_processes.spawn`` watched)."""
    started: list[subprocess.Popen[bytes]] = []
    spawn = child_processes.spawn

    def watched(module: str, env: Mapping[str, str]) -> tuple[subprocess.Popen[bytes], Connection]:
        process, pipe = spawn(module, env)
        started.append(process)
        return process, pipe

    monkeypatch.setattr(child_processes, "spawn", watched)
    return started


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch a reader process sent (``read_parsed`` watched)."""
    sent: list[int] = []

    def watched(spec: ReaderSpec) -> Iterator[list[Any]]:
        for events in read_parsed(spec):
            sent.append(len(events))
            yield events

    monkeypatch.setattr(rebuild_module, "read_parsed", watched)
    return sent


def _tampered_then_rebuilt(engine: Engine, **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the incremental projection, the projection after ``rebuild(**options)`` over deliberately wrong rows)."""
    store = ProjectionStore(engine)
    store.catch_up(EventLog(engine), batch=250)
    incremental = store.all_rows()
    with writer(engine).begin() as conn:  # only a real rebuild makes these right again
        conn.execute(update(PROJECTION_TABLES["fills"]).values(source="tampered"))
    rebuild(engine, **options)
    return incremental, store.all_rows()


def test_a_rebuild_with_the_reader_equals_the_incremental_projection(engine: Engine, batches: list[int]) -> None:
    incremental, rebuilt = _tampered_then_rebuilt(engine, parallel=False, reader=True, batch=97)
    assert rebuilt == incremental
    head = EventLog(engine).head()
    assert sum(batches) == head and len(batches) == -(-head // 97)  # the reader read it all, 97 entries a batch


def test_a_failing_reader_is_a_warning_and_the_rebuild_goes_on(
    sqlite_url: str, batches: list[int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with seeded_log(sqlite_url) as engine:
        monkeypatch.setattr(rebuild_module, "ReaderSpec", lambda *fields: ReaderSpec(*fields, fail_after=3))
        with caplog.at_level(logging.WARNING, logger="tracker.rebuild"):
            incremental, rebuilt = _tampered_then_rebuilt(engine, parallel=False, reader=True, batch=100)
    assert rebuilt == incremental
    assert batches == [100, 100, 100]
    assert "the reader process failed: RuntimeError: failing after 3 batches" in caplog.text
    assert "reading the rest of the log in this process instead" in caplog.text


def test_small_logs_and_in_memory_databases_are_read_in_process(
    engine: Engine, batches: list[int], tmp_path: Path
) -> None:
    _tampered_then_rebuilt(engine, parallel=False)  # 600 steps: far under READER_MIN_ENTRIES
    assert batches == []
    memory = open_engine("sqlite://")
    try:
        migrate.upgrade(memory)
        EventLog(memory).append(fake_entries(11, 50))
        incremental, rebuilt = _tampered_then_rebuilt(memory, parallel=False, reader=True)
        assert rebuilt == incremental and batches == []  # no file a child could open
    finally:
        memory.dispose()


# --- the process -----------------------------------------------------------------------------------------------------


def test_the_reader_gets_no_secrets() -> None:
    environ = {
        "PATH": "/bin",
        "BITSTAMP_API_KEY": "k",
        "BITSTAMP_API_SECRET": "s",
        "BITSTAMP_API_SECRET_FILE": "/run/secret",
        "TRACKER_DB_URL": "postgresql://u:p@h/d",
    }
    assert reader_environment(environ) == {"PATH": "/bin"}


@pytest.mark.timeout(60)
def test_the_reader_is_stopped_when_its_reading_stops(sqlite_url: str, spawned: list[subprocess.Popen[bytes]]) -> None:
    engine = open_engine(sqlite_url)
    try:
        migrate.upgrade(engine)
        EventLog(engine).append(fake_entries(11, 600))
        head = EventLog(engine).head()
    finally:
        engine.dispose()
    reading = read_parsed(ReaderSpec(sqlite_url, 0, head, 10))
    first = next(reading)
    assert [event.seq for event in first] == list(range(1, 11))
    assert spawned[0].poll() is None  # still reading ahead (or blocked on the full pipe)
    reading.close()  # the rebuild stopped reading: an interrupt, a failure, the end
    assert spawned[0].poll() is not None


def test_a_reader_that_cannot_open_the_log_fails_with_its_reason(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    with pytest.raises(rebuild_module.ReaderFailed, match=r"the reader process failed: StoreError: .*missing\.db"):
        list(read_parsed(ReaderSpec(missing, 0, 10, 10)))


@pytest.mark.timeout(120)
def test_an_interrupt_stops_the_reader_and_keeps_the_live_tables(
    sqlite_url: str, spawned: list[subprocess.Popen[bytes]]
) -> None:
    engine = open_engine(sqlite_url)
    try:
        migrate.upgrade(engine)
        EventLog(engine).append(fake_entries(11, 600))
        store = ProjectionStore(engine)
        store.catch_up(EventLog(engine))
        before = store.all_rows()

        def interrupt(_: object) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            rebuild(engine, parallel=False, reader=True, batch=50, on_batch=interrupt)
        assert len(spawned) == 1 and spawned[0].poll() is not None  # the reader is gone
        assert store.all_rows() == before
        assert sorted(path.name for path in Path(sqlite_url.removeprefix("sqlite:///")).parent.iterdir()) == [
            "temporary",
            "tracker.db",
            "tracker.db-shm",
            "tracker.db-wal",
            "tracker.db.rebuild.lock",
        ]  # no scratch file left
    finally:
        engine.dispose()
