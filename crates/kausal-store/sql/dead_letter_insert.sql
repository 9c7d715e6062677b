-- A dead letter read again keeps the row it has: its status and replay
-- count are the ledger's, not the record's.
INSERT INTO dead_letters (
    dlq_id, dlq_topic, dlq_partition, dlq_offset, event_id, correlation_id, event_type,
    source_topic, source_partition, source_offset, source_timestamp_ms, consumer_group,
    service, error_type, error_message, attempts, failed_at_ms, record_key, payload,
    headers_json, status, status_changed_at_ms, status_by, status_reason, replay_count
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
        $18, $19, $20, $21, $22, $23, $24, $25)
ON CONFLICT DO NOTHING
