"""``tracker doctor``: what the real exchange answers this key, read-only, one probe each.

The fake exchange is our reading of Bitstamp; the real one is the judge we cannot reach from here. ``doctor`` asks it,
with the user's own key, everything tracker relies on, each once and with the smallest page, and says per endpoint
and channel what came back: answered or not (status, code, what tracker does about that code), whether the answer
was signed, and which fields were known, unknown (sent but never heard of: worth a report) or missing (required by
the parser). Nothing is written anywhere; no order is touched (every call is a read).

Probes, in order: the clock (the ``Date`` header of a public answer against ours: API0017 beyond 150 s), the token
(which account the key belongs to), the REST endpoints (account-wide and for one market of each kind), then every
private channel, each subscribed for ``listen_s`` seconds on one connection. ``can_run`` is true when the token, the
account's fills (``user_transactions/``) and the order and trade channels of every market work: what ``tracker run``
cannot do without. Everything else that fails is a degradation the run survives (reported, not fatal).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import trio

from tracker.bitstamp.channels import channels_for, parse_channel
from tracker.bitstamp.field_catalog import ENVELOPE, FieldReport, FieldTally
from tracker.bitstamp.frames import Control, Data, classify
from tracker.bitstamp.subscriptions import subscribe_frame, unsubscribe_frame
from tracker.domain.timeutil import utc_now
from tracker.errors import ExchangeError
from tracker.exchange.errors import ApiError, disposition_of
from tracker.exchange.rest import BitstampClient
from tracker.exchange.ws import ConnectionClosed, open_ws
from tracker.runtime.ingest import discover_markets

MAX_SKEW_S = 150.0  # the server's window for X-Auth-Timestamp (docs/bitstamp.md §3.1)
ESSENTIAL_REST = ("websockets_token", "user_transactions")
ESSENTIAL_CHANNELS = ("my_orders", "my_trades")


@dataclass
class Probe:
    """One endpoint or channel, as the exchange answered it."""

    name: str  # "rest:user_transactions/btcusd" or "ws:private-my_orders_btcusd-<uid>"
    kind: str  # the field catalog's kind: "rest:user_transactions", "ws:my_orders"
    ok: bool
    detail: str = ""  # the error, or what came back ("3 rows", "acknowledged, 2 frames in 5 s")
    status: int | None = None
    code: str | None = None
    disposition: str | None = None  # what tracker does about this failure (exchange/errors.py)
    signed: bool | None = None  # REST: the answer carried a matching X-Server-Auth-Signature (None: not signed)
    fields: FieldReport | None = None
    sample: Any = None  # the first row or frame data, for a bug report (redacted by the CLI on request)
    essential: bool = False

    def as_data(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "ok": self.ok,
            "detail": self.detail,
            "status": self.status,
            "code": self.code,
            "disposition": self.disposition,
            "signed": self.signed,
            "fields": None if self.fields is None else self.fields.as_data(),
            "sample": self.sample,
            "essential": self.essential,
        }


@dataclass
class DoctorReport:
    api_url: str
    ws_url: str
    checked_at: datetime
    clock_skew_s: float | None = None
    account: str | None = None
    markets: tuple[str, ...] = ()
    query_form: str = ""
    probes: list[Probe] = field(default_factory=list)

    @property
    def can_run(self) -> bool:
        essential = [p for p in self.probes if p.essential]
        clock_ok = self.clock_skew_s is None or abs(self.clock_skew_s) <= MAX_SKEW_S
        return bool(essential) and all(p.ok for p in essential) and clock_ok

    def as_data(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "ws_url": self.ws_url,
            "checked_at": self.checked_at.isoformat(),
            "clock_skew_s": self.clock_skew_s,
            "account": self.account,
            "markets": list(self.markets),
            "get_query_signed_as": self.query_form,
            "can_run": self.can_run,
            "probes": [p.as_data() for p in self.probes],
        }


def _rows(answer: object) -> list[Any]:
    if isinstance(answer, list):
        return answer
    return [answer] if isinstance(answer, dict) else []


async def _rest_probe(
    client: BitstampClient,
    name: str,
    kind: str,
    call: Callable[[], Awaitable[Any]],
    *,
    essential: bool = False,
) -> tuple[Probe, Any]:
    endpoint = name.split(":", 1)[1].split("/", 1)[0]  # the client counts signatures by the path's first part
    signed_before, unsigned_before = client.signed_ok[endpoint], client.unsigned[endpoint]
    try:
        answer = await call()
    except ExchangeError as exc:
        api = exc if isinstance(exc, ApiError) else None
        probe = Probe(
            name,
            kind,
            ok=False,
            detail=str(exc),
            status=None if api is None else api.status,
            code=None if api is None else api.code,
            disposition=str(disposition_of(exc)),
            essential=essential,
        )
        return probe, None
    rows = _rows(answer)
    tally = FieldTally(kind)
    tally.add_all(rows)
    signed = (
        True
        if client.signed_ok[endpoint] > signed_before
        else (False if client.unsigned[endpoint] > unsigned_before else None)
    )
    probe = Probe(
        name,
        kind,
        ok=True,
        detail=f"{len(rows)} row(s)",
        signed=signed,
        fields=tally.report(),
        sample=rows[0] if rows else None,
        essential=essential,
    )
    return probe, answer


def _crypto_rows(client: BitstampClient) -> Callable[[], Awaitable[Any]]:
    """``crypto-transactions/`` answers an object of three lists [D: spec schema]: the probe tallies their rows."""

    async def call() -> Any:
        answer = await client.crypto_transactions(limit=1)
        if not isinstance(answer, dict):
            return answer
        return [
            row for name in ("deposits", "withdrawals", "ripple_iou_transactions") for row in answer.get(name) or []
        ]

    return call


async def probe_rest(client: BitstampClient, report: DoctorReport) -> None:
    """The clock, the token and every REST endpoint tracker calls, once each with the smallest page."""
    before = utc_now()
    markets_probe, all_markets = await _rest_probe(client, "rest:markets", "rest:markets", client.markets)
    report.probes.append(markets_probe)
    if client.last_date is not None:
        try:
            server = parsedate_to_datetime(client.last_date)
            report.clock_skew_s = round((server - before).total_seconds(), 1) + 0.0  # (never -0.0)
        except (TypeError, ValueError, IndexError):
            report.clock_skew_s = None
    token_probe, token = await _rest_probe(
        client, "rest:websockets_token", "rest:websockets_token", client.websockets_token_answer, essential=True
    )
    token_probe.sample = None  # the token itself never leaves this function
    report.probes.append(token_probe)
    if isinstance(token, dict) and token.get("user_id") is not None:
        report.account = str(token["user_id"])
    report.markets = report.markets or await _markets(client)
    spot = next((m for m in report.markets if not m.endswith("-perp")), None)
    perp = next((m for m in report.markets if m.endswith("-perp")), None)
    if perp is None and isinstance(all_markets, list):
        perp = next(
            (str(r.get("market_symbol")) for r in all_markets if str(r.get("market_symbol", "")).endswith("-perp")),
            None,
        )
    probes: list[tuple[str, str, Callable[[], Awaitable[Any]], bool]] = [
        ("rest:my_markets", "rest:markets", client.my_markets, False),
        ("rest:account_balances", "rest:account_balances", client.account_balances, False),
        ("rest:user_transactions", "rest:user_transactions", lambda: client.user_transactions(limit=1), True),
        ("rest:open_orders", "rest:open_orders", client.open_orders, False),
        # The ledger capture's endpoints (issue 15): not essential, each fails alone in tracker run.
        ("rest:withdrawal-requests", "rest:withdrawal_requests",
         lambda: client.withdrawal_requests(limit=1, offset=0), False),
        ("rest:crypto-transactions", "rest:crypto_transactions", _crypto_rows(client), False),
    ]  # fmt: skip
    if spot is not None:
        probes += [
            (
                f"rest:user_transactions/{spot}",
                "rest:user_transactions",
                lambda: client.user_transactions(spot, limit=1),
                False,
            ),
            (
                f"rest:account_order_data/{spot}",
                "rest:account_order_data",
                lambda: client.account_order_data(market=spot),
                False,
            ),
        ]
    if perp is not None:
        probes += [
            (f"rest:trade_history/{perp}", "rest:trade_history", lambda: client.trade_history(perp, limit=1), False),
            ("rest:position_settlement_transactions", "rest:position_settlement_transactions",
             lambda: client.position_settlement_transactions(limit=1), False),
        ]  # fmt: skip
    for name, kind, call, essential in probes:
        probe, _ = await _rest_probe(client, name, kind, call, essential=essential)
        if not probe.ok and probe.code == "404.008":  # "no events found" is an answer, not a failure
            probe.ok, probe.detail = True, "answered: no events in the default window"
        report.probes.append(probe)
    report.query_form = client.auth.query_form


async def _markets(client: BitstampClient) -> tuple[str, ...]:
    try:
        return await discover_markets(client)
    except ExchangeError:
        return ()


async def probe_channels(
    client: BitstampClient, ws_url: str, report: DoctorReport, *, listen_s: float, ack_timeout: float = 5.0
) -> None:
    """Every private channel, subscribed one at a time on one connection, then ``listen_s`` seconds of frames."""
    if report.account is None:
        report.probes.append(Probe("ws:channels", "ws", ok=False, detail="no token: not probed", essential=True))
        return
    channels = channels_for(report.markets, report.account, extras=True)
    probes = {
        ch: Probe(f"ws:{ch}", f"ws:{parse_channel(ch).name}", ok=False, essential=_essential(ch)) for ch in channels
    }
    tallies = {ch: FieldTally(probes[ch].kind) for ch in channels}
    try:
        async with open_ws(ws_url) as ws:
            token = await client.websockets_token()
            for channel in channels:
                await ws.send(subscribe_frame(channel, token.token))
                await _await_answer(ws, channel, probes[channel], tallies, ack_timeout)
            with trio.move_on_after(listen_s):
                while True:
                    _observe(await ws.receive(), tallies)
            for channel in channels:
                if probes[channel].ok:
                    await ws.send(unsubscribe_frame(channel))
    except (ExchangeError, ConnectionClosed) as exc:
        for probe in probes.values():
            if not probe.ok and not probe.detail:
                probe.detail = f"not subscribed: {exc}"
    for channel, probe in probes.items():
        fields = tallies[channel].report()
        probe.fields = fields
        if probe.ok:
            probe.detail = f"acknowledged; {fields.samples} frame(s) in {listen_s:g} s"
        report.probes.append(probe)


def _essential(channel: str) -> bool:
    return parse_channel(channel).name in ESSENTIAL_CHANNELS


async def _await_answer(
    ws: Any, channel: str, probe: Probe, tallies: dict[str, FieldTally], ack_timeout: float
) -> None:
    with trio.move_on_after(ack_timeout):
        while True:
            frame = classify(await ws.receive())
            if isinstance(frame, Control) and frame.kind == "subscription_succeeded" and frame.channel == channel:
                probe.ok = True
                return
            if isinstance(frame, Control) and frame.kind == "error":
                probe.detail = f"refused: {frame.message or 'bts:error'}"
                probe.code = None if frame.code is None else str(frame.code)
                return
            _observe_frame(frame, tallies)
    probe.detail = f"no acknowledgement within {ack_timeout:g} s"


def _observe(text: str, tallies: dict[str, FieldTally]) -> None:
    _observe_frame(classify(text), tallies)


def _observe_frame(frame: object, tallies: dict[str, FieldTally]) -> None:
    if not isinstance(frame, Data) or frame.channel not in tallies:
        return
    message = frame.message
    tally = tallies[frame.channel]
    data = message.get("data")
    if isinstance(data, dict):
        tally.add(data)
    envelope_extra = set(message) - ENVELOPE.known
    tally.seen.update(f"(envelope) {name}" for name in envelope_extra)
    tally.envelope.update(f"(envelope) {name}" for name in set(message) & ENVELOPE.known)


async def run_doctor(
    client: BitstampClient,
    *,
    api_url: str,
    ws_url: str,
    markets: Sequence[str] = (),
    listen_s: float = 5.0,
) -> DoctorReport:
    """Every probe, in order; never raises for an exchange answer (each is a line of the report)."""
    report = DoctorReport(api_url, ws_url, utc_now(), markets=tuple(markets))
    await probe_rest(client, report)
    await probe_channels(client, ws_url, report, listen_s=listen_s)
    if report.clock_skew_s is not None and not math.isfinite(report.clock_skew_s):
        report.clock_skew_s = None
    return report
