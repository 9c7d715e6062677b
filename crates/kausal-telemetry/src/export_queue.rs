//! How many spans and log records a service holds while its receiver is
//! slower than the service.
//!
//! The SDK's batch processors export one batch at a time on their own thread
//! and drop what arrives while their queue is full (a WARN, then silence).
//! Their default queue, 2 048 items, is 0.4 s of a payment service at
//! 2 800 events/s (two spans and two log records per event): a receiver
//! that stores before it answers — `kausal console` writing to SQLite, a
//! checkpoint, a retried 503 — pauses longer than that, and `scripts/bench
//! --only b` measured 2–10 % of the spans lost at that rate. Kausal's
//! services queue [`QUEUE`] items of each signal instead (a few tens of MB
//! at most, held only while the receiver lags). A user's
//! `OTEL_BSP_MAX_QUEUE_SIZE` / `OTEL_BLRP_MAX_QUEUE_SIZE` wins, as the
//! OpenTelemetry specification says.

use opentelemetry_sdk::{logs, trace};

/// Spans, and separately log records, a service queues for export.
pub const QUEUE: usize = 16_384;

/// The span processor's settings: the SDK's, from the environment, with
/// [`QUEUE`] unless `OTEL_BSP_MAX_QUEUE_SIZE` is set.
pub(crate) fn spans() -> trace::BatchConfig {
    let config = trace::BatchConfigBuilder::default();
    match queue(std::env::var("OTEL_BSP_MAX_QUEUE_SIZE").ok().as_deref()) {
        Some(size) => config.with_max_queue_size(size),
        None => config,
    }
    .build()
}

/// The log processor's settings: the SDK's, from the environment, with
/// [`QUEUE`] unless `OTEL_BLRP_MAX_QUEUE_SIZE` is set.
pub(crate) fn logs() -> logs::BatchConfig {
    let config = logs::BatchConfigBuilder::default();
    match queue(std::env::var("OTEL_BLRP_MAX_QUEUE_SIZE").ok().as_deref()) {
        Some(size) => config.with_max_queue_size(size),
        None => config,
    }
    .build()
}

/// Kausal's queue size when the user's variable is unset or blank; `None`
/// leaves the SDK's reading of it in place.
fn queue(user: Option<&str>) -> Option<usize> {
    match user {
        Some(value) if !value.trim().is_empty() => None,
        _ => Some(QUEUE),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use opentelemetry::logs::{LogRecord, Logger, LoggerProvider};
    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::logs::{BatchLogProcessor, LogBatch, LogExporter, SdkLoggerProvider};
    use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};

    use super::*;

    /// More than the SDK's 2 048 and well inside [`QUEUE`].
    const BURST: usize = 6_000;

    /// An exporter that cannot export while the test holds its gate: a
    /// receiver that stopped answering.
    #[derive(Debug, Clone, Default)]
    struct Stalled {
        gate: Arc<Mutex<()>>,
        exported: Arc<AtomicUsize>,
    }

    impl Stalled {
        fn pass(&self, items: usize) {
            drop(self.gate.lock());
            self.exported.fetch_add(items, Ordering::SeqCst);
        }
    }

    impl SpanExporter for Stalled {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.pass(batch.len());
            Ok(())
        }
    }

    impl LogExporter for Stalled {
        async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
            self.pass(batch.iter().count());
            Ok(())
        }
    }

    #[test]
    fn the_users_variable_wins_over_kausals_queue() {
        assert_eq!(queue(None), Some(QUEUE));
        assert_eq!(queue(Some(" ")), Some(QUEUE));
        assert_eq!(queue(Some("4096")), None);
    }

    #[test]
    fn spans_ended_while_the_receiver_stalls_are_all_exported_when_it_answers() {
        let exporter = Stalled::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter.clone())
                    .with_batch_config(spans())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("export_queue");
        let stall = exporter.gate.lock().expect("gate");
        for i in 0..BURST {
            tracer.in_span(format!("span {i}"), |_| {});
        }
        drop(stall);
        provider.force_flush().expect("flush");
        assert_eq!(exporter.exported.load(Ordering::SeqCst), BURST);
        provider.shutdown().expect("shutdown");
    }

    #[test]
    fn log_records_emitted_while_the_receiver_stalls_are_all_exported_when_it_answers() {
        let exporter = Stalled::default();
        let provider = SdkLoggerProvider::builder()
            .with_log_processor(
                BatchLogProcessor::builder(exporter.clone())
                    .with_batch_config(logs())
                    .build(),
            )
            .build();
        let logger = provider.logger("export_queue");
        let stall = exporter.gate.lock().expect("gate");
        for i in 0..BURST {
            let mut record = logger.create_log_record();
            record.set_body(format!("line {i}").into());
            logger.emit(record);
        }
        drop(stall);
        provider.force_flush().expect("flush");
        assert_eq!(exporter.exported.load(Ordering::SeqCst), BURST);
        provider.shutdown().expect("shutdown");
    }
}
