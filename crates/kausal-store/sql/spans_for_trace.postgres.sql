SELECT trace_id, span_id, parent_span_id, name, kind, service, start_ns, end_ns,
       status_code, status_message, correlation_id, event_id, attributes_json,
       events_json, links_json, detail, resource_id, received_at_ms
FROM spans
WHERE trace_id = $1
ORDER BY start_ns, span_id
LIMIT $2
