DELETE FROM log_records WHERE log_id IN (
    SELECT log_id FROM log_records WHERE received_at_ms < $1 LIMIT $2
)
