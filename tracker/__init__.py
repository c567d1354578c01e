"""tracker: an event-sourced tracker of one private Bitstamp account.

General layout (arrows point one way; a test in tests/test_layers.py enforces it):

    cli -> runtime -> (exchange | store | fake) -> bitstamp -> domain

- ``domain``: pure values, events, the projection fold and the reconciliation diff. Imports nothing of trio,
  httpx or sqlalchemy.
- ``bitstamp``: the sans-IO wire protocol: frame classification, parsing into domain events, channel names,
  ``bts:*`` control handling, request signing. Pure as well.
- ``exchange``: the I/O edge to Bitstamp (httpx client and auth, one trio-websocket connection).
- ``store``: the I/O edge to the database (SQLAlchemy Core schema, the event log, read models, engine set-up).
- ``export``: pure ledger exports (Koinly, CoinTracking, BittyTax, rotki, Bitstamp's own CSV) and the reading and
  matching of a user's Bitstamp statement; imports only ``domain`` and ``bitstamp``.
- ``fake``: the fake Bitstamp (a pure account model plus HTTP and WebSocket servers) used by tests and the demo.
- ``runtime``: the only place with nurseries: ingest, projector, backfill and reconcile tasks, wiring.
- ``cli``: argument parsing and printing only.
"""

__version__ = "0.1.0"
