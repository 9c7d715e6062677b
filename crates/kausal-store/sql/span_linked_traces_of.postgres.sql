-- Traces joined by a link, in either direction, to any of several traces
-- ($1 … : the ids, expanded from $IDS).
SELECT linked_trace_id AS trace_id FROM span_links WHERE trace_id IN ($IDS)
UNION
SELECT trace_id FROM span_links WHERE linked_trace_id IN ($IDS)
