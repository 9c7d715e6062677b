-- Log records of several traces ($2 … : the ids, expanded from $IDS) in
-- time order, at most $1.
SELECT log_id, time_ns, severity_number, severity_text, service, body, trace_id,
       span_id, correlation_id, attributes_json, received_at_ms
FROM log_records
WHERE trace_id IN ($IDS)
ORDER BY time_ns, log_id
LIMIT $1
