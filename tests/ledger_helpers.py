"""Ledger log entries built by hand, exactly as the ledger contract says (issue 15): event, channel
(``ledger_channel``), dedup key and payload ``dumps_canonical(row)``. The capture's own builders live in
``bitstamp/ledger_entries``; these keep the fold's tests independent of them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tracker.bitstamp.ledger_channels import ledger_channel
from tracker.bitstamp.wire import dumps_canonical, sha256_text
from tracker.domain.log import NewEntry
from tracker.domain.tracker_events import CONNECTED, tracker_entry
from tracker.export.ledger import LedgerLeg

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def when(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S.%f")


def ledger_entry(row: dict[str, Any], *, account: str = "acc", tai: str = "0", received_at: datetime = T0) -> NewEntry:
    return NewEntry(
        account=account,
        source="rest",
        channel=ledger_channel("user_transactions/", tai),
        event="rest_ledger_row",
        payload=dumps_canonical(row),
        dedup_key=f"rest:{account}:ledger:{tai}:{row['id']}",
        received_at=received_at,
        order_id=None if row.get("order_id") in (None, "None") else str(row["order_id"]),
        trade_id=str(row["id"]) if str(row.get("type")).strip() == "2" else None,
    )


def balances_entry(
    answer: list[dict[str, Any]], *, account: str = "acc", tai: str = "0", received_at: datetime = T0
) -> NewEntry:
    us = int(received_at.timestamp() * 1_000_000)
    return NewEntry(
        account=account,
        source="rest",
        channel=ledger_channel("account_balances/", tai),
        event="rest_balances",
        payload=dumps_canonical(answer),
        dedup_key=f"rest:{account}:balances:{tai}:{us}",
        received_at=received_at,
    )


def crypto_entry(row: dict[str, Any], list_name: str, *, account: str = "acc", received_at: datetime = T0) -> NewEntry:
    payload = dumps_canonical(row)
    return NewEntry(
        account=account,
        source="rest",
        channel=f"crypto-transactions/{list_name}",
        event="rest_crypto_transaction",
        payload=payload,
        dedup_key=f"rest:{account}:crypto:{list_name}:sha256:{sha256_text(payload)}",
        received_at=received_at,
    )


def request_entry(row: dict[str, Any], *, account: str = "acc", tai: str = "0", received_at: datetime = T0) -> NewEntry:
    payload = dumps_canonical(row)
    return NewEntry(
        account=account,
        source="rest",
        channel=ledger_channel("withdrawal-requests/", tai),
        event="rest_withdrawal_request",
        payload=payload,
        dedup_key=f"rest:{account}:withdrawal_request:{tai}:{row['id']}:sha256:{sha256_text(payload)}",
        received_at=received_at,
    )


def trade_row(entry_id: int, minutes: int, btc: str, usd: str, rate: str, fee: str, **extra: Any) -> dict[str, Any]:
    """A spot fill on btc_usd (amounts as the wire sends them: strings, the other currencies 0.0)."""
    return {
        "id": entry_id,
        "datetime": when(minutes),
        "type": "2",
        "btc": btc,
        "usd": usd,
        "eur": Decimal("0.0"),
        "btc_usd": Decimal(rate),
        "fee": fee,
        "order_id": 9000 + entry_id,
        **extra,
    }


def movement_row(entry_id: int, minutes: int, type_code: int | str, currency: str, amount: str, fee: str = "0"):  # type: ignore[no-untyped-def]
    """A one-currency movement (deposit 0, withdrawal 1, transfer 14/35, staking, rewards, ...)."""
    return {"id": entry_id, "datetime": when(minutes), "type": type_code, currency: amount, "fee": fee}


def sample_ledger(account: str = "acc") -> list[NewEntry]:
    """A small consistent ledger that fills every ledger view: a deposit with its crypto row, a trade, a withdrawal
    with its request (two states) and crypto row, a cancelled request, a sub-account transfer, an agreeing snapshot."""
    later = T0 + timedelta(hours=1)
    t0 = int(T0.timestamp())
    deposit = {"currency": "BTC", "network": "bitcoin", "destinationAddress": "bc1qdeposit", "txid": "aa11"}
    request = {"id": 7001, "datetime": when(3), "type": 1, "currency": "BTC", "network": "bitcoin"}
    request |= {"amount": "0.20000000", "address": "bc1qout"}
    out = {"currency": "BTC", "network": "bitcoin", "destinationAddress": "bc1qout", "txid": "bb22"}
    cancelled = {"id": 7002, "datetime": when(5), "type": 1, "currency": "BTC", "network": "bitcoin"}
    cancelled |= {"amount": "0.01", "status": 3, "txid": None, "address": "bc1qother", "transaction_id": None}
    main = [
        {"currency": "btc", "total": "0.19990000", "available": "0.19990000", "reserved": "0.00000000"},
        {"currency": "usd", "total": "5887.50", "available": "5000.00", "reserved": "887.50"},
        {"currency": "eur", "total": "0.00", "available": "0.00", "reserved": "0.00"},
    ]
    sub = [{"currency": "usd", "total": "100.00", "available": "100.00", "reserved": "0.00"}]
    return [
        ledger_entry(movement_row(101, 0, 0, "btc", "0.50000000"), account=account),
        crypto_entry({**deposit, "amount": Decimal("0.5"), "datetime": t0 + 30}, "deposits", account=account),
        ledger_entry(movement_row(102, 1, "0", "usd", "1000.00"), account=account),
        ledger_entry(trade_row(103, 2, "-0.10000000", "5000.00", "50000.00", "12.50"), account=account),
        request_entry({**request, "status": 0, "txid": None, "transaction_id": None}, account=account),
        ledger_entry(movement_row(104, 4, 1, "btc", "-0.20000000", "0.00010000"), account=account),
        request_entry({**request, "status": 2, "txid": 104, "transaction_id": "bb22"}, account=account),
        crypto_entry({**out, "amount": Decimal("0.2"), "datetime": t0 + 300}, "withdrawals", account=account),
        request_entry(cancelled, account=account),
        ledger_entry(movement_row(105, 6, 14, "usd", "-100.00"), account=account),
        ledger_entry(movement_row(106, 6, 14, "usd", "100.00"), account=account, tai="1234"),
        balances_entry(main, account=account, received_at=later),
        balances_entry(sub, account=account, tai="1234", received_at=later),
    ]


def log_of_legs(legs: Sequence[LedgerLeg], *, first_seq: int = 1) -> list[NewEntry]:
    """Log entries whose fold gives back ``legs`` (``v_ledger`` rows written by hand, e.g. ``test_export.LEGS``):
    one ``rest_ledger_row`` per entry, appended so that it gets the entry's seq (the log's first entry has
    ``first_seq``), a crypto row of the same currency, amount and time for each deposit or withdrawal with a txid
    (``v_transfers`` matches it: the leg's txid), and ``connected`` lifecycle entries filling the seqs between.

    The rows are what Bitstamp sends (amounts as text, the pair-rate key for a leg with a market), so the fold decides
    what it always decides: a fee's currency when the row does not say it (two assets and no pair, or no amount at
    all) is unknown, and the amount legs come in the fold's key order (the pair first, then sorted)."""
    entries: dict[tuple[str, str], list[LedgerLeg]] = {}
    for leg in legs:
        entries.setdefault((leg.trade_account_id, leg.entry_id), []).append(leg)
    ordered = sorted(entries.values(), key=lambda parts: parts[0].seq)
    crypto: list[NewEntry] = []
    out: list[NewEntry] = []
    for parts in ordered:
        first = parts[0]
        account = first.account
        row: dict[str, Any] = {
            "id": int(first.entry_id),
            "datetime": first.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "type": str(first.type_code),
        }
        amounts = [leg for leg in parts if leg.leg == "amount"]
        for leg in amounts:
            row[str(leg.currency)] = f"{leg.amount:f}"
        if first.market is not None and first.rate is not None:
            base = next(str(leg.currency) for leg in amounts if first.market.startswith(str(leg.currency)))
            row[f"{base}_{first.market[len(base) :]}"] = f"{first.rate:f}"
        fee = next((leg.fee for leg in parts if leg.leg == "fee"), None)
        if fee is not None:
            row["fee"] = f"{fee:f}"
        if first.order_id is not None:
            row["order_id"] = int(first.order_id)
        while len(out) + first_seq < first.seq:
            filler = len(out) + first_seq
            out.append(
                crypto.pop(0)
                if crypto
                else tracker_entry(account=account, event=CONNECTED, data={}, received_at=T0, uid=f"filler-{filler}")
            )
        if len(out) + first_seq != first.seq:
            raise ValueError(f"entry {first.entry_id} at seq {first.seq}: the seqs of the legs are not increasing")
        out.append(ledger_entry(row, account=account, tai=first.trade_account_id, received_at=first.occurred_at))
        for leg in amounts:
            if leg.txid is not None:
                moved = {"currency": str(leg.currency).upper(), "network": "bitcoin", "txid": leg.txid}
                moved |= {"destinationAddress": f"addr-{leg.txid}", "amount": abs(leg.amount)}
                moved["datetime"] = int(leg.occurred_at.timestamp())
                lists = "deposits" if str(leg.type_code) == "0" else "withdrawals"
                crypto.append(crypto_entry(moved, lists, account=account, received_at=leg.occurred_at))
    return out + crypto
