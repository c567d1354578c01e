"""Coverage from the log's own tracker-made entries (pure): when each channel was live, every gap and its filling.

Two folds over ``TrackerEntry`` values, in seq order:

- ``live_intervals``: per channel, the intervals in which a trusted connection had it subscribed. A ``subscribed``
  entry makes its channels live on its connection; ``closed`` ends them unless another connection has them (the
  make-before-break reconnect); ``stalled`` (from the last frame heard: received time minus ``silent_for_s``) and
  ``reconnect_requested`` end them at once, as ``tracker.domain.gaps.CoverageTracker`` distrusts them. This is the
  complement of that tracker's windows, kept per channel so it can be drawn.
- ``gaps``: the windows tracker *detected and logged at the time* (``gap_detected``), each joined with the
  ``backfill_completed`` entries naming its ``gap_id``: endpoints, facts found and fetched, requests, errors and the
  time from detection to the end of the backfill. The report shows what was recorded, never a recomputation.

What cannot be recovered is named: self trades, insurance-fund premiums and liquidation alerts have no REST source,
so a window in which their channels were not live may have lost some for good (``UNRECOVERABLE``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from tracker.audit.model import TrackerEntry
from tracker.domain import tracker_events as te

UNRECOVERABLE: Final = (
    ("self trades", "private-live_order_trades_* (self-trade prevention): no REST endpoint lists them"),
    ("insurance-fund premiums", "private-my_settlements (kind insurance_fund_premium): REST lists settlements only"),
    ("liquidation alerts", "private-my_liquidations (margin warnings and steps): no REST endpoint lists them"),
)
CAUSES: Final = {
    "start-up": "restart",
    "closed": "reconnect (connection closed)",
    "reconnect": "reconnect (requested by the server)",
    "stalled": "stall",
    "chain_break": "chain break",
}
FAILURES: Final = frozenset({te.WALK_FAILED, te.ENDPOINT_UNAVAILABLE, te.CHANNEL_REFUSED, te.SUBSCRIBE_FAILED})


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Gap:
    seq: int
    gap_id: str
    detected_at: datetime
    start: str  # ISO text as logged; "" when the window has no start (first start of an empty log)
    end: str
    cause: str
    channels: tuple[str, ...]
    detail: str
    filled_seq: int | None  # the backfill_completed that named it
    filled_after: timedelta | None
    found: dict[str, int]
    fetched: dict[str, int]
    requests: dict[str, int]
    errors: dict[str, str]


def _channels(data: dict[str, object]) -> tuple[str, ...]:
    value = data.get("channels")
    return tuple(str(c) for c in value) if isinstance(value, list) else ()


def _counts(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


def live_intervals(entries: Iterable[TrackerEntry], start: datetime | None, end: datetime) -> dict[str, list[Interval]]:
    """Per channel the live intervals, clipped to ``[start, end)`` (``start`` None: no lower bound)."""
    conn_channels: dict[str, tuple[str, ...]] = {}
    live: dict[str, set[str]] = {}
    since: dict[str, datetime] = {}
    out: dict[str, list[Interval]] = {}

    def stop(channel: str, at: datetime) -> None:
        began = since.pop(channel, None)
        if began is not None:
            out.setdefault(channel, []).append(Interval(began, at))

    for entry in entries:
        conn, at = entry.connection_id, entry.received_at
        if entry.event == te.SUBSCRIBED:
            conn_channels[conn] = _channels(entry.data)
            for channel in conn_channels[conn]:
                out.setdefault(channel, [])
                live.setdefault(channel, set()).add(conn)
                since.setdefault(channel, at)
        elif entry.event in (te.CLOSED, te.STALLED, te.RECONNECT_REQUESTED):
            silent = entry.data.get("silent_for_s")
            if entry.event == te.STALLED and isinstance(silent, int | float) and not isinstance(silent, bool):
                at -= timedelta(seconds=silent)
            for channel in conn_channels.get(conn, ()):
                conns = live.get(channel, set())
                conns.discard(conn)
                if not conns or entry.event != te.CLOSED:
                    stop(channel, at)
            if entry.event == te.CLOSED:
                conn_channels.pop(conn, None)
    for channel in list(since):
        stop(channel, end)
    return {channel: _clip(intervals, start, end) for channel, intervals in sorted(out.items())}


def _clip(intervals: Sequence[Interval], start: datetime | None, end: datetime) -> list[Interval]:
    clipped = []
    for interval in intervals:
        lo = interval.start if start is None else max(interval.start, start)
        hi = min(interval.end, end)
        if lo < hi:
            clipped.append(Interval(lo, hi))
    return clipped


def gaps(entries: Sequence[TrackerEntry]) -> list[Gap]:
    """Every logged gap with the backfill that filled it (None when no backfill named it)."""
    filled: dict[str, TrackerEntry] = {}
    for entry in entries:
        if entry.event == te.BACKFILL_COMPLETED:
            ids = entry.data.get("gap_ids")
            for gap_id in ids if isinstance(ids, list) else ():
                filled.setdefault(str(gap_id), entry)
    out = []
    for entry in entries:
        if entry.event != te.GAP_DETECTED:
            continue
        data = entry.data
        gap_id = str(data.get("gap_id", ""))
        reason = str(data.get("reason", ""))
        by = filled.get(gap_id)
        detail = str(data.get("detail", ""))
        if reason == "chain_break":
            detail = (
                f"order stream event {data.get('event_id')} named {data.get('pre_event_id')} (seq {data.get('seq')})"
            )
        errors = by.data.get("errors") if by is not None else None
        out.append(
            Gap(
                seq=entry.seq,
                gap_id=gap_id,
                detected_at=entry.received_at,
                start=str(data.get("start") or ""),
                end=str(data.get("end") or ""),
                cause=CAUSES.get(reason, reason or "unknown"),
                channels=_channels(data),
                detail=detail,
                filled_seq=None if by is None else by.seq,
                filled_after=None if by is None else by.received_at - entry.received_at,
                found=_counts(by.data.get("found")) if by is not None else {},
                fetched=_counts(by.data.get("fetched")) if by is not None else {},
                requests=_counts(by.data.get("requests")) if by is not None else {},
                errors={str(k): str(v) for k, v in errors.items()} if isinstance(errors, dict) else {},
            )
        )
    return out


def failures(entries: Iterable[TrackerEntry]) -> list[TrackerEntry]:
    """Walks that failed, endpoints the exchange refused, channels set aside, subscriptions refused."""
    return [entry for entry in entries if entry.event in FAILURES]
