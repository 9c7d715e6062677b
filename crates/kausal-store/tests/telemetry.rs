//! Spans and log records on every configured backend: stored once however
//! often they are sent, found by trace, correlation, event and link, and
//! pruned by age while queries keep answering.

use kausal_store::{LogRow, ResourceRow, SpanDetail, SpanLinkRow, SpanRow, testing};

fn span(
    trace: &str,
    span: &str,
    parent: Option<&str>,
    correlation: Option<&str>,
    received: i64,
) -> SpanRow {
    SpanRow {
        trace_id: trace.to_owned(),
        span_id: span.to_owned(),
        parent_span_id: parent.map(str::to_owned),
        name: format!("process {span}"),
        kind: "consumer".to_owned(),
        service: Some("payment-service".to_owned()),
        start_ns: received * 1_000_000,
        end_ns: received * 1_000_000 + 5_000,
        status_code: "unset".to_owned(),
        status_message: None,
        correlation_id: correlation.map(str::to_owned),
        event_id: Some(format!("ev-{span}")),
        // Bytes as given (what the console writes is protobuf).
        detail: SpanDetail::Otlp(format!("detail of {span}").into_bytes()),
        resource_id: Some("res-1".to_owned()),
        received_at_ms: received,
    }
}

fn log(id: &str, trace: Option<&str>, correlation: Option<&str>, received: i64) -> LogRow {
    LogRow {
        log_id: id.to_owned(),
        time_ns: received * 1_000_000,
        severity_number: Some(17),
        severity_text: Some("ERROR".to_owned()),
        service: Some("notification-service".to_owned()),
        body: Some("event failed".to_owned()),
        trace_id: trace.map(str::to_owned),
        span_id: None,
        correlation_id: correlation.map(str::to_owned),
        attributes_json: r#"{"errorType":"MissingCustomerEmail"}"#.to_owned(),
        received_at_ms: received,
    }
}

#[tokio::test]
async fn spans_and_logs_are_stored_once_joined_and_pruned_on_every_backend() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let (t1, t2) = ("a".repeat(32), "b".repeat(32));
        let spans = vec![
            span(&t1, "0000000000000001", None, Some("corr-1"), 1_000),
            span(
                &t1,
                "0000000000000002",
                Some("0000000000000001"),
                Some("corr-1"),
                1_001,
            ),
            SpanRow {
                // A row of the form written before migration 010.
                detail: SpanDetail::Json {
                    attributes: r#"{"errorType":"MissingCustomerEmail"}"#.to_owned(),
                    events: "[]".to_owned(),
                    links: "[]".to_owned(),
                },
                resource_id: None,
                ..span(&t2, "0000000000000003", None, None, 5_000)
            },
        ];
        let resource = |id: &str| ResourceRow {
            resource_id: id.to_owned(),
            resource: format!("resource {id}").into_bytes(),
        };
        let resources = vec![resource("res-1")];
        // The batch span in t2 links the record's context in t1.
        let links = vec![SpanLinkRow {
            trace_id: t2.clone(),
            span_id: "0000000000000003".to_owned(),
            linked_trace_id: t1.clone(),
            linked_span_id: "0000000000000002".to_owned(),
        }];
        let logs = vec![
            log("l1", Some(&t1), Some("corr-1"), 1_002),
            log("l2", None, Some("corr-1"), 5_001),
        ];
        let first = store
            .record_telemetry(&spans, &links, &resources, &logs, 5_000)
            .await
            .expect(db.label);
        assert_eq!(
            (first.spans, first.links, first.logs),
            (3, 1, 2),
            "{}",
            db.label
        );
        // An exporter's retry: nothing new.
        let again = store
            .record_telemetry(&spans, &links, &resources, &logs, 5_000)
            .await
            .expect(db.label);
        assert_eq!(
            (again.spans, again.links, again.logs),
            (0, 0, 0),
            "{}",
            db.label
        );

        // A resource last named before the cut-off, and one named again
        // with an older time, which does not move it back.
        store
            .record_telemetry(&[], &[], &[resource("res-old")], &[], 1_500)
            .await
            .expect(db.label);
        store
            .record_telemetry(&[], &[], &resources, &[], 1_500)
            .await
            .expect(db.label);
        assert_eq!(
            store.span_resource("res-1").await.expect(db.label),
            Some(resources[0].resource.clone()),
            "{}",
            db.label
        );

        let got = store.spans_for_trace(&t1, 100).await.expect(db.label);
        assert_eq!(got, spans[..2].to_vec(), "{}: in start order", db.label);
        assert_eq!(
            store
                .span_traces_for_correlation("corr-1", 10)
                .await
                .expect(db.label),
            vec![t1.clone()],
            "{}",
            db.label
        );
        assert_eq!(
            store
                .span_traces_for_event("ev-0000000000000003", 10)
                .await
                .expect(db.label),
            vec![t2.clone()],
            "{}",
            db.label
        );
        assert_eq!(
            store.linked_traces(&t1).await.expect(db.label),
            vec![t2.clone()],
            "{}",
            db.label
        );
        assert_eq!(
            store.linked_traces(&t2).await.expect(db.label),
            vec![t1.clone()],
            "{}",
            db.label
        );
        assert_eq!(
            store.logs_for_trace(&t1, 10).await.expect(db.label),
            logs[..1].to_vec(),
            "{}",
            db.label
        );
        // The many-trace forms: one query for all, the per-trace bound
        // applied to each trace, links both ways.
        let both = [t1.clone(), t2.clone()];
        assert_eq!(
            store.spans_for_traces(&both, 100).await.expect(db.label),
            spans.to_vec(),
            "{}: every span of both, in start order",
            db.label
        );
        let first_of_each = store.spans_for_traces(&both, 1).await.expect(db.label);
        assert_eq!(
            first_of_each,
            vec![spans[0].clone(), spans[2].clone()],
            "{}: at most one per trace",
            db.label
        );
        let mut linked = store.linked_traces_of(&both).await.expect(db.label);
        linked.sort();
        let mut expected = both.to_vec();
        expected.sort();
        assert_eq!(linked, expected, "{}", db.label);
        assert_eq!(
            store
                .linked_traces_of(std::slice::from_ref(&t1))
                .await
                .expect(db.label),
            vec![t2.clone()],
            "{}",
            db.label
        );
        assert!(
            store
                .spans_for_traces(&[], 10)
                .await
                .expect(db.label)
                .is_empty(),
            "{}",
            db.label
        );
        let none: &[String] = &[];
        for (correlation, traces, limit, want, what) in [
            (
                "corr-1",
                none,
                10,
                &logs[..],
                "the correlation's lines, without traces",
            ),
            (
                "corr-1",
                &both[..],
                10,
                &logs[..],
                "a line of a trace that also names the correlation comes once",
            ),
            (
                "corr-2",
                &both[..],
                10,
                &logs[..1],
                "the traces' lines of another correlation",
            ),
            (
                "corr-1",
                &both[..],
                1,
                &logs[..1],
                "at most the limit, earliest first",
            ),
        ] {
            assert_eq!(
                store
                    .logs_for_correlation(correlation, traces, limit)
                    .await
                    .expect(db.label),
                want,
                "{}: {what}",
                db.label
            );
        }

        // Retention: everything received before 2 000 ms goes, in batches of
        // one row per table; the rest stays and queries still answer.
        let mut removed = 0;
        loop {
            let n = store.prune_telemetry(2_000, 1).await.expect(db.label);
            if n == 0 {
                break;
            }
            removed += n;
        }
        assert_eq!(
            removed, 4,
            "{}: two spans, one resource and one log record",
            db.label
        );
        assert_eq!(
            store.span_resource("res-old").await.expect(db.label),
            None,
            "{}",
            db.label
        );
        assert!(
            store
                .span_resource("res-1")
                .await
                .expect(db.label)
                .is_some(),
            "{}: named by a span received later",
            db.label
        );
        assert!(
            store
                .spans_for_trace(&t1, 100)
                .await
                .expect(db.label)
                .is_empty(),
            "{}",
            db.label
        );
        assert_eq!(
            store.spans_for_trace(&t2, 100).await.expect(db.label).len(),
            1,
            "{}",
            db.label
        );
        assert_eq!(
            store.linked_traces(&t2).await.expect(db.label),
            vec![t1.clone()],
            "{}: the link was received late",
            db.label
        );
        assert_eq!(
            store
                .logs_for_correlation("corr-1", &[], 10)
                .await
                .expect(db.label),
            logs[1..].to_vec(),
            "{}",
            db.label
        );
    }
}

#[tokio::test]
async fn a_span_sent_again_in_another_request_is_read_once_and_pruning_keeps_the_trace_and_link_indexes_whole()
 {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let (t1, t2) = ("c".repeat(32), "d".repeat(32));
        let s = |trace: &str, n: u32, received: i64| {
            span(trace, &format!("{n:016x}"), None, Some("corr-9"), received)
        };
        // Two requests sharing one span (a collector that re-batched after
        // a partial failure), then the first one again (an exporter's
        // retry).
        let first = vec![s(&t1, 1, 1_000), s(&t1, 2, 1_001), s(&t2, 3, 1_002)];
        let second = vec![s(&t1, 2, 1_001), s(&t1, 4, 3_000), s(&t2, 5, 3_001)];
        // Batch spans in t2 link a record in t1 and one in t3.
        let t3 = "e".repeat(32);
        let link = |from: (&str, u32), to: (&str, u32)| SpanLinkRow {
            trace_id: from.0.to_owned(),
            span_id: format!("{:016x}", from.1),
            linked_trace_id: to.0.to_owned(),
            linked_span_id: format!("{:016x}", to.1),
        };
        let first_links = vec![link((&t2, 3), (&t1, 1))];
        let second_links = vec![link((&t2, 5), (&t3, 9))];
        for (request, links, at) in [
            (&first, &first_links, 1_000),
            (&second, &second_links, 3_000),
        ] {
            store
                .record_telemetry(request, links, &[], &[], at)
                .await
                .expect(db.label);
        }
        let retry = store
            .record_telemetry(&first, &first_links, &[], &[], 1_000)
            .await
            .expect(db.label);
        assert_eq!(
            (retry.spans, retry.links),
            (0, 0),
            "{}: a retried request writes nothing",
            db.label
        );
        let sorted = |mut ids: Vec<String>| {
            ids.sort();
            ids
        };
        for (trace, want, what) in [
            (&t1, vec![t2.clone()], "linked from t2"),
            (&t2, vec![t1.clone(), t3.clone()], "linking t1 and t3"),
            (&t3, vec![t2.clone()], "linked from t2"),
        ] {
            assert_eq!(
                sorted(store.linked_traces(trace).await.expect(db.label)),
                want,
                "{}: {what}, found through the link index, once",
                db.label
            );
        }
        assert_eq!(
            sorted(
                store
                    .linked_traces_of(&[t1.clone(), t3.clone()])
                    .await
                    .expect(db.label)
            ),
            vec![t2.clone()],
            "{}",
            db.label
        );
        let ids =
            |rows: Vec<SpanRow>| -> Vec<String> { rows.into_iter().map(|r| r.span_id).collect() };
        let want_t1 = span_ids(&[1, 2, 4]);
        assert_eq!(
            ids(store.spans_for_trace(&t1, 100).await.expect(db.label)),
            want_t1,
            "{}: each span of the trace once, in start order",
            db.label
        );
        assert_eq!(
            ids(store
                .spans_for_traces(&[t1.clone(), t2.clone()], 100)
                .await
                .expect(db.label)),
            span_ids(&[1, 2, 3, 4, 5]),
            "{}: each span of both traces once",
            db.label
        );
        // A trace id that is not hex, and one that only shares a prefix,
        // find nothing (and are no query syntax).
        for other in [format!("{}\" OR \"x", &t1[..8]), t1[..31].to_owned()] {
            assert!(
                store
                    .spans_for_trace(&other, 100)
                    .await
                    .expect(db.label)
                    .is_empty(),
                "{}: {other:?}",
                db.label
            );
            assert!(
                store
                    .linked_traces(&other)
                    .await
                    .expect(db.label)
                    .is_empty(),
                "{}: links of {other:?}",
                db.label
            );
        }

        // Pruning what came before 2 000 ms, one row at a time: the rest of
        // each trace is still found through the index, the pruned spans
        // are not, and new spans of the same trace are indexed as before.
        while store.prune_telemetry(2_000, 1).await.expect(db.label) > 0 {}
        assert_eq!(
            ids(store
                .spans_for_traces(&[t1.clone(), t2.clone()], 100)
                .await
                .expect(db.label)),
            span_ids(&[4, 5]),
            "{}: after pruning",
            db.label
        );
        assert!(
            store.linked_traces(&t1).await.expect(db.label).is_empty(),
            "{}: the link received before the cut-off is gone",
            db.label
        );
        assert_eq!(
            store.linked_traces(&t2).await.expect(db.label),
            vec![t3.clone()],
            "{}: the later link is still found",
            db.label
        );
        store
            .record_telemetry(
                &[s(&t1, 6, 4_000)],
                &[link((&t1, 6), (&t3, 9))],
                &[],
                &[],
                4_000,
            )
            .await
            .expect(db.label);
        assert_eq!(
            ids(store.spans_for_trace(&t1, 100).await.expect(db.label)),
            span_ids(&[4, 6]),
            "{}: after pruning and writing again",
            db.label
        );
        assert_eq!(
            sorted(store.linked_traces(&t3).await.expect(db.label)),
            vec![t1.clone(), t2.clone()],
            "{}: a link written after pruning is indexed",
            db.label
        );
    }
}

/// Span ids as the test above numbers them.
fn span_ids(numbers: &[u32]) -> Vec<String> {
    numbers.iter().map(|n| format!("{n:016x}")).collect()
}
