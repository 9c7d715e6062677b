-- The event store (issue 14): streams of events under optimistic
-- concurrency, one global order that catch-up subscriptions follow, the
-- transactional outbox and the subscriptions' checkpoints. Times are
-- milliseconds since the Unix epoch, ids hyphenated UUID strings, payloads
-- JSON text.
--
-- The events table differs per backend in two columns, so it is written
-- twice, each statement tagged with the backend it runs on (see the module
-- comment of src/migrate.rs):
--   global_position  SQLite: the rowid (AUTOINCREMENT, never reused), taken
--                    inside the file's single write lock, so positions
--                    commit in order. PostgreSQL: an identity column, whose
--                    values commit in any order (the gap problem).
--   tx_id            PostgreSQL: the id of the writing transaction, which
--                    read_all orders by and compares with the oldest
--                    transaction still running (src/event_store.rs says
--                    why). SQLite: always 0.
-- backend: sqlite
CREATE TABLE IF NOT EXISTS event_store_events (
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_id BIGINT NOT NULL DEFAULT 0,
    stream_id TEXT NOT NULL,
    stream_version BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_version BIGINT NOT NULL,
    payload TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    causation_id TEXT NULL,
    traceparent TEXT NULL,
    recorded_at_ms BIGINT NOT NULL
);

-- backend: postgres
-- pg_current_xact_id() is an xid8 (64 bits, never wraps); sqlx's Any driver
-- cannot decode xid8, so it is kept as BIGINT through its text form.
CREATE TABLE IF NOT EXISTS event_store_events (
    global_position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text)::bigint,
    stream_id TEXT NOT NULL,
    stream_version BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_version BIGINT NOT NULL,
    payload TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    causation_id TEXT NULL,
    traceparent TEXT NULL,
    recorded_at_ms BIGINT NOT NULL
);

-- The arbiter of optimistic concurrency: of two writers appending the same
-- version to one stream, the second fails here (PostgreSQL makes it wait
-- for the first to commit or roll back). The store maps this violation to a
-- conflict by the index's name, so keep the name.
CREATE UNIQUE INDEX IF NOT EXISTS event_store_events_stream_version
    ON event_store_events (stream_id, stream_version);

CREATE UNIQUE INDEX IF NOT EXISTS event_store_events_event_id
    ON event_store_events (event_id);

-- read_all's order and cursor.
CREATE INDEX IF NOT EXISTS event_store_events_global
    ON event_store_events (tx_id, global_position);

-- The transactional outbox: one row per event to publish, written in the
-- transaction that appended the event, keyed by the event's position (so
-- no sequence of its own). The relay reads pending rows joined with their
-- events and marks them sent after the broker acknowledged them.
CREATE TABLE IF NOT EXISTS event_store_outbox (
    global_position BIGINT PRIMARY KEY REFERENCES event_store_events (global_position),
    stream_id TEXT NOT NULL,
    stream_version BIGINT NOT NULL,
    topic TEXT NOT NULL,
    record_key TEXT NULL,
    created_at_ms BIGINT NOT NULL,
    sent_at_ms BIGINT NULL
);

-- Pending rows only: sent rows leave the index.
CREATE INDEX IF NOT EXISTS event_store_outbox_pending
    ON event_store_outbox (global_position) WHERE sent_at_ms IS NULL;

-- Where each catch-up subscription is: the cursor of the last event its
-- handler finished.
CREATE TABLE IF NOT EXISTS event_store_checkpoints (
    name TEXT PRIMARY KEY,
    tx_id BIGINT NOT NULL,
    global_position BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
