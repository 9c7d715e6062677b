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
use kausal_service::signals::shutdown_on_signals;

#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Port of the API and the OTLP/HTTP receiver (`/v1/traces`, `/v1/logs`).
    #[arg(long, env = "KAUSAL_CONSOLE_PORT", default_value_t = 8080)]
    pub console_port: u16,
    /// Port of the OTLP/gRPC receiver (`TraceService`, `LogsService`), on
    /// the same --bind address; 0 turns it off. Not given: 4317, or no
    /// gRPC receiver (said on stdout) when 4317 is taken — a port given here
    /// that cannot be bound is an error.
    #[arg(long, env = "KAUSAL_OTLP_GRPC_PORT")]
    pub otlp_grpc_port: Option<u16>,
    /// Forward every OTLP request the console accepts to this OTLP
    /// endpoint as well (`http://collector:4318`; over HTTP `/v1/traces` and
    /// `/v1/logs` are appended), so a Jaeger or Tempo behind it still gets
    /// every span.
    #[arg(long, env = "KAUSAL_FORWARD_OTLP")]
    pub forward_otlp: Option<String>,
    /// What --forward-otlp speaks, in `OTEL_EXPORTER_OTLP_PROTOCOL`'s
    /// words: `http/protobuf` (also `http/json`: requests go as they came)
    /// or `grpc` (`http://collector:4317`, plain-text).
    #[arg(long, env = "KAUSAL_FORWARD_PROTOCOL", default_value = "http/protobuf")]
    pub forward_protocol: String,
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

/// The OTLP/gRPC port of the specification and of every collector.
pub const DEFAULT_OTLP_GRPC_PORT: u16 = 4317;

/// Where the gRPC receiver listens: the port given (0: nowhere), or 4317
/// if it is free. A local collector or Jaeger often holds 4317; the console
/// then still serves its API and OTLP/HTTP instead of refusing to start.
fn grpc_addr(bind: IpAddr, port: Option<u16>) -> Option<SocketAddr> {
    match port {
        Some(0) => None,
        Some(port) => Some(SocketAddr::new(bind, port)),
        None => {
            let addr = SocketAddr::new(bind, DEFAULT_OTLP_GRPC_PORT);
            match std::net::TcpListener::bind(addr) {
                Ok(probe) => {
                    drop(probe);
                    Some(addr)
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "the OTLP/gRPC receiver is off: its default port is taken");
                    None
                }
            }
        }
    }
}

/// `port`, or a port free on `bind` now when it is 0.
fn resolve_port(bind: IpAddr, port: u16) -> anyhow::Result<u16> {
    if port != 0 {
        return Ok(port);
    }
    let probe = std::net::TcpListener::bind(SocketAddr::new(bind, 0))
        .with_context(|| format!("cannot find a free port on {bind}"))?;
    Ok(probe.local_addr()?.port())
}

pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    kausal_telemetry::logs::init_logging("kausal-console");
    let forward = args
        .forward_otlp
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(kausal_console::forward::ForwardConfig::new);
    let forward = match forward {
        Some(f) => Some(
            f.with_protocol(
                kausal_console::forward::ForwardProtocol::parse(Some(&args.forward_protocol))
                    .context("--forward-protocol")?,
            ),
        ),
        None => None,
    };
    // Authentication for a hosted endpoint travels in the standard variable.
    let forward = match (forward, std::env::var("OTEL_EXPORTER_OTLP_HEADERS")) {
        (Some(f), Ok(spec)) => Some(f.with_headers(&spec)?),
        (f, _) => f,
    };
    if let Some(forward) = &forward {
        forward.validate().context("--forward-otlp")?;
    }
    let forwarding = forward.as_ref().map(|f| f.endpoint.clone());
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
    // Replays through the API send their own `send <topic>` span: the
    // console exports it to itself (and so to a forward target). The tracer
    // must exist before the first request is served, or a replay made at
    // once would trace into the void: so the port is settled first (port 0
    // picks a free one now) and tracing starts before the server does.
    let http = SocketAddr::new(args.bind, resolve_port(args.bind, args.console_port)?);
    let own = SocketAddr::new(
        if http.ip().is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            http.ip()
        },
        http.port(),
    );
    let _otel =
        kausal_telemetry::otel::init_tracing_at("kausal-console", Some(&format!("http://{own}")))
            .map_err(anyhow::Error::msg)?;
    let config = kausal_console::ConsoleConfig {
        retention: Duration::from_secs(args.retention_hours.saturating_mul(3600)),
        kafka: Some(args.common.kafka_config()),
        grpc: grpc_addr(args.bind, args.otlp_grpc_port),
        forward,
        ..kausal_console::ConsoleConfig::new(http, token)
    };
    let console = kausal_console::serve(config, store.clone(), shutdown.clone())
        .await
        .with_context(|| {
            format!(
                "cannot serve the console on {} (HTTP port {}, OTLP/gRPC port {}: pick others \
                 with --console-port and --otlp-grpc-port; --otlp-grpc-port 0 turns gRPC off)",
                args.bind,
                args.console_port,
                args.otlp_grpc_port.unwrap_or(DEFAULT_OTLP_GRPC_PORT)
            )
        })?;
    let (addr, task) = (console.http, console.task);
    // One line on stdout that scripts can wait for.
    println!("console listening on http://{addr}");
    match console.grpc {
        Some(grpc) => println!("OTLP/gRPC listening on {grpc}"),
        None if args.otlp_grpc_port.is_none() => println!(
            "OTLP/gRPC off: port {DEFAULT_OTLP_GRPC_PORT} is taken (choose one with --otlp-grpc-port)"
        ),
        None => {}
    }
    if let Some(forward) = &forwarding {
        println!("forwarding OTLP to {forward}");
    }
    tracing::info!(
        console = %format!("http://{addr}"),
        otlp_grpc = ?console.grpc,
        forward = ?forwarding,
        "console started"
    );
    shutdown.cancelled().await;
    let _ = task.await;
    store.close().await;
    Ok(())
}
