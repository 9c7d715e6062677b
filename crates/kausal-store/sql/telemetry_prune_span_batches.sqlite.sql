-- Retention on SQLite: the digests of stored requests received before $1,
-- a bounded batch.
DELETE FROM span_batches WHERE batch_id IN (
    SELECT batch_id FROM span_batches WHERE received_at_ms < $1 LIMIT $2
)
