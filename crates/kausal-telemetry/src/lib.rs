//! Telemetry for every Kausal service: JSON log lines with the fields of
//! DESIGN §6, and the Prometheus metric set served on `/metrics`.
//!
//! Names live here once: [`fields`] for log fields, [`metrics`] for metric
//! names and labels. The consumer runtime and services use these, never
//! their own strings.

pub mod export_queue;
pub mod export_retry;
pub mod fields;
pub mod ids;
pub mod logs;
pub mod metrics;
pub mod monitor;
pub mod otel;
pub mod otlp_logs;
pub mod spans;
pub mod testing;

pub use logs::init_logging;
pub use metrics::{Metrics, serve_metrics};
