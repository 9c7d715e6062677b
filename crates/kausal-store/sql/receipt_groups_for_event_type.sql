-- Every consumer group that left a receipt for some event of type $1: the
-- groups expected to receive the next event of that type.
SELECT DISTINCT r.consumer_group, r.service
FROM receipts r
JOIN events e ON e.event_id = r.event_id
WHERE e.event_type = $1
ORDER BY r.consumer_group
