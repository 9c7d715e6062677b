-- Who holds lease $1 and until when (expired or not).
SELECT holder, expires_at_ms
FROM event_store_outbox_lease
WHERE name = $1
