-- Takes or renews lease $1 for holder $2 until $3, if it is free, already
-- $2's, or expired at $4 (now). One row affected: $2 holds it; none:
-- another holder does. On PostgreSQL a concurrent upsert of the same name
-- waits for this one and then re-checks the condition against the row this
-- one left, so of two racing holders exactly one wins.
INSERT INTO event_store_outbox_lease (name, holder, expires_at_ms)
VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms
WHERE event_store_outbox_lease.holder = excluded.holder
   OR event_store_outbox_lease.expires_at_ms < $4
