SELECT order_id, status, correlation_id, user_id, amount, currency, customer_email,
       payment_id, failure_reason, reservation_id, shipment_id, notified, updated_at_ms
FROM order_views
WHERE order_id = $1
