use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::harness::{KillOnDrop, free_port};

mod correlation;
mod dlq;
mod lag;
mod paint;
mod story;
mod topics;
mod trace;

/// The width the issue asks the pages to be readable at.
const WINDOW: (u32, u32) = (1280, 900);

/// Debian's chromedriver on a free port, killed when dropped.
pub(crate) struct ChromeDriver {
    _process: KillOnDrop,
    url: String,
}

impl ChromeDriver {
    pub(crate) fn start() -> Self {
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
    pub(crate) async fn browser(&self) -> Client {
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
        // The browser's console (errors, failed requests, CSP refusals),
        // read back by `assert_clean`.
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
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
pub(crate) async fn until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
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

/// The text of the element `css` finds. A live refresh may replace the
/// element between finding and reading it (a stale reference): then it is
/// found again, a few times.
pub(crate) async fn text(c: &Client, css: &str) -> String {
    let mut tries = 0;
    loop {
        let element = c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match element.text().await {
            Ok(text) => return text,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                    && tries < 5 =>
            {
                tries += 1;
            }
            Err(e) => panic!("text of {css}: {e}"),
        }
    }
}

/// Clicks `button` in the dead letter's row and waits for its result line
/// to contain `expected`.
pub(crate) async fn act(c: &Client, row: &str, button: &str, expected: &str) -> String {
    act_by(c, row, button, expected, Press::Click).await
}

/// How a test presses a button: with the mouse, or from the keyboard
/// (the button focused, then Enter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Press {
    Click,
    Enter,
}

/// WebDriver's Enter key.
pub(crate) const ENTER: &str = "\u{E007}";

/// Presses `button` in the dead letter's row as `press` says and waits for
/// its result line to contain `expected`.
pub(crate) async fn act_by(
    c: &Client,
    row: &str,
    button: &str,
    expected: &str,
    press: Press,
) -> String {
    let element = c
        .find(Locator::Css(&format!(
            "{row} button[data-action=\"{button}\"]"
        )))
        .await
        .unwrap_or_else(|e| panic!("{button}: {e}"));
    match press {
        Press::Click => element.click().await,
        Press::Enter => element.send_keys(ENTER).await,
    }
    .unwrap_or_else(|e| panic!("press {button}: {e}"));
    let out = format!("{row} output.result");
    until(Duration::from_secs(30), expected, || async {
        let t = text(c, &out).await;
        t.contains(expected).then_some(t)
    })
    .await
}

/// At phone width (375 px) the page is no wider than the screen: tables
/// and the chart scroll inside their own boxes. Photographed as `<shot>`.
pub(crate) async fn assert_fits_a_phone(c: &Client, what: &str, shot: &str) {
    c.set_window_size(375, 800).await.expect("phone width");
    // The elements that stick out past the right edge (not counting those
    // inside a box that scrolls), to name them when the page overflows.
    let measured = c
        .execute(
            "var w = window.innerWidth, out = [];
             document.querySelectorAll('body *').forEach(function (e) {
               if (e.parentElement.closest('.scroll')) { return; }
               var r = e.getBoundingClientRect();
               if (r.right > w + 1) {
                 out.push(e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className + ' ' + Math.round(r.right));
               }
             });
             var sw = document.documentElement.scrollWidth;
             return { fits: sw <= w, wide: [sw, w].concat(out.slice(0, 10)) };",
            vec![],
        )
        .await
        .expect("measure");
    assert_eq!(
        measured["fits"], true,
        "{what} overflows at 375 px: {}",
        measured["wide"]
    );
    screenshot(shot, &c.screenshot().await.expect("screenshot"), false);
    c.set_window_size(WINDOW.0, WINDOW.1)
        .await
        .expect("desktop width");
}

/// Types `q` into the search box of `{base}/` and submits it.
pub(crate) async fn search(c: &Client, base: &str, q: &str) {
    c.goto(&format!("{base}/")).await.expect("search page");
    c.find(Locator::Css("input#q"))
        .await
        .expect("the search box")
        .send_keys(q)
        .await
        .expect("type");
    c.find(Locator::Css("form.search button[type=submit]"))
        .await
        .expect("the search button")
        .click()
        .await
        .expect("submit");
}

/// The end of a page test: the browser session closes, the console stops
/// cleanly on SIGTERM, the cluster and store go.
pub(crate) async fn close_all(
    c: Client,
    mut console: KillOnDrop,
    outage: crate::console_dlq::Outage,
) {
    c.close().await.expect("close the session");
    assert!(
        console
            .terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "the console stops cleanly"
    );
    outage.stop().await;
}

/// Pastes `token` into the page's token form and keeps it for the tab.
pub(crate) async fn keep_token(c: &Client, token: &str) {
    c.find(Locator::Css("#token"))
        .await
        .expect("token box")
        .send_keys(token)
        .await
        .expect("type");
    c.find(Locator::Css("#token-form button[type=submit]"))
        .await
        .expect("keep token")
        .click()
        .await
        .expect("click");
}

/// Writes `png` to `target/console-screenshots/<name>.png`, and the one the
/// README shows (`readme`) to `docs/img/console-<name>.png` when asked.
pub(crate) fn screenshot(name: &str, png: &[u8], readme: bool) {
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

/// chromedriver's log command (`POST /session/{id}/se/log`): the browser
/// console's entries since the last call.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

/// The browser console's entries since the last call, as `LEVEL message`.
pub(crate) async fn browser_log(c: &Client) -> Vec<String> {
    let entries = c.issue_cmd(BrowserLog).await.expect("the browser's log");
    entries
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["level"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The page `what` (and everything since the last check) logged no error
/// and no warning in the browser's console: no failed request (a 404 or a
/// refused fetch is logged as SEVERE), no script error, no CSP refusal.
/// `expected` lists substrings of errors the test itself provoked (a
/// refused token's 401).
pub(crate) async fn assert_clean(c: &Client, what: &str, expected: &[&str]) {
    let bad: Vec<String> = browser_log(c)
        .await
        .into_iter()
        .filter(|l| l.starts_with("SEVERE") || l.starts_with("WARNING"))
        .filter(|l| !expected.iter().any(|e| l.contains(e)))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: the browser's console says {bad:#?}"
    );
}
