//! Reads counters from a service's `/metrics` for `up`'s live summary.
//!
//! The HTTP side is reqwest (a deadline per request, a capped body); the
//! exposition text is read by `prometheus-parse`, which knows the classic
//! text format our services answer a plain `GET` with (`# HELP`/`# TYPE`,
//! `_total` counters, histograms grouped by `le`), and skips the lines it
//! does not (OpenMetrics' `# UNIT`/`# EOF`).

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context, bail};

/// How long one scrape may take, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The most body a scrape reads: a service's exposition is tens of KiB; an
/// endpoint that answers more is not one of ours.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// One client for every scrape (its pool keeps the connections to the
/// services warm between summary lines). The services are on this host over
/// plain HTTP: no proxy from the environment, no TLS roots to load.
static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap_or_default()
});

/// The exposition text of `http://addr/metrics`, or `None` if unreachable
/// (the reason is logged at debug: the summary line just skips the service).
pub async fn fetch(addr: SocketAddr) -> Option<String> {
    match fetch_with(addr, TIMEOUT, MAX_BODY).await {
        Ok(text) => Some(text),
        Err(e) => {
            tracing::debug!(%addr, error = format!("{e:#}"), "metrics scrape failed");
            None
        }
    }
}

/// `GET http://addr/metrics` within `timeout`, reading at most `max_body`
/// bytes of body (more is an error, not a truncated text).
async fn fetch_with(
    addr: SocketAddr,
    timeout: Duration,
    max_body: usize,
) -> anyhow::Result<String> {
    let url = format!("http://{addr}/metrics");
    let mut response = CLIENT
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .error_for_status()?;
    if let Some(len) = response.content_length()
        && len > max_body as u64
    {
        bail!("{url}: body of {len} bytes is over the {max_body}-byte limit");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading {url}"))?
    {
        if body.len() + chunk.len() > max_body {
            bail!("{url}: body is over the {max_body}-byte limit");
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).with_context(|| format!("{url}: body is not UTF-8"))
}

/// One scrape's samples, parsed once for every question `up` asks of it.
#[derive(Debug)]
pub struct Exposition(Vec<prometheus_parse::Sample>);

impl Exposition {
    /// The samples of an exposition text; a text that does not parse has
    /// none.
    pub fn parse(text: &str) -> Self {
        // Reading lines from a &str cannot fail.
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Self(prometheus_parse::Scrape::parse(lines).map_or_else(|_| Vec::new(), |s| s.samples))
    }

    /// Sum of every sample of `name` whose labels contain all of `labels`
    /// (`key="value"` pairs).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples(name, labels).sum()
    }

    /// The largest sample of `name` with `labels`, `None` if there is none.
    pub fn max(&self, name: &str, labels: &[&str]) -> Option<f64> {
        self.samples(name, labels).reduce(f64::max)
    }

    /// The plain values (counters, gauges, untyped; a histogram's `_sum`
    /// and `_count` too) of the series named `name` carrying every
    /// `key="value"` of `labels`.
    fn samples<'a>(&'a self, name: &'a str, labels: &[&str]) -> impl Iterator<Item = f64> + 'a {
        let wanted: Vec<(String, String)> = labels
            .iter()
            .filter_map(|l| {
                let (k, v) = l.split_once('=')?;
                Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            })
            .collect();
        self.0.iter().filter_map(move |s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => {
                    return None;
                }
            };
            (s.metric == name
                && wanted
                    .iter()
                    .all(|(k, v)| s.labels.get(k) == Some(v.as_str())))
            .then_some(value)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
        Exposition::parse(text).sum(name, labels)
    }

    fn max(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
        Exposition::parse(text).max(name, labels)
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn sums_matching_series() {
        let text =
            "# TYPE x counter\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"1\",b=\"3\"} 4\ny_total 9\n";
        assert_eq!(sum(text, "x_total", &[]), 7.0);
        assert_eq!(sum(text, "x_total", &["b=\"3\""]), 4.0);
        assert_eq!(sum(text, "y_total", &[]), 9.0);
        assert_eq!(sum(text, "z_total", &[]), 0.0);
        assert_eq!(max(text, "x_total", &[]), Some(4.0));
        assert_eq!(max(text, "z_total", &[]), None);
    }

    #[test]
    fn labels_match_whole_pairs_not_substrings() {
        let text = "# TYPE p_total counter\np_total{outcome=\"approved\"} 2\np_total{xoutcome=\"approved\",outcome=\"declined\"} 5\n";
        assert_eq!(sum(text, "p_total", &["outcome=\"approved\""]), 2.0);
        assert_eq!(sum(text, "p_total", &["outcome=\"declined\""]), 5.0);
    }

    #[test]
    fn reads_the_classic_text_our_services_answer() {
        let text = "# HELP lag Lag.\n# TYPE lag gauge\nlag{topic=\"a\"} 3\nlag{topic=\"b\"} 4\n\
                    # HELP d_seconds D.\n# TYPE d_seconds histogram\n\
                    d_seconds_bucket{le=\"0.1\"} 1\nd_seconds_bucket{le=\"+Inf\"} 2\n\
                    d_seconds_sum 0.3\nd_seconds_count 2\n\
                    # HELP c_total C.\n# TYPE c_total counter\nc_total 7 1700000000000\n";
        assert_eq!(sum(text, "lag", &[]), 7.0);
        assert_eq!(max(text, "lag", &[]), Some(4.0));
        assert_eq!(sum(text, "d_seconds_count", &[]), 2.0);
        assert_eq!(sum(text, "c_total", &[]), 7.0);
    }

    /// A real metrics server (the services' own) on an ephemeral port.
    #[tokio::test]
    async fn scrapes_a_live_metrics_endpoint() {
        let metrics = kausal_telemetry::Metrics::new();
        let shipped = metrics.topic_event_type("shipments", Some("ShipmentCreated"));
        metrics.events_published.get_or_create(&shipped).inc_by(3);
        let other = metrics.topic_event_type("orders", Some("OrderPlaced"));
        metrics.events_published.get_or_create(&other).inc();
        metrics
            .event_processing_duration
            .get_or_create(&other)
            .observe(0.01);
        let (addr, task) = kausal_telemetry::serve_metrics(
            "127.0.0.1:0".parse().expect("addr"),
            metrics,
            std::future::pending(),
        )
        .await
        .expect("serve");
        let text = fetch(addr).await.expect("scraped");
        assert_eq!(sum(&text, "events_published_total", &[]), 4.0);
        assert_eq!(
            sum(
                &text,
                "events_published_total",
                &["event_type=\"ShipmentCreated\""]
            ),
            3.0
        );
        task.abort();
    }

    /// An endpoint that accepts and never answers costs the deadline, not a
    /// hang.
    #[tokio::test]
    async fn a_silent_endpoint_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            fetch_with(addr, Duration::from_millis(300), MAX_BODY),
        )
        .await
        .expect("fetch_with hung past its deadline");
        assert!(result.is_err(), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        hold.abort();
    }

    /// A body over the cap is an error, whether announced or streamed.
    #[tokio::test]
    async fn an_oversized_body_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let serve = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // The request's head first: a response before it is one
                    // hyper refuses.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
                        .await;
                    let line = b"x_total 1\n".repeat(100);
                    for _ in 0..100 {
                        if socket.write_all(&line).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let err = fetch_with(addr, Duration::from_secs(5), 4096)
            .await
            .expect_err("over the cap");
        assert!(format!("{err:#}").contains("limit"), "{err:#}");
        // Under a cap it fits in, the same body reads whole.
        let text = fetch_with(addr, Duration::from_secs(5), MAX_BODY)
            .await
            .expect("fits");
        assert_eq!(sum(&text, "x_total", &[]), 10_000.0);
        serve.abort();
    }
}
