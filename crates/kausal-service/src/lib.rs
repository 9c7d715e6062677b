//! A Kausal service in a few lines: a [`Service`] of [`Consumer`]s (a
//! consumer group around a [`Handler`](kausal_kafka::Handler) each) and
//! tasks, configured from the command line and environment
//! ([`ServiceConfig`]), with JSON logs, OpenTelemetry, `/metrics`,
//! `/healthz`, signals, the producer and the consumer runtime wired for it.
//!
//! The whole of a service (`examples/loyalty` is a complete one):
//!
//! ```no_run
//! use clap::Parser;
//! use kausal_service::{Consumer, Service, ServiceConfig};
//! # use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};
//! # struct Audit;
//! # impl Handler for Audit {
//! #     async fn handle(&self, _: &IncomingEvent, _: &mut Emitter) -> Result<(), HandlerError> { Ok(()) }
//! # }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     Service::new("audit-service", ServiceConfig::parse())
//!         .consume(Consumer::new("audit-service", &["orders"], Audit))
//!         .run()
//!         .await
//! }
//! ```

pub mod config;
mod service;
pub mod signals;

pub use config::{Connection, CorrelationArg, ServiceConfig};
pub use service::{Consumer, Service, ServiceContext};
