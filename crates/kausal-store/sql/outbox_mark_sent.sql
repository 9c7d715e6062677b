-- Marks outbox rows sent at $1; $IDS becomes one bound parameter per
-- position. Rows already sent keep their first time.
UPDATE event_store_outbox
SET sent_at_ms = $1
WHERE sent_at_ms IS NULL AND global_position IN ($IDS)
