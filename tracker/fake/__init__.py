"""A faithful fake Bitstamp (HTTP API v2 + WebSocket API v2 on loopback) for tests and the demo."""
