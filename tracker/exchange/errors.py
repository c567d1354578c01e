"""The exchange's refusals, translated once at the HTTP boundary (``rest.py``). Messages never carry a secret.

ExchangeError (tracker.errors)
├── ExchangeUnreachable     connect/read failure or timeout: check BITSTAMP_API_URL and the network
├── ResponseSignatureError  a 2xx response whose X-Server-Auth-Signature is missing or wrong
└── ApiError                an error body or status (``code``, ``status``); as such: validation, not found, ...
    ├── AuthError           API0001-API0016, API0018-API0021: the key, secret or permissions are wrong
    │   └── ClockSkewError  API0017: our clock is outside the server's 150 s window (resync and retry once)
    ├── RateLimited         400.002, 400.067, 400.068, HTTP 429: back off (``retry_after`` seconds, if known)
    └── ServerError         HTTP 5xx or 500.xxx: transient, retry later
"""

from __future__ import annotations

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
    pass


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


AUTH_MESSAGES: dict[str, str] = {
    "API0001": "API key not found: check BITSTAMP_API_KEY",
    "API0002": "this IP address is not allowed for the API key: add it in the key's settings on Bitstamp",
    "API0003": "the API key lacks permission for {path}: enable it in the key's settings on Bitstamp",
    "API0004": "nonce rejected as reused: retry; if it repeats, check that only one tracker uses this key",
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
RATE_LIMIT_CODES = frozenset({"400.002", "400.067", "400.068"})
