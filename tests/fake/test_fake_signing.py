"""The fake's request and response signatures against a hand computation of docs/bitstamp.md §3.2-§3.3, and proof that
the fake does not borrow the client's signing code (a bug shared by both sides would pass every other test).

Pure: no sockets, no clock.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
from pathlib import Path

import pytest

import tracker.fake
from tracker.fake.auth import (
    Authenticator,
    AuthError,
    hmac_sha256_hex,
    response_signature,
    same_signature,
    string_to_sign,
)

KEY = "abcdefghijklmnopqrstuvwxyz012345"
SECRET = "SECRETsecretSECRETsecret01234567"
NONCE = "f93c979d-b00d-43a9-9b9c-ef4434e1e5b3"
TS = "1790000000123"
HOST = "www.bitstamp.net"


def by_hand(message: str) -> str:
    return hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()


def test_docs_example_empty_body_and_query() -> None:
    """The docs' example: ``POST websockets_token/``, no query, no body, so no Content-Type in the string."""
    text = string_to_sign(
        api_key=KEY,
        method="post",
        host=HOST,
        path="/api/v2/websockets_token/",
        query="",
        content_type="application/x-www-form-urlencoded",  # left out: the body is empty
        nonce=NONCE,
        timestamp=TS,
        body="",
    )
    literal = (
        "BITSTAMP abcdefghijklmnopqrstuvwxyz012345POSTwww.bitstamp.net/api/v2/websockets_token/"
        "f93c979d-b00d-43a9-9b9c-ef4434e1e5b31790000000123v2"
    )
    assert text == literal
    assert hmac_sha256_hex(SECRET, text.encode()) == by_hand(literal)


def test_body_and_both_query_forms() -> None:
    body = "limit=5&sort=asc"
    with_body = string_to_sign(
        api_key=KEY,
        method="POST",
        host=HOST,
        path="/api/v2/user_transactions/",
        query="",
        content_type="application/x-www-form-urlencoded",
        nonce=NONCE,
        timestamp=TS,
        body=body,
    )
    assert with_body == (
        f"BITSTAMP {KEY}POST{HOST}/api/v2/user_transactions/application/x-www-form-urlencoded{NONCE}{TS}v2{body}"
    )
    common = {"api_key": KEY, "method": "GET", "host": HOST, "path": "/api/v2/trade_history/", "content_type": ""}
    marked = string_to_sign(**common, query="limit=1&sort=asc", nonce=NONCE, timestamp=TS, body="")
    bare = string_to_sign(**common, query="limit=1&sort=asc", nonce=NONCE, timestamp=TS, body="", query_form="query")
    assert marked == f"BITSTAMP {KEY}GET{HOST}/api/v2/trade_history/?limit=1&sort=asc{NONCE}{TS}v2"
    assert bare == f"BITSTAMP {KEY}GET{HOST}/api/v2/trade_history/limit=1&sort=asc{NONCE}{TS}v2"


def test_response_signature_by_hand() -> None:
    body = b'{"token":"x","valid_sec":60,"user_id":1}'
    sig = response_signature(api_secret=SECRET, nonce=NONCE, timestamp=TS, content_type="application/json", body=body)
    expected = hmac.new(SECRET.encode(), (NONCE + TS + "application/json").encode() + body, hashlib.sha256)
    assert sig == expected.hexdigest()
    assert same_signature(sig, sig.upper()) and not same_signature(sig, "0" * 64)


def verify_get(auth: Authenticator, headers: dict[str, str]) -> tuple[str, str]:
    return auth.verify(
        method="GET", host=HOST, path="/api/v2/trade_history/", query="limit=1", headers=headers, body=b""
    )


@pytest.mark.parametrize("form", ["?query", "query"])
def test_authenticator_accepts_only_its_query_form(form: str) -> None:
    """A GET with a query signed in each form: the authenticator accepts the form it was given, refuses the other
    with API0005."""
    auth = Authenticator(KEY, SECRET, lambda: int(TS) / 1000, query_form="query" if form == "query" else "?query")
    for signed_as, accepted in (("?limit=1", form == "?query"), ("limit=1", form == "query")):
        nonce = f"{NONCE[:-1]}{int(accepted)}{len(signed_as)}"
        message = f"BITSTAMP {KEY}GET{HOST}/api/v2/trade_history/{signed_as}{nonce}{TS}v2"
        headers = {
            "x-auth": f"BITSTAMP {KEY}",
            "x-auth-signature": by_hand(message),
            "x-auth-nonce": nonce,
            "x-auth-timestamp": TS,
            "x-auth-version": "v2",
        }
        if accepted:
            assert verify_get(auth, headers) == (nonce, TS)
        else:
            with pytest.raises(AuthError) as info:
                verify_get(auth, headers)
            assert info.value.code == "API0005"


def test_the_fake_does_not_import_the_clients_signing() -> None:
    """No module of tracker.fake imports tracker.bitstamp.signing (nor tracker.exchange.auth, which wraps it)."""
    banned = {"tracker.bitstamp.signing", "tracker.exchange.auth", "tracker.exchange"}
    for path in Path(tracker.fake.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            assert not banned & set(names), f"{path.name} imports {banned & set(names)}"
