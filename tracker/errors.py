"""The user-facing error tree. Every message is one line that says what went wrong and what to do.

    TrackerError                 anything the CLI prints as ``tracker: error: <message>`` and exits with ``exit_code``
    ├── ConfigError              bad or missing configuration (config.py)
    ├── StoreError               database unreachable, not migrated, not writable (store/)
    └── ExchangeError            the exchange refused or could not be reached (exchange/)

Lower layers raise these with ``raise ... from exc`` at their boundary; the CLI prints ``str(exc)`` and nothing more,
so messages must never contain secrets.
"""

from __future__ import annotations


class TrackerError(Exception):
    exit_code = 2


class StoreError(TrackerError):
    pass


class ExchangeError(TrackerError):
    pass


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions in ``error``, exception groups flattened (trio's nurseries wrap what their tasks raise)."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]
