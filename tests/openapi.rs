//! HTTP APIs against their OpenAPI documents, fuzzed by schemathesis from
//! PyPI: no input may produce a 5xx, every status and body must be the
//! documented ones. The order service (`services/order/openapi.yaml`), the
//! ledger (`services/ledger/openapi.yaml`), the read model
//! (`services/read-model/openapi.yaml`) and the console
//! (`crates/kausal-console/openapi.yaml`).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Engine, KillOnDrop, TestBroker, eventually, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_kausal");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    fuzz_service(
        &["order", "--rate", "0"],
        "--http-port",
        kausal_order::http::OPENAPI,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer_in_the_ledger_api() {
    fuzz_service(&["ledger"], "--ledger-port", kausal_ledger::http::OPENAPI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer_in_the_read_model_api() {
    fuzz_service(
        &["read-model"],
        "--read-model-port",
        kausal_read_model::http::OPENAPI,
    )
    .await;
}

/// `kausal service <service…>` on an embedded broker and a SQLite store, its
/// API on the port `port_flag` sets, serving `document` at `/openapi.yaml`,
/// fuzzed from it; then it must stop cleanly.
async fn fuzz_service(service: &[&str], port_flag: &str, document: &str) {
    let word = service[0];
    let b = TestBroker::start(Engine::Sqlite).await;
    let port = free_port();
    let database = format!("sqlite://{}", b.dir.path().join("service.db").display());
    let mut service = KillOnDrop(
        Command::new(BIN)
            .arg("service")
            .args(service)
            .args(["--kafka", &b.kafka.bootstrap_servers])
            .args(["--database", &database])
            .args([port_flag, &port.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{word} service starts: {e}")),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        eventually(Duration::from_secs(60), || std::net::TcpStream::connect(
            addr
        )
        .is_ok())
        .await,
        "{word} API listens"
    );
    let (status, _, served) = crate::http::request(addr, "GET", "/openapi.yaml", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(served, document, "{word} serves its OpenAPI document");
    let (passed, report) = schemathesis(
        &format!("http://127.0.0.1:{port}/openapi.yaml"),
        b.dir.path(),
    )
    .await;
    assert!(passed, "schemathesis failed on the {word} API:\n{report}");
    assert!(
        service
            .terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "the {word} service survives and stops cleanly"
    );
}

/// Runs schemathesis against the document at `openapi_url` (working
/// directory `scratch`, where it keeps a cache): (passed, report).
pub(crate) async fn schemathesis(openapi_url: &str, scratch: &std::path::Path) -> (bool, String) {
    let (url, scratch) = (openapi_url.to_owned(), scratch.to_path_buf());
    let run = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-m", "schemathesis.cli", "run", &url])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--max-examples",
                "60",
                "--seed",
                "20261122",
                "--request-timeout",
                "10",
            ])
            .env("NO_COLOR", "1")
            .current_dir(&scratch)
            .output()
    })
    .await
    .expect("join")
    .expect("python3 -m schemathesis runs (scripts/test installs tests/requirements.txt)");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    (run.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer_in_the_console_api() {
    let dir = crate::harness::scratch_dir();
    let port = free_port();
    let database = format!("sqlite://{}", dir.path().join("console.db").display());
    let mut console = KillOnDrop(
        Command::new(BIN)
            .args(["console", "--console-port", &port.to_string()])
            .args(["--database", &database, "--otlp-grpc-port", "0"])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("console starts"),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        eventually(Duration::from_secs(60), || std::net::TcpStream::connect(
            addr
        )
        .is_ok())
        .await,
        "console listens"
    );
    let (status, _, served) = crate::http::request(addr, "GET", "/api/openapi.yaml", &[], "").await;
    assert_eq!(status, 200);
    assert!(served.starts_with("openapi: 3"), "{served}");
    let (passed, report) = schemathesis(
        &format!("http://127.0.0.1:{port}/api/openapi.yaml"),
        dir.path(),
    )
    .await;
    assert!(passed, "schemathesis failed:\n{report}");
    assert!(
        console
            .terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "the console survives and stops cleanly"
    );
}
