-- Log records that name the correlation $2 or belong to one of its traces
-- ($3 … : the ids, expanded from $IDS; NULL when there are none), in time
-- order, at most $1. One query, so that a line that does both (most of
-- them) is read once.
SELECT log_id, time_ns, severity_number, severity_text, service, body, trace_id,
       span_id, correlation_id, attributes_json, received_at_ms
FROM log_records
WHERE correlation_id = $2 OR trace_id IN ($IDS)
ORDER BY time_ns, log_id
LIMIT $1
