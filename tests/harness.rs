//! Test harness: a broker per test, plain-client helpers, counting readers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kausal_broker::{EmbeddedBroker, Storage};

use crate::apache_kafka::KafkaNode;
use kausal_kafka::KafkaConfig;
use kausal_kafka::admin::{Admin, TopicSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// The broker a test runs on: the embedded tansu broker on one of its
/// storage engines, or Apache Kafka (one KRaft node of its own, started by
/// `scripts/kafka` from the jars Maven fetched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Memory,
    Sqlite,
    Kafka,
}

impl Engine {
    /// Whether this is the embedded broker (whose faults Kausal works around).
    pub fn is_tansu(self) -> bool {
        !matches!(self, Engine::Kafka)
    }
}

/// Declares a broker-facing test once and runs it on each broker, the way
/// tansu runs one storage suite over every backend: `on_brokers!(name:
/// Sqlite)` after `async fn name(engine: Engine)` makes the tests
/// `name::tansu` (on that tansu engine) and `name::kafka` (Apache Kafka).
/// An optional third argument sets the runtime's worker threads (default 2).
macro_rules! on_brokers {
    ($name:ident : $tansu:ident) => {
        on_brokers!($name: $tansu, 2);
    };
    ($name:ident : $tansu:ident, $threads:literal) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
            async fn tansu() {
                super::$name($crate::harness::Engine::$tansu).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
            async fn kafka() {
                super::$name($crate::harness::Engine::Kafka).await
            }
        }
    };
}

/// A directory under the working directory (tansu resolves SQLite paths
/// relative to it), removed on drop. Every test that touches SQLite makes
/// one first, so this is also where libsql takes its turn first (see
/// [`TestBroker::start`]).
pub fn scratch_dir() -> tempfile::TempDir {
    static SQLITE: std::sync::Once = std::sync::Once::new();
    SQLITE.call_once(|| {
        // On a thread of its own: callers may be inside a runtime.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime")
                .block_on(kausal_broker::prepare_sqlite());
        })
        .join()
        .expect("libsql initialised");
    });
    let base = PathBuf::from(".kausal-test");
    std::fs::create_dir_all(&base).expect("create .kausal-test");
    tempfile::Builder::new()
        .prefix("t")
        .tempdir_in(base)
        .expect("scratch dir")
}

/// The relative form of a scratch path (what the broker needs).
pub fn relative(dir: &tempfile::TempDir, file: &str) -> PathBuf {
    let cwd = std::env::current_dir().expect("cwd");
    let path = dir.path().join(file);
    path.strip_prefix(&cwd).map(PathBuf::from).unwrap_or(path)
}

/// A broker for one test.
pub struct TestBroker {
    running: Running,
    pub kafka: KafkaConfig,
    pub engine: Engine,
    pub dir: tempfile::TempDir,
}

enum Running {
    Tansu {
        broker: Option<EmbeddedBroker>,
        port: u16,
    },
    Kafka(KafkaNode),
}

impl TestBroker {
    pub async fn start(engine: Engine) -> Self {
        // Whichever opens a SQLite database first fixes the process's
        // threading mode, and libsql (the embedded broker's engine) panics
        // unless it was first. Tests run concurrently in one process: a
        // test on Apache Kafka, or one with a store and no broker, must not
        // open SQLite before another test's embedded broker starts, so
        // libsql goes first (here and in `scratch_dir`).
        kausal_broker::prepare_sqlite().await;
        let dir = scratch_dir();
        let storage = match engine {
            Engine::Memory => Storage::Memory,
            Engine::Sqlite => Storage::Sqlite(relative(&dir, "broker.db")),
            Engine::Kafka => {
                let node = KafkaNode::start(&dir.path().join("kafka")).await;
                return Self {
                    kafka: KafkaConfig::new(node.bootstrap_servers()),
                    running: Running::Kafka(node),
                    engine,
                    dir,
                };
            }
        };
        let broker = EmbeddedBroker::start(storage, 0)
            .await
            .expect("broker starts");
        let kafka = KafkaConfig::new(broker.bootstrap_servers());
        let port = broker.addr().port();
        Self {
            running: Running::Tansu {
                broker: Some(broker),
                port,
            },
            kafka,
            engine,
            dir,
        }
    }

    /// Stops the broker and starts it again on the same port and data.
    pub async fn restart(&mut self) {
        let (broker, port) = match &mut self.running {
            Running::Kafka(node) => return node.restart().await,
            Running::Tansu { broker, port } => (broker, *port),
        };
        let storage = broker.as_ref().expect("running").storage().clone();
        if let Some(b) = broker.take() {
            b.stop().await;
        }
        // The port is released when the listener task is gone; retry briefly.
        let mut last = None;
        for _ in 0..50 {
            match EmbeddedBroker::start(storage.clone(), port).await {
                Ok(b) => {
                    *broker = Some(b);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("broker did not restart: {last:?}");
    }

    pub fn admin(&self) -> Admin {
        Admin::new(&self.kafka).expect("admin client")
    }

    pub async fn create_topics(&self, topics: &[(&str, i32)]) {
        let specs: Vec<TopicSpec> = topics.iter().map(|(n, p)| TopicSpec::new(*n, *p)).collect();
        self.admin()
            .ensure_topics(&specs)
            .await
            .expect("create topics");
    }

    /// A plain idempotent producer with no Kausal code in it.
    pub fn plain_producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.max.bytes", "4194304")
            .create()
            .expect("producer")
    }

    /// Reads every record of `topic` from the beginning (no group) until
    /// `expected` records arrived or `timeout` passed.
    pub fn read_all(&self, topic: &str, expected: usize, timeout: Duration) -> Vec<OwnedMessage> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.bootstrap_servers)
            .set("group.id", format!("reader-{}", unique()))
            .set("enable.auto.commit", "false")
            .set("max.partition.fetch.bytes", "8388608")
            .create()
            .expect("reader");
        let partitions = self.admin().partitions(topic).expect("partitions");
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < expected && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push(m.detach());
            }
        }
        out
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test uses.
pub fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Sends one record with the given headers and waits for the broker.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> (i32, i64) {
    let mut hs = OwnedHeaders::new();
    for (k, v) in headers {
        hs = hs.insert(Header { key: k, value: *v });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(hs);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    let d = producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    (d.partition, d.offset)
}

/// Headers of a record as (name, value) pairs in order.
pub fn headers_of(m: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    m.headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

/// The last value of header `name` as text.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    headers_of(m)
        .into_iter()
        .rev()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v)
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Counts records per key.
pub fn count_by_key(messages: &[OwnedMessage]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for m in messages {
        let key = m
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// Polls `check` until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// A plain group consumer (no auto-commit, from the earliest record).
pub fn group_consumer(b: &TestBroker, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &b.kafka.bootstrap_servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer")
}

/// Runs the lineage recorder in its own group until the token is cancelled.
pub fn spawn_recorder(
    b: &TestBroker,
    store: &kausal_store::Store,
    group: &str,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<kausal_lineage::recorder::RecorderSummary>,
) {
    let recorder = kausal_lineage::Recorder::new(
        b.kafka.clone(),
        store.clone(),
        kausal_lineage::RecorderConfig {
            group: group.to_owned(),
            ..kausal_lineage::RecorderConfig::default()
        },
    );
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    (
        token,
        tokio::spawn(async move { recorder.run(t).await.expect("recorder") }),
    )
}

/// A consumer runtime member running `handler` in its own task; `handled`
/// is whatever counter the handler bumps.
pub struct Member {
    pub stop: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    pub handled: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Starts a runtime for `group` on `topic`: retries practically forever
/// (stuck handlers stay stuck), heartbeats every 500 ms, commits every 50 ms.
pub fn spawn_member<H: kausal_kafka::Handler>(
    b: &TestBroker,
    group: &str,
    topic: &str,
    handler: H,
    handled: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Member {
    let producer =
        kausal_kafka::EventProducer::new(&b.kafka, group, kausal_telemetry::Metrics::new())
            .expect("producer");
    let runtime = kausal_kafka::ConsumerRuntime::new(
        b.kafka.clone(),
        group,
        group,
        &[topic],
        handler,
        producer,
    )
    .retry_policy(kausal_kafka::RetryPolicy {
        max_attempts: 100_000,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(100),
        ..kausal_kafka::RetryPolicy::default()
    })
    .heartbeat(Some(Duration::from_millis(500)))
    .commit_interval(Duration::from_millis(50));
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        runtime.run(token).await.expect("runtime runs");
    });
    Member {
        stop,
        task,
        handled,
    }
}

/// A port nothing listens on right now (for a child process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A child process that is killed if the test ends (or panics) before it
/// was stopped: a failed test must not leave services running.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// SIGTERM, then wait up to `timeout` for a graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A TCP proxy in front of a server (the test PostgreSQL) that can be cut:
/// [`CuttableProxy::cut`] closes every open connection and refuses new ones
/// until [`CuttableProxy::restore`] — a database outage as its clients see
/// it, without stopping the server other tests share.
pub struct CuttableProxy {
    pub addr: std::net::SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    /// Cancelled to close the connections open now; replaced on restore.
    connections: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl CuttableProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listens");
        let addr = listener.local_addr().expect("proxy address");
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (is_cut, open, stopped) = (cut.clone(), connections.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                if is_cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let closed = open.lock().expect("lock").clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = closed.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Self {
            addr,
            cut,
            connections,
            stop,
        }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut open = self.connections.lock().expect("lock");
        open.cancel();
        *open = CancellationToken::new();
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.connections.lock().expect("lock").cancel();
    }
}
