-- Unsent outbox rows: how many, and when the oldest was written.
SELECT COUNT(*) AS pending, MIN(created_at_ms) AS oldest_created_at_ms
FROM event_store_outbox
WHERE sent_at_ms IS NULL
