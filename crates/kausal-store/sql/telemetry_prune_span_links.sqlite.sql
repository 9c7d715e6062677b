-- Retention on SQLite: a bounded batch of the oldest links received before
-- $1 (the rows whose index entries were just deleted).
DELETE FROM span_links WHERE rowid IN (
    SELECT rowid FROM span_links WHERE received_at_ms < $1
    ORDER BY received_at_ms, rowid LIMIT $2
)
