-- amount is bound as a number always, with $14 saying whether it is known:
-- sqlx 0.9's Any driver binds a NULL f64 as PostgreSQL FLOAT4, and the
-- statement it then caches rejects every later FLOAT8 ("incorrect binary
-- data format in bind parameter 5").
INSERT INTO order_views (order_id, status, correlation_id, user_id, amount, currency, customer_email,
                         payment_id, failure_reason, reservation_id, shipment_id, notified, updated_at_ms)
VALUES ($1, $2, $3, $4, CASE WHEN $14 <> 0 THEN $5 END, $6, $7, $8, $9, $10, $11, $12, $13)
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
