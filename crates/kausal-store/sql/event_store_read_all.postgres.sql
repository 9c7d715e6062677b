-- Every stream's events after the cursor ($1, $2), at most $3, ordered by
-- (writing transaction, position), and only those written by transactions
-- older than the oldest one still running: every later commit has a larger
-- tx_id, so nothing can appear behind a cursor taken from these rows
-- (src/event_store.rs explains the method).
SELECT global_position, tx_id, stream_id, stream_version, event_id, event_type, event_version,
       payload, correlation_id, causation_id, traceparent, recorded_at_ms
FROM event_store_events
WHERE (tx_id, global_position) > ($1, $2)
  AND tx_id < (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint
ORDER BY tx_id, global_position
LIMIT $3
