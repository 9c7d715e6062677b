-- A subscription's stored cursor.
SELECT tx_id, global_position
FROM event_store_checkpoints
WHERE name = $1
