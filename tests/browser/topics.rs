//! The topics pages in a real browser (issue 13): the broker of a real
//! payment outage (`console_dlq::payment_outage`: business topics with an
//! order placed through the order service, so with the contract's headers,
//! dead-lettered by the payment service), read by the real `kausal console
//! --kafka …` process. `/topics` lists `orders` with its record; the
//! topic's page shows the order with its `traceparent` and `correlation-id`
//! as links, and the correlation link leads to the correlation page; the
//! order id found by key search; the record found again from a partition
//! and an offset typed into the form.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use kausal_contracts::topics;

use super::{ChromeDriver, assert_clean, assert_fits_a_phone, close_all, screenshot, text, until};
use crate::console_dlq::payment_outage;

const TOKEN: &str = "browser-topics-token";
const ORDER: &str = "ord-topic-1";
const CORRELATION: &str = "checkout-topic-1";

/// Types `value` into the field `css` (emptied first).
async fn fill(c: &Client, css: &str, value: &str) {
    let field = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    field.clear().await.expect("clear");
    field.send_keys(value).await.expect("type");
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Waits until the browser is at `path` with a query containing `query`.
async fn arrive(c: &Client, path: &str, query: &str) {
    until(Duration::from_secs(15), path, || async {
        let url = c.current_url().await.ok()?;
        (url.path() == path && url.query().unwrap_or("").contains(query)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_s_records_are_read_with_their_headers_as_links_by_position_and_by_key() {
    let started = Instant::now();
    let driver = ChromeDriver::start();
    let outage = payment_outage(&[(ORDER, CORRELATION)]).await;
    let (console, addr) = outage.start_console(TOKEN).await;
    let base = format!("http://{addr}");
    let c = driver.browser().await;

    // Every topic, `orders` among the business topics with its one record,
    // its dead letter on `orders.dlq` among the dead-letter topics.
    c.goto(&format!("{base}/topics")).await.expect("topics");
    assert_eq!(text(&c, "h1").await, "Topics");
    let orders = format!("#business a.topic[href=\"/topics/{}\"]", topics::ORDERS);
    let row = c
        .find(Locator::XPath(&format!(
            "//section[@id='business']//tr[td/a[.='{}']]",
            topics::ORDERS
        )))
        .await
        .expect("the orders row");
    let cells = row.find_all(Locator::Css("td")).await.expect("cells");
    assert_eq!(cells.len(), 4);
    assert_eq!(cells[1].text().await.expect("partitions"), "3");
    assert_eq!(
        cells[2].text().await.expect("records"),
        "1",
        "the one order placed"
    );
    let dlq = text(&c, "#dead-letter").await;
    assert!(dlq.contains("orders.dlq"), "{dlq}");
    let all = text(&c, "main").await;
    assert!(
        !all.contains("__consumer_offsets"),
        "internal topics are hidden"
    );
    assert_clean(&c, "the topics page", &[]).await;
    screenshot("topics", &c.screenshot().await.expect("screenshot"), false);

    // The topic's page: the order, newest first, headers decoded.
    click(&c, &orders).await;
    arrive(&c, "/topics/orders", "").await;
    let record = c
        .find(Locator::Css("article.record"))
        .await
        .expect("the order's record");
    let anchor = record.attr("id").await.expect("id").expect("an id");
    let head = text(&c, "article.record .record-head").await;
    assert!(head.contains(&format!("key {ORDER}")), "{head}");
    assert!(head.contains("OrderPlaced"), "{head}");
    let trace = c
        .find(Locator::Css(
            "article.record table.headers a[href^=\"/traces/\"]",
        ))
        .await
        .expect("the traceparent as a link");
    let traceparent = trace.text().await.expect("traceparent");
    let trace_id = traceparent
        .split('-')
        .nth(1)
        .expect("a trace id")
        .to_owned();
    assert_eq!(
        trace.attr("href").await.expect("href"),
        Some(format!("/traces/{trace_id}"))
    );
    let value = text(&c, "article.record pre.value").await;
    assert!(value.contains(ORDER), "the order as pretty JSON: {value}");
    let summary = text(&c, "#records .summary").await;
    assert!(summary.contains("Showing 1 record"), "{summary}");
    assert_clean(&c, "the orders topic page", &[]).await;
    screenshot("topic", &c.screenshot().await.expect("screenshot"), false);
    // At a phone's width the records fit the screen (long ids wrap).
    assert_fits_a_phone(&c, "the topic page", "topic-phone").await;

    // The correlation id leads to its correlation page.
    click(
        &c,
        &format!("article.record a[href=\"/correlations/{CORRELATION}\"]"),
    )
    .await;
    arrive(&c, &format!("/correlations/{CORRELATION}"), "").await;
    let h1 = text(&c, "h1").await;
    assert!(h1.contains(CORRELATION), "{h1}");
    assert_clean(&c, "the correlation page from a record", &[]).await;

    // Search by key: the order id, recorded by the lineage recorder.
    c.goto(&format!("{base}/topics/orders"))
        .await
        .expect("topic");
    fill(&c, "#key", ORDER).await;
    click(&c, "form.key button[type=submit]").await;
    arrive(&c, "/topics/orders", &format!("key={ORDER}")).await;
    let found = until(Duration::from_secs(20), "the key's record", || async {
        let summary = text(&c, "#records .summary").await;
        if summary.contains("1 event recorded") {
            return Some(summary);
        }
        // The recorder may still be catching up: ask again.
        c.refresh().await.ok()?;
        None
    })
    .await;
    assert!(found.contains("1 read from Kafka"), "{found}");
    let keyed = c
        .find(Locator::Css("article.record"))
        .await
        .expect("the record found by key");
    assert_eq!(keyed.attr("id").await.expect("id"), Some(anchor.clone()));
    assert_clean(&c, "the key search", &[]).await;

    // A position: the record's partition and offset typed into the form.
    let (partition, offset) = anchor
        .strip_prefix('p')
        .and_then(|a| a.split_once('-'))
        .expect("p<partition>-<offset>");
    c.goto(&format!("{base}/topics/orders"))
        .await
        .expect("topic");
    c.find(Locator::Css(&format!(
        "#partition option[value=\"{partition}\"]"
    )))
    .await
    .expect("the partition's option")
    .click()
    .await
    .expect("choose the partition");
    fill(&c, "#offset", offset).await;
    click(&c, "form.position button[type=submit]").await;
    arrive(
        &c,
        "/topics/orders",
        &format!("partition={partition}&offset={offset}"),
    )
    .await;
    let summary = text(&c, "#records .summary").await;
    assert!(
        summary.contains(&format!("of partition {partition} from offset {offset} on")),
        "{summary}"
    );
    let at = c
        .find(Locator::Css("article.record"))
        .await
        .expect("the record at the position");
    assert_eq!(at.attr("id").await.expect("id"), Some(anchor.clone()));
    let pager = text(&c, "nav.pager").await;
    assert!(pager.contains("At the newest record"), "{pager}");
    // Past the record: nothing yet, said so, and the older link leads back.
    fill(
        &c,
        "#offset",
        &(offset.parse::<i64>().expect("offset") + 1).to_string(),
    )
    .await;
    click(&c, "form.position button[type=submit]").await;
    arrive(&c, "/topics/orders", "offset=").await;
    until(Duration::from_secs(10), "the empty page", || async {
        let notes = text(&c, "#records").await;
        notes
            .contains("No record at or after this position yet")
            .then_some(())
    })
    .await;
    click(&c, "nav.pager a[rel=next]").await;
    arrive(&c, "/topics/orders", "before=").await;
    let back = c
        .find(Locator::Css("article.record"))
        .await
        .expect("the record, older than the empty page");
    assert_eq!(back.attr("id").await.expect("id"), Some(anchor.clone()));
    assert_clean(&c, "the position form and the pager", &[]).await;

    // A time: the last hour holds the order; from a minute ahead, nothing.
    c.goto(&format!("{base}/topics/orders"))
        .await
        .expect("topic");
    fill(&c, "#since", "1h").await;
    click(&c, "form.position button[type=submit]").await;
    arrive(&c, "/topics/orders", "since=1h").await;
    let summary = text(&c, "#records .summary").await;
    assert!(summary.contains("from 1h ("), "{summary}");
    let since = c
        .find(Locator::Css("article.record"))
        .await
        .expect("the record of the last hour");
    assert_eq!(since.attr("id").await.expect("id"), Some(anchor.clone()));
    let ahead = chrono::Utc::now() + chrono::Duration::minutes(1);
    c.goto(&format!(
        "{base}/topics/orders?since={}",
        ahead.format("%Y-%m-%dT%H:%M:%SZ")
    ))
    .await
    .expect("since a minute ahead");
    let notes = text(&c, "#records").await;
    assert!(
        notes.contains("No record at or after this position yet"),
        "{notes}"
    );
    assert_clean(&c, "the time position", &[]).await;

    // A bad position is refused with the reason.
    c.goto(&format!("{base}/topics/orders?offset=-1"))
        .await
        .expect("bad offset");
    let message = text(&c, "p.message").await;
    assert!(message.contains("0 or more"), "{message}");
    c.goto(&format!("{base}/topics/no-such-topic"))
        .await
        .expect("unknown topic");
    assert_eq!(text(&c, "h1").await, "No such topic");
    assert_clean(
        &c,
        "the refused position and the unknown topic",
        &["status of 400", "status of 404"],
    )
    .await;

    println!(
        "browser test (topics): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    close_all(c, console, outage).await;
}
