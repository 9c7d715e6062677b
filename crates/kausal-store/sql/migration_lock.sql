-- PostgreSQL only: waits until no other session migrates this database.
-- A session-level advisory lock, held until migration_unlock.sql or the end
-- of the session (so a process that dies mid-migration releases it).
SELECT pg_advisory_lock($1)
