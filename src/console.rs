//! `kausal console`: the OTLP receiver and the correlation API over the
//! lineage database (`kausal-console`). `kausal up` runs it as one of its
//! processes; alone it serves any Kafka estate whose recorder writes to
//! `--database`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kausal_store::Store;

use crate::Common;
use crate::signals::shutdown_on_signals;

#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Port of the API and the OTLP/HTTP receiver (`/v1/traces`, `/v1/logs`).
    #[arg(long, env = "KAUSAL_CONSOLE_PORT", default_value_t = 8080)]
    pub console_port: u16,
    /// Address to listen on; 0.0.0.0 to be reachable from other hosts.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Hours that received spans and log records are kept.
    #[arg(long, env = "KAUSAL_RETENTION_HOURS", default_value_t = 7 * 24)]
    pub retention_hours: u64,
}

pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    kausal_telemetry::logs::init_logging("kausal-console");
    let shutdown = shutdown_on_signals()?;
    let url = args.common.database_url();
    if args.common.database.is_none() {
        let dir = &args.common.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("cannot open the console's database {url}"))?;
    let (addr, task) = kausal_console::serve(
        SocketAddr::new(args.bind, args.console_port),
        store.clone(),
        Duration::from_secs(args.retention_hours.saturating_mul(3600)),
        shutdown.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot serve the console on {}:{} (pick another port with --console-port)",
            args.bind, args.console_port
        )
    })?;
    // One line on stdout that scripts can wait for.
    println!("console listening on http://{addr}");
    tracing::info!(console = %format!("http://{addr}"), "console started");
    shutdown.cancelled().await;
    let _ = task.await;
    store.close().await;
    Ok(())
}
