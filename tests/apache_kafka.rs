//! Apache Kafka for one test: a single KRaft node (broker and controller in
//! one JVM), or a three-node cluster, of its own, started and stopped by
//! `scripts/kafka`, the one place that knows how Kafka is fetched (Maven
//! Central), formatted and run. A test gets a fresh node, as it gets a fresh
//! embedded broker: topics, groups and receipts of other tests never meet it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `scripts/kafka` of this checkout.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka")
}

/// Runs `scripts/kafka ARGS` on the blocking pool; its stdout, trimmed.
async fn run(args: Vec<String>) -> String {
    let shown = args.join(" ");
    let out = tokio::task::spawn_blocking(move || Command::new(script()).args(&args).output())
        .await
        .expect("scripts/kafka task")
        .unwrap_or_else(|e| panic!("scripts/kafka {shown} cannot run: {e}"));
    assert!(
        out.status.success(),
        "scripts/kafka {shown} failed ({}); it needs java and mvn (scripts/test installs \
         what is missing):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A base port `P` such that `P + o` is free for every offset `o`
/// (`scripts/kafka` puts the controllers at fixed offsets from the client
/// ports).
fn free_ports(offsets: &[u16]) -> u16 {
    for _ in 0..100 {
        let base = crate::harness::free_port();
        let all_free = offsets.iter().all(|o| {
            base.checked_add(*o)
                .is_some_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        });
        if all_free {
            return base;
        }
    }
    panic!("no run of free ports at offsets {offsets:?}");
}

/// Running Kafka nodes of one directory; killed on drop.
pub struct KafkaNode {
    dir: PathBuf,
    nodes: u8,
    port: u16,
    bootstrap: String,
}

impl KafkaNode {
    /// Formats `dir` (once) and starts one node on free loopback ports.
    pub async fn start(dir: &Path) -> Self {
        Self::start_nodes(dir, 1).await
    }

    /// Three nodes: replication factor 3, `min.insync.replicas=2`.
    pub async fn start_cluster(dir: &Path) -> Self {
        Self::start_nodes(dir, 3).await
    }

    async fn start_nodes(dir: &Path, nodes: u8) -> Self {
        let port = match nodes {
            1 => free_ports(&[0, 1]),
            _ => free_ports(&[0, 1, 2, 100, 101, 102]),
        };
        let mut node = Self {
            dir: dir.to_path_buf(),
            nodes,
            port,
            bootstrap: String::new(),
        };
        node.bootstrap = run(node.args("start")).await;
        assert!(
            node.bootstrap.starts_with(&format!("127.0.0.1:{port}")),
            "scripts/kafka start printed {:?}, not a bootstrap address",
            node.bootstrap
        );
        node
    }

    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap.clone()
    }

    /// A clean stop (SIGTERM, controlled shutdown), then a start on the
    /// same port and data.
    pub async fn restart(&mut self) {
        run(self.args("stop")).await;
        run(self.args("start")).await;
    }

    fn args(&self, verb: &str) -> Vec<String> {
        vec![
            verb.to_owned(),
            "--nodes".to_owned(),
            self.nodes.to_string(),
            "--dir".to_owned(),
            self.dir.display().to_string(),
            "--port".to_owned(),
            self.port.to_string(),
        ]
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        // The test is over: no need for a controlled shutdown.
        let _ = Command::new(script())
            .args(["kill", "--dir"])
            .arg(&self.dir)
            .output();
    }
}
