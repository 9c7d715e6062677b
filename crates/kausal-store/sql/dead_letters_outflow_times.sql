-- When each entry that left `pending` since $1 (ms) did so, for the
-- dashboard's hourly outflow.
SELECT status_changed_at_ms FROM dead_letters
WHERE status <> 'pending' AND status_changed_at_ms >= $1
ORDER BY status_changed_at_ms
