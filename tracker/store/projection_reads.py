"""Reads of the projected ``proj_*`` tables for reconciliation: keyset pages over one account's orders and fills.

Every query is bounded (a page of rows, an id range of one REST page) and served by a primary key index, so
reconciling a long history never holds more than a page in memory. Synchronous; the runtime calls these in a worker
thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, Engine, Table, func, or_, select

from tracker.domain.rows import TABLES, DiscrepancyRow, FillRow, OrderRow
from tracker.store.projection_schema import PROJECTION_TABLES

IN_CHUNK: Final = 400  # ids per IN (...) list


def id_ranges(lo: int, hi: int) -> list[tuple[int, str, str]]:
    """``(digits, first, last)`` per digit count of the decimal texts of ``lo..hi``: for a text trade id,
    ``lo <= int(id) <= hi`` is ``length(id) = digits and first <= id <= last`` (canonical digits, no leading zeros),
    a range the fills' primary key index ``(account, trade_id)`` serves."""
    lo = max(lo, 0)
    if hi < lo:
        return []
    low, high = str(lo), str(hi)
    return [
        (n, low if n == len(low) else "1" + "0" * (n - 1), high if n == len(high) else "9" * n)
        for n in range(len(low), len(high) + 1)
    ]


class ProjectionQueries:
    """Queries over one database's projection tables (the live ones unless told otherwise)."""

    def __init__(self, engine: Engine, tables: Mapping[str, Table] = PROJECTION_TABLES) -> None:
        self.engine = engine
        self.tables = dict(tables)

    def _select(self, name: str, *conditions: ColumnElement[bool]) -> list[Any]:
        table = self.tables[name]
        row_type = TABLES[name]
        order = [table.c[column] for column in row_type.KEY]  # type: ignore[attr-defined]
        with self.engine.connect() as conn:
            return [row_type(*values) for values in conn.execute(select(table).where(*conditions).order_by(*order))]

    def open_discrepancies(self, account: str) -> list[DiscrepancyRow]:
        return self._select("discrepancies", *self._equal("discrepancies", account, status="open"))

    def active_discrepancies(self, account: str) -> list[DiscrepancyRow]:
        """Open and acknowledged: the ones a reconciliation may find again or resolve."""
        table = self.tables["discrepancies"]
        return self._select("discrepancies", table.c.account == account, table.c.status.in_(("open", "acknowledged")))

    def open_orders(self, account: str) -> list[OrderRow]:
        return self._select("orders", *self._equal("orders", account, status="open"))

    def _equal(self, name: str, account: str, **equal: object) -> list[ColumnElement[bool]]:
        table = self.tables[name]
        return [table.c.account == account, *(table.c[k] == v for k, v in equal.items())]

    def orders_named(self, account: str, ids: Iterable[str]) -> list[OrderRow]:
        """The orders named in ``ids`` (e.g. the exchange's open orders), ``IN_CHUNK`` per query."""
        table = self.tables["orders"]
        wanted = sorted(set(ids))
        rows: list[OrderRow] = []
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start : start + IN_CHUNK]
            rows += self._select("orders", table.c.account == account, table.c.order_id.in_(chunk))
        return rows

    def fills_between(
        self,
        account: str,
        market: str,
        lo: int,
        hi: int,
        since: datetime | None = None,
        after: tuple[int, str] | None = None,
        limit: int | None = None,
    ) -> list[FillRow]:
        """Projected fills of ``market`` with ``lo <= trade id <= hi`` (numerically), in id order, after the key
        ``after`` (digits, trade id), executed at or after ``since``, at most ``limit``."""
        table = self.tables["fills"]
        out: list[FillRow] = []
        with self.engine.connect() as conn:
            for digits, first, last in id_ranges(lo, hi):
                if after is not None and digits < after[0]:
                    continue
                conditions = [
                    table.c.account == account,
                    table.c.trade_id >= first,
                    table.c.trade_id <= last,
                    func.length(table.c.trade_id) == digits,
                    table.c.market == market,
                ]
                if after is not None and digits == after[0]:
                    conditions.append(table.c.trade_id > after[1])
                if since is not None:
                    conditions.append(table.c.executed_at >= since)
                query = select(table).where(*conditions).order_by(table.c.trade_id)
                if limit is not None:
                    query = query.limit(limit - len(out))
                out += [FillRow(*values) for values in conn.execute(query)]
                if limit is not None and len(out) >= limit:
                    break
        return out

    def order_page(self, account: str, changed_after_seq: int | None, after: str | None, limit: int) -> list[OrderRow]:
        """One keyset page of the account's orders in order id order: all of them (``changed_after_seq`` None), else
        the open ones and those changed after that log seq."""
        table = self.tables["orders"]
        conditions = [table.c.account == account]
        if changed_after_seq is not None:
            conditions.append(or_(table.c.status == "open", table.c.last_seq > changed_after_seq))
        if after is not None:
            conditions.append(table.c.order_id > after)
        query = select(table).where(*conditions).order_by(table.c.order_id).limit(limit)
        with self.engine.connect() as conn:
            return [OrderRow(*values) for values in conn.execute(query)]
