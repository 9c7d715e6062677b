-- Traces with a span that names the event (messaging.message.id).
SELECT DISTINCT trace_id FROM spans WHERE event_id = $1 LIMIT $2
