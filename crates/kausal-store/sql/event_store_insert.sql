-- One event. The position is assigned here (and, on PostgreSQL, tx_id by
-- its default); a second writer of the same (stream_id, stream_version)
-- fails on event_store_events_stream_version.
INSERT INTO event_store_events (
    stream_id, stream_version, event_id, event_type, event_version, payload,
    correlation_id, causation_id, traceparent, recorded_at_ms
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING global_position, tx_id
