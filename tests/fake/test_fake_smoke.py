"""Smoke: the fake's token + subscribe + generated frames over real sockets."""

from __future__ import annotations

import httpx
import trio
from fake_helpers import subscribe, token
from trio_websocket import open_websocket_url

from tracker.fake.server import open_fake_exchange


async def test_token_subscribe_and_frames() -> None:
    with trio.fail_after(10):
        async with open_fake_exchange(seed=3) as fx, httpx.AsyncClient() as client:
            tok = await token(client, fx)
            async with open_websocket_url(fx.ws_url) as ws:
                ch = f"private-my_orders_btcusd-{fx.user_id}"
                ack = await subscribe(ws, ch, tok)
                assert ack == {"event": "bts:subscription_succeeded", "channel": ch, "data": {}}
                emitted = await fx.generate(30)
                mine = [e for e in emitted if e.channel == ch]
                assert mine
                for e in mine:
                    assert await ws.get_message() == e.text
