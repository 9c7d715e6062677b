-- Traces joined to $1 by a link, in either direction (batches, replays).
SELECT linked_trace_id AS trace_id FROM span_links WHERE trace_id = $1
UNION
SELECT trace_id FROM span_links WHERE linked_trace_id = $1
