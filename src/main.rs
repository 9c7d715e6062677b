//! `kausal`: the command line. Thin: every verb calls into the crates.
//!
//! - `kausal up`: the whole reference system on an embedded broker.
//! - `kausal service <name>`: one service, as `up` runs it and as it runs in
//!   production.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod broker;
mod console;
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
    /// The console: OTLP receiver (traces, logs) and correlation API.
    Console(console::ConsoleArgs),
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
    /// A librdkafka property for every Kafka client (TLS, SASL, tuning),
    /// e.g. `--kafka-property security.protocol=SASL_SSL`; repeatable.
    /// KAUSAL_KAFKA_PROPERTIES takes several, separated by commas.
    #[arg(
        long = "kafka-property",
        value_name = "KEY=VALUE",
        env = "KAUSAL_KAFKA_PROPERTIES",
        value_delimiter = ',',
        value_parser = parse_property,
        global = true
    )]
    pub kafka_properties: Vec<(String, String)>,
}

/// `KEY=VALUE`, both non-empty.
fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() && !value.is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "{text:?} is not KEY=VALUE (e.g. security.protocol=SASL_SSL)"
        )),
    }
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

    /// The client configuration for the configured Kafka (or the default),
    /// with every `--kafka-property`.
    pub fn kafka_config(&self) -> kausal_kafka::KafkaConfig {
        self.kafka_config_at(&self.kafka_or_default())
    }

    /// The client configuration for `bootstrap`, with every
    /// `--kafka-property`.
    pub fn kafka_config_at(&self, bootstrap: &str) -> kausal_kafka::KafkaConfig {
        self.kafka_properties.iter().fold(
            kausal_kafka::KafkaConfig::new(bootstrap),
            |config, (key, value)| config.with(key, value),
        )
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
            Command::Console(args) => console::run(args).await,
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn kafka_properties_reach_every_client_and_bad_ones_are_refused() {
        let cli = Cli::try_parse_from([
            "kausal",
            "lag",
            "--kafka-property",
            "security.protocol=SASL_SSL",
            "--kafka-property",
            "sasl.mechanism=SCRAM-SHA-512,fetch.wait.max.ms=10",
        ])
        .expect("parses");
        let Command::Lag(args) = cli.command else {
            panic!("lag");
        };
        let config = args.common.kafka_config_at("broker:9093");
        assert_eq!(config.bootstrap_servers, "broker:9093");
        let extra: Vec<(&str, &str)> = config
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            extra,
            [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("fetch.wait.max.ms", "10"),
            ]
        );
        for bad in ["security.protocol", "=x", "key="] {
            let err = Cli::try_parse_from(["kausal", "lag", "--kafka-property", bad])
                .expect_err(bad)
                .to_string();
            assert!(err.contains("is not KEY=VALUE"), "{bad}: {err}");
        }
    }
}
