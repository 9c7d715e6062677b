//! read-model-service: the ledger's read side (issue 14). Consumes
//! `EntryPosted` from `ledger.entry.v1` in its own consumer group and
//! projects, per account, the balance (`debits - credits`, the ledger's
//! convention), debits, credits, currency, postings and a statement — one
//! line per leg with the running balance after it — into the service's
//! store (`kausal_store::read_model`); serves them over HTTP.
//!
//! A redelivered event changes nothing twice over: the runtime's
//! idempotency keys skip an event the group already handled, and the
//! projection itself inserts each (account, event id, leg) line at most
//! once and moves the sums only by the lines it inserted, all in one
//! transaction per event.
//!
//! | module | what |
//! |---|---|
//! | [`project`] | `EntryPosted` → the rows to project; entries the ledger could not have posted are refused (pure) |
//! | [`handler`] | [`handler::ProjectionHandler`]: decode, project, classify failures |
//! | [`http`] | the axum API, its SERVER spans and `serve` |
//! | [`names`] | group, paths, query parameters, attributes, error types |

use std::net::SocketAddr;

use anyhow::Context as _;
use kausal_contracts::ledger::LEDGER_ENTRIES_TOPIC;
use kausal_service::{Consumer, Service, ServiceConfig};

pub mod handler;
pub mod http;
pub mod names;
pub mod project;

pub use handler::ProjectionHandler;
pub use names::GROUP;

pub const SERVICE_NAME: &str = "read-model-service";
pub const INPUT_TOPICS: [&str; 1] = [LEDGER_ENTRIES_TOPIC];

/// What the read model runs besides the common options.
#[derive(Debug, Clone)]
pub struct ReadModelOptions {
    /// Where the API listens.
    pub http: SocketAddr,
}

/// read-model-service as it runs: the projection in consumer group
/// [`GROUP`] over `ledger.entry.v1` (failures dead-lettered to
/// `ledger.entry.v1.dlq`), and the HTTP API over the same store.
pub fn service(config: ServiceConfig, options: ReadModelOptions) -> Service {
    let dead_letters = kausal_core::dlq::dlq_topic(LEDGER_ENTRIES_TOPIC);
    Service::new(SERVICE_NAME, config)
        .consume(
            Consumer::build(GROUP, &INPUT_TOPICS, |ctx| async move {
                Ok(ProjectionHandler::new(ctx.store().await?))
            })
            .dead_letter_topic(LEDGER_ENTRIES_TOPIC, &dead_letters),
        )
        .task("read model API", move |ctx| async move {
            let store = ctx.store().await?;
            let http = options.http;
            let (addr, task) = http::serve(
                http,
                http::ApiState { store },
                ctx.shutdown.clone().cancelled_owned(),
            )
            .await
            .with_context(|| {
                format!("cannot serve the read model API on {http} (pick another port)")
            })?;
            tracing::info!(api = %format!("http://{addr}/v1/accounts/{{id}}"), "read model API listening");
            task.await.context("the read model API stopped")
        })
}
