-- Retention: a bounded batch of receipts of records handled before $1.
DELETE FROM receipts WHERE receipt_id IN (
    SELECT receipt_id FROM receipts WHERE handled_at_ms < $1 LIMIT $2
)
