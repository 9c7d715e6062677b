-- The newest span row's rowid (0 when none): the rows a transaction appends
-- after reading it are the ones with a larger rowid.
SELECT COALESCE(MAX(rowid), 0) AS last_rowid FROM spans
