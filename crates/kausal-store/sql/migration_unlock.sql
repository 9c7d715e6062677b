-- PostgreSQL only: releases migration_lock.sql's lock.
SELECT pg_advisory_unlock($1)
