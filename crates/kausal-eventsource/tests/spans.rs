//! The spans of the event store, the repository and subscriptions: names,
//! parents and attributes as exported (captured in memory with the same
//! provider machinery as OTLP export).

use kausal_core::{SpanId, TraceId, TraceParent};
use kausal_eventsource::names::{attr, span};
use kausal_eventsource::{Batch, CommandContext, Error, Repository, Subscription};
use kausal_telemetry::testing::{CapturedSpan, SpanCapture};

use crate::support::{Counter, CounterCommand, CounterEvent, correlation, envs};
use kausal_store::testing::settle_read_all as settle;

fn new_parent() -> TraceParent {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut span = [0u8; 8];
    span.copy_from_slice(&bytes[..8]);
    span[0] |= 1;
    TraceParent::new(
        TraceId::from_bytes(bytes).expect("non-zero"),
        SpanId::from_bytes(span).expect("non-zero"),
        true,
    )
}

fn one<'a>(spans: &'a [CapturedSpan], name: &str) -> &'a CapturedSpan {
    let found: Vec<&CapturedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} in {spans:#?}");
    found[0]
}

fn assert_attrs(span: &CapturedSpan, want: &[(&str, &str)]) {
    for (key, value) in want {
        assert_eq!(
            span.attribute(key).as_deref(),
            Some(*value),
            "{} {key} in {:?}",
            span.name,
            span.attributes
        );
    }
}

fn db_system(label: &str) -> &'static str {
    if label == "postgres" {
        "postgresql"
    } else {
        "sqlite"
    }
}

#[tokio::test]
async fn repository_and_store_spans_carry_the_design_names_and_attributes() {
    let capture = SpanCapture::install();
    for env in envs().await {
        let label = env.label;
        let db = db_system(label);
        let parent = new_parent();
        let repo = Repository::<Counter>::new(env.events.clone());
        let context = CommandContext::new(correlation("spans")).traced(parent);
        repo.execute("s-1", &CounterCommand::Increment(2), &context)
            .await
            .expect(label);
        assert!(repo.exists("s-1", Some(parent)).await.expect(label));

        let spans = capture.in_trace(&parent.trace_id.to_string());
        let load = one(&spans, span::REPOSITORY_LOAD);
        let get = one(&spans, span::GET_EVENTS);
        let save = one(&spans, span::REPOSITORY_SAVE);
        let append = one(&spans, span::APPEND_EVENTS);
        let exists = one(&spans, span::REPOSITORY_EXISTS);
        let caller = parent.parent_id.to_string();
        assert_eq!(load.parent_span_id.as_deref(), Some(caller.as_str()));
        assert_eq!(save.parent_span_id.as_deref(), Some(caller.as_str()));
        assert_eq!(exists.parent_span_id.as_deref(), Some(caller.as_str()));
        assert_eq!(get.parent_span_id.as_deref(), Some(load.span_id.as_str()));
        assert_eq!(
            append.parent_span_id.as_deref(),
            Some(save.span_id.as_str())
        );

        let aggregate = [
            (attr::AGGREGATE_ID, "s-1"),
            (attr::AGGREGATE_TYPE, "Counter"),
            (attr::DB_SYSTEM, db),
        ];
        for s in [load, get, save, append, exists] {
            assert_attrs(s, &aggregate);
            assert!(!s.failed, "{label}: {} failed", s.name);
        }
        assert_attrs(load, &[(attr::VERSION, "0"), (attr::EVENT_COUNT, "0")]);
        assert_attrs(get, &[(attr::EVENT_COUNT, "0")]);
        assert_attrs(
            save,
            &[
                (attr::VERSION, "1"),
                (attr::EXPECTED_VERSION, "0"),
                (attr::EVENT_COUNT, "1"),
            ],
        );
        assert_attrs(append, &[(attr::VERSION, "1"), (attr::EVENT_COUNT, "1")]);
        assert_attrs(exists, &[(attr::VERSION, "1")]);

        // The stored event names the span that appended it.
        let stored = env
            .events
            .store()
            .read_stream("Counter-s-1", 1, 1, kausal_eventsource::Direction::Forward)
            .await
            .expect(label);
        let tp = stored[0].traceparent.expect("stored traceparent");
        assert_eq!(tp.trace_id, parent.trace_id, "{label}");
        assert_eq!(tp.parent_id.to_string(), append.span_id, "{label}");

        // A conflict fails the append and save spans with its type.
        let conflict_parent = new_parent();
        let stale = CommandContext::new(correlation("spans")).traced(conflict_parent);
        let err = repo
            .save("s-1", 0, &[CounterEvent::Incremented { by: 1 }], &stale)
            .await
            .expect_err(label);
        assert!(matches!(err, Error::Conflict { .. }), "{label}: {err}");
        let spans = capture.in_trace(&conflict_parent.trace_id.to_string());
        for name in [span::REPOSITORY_SAVE, span::APPEND_EVENTS] {
            let s = one(&spans, name);
            assert!(s.failed, "{label}: {name} not failed");
            assert_attrs(s, &[("error.type", "Conflict")]);
            assert_eq!(s.events, ["exception"], "{label}");
        }
    }
}

#[tokio::test]
async fn a_subscription_batch_is_one_trace_linked_to_its_events() {
    let capture = SpanCapture::install();
    for env in envs().await {
        let label = env.label;
        let db = db_system(label);
        let repo = Repository::<Counter>::new(env.events.clone());
        let context = CommandContext::new(correlation("spans"));
        for _ in 0..3 {
            repo.execute("s-2", &CounterCommand::Increment(1), &context)
                .await
                .expect(label);
        }
        settle(env.events.store()).await;
        let name = format!("spans-{}", uuid::Uuid::new_v4());
        let mut sub = Subscription::new(name.clone(), env.events.clone());
        let mut handed: Vec<TraceParent> = Vec::new();
        let mut handler = |batch: Batch| {
            handed.push(batch.trace);
            std::future::ready(Ok(()))
        };
        assert_eq!(sub.poll_once(&mut handler).await.expect(label), 3);
        let mine = |capture: &SpanCapture| -> Vec<CapturedSpan> {
            capture
                .spans()
                .into_iter()
                .filter(|s| s.attribute(attr::SUBSCRIPTION).as_deref() == Some(name.as_str()))
                .collect()
        };
        let spans = mine(&capture);
        let poll = one(&spans, span::POLL_BATCH);
        let process = one(&spans, span::PROCESS_BATCH);
        let save = one(&spans, span::SAVE_CHECKPOINT);
        assert_eq!(poll.parent_span_id, None, "{label}: a trace of its own");
        assert_eq!(process.trace_id, poll.trace_id);
        assert_eq!(save.trace_id, poll.trace_id);
        assert_eq!(
            process.parent_span_id.as_deref(),
            Some(poll.span_id.as_str())
        );
        assert_eq!(save.parent_span_id.as_deref(), Some(poll.span_id.as_str()));
        for s in [poll, process] {
            assert_attrs(s, &[(attr::EVENT_COUNT, "3"), (attr::DB_SYSTEM, db)]);
        }
        assert_attrs(save, &[(attr::DB_SYSTEM, db)]);
        // The handler runs under process_batch...
        assert_eq!(handed.len(), 1);
        assert_eq!(handed[0].parent_id.to_string(), process.span_id, "{label}");
        // ...which links the spans that appended the batch's events.
        let appended = env
            .events
            .store()
            .read_stream("Counter-s-2", 1, 10, kausal_eventsource::Direction::Forward)
            .await
            .expect(label);
        let want: Vec<String> = appended
            .iter()
            .map(|e| e.traceparent.expect("traceparent").parent_id.to_string())
            .collect();
        assert_eq!(process.links, want, "{label}");

        // A poll that finds nothing is not traced.
        let mut idle = |_: Batch| std::future::ready(Ok(()));
        assert_eq!(sub.poll_once(&mut idle).await.expect(label), 0);
        assert_eq!(
            mine(&capture).len(),
            3,
            "{label}: no spans for an idle poll"
        );
    }
}

/// A repository with a cache reads only the events after the state it
/// cached (its load span counts what it read), and still sees what another
/// writer appended in between: the same state as a repository without one.
#[tokio::test]
async fn a_cached_repository_reads_only_the_new_events_and_agrees_with_a_full_replay() {
    let capture = SpanCapture::install();
    for env in envs().await {
        let label = env.label;
        let cached = Repository::<Counter>::new(env.events.clone()).with_cache(16);
        let plain = Repository::<Counter>::new(env.events.clone());
        let context = CommandContext::new(correlation("cache"));
        for _ in 0..5 {
            plain
                .execute("c-cache", &CounterCommand::Increment(1), &context)
                .await
                .expect(label);
        }
        let read_by = |parent: TraceParent| {
            let spans = capture.in_trace(&parent.trace_id.to_string());
            one(&spans, span::REPOSITORY_LOAD)
                .attribute(attr::EVENT_COUNT)
                .unwrap_or_default()
        };
        let first = new_parent();
        let (state, version) = cached.load("c-cache", Some(first)).await.expect(label);
        assert_eq!((state.value, version), (5, 5), "{label}");
        assert_eq!(read_by(first), "5", "{label}: the first load replays all");
        // Another writer appends two more.
        for _ in 0..2 {
            plain
                .execute("c-cache", &CounterCommand::Increment(10), &context)
                .await
                .expect(label);
        }
        let second = new_parent();
        let (state, version) = cached.load("c-cache", Some(second)).await.expect(label);
        assert_eq!(read_by(second), "2", "{label}: only the new events");
        assert_eq!(
            (state, version),
            plain.load("c-cache", None).await.expect(label),
            "{label}: the same as a full replay"
        );
        assert_eq!(version, 7, "{label}");
    }
}
