"""``tracker doctor`` against the fake exchange over real sockets: every probe answered, the verdict, the JSON for a
bug report without the key, the secret or the token, amounts redacted on request; and the field catalog's verdicts.

Rules: loopback only, ports chosen by the OS, an absolute timeout on each test; the CLI runs as a child process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import trio

from tracker.bitstamp.field_catalog import FieldTally
from tracker.cli.doctor import format_report, redact_report
from tracker.exchange.rest import BitstampClient
from tracker.fake.server import open_fake_exchange
from tracker.runtime.doctor import run_doctor

pytestmark = pytest.mark.timeout(60)
MARKETS = ("btcusd", "btcusd-perp")


async def test_doctor_probes_every_endpoint_and_channel_of_the_fake() -> None:
    async with (
        open_fake_exchange(seed=5, markets=MARKETS, rate=50) as fx,
        BitstampClient(fx.api_url, fx.api_key, fx.api_secret) as client,
    ):
        report = await run_doctor(client, api_url=fx.api_url, ws_url=fx.ws_url, markets=MARKETS, listen_s=1.0)
    names = {p.name for p in report.probes}
    assert {
        "rest:websockets_token",
        "rest:user_transactions",
        "rest:user_transactions/btcusd",
        "rest:trade_history/btcusd-perp",
        "rest:position_settlement_transactions",
        "rest:account_order_data/btcusd",
        "rest:account_balances",
        "rest:withdrawal-requests",
        "rest:crypto-transactions",
    } <= names
    channels = {p.name.removeprefix("ws:") for p in report.probes if p.name.startswith("ws:")}
    per_market = ("my_orders", "my_trades", "live_trades", "live_order_trades")
    account_wide = ("my_settlements", "my_liquidations", "my_token_settlements")
    assert channels == {f"private-{n}_{m}-{fx.user_id}" for n in per_market for m in MARKETS} | {
        f"private-{n}-{fx.user_id}" for n in account_wide
    }
    assert all(p.ok for p in report.probes), [p for p in report.probes if not p.ok]
    assert report.can_run and report.account == str(fx.user_id)
    assert report.clock_skew_s is not None and abs(report.clock_skew_s) < 5
    signed = {p.name: p.signed for p in report.probes if p.name.startswith("rest:")}
    assert signed["rest:markets"] is None  # public: not signed, nothing to check
    assert signed["rest:user_transactions"] is True
    assert signed["rest:withdrawal-requests"] is True and signed["rest:crypto-transactions"] is True
    orders = next(p for p in report.probes if p.name == f"ws:private-my_orders_btcusd-{fx.user_id}")
    assert orders.fields is not None and orders.fields.samples > 0 and not orders.fields.missing
    assert not any(p.fields.absent for p in report.probes if p.fields is not None)  # every field tracker leans on
    text = format_report(report.as_data())
    assert "verdict: tracker can run on this account" in text
    assert "absent:" not in text


async def test_doctor_says_which_field_tracker_leans_on_no_frame_carried() -> None:
    """Order frames without ``trade_account_id`` (the fake's mode, as the 2022-2023 captures): the my_orders lines
    say so, with what tracker does instead; the my_trades lines, whose frames carry it, do not."""
    async with (
        open_fake_exchange(seed=5, markets=MARKETS, rate=50, modes=["orders-without-trade-account"]) as fx,
        BitstampClient(fx.api_url, fx.api_key, fx.api_secret) as client,
    ):
        report = await run_doctor(client, api_url=fx.api_url, ws_url=fx.ws_url, markets=MARKETS, listen_s=1.0)
    absent: dict[str, set[str]] = {}
    for probe in report.probes:
        if probe.fields is not None and probe.fields.samples:
            absent.setdefault(probe.kind, set()).update(name for name, _ in probe.fields.absent)
    assert absent["ws:my_orders"] == {"trade_account_id"}
    assert absent["ws:my_trades"] == set()
    assert report.can_run
    text = format_report(report.as_data())
    assert "absent: trade_account_id in every frame: an order takes the trade account its fills name" in text


async def test_doctor_cli_exit_codes_and_a_report_without_secrets(tmp_path: Path) -> None:
    async with open_fake_exchange(seed=6, markets=MARKETS, rate=50) as fx:
        env = fx.tracker_env(os.environ)
        out = tmp_path / "doctor.json"
        command = [sys.executable, "-m", "tracker", "doctor", "--listen", "1", "--out", str(out), "--redact-amounts"]
        done = await trio.run_process(command, env=env, capture_stdout=True, capture_stderr=True, check=False)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        text = out.read_text(encoding="utf-8")
        data = json.loads(text)
        assert data["can_run"] is True
        assert fx.api_key not in text and fx.api_secret not in text
        assert fx.tokens.tokens and all(token not in text for token in fx.tokens.tokens)
        samples = [p["sample"] for p in data["probes"] if p["sample"]]
        assert samples and '"<amount>"' in json.dumps(samples)

        # A wrong secret: the token probe fails with API0005, and tracker cannot run: exit 1, one verdict line.
        env["BITSTAMP_API_SECRET"] = "x" * len(fx.api_secret)
        done = await trio.run_process(command[:6], env=env, capture_stdout=True, capture_stderr=True, check=False)
        assert done.returncode == 1
        stdout = done.stdout.decode()
        assert "FAIL  websockets_token" in stdout and "API0005" in stdout
        assert "verdict: tracker cannot run on this account" in stdout
        assert "Traceback" not in done.stderr.decode()


async def test_an_unreachable_exchange_and_a_password_in_its_url(tmp_path: Path) -> None:
    # Nothing answered: the clock line said "the exchange sent no Date header"; and a password in BITSTAMP_API_URL was
    # printed in the header, in every probe's error line and in --out.
    with trio.socket.socket() as sock:
        # Bound, never listening, until the doctor is done: a connection to it is refused, and no other test (an
        # xdist worker's server on port 0) can take the port meanwhile.
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
        env.update(
            BITSTAMP_API_URL=f"http://proxyuser:hunter22@127.0.0.1:{port}/api/v2/",
            BITSTAMP_WS_URL=f"ws://127.0.0.1:{port}",
            BITSTAMP_API_KEY="abcdefghijkl",
            BITSTAMP_API_SECRET="abcdefghijklmnop",
        )
        out = tmp_path / "doctor.json"
        command = [sys.executable, "-m", "tracker", "doctor", "--markets", "btcusd", "--listen", "0", "--out", str(out)]
        done = await trio.run_process(
            command, env=env, cwd=tmp_path, capture_stdout=True, capture_stderr=True, check=False
        )
    stdout = done.stdout.decode()
    assert done.returncode == 1, done.stderr.decode()[-2000:]
    assert "clock     unknown: no REST call was answered (see REST below)" in stdout
    assert "hunter22" not in stdout + done.stderr.decode() + out.read_text(encoding="utf-8")
    assert f"http://proxyuser:***@127.0.0.1:{port}/api/v2/" in stdout


def test_field_tally_says_which_leaned_on_fields_no_frame_carried() -> None:
    tally = FieldTally("ws:my_orders")
    assert tally.report().absent == ()  # no frame: nothing to say
    tally.add({"id": 1, "amount": "1"})
    assert [name for name, _ in tally.report().absent] == ["trade_account_id", "pre_event_id"]
    tally.envelope.update({"(envelope) trade_account_id", "(envelope) pre_event_id"})  # as _observe_frame records
    assert tally.report().absent == ()
    trades = FieldTally("ws:my_trades")
    trades.add({"id": 1, "amount": "1", "price": "2", "trade_account_id": 0})
    assert trades.report().absent == ()


def test_field_tally_says_known_unknown_and_missing() -> None:
    tally = FieldTally("rest:user_transactions")
    tally.add({"id": 1, "datetime": "2026-01-01 00:00:00", "type": "2", "btc": "0.1", "usd": "-10", "btc_usd": "100"})
    tally.add({"id": 2, "type": "0", "usd": "5", "brand_new_field": 1})  # no datetime: a required field missing
    report = tally.report()
    assert report.missing == ("datetime",)
    assert report.unknown == ("brand_new_field",)
    assert {"btc", "usd", "btc_usd", "id", "type", "datetime"} <= set(report.known)
    assert report.samples == 2


def test_redaction_removes_secrets_everywhere_and_amounts_in_samples() -> None:
    data = {
        "detail": "refused key K3Y and SECRET",
        "probes": [{"sample": {"amount": "1.5", "price": 100, "id": "K3Y", "side": "buy"}, "detail": "3 row(s)"}],
    }
    out = redact_report(data, secrets=("K3Y", "SECRET"), amounts=True)
    assert out["detail"] == "refused key *** and ***"
    assert out["probes"][0]["sample"] == {"amount": "<amount>", "price": "<amount>", "id": "***", "side": "buy"}
    assert out["probes"][0]["detail"] == "3 row(s)"  # numbers outside samples are kept
