//! The dead letters' pages in a real browser (issue 13): a payment outage
//! dead-letters five orders; `/dlq` shows the ledger's own figures; one
//! entry is discarded with a reason from the list; a wrong token is refused
//! in the page; the breakdown's topic link filters the list; the bulk dry
//! run lists exactly the pending entries the filter selects, the real run
//! replays those with the progress shown, the ledger says `replayed` and
//! the live figures follow; the detail page shows the discarded entry's
//! reason, its headers with the trace as a link, its payload and lineage.
//! Both pages are also checked at phone width (nothing wider than the
//! screen) and photographed (`dlq`, `dlq-detail`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};

use super::{
    ChromeDriver, act, assert_clean, assert_fits_a_phone, close_all, keep_token, screenshot, text,
    until,
};
use crate::console_dlq::payment_outage;

const TOKEN: &str = "browser-dlq-token";

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// The dashboard's figure `stat` as shown.
async fn figure(c: &Client, stat: &str) -> String {
    text(c, &format!("#dlq-numbers [data-stat=\"{stat}\"] dd.value")).await
}

/// The bulk panel's state line, once it contains `expected`.
async fn bulk_state(c: &Client, expected: &str) -> String {
    until(Duration::from_secs(60), expected, || async {
        let t = text(c, "#bulk output.bulk-state").await;
        t.contains(expected).then_some(t)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letters_are_counted_filtered_bulk_replayed_and_discarded_from_the_page() {
    let started = Instant::now();
    let driver = ChromeDriver::start();
    let orders: Vec<(String, String)> = (1..=5)
        .map(|i| (format!("ord-dlq-{i}"), format!("checkout-dlq-{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = orders
        .iter()
        .map(|(o, c)| (o.as_str(), c.as_str()))
        .collect();
    let outage = payment_outage(&refs).await;
    let pending = outage.pending().await;
    let discarded = pending
        .iter()
        .find(|e| e.correlation_id.as_deref() == Some("checkout-dlq-5"))
        .expect("the fifth order's dead letter")
        .clone();
    let (console, addr) = outage.start_console(TOKEN).await;
    let base = format!("http://{addr}");
    let pipeline_ready = started.elapsed();
    let c = driver.browser().await;

    // The dashboard shows the ledger's own figures.
    c.goto(&format!("{base}/dlq")).await.expect("/dlq");
    let stats = kausal_console::dlq::stats(&outage.store, chrono::Utc::now().timestamp_millis())
        .await
        .expect("the ledger's stats");
    assert_eq!(stats.pending, 5);
    assert_eq!(figure(&c, "pending").await, stats.pending.to_string());
    assert_eq!(
        figure(&c, "inflow").await,
        stats.inflow_last_hour.to_string()
    );
    assert_eq!(
        figure(&c, "outflow").await,
        stats.outflow_last_hour.to_string()
    );
    assert_ne!(
        figure(&c, "oldest").await,
        "—",
        "the oldest pending entry's age"
    );
    let by_topic = text(&c, "#dlq-by-topic tbody").await;
    assert_eq!(
        by_topic,
        format!("orders {}", stats.pending_by_source_topic["orders"]),
        "one topic, all five"
    );
    let (error_type, n) = stats
        .pending_by_error_type
        .iter()
        .next()
        .expect("an error type");
    assert_eq!(
        text(&c, "#dlq-by-error tbody").await,
        format!("{error_type} {n}")
    );
    let described = c
        .find(Locator::Css("#dlq-trend-desc"))
        .await
        .expect("the chart's description")
        .prop("textContent")
        .await
        .expect("text")
        .unwrap_or_default();
    assert!(described.contains("5 entries failed"), "{described}");
    assert_eq!(
        c.find_all(Locator::Css("#list tr[data-dlq-id]"))
            .await
            .expect("rows")
            .len(),
        5
    );
    assert_clean(&c, "/dlq", &[]).await;
    screenshot("dlq", &c.screenshot().await.expect("screenshot"), true);
    assert_fits_a_phone(&c, "/dlq", "dlq-phone").await;

    // A wrong token: the dry run is refused in the page, nothing changes.
    keep_token(&c, "not-the-token").await;
    click(&c, "#bulk button[data-bulk=\"dry-run\"]").await;
    let refused = bulk_state(&c, "Refused").await;
    assert!(refused.contains("Bearer"), "{refused}");
    assert_eq!(outage.pending().await.len(), 5, "nothing changed");
    assert_clean(&c, "the refused dry run", &["status of 401"]).await;

    // Discard the fifth order's entry from its row, with a reason.
    keep_token(&c, TOKEN).await;
    let row = format!("tr[data-dlq-id=\"{}\"]", discarded.dlq_id);
    c.find(Locator::Css(&format!("{row} input.reason")))
        .await
        .expect("reason box")
        .send_keys("customer cancelled the order")
        .await
        .expect("type");
    act(&c, &row, "discard-dry", "Dry run: would discard it").await;
    act(&c, &row, "discard", "Discarded.").await;
    let entry = outage
        .store
        .dead_letter(&discarded.dlq_id)
        .await
        .expect("read")
        .expect("entry");
    assert_eq!(entry.status, "discarded");
    assert_eq!(
        entry.status_reason.as_deref(),
        Some("customer cancelled the order")
    );

    // The topic in the breakdown filters the list: the four still pending.
    click(&c, "#dlq-by-topic a").await;
    until(Duration::from_secs(10), "the filtered list", || async {
        let url = c.current_url().await.ok()?;
        (url.query() == Some("source_topic=orders")).then_some(())
    })
    .await;
    let topic_box = c
        .find(Locator::Css("#f-topic"))
        .await
        .expect("topic box")
        .prop("value")
        .await
        .expect("value");
    assert_eq!(topic_box.as_deref(), Some("orders"));
    let still_pending: BTreeSet<String> = outage
        .pending()
        .await
        .into_iter()
        .map(|e| e.dlq_id)
        .collect();
    assert_eq!(still_pending.len(), 4);
    let mut listed = BTreeSet::new();
    for r in c
        .find_all(Locator::Css("#list tr[data-dlq-id]"))
        .await
        .expect("rows")
    {
        listed.insert(r.attr("data-dlq-id").await.expect("attr").expect("id"));
    }
    assert_eq!(listed, still_pending, "the list is the ledger's pending");

    // The bulk dry run lists exactly those, and changes nothing.
    click(&c, "#bulk button[data-bulk=\"dry-run\"]").await;
    let dry = bulk_state(&c, "4 entries would be replayed").await;
    assert!(dry.contains("nothing changed"), "{dry}");
    let mut planned = BTreeSet::new();
    for r in c
        .find_all(Locator::Css("#bulk table.bulk-results tr[data-bulk-id]"))
        .await
        .expect("results")
    {
        planned.insert(r.attr("data-bulk-id").await.expect("attr").expect("id"));
        assert_eq!(
            r.text().await.expect("text").split(' ').nth(1),
            Some("would")
        );
    }
    assert_eq!(
        planned, still_pending,
        "the dry run names exactly the pending entries"
    );
    assert_eq!(outage.pending().await.len(), 4, "a dry run changes nothing");
    let replay_button = c
        .find(Locator::Css("#bulk button[data-bulk=\"replay\"]"))
        .await
        .expect("replay button");
    assert_eq!(
        replay_button.text().await.expect("text"),
        "Replay 4 entries now"
    );

    // The real run: progress to 4 of 4, each entry replayed, the ledger too.
    replay_button.click().await.expect("replay");
    let done = bulk_state(&c, "Done:").await;
    assert!(done.contains("4 of 4 handled, 4 replayed"), "{done}");
    assert_eq!(text(&c, "#bulk output.count").await, "4 of 4");
    let bar = c.find(Locator::Css("#bulk-progress")).await.expect("bar");
    assert_eq!(
        bar.attr("value").await.expect("value").as_deref(),
        Some("4")
    );
    assert_eq!(bar.attr("max").await.expect("max").as_deref(), Some("4"));
    assert!(
        bar.is_displayed().await.expect("shown"),
        "the progress is shown"
    );
    for id in &still_pending {
        let result = text(&c, &format!("#bulk tr[data-bulk-id=\"{id}\"] td.result")).await;
        assert!(result.starts_with("replayed to orders["), "{id}: {result}");
        assert_eq!(
            text(&c, &format!("#list tr[data-dlq-id=\"{id}\"] [data-status]")).await,
            "replayed"
        );
        assert!(
            !c.find(Locator::Css(&format!(
                "#list tr[data-dlq-id=\"{id}\"] button[data-action=\"replay-dry\"]"
            )))
            .await
            .expect("the row's button")
            .is_displayed()
            .await
            .expect("displayed"),
            "{id}: a replayed row offers no replay"
        );
        assert_eq!(
            text(
                &c,
                &format!("#list tr[data-dlq-id=\"{id}\"] [data-replays]")
            )
            .await,
            "1"
        );
        let entry = outage
            .store
            .dead_letter(id)
            .await
            .expect("read")
            .expect("entry");
        assert_eq!(entry.status, "replayed", "{id}");
        assert_eq!(entry.replay_count, 1, "{id}");
    }
    assert!(outage.pending().await.is_empty());
    screenshot(
        "dlq-bulk-replay",
        &c.screenshot().await.expect("screenshot"),
        false,
    );

    // The live figures follow without a reload, and the list says it is behind.
    until(Duration::from_secs(30), "the live figures", || async {
        (figure(&c, "pending").await == "0").then_some(())
    })
    .await;
    assert_eq!(figure(&c, "outflow").await, "5");
    assert!(
        c.find(Locator::Css("#dlq-list-stale"))
            .await
            .expect("note")
            .is_displayed()
            .await
            .expect("shown"),
        "the list says the ledger moved on"
    );
    assert_clean(&c, "the discard, the filter and the bulk replay", &[]).await;

    // The discarded entry's page: who and why, headers, payload, lineage.
    c.goto(&format!("{base}/dlq/{}", discarded.dlq_id))
        .await
        .expect("detail");
    let status = text(&c, "#status").await;
    assert!(
        status.contains("discarded by console") && status.contains("customer cancelled the order"),
        "{status}"
    );
    let trace = c
        .find(Locator::Css("table.headers a[href^=\"/traces/\"]"))
        .await
        .expect("the traceparent's trace as a link")
        .text()
        .await
        .expect("text");
    assert_eq!(trace.len(), 32, "{trace}");
    assert!(
        c.find(Locator::Css(
            "table.headers a[href=\"/correlations/checkout-dlq-5\"]"
        ))
        .await
        .is_ok(),
        "the correlation id as a link"
    );
    let payload = text(&c, "#payload pre.bytes:last-of-type").await;
    assert!(
        payload.contains("\"order_id\": \"ord-dlq-5\""),
        "pretty JSON: {payload}"
    );
    assert!(
        text(&c, "#lineage table.chain tr.here")
            .await
            .contains("OrderPlaced"),
        "the dead-lettered event is marked in the chain"
    );
    assert_clean(&c, "/dlq/{id}", &[]).await;
    screenshot(
        "dlq-detail",
        &c.screenshot().await.expect("screenshot"),
        false,
    );
    assert_fits_a_phone(&c, "/dlq/{id}", "dlq-detail-phone").await;

    // An unknown id: 404 with the way back.
    c.goto(&format!("{base}/dlq/no-such-entry"))
        .await
        .expect("404");
    assert_eq!(text(&c, "h1").await, "No such dead letter");
    click(&c, "p.message a[href=\"/dlq\"]").await;
    until(Duration::from_secs(10), "back on /dlq", || async {
        (c.current_url().await.ok()?.path() == "/dlq").then_some(())
    })
    .await;
    assert_clean(&c, "the 404 and the way back", &["status of 404"]).await;

    println!(
        "dlq browser test: pipeline and console ready in {:.1} s, browser part {:.1} s",
        pipeline_ready.as_secs_f64(),
        (started.elapsed() - pipeline_ready).as_secs_f64()
    );
    close_all(c, console, outage).await;
}
