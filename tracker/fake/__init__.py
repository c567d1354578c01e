"""A faithful fake Bitstamp (HTTP API v2 + WebSocket API v2 on loopback) for tests and the demo.

Public API (``tracker.fake.server``)::

    async with open_fake_exchange(seed=0, markets=("btcusd", "ethusd", "btcusd-perp"), rate=None,
                                  user_id=314159, api_key=..., api_secret=..., clock=time.time,
                                  token_ttl=60.0, http_port=0, ws_port=0, modes=(),
                                  subaccounts=(1001, 1002)) as fx:
        fx.api_url, fx.ws_url, fx.api_key, fx.api_secret, fx.user_id, fx.markets, fx.modes
        await fx.generate(n_steps) -> list[Emission]     # frames made (delivered only to live subscribers)
        fx.set_rate(frames_per_s | None)                  # paced background activity
        fx.truth() -> dict                                # ground truth, docs/semantics.md (+ "accounts")
        fx.subaccounts; fx.tamper_ledger_row(trade_account_id, row_id, currency, new_amount)
        fx.private_channels() -> list[str]
        await fx.wait_subscribed(n | channels); await fx.wait_connections(n); await fx.wait_connections_total(n)
        faults: await fx.request_reconnect(close_after=3.0), await fx.drop_connections(), fx.stall()/fx.unstall(),
                fx.duplicate_next(n), await fx.send_malformed(), await fx.send_unknown_event(), fx.set_token_ttl(s),
                fx.invalidate_tokens(), fx.pause_delivery()/fx.resume_delivery(), fx.reject_next_requests(n)

Modules: ``wire`` (number spelling, JSON), ``markets``, ``model`` (pure seeded activity → frames), ``ids`` (its
clock and ids), ``ledger`` (the REST rows and records an action leaves), ``movements`` (deposits, withdrawals,
transfers, staking, ... on the main account and the sub-accounts), ``state`` (REST state and ground truth),
``auth`` (signature, nonce, timestamp, tokens), ``rest`` (routes), ``rest_ledger`` (``withdrawal-requests/``,
``crypto-transactions/``), ``http_server`` (h11), ``ws_server``
(subscriptions, delivery, wire faults), ``ws_socket`` (the WebSocket protocol: wsproto over a trio stream),
``server`` (wiring and controls), ``faults`` (``--fault`` specs), ``modes`` (``--mode``: how the real exchange may
differ from the default fake, e.g. ``derivatives-refused``, ``unsigned``, ``get-query-bare``; docs/fake.md).
"""
