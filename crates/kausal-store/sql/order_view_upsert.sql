INSERT INTO order_views (order_id, status, correlation_id, user_id, amount, currency, customer_email,
                         payment_id, failure_reason, reservation_id, shipment_id, notified, updated_at_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (order_id) DO UPDATE SET
    status = excluded.status,
    correlation_id = excluded.correlation_id,
    user_id = excluded.user_id,
    amount = excluded.amount,
    currency = excluded.currency,
    customer_email = excluded.customer_email,
    payment_id = excluded.payment_id,
    failure_reason = excluded.failure_reason,
    reservation_id = excluded.reservation_id,
    shipment_id = excluded.shipment_id,
    notified = excluded.notified,
    updated_at_ms = excluded.updated_at_ms
