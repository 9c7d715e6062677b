-- Dead letters matching every filter that is not empty ('' or 0 means any),
-- newest first.
SELECT dlq_id, dlq_topic, dlq_partition, dlq_offset, event_id, correlation_id, event_type,
       source_topic, source_partition, source_offset, source_timestamp_ms, consumer_group,
       service, error_type, error_message, attempts, failed_at_ms, record_key, payload,
       headers_json, status, status_changed_at_ms, status_by, status_reason, replay_count
FROM dead_letters
WHERE ($1 = '' OR source_topic = $1)
  AND ($2 = '' OR error_type = $2)
  AND ($3 = '' OR status = $3)
  AND ($4 = '' OR correlation_id = $4)
  AND ($7 = '' OR consumer_group = $7)
  AND failed_at_ms >= $5
ORDER BY failed_at_ms DESC, dlq_id
LIMIT $6
