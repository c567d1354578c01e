"""Bitstamp HTTP API v2 signing as an ``httpx.Auth`` (docs/bitstamp.md §3), and the response signature check.

The clock (unix milliseconds) and the nonce factory are injected, so tests compute signatures independently and the
client can shift the clock after an API0017 (``clock_offset_ms``). The string to sign comes from
``tracker.bitstamp.signing``; this module only maps an ``httpx.Request`` onto it:

- host is the URL's ``host[:port]`` (what the ``Host`` header carries; plain ``www.bitstamp.net`` in production);
- path is the raw path, the query is signed as ``?query`` when present (``query_form``: the client may switch it);
- with an empty body there is no ``Content-Type`` header and neither content type nor body is in the string
  (a Content-Type on an empty body is API0020 on the real server).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator
from email.utils import parsedate_to_datetime
from typing import Final

import httpx

from tracker.bitstamp.signing import (
    FORM_CONTENT_TYPE,
    QUERY_WITH_MARK,
    QueryForm,
    response_signature,
    sign_request,
    signatures_equal,
)
from tracker.exchange.errors import ResponseSignatureError

SIGNED: Final = "tracker.signed"  # request extension: (nonce, timestamp) of a signed request, for the response check

ClockMs = Callable[[], int]
NonceFactory = Callable[[], str]


def uuid4_nonce() -> str:
    return str(uuid.uuid4())


class BitstampAuth(httpx.Auth):
    """Signs every request and leaves the (nonce, timestamp) used on the request (``SIGNED``): the client checks the
    response's ``X-Server-Auth-Signature`` after it has read the body for an error (``check_response``)."""

    requires_request_body = True
    requires_response_body = True

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        clock: ClockMs,
        nonce: NonceFactory = uuid4_nonce,
        verify_response: bool = True,
    ) -> None:
        self._api_key = api_key
        self._api_secret = api_secret
        self._clock = clock
        self._nonce = nonce
        self.verify_response = verify_response
        self.clock_offset_ms = 0  # added to the clock; set from the server's Date header after API0017
        self.query_form: QueryForm = QUERY_WITH_MARK  # how a GET's query is signed (see tracker.bitstamp.signing)

    def __repr__(self) -> str:
        return "BitstampAuth(api_key='***')"

    def timestamp_ms(self) -> int:
        return self._clock() + self.clock_offset_ms

    def resync_from_date_header(self, date_header: str | None) -> bool:
        """Align our timestamps with the server's ``Date`` header (1 s resolution is well inside the 150 s window)."""
        if not date_header:
            return False
        try:
            server_ms = int(parsedate_to_datetime(date_header).timestamp() * 1000)
        except (TypeError, ValueError, IndexError):
            return False
        self.clock_offset_ms = server_ms - self._clock()
        return True

    def sign(self, request: httpx.Request) -> tuple[str, str]:
        """Add the auth headers to ``request``; returns the (nonce, timestamp) used, for the response check."""
        body = request.content.decode("utf-8") if request.content else ""
        if not body:
            request.headers.pop("Content-Type", None)
        else:
            request.headers["Content-Type"] = FORM_CONTENT_TYPE
        signed = sign_request(
            api_key=self._api_key,
            api_secret=self._api_secret,
            method=request.method,
            host=request.url.netloc.decode("ascii"),
            path=request.url.path,
            query=request.url.query.decode("ascii"),
            body=body,
            nonce=self._nonce(),
            timestamp_ms=self.timestamp_ms(),
            query_form=self.query_form,
        )
        request.headers.update(signed.as_dict())
        request.extensions[SIGNED] = (signed.nonce, signed.timestamp)
        return signed.nonce, signed.timestamp

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign(request)
        yield request

    def check_response(self, response: httpx.Response) -> bool | None:
        """True when the response carries a signature that matches; False when it carries none (the caller counts
        and logs that); ``ResponseSignatureError`` when it carries a wrong one; None for an unsigned request (or with
        the check switched off)."""
        if not self.verify_response or SIGNED not in response.request.extensions:
            return None
        nonce, timestamp = response.request.extensions[SIGNED]
        got = response.headers.get("X-Server-Auth-Signature")
        if got is None:
            return False
        expected = response_signature(
            api_secret=self._api_secret,
            nonce=nonce,
            timestamp=timestamp,
            content_type=response.headers.get("Content-Type", ""),
            body=response.content,
        )
        if not signatures_equal(got, expected):
            raise ResponseSignatureError(
                f"the response signature from {response.request.url.path} does not match: the response was altered "
                "or BITSTAMP_API_URL does not point at Bitstamp"
            )
        return True
