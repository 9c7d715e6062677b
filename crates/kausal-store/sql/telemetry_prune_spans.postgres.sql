-- Retention: a bounded batch of the oldest spans received before $1, so that
-- pruning never holds a long lock against ingest.
DELETE FROM spans WHERE (trace_id, span_id) IN (
    SELECT trace_id, span_id FROM spans WHERE received_at_ms < $1 LIMIT $2
)
