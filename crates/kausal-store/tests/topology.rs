//! What the console's topology is made from, on every configured backend:
//! the newest dead letter of each consumer group in a window.

use kausal_store::topology::LatestFailure;
use kausal_store::{DeadLetterEntry, testing};

fn dead_letter(
    id: &str,
    group: Option<&str>,
    correlation: &str,
    failed_at_ms: i64,
) -> DeadLetterEntry {
    DeadLetterEntry {
        dlq_id: id.to_owned(),
        dlq_topic: "orders.dlq".to_owned(),
        dlq_partition: 0,
        dlq_offset: failed_at_ms,
        event_id: format!("ev-{id}"),
        correlation_id: Some(correlation.to_owned()),
        event_type: Some("OrderPlaced".to_owned()),
        source_topic: "orders".to_owned(),
        source_partition: Some(0),
        source_offset: Some(failed_at_ms),
        source_timestamp_ms: Some(failed_at_ms),
        consumer_group: group.map(str::to_owned),
        service: group.map(str::to_owned),
        error_type: Some(format!("Error{id}")),
        error_message: None,
        attempts: Some(1),
        failed_at_ms,
        key: None,
        payload: None,
        headers_json: "[]".to_owned(),
        status: "pending".to_owned(),
        status_changed_at_ms: None,
        status_by: None,
        status_reason: None,
        replay_count: 0,
    }
}

#[tokio::test]
async fn the_latest_failure_of_each_group_is_its_newest_dead_letter_in_the_window() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let letters = [
            dead_letter("p-old", Some("payment"), "corr-1", 1_000),
            dead_letter("p-new", Some("payment"), "corr-2", 3_000),
            dead_letter("p-mid", Some("payment"), "corr-3", 2_000),
            // Before the window: not the inventory group's latest in it.
            dead_letter("i-gone", Some("inventory"), "corr-4", 500),
            dead_letter("n-1", Some("notification"), "corr-5", 2_500),
            // Same time: the smaller id wins, on both backends.
            dead_letter("n-0", Some("notification"), "corr-6", 2_500),
            dead_letter("no-group", None, "corr-7", 4_000),
        ];
        store
            .record_batch(&[], &[], &letters)
            .await
            .expect(db.label);
        let latest = store.latest_failures_since(1_000).await.expect(db.label);
        assert_eq!(
            latest,
            [
                LatestFailure {
                    consumer_group: "notification".into(),
                    dlq_id: "n-0".into(),
                    correlation_id: Some("corr-6".into()),
                    event_id: "ev-n-0".into(),
                    error_type: Some("Errorn-0".into()),
                    failed_at_ms: 2_500,
                },
                LatestFailure {
                    consumer_group: "payment".into(),
                    dlq_id: "p-new".into(),
                    correlation_id: Some("corr-2".into()),
                    event_id: "ev-p-new".into(),
                    error_type: Some("Errorp-new".into()),
                    failed_at_ms: 3_000,
                },
            ],
            "{}",
            db.label
        );
        assert!(
            store
                .latest_failures_since(5_000)
                .await
                .expect(db.label)
                .is_empty(),
            "{}",
            db.label
        );
    }
}
