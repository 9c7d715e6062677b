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

/// How long telemetry is kept by default: seed 001's high-resolution window.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Rows per table per pruning statement: small, so that pruning never holds
/// a long lock against ingest.
pub const PRUNE_BATCH: i64 = 1_000;

/// Serves the console on `addr` until `shutdown`; returns the bound
/// address and the server task. Pruning runs beside it.
pub async fn serve(
    addr: SocketAddr,
    store: Store,
    retention: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = http::router(http::ConsoleState {
        store: store.clone(),
    });
    tokio::spawn(prune_until(
        store,
        retention,
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
    Ok((bound, task))
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
