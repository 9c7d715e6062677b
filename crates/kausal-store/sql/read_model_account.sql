SELECT account_id, currency, debits, credits, balance, postings, updated_at_ms
FROM read_model_accounts
WHERE account_id = $1
