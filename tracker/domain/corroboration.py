"""Does a REST observation add anything to what the log already holds? (pure)

Every backfill walk re-reads facts the websocket already delivered: a fill in ``user_transactions/`` or
``trade_history/`` that ``my_trades`` carried, an order event in ``account_order_data/`` that ``my_orders`` carried.
Appending each again would grow the permanent log by a multiple of what was missed (2.5x in one run with a reconnect
every 30 s, though nothing was missed). So a REST observation is appended only when it adds something:

- a fill is *corroborated* when a logged fill with the same trade id agrees on every field the REST row carries
  (a field the REST row lacks, ``None``, adds nothing; REST times without microseconds are compared at their own
  precision);
- an order event likewise, matched by its ``event_id``.

Anything else (no logged twin, or a twin that differs in any field) is appended: a difference opens a discrepancy in
the projection (``fill_source_mismatch``), as before. The walk's ``backfill_completed`` counts the corroborated rows
per endpoint, so the log still says what REST confirmed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final

from msgspec.structs import fields

from tracker.domain.events import Fill, OrderEvent

# Fields that say where or when an observation was made, not what it is.
_PROVENANCE: Final = frozenset({"seq", "source", "received_at"})
_TIMES: Final = frozenset({"executed_at", "occurred_at"})
# Chain position of a replayed order event is the same fact whatever source brought it; order_source is REST-only.
_FILL_FIELDS: Final = tuple(f.name for f in fields(Fill) if f.name not in _PROVENANCE)
_ORDER_FIELDS: Final = tuple(f.name for f in fields(OrderEvent) if f.name not in _PROVENANCE)

Observation = Fill | OrderEvent


def _same_time(new: datetime, known: datetime) -> bool:
    if new == known:
        return True
    # A REST time at whole seconds (user_transactions' "YYYY-MM-DD HH:MM:SS") agrees with the same second.
    return new.microsecond == 0 and known.replace(microsecond=0) == new


def _agrees(new: Observation, known: Observation, names: tuple[str, ...]) -> bool:
    for name in names:
        value = getattr(new, name)
        if value is None:
            continue
        other = getattr(known, name)
        if name in _TIMES and isinstance(value, datetime) and isinstance(other, datetime):
            if not _same_time(value, other):
                return False
        elif value != other:
            return False
    return True


def adds_nothing(new: Observation, logged: Iterable[Observation]) -> bool:
    """True when a logged observation of the same fact agrees with ``new`` on every field ``new`` carries."""
    if isinstance(new, Fill):
        return any(isinstance(k, Fill) and k.trade_id == new.trade_id and _agrees(new, k, _FILL_FIELDS) for k in logged)
    if new.event_id is None:
        return False
    return any(
        isinstance(k, OrderEvent) and k.event_id == new.event_id and _agrees(new, k, _ORDER_FIELDS) for k in logged
    )
