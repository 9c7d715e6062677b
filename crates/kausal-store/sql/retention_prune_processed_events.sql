-- Retention: a bounded batch of idempotency keys written before $1. A
-- duplicate of such an event arriving later is handled again.
DELETE FROM processed_events WHERE (consumer_group, event_id) IN (
    SELECT consumer_group, event_id FROM processed_events
    WHERE processed_at_ms < $1 LIMIT $2
)
