SELECT COUNT(*) FROM processed_events WHERE consumer_group = $1 AND event_id IN ($2, $3)
