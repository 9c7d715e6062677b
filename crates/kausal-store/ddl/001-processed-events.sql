-- Idempotency keys: one row per (consumer group, event id) handled to the end.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer_group TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, event_id)
);
