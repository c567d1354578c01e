"""PostgreSQL: the append as one server-side function, so the write lock is held only inside the server.

Revision ID: 0008_pg_append_function
Revises: 0007_trade_account_everywhere
Create Date: 2026-12-06

``tracker_append(...)`` does on the server what ``EventLog.append`` did from the client in three round trips (lock and
look up, COPY, COMMIT): take ``LOCK TABLE event_log IN EXCLUSIVE MODE``, read the head, sort the batch into new rows
and duplicates (same ``dedup_key``, same payload, stored or earlier in the batch), number the new rows from the head,
hash each onto the previous one and insert them. Called as one statement in autocommit, the lock is taken, the rows
are written and the transaction commits (fsync included) without a single wait for the client: the lock is held
for the server's own work, never for a client process waiting for a core (docs/storage.md, "Many accounts").

The hash is the same ``sha256(prev_hash + canonical(row))`` as ``tracker.domain.chain.link_hash``: the client sends
each row's canonical JSON *without* its seq (``p_tail``: everything after the opening ``[``), and the server puts
``[`` + seq + ``,`` in front. The bytes are those of the UTF-8 text, so the function refuses a database whose
encoding is not UTF8 (the client then appends the old way, hashing itself). It returns, besides the new rows' seqs,
their positions in the batch and the hash they were linked onto (``base_hash``): the client recomputes the chain from
it with its own encoding and must reach the same head hash (``EventLog._check_links``); ``tracker verify``
recomputes every row in Python.

A batch with a *conflict* (a stored or earlier ``dedup_key`` with a different payload) is refused with SQLSTATE
``TK001`` before anything is written: the client appends that batch the old way, which quarantines the conflict with
both payloads. SQLite has no such function; nothing changes there.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008_pg_append_function"
down_revision: str | None = "0007_trade_account_everywhere"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each new row: the statement numbers it (head + 1, ...) in batch order and links it to the one before. In READ
# COMMITTED every statement of a VOLATILE function takes a fresh snapshot, so the head read after the LOCK sees the
# previous appender's commit (as the client's head query did). The batch goes in as one array per column; the
# classification joins the stored keys once (the unique dedup index), and the INSERT takes the batch's arrays again
# with ordinality, joined to the new rows' numbers: no per-row subscript of a text array (which is a scan).
FUNCTION = """
CREATE FUNCTION tracker_append(
    p_account text[], p_source text[], p_channel text[], p_event text[], p_market text[], p_order_id text[],
    p_trade_id text[], p_position_id text[], p_event_id text[], p_pre_event_id text[], p_exchange_ts_us bigint[],
    p_received_at timestamptz[], p_connection_id text[], p_payload text[], p_dedup_key text[], p_tail text[],
    OUT appended bigint[], OUT positions integer[], OUT duplicates integer, OUT base_hash text, OUT head_seq bigint,
    OUT head_hash text
) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    row_ record;
    link text;
    prevs text[] := '{}';
    links text[] := '{}';
BEGIN
    IF current_setting('server_encoding') <> 'UTF8' THEN
        RAISE EXCEPTION 'tracker_append needs a UTF8 database (this one is %)', current_setting('server_encoding')
            USING ERRCODE = 'TK002';
    END IF;
    LOCK TABLE event_log IN EXCLUSIVE MODE;
    SELECT e.seq, e.hash INTO head_seq, head_hash FROM event_log e ORDER BY e.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        head_seq := 0;
        head_hash := repeat('0', 64);
    END IF;
    base_hash := head_hash;
    positions := '{}';
    appended := '{}';
    duplicates := 0;
    FOR row_ IN
        SELECT b.ord::integer AS ord, b.tail, b.payload, s.seq AS stored_seq, s.payload AS stored_payload,
               first_value(b.ord) OVER same_key AS first_ord, first_value(b.payload) OVER same_key AS first_payload
        FROM unnest(p_dedup_key, p_payload, p_tail) WITH ORDINALITY AS b(dedup_key, payload, tail, ord)
        LEFT JOIN event_log s ON s.dedup_key = b.dedup_key
        WINDOW same_key AS (PARTITION BY b.dedup_key ORDER BY b.ord)
        ORDER BY b.ord
    LOOP
        IF row_.stored_seq IS NOT NULL OR row_.first_ord <> row_.ord THEN
            IF row_.payload IS DISTINCT FROM coalesce(row_.stored_payload, row_.first_payload) THEN
                RAISE EXCEPTION 'dedup_key conflict in the batch' USING ERRCODE = 'TK001';
            END IF;
            duplicates := duplicates + 1;
            CONTINUE;
        END IF;
        head_seq := head_seq + 1;
        link := encode(sha256(convert_to(head_hash || '[' || head_seq::text || ',' || row_.tail, 'UTF8')), 'hex');
        positions := positions || row_.ord;
        appended := appended || head_seq;
        prevs := prevs || head_hash;
        links := links || link;
        head_hash := link;
    END LOOP;
    IF cardinality(positions) > 0 THEN
        INSERT INTO event_log (
            seq, account, source, channel, event, market, order_id, trade_id, position_id, event_id, pre_event_id,
            exchange_ts_us, received_at, connection_id, payload, dedup_key, prev_hash, hash
        )
        SELECT n.seq, b.account, b.source, b.channel, b.event, b.market, b.order_id, b.trade_id, b.position_id,
               b.event_id, b.pre_event_id, b.exchange_ts_us, b.received_at, b.connection_id, b.payload, b.dedup_key,
               n.prev_hash, n.hash
        FROM unnest(positions, appended, prevs, links) AS n(ord, seq, prev_hash, hash)
        JOIN unnest(
            p_account, p_source, p_channel, p_event, p_market, p_order_id, p_trade_id, p_position_id, p_event_id,
            p_pre_event_id, p_exchange_ts_us, p_received_at, p_connection_id, p_payload, p_dedup_key
        ) WITH ORDINALITY AS b(
            account, source, channel, event, market, order_id, trade_id, position_id, event_id, pre_event_id,
            exchange_ts_us, received_at, connection_id, payload, dedup_key, ord
        ) ON b.ord = n.ord
        ORDER BY n.seq;
    END IF;
END
$fn$
"""
SIGNATURE = (
    "tracker_append(text[], text[], text[], text[], text[], text[], text[], text[], text[], text[], bigint[],"
    " timestamptz[], text[], text[], text[], text[])"
)


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION " + SIGNATURE)
