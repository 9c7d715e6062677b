-- Account $1's sums after the legs just inserted (its row is locked).
UPDATE read_model_accounts
SET debits = $2, credits = $3, balance = $4, postings = $5, updated_at_ms = $6
WHERE account_id = $1
