-- Retention: a bounded batch of resources no span received since $1 names.
DELETE FROM span_resources WHERE resource_id IN (
    SELECT resource_id FROM span_resources WHERE received_at_ms < $1 LIMIT $2
)
