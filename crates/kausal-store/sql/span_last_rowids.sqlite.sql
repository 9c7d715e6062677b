-- The newest span row's and link row's rowids (0 when none): the rows a
-- transaction appends after reading them are the ones with larger rowids.
SELECT (SELECT COALESCE(MAX(rowid), 0) FROM spans) AS last_span_rowid,
       (SELECT COALESCE(MAX(rowid), 0) FROM span_links) AS last_link_rowid
