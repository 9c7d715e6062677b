//! Kausal's console (DESIGN §7): receives the services' spans and log
//! records over OTLP/HTTP, keeps them in the lineage database next to
//! events, receipts and dead letters, and answers one correlation id with
//! all of it (`query`), over a JSON API (`http`).
//!
//! `kausal console` runs it alone; `kausal up` runs it and points every
//! service's OTLP export at it.

use std::net::SocketAddr;
use std::time::Duration;

use kausal_store::Store;
use tokio_util::sync::CancellationToken;

pub mod http;
pub mod otlp;
pub mod query;
pub mod token;

/// How long telemetry is kept by default: seed 001's high-resolution window.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Rows per table per pruning statement: small, so that pruning never holds
/// a long lock against ingest.
pub const PRUNE_BATCH: i64 = 1_000;

/// How one console runs.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The API and the OTLP/HTTP receiver.
    pub http: SocketAddr,
    /// How long received telemetry and lineage are kept.
    pub retention: Duration,
    /// The bearer token the mutating endpoints (replay, discard) demand.
    pub token: String,
    /// The Kafka cluster replays are published to; without it, replays
    /// answer 503 and say so.
    pub kafka: Option<kausal_kafka::KafkaConfig>,
}

impl ConsoleConfig {
    /// A console on `http` with the default retention, no Kafka and the
    /// given token.
    pub fn new(http: SocketAddr, token: impl Into<String>) -> Self {
        Self {
            http,
            retention: DEFAULT_RETENTION,
            token: token.into(),
            kafka: None,
        }
    }
}

/// A console that serves.
#[derive(Debug)]
pub struct RunningConsole {
    /// Where the API and the OTLP/HTTP receiver listen.
    pub http: SocketAddr,
    /// Ends after the shutdown token is cancelled and requests drained.
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves the console until `shutdown`. Pruning runs beside it.
pub async fn serve(
    config: ConsoleConfig,
    store: Store,
    shutdown: CancellationToken,
) -> std::io::Result<RunningConsole> {
    let listener = tokio::net::TcpListener::bind(config.http).await?;
    let http = listener.local_addr()?;
    let app = http::router(http::ConsoleState::new(store.clone(), &config));
    tokio::spawn(prune_until(
        store,
        config.retention,
        Duration::from_secs(60),
        shutdown.clone(),
    ));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "console server failed");
        }
    });
    Ok(RunningConsole { http, task })
}

/// Every `interval`, deletes telemetry received longer than `retention`
/// ago, one small batch at a time, until none is left.
pub async fn prune_until(
    store: Store,
    retention: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        let before = now_ms().saturating_sub(retention_ms);
        loop {
            match store.prune_telemetry(before, PRUNE_BATCH).await {
                Ok(0) => break,
                Ok(n) => tracing::debug!(rows = n, "pruned telemetry"),
                Err(e) => {
                    tracing::warn!(error = %e, "pruning telemetry failed; retrying later");
                    break;
                }
            }
            // Let ingest in between batches.
            tokio::task::yield_now().await;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
