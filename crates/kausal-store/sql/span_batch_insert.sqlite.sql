-- A request's spans are about to be stored ($1: the digest of its
-- (trace id, span id) pairs); no row is inserted when a request with the
-- same spans was stored before (an exporter's retry), and then its spans are
-- not stored again.
INSERT INTO span_batches (batch_id, received_at_ms) VALUES ($1, $2)
ON CONFLICT DO NOTHING
