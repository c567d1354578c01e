"""Runtime state: what a running ``tracker run`` says about itself that is not a fact for the log.

``accounts_down``: the accounts of the config file (``[[accounts]]``) that a running process has given up as down,
one row per account and process, each with why, since when and when it is tried next; once one is tracked again,
its row says since when (``back_at``) until it goes down again or the process stops.

``task_failures``: the tasks beside ingest (the projector, the recovery task, the metrics) that a running process
started again after a bug (``tracker/runtime/supervise.py``), one row per task, account and process: how often, the
first and the last failure, the last one's error, when it was started again.

The process rewrites its own rows at every change and deletes them at its stop; ``tracker status`` trusts a row only
while its process still holds its lock (``tracker/store/accounts_down.py`` says why these are tables and not log
entries). Not the log: rows are updated and deleted, nothing is hash-chained, and ``db copy``, ``verify``,
``rebuild`` and the audit never read them.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table, Text

from tracker.store.schema import UtcDateTime, metadata

accounts_down = Table(
    "accounts_down",
    metadata,
    Column("process", String(64), primary_key=True, comment="the writing process's token (one per tracker run)"),
    Column("place", Integer, primary_key=True, autoincrement=False, comment="its place in [[accounts]], from 1"),
    Column("pid", Integer, nullable=False),
    Column("user_id", String(64), comment="the Bitstamp account it tracked last; NULL: its key never said"),
    Column("reason", Text, nullable=False, comment="why, as the process logged it"),
    Column("since", UtcDateTime, nullable=False, comment="the first failure of this spell down"),
    Column("failures", Integer, nullable=False, comment="its failures in this process"),
    Column("retry_at", UtcDateTime, comment="when it is tried next; NULL: not known yet"),
    Column("back_at", UtcDateTime, comment="when it was tracked again; NULL while it is down"),
    Column("updated_at", UtcDateTime, nullable=False),
)

task_failures = Table(
    "task_failures",
    metadata,
    Column("process", String(64), primary_key=True, comment="the writing process's token (one per tracker run)"),
    Column("account", String(64), primary_key=True, comment="the Bitstamp account (user id); '' for the process's own"),
    Column("task", String(64), primary_key=True, comment="projector_task, recovery_task, metrics_task, ..."),
    Column("pid", Integer, nullable=False),
    Column("failures", Integer, nullable=False, comment="its failures in this process"),
    Column("first_at", UtcDateTime, nullable=False, comment="the first failure in this process"),
    Column("last_at", UtcDateTime, nullable=False, comment="the last failure"),
    Column("error", Text, nullable=False, comment="the last failure's exception: its type and first line"),
    Column("restart_at", UtcDateTime, nullable=False, comment="when it was (or is) started again after the last one"),
    Column("updated_at", UtcDateTime, nullable=False),
)
"""The tasks beside ingest a running ``tracker run`` started again after a bug, for ``tracker status``
(``tracker/store/task_failures.py``)."""
