//! The console's pages in a real browser (issue 13): headless Chromium
//! (Debian's `chromium`) driven over WebDriver (Debian's `chromium-driver`,
//! through `fantoccini`) against a `kausal console` process serving a real
//! payment outage's ledger (`console_dlq::payment_outage`). An on-call
//! engineer's path: the order id into the search box, the correlation page
//! with the answer, the red hop in the graph, then the dead letter replayed
//! from the page — refused with a wrong token, a dry run first, then for
//! real — and the ledger saying `replayed`.
//!
//! Screenshots go to `target/console-screenshots/` (next to the workspace's
//! Cargo.toml, whatever CARGO_TARGET_DIR is); with
//! `KAUSAL_UPDATE_SCREENSHOTS=1` the correlation page also replaces the
//! README's `docs/img/console-correlation.png`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::console_dlq::payment_outage;
use crate::harness::{KillOnDrop, free_port};

const TOKEN: &str = "browser-test-token";
/// The width the issue asks the pages to be readable at.
const WINDOW: (u32, u32) = (1280, 900);

/// Debian's chromedriver on a free port, killed when dropped.
struct ChromeDriver {
    _process: KillOnDrop,
    url: String,
}

impl ChromeDriver {
    fn start() -> Self {
        let binary = find_on_path("chromedriver").unwrap_or_else(|| {
            panic!(
                "chromedriver is not installed: run scripts/test, which installs chromium-driver \
                 (scripts/prepare.sh)"
            )
        });
        assert!(
            find_on_path("chromium").is_some(),
            "chromium is not installed: run scripts/test, which installs chromium (scripts/prepare.sh)"
        );
        let port = free_port();
        let process = KillOnDrop(
            std::process::Command::new(binary)
                .arg(format!("--port={port}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("chromedriver starts"),
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver listens within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            _process: process,
            url: format!("http://{addr}"),
        }
    }

    /// A new headless Chromium session.
    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": find_on_path("chromium").expect("chromium"),
                "args": [
                    "--headless=new",
                    // Root in a container has no user namespace to sandbox with.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session");
        client
            .set_window_size(WINDOW.0, WINDOW.1)
            .await
            .expect("window size");
        client
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Polls `check` until it answers `Some`, for at most `timeout`.
async fn until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

/// Clicks `button` in the dead letter's row and waits for its result line
/// to contain `expected`.
async fn act(c: &Client, row: &str, button: &str, expected: &str) -> String {
    c.find(Locator::Css(&format!(
        "{row} button[data-action=\"{button}\"]"
    )))
    .await
    .unwrap_or_else(|e| panic!("{button}: {e}"))
    .click()
    .await
    .unwrap_or_else(|e| panic!("click {button}: {e}"));
    let out = format!("{row} output.result");
    until(Duration::from_secs(30), expected, || async {
        let t = text(c, &out).await;
        t.contains(expected).then_some(t)
    })
    .await
}

/// Writes `png` to `target/console-screenshots/<name>.png`, and the one the
/// README shows (`readme`) to `docs/img/console-<name>.png` when asked.
fn screenshot(name: &str, png: &[u8], readme: bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot");
    if readme && std::env::var_os("KAUSAL_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        let docs = root.join("docs/img");
        std::fs::create_dir_all(&docs).expect("docs/img");
        std::fs::write(docs.join(format!("console-{name}.png")), png).expect("docs screenshot");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_id_leads_to_the_failed_hop_and_its_dead_letter_is_replayed_from_the_page() {
    let started = Instant::now();
    // First, so that a machine without the browser fails at once.
    let driver = ChromeDriver::start();
    let outage = payment_outage(&[("ord-web-1", "checkout-web-1")]).await;
    let entry = outage.pending().await.remove(0);
    let error_type = entry
        .error_type
        .clone()
        .expect("the dead letter's error type");
    let (mut console, addr) = outage.start_console(TOKEN).await;
    let base = format!("http://{addr}");
    let pipeline_ready = started.elapsed();
    let c = driver.browser().await;

    // The order id in the search box leads to its correlation page.
    c.goto(&format!("{base}/")).await.expect("search page");
    let q = c
        .find(Locator::Css("input#q"))
        .await
        .expect("the search box");
    q.send_keys("ord-web-1").await.expect("type");
    c.find(Locator::Css("form.search button[type=submit]"))
        .await
        .expect("the search button")
        .click()
        .await
        .expect("submit");
    until(Duration::from_secs(10), "the correlation page", || async {
        let url = c.current_url().await.ok()?;
        (url.path() == "/correlations/checkout-web-1").then_some(())
    })
    .await;

    // Above the fold: which service dropped the order, and why.
    let answer = text(&c, "#answer").await;
    let expected = format!(
        "payment-service failed on OrderPlaced: {error_type} — dead letter {}",
        entry.dlq_id
    );
    assert!(
        answer.contains(&expected),
        "{answer:?} should say {expected:?}"
    );
    // The graph: the failed hop in red, coloured by the served stylesheet.
    let failed = c
        .find(Locator::Css("svg.causal-graph g.node.fail rect"))
        .await
        .expect("a failed node in the graph");
    assert_eq!(
        failed.css_value("stroke").await.expect("stroke"),
        "rgb(179, 38, 30)",
        "the failed node is drawn red"
    );
    assert!(
        !c.find_all(Locator::Css("svg.causal-graph path.edge.fail"))
            .await
            .expect("edges")
            .is_empty(),
        "a red arrow leads to it"
    );
    let label = text(&c, "svg.causal-graph g.node.fail .node-label").await;
    let shown: String = error_type.chars().take(20).collect();
    assert!(label.contains(&shown), "{label} names {error_type}");
    screenshot(
        "correlation",
        &c.screenshot().await.expect("screenshot"),
        true,
    );

    let row = format!("tr[data-dlq-id=\"{}\"]", entry.dlq_id);
    // Without a token, and with a wrong one: refused in the page, nothing changes.
    act(&c, &row, "replay-dry", "Paste the console's token").await;
    c.find(Locator::Css("#token"))
        .await
        .expect("token box")
        .send_keys("not-the-token")
        .await
        .expect("type");
    c.find(Locator::Css("#token-form button[type=submit]"))
        .await
        .expect("keep token")
        .click()
        .await
        .expect("click");
    let refused = act(&c, &row, "replay-dry", "Refused").await;
    assert!(refused.contains("Bearer"), "{refused}");
    assert_eq!(
        text(&c, "#token-state").await,
        "No token yet.",
        "a refused token is forgotten"
    );
    assert_eq!(outage.pending().await.len(), 1, "nothing changed");

    // The right token; a dry run first, which changes nothing.
    c.find(Locator::Css("#token"))
        .await
        .expect("token box")
        .send_keys(TOKEN)
        .await
        .expect("type");
    c.find(Locator::Css("#token-form button[type=submit]"))
        .await
        .expect("keep token")
        .click()
        .await
        .expect("click");
    assert_eq!(text(&c, "#token-state").await, "Token kept for this tab.");
    let dry = act(&c, &row, "replay-dry", "Dry run").await;
    assert!(dry.contains("would replay it to orders"), "{dry}");
    assert_eq!(outage.pending().await.len(), 1, "a dry run changes nothing");
    screenshot(
        "correlation-dry-run",
        &c.screenshot().await.expect("screenshot"),
        false,
    );

    // Then for real: the page shows where it went, the ledger says replayed.
    let done = act(&c, &row, "replay", "Replayed to orders[").await;
    assert!(done.contains("new trace"), "{done}");
    assert_eq!(text(&c, &format!("{row} [data-status]")).await, "replayed");
    let ledgered = outage
        .store
        .dead_letter(&entry.dlq_id)
        .await
        .expect("read")
        .expect("entry");
    assert_eq!(ledgered.status, "replayed");
    assert_eq!(ledgered.status_by.as_deref(), Some("console"));

    // On reload, once the replayed order was paid and recorded: no standing
    // failure, the payment in the graph, and the waterfall shows the
    // replay's own spans (the console exports them to itself).
    let rows = until(
        Duration::from_secs(60),
        "the replay's outcome on the page",
        || async {
            c.refresh().await.ok()?;
            let answer = text(&c, "#answer").await;
            let mut graph = Vec::new();
            for label in c
                .find_all(Locator::Css("svg.causal-graph .node.event .node-label"))
                .await
                .ok()?
            {
                graph.push(label.text().await.ok()?);
            }
            let rows = c
                .find_all(Locator::Css("table.waterfall tr.span"))
                .await
                .ok()?
                .len();
            (answer.contains("Every hop was handled")
                && graph.iter().any(|l| l == "PaymentProcessed")
                && rows > 0)
                .then_some(rows)
        },
    )
    .await;
    let answer = text(&c, "#answer").await;
    assert!(
        answer.contains(&format!(
            "Dead letter {} was replayed by console.",
            entry.dlq_id
        )),
        "{answer}"
    );
    let names = text(&c, "table.waterfall").await;
    assert!(names.contains("send orders"), "the replay's span: {names}");
    println!(
        "browser test: pipeline and console ready in {:.1} s, browser part {:.1} s, {rows} \
         waterfall rows, total {:.1} s",
        pipeline_ready.as_secs_f64(),
        (started.elapsed() - pipeline_ready).as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    c.close().await.expect("close the session");
    assert!(
        console
            .terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "the console stops cleanly"
    );
    outage.stop().await;
}
