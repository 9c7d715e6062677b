-- Topology (issue 13): the newest dead letter of each consumer group that
-- failed at or after $1, for the services page's link to the latest failed
-- correlation.
SELECT consumer_group, dlq_id, correlation_id, event_id, error_type, failed_at_ms
FROM (
    SELECT consumer_group, dlq_id, correlation_id, event_id, error_type, failed_at_ms,
           ROW_NUMBER() OVER (
               PARTITION BY consumer_group ORDER BY failed_at_ms DESC, dlq_id
           ) AS newest
    FROM dead_letters
    WHERE failed_at_ms >= $1 AND consumer_group IS NOT NULL
) ranked
WHERE newest = 1
ORDER BY consumer_group
