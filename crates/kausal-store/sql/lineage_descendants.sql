-- Walks causation links downward. Depth is capped by $2 so that a cycle in
-- bad data ends; an event reached twice (only possible through a cycle)
-- keeps its smallest depth.
WITH RECURSIVE down (event_id, depth) AS (
    SELECT event_id, CAST(0 AS BIGINT)
    FROM events
    WHERE event_id = $1
    UNION ALL
    SELECT e.event_id, d.depth + 1
    FROM down d
    JOIN events e ON e.causation_id = d.event_id
    WHERE d.depth < $2
)
SELECT e.event_id, e.event_type, e.event_version, e.correlation_id, e.causation_id,
       e.source_service, e.topic, e.partition_id, e.record_offset, e.record_key,
       e.trace_id, e.span_id, e.occurred_at_ms, e.recorded_at_ms,
       d.depth
FROM (
    SELECT event_id, MIN(depth) AS depth
    FROM down
    WHERE event_id <> $1
    GROUP BY event_id
) d
JOIN events e ON e.event_id = d.event_id
ORDER BY d.depth, e.occurred_at_ms, e.topic, e.partition_id, e.record_offset
