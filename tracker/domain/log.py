"""The event log's record types: what is appended, what is read back.

These are the contract between ingest (which builds ``NewEntry`` from raw frames), the store (which appends them
and chains their hashes) and the projector (which reads ``LogEntry`` back in ``seq`` order).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

from tracker.domain.frozen import fast_init

Source = Literal["ws", "rest", "tracker"]
SOURCES: tuple[Source, ...] = ("ws", "rest", "tracker")


@fast_init
@dataclass(frozen=True, slots=True)
class NewEntry:
    """One received frame (or a tracker-made or REST-learned fact) ready to append.

    ``payload`` is the frame's exact text, byte for byte. ``dedup_key`` identifies the fact: appending a second entry
    with the same key is a duplicate when the payload is equal and a conflict when it differs.
    """

    account: str
    source: Source
    channel: str
    event: str
    payload: str
    dedup_key: str
    received_at: datetime  # aware, UTC
    market: str | None = None
    order_id: str | None = None
    trade_id: str | None = None
    position_id: str | None = None
    event_id: str | None = None
    pre_event_id: str | None = None
    exchange_ts_us: int | None = None  # exchange time, unix microseconds
    connection_id: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class LogEntry:
    """A stored row of the event log: a ``NewEntry`` plus its position and hash chain links."""

    seq: int
    account: str
    source: Source
    channel: str
    event: str
    payload: str
    dedup_key: str
    received_at: datetime
    market: str | None
    order_id: str | None
    trade_id: str | None
    position_id: str | None
    event_id: str | None
    pre_event_id: str | None
    exchange_ts_us: int | None
    connection_id: str | None
    prev_hash: str
    hash: str


class LogRecord(NamedTuple):
    """The fields of a stored row the parser reads (``parse_entry`` takes this or a ``LogEntry``): what the
    projector reads of the log, without the hash chain, the ids and the dedup key it has no use for. A tuple: made
    from a database row for a fraction of a ``LogEntry``'s cost (the rebuild reads millions)."""

    seq: int
    account: str
    source: Source
    channel: str
    event: str
    payload: str
    market: str | None
    received_at: datetime
    connection_id: str | None


Parseable = LogEntry | LogRecord  # what ``parse_entry`` takes


QuarantineKind = Literal["malformed", "unknown", "conflict"]


@dataclass(frozen=True, slots=True)
class QuarantineItem:
    """A frame that could not be appended as-is (not JSON, missing ids, ...) kept with its raw text and a reason."""

    kind: QuarantineKind
    reason: str
    raw: str
    received_at: datetime
    account: str | None = None
    source: Source | None = None
    channel: str | None = None
    connection_id: str | None = None
