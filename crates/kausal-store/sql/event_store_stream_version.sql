-- A stream's version: the version of its last event, 0 for a stream with
-- none (the unique index on (stream_id, stream_version) answers it).
SELECT COALESCE(MAX(stream_version), 0) AS stream_version
FROM event_store_events
WHERE stream_id = $1
