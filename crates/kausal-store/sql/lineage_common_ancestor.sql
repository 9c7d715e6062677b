-- The event that is an ancestor-or-self of both $1 and $2 with the
-- smallest sum of distances. Depth is capped by $3.
WITH RECURSIVE
up_a (event_id, causation_id, depth) AS (
    SELECT event_id, causation_id, CAST(0 AS BIGINT)
    FROM events
    WHERE event_id = $1
    UNION ALL
    SELECT e.event_id, e.causation_id, u.depth + 1
    FROM up_a u
    JOIN events e ON e.event_id = u.causation_id
    WHERE u.depth < $3
),
up_b (event_id, causation_id, depth) AS (
    SELECT event_id, causation_id, CAST(0 AS BIGINT)
    FROM events
    WHERE event_id = $2
    UNION ALL
    SELECT e.event_id, e.causation_id, u.depth + 1
    FROM up_b u
    JOIN events e ON e.event_id = u.causation_id
    WHERE u.depth < $3
)
SELECT e.event_id, e.event_type, e.event_version, e.correlation_id, e.causation_id,
       e.source_service, e.topic, e.partition_id, e.record_offset, e.record_key,
       e.trace_id, e.span_id, e.occurred_at_ms, e.recorded_at_ms
FROM up_a a
JOIN up_b b ON b.event_id = a.event_id
JOIN events e ON e.event_id = a.event_id
ORDER BY a.depth + b.depth, a.depth, e.event_id
LIMIT 1
