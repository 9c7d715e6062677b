INSERT INTO spans (
    trace_id, span_id, parent_span_id, name, kind, service, start_ns, end_ns,
    status_code, status_message, correlation_id, event_id, attributes_json,
    events_json, links_json, resource_json, detail, resource_id, received_at_ms
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT DO NOTHING
