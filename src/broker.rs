//! `kausal broker`: the embedded Kafka-protocol broker on its own, as a
//! process of its own. `kausal up` runs the same broker in-process; this is
//! for running services one by one (`kausal service …`), for the
//! reliability harness (which stops and restarts the broker under load) and
//! for benchmarks that need the broker outside the measured process.

use anyhow::Context;
use clap::Args;
use kausal_broker::{EmbeddedBroker, Storage};

use crate::Common;
use crate::up::BrokerStorage;
use kausal_service::signals::shutdown_on_signals;

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    #[command(flatten)]
    pub common: Common,
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 9092)]
    pub port: u16,
    /// Storage engine: `sqlite` keeps `broker.db` under --data-dir across
    /// restarts; `memory` (benchmarks only) loses everything on exit and
    /// skips records when a consumer resumes inside a produce batch.
    #[arg(long, value_enum, default_value_t = BrokerStorage::Sqlite)]
    pub storage: BrokerStorage,
}

pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    kausal_telemetry::logs::init_logging("kausal-broker");
    let shutdown = shutdown_on_signals()?;
    let storage = match args.storage {
        BrokerStorage::Sqlite => {
            let dir = &args.common.data_dir;
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Storage::Sqlite(dir.join("broker.db"))
        }
        BrokerStorage::Memory => Storage::Memory,
    };
    let broker = EmbeddedBroker::start(storage, args.port)
        .await
        .with_context(|| {
            format!(
                "cannot start the embedded broker on port {} (pick another with --port)",
                args.port
            )
        })?;
    // One line on stdout that scripts can wait for.
    println!("broker listening on {}", broker.bootstrap_servers());
    tracing::info!(bootstrap = %broker.bootstrap_servers(), "broker started");
    shutdown.cancelled().await;
    broker.stop().await;
    tracing::info!("broker stopped");
    Ok(())
}
