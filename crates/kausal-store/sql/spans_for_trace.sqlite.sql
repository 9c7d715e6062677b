-- The spans of one trace in start order, at most $3, through the trace
-- index ($1: the trace id as an FTS5 term, $2: the trace id itself); a
-- span stored twice (sent again in another request) is shown once, as
-- first received.
SELECT trace_id, span_id, parent_span_id, name, kind, service, start_ns, end_ns,
       status_code, status_message, correlation_id, event_id, attributes_json,
       events_json, links_json, detail, resource_id, received_at_ms
FROM spans
WHERE rowid IN (
    SELECT MIN(rowid) FROM spans
    WHERE rowid IN (SELECT rowid FROM span_traces WHERE span_traces MATCH $1)
      AND trace_id = $2
    GROUP BY span_id
)
ORDER BY start_ns, span_id
LIMIT $3
