SELECT event_id, event_type, event_version, correlation_id, causation_id, source_service,
       topic, partition_id, record_offset, record_key, trace_id, span_id,
       occurred_at_ms, recorded_at_ms
FROM events
WHERE event_id = $1
