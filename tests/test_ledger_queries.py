"""The log reads of the ledger capture (``store/log_queries.py``) on both backends: a trade account's ledger cursor
and whether fills or settlements arrived from the websocket after a seq."""

from __future__ import annotations

from dataclasses import replace

from store_helpers import T0, entry, open_log

from tracker.bitstamp import ledger_entries as le
from tracker.domain.log import NewEntry
from tracker.store.log_queries import ledger_cursor, ws_activity_after


def _row(i: int, tai: str) -> NewEntry:
    item = le.entry_from_ledger_row({"id": i, "type": 0}, account="1001", trade_account_id=tai, received_at=T0)
    assert isinstance(item, NewEntry)
    return item


def test_ledger_cursor_per_trade_account(db_url: str) -> None:
    with open_log(db_url) as log:
        assert ledger_cursor(log, "1001", "user_transactions/", le.REST_LEDGER_ROW) is None
        per_market = replace(_row(99, "0"), event="rest_user_transaction", dedup_key="rest:1001:user_transactions:99")
        log.append([_row(3, "0"), _row(17, "0"), _row(12, "0"), _row(50, "4"), per_market], [])
        assert ledger_cursor(log, "1001", "user_transactions/", le.REST_LEDGER_ROW) == 17
        assert ledger_cursor(log, "1001", "subaccount/4/user_transactions/", le.REST_LEDGER_ROW) == 50
        assert ledger_cursor(log, "other", "user_transactions/", le.REST_LEDGER_ROW) is None


def test_ws_activity_after(db_url: str) -> None:
    prefixes = ("private-my_trades_", "private-my_settlements")
    with open_log(db_url) as log:
        assert ws_activity_after(log, "1001", 0, prefixes) == (0, False)
        log.append([entry(1), entry(2)], [])  # my_orders frames: no movement
        head, moved = ws_activity_after(log, "1001", 0, prefixes)
        assert (head, moved) == (2, False)
        trade = replace(entry(3), channel="private-my_trades_btcusd-1001", event="trade", dedup_key="ws:trade:3")
        log.append([trade], [])
        assert ws_activity_after(log, "1001", head, prefixes) == (3, True)
        assert ws_activity_after(log, "1001", 3, prefixes) == (3, False)
        assert ws_activity_after(log, "1001", 0, ()) == (3, False)
        # An underscore in a prefix is a character, not a LIKE wildcard.
        assert ws_activity_after(log, "1001", 0, ("private-my_orders_btcusd-",)) == (3, True)
        assert ws_activity_after(log, "1001", 0, ("private-my%",)) == (3, False)
