-- PostgreSQL only: holds one order's view until the transaction ends, so
-- that concurrent folds of its events take turns (Store::update_order_view).
SELECT pg_advisory_xact_lock(hashtextextended($1, 0))
