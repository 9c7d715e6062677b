INSERT INTO receipts (
    receipt_id, event_id, consumer_group, service, topic, partition_id, record_offset,
    outcome, attempts, error_type, error_message, duration_ms, trace_id, span_id,
    handled_at_ms, correlation_id
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT DO NOTHING
