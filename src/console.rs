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
    /// Bearer token of the mutating endpoints (replay, discard); generated
    /// when not given. Either way it is written to <data-dir>/console-token.
    #[arg(long, env = "KAUSAL_CONSOLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    kausal_telemetry::logs::init_logging("kausal-console");
    let shutdown = shutdown_on_signals()?;
    let url = args.common.database_url();
    std::fs::create_dir_all(&args.common.data_dir)
        .with_context(|| format!("cannot create {}", args.common.data_dir.display()))?;
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("cannot open the console's database {url}"))?;
    let token = kausal_console::token::establish(args.token.as_deref(), &args.common.data_dir)
        .with_context(|| {
            format!(
                "cannot write the console token to {}",
                kausal_console::token::path(&args.common.data_dir).display()
            )
        })?;
    let config = kausal_console::ConsoleConfig {
        retention: Duration::from_secs(args.retention_hours.saturating_mul(3600)),
        kafka: Some(args.common.kafka_config()),
        ..kausal_console::ConsoleConfig::new(SocketAddr::new(args.bind, args.console_port), token)
    };
    let console = kausal_console::serve(config, store.clone(), shutdown.clone())
        .await
        .with_context(|| {
            format!(
                "cannot serve the console on {}:{} (pick another port with --console-port)",
                args.bind, args.console_port
            )
        })?;
    let (addr, task) = (console.http, console.task);
    // One line on stdout that scripts can wait for.
    println!("console listening on http://{addr}");
    tracing::info!(console = %format!("http://{addr}"), "console started");
    shutdown.cancelled().await;
    let _ = task.await;
    store.close().await;
    Ok(())
}
