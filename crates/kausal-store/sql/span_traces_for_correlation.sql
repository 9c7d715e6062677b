-- Traces with a span that names the correlation (messaging.message.conversation_id).
SELECT DISTINCT trace_id FROM spans WHERE correlation_id = $1 LIMIT $2
