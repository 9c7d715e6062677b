-- No conflict target: a record already known by its event id or by its
-- position (topic, partition, offset) is skipped, so re-reading a topic
-- records nothing twice.
INSERT INTO events (
    event_id, event_type, event_version, correlation_id, causation_id, source_service,
    topic, partition_id, record_offset, record_key, trace_id, span_id,
    occurred_at_ms, recorded_at_ms
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT DO NOTHING
