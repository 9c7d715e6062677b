-- Gives lease $1 up, if holder $2 still holds it (a holder whose lease
-- expired and was taken over must not remove the new holder's row).
DELETE FROM event_store_outbox_lease
WHERE name = $1 AND holder = $2
