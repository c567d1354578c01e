"""Logging set-up: one line per state change, ``--verbose`` for frames, ``--log-format json``, secrets redacted.

Redaction is a last line of defence: code never logs a secret on purpose. Values registered with ``redact()`` (the API
key, the secret, every websocket token) are replaced by ``***`` in every record that reaches a handler.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from urllib.parse import urlsplit

_lock = threading.Lock()
_secrets: set[str] = set()


def redact(value: str | None) -> None:
    """Register a value that must never appear in a log line."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def hide_password(url: str) -> str:
    """``postgresql://u:pw@h/db`` -> ``postgresql://u:***@h/db``: URLs are printed, passwords never."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(a URL that cannot be shown)"
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def scrub(text: str) -> str:
    with _lock:
        secrets = tuple(_secrets)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now, scrubbed, so the formatter never prints the raw one.
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        record.msg = scrub(message)
        record.args = None
        return True


# Which of the process's accounts a line is about (``tracker run`` with several accounts: their position in the config
# file's ``[[accounts]]``, from 1). Tasks and threads started under ``account_context`` inherit it (trio copies the
# context into each task it starts and each ``to_thread`` call). The label is read (``str``) at each line: an account
# whose place changes while it runs (a config reload moved it) is named by its new place from then on.
_ACCOUNT: ContextVar[object | None] = ContextVar("tracker_account", default=None)


@contextmanager
def account_context(label: object) -> Iterator[None]:
    """Log lines written in this block, and by the tasks and threads it starts, carry ``account=<str(label)>``."""
    token = _ACCOUNT.set(label)
    try:
        yield
    finally:
        _ACCOUNT.reset(token)


class AccountFilter(logging.Filter):
    """Adds ``account`` to a record's fields inside ``account_context`` (text: `` account=2`` at the end; JSON: a
    key)."""

    def filter(self, record: logging.LogRecord) -> bool:
        label = _ACCOUNT.get()
        if label is not None:
            record.fields = {**getattr(record, "fields", {}), "account": str(label)}
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in getattr(record, "fields", {}).items():
            data[key] = value
        if record.exc_text:
            data["exc"] = record.exc_text
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


def _scrubbing_excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """An uncaught exception's traceback goes through the same redaction as log lines (its messages may carry a
    registered value)."""
    sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))
    sys.stderr.flush()


def setup_logging(*, verbose: bool = False, fmt: str = "text", stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.addFilter(RedactingFilter())
    handler.addFilter(AccountFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("tracker")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    sys.excepthook = _scrubbing_excepthook
