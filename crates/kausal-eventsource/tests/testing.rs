//! `kausal_eventsource::testing`, used as a service author would: an
//! aggregate given/when, a command through a throwaway store with its
//! spans, and a projection caught up by a real subscription.

use std::collections::BTreeMap;

use kausal_core::HandlerError;
use kausal_eventsource::names::{attr, metric, span};
use kausal_eventsource::testing::{TestEventStore, given};
use kausal_eventsource::{Batch, BatchHandler, Error, ExecuteError};
use kausal_telemetry::testing::CapturedSpan;

use crate::support::{Counter, CounterCommand, CounterError, CounterEvent};

/// A projection: totals per stream, from the stored JSON.
#[derive(Default)]
struct Totals(BTreeMap<String, i64>);

impl BatchHandler for Totals {
    async fn handle(&mut self, batch: Batch) -> Result<(), HandlerError> {
        for e in &batch.events {
            let event: CounterEvent = serde_json::from_str(&e.payload)
                .map_err(|e| HandlerError::bad_payload(e.to_string()))?;
            if let CounterEvent::Incremented { by } = event {
                *self.0.entry(e.stream_id.clone()).or_default() += by;
            }
        }
        Ok(())
    }
}

fn named<'a>(spans: &'a [CapturedSpan], name: &str) -> Vec<&'a CapturedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[test]
fn given_when_decides_and_applies_without_a_store() {
    let decided = given::<Counter>([
        CounterEvent::Incremented { by: 2 },
        CounterEvent::CeilingSet { ceiling: 5 },
    ])
    .when(&CounterCommand::Increment(3))
    .expect("2 + 3 stays under the ceiling");
    assert_eq!(decided.events, [CounterEvent::Incremented { by: 3 }]);
    assert_eq!(decided.state.value, 5);

    let refused = given::<Counter>([CounterEvent::CeilingSet { ceiling: 1 }])
        .when(&CounterCommand::Increment(2))
        .expect_err("over the ceiling");
    assert_eq!(
        refused,
        CounterError::OverCeiling {
            value: 0,
            by: 2,
            ceiling: 1
        }
    );
    let g = given::<Counter>([CounterEvent::Incremented { by: 4 }]);
    assert_eq!(g.state().value, 4);
}

#[tokio::test]
async fn a_command_through_the_test_store_exports_the_repository_spans_of_its_own_trace() {
    let store = TestEventStore::new().await.expect("test store");
    store
        .given::<Counter>("c-1", &[CounterEvent::Incremented { by: 1 }])
        .await
        .expect("history");
    assert!(
        store.spans().is_empty(),
        "setup is outside the test's trace: {:#?}",
        store.spans()
    );

    let repo = store.repository::<Counter>();
    let executed = repo
        .execute("c-1", &CounterCommand::Increment(2), &store.context())
        .await
        .expect("executed");
    assert_eq!(executed.state.value, 3);
    assert_eq!(executed.version, 2);
    let refused = repo
        .execute("c-1", &CounterCommand::Increment(-1), &store.context())
        .await;
    assert!(matches!(
        refused,
        Err(ExecuteError::Rejected(CounterError::NotPositive(-1)))
    ));

    let spans = store.spans();
    let caller = store.caller().parent_id.to_string();
    let saves = named(&spans, span::REPOSITORY_SAVE);
    assert_eq!(saves.len(), 1, "the refused command saved nothing");
    assert_eq!(saves[0].parent_span_id.as_deref(), Some(caller.as_str()));
    let appends = named(&spans, span::APPEND_EVENTS);
    assert_eq!(appends.len(), 1);
    assert_eq!(
        appends[0].parent_span_id.as_deref(),
        Some(saves[0].span_id.as_str())
    );
    assert_eq!(
        appends[0].attribute(attr::AGGREGATE_ID).as_deref(),
        Some("c-1")
    );
    assert_eq!(
        appends[0].attribute(attr::DB_SYSTEM).as_deref(),
        Some("sqlite")
    );
    assert_eq!(named(&spans, span::REPOSITORY_LOAD).len(), 2);

    let recorded = store.recorded().await.expect("recorded");
    assert_eq!(recorded.len(), 2);
    assert_eq!(
        recorded[1].correlation_id,
        store.context().correlation_id,
        "the command's events carry the test's correlation id"
    );
    assert!(
        store.metrics().contains(metric::APPEND_DURATION),
        "{}",
        store.metrics()
    );
}

#[tokio::test]
async fn a_projection_catches_up_through_a_subscription_with_its_batch_spans() {
    let store = TestEventStore::new().await.expect("test store");
    let repo = store.repository::<Counter>();
    for (id, by) in [("a", 1), ("b", 10), ("a", 2)] {
        repo.execute(id, &CounterCommand::Increment(by), &store.context())
            .await
            .expect("executed");
    }

    let mut projection = Totals::default();
    let handled = store
        .project("totals", &mut projection)
        .await
        .expect("caught up");
    assert_eq!(handled, 3);
    assert_eq!(
        projection.0,
        BTreeMap::from([("Counter-a".into(), 3), ("Counter-b".into(), 10)])
    );
    assert_eq!(
        store
            .project("totals", &mut projection)
            .await
            .expect("again"),
        0,
        "the checkpoint was stored: nothing is handed over twice"
    );

    let spans = store.spans();
    let process = named(&spans, span::PROCESS_BATCH);
    assert_eq!(process.len(), 1, "{spans:#?}");
    assert_eq!(
        process[0].links.len(),
        3,
        "linked to the three appends' spans"
    );
    let appends: Vec<String> = named(&spans, span::APPEND_EVENTS)
        .iter()
        .map(|s| s.span_id.clone())
        .collect();
    for link in &process[0].links {
        assert!(appends.contains(link), "{link} is an append span");
    }
    assert_eq!(named(&spans, span::SAVE_CHECKPOINT).len(), 1);

    // A failing projection leaves the checkpoint before its batch.
    repo.execute("b", &CounterCommand::Increment(5), &store.context())
        .await
        .expect("executed");
    let mut failing =
        |_: Batch| std::future::ready(Err::<(), _>(HandlerError::retryable("DbDown", "down")));
    let failed = store.project("totals", &mut failing).await;
    assert!(matches!(failed, Err(Error::Handler { .. })), "{failed:?}");
    assert_eq!(
        store
            .project("totals", &mut projection)
            .await
            .expect("retried"),
        1
    );
    assert_eq!(projection.0["Counter-b"], 15);
    let failed_spans = store.spans();
    assert!(
        named(&failed_spans, span::PROCESS_BATCH)
            .iter()
            .any(|s| s.failed),
        "the failed batch's span is marked failed"
    );
}
