-- A resource its spans name by resource_id; seen again, it is only marked
-- as named now (retention keeps it while a span names it).
INSERT INTO span_resources (resource_id, resource, received_at_ms)
VALUES ($1, $2, $3)
ON CONFLICT (resource_id) DO UPDATE SET received_at_ms = excluded.received_at_ms
WHERE span_resources.received_at_ms < excluded.received_at_ms
