"""The event log's hash chain: canonical row content, the link hash, and a verifier that walks stored rows.

Each row's ``hash`` is ``sha256(prev_hash + canonical(row))`` as lowercase hex, where ``prev_hash`` is the previous
row's ``hash`` (``GENESIS`` for seq 1) and ``canonical`` is a compact JSON list of every stored column in a fixed
order, ``received_at`` as integer UTC microseconds. Including ``seq`` catches reordering; ``prev_hash`` catches a
removed or inserted row; the content catches any altered column. Removing rows from the *end* leaves a valid shorter
chain: only an anchor (a ``seq:hash`` recorded elsewhere) catches that, or a full rewrite with recomputed hashes.

Pure: no I/O. The store computes hashes with ``link_hash`` on append; ``tracker verify`` feeds rows to ``ChainWalker``
as plain tuples (``CHAIN_COLUMNS``, read by the store's driver cursor), possibly in parts walked apart and joined in
order (``ChainWalker.open_part`` and ``join``: a part trusts its first row's stored link, the join checks it against
the previous part's last row, so the joined result covers every row from seq 1 exactly as one walk would).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from tracker.domain.log import LogEntry, NewEntry
from tracker.domain.timeutil import datetime_to_us

GENESIS = "0" * 64
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def to_us(moment: datetime) -> int:
    """Aware datetime -> integer unix microseconds (exact). A naive datetime is a programming error."""
    if moment.tzinfo is None:
        raise ValueError(f"received_at must be timezone-aware (UTC), got naive {moment!r}")
    return datetime_to_us(moment)


# The stored columns a link covers, in the order ``canonical`` lists them, then the two links: what a walk reads of a
# row, as one tuple (``received_at`` as integer UTC microseconds).
CANONICAL_COLUMNS = (
    "seq",
    "account",
    "source",
    "channel",
    "event",
    "market",
    "order_id",
    "trade_id",
    "position_id",
    "event_id",
    "pre_event_id",
    "exchange_ts_us",
    "received_at",
    "connection_id",
    "dedup_key",
    "payload",
)
CHAIN_COLUMNS = (*CANONICAL_COLUMNS, "prev_hash", "hash")
_N = len(CANONICAL_COLUMNS)

# A hash input builder: the canonical values of a row (``CANONICAL_COLUMNS``' order) -> the bytes its hash covers.
Encoder = Callable[[Sequence[Any]], bytes]


def canonical_values(values: Sequence[Any]) -> bytes:
    """The reference encoding of a row's canonical values: compact JSON, UTF-8, non-ASCII unescaped."""
    return _encode(list(values)).encode("utf-8")


def _fast_values(values: list[Any]) -> bytes:
    """``canonical_values``' bytes, written by orjson in about a fifth of the time (the writer hashes every row).

    For what a row holds (text without lone surrogates, None, integers of 64 bits) orjson writes the same bytes as
    the reference: the same escapes (``\\"``, ``\\\\``, ``\\n`` ..., other controls as lowercase ``\\u00XX``), non-ASCII
    as UTF-8, no spaces; tests/test_chain_walk.py checks it on random rows. Anything orjson refuses (an integer
    beyond 64 bits, a lone surrogate) goes to the reference, which writes it or raises as it always did."""
    try:
        return orjson.dumps(values, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)
    except TypeError:
        return canonical_values(values)


def hashed_values(seq: int, entry: NewEntry | LogEntry) -> list[Any]:
    """What a row's hash covers, in order: everything stored except the two hashes."""
    return [
        seq,
        entry.account,
        entry.source,
        entry.channel,
        entry.event,
        entry.market,
        entry.order_id,
        entry.trade_id,
        entry.position_id,
        entry.event_id,
        entry.pre_event_id,
        entry.exchange_ts_us,
        to_us(entry.received_at),
        entry.connection_id,
        entry.dedup_key,
        entry.payload,
    ]


def canonical(seq: int, entry: NewEntry | LogEntry) -> bytes:
    """The bytes a row's hash covers (everything stored except the two hashes)."""
    return _fast_values(hashed_values(seq, entry))


def link_hash(prev_hash: str, seq: int, entry: NewEntry | LogEntry) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(seq, entry)).hexdigest()


def canonical_tail(entry: NewEntry) -> str:
    """A row's canonical text without its seq: everything after the opening ``[``, so that ``"[" + str(seq) + ","
    + canonical_tail(entry)`` is ``canonical(seq, entry)`` decoded (a JSON list is ``[`` + its items joined by ``,``
    + ``]``, and an int is its decimal digits). What the PostgreSQL append function hashes under the lock, where the
    seq is known (migrations/versions/0008_pg_append_function.py)."""
    return _fast_values(hashed_values(0, entry)[1:]).decode("utf-8")[1:]


def tail_link(prev_hash: str, seq: int, tail: str) -> str:
    """``link_hash`` from a ``canonical_tail``: the same bytes, the same hash."""
    return hashlib.sha256(f"{prev_hash}[{seq},{tail}".encode()).hexdigest()


def chain_row(entry: LogEntry) -> tuple[Any, ...]:
    """A stored row as the tuple a walk reads (``CHAIN_COLUMNS``)."""
    return (*hashed_values(entry.seq, entry), entry.prev_hash, entry.hash)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A point of the chain recorded elsewhere: the row at ``seq`` had this ``hash``. ``0:GENESIS`` is the empty log."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Anchor:
        seq_text, sep, hash_text = text.strip().partition(":")
        hash_text = hash_text.lower()
        if (
            not sep
            or not seq_text.isdigit()
            or len(hash_text) != 64
            or any(c not in "0123456789abcdef" for c in hash_text)
        ):
            raise ValueError(
                f"an anchor is SEQ:HASH with a 64-digit hex hash (as `tracker verify --anchor` prints), got {text!r}"
            )
        return cls(int(seq_text), hash_text)


@dataclass(frozen=True, slots=True)
class Break:
    """The first place the chain does not hold: ``seq`` is the first bad position, ``reason`` says what is wrong."""

    seq: int
    reason: str


def _seq_break(expected: int, found: int, head: int) -> Break:
    if found > expected:
        return Break(expected, f"row missing: found seq {found} next after seq {head} (a row was removed)")
    return Break(expected, f"found seq {found} after seq {head} (a row was inserted or reordered)")


_PREV_MISMATCH = "prev_hash does not match the previous row's hash (a row was removed, inserted or altered)"
_CONTENT_MISMATCH = "content does not match its hash (the row was altered or moved)"
_UNLINKABLE = ""  # the head hash of an open part whose first stored prev_hash is not text: never equal to a row's


def _links(prev: str, values: Sequence[Any], stored: Any, encode: Encoder | None) -> bool:
    """Whether ``stored`` is the link hash of ``values`` after ``prev``. A faster ``encode`` is only trusted when it
    agrees: on a mismatch (or a value it refuses) the reference encoding decides, so it can never report a row the
    reference accepts as altered; and it cannot accept a row the reference refuses either, since both write valid
    JSON, which reads back to the same values only from the same bytes."""
    head = prev.encode("utf-8")  # ASCII hex for every row the writer made
    if encode is not None:
        try:
            if hashlib.sha256(head + encode(values)).hexdigest() == stored:
                return True
        except (TypeError, ValueError, OverflowError):
            pass
    try:
        return bool(hashlib.sha256(head + canonical_values(values)).hexdigest() == stored)
    except (TypeError, ValueError, OverflowError):  # a value no writer stores (bytes, NaN...): altered
        return False


class ChainWalker:
    """Checks stored rows fed in ``seq`` order, in as many pages as the caller likes (constant memory).

    ``feed`` (``LogEntry`` rows) and ``feed_rows`` (``CHAIN_COLUMNS`` tuples) return the first ``Break`` found (and
    every later call returns it again); ``finish`` checks the end against an optional anchor.

    A log can be walked in parts (in other processes): ``open_part()`` walks the rows after some seq, taking its first
    row's seq and stored ``prev_hash`` as given (``first``); ``join(part)`` then checks that first row against this
    walker's last one, exactly the checks ``feed`` would have made there, and continues with the part's result. Joined
    in order from a walker that started at seq 0, the result is the one walk would give: the same ``count``, head
    and first ``Break``.
    """

    def __init__(self, expect: Anchor | None = None) -> None:
        self.expect = expect
        self.count = 0
        self.head = 0
        self.head_hash = GENESIS
        self.broken: Break | None = None
        self.first: tuple[int, Any] | None = None  # an open part's first row: (seq, stored prev_hash)
        self._open = False
        self._anchor_seen = expect is None or (expect.seq == 0 and expect.hash == GENESIS)

    @classmethod
    def open_part(cls, expect: Anchor | None = None) -> ChainWalker:
        """A walker for the rows after some seq: its first row's link is taken as given, for ``join`` to check."""
        walker = cls(expect)
        walker._open = True
        return walker

    def feed(self, rows: Iterable[LogEntry]) -> Break | None:
        return self.feed_rows([chain_row(row) for row in rows])

    def feed_rows(self, rows: Iterable[Sequence[Any]], encode: Encoder | None = None) -> Break | None:
        """Check rows given as ``CHAIN_COLUMNS`` tuples. ``encode``: a faster builder of ``canonical_values``'
        bytes (the store's), checked against the reference wherever it disagrees with a stored hash."""

        def links(seq: int, prev: str, stored: Any, row: Sequence[Any]) -> bool:
            return _links(prev, row[:_N], stored, encode)

        return self._walk(((row[0], row[_N], row[_N + 1], row) for row in rows), links)

    def feed_encoded(
        self, rows: Iterable[Sequence[Any]], reread: Callable[[int], Sequence[Any] | None]
    ) -> Break | None:
        """Check rows given as ``(seq, prev_hash, hash, text)``, where ``text`` is the row's canonical encoding as the
        database wrote it (SQLite's ``json_array``), or ``None``. It is only a shortcut: a row whose text does not
        give its stored hash is read again (``reread(seq)``: its ``CHAIN_COLUMNS`` tuple) and checked with the
        reference encoding, so the verdict is always the reference's. (Text that gives the stored hash is the
        reference's bytes, which as valid JSON read back only to the row's own values.)"""
        sha = hashlib.sha256

        def links(seq: int, prev: str, stored: Any, text: Any) -> bool:
            if text is not None and sha((prev + text).encode("utf-8")).hexdigest() == stored:
                return True
            row = reread(seq)
            return row is not None and _links(prev, row[:_N], stored, None)

        return self._walk(rows, links)

    def _walk(self, rows: Iterable[Sequence[Any]], links: Callable[[int, str, Any, Any], bool]) -> Break | None:
        """Check ``(seq, prev_hash, hash, content)`` rows; ``links`` says whether a row's content gives its hash."""
        if self.broken is not None:
            return self.broken
        rows = iter(rows)
        if self._open:
            for first in rows:
                self._open = False
                seq, prev = first[0], first[1]
                self.first = (seq, prev)
                self.head, self.head_hash = seq - 1, prev if isinstance(prev, str) else _UNLINKABLE
                self._check([first], links)
                break
        if self.broken is None:
            self._check(rows, links)
        return self.broken

    def _check(self, rows: Iterable[Sequence[Any]], links: Callable[[int, str, Any, Any], bool]) -> None:
        head, head_hash, count = self.head, self.head_hash, self.count
        anchor = self.expect.seq if self.expect is not None else -1
        try:
            for seq, prev, stored, content in rows:
                if seq != head + 1:
                    self.broken = _seq_break(head + 1, seq, head)
                    return
                if prev != head_hash:
                    self.broken = Break(seq, _PREV_MISMATCH)
                    return
                if not links(seq, prev, stored, content):
                    self.broken = Break(seq, _CONTENT_MISMATCH)
                    return
                if seq == anchor:
                    assert self.expect is not None
                    if stored != self.expect.hash:
                        self.broken = Break(
                            seq, f"hash differs from the anchor {self.expect} (the log was rewritten up to here)"
                        )
                        return
                    self._anchor_seen = True
                head, head_hash = seq, stored
                count += 1
        finally:
            self.head, self.head_hash, self.count = head, head_hash, count

    def join(self, part: ChainWalker) -> Break | None:
        """Continue with ``part``, an ``open_part`` walked over the rows after this walker's (see the class)."""
        if self.broken is not None:
            return self.broken
        if part.first is not None:
            seq, prev = part.first
            if seq != self.head + 1:
                self.broken = _seq_break(self.head + 1, seq, self.head)
                return self.broken
            if prev != self.head_hash:
                self.broken = Break(seq, _PREV_MISMATCH)
                return self.broken
            self.head, self.head_hash = part.head, part.head_hash
        self.count += part.count
        self._anchor_seen = self._anchor_seen or part._anchor_seen
        self.broken = part.broken
        return self.broken

    def finish(self) -> Break | None:
        if self.broken is None and not self._anchor_seen and self.expect is not None:
            self.broken = Break(
                self.head + 1,
                f"the log ends at seq {self.head}, before the anchor {self.expect.seq} (rows removed from the end)",
            )
        return self.broken
