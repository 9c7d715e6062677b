-- Retention: a bounded batch of lineage events recorded before $1, so that
-- pruning never holds a long lock against the recorder.
DELETE FROM events WHERE event_id IN (
    SELECT event_id FROM events WHERE recorded_at_ms < $1 LIMIT $2
)
