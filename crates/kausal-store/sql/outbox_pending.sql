-- Unsent outbox rows with their events, at most $1, by position: within one
-- stream that is version order (a stream's next version is appended only
-- after its previous one committed, so it always has a larger position).
SELECT o.global_position, e.tx_id, e.stream_id, e.stream_version, e.event_id, e.event_type,
       e.event_version, e.payload, e.correlation_id, e.causation_id, e.traceparent,
       e.recorded_at_ms, o.topic, o.record_key, o.created_at_ms
FROM event_store_outbox o
JOIN event_store_events e ON e.global_position = o.global_position
WHERE o.sent_at_ms IS NULL
ORDER BY o.global_position
LIMIT $1
