-- SQLite only: the spans of a trace are found through a full-text index of
-- their trace ids instead of a B-tree keyed by (trace_id, span_id)
-- (docs/benchmarks.md, "The trace index as an FTS5 table"). Trace ids are
-- random, so a B-tree on them dirties about one page per trace in every
-- ingest transaction, and writing those pages was half of what storing a
-- span cost. An FTS5 index writes each transaction's entries as a new sorted
-- segment and merges segments in the background of later writes (a
-- log-structured merge inside SQLite), so an insert dirties a few pages per
-- transaction instead of one per trace. PostgreSQL keeps its primary key.
--
-- Without the primary key a span sent twice would be stored twice, so the
-- store keeps `span_batches`: one row per stored request, named by a digest
-- of its (trace id, span id) pairs, and an exporter's retry of a request
-- already stored writes nothing. A span that arrives again inside a
-- different request is stored again; readers show each (trace id, span id)
-- once (the first received).
--
-- The table is rebuilt to drop its primary key (SQLite cannot drop one in
-- place): on a large store this migration takes a while, once.
-- backend: sqlite
CREATE TABLE spans_011 (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    service TEXT NULL,
    start_ns BIGINT NOT NULL,
    end_ns BIGINT NOT NULL,
    status_code TEXT NOT NULL,
    status_message TEXT NULL,
    correlation_id TEXT NULL,
    event_id TEXT NULL,
    attributes_json TEXT NOT NULL,
    events_json TEXT NOT NULL,
    links_json TEXT NOT NULL,
    resource_json TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    detail BLOB NULL,
    resource_id TEXT NULL
);
-- backend: sqlite
INSERT INTO spans_011 (
    trace_id, span_id, parent_span_id, name, kind, service, start_ns, end_ns,
    status_code, status_message, correlation_id, event_id, attributes_json,
    events_json, links_json, resource_json, received_at_ms, detail, resource_id
)
SELECT trace_id, span_id, parent_span_id, name, kind, service, start_ns, end_ns,
       status_code, status_message, correlation_id, event_id, attributes_json,
       events_json, links_json, resource_json, received_at_ms, detail, resource_id
FROM spans
ORDER BY received_at_ms;
-- backend: sqlite
DROP TABLE spans;
-- backend: sqlite
ALTER TABLE spans_011 RENAME TO spans;
-- backend: sqlite
CREATE INDEX spans_correlation ON spans (correlation_id);
-- backend: sqlite
CREATE INDEX spans_event ON spans (event_id);
-- backend: sqlite
CREATE INDEX spans_received ON spans (received_at_ms);
-- The trace id of every span row, under the row's rowid. Contentless
-- (content=''): it holds only the index, and deleting an entry needs the
-- values it was inserted with, which the store takes from the span row it
-- deletes. detail=none: only which rows hold a token, not where in them.
-- backend: sqlite
CREATE VIRTUAL TABLE span_traces USING fts5(trace_id, content='', detail=none, columnsize=0);
-- backend: sqlite
INSERT INTO span_traces (rowid, trace_id) SELECT rowid, trace_id FROM spans;
-- backend: sqlite
CREATE TABLE span_batches (
    batch_id TEXT PRIMARY KEY,
    received_at_ms BIGINT NOT NULL
);
-- backend: sqlite
CREATE INDEX span_batches_received ON span_batches (received_at_ms);
