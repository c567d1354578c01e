"""Alembic environment, shared by the plain ``alembic`` CLI and ``tracker db`` (``tracker/store/migrate.py``).

A caller may inject an open connection as ``config.attributes["connection"]`` (Alembic cookbook: "Sharing a
Connection across one or more programmatic migration commands"); otherwise the URL is ``sqlalchemy.url`` from
alembic.ini, else ``TRACKER_DB_URL``, else ``sqlite:///tracker.db``. SQLite migrations render as batch operations
(SQLite cannot ALTER most things in place).
"""

from __future__ import annotations

import logging.config
import os

from alembic import context
from sqlalchemy.engine import Connection

from tracker.config import DEFAULT_DB_URL
from tracker.store.engine import open_engine, writer
from tracker.store.schema import include_object_for, load_all_tables

config = context.config
target_metadata = load_all_tables()
if config.config_file_name is not None and config.attributes.get("connection") is None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or os.environ.get("TRACKER_DB_URL") or DEFAULT_DB_URL


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=database_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object_for(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    engine = open_engine(database_url())
    try:
        with writer(engine).connect() as connection:
            run_with(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
