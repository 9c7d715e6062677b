-- The consumer groups that left a receipt for one of the $2 most recent
-- events of type $1: the groups expected to receive the next event of that
-- type. Bounded, so that the answer costs the same with a day or a year of
-- history, and a group that stopped reading that type long ago is no
-- longer expected.
SELECT DISTINCT r.consumer_group, r.service
FROM receipts r
WHERE r.event_id IN (
    SELECT e.event_id FROM events e
    WHERE e.event_type = $1
    ORDER BY e.recorded_at_ms DESC
    LIMIT $2
)
ORDER BY r.consumer_group
