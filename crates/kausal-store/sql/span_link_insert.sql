INSERT INTO span_links (trace_id, span_id, linked_trace_id, linked_span_id, received_at_ms)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING
