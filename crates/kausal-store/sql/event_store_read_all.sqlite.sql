-- Every stream's events after the cursor ($1, $2) in commit order, at most
-- $3. SQLite assigns positions inside its single write lock, so they
-- commit in order: tx_id is always 0 and the position alone is the order.
SELECT global_position, tx_id, stream_id, stream_version, event_id, event_type, event_version,
       payload, correlation_id, causation_id, traceparent, recorded_at_ms
FROM event_store_events
WHERE (tx_id, global_position) > ($1, $2)
ORDER BY tx_id, global_position
LIMIT $3
