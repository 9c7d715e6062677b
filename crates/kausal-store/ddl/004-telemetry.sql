-- Telemetry received over OTLP by the console (DESIGN section 7): spans and
-- log records from any SDK, joined with lineage by trace id and correlation
-- id. Times: span and log times in nanoseconds since the Unix epoch (as OTLP
-- sends them), received_at_ms in milliseconds (what retention prunes by).
-- Attributes, events and links are kept as JSON text: the console shows
-- them, it does not query inside them; what it joins on has a column.
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    service TEXT NULL,
    start_ns BIGINT NOT NULL,
    end_ns BIGINT NOT NULL,
    status_code TEXT NOT NULL,
    status_message TEXT NULL,
    correlation_id TEXT NULL,
    event_id TEXT NULL,
    attributes_json TEXT NOT NULL,
    events_json TEXT NOT NULL,
    links_json TEXT NOT NULL,
    resource_json TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);

CREATE INDEX IF NOT EXISTS spans_correlation ON spans (correlation_id);
CREATE INDEX IF NOT EXISTS spans_event ON spans (event_id);
CREATE INDEX IF NOT EXISTS spans_received ON spans (received_at_ms);

-- One row per span link, both ways searchable: a batch span links every
-- record it handled, a replay's send span links the original record.
CREATE TABLE IF NOT EXISTS span_links (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    linked_trace_id TEXT NOT NULL,
    linked_span_id TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (trace_id, span_id, linked_trace_id, linked_span_id)
);

CREATE INDEX IF NOT EXISTS span_links_linked ON span_links (linked_trace_id);
CREATE INDEX IF NOT EXISTS span_links_received ON span_links (received_at_ms);

-- Log records. log_id is a digest of the record's content, so an exporter's
-- retry of the same batch stores nothing twice.
CREATE TABLE IF NOT EXISTS log_records (
    log_id TEXT PRIMARY KEY,
    time_ns BIGINT NOT NULL,
    severity_number BIGINT NULL,
    severity_text TEXT NULL,
    service TEXT NULL,
    body TEXT NULL,
    trace_id TEXT NULL,
    span_id TEXT NULL,
    correlation_id TEXT NULL,
    attributes_json TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS log_records_trace ON log_records (trace_id, time_ns);
CREATE INDEX IF NOT EXISTS log_records_correlation ON log_records (correlation_id, time_ns);
CREATE INDEX IF NOT EXISTS log_records_received ON log_records (received_at_ms);

-- The console's "missing" hop: which groups handle an event type at all.
CREATE INDEX IF NOT EXISTS events_type ON events (event_type);
