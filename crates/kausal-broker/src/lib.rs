//! The embedded Kafka-compatible broker: a [tansu](https://tansu.io) 0.6
//! broker started in-process, so that `kausal up` and `cargo test` need no
//! server. See `docs/broker.md` for exactly what it supports.
//!
//! ```no_run
//! # async fn run() -> Result<(), kausal_broker::BrokerError> {
//! use kausal_broker::{EmbeddedBroker, Storage};
//! let broker = EmbeddedBroker::start(Storage::Memory, 0).await?;
//! println!("bootstrap servers: {}", broker.bootstrap_servers());
//! broker.stop().await;
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;
use tokio::task::JoinHandle;
use url::Url;

/// How long a fresh broker may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the broker keeps its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Memory only; gone when the broker stops. Fast, but tansu 0.6 reports
    /// wrong high watermarks with it and skips records when a consumer
    /// resumes inside a produce batch: for benchmarks only (see
    /// `docs/broker.md`).
    Memory,
    /// A SQLite file (tansu's `libsql` engine); survives restarts.
    Sqlite(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot prepare the broker's data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot find a free port on 127.0.0.1: {0}")]
    NoFreePort(std::io::Error),
    #[error("invalid broker URL {0}")]
    Url(String),
    #[error("the embedded broker failed to start: {0}")]
    Start(String),
    #[error(
        "cannot add the header index to the broker's SQLite file {path}: {reason}; \
         check that the file is writable, or move it aside to start with an empty broker"
    )]
    HeaderIndex { path: PathBuf, reason: String },
    #[error(
        "the embedded broker did not accept connections on {addr} within {READY_TIMEOUT:?}{detail}"
    )]
    NotReady { addr: SocketAddr, detail: String },
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// A running in-process broker. It runs on its own threads with its own
/// async runtime, so that clients in the same process that block (librdkafka
/// calls such as a synchronous commit) can never starve it. Stopping it (or
/// dropping it) closes the listener and every connection.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    storage: Storage,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Initialises the process's SQLite in serialized mode, as libsql (tansu's
/// SQLite engine) requires. sqlx's SQLite driver uses the same library in
/// the `kausal` binary (see ARCHITECTURE.md), and whichever opens a database
/// first fixes the threading mode for the process: if sqlx went first, a
/// later SQLite-engine broker would panic. Call this before opening any
/// SQLite database; it is cheap and idempotent.
pub async fn prepare_sqlite() {
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    READY
        .get_or_init(|| async {
            if let Err(e) = libsql::Builder::new_local(":memory:").build().await {
                tracing::warn!(error = %e, "could not initialise libsql");
            }
        })
        .await;
}

impl EmbeddedBroker {
    /// Starts a broker on `127.0.0.1:port` (0 picks a free port) and waits
    /// until it accepts connections.
    pub async fn start(storage: Storage, port: u16) -> Result<Self> {
        prepare_sqlite().await;
        if storage == Storage::Memory {
            tracing::warn!(
                "tansu's memory engine skips the rest of a produce batch when a consumer resumes \
                 inside it (after a restart or a rebalance), so records can be lost to a group; \
                 use it for benchmarks only, the SQLite engine otherwise (docs/broker.md)"
            );
        }
        let port = if port == 0 { free_port()? } else { port };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let storage_url = storage_url(&storage)?;
        let listener = url(&format!("tcp://{addr}"))?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sqlite_file = match &storage {
            Storage::Sqlite(path) => Some(path.clone()),
            Storage::Memory => None,
        };
        let thread = std::thread::Builder::new()
            .name("kausal-broker".to_owned())
            .spawn(move || {
                serve_on_own_runtime(addr, listener, storage_url, sqlite_file, ready_tx, stop_rx)
            })
            .map_err(|e| BrokerError::Start(format!("cannot start the broker thread: {e}")))?;
        let mut this = Self {
            addr,
            storage,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                this.shutdown();
                return Err(e);
            }
            Err(_) => {
                this.shutdown();
                return Err(BrokerError::Start(
                    "the broker thread ended during start".to_owned(),
                ));
            }
        }
        tracing::debug!(%addr, storage = ?this.storage, "embedded broker ready");
        Ok(this)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// True while the broker thread runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the broker: the listener and every connection close.
    pub async fn stop(mut self) {
        let stop = self.stop.take();
        let thread = self.thread.take();
        // Joining blocks; do it off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(stop) = stop {
                let _ = stop.send(());
            }
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        })
        .await;
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The broker thread: its own runtime, the broker's `serve` in a task,
/// stopped by aborting that task when `stop` fires (or its sender drops).
fn serve_on_own_runtime(
    addr: SocketAddr,
    listener: Url,
    storage_url: Url,
    sqlite_file: Option<PathBuf>,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kausal-broker-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(BrokerError::Start(format!(
                "cannot build the broker runtime: {e}"
            ))));
            return;
        }
    };
    runtime.block_on(async move {
        let built = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(1)
            .cluster_id("kausal")
            .incarnation_id(uuid::Uuid::new_v4())
            .advertised_listener(listener.clone())
            .listener(listener)
            .storage(storage_url)
            .schema_registry(None)
            .silent(true)
            .build()
            .await;
        let mut broker = match built {
            Ok(b) => b,
            Err(e) => {
                let _ = ready.send(Err(BrokerError::Start(format!("{e:?}"))));
                return;
            }
        };
        // Building the broker ran tansu's DDL; add what its schema lacks
        // before the first request.
        if let Some(path) = sqlite_file
            && let Err(e) = index_record_headers(&path).await
        {
            let _ = ready.send(Err(e));
            return;
        }
        // `Broker::main` installs its own SIGINT/SIGTERM handlers; the host
        // process owns signals, so run `serve` and abort it to stop.
        let task = tokio::spawn(async move {
            broker
                .serve(tokio::time::Instant::now())
                .await
                .map_err(|e| format!("{e:?}"))
        });
        match wait_ready(addr, &task).await {
            Ok(()) => {
                let _ = ready.send(Ok(()));
            }
            Err(e) => {
                task.abort();
                let _ = ready.send(Err(e));
                return;
            }
        }
        let _ = stop.await;
        task.abort();
        let _ = task.await;
    });
    // Connection tasks still parked on the runtime are dropped with it.
    runtime.shutdown_timeout(Duration::from_secs(5));
}

/// The index tansu 0.6's SQLite schema lacks. Its fetch path reads every
/// fetched record's headers with one query joining `header` to `record` on
/// `(topition, offset_id)`, and `header` has no index on those columns: each
/// fetched record then scans every header the broker holds (all topics), so
/// fetching slows down linearly as the broker fills: 20 ms per record at
/// 240 000 headers, 0.015 ms with this index (docs/broker.md). Idempotent;
/// the index stays in the file.
pub const HEADER_INDEX: &str = "kausal_header_by_record";

async fn index_record_headers(path: &Path) -> Result<()> {
    let failed = |reason: String| BrokerError::HeaderIndex {
        path: path.to_owned(),
        reason,
    };
    // libsql is the library tansu itself uses, so this connection and tansu's
    // share one SQLite and its file locks.
    let db = libsql::Builder::new_local(path)
        .build()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let conn = db.connect().map_err(|e| failed(e.to_string()))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| failed(e.to_string()))?;
    conn.execute(
        &format!("create index if not exists {HEADER_INDEX} on header (topition, offset_id)"),
        (),
    )
    .await
    .map_err(|e| failed(e.to_string()))?;
    Ok(())
}

async fn wait_ready(addr: SocketAddr, task: &JoinHandle<Result<(), String>>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if task.is_finished() {
            return Err(BrokerError::NotReady {
                addr,
                detail: ": the broker exited (is the port free?)".to_owned(),
            });
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BrokerError::NotReady {
                addr,
                detail: String::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn url(s: &str) -> Result<Url> {
    Url::parse(s).map_err(|_| BrokerError::Url(s.to_owned()))
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(BrokerError::NoFreePort)?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(BrokerError::NoFreePort)
}

/// tansu 0.6 builds the SQLite path as `cwd/<host>/<path without its first
/// slash>` from a `sqlite://` URL (`tansu-storage`'s `lite.rs`). A file
/// under the working directory is named relative to it; any other is named
/// by an empty host and a path that starts with two slashes, which leaves
/// an absolute path after tansu strips one, and an absolute path replaces
/// the working directory when tansu joins it.
fn storage_url(storage: &Storage) -> Result<Url> {
    match storage {
        Storage::Memory => url("memory://kausal/"),
        Storage::Sqlite(path) => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(dir) = dir {
                std::fs::create_dir_all(dir).map_err(|source| BrokerError::DataDir {
                    path: dir.to_owned(),
                    source,
                })?;
            }
            let text = match relative_to_cwd(path)? {
                Some(relative) => relative.to_string_lossy().replace('\\', "/"),
                None => format!("/{}", absolute(path)?.to_string_lossy()),
            };
            url(&format!("sqlite://{text}"))
        }
    }
}

/// `path` relative to the working directory, if it is under it.
fn relative_to_cwd(path: &Path) -> Result<Option<PathBuf>> {
    if path.is_relative() {
        // Strip a leading `./`: the first component becomes the URL host.
        return Ok(Some(
            path.components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect(),
        ));
    }
    let cwd = std::env::current_dir().map_err(|source| BrokerError::DataDir {
        path: path.to_owned(),
        source,
    })?;
    let canonical_cwd = cwd.canonicalize().unwrap_or(cwd);
    let parent = path.parent().unwrap_or(path);
    let canonical_parent = parent.canonicalize().unwrap_or(parent.to_owned());
    let file = path.file_name().map(PathBuf::from).unwrap_or_default();
    Ok(canonical_parent
        .strip_prefix(&canonical_cwd)
        .ok()
        .map(|rel| rel.join(file)))
}

/// `path` with its directory resolved (symlinks, `..`): the URL must not
/// carry dot segments, which URL parsing would remove.
fn absolute(path: &Path) -> Result<PathBuf> {
    let parent = path.parent().unwrap_or(path);
    let canonical = parent
        .canonicalize()
        .map_err(|source| BrokerError::DataDir {
            path: parent.to_owned(),
            source,
        })?;
    Ok(match path.file_name() {
        Some(file) => canonical.join(file),
        None => canonical,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_are_relative_to_the_working_directory() {
        let url = storage_url(&Storage::Sqlite(PathBuf::from(
            "./.kausal-test/unit/broker.db",
        )))
        .expect("relative path");
        assert_eq!(url.as_str(), "sqlite://.kausal-test/unit/broker.db");
        let _ = std::fs::remove_dir_all(".kausal-test/unit");
    }

    /// The query shape tansu 0.6 uses to read one fetched record's headers
    /// (`tansu-storage/src/sql/header_fetch.sql`): it must be answered
    /// through the index, on a fresh file and on one that already has it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sqlite_engine_reads_a_records_headers_through_an_index() {
        let dir = PathBuf::from(".kausal-test/unit-header-index");
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("broker.db");
        for start in ["fresh file", "restart"] {
            let broker = EmbeddedBroker::start(Storage::Sqlite(path.clone()), 0)
                .await
                .unwrap_or_else(|e| panic!("{start}: {e}"));
            broker.stop().await;
        }
        let db = libsql::Builder::new_local(&path)
            .build()
            .await
            .expect("open");
        let conn = db.connect().expect("connect");
        let mut rows = conn
            .query(
                "explain query plan select h.k, h.v from header h \
                 join record r on h.topition = r.topition and h.offset_id = r.offset_id \
                 join topition tp on tp.id = r.topition join topic t on tp.topic = t.id \
                 join cluster c on t.cluster = c.id \
                 where c.name = 'kausal' and t.name = 'orders' and tp.partition = 0 \
                 and r.offset_id = 7",
                (),
            )
            .await
            .expect("plan");
        let mut plan = Vec::new();
        while let Some(row) = rows.next().await.expect("row") {
            plan.push(row.get::<String>(3).expect("detail"));
        }
        assert!(
            plan.iter()
                .any(|step| step.starts_with("SEARCH h USING INDEX kausal_header_by_record")),
            "headers are read by a scan: {plan:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `kausal up --data-dir /var/lib/kausal`: a data dir outside the
    /// working directory holds the broker's file, and the broker restarts
    /// on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_data_dir_outside_the_working_directory_holds_the_file() {
        let outside = tempfile::tempdir().expect("temp dir");
        let path = outside.path().join("data").join("broker.db");
        let url = storage_url(&Storage::Sqlite(path.clone())).expect("absolute path");
        assert!(url.as_str().starts_with("sqlite:////"), "{url}");
        for start in ["fresh file", "restart"] {
            let broker = EmbeddedBroker::start(Storage::Sqlite(path.clone()), 0)
                .await
                .unwrap_or_else(|e| panic!("{start}: {e}"));
            broker.stop().await;
            assert!(
                path.is_file(),
                "{start}: {} holds the broker",
                path.display()
            );
        }
    }
}
