-- Creates account $1 (currency $2, nothing posted) if it has no row yet, so
-- that the lock that follows has a row to take.
INSERT INTO read_model_accounts (account_id, currency, debits, credits, balance, postings, updated_at_ms)
VALUES ($1, $2, 0, 0, 0, 0, $3)
ON CONFLICT (account_id) DO NOTHING
