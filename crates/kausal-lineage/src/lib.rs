//! Lineage: the recorder that turns every business event, dead letter and
//! receipt on Kafka into rows (its own consumer group, batched, idempotent,
//! committing only after the rows are durable), and the trace report that
//! answers "what happened to this order?" from those rows.

pub mod record;
pub mod recorder;
pub mod replay;
pub mod report;

pub use recorder::{Recorder, RecorderConfig};
pub use report::{TraceReport, build_report};
