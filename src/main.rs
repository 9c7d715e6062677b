//! `kausal`: the command line. Thin: every verb calls into the crates.
//!
//! - `kausal up`: the whole reference system on an embedded broker.
//! - `kausal service <name>`: one service, as `up` runs it and as it runs in
//!   production.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod broker;
mod console;
mod dlq;
mod lag;
mod reset;
mod scrape;
mod service;
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
pub use kausal_service::Connection as Common;

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
    // The log writer thread writes what is queued before the process ends.
    kausal_telemetry::logs::flush_logs();
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
