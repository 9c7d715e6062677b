-- Topology (issue 12): the most recent receipts handled at or after $1, at
-- most $2, for rates, error rates and handling-time percentiles per
-- (consumer group, service, topic).
SELECT consumer_group, service, topic, outcome, duration_ms
FROM receipts
WHERE handled_at_ms >= $1
ORDER BY handled_at_ms DESC
LIMIT $2
