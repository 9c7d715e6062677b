-- Retention on SQLite: the link index entries of the link rows that
-- telemetry_prune_span_links.sqlite.sql deletes next in the same
-- transaction (the same bounded, ordered selection), given the values they
-- were inserted with, as a contentless FTS5 table requires.
INSERT INTO span_link_traces (span_link_traces, rowid, trace_ids)
SELECT 'delete', rowid, trace_id || ' ' || linked_trace_id FROM span_links WHERE rowid IN (
    SELECT rowid FROM span_links WHERE received_at_ms < $1
    ORDER BY received_at_ms, rowid LIMIT $2
)
