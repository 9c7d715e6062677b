-- Failure times since $1 (ms), for inflow and the hourly trend.
SELECT failed_at_ms FROM dead_letters WHERE failed_at_ms >= $1 ORDER BY failed_at_ms
