-- One statement line; nothing when this leg of this event is already on the
-- account's statement (a redelivery): rows affected say which.
INSERT INTO read_model_statement_lines (
    account_id, seq, event_id, leg_index, entry_id, direction, amount,
    balance_after, description, order_id, posted_at
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (account_id, event_id, leg_index) DO NOTHING
