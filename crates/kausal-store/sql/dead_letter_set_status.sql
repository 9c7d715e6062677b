UPDATE dead_letters
SET status = $2, status_changed_at_ms = $3, status_by = $4, status_reason = $5
WHERE dlq_id = $1
