"""Reading a database URL by SQLAlchemy's own rules (the configuration checks it with these, before connecting)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class BadUrl(ValueError):
    """Not a database URL (``reason`` says which part); the message never holds the URL (it may hold a password)."""


@dataclass(frozen=True, slots=True)
class DbUrl:
    drivername: str
    backend: str
    has_credentials: bool
    host: str | None
    port: int | None
    has_query: bool


def parse_db_url(url: str) -> DbUrl:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BadUrl("not a database URL") from None
    except ValueError:  # SQLAlchemy parses the port with int()
        raise BadUrl("a port that is not a number") from None
    return DbUrl(
        parsed.drivername,
        parsed.get_backend_name(),
        bool(parsed.username or parsed.password),
        parsed.host,
        parsed.port,
        bool(parsed.query),
    )
