"""Server side of Bitstamp v2 auth (docs/bitstamp.md §3) and WebSocket tokens (§1.5, §4). Pure: the clock is passed in.

The string to sign is built by :func:`tracker.bitstamp.signing.string_to_sign`, the very function the client uses;
the fake never re-implements it. ``host`` is the request's ``Host`` header exactly as sent (``127.0.0.1:PORT``).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tracker.bitstamp.signing import AUTH_VERSION, FORM_CONTENT_TYPE, hmac_hex, signatures_equal, string_to_sign

TIMESTAMP_WINDOW_S = 150.0
NONCE_MEMORY_S = 300.0


class AuthError(Exception):
    def __init__(self, code: str, reason: str, status: int = 403) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.status = status


@dataclass(slots=True)
class Authenticator:
    api_key: str
    api_secret: str
    clock: Callable[[], float]  # unix seconds
    nonces: dict[str, float] = field(default_factory=dict)

    def verify(
        self, *, method: str, host: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[str, str]:
        """Check one request; returns the client's (nonce, timestamp) for the response signature.

        ``headers`` has lowercase names. Raises :class:`AuthError` with the code the real server gives.
        """
        for name, code in (
            ("x-auth", "API0012"),
            ("x-auth-signature", "API0013"),
            ("x-auth-nonce", "API0014"),
            ("x-auth-timestamp", "API0015"),
            ("x-auth-version", "API0016"),
        ):
            if not headers.get(name):
                raise AuthError(code, f"Missing {name.upper()} header.")
        if headers["x-auth-version"] != AUTH_VERSION:
            raise AuthError("API0010", "Invalid version.")
        prefix, _, key = headers["x-auth"].partition(" ")
        if prefix != "BITSTAMP" or not key:
            raise AuthError("API0011", "Invalid API key format.")
        if key != self.api_key:
            raise AuthError("API0001", "API key not found.")
        content_type = headers.get("content-type", "")
        if not body and content_type:
            raise AuthError("API0020", "Content-Type header should not be present.")
        if body and content_type.split(";")[0].strip() != FORM_CONTENT_TYPE:
            raise AuthError("API0019", "Content-Type header is not accepted.")
        timestamp = headers["x-auth-timestamp"]
        if not timestamp.isdigit():
            raise AuthError("API0018", "Invalid timestamp.")
        now = self.clock()
        if abs(int(timestamp) / 1000 - now) > TIMESTAMP_WINDOW_S:
            raise AuthError("API0017", "Timestamp is too old.")
        nonce = headers["x-auth-nonce"]
        message = string_to_sign(
            api_key=key,
            method=method,
            host=host,
            path=path,
            query=query,
            content_type=content_type,
            nonce=nonce,
            timestamp=timestamp,
            body=body.decode("utf-8", "replace"),
        )
        if not signatures_equal(hmac_hex(self.api_secret, message), headers["x-auth-signature"]):
            raise AuthError("API0005", "Invalid signature.")
        self._forget(now)
        if nonce in self.nonces:
            raise AuthError("API0004", "Invalid nonce.")
        self.nonces[nonce] = now
        return nonce, timestamp

    def _forget(self, now: float) -> None:
        if len(self.nonces) > 10_000:
            self.nonces = {n: t for n, t in self.nonces.items() if now - t < NONCE_MEMORY_S}


@dataclass(slots=True)
class Token:
    value: str
    issued: float
    ttl: float
    invalidated: bool = False


@dataclass(slots=True)
class TokenStore:
    """WebSocket auth tokens: valid for ``ttl`` seconds from issue, reusable, invalidated on forced reconnects."""

    clock: Callable[[], float]
    ttl: float = 60.0
    rng: random.Random = field(default_factory=lambda: random.Random(0x70CE))
    tokens: dict[str, Token] = field(default_factory=dict)

    def issue(self) -> Token:
        value = "".join(self.rng.choices(string.ascii_letters + string.digits, k=32))
        token = Token(value, self.clock(), self.ttl)
        self.tokens[value] = token
        return token

    def valid(self, value: object) -> bool:
        token = self.tokens.get(value) if isinstance(value, str) else None
        return token is not None and not token.invalidated and self.clock() - token.issued <= token.ttl

    def invalidate_all(self) -> None:
        for token in self.tokens.values():
            token.invalidated = True
