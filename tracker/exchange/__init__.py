"""I/O edge to Bitstamp: the httpx REST client and one trio-websocket connection."""
