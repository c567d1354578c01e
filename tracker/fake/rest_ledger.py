"""The fake's account-movement routes (pure): ``withdrawal-requests/`` per trade account and the main account's
``crypto-transactions/``, with the parameters and errors of the public OpenAPI spec (/tmp/spec-ledger.md §1, §2).

- ``withdrawal-requests/``: ``limit`` and ``offset`` come together or not at all ("Both limit and offset must be
  present." [D]); ``limit`` 1 to 1000, default 1000 [D]; ``offset`` 0 to 200000 [D]; ``id`` (one request) and
  ``timedelta`` (requests from that many seconds ago to now, at most 50000000) [D]. Without ``timedelta`` every
  request is listed [G: the spec names no default]. Newest first [G].
- ``crypto-transactions/``: ``limit`` default 100, at most 1000; ``offset`` at most 200000; ``since_timestamp`` and
  ``until_timestamp`` unix seconds, each at most 30 days old [D]; ``since`` inclusive, ``until`` exclusive [G].
  The answer is ``{"deposits": [...], "withdrawals": [...], "ripple_iou_transactions": []}`` [D], each list newest
  first with ``offset``/``limit`` applied to each list on its own [G].

Errors use the fake's usual envelope with ``400.001`` and the spec's reason text (the spec gives reasons, not codes
[G]).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracker.fake.state import AccountState, TradeAccount
from tracker.fake.wire import dumps

REACH_S = 30 * 86_400  # crypto-transactions/ time filters reach this far back [D]
TIMEDELTA_MAX = 50_000_000
OFFSET_MAX = 200_000


class ParamError(ValueError):
    """A parameter the route refuses: ``reason`` is the spec's text (HTTP 400, ``400.001``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _number(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise ParamError(f"Invalid {name}.")
    return int(raw)


def withdrawal_requests(account: TradeAccount, params: Mapping[str, str], now: float) -> str:
    """``withdrawal-requests/`` of one trade account (module docstring)."""
    limit = _number(params, "limit")
    offset = _number(params, "offset")
    if (limit is None) != (offset is None):
        raise ParamError("Both limit and offset must be present.")
    if limit is not None and not 1 <= limit <= 1000:
        raise ParamError("Invalid limit.")
    if offset is not None and offset > OFFSET_MAX:
        raise ParamError("Invalid offset.")
    request_id = _number(params, "id")
    timedelta = _number(params, "timedelta")
    if timedelta is not None and timedelta > TIMEDELTA_MAX:
        raise ParamError("Timedelta too large.")
    rows: list[dict[str, Any]] = []
    for r in reversed(account.withdrawal_requests):
        if request_id is not None and r.id != request_id:
            continue
        if timedelta is not None and r.us < (now - timedelta) * 1_000_000:
            continue
        rows.append(r.row)
    start = offset or 0
    return dumps(rows[start : start + (limit or 1000)])


def crypto_transactions(state: AccountState, params: Mapping[str, str], now: float) -> str:
    """``crypto-transactions/`` of the main account (module docstring)."""
    raw_limit = params.get("limit") or "100"
    if not raw_limit.isdigit() or int(raw_limit) < 1:
        raise ParamError("Invalid limit.")
    if int(raw_limit) > 1000:
        raise ParamError("Limit too large.")
    raw_offset = params.get("offset") or "0"
    if not raw_offset.isdigit():
        raise ParamError("Invalid offset.")
    if int(raw_offset) > OFFSET_MAX:
        raise ParamError("Offset too large.")
    limit, offset = int(raw_limit), int(raw_offset)
    bounds: dict[str, int | None] = {}
    for name in ("since_timestamp", "until_timestamp"):
        raw = params.get(name)
        if raw is None or raw == "":
            bounds[name] = None
            continue
        if not raw.isdigit():
            raise ParamError(f"Invalid {name} parameter.")
        floor = int(now) - REACH_S
        if int(raw) < floor:
            raise ParamError(f"{name} parameter must be higher than {floor}.")
        bounds[name] = int(raw)
    since, until = bounds["since_timestamp"], bounds["until_timestamp"]
    answer: dict[str, list[dict[str, Any]]] = {}
    for name in ("deposits", "withdrawals"):
        picked = [
            row
            for us, row in reversed(state.crypto[name])
            if (since is None or us >= since * 1_000_000) and (until is None or us < until * 1_000_000)
        ]
        answer[name] = picked[offset : offset + limit]
    answer["ripple_iou_transactions"] = []
    return dumps(answer)
