-- Takes account $1's row for the rest of the transaction and reads it. The
-- no-op UPDATE is the row lock on PostgreSQL (a concurrent projection of the
-- same account waits, then reads what this one committed); on SQLite the
-- transaction already holds the file's write lock (BEGIN IMMEDIATE).
UPDATE read_model_accounts
SET postings = postings
WHERE account_id = $1
RETURNING currency, debits, credits, balance, postings
