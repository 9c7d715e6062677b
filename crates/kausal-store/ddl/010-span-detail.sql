-- A span's detail in compact form (docs/benchmarks.md, "Span detail as
-- received"): its attributes, events and links as the OTLP protobuf of a
-- `Span` message that holds only those three fields, and its resource
-- once per distinct resource instead of once per span. Rows written before
-- this migration keep their JSON columns and no detail; readers take
-- either, and retention drains the old form. New rows write '' into the
-- JSON columns (they stay NOT NULL: relaxing that would rebuild the table
-- on SQLite, which is a long stop on a large store).
-- backend: sqlite
ALTER TABLE spans ADD COLUMN detail BLOB NULL;
-- backend: postgres
ALTER TABLE spans ADD COLUMN detail BYTEA NULL;

ALTER TABLE spans ADD COLUMN resource_id TEXT NULL;

-- One row per distinct resource (an OTLP `Resource` message, protobuf),
-- keyed by a digest of its bytes; received_at_ms is when a span last named
-- it, so retention removes a resource only once every span naming it is
-- older than the cut-off.
-- backend: sqlite
CREATE TABLE IF NOT EXISTS span_resources (
    resource_id TEXT PRIMARY KEY,
    resource BLOB NOT NULL,
    received_at_ms BIGINT NOT NULL
);
-- backend: postgres
CREATE TABLE IF NOT EXISTS span_resources (
    resource_id TEXT PRIMARY KEY,
    resource BYTEA NOT NULL,
    received_at_ms BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS span_resources_received ON span_resources (received_at_ms);
