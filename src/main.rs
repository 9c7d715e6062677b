//! `kausal`: the command line. Thin: every verb calls into the crates.
//!
//! - `kausal up`: the whole reference system on an embedded broker.
//! - `kausal service <name>`: one service, as `up` runs it and as it runs in
//!   production.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod broker;
mod dlq;
mod lag;
mod reset;
mod scrape;
mod service;
mod signals;
mod state;
mod trace;
mod up;
mod when;

/// Event-driven services on Kafka with observability built in.
#[derive(Debug, Parser)]
#[command(name = "kausal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole system: embedded broker (unless --kafka), every
    /// service, a live summary. Ctrl-C stops it all.
    Up(up::UpArgs),
    /// Run one service of the reference system (or the lineage recorder).
    Service(service::ServiceArgs),
    /// Show what happened to an order, correlation id or event: the causal
    /// chain, who received each event, failures and dead letters.
    Trace(trace::TraceArgs),
    /// The dead-letter ledger: stats, list, show, replay, discard.
    Dlq(dlq::DlqArgs),
    /// Consumer lag per group and partition: records, seconds, status.
    Lag(lag::LagArgs),
    /// Re-read history: reset a stopped group's offsets (dry run first).
    Replay(reset::ReplayArgs),
    /// An entity's state as of a point in time, rebuilt from Kafka.
    State(state::StateArgs),
    /// The embedded Kafka-protocol broker alone, in the foreground.
    Broker(broker::BrokerArgs),
}

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Kafka bootstrap servers (HOST:PORT). `up` starts an embedded broker
    /// when this is not given; other commands default to 127.0.0.1:9092.
    /// The seed's BOOTSTRAP_SERVERS is read too.
    #[arg(long, env = "KAUSAL_KAFKA", global = true)]
    pub kafka: Option<String>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST:PORT/DB.
    /// Default: a SQLite file under --data-dir.
    #[arg(long, env = "KAUSAL_DATABASE_URL", global = true)]
    pub database: Option<String>,
    /// Where local state lives (broker data, SQLite database, logs).
    #[arg(
        long,
        env = "KAUSAL_DATA_DIR",
        default_value = "./.kausal",
        global = true
    )]
    pub data_dir: PathBuf,
}

impl Common {
    pub const DEFAULT_KAFKA: &'static str = "127.0.0.1:9092";

    /// The explicitly configured Kafka, if any (flag, KAUSAL_KAFKA or the
    /// seed's BOOTSTRAP_SERVERS).
    pub fn explicit_kafka(&self) -> Option<String> {
        self.kafka
            .clone()
            .or_else(|| std::env::var("BOOTSTRAP_SERVERS").ok())
            .filter(|s| !s.trim().is_empty())
    }

    pub fn kafka_or_default(&self) -> String {
        self.explicit_kafka()
            .unwrap_or_else(|| Self::DEFAULT_KAFKA.to_owned())
    }

    pub fn database_url(&self) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("kausal.db").display()))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        kausal_broker::prepare_sqlite().await;
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Service(args) => service::run(args).await,
            Command::Trace(args) => trace::run(args).await,
            Command::Dlq(args) => dlq::run(args).await,
            Command::Lag(args) => lag::run(args).await,
            Command::Replay(args) => reset::run(args).await,
            Command::State(args) => state::run(args).await,
            Command::Broker(args) => broker::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
