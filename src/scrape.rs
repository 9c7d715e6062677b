//! Reads counters from a service's `/metrics` for `up`'s live summary.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The exposition text of `http://addr/metrics`, or `None` if unreachable.
pub async fn fetch(addr: SocketAddr) -> Option<String> {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8(buf).ok()?;
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), work)
        .await
        .ok()
        .flatten()
}

/// Sum of every sample of `name` whose labels contain all of `labels`
/// (`key="value"` pairs).
pub fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    samples(text, name, labels).sum()
}

/// The largest sample of `name` with `labels`, `None` if there is none.
pub fn max(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    samples(text, name, labels).reduce(f64::max)
}

fn samples<'a>(
    text: &'a str,
    name: &'a str,
    labels: &'a [&'a str],
) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(move |l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_part) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            (metric == name && labels.iter().all(|want| label_part.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
