-- Topology (issue 12): events recorded at or after $1, counted per
-- producing service and topic.
SELECT source_service, topic, COUNT(*) AS events
FROM events
WHERE recorded_at_ms >= $1
GROUP BY source_service, topic
ORDER BY source_service, topic
