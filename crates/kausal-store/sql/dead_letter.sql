SELECT dlq_id, dlq_topic, dlq_partition, dlq_offset, event_id, correlation_id, event_type,
       source_topic, source_partition, source_offset, source_timestamp_ms, consumer_group,
       service, error_type, error_message, attempts, failed_at_ms, record_key, payload,
       headers_json, status, status_changed_at_ms, status_by, status_reason, replay_count
FROM dead_letters
WHERE dlq_id = $1
