"""Where a ledger fact came from: the endpoint and the trade account, written in the log's ``channel`` column.

A REST fact's channel is the endpoint path (``user_transactions/``). Requests for a sub-account are the same
endpoints with the header ``X-Auth-Subaccount-Id`` (docs/bitstamp.md §3.1; the spec lists the header as a security
scheme with no description, and formance saw it ignored: low confidence), so the channel says which trade account was
asked: ``subaccount/<id>/<endpoint path>``. The main account (trade account ``0``, the spec's "0 represents the main
account") keeps the bare endpoint path, which is what logs written before sub-accounts hold.
"""

from __future__ import annotations

import re
from typing import Final

MAIN: Final = "0"
SUBACCOUNT_PREFIX: Final = "subaccount/"
_SUB_RE: Final = re.compile(r"subaccount/([1-9][0-9]{0,18})/(.+)")
_ID_RE: Final = re.compile(r"0|[1-9][0-9]{0,18}")


def is_trade_account_id(value: str) -> bool:
    """A trade account id as tracker writes it: ``0`` or a positive integer without leading zeros."""
    return _ID_RE.fullmatch(value) is not None


def ledger_channel(endpoint: str, trade_account_id: str) -> str:
    """``user_transactions/`` for the main account, ``subaccount/1234/user_transactions/`` for sub-account 1234."""
    if not is_trade_account_id(trade_account_id):
        raise ValueError(f"not a trade account id: {trade_account_id!r}")
    return endpoint if trade_account_id == MAIN else f"{SUBACCOUNT_PREFIX}{trade_account_id}/{endpoint}"


def split_ledger_channel(channel: str) -> tuple[str, str]:
    """``(trade_account_id, endpoint)`` of a channel written by ``ledger_channel`` (any other channel: main)."""
    match = _SUB_RE.fullmatch(channel)
    if match is None:
        return MAIN, channel
    return match.group(1), match.group(2)
