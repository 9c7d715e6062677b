-- The outbox relay's lease (issue 14): one row per relay name, naming the
-- relay instance that may publish the outbox until `expires_at_ms`
-- (milliseconds since the Unix epoch, by the holder's clock). A relay takes
-- or renews it with one upsert that succeeds only when it already holds the
-- row or the row has expired, so two relays never publish at once while
-- their clocks agree to well within the lease's length. Same SQL on both
-- backends.
CREATE TABLE IF NOT EXISTS event_store_outbox_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
