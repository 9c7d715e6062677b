//! Workspace integration tests: everything runs against the embedded
//! Kafka-protocol broker started in-process (a real tansu broker spoken to by
//! librdkafka), and real SQLite/PostgreSQL. Only payment gateways are faked.

mod harness;

mod alerts;
mod batch;
mod broker;
mod history;
mod http;
mod interop;
mod lag;
mod lineage;
mod openapi;
mod otel;
mod process;
mod runtime;
