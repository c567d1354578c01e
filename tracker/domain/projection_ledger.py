"""Folding the ledger: legs and running balances, balance checks against ``account_balances/`` snapshots, crypto
transactions and withdrawal requests (docs/semantics.md, "The ledger"; docs/sql.md, "Ledger and balances").

Entry points: ``apply_ledger_row``, ``apply_balance_snapshot``, ``apply_crypto_transaction``,
``apply_withdrawal_request``. Every table is touched by key only (the read rule of ``tracker.domain.projection``), and
only by these four events, so ledger rows never share a key with the market events (the parallel rebuild's proof).

- A ledger row's legs are applied in log order: ``balance_after`` is the running balance of its trade account and
  currency, ``proj_balances`` holds the balance itself (``v_balances`` reads it; no sum at query time).
- A snapshot is checked against the balances as they are when the fold reaches it: the legs with a smaller seq
  (the capture appends a snapshot only at a consistent cut of its trade account's ledger). Rebuild equals
  incremental because the fold order is the log order.
- Discrepancies, opened and resolved here, deterministic: ``negative_balance`` (the first leg that takes a balance
  below zero; resolved when it is back at zero or more), ``balance_mismatch`` (a check that differs; one open per
  trade account and currency, its detail refreshed by each later differing check, resolved by the first agreeing
  one), ``subaccount_header_ignored`` (a row id seen under a second trade account: its legs are not applied).
"""

from __future__ import annotations

from decimal import Decimal

from tracker.domain.events import BalanceSnapshot, CryptoTransaction, LedgerRow, WithdrawalRequest
from tracker.domain.ledger import add, amount_key, request_status_name
from tracker.domain.money import format_decimal
from tracker.domain.projection_state import (
    ZERO,
    ProjectionState,
    count,
    open_discrepancy,
    refresh_discrepancy,
    resolve_discrepancy,
    unix_us,
)
from tracker.domain.rows import (
    BalanceCheckRow,
    BalanceRow,
    CryptoTransactionRow,
    LedgerAccountRow,
    LedgerEntryRow,
    LedgerLegRow,
    WithdrawalRequestRow,
)

SOURCE = "rest"  # the source of every leg so far (statement rows are witnesses, not legs: docs/semantics.md)


def _empty_balance(account: str, trade_account_id: str, currency: str) -> BalanceRow:
    return BalanceRow(account, trade_account_id, currency, ZERO, None, None, 0, None, None, None, None)


def _note_currency(state: ProjectionState, account: str, trade_account_id: str, currency: str) -> None:
    """Add ``currency`` to the trade account's list (its first leg)."""
    key = (account, trade_account_id)
    row = state.ledger_accounts.get(key)
    currencies = set() if row is None or not row.currencies else set(row.currencies.split(" "))
    currencies.add(currency)
    state.ledger_accounts[key] = LedgerAccountRow(
        account,
        trade_account_id,
        " ".join(sorted(currencies)),
        0 if row is None else row.snapshots,
        None if row is None else row.last_snapshot_seq,
    )
    state.dirty["ledger_accounts"].add(key)


def apply_ledger_row(state: ProjectionState, event: LedgerRow) -> None:
    """One ``rest_ledger_row``: its entry, its legs with their running balances, the balances."""
    account, tai = event.account, event.trade_account_id
    for note in event.notes:
        count(state, account, note, event.seq)
    entry_key = (account, event.entry_id)
    old = state.ledger_entries.get(entry_key)
    if old is not None:
        if old.trade_account_id == tai:
            count(state, account, "ledger_row_seen_again", event.seq)
            return
        open_discrepancy(
            state,
            account,
            f"subaccount_header_ignored:{event.entry_id}:{tai}",
            "subaccount_header_ignored",
            f"ledger:{event.entry_id}",
            f"ledger row {event.entry_id} came for trade account {old.trade_account_id} (seq {old.seq}) and again for"
            f" {tai} (seq {event.seq}): the exchange answered one account's rows for another (X-Auth-Subaccount-Id"
            " ignored?); the second copy's legs are not applied",
            event.seq,
            tai,
        )
        return
    state.ledger_entries[entry_key] = LedgerEntryRow(
        account, event.entry_id, tai, event.type_code, event.type, event.subtype, event.occurred_at, event.fee,
        len(event.legs), event.seq,
    )  # fmt: skip
    state.dirty["ledger_entries"].add(entry_key)
    occurred_us = None if event.occurred_at is None else unix_us(event.occurred_at)
    for leg_no, leg in enumerate(event.legs):
        balance_after = None
        if leg.currency is not None:
            balance_after = _move(state, event, leg.currency, leg.amount)
        leg_key = (account, event.entry_id, leg_no)
        state.ledger_legs[leg_key] = LedgerLegRow(
            account, event.entry_id, leg_no, tai, leg.leg, event.occurred_at, event.type, event.type_code,
            event.subtype, leg.currency, leg.amount, leg.fee, event.market, event.rate, event.order_id,
            event.trade_id, SOURCE, event.seq, balance_after, occurred_us, amount_key(leg.amount),
        )  # fmt: skip
        state.dirty["ledger_legs"].add(leg_key)


def _move(state: ProjectionState, event: LedgerRow, currency: str, amount: Decimal) -> Decimal:
    """Apply one leg to its balance; returns the balance after it. Opens or resolves ``negative_balance``."""
    account, tai = event.account, event.trade_account_id
    key = (account, tai, currency)
    row = state.balances.get(key)
    if row is None:
        row = _empty_balance(account, tai, currency)
    if row.entries == 0:
        _note_currency(state, account, tai, currency)
    balance = add(row.balance, amount)
    new_entry = row.last_entry_id != event.entry_id or row.entries == 0
    negative_id = row.negative_id
    if balance < 0 and negative_id is None:
        negative_id = f"negative_balance:{tai}:{currency}:{event.entry_id}"
        open_discrepancy(
            state,
            account,
            negative_id,
            "negative_balance",
            f"balance:{tai}:{currency}",
            f"trade account {tai} {currency} went to {format_decimal(balance)} at ledger entry {event.entry_id}"
            f" (seq {event.seq}): a movement before it is missing from the ledger",
            event.seq,
            tai,
        )
    elif balance >= 0 and negative_id is not None:
        resolve_discrepancy(
            state,
            account,
            negative_id,
            event.seq,
            f"trade account {tai} {currency} back at {format_decimal(balance)} at ledger entry {event.entry_id}",
        )
        negative_id = None
    state.balances[key] = BalanceRow(
        account, tai, currency, balance,
        event.occurred_at if event.occurred_at is not None else row.as_of,
        event.entry_id, row.entries + 1 if new_entry else row.entries, event.seq, negative_id, row.mismatch_id,
        row.first_entry_since_check if row.first_entry_since_check is not None else event.entry_id,
    )  # fmt: skip
    state.dirty["balances"].add(key)
    return balance


# --- balance checks -------------------------------------------------------------------------------------------------


def apply_balance_snapshot(state: ProjectionState, event: BalanceSnapshot) -> None:
    """Check each currency of the snapshot (and each the ledger holds that the snapshot lacks) against the balance
    the ledger has now, i.e. the sum of the legs with a smaller seq.

    A currency the snapshot lists with total 0 that the ledger never moved is left out (Bitstamp lists every
    currency it has, mostly zeros); one with a non-zero total is checked (computed 0: it differs)."""
    account, tai = event.account, event.trade_account_id
    for note in event.notes:
        count(state, account, note, event.seq)
    account_key = (account, tai)
    holder = state.ledger_accounts.get(account_key)
    held = set() if holder is None or not holder.currencies else set(holder.currencies.split(" "))
    listed: set[str] = set()
    for line in event.lines:
        listed.add(line.currency)
        row = state.balances.get((account, tai, line.currency))
        in_ledger = row is not None and row.entries > 0
        if line.total == 0 and not in_ledger:
            continue
        computed = ZERO if row is None else row.balance
        difference = Decimal(format_decimal(add(line.total, -computed)))  # canonical: "0", not "0.00000000"
        status = "agrees" if difference == 0 else "differs"
        _check(state, event, line.currency, row, line.total, line.available, line.reserved, computed, difference,
               status)  # fmt: skip
    for currency in sorted(held - listed):
        row = state.balances.get((account, tai, currency))
        computed = ZERO if row is None else row.balance
        difference = Decimal(format_decimal(-computed))
        _check(state, event, currency, row, None, None, None, computed, difference, "missing_on_exchange")
    state.ledger_accounts[account_key] = LedgerAccountRow(
        account,
        tai,
        "" if holder is None else holder.currencies,
        1 if holder is None else holder.snapshots + 1,
        event.seq,
    )
    state.dirty["ledger_accounts"].add(account_key)


def _check(
    state: ProjectionState,
    event: BalanceSnapshot,
    currency: str,
    row: BalanceRow | None,
    total: Decimal | None,
    available: Decimal | None,
    reserved: Decimal | None,
    computed: Decimal,
    difference: Decimal,
    status: str,
) -> None:
    """One check row, and the balance's check state: an agreeing check (or a currency missing on the exchange with
    a zero balance) resolves an open ``balance_mismatch``; a differing one opens it or refreshes its detail."""
    account, tai = event.account, event.trade_account_id
    agrees = difference == 0
    first_entry_id = None if agrees or row is None else row.first_entry_since_check
    check_key = (account, tai, event.seq, currency)
    state.balance_checks[check_key] = BalanceCheckRow(
        account, tai, currency, event.received_at, event.seq, total, available, reserved, computed, difference,
        status, first_entry_id,
    )  # fmt: skip
    state.dirty["balance_checks"].add(check_key)
    base = row if row is not None else _empty_balance(account, tai, currency)
    mismatch_id = base.mismatch_id
    exchange = "missing" if total is None else format_decimal(total)
    figures = (
        f"trade account {tai} {currency}: exchange {exchange}, ledger {format_decimal(computed)}, difference"
        f" {format_decimal(difference)} at the snapshot of seq {event.seq}"
    )
    if agrees:
        if mismatch_id is not None:
            resolve_discrepancy(state, account, mismatch_id, event.seq, f"agrees again: {figures}")
            mismatch_id = None
        first_since = None
    else:
        first = "none since the last agreeing check" if first_entry_id is None else first_entry_id
        detail = f"{figures}; first ledger entry since the last agreeing check: {first}"
        if mismatch_id is None:
            mismatch_id = f"balance_mismatch:{tai}:{currency}:{event.seq}"
            open_discrepancy(
                state, account, mismatch_id, "balance_mismatch", f"balance:{tai}:{currency}", detail, event.seq, tai
            )
        else:
            refresh_discrepancy(state, account, mismatch_id, detail)
        first_since = base.first_entry_since_check
    if (mismatch_id, first_since) == (base.mismatch_id, base.first_entry_since_check):
        return
    key = (account, tai, currency)
    state.balances[key] = BalanceRow(
        account, tai, currency, base.balance, base.as_of, base.last_entry_id, base.entries, base.last_seq,
        base.negative_id, mismatch_id, first_since,
    )  # fmt: skip
    state.dirty["balances"].add(key)


# --- crypto transactions and withdrawal requests ----------------------------------------------------------------------


def apply_crypto_transaction(state: ProjectionState, event: CryptoTransaction) -> None:
    """One row per log entry (the log deduplicates equal rows)."""
    key = (event.account, event.seq)
    state.crypto_transactions[key] = CryptoTransactionRow(
        event.account, event.seq, event.list_name, event.currency, event.network, event.address, event.txid,
        event.amount, event.occurred_at, None if event.occurred_at is None else unix_us(event.occurred_at),
        amount_key(event.amount),
    )  # fmt: skip
    state.dirty["crypto_transactions"].add(key)


def apply_withdrawal_request(state: ProjectionState, event: WithdrawalRequest) -> None:
    """The request's latest state (log order); every state stays in the log."""
    key = (event.account, event.trade_account_id, event.request_id)
    old = state.withdrawal_requests.get(key)
    state.withdrawal_requests[key] = WithdrawalRequestRow(
        event.account, event.trade_account_id, event.request_id, event.occurred_at, event.method, event.currency,
        event.network, event.amount, None if event.amount is None else -abs(event.amount), event.status,
        request_status_name(event.status), event.txid, event.address,
        event.transaction_id, event.seq, event.seq if old is None else old.first_seq,
        1 if old is None else old.states + 1,
    )  # fmt: skip
    state.dirty["withdrawal_requests"].add(key)
