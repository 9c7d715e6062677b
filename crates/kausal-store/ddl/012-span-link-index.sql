-- SQLite only: span links are found through a full-text index of their two
-- trace ids instead of a primary key and an index keyed by trace ids, for the
-- reason of 011 (docs/benchmarks.md, "Span links indexed like spans"): both
-- B-trees were keyed by random trace ids, so every link dirtied two random
-- pages of its ingest transaction, and with a link on one span in ten that was
-- a quarter of what storing spans cost. PostgreSQL keeps its keys.
--
-- Without the primary key a link sent twice would be stored twice: an
-- exporter's retry writes nothing (its request's digest, `span_batches`, also
-- covers the links), and readers answer with distinct trace ids. The table is
-- rebuilt to drop its primary key; on a large store this takes a while, once.
-- backend: sqlite
CREATE TABLE span_links_012 (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    linked_trace_id TEXT NOT NULL,
    linked_span_id TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL
);
-- backend: sqlite
INSERT INTO span_links_012 (trace_id, span_id, linked_trace_id, linked_span_id, received_at_ms)
SELECT trace_id, span_id, linked_trace_id, linked_span_id, received_at_ms
FROM span_links
ORDER BY received_at_ms;
-- backend: sqlite
DROP TABLE span_links;
-- backend: sqlite
ALTER TABLE span_links_012 RENAME TO span_links;
-- backend: sqlite
CREATE INDEX span_links_received ON span_links (received_at_ms);
-- Both trace ids of every link row, as two terms under the row's rowid:
-- one lookup finds the links of a trace in either direction, and the reader
-- tells the two apart by comparing the row's columns. Contentless and
-- detail=none as span_traces (011).
-- backend: sqlite
CREATE VIRTUAL TABLE span_link_traces USING fts5(trace_ids, content='', detail=none, columnsize=0);
-- backend: sqlite
INSERT INTO span_link_traces (rowid, trace_ids)
SELECT rowid, trace_id || ' ' || linked_trace_id FROM span_links;
