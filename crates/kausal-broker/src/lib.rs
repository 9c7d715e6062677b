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
    /// wrong high watermarks with it (see `docs/broker.md`).
    Memory,
    /// A SQLite file (tansu's `libsql` engine); survives restarts.
    Sqlite(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "the broker's data file {path} is outside the working directory {cwd}; tansu 0.6 \
         resolves SQLite paths relative to the working directory, so run kausal from a \
         directory that contains the data dir (or use a relative --data-dir)"
    )]
    OutsideWorkingDirectory { path: PathBuf, cwd: PathBuf },
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
        "the embedded broker did not accept connections on {addr} within {READY_TIMEOUT:?}{detail}"
    )]
    NotReady { addr: SocketAddr, detail: String },
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// A running in-process broker. Stopping it (or dropping it) closes the
/// listener and every connection.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    storage: Storage,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl EmbeddedBroker {
    /// Starts a broker on `127.0.0.1:port` (0 picks a free port) and waits
    /// until it accepts connections.
    pub async fn start(storage: Storage, port: u16) -> Result<Self> {
        let port = if port == 0 { free_port()? } else { port };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let storage_url = storage_url(&storage)?;
        let listener = url(&format!("tcp://{addr}"))?;

        let broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(1)
            .cluster_id("kausal")
            .incarnation_id(uuid::Uuid::new_v4())
            .advertised_listener(listener.clone())
            .listener(listener)
            .storage(storage_url)
            .schema_registry(None)
            .silent(true)
            .build()
            .await
            .map_err(|e| BrokerError::Start(format!("{e:?}")))?;

        // `Broker::main` installs its own SIGINT/SIGTERM handlers; the host
        // process owns signals, so run `serve` and abort it to stop.
        let mut broker = broker;
        let task = tokio::spawn(async move {
            broker
                .serve(tokio::time::Instant::now())
                .await
                .map_err(|e| format!("{e:?}"))
        });
        let mut this = Self {
            addr,
            storage,
            task: Some(task),
        };
        this.wait_ready().await?;
        tracing::debug!(%addr, storage = ?this.storage, "embedded broker ready");
        Ok(this)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(task) = &self.task
                && task.is_finished()
            {
                let detail = match self.task.take() {
                    Some(task) => match task.await {
                        Ok(Err(e)) => format!(": {e}"),
                        Ok(Ok(())) => ": the broker exited".to_owned(),
                        Err(e) => format!(": {e}"),
                    },
                    None => String::new(),
                };
                return Err(BrokerError::NotReady {
                    addr: self.addr,
                    detail,
                });
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(BrokerError::NotReady {
                    addr: self.addr,
                    detail: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

    /// True while the broker task runs.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the broker: the listener and every connection close.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
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

/// tansu 0.6 builds the SQLite path as `cwd/<host>/<path>` from a
/// `sqlite://` URL, so the file must be named relative to the working
/// directory.
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
            let relative = relative_to_cwd(path)?;
            let text = relative.to_string_lossy().replace('\\', "/");
            url(&format!("sqlite://{text}"))
        }
    }
}

fn relative_to_cwd(path: &Path) -> Result<PathBuf> {
    let cwd = std::env::current_dir().map_err(|source| BrokerError::DataDir {
        path: path.to_owned(),
        source,
    })?;
    if path.is_relative() {
        // Strip a leading `./`: the first component becomes the URL host.
        return Ok(path
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect());
    }
    let canonical_cwd = cwd.canonicalize().unwrap_or(cwd.clone());
    let parent = path.parent().unwrap_or(path);
    let canonical_parent = parent.canonicalize().unwrap_or(parent.to_owned());
    let file = path.file_name().map(PathBuf::from).unwrap_or_default();
    canonical_parent
        .strip_prefix(&canonical_cwd)
        .map(|rel| rel.join(file))
        .map_err(|_| BrokerError::OutsideWorkingDirectory {
            path: path.to_owned(),
            cwd,
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

    #[test]
    fn absolute_paths_outside_the_working_directory_are_refused_with_a_reason() {
        let outside = std::env::temp_dir()
            .join("kausal-outside-cwd")
            .join("broker.db");
        let err = storage_url(&Storage::Sqlite(outside)).expect_err("outside the cwd");
        assert!(
            matches!(err, BrokerError::OutsideWorkingDirectory { .. }),
            "{err}"
        );
    }
}
