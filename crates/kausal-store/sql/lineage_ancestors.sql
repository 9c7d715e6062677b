-- Walks causation links upward, nearest first. Depth is capped by $2 so
-- that a cycle in bad data ends.
WITH RECURSIVE up (event_id, causation_id, depth) AS (
    SELECT event_id, causation_id, CAST(0 AS BIGINT)
    FROM events
    WHERE event_id = $1
    UNION ALL
    SELECT e.event_id, e.causation_id, u.depth + 1
    FROM up u
    JOIN events e ON e.event_id = u.causation_id
    WHERE u.depth < $2
)
SELECT e.event_id, e.event_type, e.event_version, e.correlation_id, e.causation_id,
       e.source_service, e.topic, e.partition_id, e.record_offset, e.record_key,
       e.trace_id, e.span_id, e.occurred_at_ms, e.recorded_at_ms,
       a.depth
FROM (
    SELECT event_id, MIN(depth) AS depth
    FROM up
    WHERE event_id <> $1
    GROUP BY event_id
) a
JOIN events e ON e.event_id = a.event_id
ORDER BY a.depth
