-- The spans of several traces ($2 … : the ids, expanded from $IDS), at most
-- $1 per trace, in start order.
SELECT trace_id, span_id, parent_span_id, name, kind, service, start_ns, end_ns,
       status_code, status_message, correlation_id, event_id, attributes_json,
       events_json, links_json, detail, resource_id, received_at_ms
FROM (
    SELECT spans.*,
           ROW_NUMBER() OVER (PARTITION BY trace_id ORDER BY start_ns, span_id) AS rank_in_trace
    FROM spans
    WHERE trace_id IN ($IDS)
) ranked
WHERE rank_in_trace <= $1
ORDER BY start_ns, span_id
