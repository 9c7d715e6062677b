-- Lineage: one row per Kafka event the recorder saw. Times are milliseconds
-- since the Unix epoch, ids are hyphenated UUID strings, so the same DDL
-- serves SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    event_type TEXT NULL,
    event_version BIGINT NULL,
    correlation_id TEXT NOT NULL,
    causation_id TEXT NULL,
    source_service TEXT NULL,
    topic TEXT NOT NULL,
    partition_id BIGINT NOT NULL,
    record_offset BIGINT NOT NULL,
    record_key TEXT NULL,
    trace_id TEXT NULL,
    span_id TEXT NULL,
    occurred_at_ms BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS events_correlation ON events (correlation_id, occurred_at_ms);
CREATE INDEX IF NOT EXISTS events_causation ON events (causation_id);
CREATE INDEX IF NOT EXISTS events_key ON events (record_key, occurred_at_ms);
CREATE UNIQUE INDEX IF NOT EXISTS events_position ON events (topic, partition_id, record_offset);

-- Receipts: one row per message a consumer handled (DESIGN section 5), keyed
-- by the receipt record's own id so that re-reading the receipts topic is
-- harmless. No CHECK on outcome: rows come from other processes and one
-- unexpected value must not block the recorder.
CREATE TABLE IF NOT EXISTS receipts (
    receipt_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    consumer_group TEXT NOT NULL,
    service TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition_id BIGINT NOT NULL,
    record_offset BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    error_type TEXT NULL,
    error_message TEXT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    trace_id TEXT NULL,
    span_id TEXT NULL,
    handled_at_ms BIGINT NOT NULL,
    correlation_id TEXT NULL
);

CREATE INDEX IF NOT EXISTS receipts_event ON receipts (event_id);
CREATE INDEX IF NOT EXISTS receipts_correlation ON receipts (correlation_id);

-- The DLQ ledger: one row per dead letter, keyed by a deterministic id the
-- caller computes from the DLQ record. Key and payload are the original
-- bytes: BYTEA in PostgreSQL, and SQLite keeps a blob as is in any column.
-- headers_json is the original headers as a JSON array of [name, base64 or
-- null], stored verbatim.
CREATE TABLE IF NOT EXISTS dead_letters (
    dlq_id TEXT PRIMARY KEY,
    dlq_topic TEXT NOT NULL,
    dlq_partition BIGINT NOT NULL,
    dlq_offset BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    correlation_id TEXT NULL,
    event_type TEXT NULL,
    source_topic TEXT NOT NULL,
    source_partition BIGINT NULL,
    source_offset BIGINT NULL,
    source_timestamp_ms BIGINT NULL,
    consumer_group TEXT NULL,
    service TEXT NULL,
    error_type TEXT NULL,
    error_message TEXT NULL,
    attempts BIGINT NULL,
    failed_at_ms BIGINT NOT NULL,
    record_key BYTEA NULL,
    payload BYTEA NULL,
    headers_json TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    status_changed_at_ms BIGINT NULL,
    status_by TEXT NULL,
    status_reason TEXT NULL,
    replay_count BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX IF NOT EXISTS dead_letters_status_topic ON dead_letters (status, source_topic);
CREATE INDEX IF NOT EXISTS dead_letters_error_type ON dead_letters (error_type);
CREATE INDEX IF NOT EXISTS dead_letters_correlation ON dead_letters (correlation_id);
CREATE INDEX IF NOT EXISTS dead_letters_event ON dead_letters (event_id);
CREATE INDEX IF NOT EXISTS dead_letters_failed_at ON dead_letters (failed_at_ms);
