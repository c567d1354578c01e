"""The exchange's refusals, translated once at the HTTP boundary (``rest.py``). Messages never carry a secret.

ExchangeError (tracker.errors)
├── ExchangeUnreachable     connect/read failure or timeout: check BITSTAMP_API_URL and the network
├── ResponseSignatureError  a 2xx response whose X-Server-Auth-Signature does not match (a missing one is counted
│                           and logged once per endpoint, not raised: see rest.py)
└── ApiError                an error body or status (``code``, ``status``); as such: validation, not found, ...
    ├── AuthError           the key or secret is wrong (API0001, 0002, 0005, 0006, 0008, 0010-0016, 0018-0021)
    │   └── ClockSkewError  API0017: our clock is outside the server's 150 s window (resync and retry once)
    ├── RateLimited         400.002, 400.067, 400.068, HTTP 429: back off (``retry_after`` seconds, if known)
    ├── ServerError         HTTP 5xx, 500.xxx, API5502, API0004: transient, retry later
    └── EndpointUnavailable this endpoint or market is not for this account or key (API5506 and the other
                            derivatives refusals, API0003, API0009, 403.xxx, HTTP 404 without a code, 410.001,
                            404.004: a trade account this key cannot reach)

Every code is judged once, here (``disposition``): what the runtime does with a failure follows from its class,
never from a string. A code nobody listed is an ``ApiError`` (refused): kept in the record, retried later, never
fatal: the real exchange is the judge we cannot reach, so an unknown answer must not stop live ingest.
"""

from __future__ import annotations

from enum import StrEnum

from tracker.errors import ExchangeError


class ExchangeUnreachable(ExchangeError):
    pass


class ApiError(ExchangeError):
    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class AuthError(ApiError):
    exit_code = 3


class ClockSkewError(AuthError):
    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None, date_header: str | None = None
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.date_header = date_header  # the server's Date, to resync our clock from


class ResponseSignatureError(ExchangeError):
    pass


class RateLimited(ApiError):
    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after


class ServerError(ApiError):
    pass


class EndpointUnavailable(ApiError):
    """This endpoint (or market) is not available to this account or key: stop asking it until restart."""


class Disposition(StrEnum):
    """What to do about a failed call (``disposition``)."""

    STOP = "stop"  # the credentials are wrong: at start-up tracker exits 3; later, the endpoint is given up
    RETRY = "retry"  # transient: retry with capped jittered back-off
    RATE_LIMITED = "rate_limited"  # back off (Retry-After when given), then retry
    UNAVAILABLE = "unavailable"  # not for this account, key or market: mark it so until restart
    REFUSED = "refused"  # the request was refused as such (validation, an unknown code): retry later, alone


# Each documented code and what it means for tracker (docs/bitstamp.md §3.4 and §5.8; the OpenAPI specification's
# error lists). Confidence: the meanings are documented; the dispositions are ours. API5502 and API5506 were seen from
# the real derivatives endpoints by public clients (issue reports); the other API55xx meanings were not captured.
API_CODES: dict[str, Disposition] = {
    "API0001": Disposition.STOP,  # API key not found
    "API0002": Disposition.STOP,  # IP address not allowed for this key
    "API0003": Disposition.UNAVAILABLE,  # the key lacks permission for this call (others may work)
    "API0004": Disposition.RETRY,  # nonce reused inside the window: a new nonce is made per request
    "API0005": Disposition.STOP,  # invalid signature (GET with a query: the other signing form is tried first)
    "API0006": Disposition.STOP,  # account frozen / key disabled
    "API0008": Disposition.STOP,  # authentication failed
    "API0009": Disposition.UNAVAILABLE,  # a verification requirement blocks this call
    "API0010": Disposition.STOP,  # invalid X-Auth-Version (a tracker bug)
    "API0011": Disposition.STOP,  # wrong API key format
    "API0012": Disposition.STOP,  # X-Auth missing (a tracker bug)
    "API0013": Disposition.STOP,  # X-Auth-Signature missing (a tracker bug)
    "API0014": Disposition.STOP,  # X-Auth-Nonce missing (a tracker bug)
    "API0015": Disposition.STOP,  # X-Auth-Timestamp missing (a tracker bug)
    "API0016": Disposition.STOP,  # X-Auth-Version missing (a tracker bug)
    "API0017": Disposition.RETRY,  # timestamp outside the 150 s window: resync from Date, retry once
    "API0018": Disposition.STOP,  # invalid timestamp
    "API0019": Disposition.STOP,  # Content-Type not accepted (a tracker bug)
    "API0020": Disposition.STOP,  # Content-Type on an empty body (a tracker bug)
    "API0021": Disposition.STOP,  # request URL too long (a tracker bug)
    "API5502": Disposition.RETRY,  # "Something went wrong, try again later" (derivatives endpoints)
    "API5504": Disposition.UNAVAILABLE,  # derivatives refusal, meaning not captured (guess: account not eligible)
    "API5506": Disposition.UNAVAILABLE,  # "Trade account does not support derivatives." (a spot-only account)
    "API5507": Disposition.UNAVAILABLE,  # derivatives refusal, meaning not captured
    "API5508": Disposition.UNAVAILABLE,  # derivatives refusal, meaning not captured
    "API5509": Disposition.UNAVAILABLE,  # derivatives refusal, meaning not captured
    "API5510": Disposition.UNAVAILABLE,  # derivatives refusal, meaning not captured
    "400.002": Disposition.RATE_LIMITED,  # request rate limit exceeded
    "400.067": Disposition.RATE_LIMITED,  # client rate limit
    "400.068": Disposition.RATE_LIMITED,  # market rate limit
    "410.001": Disposition.UNAVAILABLE,  # gone / obsolete endpoint
    # "Trade account not found for provided API key." [D: the spec's error list]: a sub-account asked for with
    # X-Auth-Subaccount-Id that this key cannot reach; that trade account's walks stop until restart, nothing else.
    "404.004": Disposition.UNAVAILABLE,
}


def disposition(code: str | None, status: int | None) -> Disposition:
    """What to do about an answer with this code and HTTP status (an error body, or an error status)."""
    if code is not None and code in API_CODES:
        return API_CODES[code]
    text = code or ""
    if status == 429:
        return Disposition.RATE_LIMITED
    if text.startswith("500.") or (status is not None and status >= 500):
        return Disposition.RETRY
    if text.startswith("403."):
        return Disposition.UNAVAILABLE
    if status == 404 and not text:
        return Disposition.UNAVAILABLE  # no such endpoint here (a 404.xxx code is a normal "not found" answer)
    if text.startswith("API55"):
        return Disposition.UNAVAILABLE  # the derivatives family: not for this account (guess, see API_CODES)
    return Disposition.REFUSED


def disposition_of(error: BaseException) -> Disposition:
    """The disposition of a failed call's exception (transport failures and bad signatures are transient)."""
    if isinstance(error, RateLimited):
        return Disposition.RATE_LIMITED
    if isinstance(error, ClockSkewError | ServerError | ExchangeUnreachable | ResponseSignatureError):
        return Disposition.RETRY
    if isinstance(error, EndpointUnavailable):
        return Disposition.UNAVAILABLE
    if isinstance(error, AuthError):
        return Disposition.STOP
    return Disposition.REFUSED


AUTH_MESSAGES: dict[str, str] = {
    "API0001": "API key not found: check BITSTAMP_API_KEY",
    "API0002": "this IP address is not allowed for the API key: add it in the key's settings on Bitstamp",
    "API0003": "the API key lacks permission for {path}: enable it in the key's settings on Bitstamp",
    "API0004": "nonce rejected as reused: retrying; if it repeats, check that only one tracker uses this key",
    "API0005": "signature rejected: check BITSTAMP_API_SECRET",
    "API0006": "the account is frozen or the API key is disabled: check the key on Bitstamp",
    "API0008": "authentication failed: check BITSTAMP_API_KEY and BITSTAMP_API_SECRET",
    "API0009": "a verification requirement blocks {path}: complete it on Bitstamp",
    "API0011": "the API key has the wrong format: check BITSTAMP_API_KEY",
    "API0017": "our clock is more than 150 s away from the exchange's: sync the system clock (NTP)",
    "API0018": "the exchange rejected our timestamp: sync the system clock (NTP)",
    "API0019": "the exchange rejected the request's Content-Type (a tracker bug: please report it)",
    "API0020": "the exchange rejected a Content-Type on an empty body (a tracker bug: please report it)",
}
