//! The console's pages in a real browser (issue 13): headless Chromium
//! (Debian's `chromium`) driven over WebDriver (Debian's `chromium-driver`,
//! through `fantoccini`) against a `kausal console` process serving a real
//! payment outage's ledger (`console_dlq::payment_outage`). An on-call
//! engineer's path: the order id into the search box, the correlation page
//! with the answer, the red hop in the graph, then the dead letter replayed
//! from the page — refused with a wrong token, a dry run first, then for
//! real — and the ledger saying `replayed`.

use std::time::{Duration, Instant};

use fantoccini::Locator;

use super::{
    ChromeDriver, act, assert_clean, close_all, keep_token, screenshot, search, text, until,
};
use crate::console_dlq::payment_outage;

const TOKEN: &str = "browser-test-token";

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
    let (console, addr) = outage.start_console(TOKEN).await;
    let base = format!("http://{addr}");
    let pipeline_ready = started.elapsed();
    let c = driver.browser().await;

    // The order id in the search box leads to its correlation page.
    search(&c, &base, "ord-web-1").await;
    until(Duration::from_secs(10), "the correlation page", || async {
        let url = c.current_url().await.ok()?;
        (url.path() == "/correlations/checkout-web-1").then_some(())
    })
    .await;

    assert_clean(&c, "the search and correlation pages", &[]).await;

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
        false,
    );

    let row = format!("tr[data-dlq-id=\"{}\"]", entry.dlq_id);
    // Without a token, and with a wrong one: refused in the page, nothing changes.
    act(&c, &row, "replay-dry", "Paste the console's token").await;
    keep_token(&c, "not-the-token").await;
    let refused = act(&c, &row, "replay-dry", "Refused").await;
    assert!(refused.contains("Bearer"), "{refused}");
    assert_eq!(
        text(&c, "#token-state").await,
        "No token yet.",
        "a refused token is forgotten"
    );
    assert_eq!(outage.pending().await.len(), 1, "nothing changed");
    assert_clean(&c, "the refused replay", &["status of 401"]).await;

    // The right token; a dry run first, which changes nothing.
    keep_token(&c, TOKEN).await;
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

    assert_clean(&c, "the replay and the reloads", &[]).await;
    close_all(c, console, outage).await;
}
