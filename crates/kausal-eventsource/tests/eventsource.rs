//! The event sourcing tests: one binary, every store test on every
//! configured backend (SQLite always, PostgreSQL when
//! `KAUSAL_TEST_DATABASE_URL` is set), against real databases.

mod idempotency;
mod many;
mod repository;
mod spans;
mod subscription;
mod support;
mod testing;
