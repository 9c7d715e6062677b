//! Kausal's console (DESIGN §7): receives the services' spans and log
//! records over OTLP (HTTP and gRPC, `ingest`; forwarded on to the user's
//! own endpoint when asked, `forward`), keeps them in the lineage database next to
//! events, receipts and dead letters, and answers one correlation id with
//! all of it (`query`), over a JSON API (`http`).
//!
//! `kausal console` runs it alone; `kausal up` runs it and points every
//! service's OTLP export at it.

use std::net::SocketAddr;
use std::time::Duration;

use kausal_store::Store;
use tokio_util::sync::CancellationToken;

pub mod dlq;
pub mod expected;
pub mod forward;
pub mod http;
mod http_dlq;
mod http_ops;
pub mod ingest;
pub mod lag;
pub mod otlp;
pub mod pages;
pub mod query;
pub mod records;
pub mod token;
pub mod topology;

/// How long telemetry is kept by default: seed 001's high-resolution window.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Rows per table per pruning statement: small, so that pruning never holds
/// a long lock against ingest.
pub const PRUNE_BATCH: i64 = 1_000;

/// How often the console samples consumer lag.
pub const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// How one console runs.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The API and the OTLP/HTTP receiver.
    pub http: SocketAddr,
    /// The OTLP/gRPC receiver (`TraceService`, `LogsService`); `None`: off.
    pub grpc: Option<SocketAddr>,
    /// Where every accepted OTLP request is forwarded; `None`: nowhere.
    pub forward: Option<forward::ForwardConfig>,
    /// How long received telemetry and lineage are kept.
    pub retention: Duration,
    /// The bearer token the mutating endpoints (replay, discard) demand.
    pub token: String,
    /// The Kafka cluster replays are published to; without it, replays
    /// answer 503 and say so.
    pub kafka: Option<kausal_kafka::KafkaConfig>,
}

impl ConsoleConfig {
    /// A console on `http` with the default retention, no Kafka, no gRPC
    /// receiver, no forwarding and the given token.
    pub fn new(http: SocketAddr, token: impl Into<String>) -> Self {
        Self {
            http,
            grpc: None,
            forward: None,
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
    /// Where the OTLP/gRPC receiver listens, when it runs.
    pub grpc: Option<SocketAddr>,
    /// What forwarding did so far, when it runs.
    pub forwarding: Option<forward::ForwardStatus>,
    /// Ends after the shutdown token is cancelled, requests drained and the
    /// forwarding queue sent (for at most [`FORWARD_GRACE`]).
    pub task: tokio::task::JoinHandle<()>,
}

/// How long a stopping console keeps forwarding what it queued.
pub const FORWARD_GRACE: Duration = Duration::from_secs(5);

/// Serves the console until `shutdown`. Pruning runs beside it.
pub async fn serve(
    config: ConsoleConfig,
    store: Store,
    shutdown: CancellationToken,
) -> std::io::Result<RunningConsole> {
    let listener = tokio::net::TcpListener::bind(config.http).await?;
    let http = listener.local_addr()?;
    let grpc_listener = match config.grpc {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("the OTLP/gRPC receiver cannot listen on {addr}: {e}"),
            )
        })?),
        None => None,
    };
    let grpc = grpc_listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    let (forwarder, worker) = match config.forward.clone() {
        Some(forward) => {
            let (forwarder, worker) =
                forward::Forwarder::start(forward).map_err(std::io::Error::other)?;
            (Some(forwarder), Some(worker))
        }
        None => (None, None),
    };
    let forwarding = worker.as_ref().map(forward::ForwardWorker::status);
    let mut state =
        http::ConsoleState::new(store.clone(), &config).map_err(std::io::Error::other)?;
    state.forward = forwarder.clone();
    if let Some(kafka) = &config.kafka {
        let admin = kausal_kafka::admin::Admin::new(kafka).map_err(std::io::Error::other)?;
        let monitor =
            kausal_monitor::LagMonitor::new(admin, Default::default()).with_store(store.clone());
        state.lag = lag::LagBoard::watched();
        tokio::spawn(lag::watch(
            monitor,
            state.lag.clone(),
            LAG_INTERVAL,
            shutdown.clone(),
        ));
    }
    let app = http::router(state);
    let grpc_task = grpc_listener.map(|listener| {
        let receiver = ingest::GrpcReceiver::new(store.clone(), forwarder);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = ingest::serve_grpc(listener, receiver, shutdown).await {
                tracing::error!(error = %e, "console OTLP/gRPC server failed");
            }
        })
    });
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
        if let Some(grpc) = grpc_task {
            let _ = grpc.await;
        }
        // Both receivers are gone, so is every sender: the queue closes.
        if let Some(worker) = worker {
            worker.finish(FORWARD_GRACE).await;
        }
    });
    Ok(RunningConsole {
        http,
        grpc,
        forwarding,
        task,
    })
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
        // Lineage events, receipts and idempotency keys by the same age;
        // the DLQ ledger is never pruned (kausal-store's `retention`).
        loop {
            match store.prune_lineage(before, PRUNE_BATCH).await {
                Ok(pruned) if pruned.total() == 0 => break,
                Ok(pruned) => tracing::debug!(rows = pruned.total(), "pruned lineage"),
                Err(e) => {
                    tracing::warn!(error = %e, "pruning lineage failed; retrying later");
                    break;
                }
            }
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
