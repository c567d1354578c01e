"""Sans-IO Bitstamp protocol: wire shapes, parsing, channel names, control events, signing."""
