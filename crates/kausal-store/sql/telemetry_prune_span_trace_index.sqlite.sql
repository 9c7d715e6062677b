-- Retention, first half on SQLite: the trace index entries of the span rows
-- that telemetry_prune_spans.sqlite.sql deletes next in the same
-- transaction (the same rows: the same bounded, ordered selection). A
-- contentless FTS5 table deletes an entry given the values it was inserted
-- with.
INSERT INTO span_traces (span_traces, rowid, trace_id)
SELECT 'delete', rowid, trace_id FROM spans WHERE rowid IN (
    SELECT rowid FROM spans WHERE received_at_ms < $1
    ORDER BY received_at_ms, rowid LIMIT $2
)
