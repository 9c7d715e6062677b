-- Traces joined by a link, in either direction, to any of several traces,
-- through the link index ($1: the ids as FTS5 terms joined by OR; $2 … :
-- the ids themselves, expanded from $IDS).
WITH touching AS (
    SELECT trace_id, linked_trace_id FROM span_links
    WHERE rowid IN (SELECT rowid FROM span_link_traces WHERE span_link_traces MATCH $1)
)
SELECT linked_trace_id AS trace_id FROM touching WHERE trace_id IN ($IDS)
UNION
SELECT trace_id FROM touching WHERE linked_trace_id IN ($IDS)
