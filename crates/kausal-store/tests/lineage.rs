//! Lineage, receipts and DLQ ledger tests, run on every configured backend.
//!
//! The graph used by most tests:
//!
//! ```text
//! correlation "op-a":  r ─┬─ c1 ─┬─ g1      correlation "op-b":  d0 ─ d1 ─ d2 ─ d3 ─ d4
//!                         │      └─ g2
//!                         ├─ c2
//!                         └─ c3
//! ```

use kausal_store::{
    BatchCounts, DeadLetterEntry, DeadLetterFilter, LineageEvent, Receipt, Store, testing,
};

fn event(
    id: &str,
    causation: Option<&str>,
    correlation: &str,
    (topic, partition, offset): (&str, i32, i64),
    occurred_at_ms: i64,
) -> LineageEvent {
    LineageEvent {
        event_id: id.to_owned(),
        event_type: Some(format!("Type{id}")),
        event_version: Some(1),
        correlation_id: correlation.to_owned(),
        causation_id: causation.map(str::to_owned),
        source_service: Some("svc".to_owned()),
        topic: topic.to_owned(),
        partition,
        offset,
        key: Some(format!("key-{correlation}")),
        trace_id: Some(format!("trace-{correlation}")),
        span_id: Some(format!("span-{id}")),
        occurred_at_ms,
        recorded_at_ms: occurred_at_ms + 5,
    }
}

/// The graph in the module docs. Given out of time order on purpose: the
/// queries must order, not the insert.
fn graph() -> Vec<LineageEvent> {
    vec![
        event("g1", Some("c1"), "op-a", ("shipments", 0, 0), 1300),
        event("g2", Some("c1"), "op-a", ("notifications", 0, 0), 1300),
        event("c3", Some("r"), "op-a", ("inventory", 0, 0), 1200),
        event("c2", Some("r"), "op-a", ("payments", 1, 0), 1100),
        event("c1", Some("r"), "op-a", ("payments", 0, 0), 1100),
        event("r", None, "op-a", ("orders", 0, 0), 1000),
        event("d4", Some("d3"), "op-b", ("orders", 0, 5), 2400),
        event("d3", Some("d2"), "op-b", ("orders", 0, 4), 2300),
        event("d2", Some("d1"), "op-b", ("orders", 0, 3), 2200),
        event("d1", Some("d0"), "op-b", ("orders", 0, 2), 2100),
        event("d0", None, "op-b", ("orders", 0, 1), 2000),
    ]
}

fn ids(events: &[LineageEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_id.as_str()).collect()
}

fn ids_with_depth(events: &[(LineageEvent, i64)]) -> Vec<(&str, i64)> {
    events
        .iter()
        .map(|(e, depth)| (e.event_id.as_str(), *depth))
        .collect()
}

fn id(event: Option<LineageEvent>) -> Option<String> {
    event.map(|e| e.event_id)
}

async fn stores() -> Vec<(&'static str, Store, testing::TestDatabase)> {
    let mut out = Vec::new();
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        out.push((db.label, store, db));
    }
    out
}

async fn store_with_graph() -> Vec<(&'static str, Store, testing::TestDatabase)> {
    let stores = stores().await;
    for (label, store, _) in &stores {
        store.record_batch(&graph(), &[], &[]).await.expect(label);
    }
    stores
}

#[tokio::test]
async fn chain_is_ordered_by_time_then_topic_partition_offset() {
    for (label, store, _db) in store_with_graph().await {
        let chain = store.chain("op-a").await.expect(label);
        assert_eq!(ids(&chain), ["r", "c1", "c2", "c3", "g2", "g1"], "{label}");
        // Every field survives the round trip.
        let expected = graph().into_iter().find(|e| e.event_id == "c2");
        assert_eq!(chain.get(2), expected.as_ref(), "{label}");
        assert_eq!(
            ids(&store.chain("op-b").await.expect(label)),
            ["d0", "d1", "d2", "d3", "d4"],
            "{label}"
        );
        assert!(
            store.chain("nobody").await.expect(label).is_empty(),
            "{label}"
        );
    }
}

#[tokio::test]
async fn event_by_id_round_trips_and_none_fields_stay_none() {
    for (label, store, _db) in stores().await {
        let bare = LineageEvent {
            event_id: "bare".to_owned(),
            event_type: None,
            event_version: None,
            correlation_id: "op".to_owned(),
            causation_id: None,
            source_service: None,
            topic: "t".to_owned(),
            partition: i32::MAX,
            offset: i64::MAX,
            key: None,
            trace_id: None,
            span_id: None,
            occurred_at_ms: 1,
            recorded_at_ms: 2,
        };
        store
            .record_batch(std::slice::from_ref(&bare), &[], &[])
            .await
            .expect(label);
        assert_eq!(
            store.event("bare").await.expect(label),
            Some(bare),
            "{label}"
        );
        assert_eq!(store.event("missing").await.expect(label), None, "{label}");
    }
}

#[tokio::test]
async fn descendants_come_by_depth_then_time_without_the_event_itself() {
    for (label, store, _db) in store_with_graph().await {
        assert_eq!(
            ids_with_depth(&store.descendants("r").await.expect(label)),
            [("c1", 1), ("c2", 1), ("c3", 1), ("g2", 2), ("g1", 2)],
            "{label}"
        );
        assert_eq!(
            ids_with_depth(&store.descendants("c1").await.expect(label)),
            [("g2", 1), ("g1", 1)],
            "{label}"
        );
        assert_eq!(
            ids_with_depth(&store.descendants("d0").await.expect(label)),
            [("d1", 1), ("d2", 2), ("d3", 3), ("d4", 4)],
            "{label}"
        );
        assert!(
            store.descendants("g1").await.expect(label).is_empty(),
            "{label}"
        );
        assert!(
            store.descendants("missing").await.expect(label).is_empty(),
            "{label}"
        );
    }
}

#[tokio::test]
async fn ancestors_come_nearest_first() {
    for (label, store, _db) in store_with_graph().await {
        assert_eq!(
            ids_with_depth(&store.ancestors("g1").await.expect(label)),
            [("c1", 1), ("r", 2)],
            "{label}"
        );
        assert_eq!(
            ids_with_depth(&store.ancestors("d4").await.expect(label)),
            [("d3", 1), ("d2", 2), ("d1", 3), ("d0", 4)],
            "{label}"
        );
        assert!(
            store.ancestors("r").await.expect(label).is_empty(),
            "{label}"
        );
    }
}

#[tokio::test]
async fn root_cause_walks_up_to_the_first_event_without_a_recorded_cause() {
    for (label, store, _db) in store_with_graph().await {
        assert_eq!(
            id(store.root_cause("d4").await.expect(label)).as_deref(),
            Some("d0"),
            "{label}"
        );
        assert_eq!(
            id(store.root_cause("g1").await.expect(label)).as_deref(),
            Some("r"),
            "{label}"
        );
        // A root is its own root cause.
        assert_eq!(
            id(store.root_cause("r").await.expect(label)).as_deref(),
            Some("r"),
            "{label}"
        );
        assert_eq!(
            store.root_cause("missing").await.expect(label),
            None,
            "{label}"
        );

        // An event whose cause was never recorded is where the walk stops.
        let orphan = event("o", Some("never-recorded"), "op-c", ("orders", 0, 10), 3000);
        let child = event("o1", Some("o"), "op-c", ("payments", 0, 10), 3100);
        store
            .record_batch(&[orphan, child], &[], &[])
            .await
            .expect(label);
        assert_eq!(
            id(store.root_cause("o1").await.expect(label)).as_deref(),
            Some("o"),
            "{label}"
        );
    }
}

#[tokio::test]
async fn common_ancestor_is_the_nearest_shared_ancestor_or_self() {
    for (label, store, _db) in store_with_graph().await {
        let common = async |a: &str, b: &str| id(store.common_ancestor(a, b).await.expect(label));
        // Leaves in different branches meet at the root.
        assert_eq!(common("g1", "c3").await.as_deref(), Some("r"), "{label}");
        assert_eq!(common("g2", "c2").await.as_deref(), Some("r"), "{label}");
        // Siblings meet at their parent, not further up.
        assert_eq!(common("g1", "g2").await.as_deref(), Some("c1"), "{label}");
        // A node and its own descendant meet at the node, either way round.
        assert_eq!(common("c1", "g1").await.as_deref(), Some("c1"), "{label}");
        assert_eq!(common("d4", "d1").await.as_deref(), Some("d1"), "{label}");
        assert_eq!(common("r", "r").await.as_deref(), Some("r"), "{label}");
        // Unrelated trees share nothing.
        assert_eq!(common("g1", "d4").await, None, "{label}");
        assert_eq!(common("g1", "missing").await, None, "{label}");
    }
}

#[tokio::test]
async fn a_causation_cycle_ends_and_has_no_root_cause() {
    for (label, store, _db) in stores().await {
        let x = event("x", Some("y"), "op-x", ("orders", 0, 0), 1);
        let y = event("y", Some("x"), "op-x", ("orders", 0, 1), 2);
        store.record_batch(&[x, y], &[], &[]).await.expect(label);
        assert_eq!(
            ids_with_depth(&store.descendants("x").await.expect(label)),
            [("y", 1)],
            "{label}"
        );
        assert_eq!(
            ids_with_depth(&store.ancestors("x").await.expect(label)),
            [("y", 1)],
            "{label}"
        );
        assert_eq!(store.root_cause("x").await.expect(label), None, "{label}");
        assert_eq!(
            id(store.common_ancestor("x", "y").await.expect(label)).as_deref(),
            Some("x"),
            "{label}"
        );
    }
}

#[tokio::test]
async fn events_by_key_returns_one_keys_events_in_time_order() {
    for (label, store, _db) in store_with_graph().await {
        assert_eq!(
            ids(&store.events_by_key("key-op-b").await.expect(label)),
            ["d0", "d1", "d2", "d3", "d4"],
            "{label}"
        );
        assert_eq!(
            ids(&store.events_by_key("key-op-a").await.expect(label)),
            ["r", "c1", "c2", "c3", "g2", "g1"],
            "{label}"
        );
        assert!(
            store
                .events_by_key("key-none")
                .await
                .expect(label)
                .is_empty(),
            "{label}"
        );
    }
}

fn receipt(id: &str, event_id: &str, handled_at_ms: i64) -> Receipt {
    Receipt {
        receipt_id: id.to_owned(),
        event_id: event_id.to_owned(),
        consumer_group: "payment".to_owned(),
        service: "payment".to_owned(),
        topic: "orders".to_owned(),
        partition: 2,
        offset: 41,
        outcome: "processed".to_owned(),
        attempts: 1,
        error_type: None,
        error_message: None,
        duration_ms: 12.5,
        trace_id: Some("trace".to_owned()),
        span_id: Some("span".to_owned()),
        handled_at_ms,
        correlation_id: Some("op-a".to_owned()),
    }
}

/// Key and payload bytes that are not UTF-8 (0xff, 0xfe, a lone
/// continuation byte) and contain a NUL.
fn dead_letter(id: &str, failed_at_ms: i64) -> DeadLetterEntry {
    DeadLetterEntry {
        dlq_id: id.to_owned(),
        dlq_topic: "orders.dlq".to_owned(),
        dlq_partition: 0,
        dlq_offset: 7,
        event_id: "c2".to_owned(),
        correlation_id: Some("op-a".to_owned()),
        event_type: Some("PaymentProcessed".to_owned()),
        source_topic: "orders".to_owned(),
        source_partition: Some(1),
        source_offset: Some(99),
        source_timestamp_ms: Some(1100),
        consumer_group: Some("payment".to_owned()),
        service: Some("payment".to_owned()),
        error_type: Some("gateway_timeout".to_owned()),
        error_message: Some("gateway timed out after 3 attempts".to_owned()),
        attempts: Some(3),
        failed_at_ms,
        key: Some(vec![0xff, 0x00, 0xfe, b'k']),
        payload: Some(vec![b'{', 0x80, 0x00, 0xc3, b'}']),
        headers_json: r#"[["event-id","YzI="],["baggage",null]]"#.to_owned(),
        status: "pending".to_owned(),
        status_changed_at_ms: None,
        status_by: None,
        status_reason: None,
        replay_count: 0,
    }
}

#[tokio::test]
async fn receipts_round_trip_with_and_without_optional_fields() {
    for (label, store, _db) in stores().await {
        let ok = receipt("rc-1", "c1", 2000);
        let failed = Receipt {
            outcome: "dead_lettered".to_owned(),
            attempts: 3,
            error_type: Some("gateway_timeout".to_owned()),
            error_message: Some("timed out".to_owned()),
            duration_ms: 0.25,
            ..receipt("rc-2", "c2", 1500)
        };
        let bare = Receipt {
            trace_id: None,
            span_id: None,
            correlation_id: None,
            duration_ms: 3.0,
            ..receipt("rc-3", "c1", 1000)
        };
        store
            .record_batch(&[], &[ok.clone(), failed.clone(), bare.clone()], &[])
            .await
            .expect(label);
        // Handled order, and a receipt without correlation id is not in it.
        assert_eq!(
            store.receipts_for_correlation("op-a").await.expect(label),
            [failed.clone(), ok.clone()],
            "{label}"
        );
        assert_eq!(
            store.receipts_for_event("c1").await.expect(label),
            [bare, ok],
            "{label}"
        );
        assert_eq!(
            store.receipts_for_event("c2").await.expect(label),
            [failed],
            "{label}"
        );
        assert!(
            store.receipts_for_event("r").await.expect(label).is_empty(),
            "{label}"
        );
    }
}

#[tokio::test]
async fn dead_letters_round_trip_bytes_that_are_not_utf8_and_none_values() {
    for (label, store, _db) in stores().await {
        let full = dead_letter("dlq-1", 5000);
        let bare = DeadLetterEntry {
            correlation_id: Some("op-a".to_owned()),
            event_type: None,
            source_partition: None,
            source_offset: None,
            source_timestamp_ms: None,
            consumer_group: None,
            service: None,
            error_type: None,
            error_message: None,
            attempts: None,
            key: None,
            payload: None,
            headers_json: "[]".to_owned(),
            ..dead_letter("dlq-2", 4000)
        };
        // Empty bytes stay empty, not NULL.
        let empty = DeadLetterEntry {
            key: Some(Vec::new()),
            payload: Some(Vec::new()),
            correlation_id: None,
            ..dead_letter("dlq-3", 3000)
        };
        store
            .record_batch(&[], &[], &[full.clone(), bare.clone(), empty.clone()])
            .await
            .expect(label);
        assert_eq!(
            store.dead_letter("dlq-1").await.expect(label),
            Some(full.clone()),
            "{label}"
        );
        assert_eq!(
            store.dead_letter("dlq-2").await.expect(label),
            Some(bare.clone()),
            "{label}"
        );
        assert_eq!(
            store.dead_letter("dlq-3").await.expect(label),
            Some(empty),
            "{label}"
        );
        assert_eq!(
            store.dead_letter("missing").await.expect(label),
            None,
            "{label}"
        );
        assert_eq!(
            store
                .dead_letters_for_correlation("op-a")
                .await
                .expect(label),
            [bare, full],
            "{label}"
        );
    }
}

#[tokio::test]
async fn dead_letter_status_and_replay_count_survive_re_recording() {
    for (label, store, _db) in stores().await {
        let entry = dead_letter("dlq-1", 5000);
        store
            .record_batch(&[], &[], std::slice::from_ref(&entry))
            .await
            .expect(label);
        assert!(
            store
                .set_dead_letter_status(
                    "dlq-1",
                    "replayed",
                    6000,
                    Some("ops"),
                    Some("gateway back")
                )
                .await
                .expect(label),
            "{label}"
        );
        assert!(
            store.increment_replay_count("dlq-1").await.expect(label),
            "{label}"
        );
        assert!(
            store.increment_replay_count("dlq-1").await.expect(label),
            "{label}"
        );
        assert!(
            !store
                .set_dead_letter_status("missing", "discarded", 6000, None, None)
                .await
                .expect(label),
            "{label}"
        );
        assert!(
            !store.increment_replay_count("missing").await.expect(label),
            "{label}"
        );

        // Reading the DLQ record again must not reset the ledger's state.
        let counts = store
            .record_batch(&[], &[], std::slice::from_ref(&entry))
            .await
            .expect(label);
        assert_eq!(counts.dead_letters, 0, "{label}");
        let expected = DeadLetterEntry {
            status: "replayed".to_owned(),
            status_changed_at_ms: Some(6000),
            status_by: Some("ops".to_owned()),
            status_reason: Some("gateway back".to_owned()),
            replay_count: 2,
            ..entry
        };
        assert_eq!(
            store.dead_letter("dlq-1").await.expect(label),
            Some(expected),
            "{label}"
        );
    }
}

/// Every filter of `kausal dlq list`, the API and the `/dlq` page narrows
/// the list on its own and together with the others, newest first.
#[tokio::test]
async fn dead_letters_are_filtered_by_each_field_and_by_all_of_them() {
    for (label, store, _db) in stores().await {
        let entry = |id: &str, at: i64, topic: &str, error: &str, group: &str| DeadLetterEntry {
            source_topic: topic.to_owned(),
            error_type: Some(error.to_owned()),
            consumer_group: Some(group.to_owned()),
            correlation_id: Some(format!("corr-{id}")),
            ..dead_letter(id, at)
        };
        let entries = [
            entry("d1", 1000, "orders", "Timeout", "payment"),
            entry("d2", 2000, "orders", "Timeout", "invoice"),
            entry("d3", 3000, "payments", "Timeout", "invoice"),
            entry("d4", 4000, "orders", "Declined", "invoice"),
        ];
        store.record_batch(&[], &[], &entries).await.expect(label);
        store
            .set_dead_letter_status("d4", "discarded", 5000, Some("ops"), None)
            .await
            .expect(label);
        let ids = |filter: DeadLetterFilter| {
            let store = &store;
            async move {
                store
                    .dead_letters(&filter)
                    .await
                    .expect(label)
                    .into_iter()
                    .map(|e| e.dlq_id)
                    .collect::<Vec<_>>()
            }
        };
        let some = |v: &str| Some(v.to_owned());
        assert_eq!(
            ids(DeadLetterFilter::default()).await,
            ["d4", "d3", "d2", "d1"],
            "{label}: newest first"
        );
        let cases = [
            (
                DeadLetterFilter {
                    consumer_group: some("invoice"),
                    ..Default::default()
                },
                vec!["d4", "d3", "d2"],
            ),
            (
                DeadLetterFilter {
                    source_topic: some("orders"),
                    ..Default::default()
                },
                vec!["d4", "d2", "d1"],
            ),
            (
                DeadLetterFilter {
                    error_type: some("Timeout"),
                    ..Default::default()
                },
                vec!["d3", "d2", "d1"],
            ),
            (
                DeadLetterFilter {
                    status: some("pending"),
                    ..Default::default()
                },
                vec!["d3", "d2", "d1"],
            ),
            (
                DeadLetterFilter {
                    correlation_id: some("corr-d2"),
                    ..Default::default()
                },
                vec!["d2"],
            ),
            (
                DeadLetterFilter {
                    since_ms: Some(2000),
                    ..Default::default()
                },
                vec!["d4", "d3", "d2"],
            ),
            (
                DeadLetterFilter {
                    limit: Some(2),
                    ..Default::default()
                },
                vec!["d4", "d3"],
            ),
            (
                DeadLetterFilter {
                    consumer_group: some("invoice"),
                    source_topic: some("orders"),
                    status: some("pending"),
                    ..Default::default()
                },
                vec!["d2"],
            ),
            (
                DeadLetterFilter {
                    consumer_group: some("shipping"),
                    ..Default::default()
                },
                vec![],
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(ids(filter.clone()).await, expected, "{label}: {filter:?}");
        }
    }
}

/// The dashboard's hourly outflow: when each entry left `pending`, from a
/// time on, oldest first; pending entries and earlier changes are not in it.
#[tokio::test]
async fn dead_letter_outflow_times_are_the_status_changes_since_a_time() {
    for (label, store, _db) in stores().await {
        let entries: Vec<_> = ["dlq-1", "dlq-2", "dlq-3", "dlq-4"]
            .iter()
            .map(|id| dead_letter(id, 1000))
            .collect();
        store.record_batch(&[], &[], &entries).await.expect(label);
        for (id, status, at) in [
            ("dlq-1", "replayed", 9000),
            ("dlq-2", "discarded", 7000),
            ("dlq-3", "replayed", 4000),
        ] {
            assert!(
                store
                    .set_dead_letter_status(id, status, at, Some("ops"), None)
                    .await
                    .expect(label),
                "{label}"
            );
        }
        assert_eq!(
            store
                .dead_letter_outflow_times_since(5000)
                .await
                .expect(label),
            [7000, 9000],
            "{label}"
        );
        assert_eq!(
            store.dead_letter_outflow_times_since(0).await.expect(label),
            [4000, 7000, 9000],
            "{label}"
        );
        assert_eq!(
            store.dead_letter_outflow_since(5000).await.expect(label),
            2,
            "{label}: the count agrees"
        );
    }
}

#[tokio::test]
async fn recording_the_same_batch_twice_adds_nothing_the_second_time() {
    for (label, store, _db) in stores().await {
        let events = graph();
        let receipts = [receipt("rc-1", "c1", 2000), receipt("rc-2", "c2", 2100)];
        let dead_letters = [dead_letter("dlq-1", 5000)];
        let all = BatchCounts {
            events: 11,
            receipts: 2,
            dead_letters: 1,
        };
        assert_eq!(
            store
                .record_batch(&events, &receipts, &dead_letters)
                .await
                .expect(label),
            all,
            "{label}"
        );
        assert_eq!(
            store.lineage_row_counts().await.expect(label),
            all,
            "{label}"
        );
        assert_eq!(
            store
                .record_batch(&events, &receipts, &dead_letters)
                .await
                .expect(label),
            BatchCounts::default(),
            "{label}"
        );
        // The same event id at another position (a replayed copy), and
        // another id at a known position, are both already recorded.
        let moved = LineageEvent {
            offset: 500,
            ..event("r", None, "op-a", ("orders", 0, 0), 1000)
        };
        let renamed = LineageEvent {
            event_id: "r-again".to_owned(),
            ..event("r", None, "op-a", ("orders", 0, 0), 1000)
        };
        assert_eq!(
            store
                .record_batch(&[moved, renamed], &[], &[])
                .await
                .expect(label),
            BatchCounts::default(),
            "{label}"
        );
        assert_eq!(
            store.lineage_row_counts().await.expect(label),
            all,
            "{label}"
        );
        assert_eq!(
            store.event("r").await.expect(label).map(|e| e.offset),
            Some(0),
            "{label}"
        );
    }
}

#[tokio::test]
async fn the_groups_expected_for_an_event_type_are_those_of_its_latest_events() {
    for (label, store, _db) in stores().await {
        // Three OrderPlaced events: the oldest handled by `legacy` only,
        // the two newest by `payment`; another type by `shipping`.
        let placed = |id: &str, at: i64| LineageEvent {
            event_type: Some("OrderPlaced".to_owned()),
            ..event(id, None, id, ("orders", 0, at), at)
        };
        let events = vec![
            placed("old", 1_000),
            placed("new-1", 2_000),
            placed("new-2", 3_000),
            event("other", None, "other", ("payments", 0, 1), 2_500),
        ];
        let by = |id: &str, event: &str, group: &str| Receipt {
            consumer_group: group.to_owned(),
            service: format!("{group}-service"),
            ..receipt(id, event, 4_000)
        };
        let receipts = vec![
            by("r1", "old", "legacy"),
            by("r2", "new-1", "payment"),
            by("r3", "new-2", "payment"),
            by("r4", "other", "shipping"),
        ];
        store
            .record_batch(&events, &receipts, &[])
            .await
            .expect(label);
        let groups = |n| {
            let store = store.clone();
            async move {
                store
                    .receipt_groups_for_event_type("OrderPlaced", n)
                    .await
                    .expect("groups")
            }
        };
        let pair = |g: &str| (g.to_owned(), format!("{g}-service"));
        assert_eq!(
            groups(2).await,
            vec![pair("payment")],
            "{label}: the latest two"
        );
        assert_eq!(
            groups(10).await,
            vec![pair("legacy"), pair("payment")],
            "{label}: all three"
        );
        assert!(
            store
                .receipt_groups_for_event_type("Unknown", 10)
                .await
                .expect(label)
                .is_empty(),
            "{label}"
        );
    }
}
