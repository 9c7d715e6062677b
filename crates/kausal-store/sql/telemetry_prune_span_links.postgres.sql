DELETE FROM span_links WHERE (trace_id, span_id, linked_trace_id, linked_span_id) IN (
    SELECT trace_id, span_id, linked_trace_id, linked_span_id FROM span_links
    WHERE received_at_ms < $1 LIMIT $2
)
