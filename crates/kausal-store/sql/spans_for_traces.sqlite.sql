-- The spans of several traces through the trace index, at most $1 per
-- trace, in start order ($2: the trace ids as FTS5 terms joined by OR,
-- $3 …: the ids themselves, expanded from $IDS); a span stored twice is
-- shown once, as first received.
SELECT trace_id, span_id, parent_span_id, name, kind, service, start_ns, end_ns,
       status_code, status_message, correlation_id, event_id, attributes_json,
       events_json, links_json, detail, resource_id, received_at_ms
FROM (
    SELECT spans.*,
           ROW_NUMBER() OVER (PARTITION BY trace_id ORDER BY start_ns, span_id) AS rank_in_trace
    FROM spans
    WHERE rowid IN (
        SELECT MIN(rowid) FROM spans
        WHERE rowid IN (SELECT rowid FROM span_traces WHERE span_traces MATCH $2)
          AND trace_id IN ($IDS)
        GROUP BY trace_id, span_id
    )
) ranked
WHERE rank_in_trace <= $1
ORDER BY start_ns, span_id
