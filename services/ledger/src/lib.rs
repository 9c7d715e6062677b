//! ledger-service: a double-entry ledger over HTTP (issue 14).
//!
//! `POST /v1/entries` posts an entry — legs of integer minor units on
//! accounts, debits equal to credits — under a required `Idempotency-Key`;
//! `GET /v1/accounts/{id}` answers an account's balance (`debits -
//! credits`) and version. Accounts are event-sourced aggregates
//! ([`account::Account`], stream `LedgerAccount-<id>`); an entry is one
//! transaction over the entry's stream (`LedgerEntry-<id>`: the
//! `EntryPosted` event, with its outbox row to `ledger.entry.v1` keyed by
//! entry id), each account's stream, and the idempotency key's stream
//! (`LedgerIdempotency-<key>`: the request and its answer), all appended
//! at the versions they were loaded at — all of it or nothing. Conflicts
//! are decided again a bounded number of times, then answered 503 with
//! `Retry-After`. The service runs `kausal_outbox`'s relay beside the API,
//! publishing the outbox.
//!
//! | module | what |
//! |---|---|
//! | [`account`] | the [`account::Account`] aggregate: sums, currency, overflow (pure) |
//! | [`entry`] | request → balanced [`entry::Entry`] (pure), and the entry's own stream |
//! | [`idempotency`] | keys and their stored answers |
//! | [`post`] | [`Ledger`]: post an entry, read an account |
//! | [`http`] | the axum API, its SERVER spans and `serve` |
//! | [`names`] | span and attribute names |

use std::net::SocketAddr;

use anyhow::Context as _;
use kausal_eventsource::{EventStore, EventStoreMetrics};
use kausal_outbox::{OutboxMetrics, Relay, RelayConfig};
use kausal_service::{Service, ServiceConfig};

pub mod account;
pub mod entry;
pub mod http;
pub mod idempotency;
pub mod names;
pub mod post;

pub use post::{Ledger, Origin, PostError, Posted};

pub const SERVICE_NAME: &str = "ledger-service";

/// What the ledger service runs besides the common options.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// Where the API listens.
    pub http: SocketAddr,
    /// Conflicts a posting retries before answering 503.
    pub max_conflict_retries: u32,
}

/// ledger-service as it runs: the HTTP API over the service's store, its
/// event store metrics in the service's registry, and the outbox relay
/// that publishes `EntryPosted` on `ledger.entry.v1` (created if missing).
pub fn service(config: ServiceConfig, options: LedgerOptions) -> Service {
    let service =
        Service::new(SERVICE_NAME, config).creates(kausal_contracts::ledger::LEDGER_ENTRIES_TOPIC);
    let metrics = EventStoreMetrics::register(service.metrics());
    let relay_metrics = OutboxMetrics::register(service.metrics());
    service
        .task("outbox relay", move |ctx| async move {
            let relay = Relay::new(
                ctx.store().await?,
                ctx.producer.clone(),
                relay_metrics,
                RelayConfig::new(SERVICE_NAME),
            )?;
            let summary = relay.run(ctx.shutdown.clone()).await;
            tracing::info!(?summary, "outbox relay stopped");
            Ok(())
        })
        .task("ledger API", move |ctx| async move {
            let ledger = Ledger::new(EventStore::new(ctx.store().await?, metrics))
                .with_max_conflict_retries(options.max_conflict_retries);
            let http = options.http;
            let (addr, task) = http::serve(
                http,
                http::ApiState { ledger },
                ctx.shutdown.clone().cancelled_owned(),
            )
            .await
            .with_context(|| {
                format!("cannot serve the ledger API on {http} (pick another port)")
            })?;
            tracing::info!(api = %format!("http://{addr}/v1/entries"), "ledger API listening");
            task.await.context("the ledger API stopped")
        })
}
