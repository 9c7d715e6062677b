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

/// Runs `scripts/kafka ARGS` on the blocking pool: stdout (trimmed) on
/// success, stderr on failure.
async fn try_run(args: Vec<String>) -> Result<String, String> {
    let shown = args.join(" ");
    let out = tokio::task::spawn_blocking(move || Command::new(script()).args(&args).output())
        .await
        .expect("scripts/kafka task")
        .unwrap_or_else(|e| panic!("scripts/kafka {shown} cannot run: {e}"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "scripts/kafka {shown} failed ({}); it needs java and mvn (scripts/test installs \
             what is missing):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// [`try_run`], panicking with the script's stderr on failure.
async fn run(args: Vec<String>) -> String {
    try_run(args).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Kafka's words for a listener whose port another process took between
/// [`free_ports`] and the JVM's bind (tests run in parallel and all pick
/// free ports).
fn lost_port_race(stderr: &str) -> bool {
    stderr.contains("Address already in use") || stderr.contains("is taken by a process")
}

/// Kafka's ports come from below the kernel's ephemeral range (32768 and
/// up on Linux): a client connection's local port, or another test's
/// `127.0.0.1:0` listener, can then never take a controller port between
/// this check and the JVM's bind. Only two Kafka tests can meet here, and
/// [`lost_port_race`] covers that.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A base port `P` such that `P + o` is free for every offset `o`
/// (`scripts/kafka` puts the controllers at fixed offsets from the client
/// ports).
fn free_ports(offsets: &[u16]) -> u16 {
    let span = offsets.iter().max().copied().unwrap_or(0);
    for _ in 0..100 {
        let base = rand::random_range(PORTS.start..PORTS.end - span);
        let all_free = offsets
            .iter()
            .all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no run of free ports at offsets {offsets:?} in {PORTS:?}");
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
        // A port race is the one failure a retry mends: fresh ports need a
        // fresh directory (a formatted one keeps its ports). Any other
        // failure, or a third lost race, fails the test with Kafka's output.
        for attempt in 1.. {
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
            match try_run(node.args("start")).await {
                Ok(bootstrap) => {
                    assert!(
                        bootstrap.starts_with(&format!("127.0.0.1:{port}")),
                        "scripts/kafka start printed {bootstrap:?}, not a bootstrap address"
                    );
                    node.bootstrap = bootstrap;
                    return node;
                }
                Err(e) if attempt < 3 && lost_port_race(&e) => {
                    eprintln!("kafka lost a port race, retrying on other ports:\n{e}");
                    drop(node); // kills what started
                    std::fs::remove_dir_all(dir).expect("remove the Kafka directory");
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the loop returns or panics")
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
