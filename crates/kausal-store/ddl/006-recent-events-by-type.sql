-- The console's "missing" hop asks which groups handled the most recent
-- events of a type; this index answers "the newest N events of type T"
-- without reading every event of that type ever recorded.
CREATE INDEX IF NOT EXISTS events_type_recorded ON events (event_type, recorded_at_ms);
