//! Appends over several streams in one transaction
//! (`EventStore::append_many`, `Repository::stage`): all or nothing, one
//! `append_events` span over the transaction, measured per aggregate type.

use kausal_core::{SpanId, TraceId, TraceParent};
use kausal_eventsource::names::{attr, span};
use kausal_eventsource::{CommandContext, Direction, Error, ExpectedVersion, Repository};
use kausal_store::GlobalCursor;
use kausal_telemetry::testing::SpanCapture;

use crate::support::{Counter, CounterEvent, correlation, envs};

fn new_parent() -> TraceParent {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut span = [0u8; 8];
    span.copy_from_slice(&bytes[8..]);
    span[0] |= 1;
    TraceParent::new(
        TraceId::from_bytes(bytes).expect("non-zero"),
        SpanId::from_bytes(span).expect("non-zero"),
        true,
    )
}

#[tokio::test]
async fn staged_aggregates_append_together_or_not_at_all() {
    let capture = SpanCapture::install();
    for env in envs().await {
        let label = env.label;
        let parent = new_parent();
        let context = CommandContext::new(correlation("many")).publish_to("counters", None);
        let one = [CounterEvent::Incremented { by: 1 }];
        let two = [
            CounterEvent::Incremented { by: 2 },
            CounterEvent::CeilingSet { ceiling: 9 },
        ];
        let parts = vec![
            Repository::<Counter>::stage("b", 0, &two, &context).expect("stage"),
            Repository::<Counter>::stage("a", 0, &one, &context).expect("stage"),
        ];
        assert_eq!(parts[0].expected, ExpectedVersion::Exact(0));
        let appended = env
            .events
            .append_many(parts, Some(parent))
            .await
            .expect(label);
        let versions: Vec<i64> = appended.iter().map(|a| a.stream_version).collect();
        assert_eq!(versions, [2, 1], "{label}: in the order given");

        let spans = capture.in_trace(&parent.trace_id.to_string());
        let appends: Vec<_> = spans
            .iter()
            .filter(|s| s.name == span::APPEND_EVENTS)
            .collect();
        assert_eq!(appends.len(), 1, "{label}: one span for the transaction");
        let append = appends[0];
        let caller = parent.parent_id.to_string();
        assert_eq!(append.parent_span_id.as_deref(), Some(caller.as_str()));
        assert_eq!(append.attribute(attr::EVENT_COUNT).as_deref(), Some("3"));
        let ids = append.attribute(attr::AGGREGATE_ID).expect("ids");
        let types = append.attribute(attr::AGGREGATE_TYPE).expect("types");
        let versions = append.attribute(attr::VERSION).expect("versions");
        assert!(
            ids.contains('b') && ids.contains('a') && ids.find('b') < ids.find('a'),
            "{ids}"
        );
        assert_eq!(types.matches("Counter").count(), 2, "{types}");
        assert!(
            versions.contains('2') && versions.contains('1'),
            "{versions}"
        );

        // Every event stores the append span's context and the outbox row.
        let stored = env
            .events
            .store()
            .read_stream("Counter-b", 1, 10, Direction::Forward)
            .await
            .expect(label);
        assert_eq!(stored.len(), 2);
        for event in &stored {
            let tp = event.traceparent.expect("traceparent");
            assert_eq!(tp.parent_id.to_string(), append.span_id, "{label}");
        }
        let pending = env.events.store().outbox_pending(10).await.expect(label);
        assert_eq!(pending.len(), 3, "{label}");

        // "a" moved since version 0: the whole append is refused, "c"
        // included, and the conflict is counted for Counter.
        let before = env
            .events
            .store()
            .events_after(GlobalCursor::START)
            .await
            .expect(label);
        let parts = vec![
            Repository::<Counter>::stage("c", 0, &one, &context).expect("stage"),
            Repository::<Counter>::stage("a", 0, &one, &context).expect("stage"),
        ];
        let err = env.events.append_many(parts, None).await.expect_err(label);
        assert!(
            matches!(&err, Error::Conflict { stream, actual: 1, .. } if stream == "Counter-a"),
            "{label}: {err:?}"
        );
        let after = env
            .events
            .store()
            .events_after(GlobalCursor::START)
            .await
            .expect(label);
        assert_eq!(after, before, "{label}: nothing written");
        assert_eq!(env.events.metrics().conflicts_of("Counter"), 1, "{label}");
        let text = env.registry.encode();
        assert!(
            text.contains("eventstore_append_duration_seconds_count{aggregate_type=\"Counter\"} 2"),
            "{label}: each append timed once per type\n{text}"
        );
    }
}
