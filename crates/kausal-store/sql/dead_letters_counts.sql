-- Dead letters grouped by status, source topic and error type, with the
-- oldest failure time of each group.
SELECT status, source_topic, COALESCE(error_type, ''), COUNT(*), MIN(failed_at_ms)
FROM dead_letters
GROUP BY status, source_topic, COALESCE(error_type, '')
ORDER BY status, source_topic, COALESCE(error_type, '')
