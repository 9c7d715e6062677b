-- Retention, second half on SQLite: a bounded batch of the oldest spans
-- received before $1 (the rows whose index entries were just deleted).
DELETE FROM spans WHERE rowid IN (
    SELECT rowid FROM spans WHERE received_at_ms < $1
    ORDER BY received_at_ms, rowid LIMIT $2
)
