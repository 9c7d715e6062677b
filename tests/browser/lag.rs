//! The lag page in a real browser (issue 13): a real broker where a
//! consumer group read part of a topic, committed and stopped while records
//! kept coming (so it is behind), beside the payment service of a payment
//! outage (caught up); the real `kausal console --kafka …` process samples
//! them every 5 s. The page shows the stopped group first with its lag in
//! records, its chart drawn, its partitions; more records produced while
//! the page is open change the numbers through the live refresh, without
//! a reload (a marker set on `window` survives) and without closing the
//! partitions the user opened or losing the focus.

use std::time::Duration;

use fantoccini::{Client, Locator};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use super::{ChromeDriver, assert_clean, assert_fits_a_phone, close_all, screenshot, text, until};
use crate::console_dlq::{Outage, payment_outage};
use crate::harness::group_consumer;

const TOKEN: &str = "browser-lag-token";
/// The stopped group and the topic it is behind on.
const GROUP: &str = "invoice-service";
const TOPIC: &str = "invoices";

/// Produces `n` records to partition `partition` of [`TOPIC`].
async fn produce(outage: &Outage, partition: i32, n: usize) {
    let producer = outage.broker.plain_producer();
    for i in 0..n {
        let key = format!("inv-{partition}-{i}");
        producer
            .send(
                FutureRecord::<str, str>::to(TOPIC)
                    .partition(partition)
                    .key(&key)
                    .payload("{}"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

/// [`GROUP`] reads `invoices` up to these offsets, commits, and stops; its
/// receipt in the ledger is how the console learns it reads that topic.
async fn stopped_group(outage: &Outage, committed: &[(i32, i64)]) {
    let consumer = group_consumer(&outage.broker, GROUP);
    let mut offsets = TopicPartitionList::new();
    for (partition, offset) in committed {
        offsets
            .add_partition_offset(TOPIC, *partition, Offset::Offset(*offset))
            .expect("offsets");
    }
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("the group commits");
    let receipt = kausal_store::Receipt {
        receipt_id: format!("{GROUP}-receipt"),
        event_id: "inv-event-1".into(),
        consumer_group: GROUP.into(),
        service: GROUP.into(),
        topic: TOPIC.into(),
        partition: 0,
        offset: committed[0].1 - 1,
        outcome: "processed".into(),
        attempts: 1,
        error_type: None,
        error_message: None,
        duration_ms: 1.0,
        trace_id: None,
        span_id: None,
        handled_at_ms: chrono::Utc::now().timestamp_millis(),
        correlation_id: None,
    };
    outage
        .store
        .record_batch(&[], &[receipt], &[])
        .await
        .expect("the receipt is recorded");
}

/// The text of `css`, or `None` while it is not on the page.
async fn text_of(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn script(c: &Client, js: &str) -> serde_json::Value {
    c.execute(js, vec![]).await.expect("script")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_group_leads_the_lag_page_and_the_live_refresh_follows_it_without_a_reload() {
    let driver = ChromeDriver::start();
    let outage = payment_outage(&[("ord-lag-1", "checkout-lag-1")]).await;
    outage.broker.create_topics(&[(TOPIC, 2)]).await;
    // Read 3 + 2 records, then stop; 4 + 2 more arrive: 6 behind.
    produce(&outage, 0, 3).await;
    produce(&outage, 1, 2).await;
    stopped_group(&outage, &[(0, 3), (1, 2)]).await;
    produce(&outage, 0, 4).await;
    produce(&outage, 1, 2).await;
    let (console, addr) = outage.start_console(TOKEN).await;
    let c = driver.browser().await;
    c.goto(&format!("http://{addr}/lag"))
        .await
        .expect("the lag page");
    assert_eq!(
        text(&c, "h1").await,
        "Consumer lag",
        "the page, not an error"
    );

    let group = format!("#group-{GROUP}");
    let records = format!("{group} strong.records");
    // The first sample arrives through the live refresh if the page was
    // loaded before it.
    until(
        Duration::from_secs(30),
        "the stopped group 6 behind",
        || async { (text_of(&c, &records).await? == "6").then_some(()) },
    )
    .await;
    let marker = "window.kausalLagMarker = 'no reload'; return true;";
    script(&c, marker).await;

    // Worst first: the stopped group before the caught-up payment service.
    let first = c
        .find(Locator::Css("section.lag-group"))
        .await
        .expect("a group section");
    assert_eq!(
        first.attr("id").await.expect("id").as_deref(),
        Some("group-invoice-service")
    );
    until(
        Duration::from_secs(20),
        "the payment service, caught up",
        || async {
            (text_of(&c, "#group-payment-service strong.records").await? == "0").then_some(())
        },
    )
    .await;
    let status = text(&c, &format!("{group} h2 .status")).await;
    assert!(["OK", "WARN", "ERR"].contains(&status.as_str()), "{status}");
    let facts = text(&c, &format!("{group} .lag-facts")).await;
    assert!(facts.starts_with("6 records behind"), "{facts}");

    // The chart: a line once two samples are in, the current value written.
    until(Duration::from_secs(20), "the chart's line", || async {
        c.find(Locator::Css(&format!(
            "{group} svg.lag-chart polyline.line"
        )))
        .await
        .ok()
        .map(|_| ())
    })
    .await;
    assert_eq!(
        text(&c, &format!("{group} svg.lag-chart .now-label")).await,
        "now 6"
    );
    let caption = text(&c, &format!("{group} figure.lag-chart figcaption")).await;
    assert!(caption.ends_with("now 6 records."), "{caption}");

    // Links to the group's failures and its topic.
    let failures = c
        .find(Locator::LinkText("recent failures"))
        .await
        .expect("the failures link");
    assert_eq!(
        failures.attr("href").await.expect("href").as_deref(),
        Some("/dlq?consumer_group=invoice-service#list")
    );
    assert!(
        c.find(Locator::Css(&format!(
            "{group} a[href=\"/topics/{TOPIC}\"]"
        )))
        .await
        .is_ok(),
        "the topic is linked"
    );

    // The partitions, opened by the user: committed, high watermark, lag.
    let details = format!("{group}-partitions");
    c.find(Locator::Css(&format!("{details} summary")))
        .await
        .expect("the partitions' summary")
        .click()
        .await
        .expect("open the partitions");
    let rows = text(&c, &format!("{details} tbody")).await;
    assert!(
        rows.contains(&format!("{TOPIC} 0")) && rows.contains("3 7 4"),
        "partition 0: committed 3, high watermark 7, 4 behind: {rows}"
    );
    assert!(rows.contains("2 4 2"), "partition 1: {rows}");
    assert_clean(&c, "the lag page", &[]).await;
    screenshot("lag", &c.screenshot().await.expect("screenshot"), true);

    // More records while the page is open: the number changes in place.
    produce(&outage, 1, 5).await;
    until(
        Duration::from_secs(30),
        "the live refresh to show 11 behind",
        || async { (text_of(&c, &records).await? == "11").then_some(()) },
    )
    .await;
    let survived = script(
        &c,
        "return [window.kausalLagMarker || null, \
         document.querySelector('#group-invoice-service-partitions').open, \
         document.activeElement.parentElement && document.activeElement.parentElement.id];",
    )
    .await;
    assert_eq!(
        survived,
        json!(["no reload", true, "group-invoice-service-partitions"]),
        "no reload, the partitions still open and their summary still focused"
    );
    let rows = text(&c, &format!("{details} tbody")).await;
    assert!(rows.contains("2 9 7"), "partition 1 now 7 behind: {rows}");
    assert!(
        text(&c, "#live-state")
            .await
            .starts_with("Live: refreshed at"),
        "the live state says when"
    );

    // At a phone's width nothing overflows the page (tables scroll inside).
    assert_fits_a_phone(&c, "the lag page", "lag-phone").await;

    assert_clean(&c, "the live refreshes", &[]).await;
    close_all(c, console, outage).await;
}
