"""BitstampClient and BitstampAuth over ``httpx.MockTransport``: no network. Signatures are recomputed here with
plain ``hmac`` from docs/bitstamp.md §3.2, independently of ``tracker.bitstamp.signing``."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal

import httpx
import pytest

from tracker.exchange.errors import (
    ApiError,
    AuthError,
    ClockSkewError,
    EndpointUnavailable,
    ExchangeUnreachable,
    RateLimited,
    ResponseSignatureError,
    ServerError,
)
from tracker.exchange.rest import BitstampClient

KEY = "k3yK3yK3yK3yK3yK3yK3yK3yK3yK3yK3"
SECRET = "s3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3"
NONCE = "0f5a3c2e-1b7d-4e8a-9c6f-3d2b1a0e9f8c"
NOW_MS = 1_700_000_000_000


def _hmac(message: bytes) -> str:
    return hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()


def signed_response(request: httpx.Request, status: int, body: bytes, content_type: str = "application/json"):
    sig = _hmac(
        request.headers["X-Auth-Nonce"].encode()
        + request.headers["X-Auth-Timestamp"].encode()
        + content_type.encode()
        + body
    )
    return httpx.Response(status, content=body, headers={"Content-Type": content_type, "X-Server-Auth-Signature": sig})


def make_client(handler, **kw) -> BitstampClient:  # type: ignore[no-untyped-def]
    return BitstampClient(
        "https://www.bitstamp.net/api/v2/",
        KEY,
        SECRET,
        clock=kw.pop("clock", lambda: NOW_MS),
        nonce=kw.pop("nonce", lambda: NONCE),
        transport=httpx.MockTransport(handler),
        **kw,
    )


async def test_empty_body_post_signature_and_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return signed_response(request, 200, b'{"token":"TOKEN_abcdefgh","user_id":314159,"valid_sec":60}')

    async with make_client(handler) as client:
        token = await client.websockets_token()
    assert (token.token, token.user_id, token.valid_sec) == ("TOKEN_abcdefgh", "314159", 60)
    assert "TOKEN" not in repr(token)
    request = seen[0]
    assert "Content-Type" not in request.headers
    assert request.content == b""
    expected = _hmac(f"BITSTAMP {KEY}POSTwww.bitstamp.net/api/v2/websockets_token/{NONCE}{NOW_MS}v2".encode())
    assert request.headers["X-Auth-Signature"] == expected
    assert request.headers["X-Auth"] == f"BITSTAMP {KEY}"
    assert request.headers["X-Auth-Nonce"] == NONCE
    assert request.headers["X-Auth-Timestamp"] == str(NOW_MS)
    assert request.headers["X-Auth-Version"] == "v2"


async def test_form_body_signature_includes_content_type_and_exact_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return signed_response(request, 200, b'{"id":"1","status":"Open","price":1.5}')

    async with make_client(handler) as client:
        status = await client.order_status("2050558851342339", omit_transactions=True)
    assert status["price"] == Decimal("1.5")
    request = seen[0]
    body = b"id=2050558851342339&omit_transactions=true"
    assert request.content == body
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    expected = _hmac(
        f"BITSTAMP {KEY}POSTwww.bitstamp.net/api/v2/order_status/".encode()
        + f"application/x-www-form-urlencoded{NONCE}{NOW_MS}v2".encode()
        + body
    )
    assert request.headers["X-Auth-Signature"] == expected


async def test_get_with_query_signs_question_mark_query() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return signed_response(request, 200, b"[]")

    async with make_client(handler) as client:
        assert await client.trade_history("btcusd-perp", limit=10) == []
    expected = _hmac(
        f"BITSTAMP {KEY}GETwww.bitstamp.net/api/v2/trade_history/btcusd-perp/?limit=10{NONCE}{NOW_MS}v2".encode()
    )
    assert seen[0].headers["X-Auth-Signature"] == expected


async def test_host_with_port_is_signed_as_netloc() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return signed_response(request, 200, b"[]")

    client = BitstampClient(
        "http://127.0.0.1:8123/api/v2",
        KEY,
        SECRET,
        clock=lambda: NOW_MS,
        nonce=lambda: NONCE,
        transport=httpx.MockTransport(handler),
    )
    async with client:
        await client.account_balances()
    expected = _hmac(f"BITSTAMP {KEY}POST127.0.0.1:8123/api/v2/account_balances/{NONCE}{NOW_MS}v2".encode())
    assert seen[0].headers["X-Auth-Signature"] == expected


async def test_response_signature_mismatch_rejected() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        good = signed_response(request, 200, b"[]")
        return httpx.Response(200, content=b'[{"tampered":1}]', headers=dict(good.headers))

    async with make_client(handler) as client:
        with pytest.raises(ResponseSignatureError, match="does not match"):
            await client.account_balances()


async def test_unsigned_response_is_accepted_counted_and_logged_once_per_endpoint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with make_client(lambda request: httpx.Response(200, json=[])) as client:
        for _ in range(3):
            assert await client.account_balances() == []
        await client.open_orders()
    assert client.unsigned == {"account_balances": 3, "open_orders": 1}
    warnings = [r.getMessage() for r in caplog.records if "X-Server-Auth-Signature" in r.getMessage()]
    assert len(warnings) == 2 and warnings[0].startswith("account_balances/")


async def test_an_error_body_is_read_before_the_signature_whatever_the_status() -> None:
    # An error with HTTP 200 and no signature: the error, not a signature failure (docs/bitstamp.md §5.4).
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"status": "error", "reason": {"__all__": ["Order not found"]}, "code": "404.002"}
        )

    async with make_client(handler) as client:
        with pytest.raises(ApiError, match="Order not found") as info:
            await client.order_status("1")
    assert type(info.value) is ApiError and info.value.code == "404.002"
    assert not client.unsigned


@pytest.mark.parametrize(
    ("code", "status", "exc_type"),
    [
        ("API5502", 400, ServerError),  # "Something went wrong, try again later"
        ("API5506", 400, EndpointUnavailable),  # "Trade account does not support derivatives."
        ("API5599", 400, EndpointUnavailable),  # an unknown derivatives code: not for this account (guess)
        ("403.004", 403, EndpointUnavailable),
        ("410.001", 410, EndpointUnavailable),
        (None, 404, EndpointUnavailable),  # no such endpoint here
        ("404.008", 404, ApiError),  # a normal "no events found" answer
        ("400.085", 400, ApiError),  # validation: refused as such
        ("API9999", 403, ApiError),  # an unknown code: kept, never fatal
        ("500.010", 500, ServerError),
        ("400.068", 400, RateLimited),
    ],
)
async def test_every_code_has_one_disposition(code: str | None, status: int, exc_type: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"code": code, "message": "m"} if code else {"message": "m"})

    async with make_client(handler) as client:
        with pytest.raises(ApiError) as info:
            await client.trade_history("btcusd-perp", limit=1)
    assert type(info.value) is exc_type
    assert not isinstance(info.value, AuthError)  # no walk's answer may look like bad credentials


@pytest.mark.parametrize(("server_form", "switches"), [("query", True), ("?query", False)])
async def test_get_with_a_query_retries_once_with_the_other_signing_form(server_form: str, switches: bool) -> None:
    forms: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        query = request.url.query.decode()
        signed_query = ("?" + query if server_form == "?query" else query) if query else ""
        head = f"BITSTAMP {KEY}{request.method}www.bitstamp.net{request.url.path}{signed_query}"
        body = request.content.decode()
        content_type = request.headers.get("Content-Type", "") if body else ""
        expected = _hmac(f"{head}{content_type}{NONCE}{NOW_MS}v2{body}".encode())
        forms.append(client.auth.query_form)
        if request.headers["X-Auth-Signature"] != expected:
            return httpx.Response(403, json={"status": "error", "reason": "Invalid signature", "code": "API0005"})
        return signed_response(request, 200, b"[]")

    client = make_client(handler)
    async with client:
        await client.account_balances()  # a POST passes: the secret is right
        assert await client.trade_history("btcusd-perp", limit=1, sort="asc") == []
        assert await client.trade_history("btcusd-perp", limit=1, sort="asc") == []
    assert client.query_form_settled
    assert client.auth.query_form == server_form
    assert len(forms) == (4 if switches else 3)  # one retry at most, and only the first time


async def test_api0005_on_the_first_call_is_bad_credentials_not_a_signing_form() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"status": "error", "reason": "Invalid signature", "code": "API0005"})

    async with make_client(handler) as client:
        with pytest.raises(AuthError, match="BITSTAMP_API_SECRET"):
            await client.trade_history("btcusd-perp", limit=1)
    assert client.auth.query_form == "?query"


@pytest.mark.parametrize(
    ("code", "exc_type", "text"),
    [
        ("API0001", AuthError, "API key not found: check BITSTAMP_API_KEY"),
        ("API0005", AuthError, "signature rejected: check BITSTAMP_API_SECRET"),
        ("API0003", AuthError, "lacks permission for websockets_token/"),  # no token, no private channel
        ("API0004", ServerError, "nonce"),  # transient: a new nonce is made per request
    ],
)
async def test_auth_errors_mapped_with_actionable_message(code: str, exc_type: type, text: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"status": "error", "reason": "Authentication failed", "code": code})

    async with make_client(handler) as client:
        with pytest.raises(exc_type, match=text) as info:
            await client.websockets_token()
    assert info.value.code == code
    assert KEY not in str(info.value) and SECRET not in str(info.value)


async def test_api0017_resyncs_from_date_header_and_retries_once() -> None:
    stamps: list[int] = []
    server_ms = NOW_MS + 600_000  # our clock is 10 minutes slow

    def handler(request: httpx.Request) -> httpx.Response:
        stamp = int(request.headers["X-Auth-Timestamp"])
        stamps.append(stamp)
        if abs(stamp - server_ms) > 150_000:
            return httpx.Response(
                403,
                json={"status": "error", "reason": "Timestamp too old", "code": "API0017"},
                headers={"Date": "Tue, 14 Nov 2023 22:23:20 GMT"},  # = server_ms
            )
        return signed_response(request, 200, b'{"token":"TOKEN_abcdefgh","user_id":"7","valid_sec":60}')

    async with make_client(handler) as client:
        token = await client.websockets_token()
    assert token.user_id == "7"
    assert stamps == [NOW_MS, server_ms]


async def test_api0017_twice_gives_up() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(
            403, json={"code": "API0017", "message": "bad"}, headers={"Date": "Tue, 14 Nov 2023 22:23:20 GMT"}
        )

    async with make_client(handler) as client:
        with pytest.raises(ClockSkewError, match="NTP"):
            await client.websockets_token()
    assert calls == 2


async def test_error_in_http_200_body_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return signed_response(request, 200, b'{"status":"error","reason":{"__all__":["Order not found."]}}')

    async with make_client(handler) as client:
        with pytest.raises(ApiError, match="Order not found"):
            await client.order_status("1")


@pytest.mark.parametrize(
    ("status", "body", "exc_type"),
    [
        (400, {"code": "400.002", "message": "Request rate limit exceeded"}, RateLimited),
        (400, {"response_code": "400.067", "response_explanation": "client rate limit"}, RateLimited),
        (429, {"message": "slow down"}, RateLimited),
        (503, None, ServerError),
        (500, {"code": "500.001", "message": "oops"}, ServerError),
        (404, {"code": "404.002", "message": "Order not found"}, ApiError),
    ],
)
async def test_status_and_code_mapping(status: int, body: object, exc_type: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, content=b"<html>bad gateway</html>")
        return httpx.Response(status, json=body, headers={"Retry-After": "3"})

    async with make_client(handler) as client:
        with pytest.raises(exc_type) as info:
            await client.open_orders()
    assert type(info.value) is exc_type
    if exc_type is RateLimited:
        assert info.value.retry_after == 3.0


async def test_unreachable_names_the_url_and_the_fix() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async with make_client(handler) as client:
        with pytest.raises(ExchangeUnreachable, match=r"cannot reach the exchange at https://www.bitstamp.net/api/v2/"):
            await client.account_balances()


async def test_public_markets_is_unsigned() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[{"market_symbol": "btcusd", "name": "BTC/USD"}])

    async with make_client(handler) as client:
        assert (await client.markets())[0]["market_symbol"] == "btcusd"
    assert "X-Auth" not in seen[0].headers


# --- the ledger endpoints and the sub-account header (issue 15) -----------------------------------------------------


async def test_subaccount_header_is_sent_outside_the_signature() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return signed_response(request, 200, b'[{"id":1,"type":"0","btc":"1.0","fee":"0"}]')

    async with make_client(handler) as client:
        rows = await client.user_transactions(trade_account="1234", sort="asc", since_id=0)
        await client.user_transactions(trade_account="0", sort="asc")
        await client.user_transactions("btcusd", limit=5)
    assert rows == [{"id": 1, "type": "0", "btc": "1.0", "fee": "0"}]
    sub, main, market = seen
    assert sub.url.path == "/api/v2/user_transactions/"
    assert sub.headers["X-Auth-Subaccount-Id"] == "1234"
    assert "X-Auth-Subaccount-Id" not in main.headers
    assert "X-Auth-Subaccount-Id" not in market.headers
    assert market.url.path == "/api/v2/user_transactions/btcusd/"
    body = b"sort=asc&since_id=0"
    assert sub.content == body
    # The header is not part of the string to sign [G]: the signature is the main account's recipe unchanged.
    expected = _hmac(
        f"BITSTAMP {KEY}POSTwww.bitstamp.net/api/v2/user_transactions/".encode()
        + f"application/x-www-form-urlencoded{NONCE}{NOW_MS}v2".encode()
        + body
    )
    assert sub.headers["X-Auth-Signature"] == expected


async def test_ledger_endpoints_paths_and_bodies() -> None:
    seen: list[httpx.Request] = []
    answers = {
        "/api/v2/account_balances/": b'[{"currency":"BTC","total":"1.5","available":"1.0","reserved":"0.5"}]',
        "/api/v2/crypto-transactions/": b'{"deposits":[{"currency":"BTC","amount":0.10,"datetime":1764928800}],'
        b'"withdrawals":[],"ripple_iou_transactions":[]}',
        "/api/v2/withdrawal-requests/": b'[{"id":5,"status":2,"amount":"0.1","currency":"BTC","txid":77}]',
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return signed_response(request, 200, answers[request.url.path])

    async with make_client(handler) as client:
        balances = await client.account_balances(trade_account="7")
        crypto = await client.crypto_transactions(limit=1000, offset=0)
        requests = await client.withdrawal_requests(trade_account="7", limit=1000, offset=0)
        await client.account_balances()
    assert balances[0]["total"] == "1.5"
    assert crypto["deposits"][0]["amount"] == Decimal("0.10")
    assert requests[0]["status"] == 2
    b, c, w, main_b = seen
    assert [r.method for r in seen] == ["POST"] * 4
    assert b.headers["X-Auth-Subaccount-Id"] == "7"
    assert "X-Auth-Subaccount-Id" not in c.headers  # main account only
    assert c.content == b"limit=1000&offset=0"
    assert w.headers["X-Auth-Subaccount-Id"] == "7"
    assert w.content == b"limit=1000&offset=0"
    assert "X-Auth-Subaccount-Id" not in main_b.headers


async def test_unknown_trade_account_is_unavailable_not_fatal() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404, json={"status": "error", "code": "404.004", "reason": "Trade account not found for provided API key."}
        )

    async with make_client(handler) as client:
        with pytest.raises(EndpointUnavailable) as caught:
            await client.user_transactions(trade_account="99", sort="asc")
    assert caught.value.code == "404.004"
    assert "Trade account not found" in str(caught.value)
