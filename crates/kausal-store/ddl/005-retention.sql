-- Retention of lineage (issue 12): the console deletes rows older than its
-- retention age in small batches, each batch picking the oldest rows by one
-- time column. These indexes make each pick a range scan instead of a scan
-- of the whole table. The time column of each table:
--   events            recorded_at_ms   when the recorder stored the row (Kausal's
--                                      clock; a record's own timestamp is set by
--                                      whoever produced it and may lie)
--   receipts          handled_at_ms    when the consumer handled the record
--   processed_events  processed_at_ms  when the idempotency key was written
-- dead_letters is never pruned (the DLQ ledger is the on-call record) and
-- needs no index for it.
CREATE INDEX IF NOT EXISTS events_recorded ON events (recorded_at_ms);
CREATE INDEX IF NOT EXISTS receipts_handled ON receipts (handled_at_ms);
CREATE INDEX IF NOT EXISTS processed_events_processed ON processed_events (processed_at_ms);
