"""Helpers for the fake-exchange tests: an independent v2 signer (plain hmac, docs/bitstamp.md §3 read literally) and
small WebSocket helpers. Loopback only, port 0, absolute timeouts, no sleeps as synchronisation."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
from trio_websocket import WebSocketConnection

FORM = "application/x-www-form-urlencoded"


def signed_headers(
    method: str,
    url: str,
    body: str = "",
    *,
    key: str,
    secret: str,
    nonce: str | None = None,
    timestamp_ms: int | None = None,
    bare_query: bool = False,
) -> dict[str, str]:
    """X-Auth headers for one request, built from the fact sheet with nothing but hmac. The query is signed as
    ``"?" + query``, or without the ``?`` when ``bare_query`` (the two readings of docs/bitstamp.md §3.2)."""
    u = httpx.URL(url)
    host = u.netloc.decode("ascii")
    query = u.query.decode("ascii")
    nonce = nonce or str(uuid.uuid4())
    ts = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    content_type = FORM if body else ""
    signed_query = query if bare_query else ("?" + query if query else "")
    message = "BITSTAMP " + key + method + host + u.path + signed_query
    message += content_type + nonce + ts + "v2" + body
    headers = {
        "X-Auth": "BITSTAMP " + key,
        "X-Auth-Signature": hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest(),
        "X-Auth-Nonce": nonce,
        "X-Auth-Timestamp": ts,
        "X-Auth-Version": "v2",
    }
    if body:
        headers["Content-Type"] = FORM
    return headers


async def call(
    client: httpx.AsyncClient, fx: Any, method: str, route: str, body: str = "", query: str = "", **kw: Any
) -> httpx.Response:
    url = fx.api_url + route + (("?" + query) if query else "")
    headers = signed_headers(method, url, body, key=fx.api_key, secret=fx.api_secret, **kw)
    return await client.request(method, url, headers=headers, content=body.encode() if body else None)


async def token(client: httpx.AsyncClient, fx: Any) -> str:
    r = await call(client, fx, "POST", "websockets_token/")
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    return dict(json.loads(await ws.get_message(), parse_float=Decimal))


async def subscribe(ws: WebSocketConnection, channel: str, auth: str | None = None) -> dict[str, Any]:
    data: dict[str, str] = {"channel": channel}
    if auth is not None:
        data["auth"] = auth
    await ws.send_message(json.dumps({"event": "bts:subscribe", "data": data}))
    return await recv(ws)


class ManualClock:
    """The fake's wall clock, moved by the test (auth window, token expiry, the open_orders cache)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now
