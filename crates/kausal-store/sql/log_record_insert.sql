INSERT INTO log_records (
    log_id, time_ns, severity_number, severity_text, service, body, trace_id,
    span_id, correlation_id, attributes_json, received_at_ms
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT DO NOTHING
