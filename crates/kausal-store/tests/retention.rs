//! Retention of lineage on every configured backend: events, receipts and
//! idempotency keys older than the cut leave in small batches, newer rows
//! stay, dead letters are never pruned, and the queries keep answering.
//!
//! ```text
//! correlation "op-old" (recorded at 1 000 ms):  o1 ─ o2 ─ o3
//! correlation "op-mix":                         m1 (old) ─ m2 (new)
//! correlation "op-new" (recorded at 9 000 ms):  n1 ─ n2
//! cut: 5 000 ms
//! ```

use kausal_store::{
    BatchCounts, DeadLetterEntry, LineageEvent, PrunedLineage, Receipt, Store, testing,
};

const CUT_MS: i64 = 5_000;
const OLD_MS: i64 = 1_000;
const NEW_MS: i64 = 9_000;

fn event(
    id: &str,
    causation: Option<&str>,
    correlation: &str,
    offset: i64,
    at: i64,
) -> LineageEvent {
    LineageEvent {
        event_id: id.to_owned(),
        event_type: Some("OrderPlaced".to_owned()),
        event_version: Some(1),
        correlation_id: correlation.to_owned(),
        causation_id: causation.map(str::to_owned),
        source_service: Some("order-service".to_owned()),
        topic: "orders".to_owned(),
        partition: 0,
        offset,
        key: Some(format!("key-{correlation}")),
        trace_id: None,
        span_id: None,
        // The record's own timestamp says nothing about age: the recorder's
        // clock does. Old rows claim a recent timestamp and vice versa.
        occurred_at_ms: if at == OLD_MS { NEW_MS } else { OLD_MS },
        recorded_at_ms: at,
    }
}

fn receipt(id: &str, event_id: &str, correlation: &str, at: i64) -> Receipt {
    Receipt {
        receipt_id: id.to_owned(),
        event_id: event_id.to_owned(),
        consumer_group: "payment-service".to_owned(),
        service: "payment-service".to_owned(),
        topic: "orders".to_owned(),
        partition: 0,
        offset: 0,
        outcome: "processed".to_owned(),
        attempts: 1,
        error_type: None,
        error_message: None,
        duration_ms: 1.5,
        trace_id: None,
        span_id: None,
        handled_at_ms: at,
        correlation_id: Some(correlation.to_owned()),
    }
}

fn dead_letter(id: &str, event_id: &str, status: &str, failed_at_ms: i64) -> DeadLetterEntry {
    DeadLetterEntry {
        dlq_id: id.to_owned(),
        dlq_topic: "orders.dlq".to_owned(),
        dlq_partition: 0,
        dlq_offset: 0,
        event_id: event_id.to_owned(),
        correlation_id: Some("op-old".to_owned()),
        event_type: Some("OrderPlaced".to_owned()),
        source_topic: "orders".to_owned(),
        source_partition: Some(0),
        source_offset: Some(0),
        source_timestamp_ms: Some(failed_at_ms),
        consumer_group: Some("payment-service".to_owned()),
        service: Some("payment-service".to_owned()),
        error_type: Some("PaymentGatewayError".to_owned()),
        error_message: Some("gateway down".to_owned()),
        attempts: Some(3),
        failed_at_ms,
        key: Some(b"key-op-old".to_vec()),
        payload: Some(b"{}".to_vec()),
        headers_json: "[]".to_owned(),
        status: status.to_owned(),
        status_changed_at_ms: None,
        status_by: None,
        status_reason: None,
        replay_count: 0,
    }
}

fn ids(events: &[LineageEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_id.as_str()).collect()
}

async fn fill(label: &str, store: &Store) {
    let events = vec![
        event("o1", None, "op-old", 0, OLD_MS),
        event("o2", Some("o1"), "op-old", 1, OLD_MS),
        event("o3", Some("o2"), "op-old", 2, OLD_MS),
        event("m1", None, "op-mix", 3, OLD_MS),
        event("m2", Some("m1"), "op-mix", 4, NEW_MS),
        event("n1", None, "op-new", 5, NEW_MS),
        event("n2", Some("n1"), "op-new", 6, NEW_MS),
    ];
    let receipts = vec![
        receipt("r-o1", "o1", "op-old", OLD_MS),
        receipt("r-o2", "o2", "op-old", OLD_MS),
        receipt("r-o3", "o3", "op-old", OLD_MS),
        receipt("r-n1", "n1", "op-new", NEW_MS),
    ];
    // Old dead letters, pending and replayed: the ledger keeps both.
    let dead = vec![
        dead_letter("d-pending", "o3", "pending", OLD_MS),
        dead_letter("d-replayed", "o2", "replayed", OLD_MS),
    ];
    let counts = store
        .record_batch(&events, &receipts, &dead)
        .await
        .expect(label);
    assert_eq!(
        counts,
        BatchCounts {
            events: 7,
            receipts: 4,
            dead_letters: 2
        },
        "{label}"
    );
    for (event_id, at) in [
        ("o1", OLD_MS),
        ("o2", OLD_MS),
        ("o2#dead-lettered#0", OLD_MS),
        ("n1", NEW_MS),
    ] {
        assert!(
            store
                .mark_processed("payment-service", event_id, at)
                .await
                .expect(label),
            "{label}"
        );
    }
}

#[tokio::test]
async fn old_lineage_leaves_in_small_batches_new_rows_and_dead_letters_stay_on_every_backend() {
    for db in testing::databases().await.expect("test databases") {
        let label = db.label;
        let store = testing::connect(&db).await.expect(label);
        fill(label, &store).await;

        // Batches of two rows per table: the old rows take several calls.
        let mut total = PrunedLineage::default();
        let mut calls = 0;
        loop {
            let pruned = store.prune_lineage(CUT_MS, 2).await.expect(label);
            assert!(
                pruned.events <= 2 && pruned.receipts <= 2 && pruned.idempotency_keys <= 2,
                "{label}: a batch is bounded: {pruned:?}"
            );
            if pruned.total() == 0 {
                break;
            }
            calls += 1;
            total.events += pruned.events;
            total.receipts += pruned.receipts;
            total.idempotency_keys += pruned.idempotency_keys;
        }
        assert_eq!(
            total,
            PrunedLineage {
                events: 4,
                receipts: 3,
                idempotency_keys: 3
            },
            "{label}"
        );
        assert_eq!(calls, 2, "{label}: four old events in batches of two");
        assert_eq!(
            store.lineage_row_counts().await.expect(label),
            BatchCounts {
                events: 3,
                receipts: 1,
                dead_letters: 2
            },
            "{label}: dead letters are never pruned"
        );

        // The new correlation answers as before.
        assert_eq!(
            ids(&store.chain("op-new").await.expect(label)),
            ["n1", "n2"],
            "{label}"
        );
        assert_eq!(
            store
                .receipts_for_correlation("op-new")
                .await
                .expect(label)
                .len(),
            1,
            "{label}"
        );
        let below: Vec<_> = store
            .descendants("n1")
            .await
            .expect(label)
            .into_iter()
            .map(|(e, depth)| (e.event_id, depth))
            .collect();
        assert_eq!(below, [("n2".to_owned(), 1)], "{label}");
        assert_eq!(
            store
                .root_cause("n2")
                .await
                .expect(label)
                .map(|e| e.event_id)
                .as_deref(),
            Some("n1"),
            "{label}"
        );
        assert_eq!(
            ids(&store.events_by_key("key-op-new").await.expect(label)),
            ["n1", "n2"],
            "{label}"
        );

        // The old one is gone; its dead letters are still there, whole.
        assert!(
            store.chain("op-old").await.expect(label).is_empty(),
            "{label}"
        );
        assert!(
            store
                .receipts_for_correlation("op-old")
                .await
                .expect(label)
                .is_empty(),
            "{label}"
        );
        let ledger = store
            .dead_letters_for_correlation("op-old")
            .await
            .expect(label);
        assert_eq!(ledger.len(), 2, "{label}");
        let pending = store
            .dead_letter("d-pending")
            .await
            .expect(label)
            .expect("kept");
        assert_eq!(pending.status, "pending", "{label}");
        assert_eq!(pending.payload.as_deref(), Some(&b"{}"[..]), "{label}");

        // A correlation cut in two: the new half answers; its root is now
        // the oldest event still recorded.
        assert_eq!(
            ids(&store.chain("op-mix").await.expect(label)),
            ["m2"],
            "{label}"
        );
        assert_eq!(
            store
                .root_cause("m2")
                .await
                .expect(label)
                .map(|e| e.event_id)
                .as_deref(),
            Some("m2"),
            "{label}"
        );

        // Idempotency keys: old ones gone (a duplicate now would be handled
        // again), new ones kept.
        for (key, kept) in [
            ("o1", false),
            ("o2", false),
            ("o2#dead-lettered#0", false),
            ("n1", true),
        ] {
            assert_eq!(
                store
                    .is_processed("payment-service", key)
                    .await
                    .expect(label),
                kept,
                "{label}: {key}"
            );
        }

        // Nothing older is left: pruning again deletes nothing.
        assert_eq!(
            store.prune_lineage(CUT_MS, 1_000).await.expect(label),
            PrunedLineage::default(),
            "{label}"
        );
    }
}
