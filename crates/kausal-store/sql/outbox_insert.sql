-- The outbox row of one event, in the transaction that appends the event.
INSERT INTO event_store_outbox (
    global_position, stream_id, stream_version, topic, record_key, created_at_ms
)
VALUES ($1, $2, $3, $4, $5, $6)
