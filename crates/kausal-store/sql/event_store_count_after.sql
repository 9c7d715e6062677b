-- How many committed events lie after the cursor ($1, $2): a subscription's
-- lag in events (a range of the (tx_id, global_position) index).
SELECT COUNT(*) AS behind
FROM event_store_events
WHERE (tx_id, global_position) > ($1, $2)
