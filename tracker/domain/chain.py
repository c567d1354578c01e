"""The event log's hash chain: canonical row content, the link hash, and a verifier that walks stored rows.

Each row's ``hash`` is ``sha256(prev_hash + canonical(row))`` as lowercase hex, where ``prev_hash`` is the previous
row's ``hash`` (``GENESIS`` for seq 1) and ``canonical`` is a compact JSON list of every stored column in a fixed
order, ``received_at`` as integer UTC microseconds. Including ``seq`` catches reordering; ``prev_hash`` catches a
removed or inserted row; the content catches any altered column. Removing rows from the *end* leaves a valid shorter
chain: only an anchor (a ``seq:hash`` recorded elsewhere) catches that, or a full rewrite with recomputed hashes.

Pure: no I/O. The store computes hashes with ``link_hash`` on append; ``tracker verify`` feeds rows to ``ChainWalker``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from tracker.domain.log import LogEntry, NewEntry
from tracker.domain.timeutil import datetime_to_us

GENESIS = "0" * 64
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def to_us(moment: datetime) -> int:
    """Aware datetime -> integer unix microseconds (exact). A naive datetime is a programming error."""
    if moment.tzinfo is None:
        raise ValueError(f"received_at must be timezone-aware (UTC), got naive {moment!r}")
    return datetime_to_us(moment)


def canonical(seq: int, entry: NewEntry | LogEntry) -> bytes:
    """The bytes a row's hash covers (everything stored except the two hashes)."""
    return _encode(
        [
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
    ).encode("utf-8")


def link_hash(prev_hash: str, seq: int, entry: NewEntry | LogEntry) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(seq, entry)).hexdigest()


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


class ChainWalker:
    """Checks stored rows fed in ``seq`` order, in as many pages as the caller likes (constant memory).

    ``feed`` returns the first ``Break`` found (and every later call returns it again); ``finish`` checks the end
    against an optional anchor.
    """

    def __init__(self, expect: Anchor | None = None) -> None:
        self.expect = expect
        self.count = 0
        self.head = 0
        self.head_hash = GENESIS
        self.broken: Break | None = None
        self._anchor_seen = expect is None or (expect.seq == 0 and expect.hash == GENESIS)

    def feed(self, rows: Iterable[LogEntry]) -> Break | None:
        if self.broken is not None:
            return self.broken
        for row in rows:
            expected_seq = self.head + 1
            if row.seq != expected_seq:
                if row.seq > expected_seq:
                    why = f"row missing: found seq {row.seq} next after seq {self.head} (a row was removed)"
                else:
                    why = f"found seq {row.seq} after seq {self.head} (a row was inserted or reordered)"
                self.broken = Break(expected_seq, why)
                return self.broken
            if row.prev_hash != self.head_hash:
                self.broken = Break(
                    row.seq, "prev_hash does not match the previous row's hash (a row was removed, inserted or altered)"
                )
                return self.broken
            if link_hash(row.prev_hash, row.seq, row) != row.hash:
                self.broken = Break(row.seq, "content does not match its hash (the row was altered or moved)")
                return self.broken
            if self.expect is not None and row.seq == self.expect.seq:
                if row.hash != self.expect.hash:
                    self.broken = Break(
                        row.seq, f"hash differs from the anchor {self.expect} (the log was rewritten up to here)"
                    )
                    return self.broken
                self._anchor_seen = True
            self.head = row.seq
            self.head_hash = row.hash
            self.count += 1
        return None

    def finish(self) -> Break | None:
        if self.broken is None and not self._anchor_seen and self.expect is not None:
            self.broken = Break(
                self.head + 1,
                f"the log ends at seq {self.head}, before the anchor {self.expect.seq} (rows removed from the end)",
            )
        return self.broken
