-- Stores a subscription's cursor, replacing the one before.
INSERT INTO event_store_checkpoints (name, tx_id, global_position, updated_at_ms)
VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO UPDATE SET
    tx_id = excluded.tx_id,
    global_position = excluded.global_position,
    updated_at_ms = excluded.updated_at_ms
