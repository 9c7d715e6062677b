//! Client configuration shared by producers, consumers and admin clients.

use rdkafka::ClientConfig;

/// How to reach Kafka, plus any librdkafka properties to pass through.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, …).
    pub extra: Vec<(String, String)>,
}

impl KafkaConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            extra: Vec::new(),
        }
    }

    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// A librdkafka config with the bootstrap servers and the extras.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// Producer settings of the contract: idempotent, `acks=all`.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Lingering to batch only adds latency: the producer batches
            // by itself what queues up while a request is in flight.
            .set("linger.ms", "0")
            .set("message.timeout.ms", "30000")
            // Room to dead-letter a 1 MiB record with its headers.
            .set("message.max.bytes", "8388608");
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// Consumer settings of the contract: a group, no auto-commit, no
    /// automatic offset store; start from the earliest record for a new group.
    pub fn consumer_config(&self, group: &str, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", group)
            .set("client.id", client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // Low end-to-end latency: do not let a fetch idle for the
            // default 500 ms when a record may arrive any moment.
            .set("fetch.wait.max.ms", "50")
            // Records up to 8 MiB (the producer's limit) still fit a fetch,
            // but a lagging consumer prefetches at most ~8 MiB instead of
            // librdkafka's 64 MiB: that queue, not Kausal, was most of a
            // behind-the-load service's memory (docs/benchmarks.md).
            .set("fetch.max.bytes", "16777216")
            .set("max.partition.fetch.bytes", "8388608")
            .set("queued.max.messages.kbytes", "8192")
            // A rebalance moves only the partitions that change owner; the
            // others keep being handled through it (incremental
            // rebalancing, KIP-429). The embedded broker and Apache Kafka
            // both run it (tests/runtime.rs). Every member of a group must
            // agree: a group shared with consumers on the eager protocol
            // sets `partition.assignment.strategy` back through the extras.
            .set("partition.assignment.strategy", "cooperative-sticky");
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}
