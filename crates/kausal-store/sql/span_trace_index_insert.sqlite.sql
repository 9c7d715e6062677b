-- Indexes the trace ids of the span rows appended after rowid $1 in this
-- transaction (see ddl/011-span-trace-index.sql).
INSERT INTO span_traces (rowid, trace_id)
SELECT rowid, trace_id FROM spans WHERE rowid > $1
