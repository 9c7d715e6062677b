-- Indexes both trace ids of the link rows appended after rowid $1 in this
-- transaction (see ddl/012-span-link-index.sql).
INSERT INTO span_link_traces (rowid, trace_ids)
SELECT rowid, trace_id || ' ' || linked_trace_id FROM span_links WHERE rowid > $1
