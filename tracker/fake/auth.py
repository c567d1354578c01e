"""Server side of Bitstamp v2 auth (docs/bitstamp.md §3) and WebSocket tokens (§1.5, §4). Pure: the clock is passed in.

The string to sign and the response signature are written here from the protocol description (docs/bitstamp.md §3.2,
§3.3) with plain ``hmac``/``hashlib``, never by importing the client's signing code (``tracker.bitstamp.signing``): a
bug shared by both sides would otherwise pass every test. tests/fake/test_fake_signing.py checks these functions
against a hand computation. ``host`` is the request's ``Host`` header exactly as sent (``127.0.0.1:PORT``).

How a query is signed is unsettled (§3.2): the fake checks ``"?" + query`` by default and the bare query in the
``get-query-bare`` mode (:mod:`tracker.fake.modes`); it accepts only the one form it was told.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

TIMESTAMP_WINDOW_S = 150.0
NONCE_MEMORY_S = 300.0
AUTH_VERSION: Final = "v2"
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"
QueryForm = Literal["?query", "query"]


def string_to_sign(
    *,
    api_key: str,
    method: str,
    host: str,
    path: str,
    query: str,
    content_type: str,
    nonce: str,
    timestamp: str,
    body: str,
    query_form: QueryForm = "?query",
) -> str:
    """docs/bitstamp.md §3.2: ``"BITSTAMP " + key + METHOD + host + path + query + content_type + nonce + timestamp +
    "v2" + body``, nothing between the parts. ``query`` is the raw query (no ``?``; ``""`` when none), signed with
    the ``?`` or without it as ``query_form`` says. With an empty body both content_type and body are left out."""
    signed_query = ("?" + query if query_form == "?query" else query) if query else ""
    typed = content_type if body else ""
    return "BITSTAMP " + api_key + method.upper() + host + path + signed_query + typed + nonce + timestamp + "v2" + body


def hmac_sha256_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def response_signature(*, api_secret: str, nonce: str, timestamp: str, content_type: str, body: bytes) -> str:
    """docs/bitstamp.md §3.3: HMAC-SHA256(secret, nonce + timestamp + response Content-Type + raw body), with the
    nonce and timestamp the client sent."""
    return hmac_sha256_hex(api_secret, (nonce + timestamp + content_type).encode("utf-8") + body)


def same_signature(expected: str, given: str) -> bool:
    """Constant time; hex in either case is accepted (the docs' Java sample upper-cases)."""
    return hmac.compare_digest(expected.lower().encode("ascii", "replace"), given.lower().encode("ascii", "replace"))


class AuthError(Exception):
    def __init__(self, code: str, reason: str, status: int = 403) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class Verified:
    """A request whose signature checked: the client's nonce and timestamp and the secret of the key it used (for
    the response signature), and the sub-account that key is bound to (``None``: the main key)."""

    nonce: str
    timestamp: str
    secret: str = field(repr=False)
    bound_to: str | None = None


@dataclass(slots=True)
class Authenticator:
    api_key: str
    api_secret: str
    clock: Callable[[], float]  # unix seconds
    query_form: QueryForm = "?query"  # how a query is read in the string to sign (get-query-bare: "query")
    nonces: dict[str, float] = field(default_factory=dict)
    # Sub-accounts' own keys: key -> (secret, sub-account id). A request signed with one acts for that sub-account
    # [D: the spec's "the account ... to which the used API key is bound"].
    subaccount_keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    revoked: bool = False  # the main key deleted in the account's settings (FakeExchange.revoke_key)
    # Further keys of the main account (key -> secret; FakeExchange.add_key): a key rotation's new key, say.
    more_keys: dict[str, str] = field(default_factory=dict)

    def verify(
        self, *, method: str, host: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[str, str]:
        """Check one request; returns the client's (nonce, timestamp) for the response signature."""
        checked = self.check(method=method, host=host, path=path, query=query, headers=headers, body=body)
        return checked.nonce, checked.timestamp

    def check(
        self, *, method: str, host: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> Verified:
        """Check one request (signed with the main key or a sub-account's own key).

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
        main = key == self.api_key or key in self.more_keys
        if key == self.api_key:
            secret, bound_to = self.api_secret, None
        else:
            secret, bound_to = self.subaccount_keys.get(key, (self.more_keys.get(key, ""), None))
        if (bound_to is None and not main) or (key == self.api_key and self.revoked):
            # A deleted key: as one never issued [D: the spec's API0001 "API key not found"; medium confidence that
            # the real server answers a deleted key so, it may as well answer 403 without a code].
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
            query_form=self.query_form,
        )
        if not same_signature(hmac_sha256_hex(secret, message.encode("utf-8")), headers["x-auth-signature"]):
            raise AuthError("API0005", "Invalid signature.")
        self._forget(now)
        if nonce in self.nonces:
            raise AuthError("API0004", "Invalid nonce.")
        self.nonces[nonce] = now
        return Verified(nonce, timestamp, secret, bound_to)

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
