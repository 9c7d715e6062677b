//! A service's configuration from its command line and environment: where
//! Kafka and the database are, and how the runtime behaves. Every option has
//! a flag and an environment variable, so a container sets it either way.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use kausal_kafka::{CorrelationPolicy, KafkaConfig, RetryPolicy};

/// Where Kafka and the database are: options every `kausal` command and
/// every service take.
#[derive(Debug, Clone, Args)]
pub struct Connection {
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

impl Connection {
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
    pub fn kafka_config(&self) -> KafkaConfig {
        self.kafka_config_at(&self.kafka_or_default())
    }

    /// The client configuration for `bootstrap`, with every
    /// `--kafka-property`.
    pub fn kafka_config_at(&self, bootstrap: &str) -> KafkaConfig {
        self.kafka_properties
            .iter()
            .fold(KafkaConfig::new(bootstrap), |config, (key, value)| {
                config.with(key, value)
            })
    }

    pub fn database_url(&self) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("kausal.db").display()))
    }
}

/// What to do with events that carry no correlation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CorrelationArg {
    /// Use the event's own id, log a warning, count it.
    Adopt,
    /// Dead-letter it without calling the handler.
    Reject,
}

impl From<CorrelationArg> for CorrelationPolicy {
    fn from(arg: CorrelationArg) -> Self {
        match arg {
            CorrelationArg::Adopt => Self::Adopt,
            CorrelationArg::Reject => Self::Reject,
        }
    }
}

/// Everything a [`Service`](crate::Service) reads from its command line and
/// environment. `ServiceConfig::parse()` in a service's `main`, or
/// `#[command(flatten)]` into a larger command line.
#[derive(Debug, Clone, Parser)]
pub struct ServiceConfig {
    #[command(flatten)]
    pub connection: Connection,
    /// Port of this service's /metrics and /healthz (0 picks a free one).
    #[arg(long, env = "KAUSAL_METRICS_PORT", default_value_t = 0)]
    pub metrics_port: u16,
    /// Partitions for topics this service creates if missing.
    #[arg(long, env = "KAUSAL_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    /// Do not create missing topics.
    #[arg(long)]
    pub no_create_topics: bool,
    /// Consumer group of the service's first consumer (seed: GROUP_ID);
    /// default the group the service declares.
    #[arg(long, env = "GROUP_ID")]
    pub group: Option<String>,
    /// Handler attempts before dead-lettering.
    #[arg(long, env = "KAUSAL_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// First retry backoff in milliseconds (doubles each attempt, ±20 %).
    #[arg(long, default_value_t = 100)]
    pub initial_backoff_ms: u64,
    /// Partitions whose records are in a handler at the same time, per
    /// consumer (records of one partition are always handled in order).
    #[arg(long, env = "KAUSAL_PARTITION_CONCURRENCY", default_value_t = kausal_kafka::runtime::DEFAULT_PARTITION_CONCURRENCY)]
    pub partition_concurrency: usize,
    /// What to do with events that carry no correlation id.
    #[arg(long, value_enum, default_value_t = CorrelationArg::Adopt)]
    pub missing_correlation: CorrelationArg,
    /// Publish no receipts on `kausal.receipts` (lineage then cannot say
    /// who received an event). For comparisons with pipelines that keep
    /// none, such as the seeds'.
    #[arg(long)]
    pub no_receipts: bool,
    /// Keep no idempotency keys: a redelivered event is handled again
    /// (its outputs keep their derived ids). For comparisons, as above.
    #[arg(long)]
    pub no_idempotency_store: bool,
}

impl ServiceConfig {
    /// The retry policy the options describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            initial_backoff: Duration::from_millis(self.initial_backoff_ms),
            ..RetryPolicy::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_flags() {
        let config = ServiceConfig::try_parse_from(["svc"]).expect("defaults");
        assert_eq!(config.connection.kafka_or_default(), "127.0.0.1:9092");
        assert_eq!(config.retry_policy().max_attempts, 3);
        assert_eq!(config.partitions, 3);
        let config = ServiceConfig::try_parse_from([
            "svc",
            "--kafka",
            "k:9093",
            "--kafka-property",
            "security.protocol=SSL",
            "--max-attempts",
            "0",
            "--missing-correlation",
            "reject",
        ])
        .expect("flags");
        let kafka = config.connection.kafka_config();
        assert_eq!(kafka.bootstrap_servers, "k:9093");
        assert_eq!(kafka.extra.len(), 1);
        assert_eq!(
            config.retry_policy().max_attempts,
            1,
            "at least one attempt"
        );
        assert_eq!(
            CorrelationPolicy::from(config.missing_correlation),
            CorrelationPolicy::Reject
        );
        let bad = ServiceConfig::try_parse_from(["svc", "--kafka-property", "x"])
            .expect_err("not KEY=VALUE")
            .to_string();
        assert!(bad.contains("is not KEY=VALUE"), "{bad}");
    }
}
