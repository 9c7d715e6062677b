//! The console's web pages (DESIGN §7, issue 13): server-rendered HTML from
//! the same functions the JSON API answers from (`crate::query`, the lag
//! board), never from the API over HTTP. Every value from the store goes
//! through maud's escaping; the one stylesheet and the one script are
//! compiled into the binary and served under `/assets/` with a long cache
//! lifetime (their URLs carry a hash of their content). The pages send a
//! strict Content-Security-Policy: no inline script or style, nothing from
//! another origin.
//!
//! One module per page (search, correlation, trace, dead letters, lag,
//! services, topics); `assets/` holds the stylesheet and the script, one
//! file per page, bundled into one of each at compile time (every script
//! file is a self-contained function that does nothing on a page without
//! its elements).

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::http::ConsoleState;

pub(crate) mod correlation;
mod dlq;
mod lag;
mod layout;
mod search;
mod services;
mod svg;
mod topics;
mod trace;
mod waterfall;

pub use correlation::{Finding, findings, render_correlation};
pub use layout::Section;
pub use search::{render_matches, render_nothing_found};
pub use svg::causal_graph;
pub use waterfall::waterfall;

/// The routes of the pages and their assets.
pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/", get(search::index))
        .route("/search", get(search::search))
        .route("/correlations/{id}", get(correlation::page))
        .route("/traces/{trace_id}", get(trace::page))
        .route("/dlq", get(dlq::index))
        .route("/dlq/{id}", get(dlq::detail))
        .route("/lag", get(lag::page))
        .route("/services", get(services::page))
        .route("/topics", get(topics::index))
        .route("/topics/{name}", get(topics::topic))
        .route(CSS_PATH, get(stylesheet))
        .route(JS_PATH, get(script))
}

const CSS_PATH: &str = "/assets/console.css";
const JS_PATH: &str = "/assets/console.js";
/// The stylesheet: the frame and shared parts first, then each page's.
const CSS: &str = concat!(
    include_str!("assets/console.css"),
    include_str!("assets/trace.css"),
    include_str!("assets/dlq.css"),
    include_str!("assets/lag.css"),
    include_str!("assets/services.css"),
    include_str!("assets/topics.css"),
);
/// The script: the token first (the others use `window.Kausal.token`).
const JS: &str = concat!(
    include_str!("assets/token.js"),
    include_str!("assets/actions.js"),
    include_str!("assets/refresh.js"),
    include_str!("assets/dlq.js"),
    include_str!("assets/lag.js"),
    include_str!("assets/topics.js"),
);

/// The stylesheet's URL, with a hash of its content so that a new build's
/// stylesheet is fetched despite the long cache lifetime.
pub(crate) fn css_href() -> &'static str {
    static HREF: LazyLock<String> =
        LazyLock::new(|| format!("{CSS_PATH}?v={:016x}", fnv1a(CSS.as_bytes())));
    &HREF
}

/// The script's URL, versioned like [`css_href`].
pub(crate) fn js_href() -> &'static str {
    static HREF: LazyLock<String> =
        LazyLock::new(|| format!("{JS_PATH}?v={:016x}", fnv1a(JS.as_bytes())));
    &HREF
}

/// FNV-1a, 64 bits: a cache buster, not a security measure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A year: the asset URLs change with their content.
const ASSET_CACHE: &str = "public, max-age=31536000, immutable";

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        CSS,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        JS,
    )
        .into_response()
}

/// The policy every page is sent with: the page's own stylesheet and
/// script only, requests to its own origin only (the replay buttons call
/// `/api/…`), no inline code, no framing.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; form-action 'self'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// An HTML answer: a status and a whole document.
#[derive(Debug)]
pub(crate) struct Page {
    status: StatusCode,
    body: Markup,
}

impl Page {
    pub(crate) fn ok(body: Markup) -> Self {
        Self {
            status: StatusCode::OK,
            body,
        }
    }

    /// An error page: the status, a title and what to do, under the
    /// navigation and the search box.
    pub(crate) fn error(status: StatusCode, title: &str, message: Markup) -> Self {
        let main = html! {
            h1 { (title) }
            p.message { (message) }
            (search::search_form(None, false))
        };
        Self {
            status,
            body: layout::page(title, Section::None, false, main),
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            self.body.into_string(),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// The store failed: 503, look again shortly.
pub(crate) fn unavailable(e: kausal_store::StoreError) -> Page {
    tracing::warn!(error = %e, "console store unavailable");
    Page::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The console's database is unavailable",
        html! { "The lineage database did not answer (" (e.to_string()) "). Reload in a few seconds." },
    )
}

/// A query string, path or id the page cannot use: 400 with the reason.
pub(crate) fn bad_request(reason: &str) -> Page {
    Page::error(
        StatusCode::BAD_REQUEST,
        "That is not an id the console can look up",
        html! { (reason) },
    )
}

/// The id in a page's path, checked as the API checks ids, or the 400
/// page that says why not.
pub(crate) fn path_id(
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, Page> {
    let axum::extract::Path(id) = id.map_err(|e| bad_request(&e.body_text()))?;
    crate::http::checked_id(&id)
        .map(str::to_owned)
        .map_err(|e| bad_request(&e.1))
}

/// Characters kept as they are in a path segment; every other byte is
/// percent-encoded (ids come from message headers: anything can be in
/// them).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The correlation page of `id`.
pub fn correlation_href(id: &str) -> String {
    format!("/correlations/{}", utf8_percent_encode(id, SEGMENT))
}

/// The trace page of `trace_id`.
pub fn trace_href(trace_id: &str) -> String {
    format!("/traces/{}", utf8_percent_encode(trace_id, SEGMENT))
}

/// The detail page of dead letter `id`.
pub fn dead_letter_href(id: &str) -> String {
    format!("/dlq/{}", utf8_percent_encode(id, SEGMENT))
}

/// The records page of topic `name`.
pub fn topic_href(name: &str) -> String {
    format!("/topics/{}", utf8_percent_encode(name, SEGMENT))
}

/// A time in milliseconds since the epoch as `HH:MM:SS.mmm` (UTC).
pub(crate) fn clock_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A time in milliseconds since the epoch as RFC 3339 (UTC, ms).
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// At most `max` characters of `text`, with `…` when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn ids_are_percent_encoded_in_paths() {
        assert_eq!(correlation_href("ord-1_a.b~c"), "/correlations/ord-1_a.b~c");
        assert_eq!(
            correlation_href("a/b?c#d e<"),
            "/correlations/a%2Fb%3Fc%23d%20e%3C"
        );
        assert_eq!(trace_href("ab"), "/traces/ab");
    }

    #[test]
    fn asset_urls_carry_a_content_hash() {
        assert!(css_href().starts_with("/assets/console.css?v="));
        assert_eq!(css_href().len(), CSS_PATH.len() + 3 + 16);
        assert_ne!(css_href()[CSS_PATH.len()..], js_href()[JS_PATH.len()..]);
    }

    /// The console's routes over HTTP on a free port, serving `store`: the
    /// base URL and the server's task (abort it at the end).
    pub(crate) async fn serve(
        store: kausal_store::Store,
    ) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let state = ConsoleState::new(store, &crate::ConsoleConfig::new(addr, "t")).expect("state");
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(axum::serve(listener, crate::http::router(state)).into_future());
        (base, server)
    }

    /// The routes over HTTP against a real SQLite store: statuses, the
    /// redirect of one match, headers.
    #[tokio::test]
    async fn pages_answer_with_the_right_status_and_headers() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("pages.db").display());
        let store = kausal_store::Store::connect(&url).await.expect("store");
        let event = kausal_store::LineageEvent {
            event_id: "ev-1".into(),
            event_type: Some("OrderPlaced".into()),
            event_version: Some(1),
            correlation_id: "corr/1".into(),
            causation_id: None,
            source_service: Some("order-service".into()),
            topic: "orders".into(),
            partition: 0,
            offset: 0,
            key: Some("ord-1".into()),
            trace_id: None,
            span_id: None,
            occurred_at_ms: 1_700_000_000_000,
            recorded_at_ms: 1_700_000_000_000,
        };
        store
            .record_batch(&[event], &[], &[])
            .await
            .expect("record");
        let (base, server) = serve(store).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let get = |path: &str| client.get(format!("{base}{path}")).send();

        let home = get("/").await.expect("home");
        assert_eq!(home.status(), 200);
        assert_eq!(home.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(home.headers()["content-security-policy"], CSP);
        assert!(home.text().await.expect("body").contains(r#"name="q""#));

        let one = get("/search?q=ord-1").await.expect("search");
        assert_eq!(one.status(), 303);
        assert_eq!(one.headers()["location"], "/correlations/corr%2F1");
        let page = get("/correlations/corr%2F1").await.expect("page");
        assert_eq!(page.status(), 200);
        let html = page.text().await.expect("body");
        assert!(
            html.contains("Every hop was handled: 1 event, 0 receipts"),
            "{html}"
        );

        let none = get("/search?q=ord-404").await.expect("search");
        assert_eq!(none.status(), 200);
        assert!(
            none.text()
                .await
                .expect("body")
                .contains("Nothing is recorded for")
        );
        for bad in [
            "/search?q=",
            "/search?q=%20%20",
            &format!("/search?q={}", "x".repeat(257)),
        ] {
            let answer = get(bad).await.expect("search");
            assert_eq!(answer.status(), 400, "{bad}");
            assert!(
                answer
                    .text()
                    .await
                    .expect("body")
                    .contains("an id is 1 to 256 characters")
            );
        }
        let missing = get("/correlations/nothing-here").await.expect("page");
        assert_eq!(missing.status(), 404);
        assert!(
            missing
                .text()
                .await
                .expect("body")
                .contains("No such correlation")
        );
        let long = get(&format!("/correlations/{}", "x".repeat(300)))
            .await
            .expect("page");
        assert_eq!(long.status(), 400);

        let css = get(css_href()).await.expect("css");
        assert_eq!(css.status(), 200);
        assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
        assert_eq!(css.headers()["cache-control"], ASSET_CACHE);
        let js = get(js_href()).await.expect("js");
        assert_eq!(
            js.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
        server.abort();
    }

    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "ab…");
        assert_eq!(shorten("ééé", 2), "é…");
    }
}
