-- The nearest ancestor-or-self that has no causation id, or whose cause was
-- never recorded. A cycle has no such event, so it yields no row.
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
       e.trace_id, e.span_id, e.occurred_at_ms, e.recorded_at_ms
FROM up u
JOIN events e ON e.event_id = u.event_id
WHERE e.causation_id IS NULL
   OR NOT EXISTS (SELECT 1 FROM events cause WHERE cause.event_id = e.causation_id)
ORDER BY u.depth
LIMIT 1
