-- A stream's events from version $2 down, newest first, at most $3.
SELECT global_position, tx_id, stream_id, stream_version, event_id, event_type, event_version,
       payload, correlation_id, causation_id, traceparent, recorded_at_ms
FROM event_store_events
WHERE stream_id = $1 AND stream_version <= $2
ORDER BY stream_version DESC
LIMIT $3
