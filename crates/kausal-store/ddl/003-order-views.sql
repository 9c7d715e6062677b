-- The order service's read model: one row per order, folded from its events.
CREATE TABLE IF NOT EXISTS order_views (
    order_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    correlation_id TEXT NULL,
    user_id TEXT NULL,
    amount DOUBLE PRECISION NULL,
    currency TEXT NULL,
    customer_email TEXT NULL,
    payment_id TEXT NULL,
    failure_reason TEXT NULL,
    reservation_id TEXT NULL,
    shipment_id TEXT NULL,
    notified BIGINT NOT NULL DEFAULT 0,
    updated_at_ms BIGINT NOT NULL
);
