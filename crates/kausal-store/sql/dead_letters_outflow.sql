-- Entries that left `pending` since $1 (ms).
SELECT COUNT(*) FROM dead_letters WHERE status <> 'pending' AND status_changed_at_ms >= $1
