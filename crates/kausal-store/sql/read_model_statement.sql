-- Account $1's statement lines after line $2 (seq), in order, at most $3.
SELECT seq, event_id, leg_index, entry_id, direction, amount, balance_after,
       description, order_id, posted_at
FROM read_model_statement_lines
WHERE account_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3
