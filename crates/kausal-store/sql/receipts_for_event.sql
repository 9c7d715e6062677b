SELECT receipt_id, event_id, consumer_group, service, topic, partition_id, record_offset,
       outcome, attempts, error_type, error_message, duration_ms, trace_id, span_id,
       handled_at_ms, correlation_id
FROM receipts
WHERE event_id = $1
ORDER BY handled_at_ms, receipt_id
