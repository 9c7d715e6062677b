-- The ledger's read model (issue 14, read-model-service): per account, the
-- sums projected from `EntryPosted` events, and its statement, one line per
-- leg. Amounts are integers of the currency's minor units; a balance is
-- debits - credits (the ledger's convention). Same SQL on both backends.
CREATE TABLE IF NOT EXISTS read_model_accounts (
    account_id TEXT PRIMARY KEY,
    -- Fixed by the account's first projected leg.
    currency TEXT NOT NULL,
    debits BIGINT NOT NULL,
    credits BIGINT NOT NULL,
    balance BIGINT NOT NULL,
    -- Statement lines, so also the sequence number of the last one.
    postings BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- One line per leg. `seq` numbers an account's lines from 1 in the
-- order they were projected (the statement's cursor); `balance_after` is
-- the account's balance once the line's leg is counted.
CREATE TABLE IF NOT EXISTS read_model_statement_lines (
    account_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    leg_index BIGINT NOT NULL,
    entry_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    amount BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    description TEXT NOT NULL,
    order_id TEXT NULL,
    posted_at TEXT NOT NULL,
    PRIMARY KEY (account_id, seq)
);

-- What makes the projection idempotent: a leg of an event is projected at
-- most once (a redelivered event inserts nothing and so changes no sum).
CREATE UNIQUE INDEX IF NOT EXISTS read_model_statement_lines_leg
    ON read_model_statement_lines (account_id, event_id, leg_index);
