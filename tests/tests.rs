//! Workspace integration tests: everything runs against real brokers — the
//! embedded Kafka-protocol broker started in-process (a real tansu broker
//! spoken to by librdkafka) and, for every broker-facing test, Apache Kafka
//! as well (`on_brokers!`, a KRaft node per test from `scripts/kafka`) — and
//! real SQLite/PostgreSQL. Only payment gateways are faked.

mod apache_kafka;
#[macro_use]
mod harness;

mod alerts;
mod batch;
mod broker;
mod browser;
mod console;
mod console_dlq;
mod console_ingest;
mod failures;
mod history;
mod http;
mod interop;
mod lag;
mod ledger;
mod lineage;
mod openapi;
mod otel;
mod outbox;
mod partitions;
mod process;
mod read_model;
mod runtime;
mod service;
