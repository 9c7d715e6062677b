//! Repository tests on every backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kausal_eventsource::{
    CommandContext, Direction, Error, ExecuteError, ExpectedVersion, Repository,
};
use kausal_store::{NewEvent, Store};

use crate::support::{
    Counter, CounterCommand, CounterError, CounterEvent, Hook, correlation, envs, new_event_id,
};

#[tokio::test]
async fn a_new_aggregate_loads_empty_and_does_not_exist() {
    for env in envs().await {
        let repo = Repository::<Counter>::new(env.events.clone());
        let (state, version) = repo.load("c-1", None).await.expect(env.label);
        assert_eq!(state, Counter::default(), "{}", env.label);
        assert_eq!(version, 0, "{}", env.label);
        assert!(!repo.exists("c-1", None).await.expect(env.label));
    }
}

#[tokio::test]
async fn execute_saves_the_decided_events_and_load_folds_them() {
    for env in envs().await {
        let label = env.label;
        let repo = Repository::<Counter>::new(env.events.clone());
        let cause = new_event_id();
        let context = CommandContext::new(correlation("order-7"))
            .caused_by(cause)
            .publish_to("counter.v1", Some("c-1".to_owned()));
        let first = repo
            .execute("c-1", &CounterCommand::SetCeiling(10), &context)
            .await
            .expect(label);
        assert_eq!(first.version, 1, "{label}");
        assert_eq!(first.events, [CounterEvent::CeilingSet { ceiling: 10 }]);
        let second = repo
            .execute("c-1", &CounterCommand::Increment(4), &context)
            .await
            .expect(label);
        assert_eq!(second.version, 2, "{label}");
        assert_eq!(second.state.value, 4, "{label}");
        assert_eq!(second.conflicts, 0, "{label}");
        // A command that changes nothing writes nothing.
        let same = repo
            .execute("c-1", &CounterCommand::SetCeiling(10), &context)
            .await
            .expect(label);
        assert!(same.events.is_empty(), "{label}");
        assert_eq!(same.version, 2, "{label}");

        let (state, version) = repo.load("c-1", None).await.expect(label);
        assert_eq!(
            state,
            Counter {
                value: 4,
                ceiling: Some(10)
            },
            "{label}"
        );
        assert_eq!(version, 2, "{label}");
        assert!(repo.exists("c-1", None).await.expect(label), "{label}");
        assert!(!repo.exists("c-2", None).await.expect(label), "{label}");

        // What was stored: the aggregate's stream, the context's ids, the
        // event's type, its JSON, the appending span's context.
        let stored = env
            .events
            .store()
            .read_stream("Counter-c-1", 1, 10, Direction::Forward)
            .await
            .expect(label);
        assert_eq!(stored.len(), 2, "{label}");
        assert_eq!(stored[1].event_type, "Incremented");
        assert_eq!(stored[1].payload, r#"{"type":"Incremented","by":4}"#);
        assert_eq!(stored[1].correlation_id.as_str(), "order-7");
        assert_eq!(stored[1].causation_id, Some(cause));
        assert!(stored[1].traceparent.is_some(), "{label}");
        assert_ne!(stored[0].event_id, stored[1].event_id);

        // The outbox rows of both appends, in order, keyed as asked.
        let pending = env.events.store().outbox_pending(10).await.expect(label);
        let rows: Vec<(&str, Option<&str>, i64)> = pending
            .iter()
            .map(|p| (p.topic.as_str(), p.key.as_deref(), p.event.stream_version))
            .collect();
        assert_eq!(
            rows,
            [
                ("counter.v1", Some("c-1"), 1),
                ("counter.v1", Some("c-1"), 2)
            ],
            "{label}"
        );
    }
}

#[tokio::test]
async fn a_rejected_command_writes_nothing() {
    for env in envs().await {
        let label = env.label;
        let repo = Repository::<Counter>::new(env.events.clone());
        let context = CommandContext::new(correlation("c"));
        repo.execute("c-1", &CounterCommand::SetCeiling(3), &context)
            .await
            .expect(label);
        let cases = [
            (CounterCommand::Increment(0), CounterError::NotPositive(0)),
            (
                CounterCommand::Increment(4),
                CounterError::OverCeiling {
                    value: 0,
                    by: 4,
                    ceiling: 3,
                },
            ),
        ];
        for (command, want) in cases {
            match repo.execute("c-1", &command, &context).await {
                Err(ExecuteError::Rejected(got)) => assert_eq!(got, want, "{label}"),
                other => panic!("{label}: expected a rejection, got {other:?}"),
            }
        }
        assert_eq!(repo.load("c-1", None).await.expect(label).1, 1, "{label}");
    }
}

#[tokio::test]
async fn saving_on_a_stale_version_is_a_typed_conflict() {
    for env in envs().await {
        let label = env.label;
        let repo = Repository::<Counter>::new(env.events.clone());
        let context = CommandContext::new(correlation("c"));
        let increment = [CounterEvent::Incremented { by: 1 }];
        repo.save("c-1", 0, &increment, &context)
            .await
            .expect(label);
        match repo.save("c-1", 0, &increment, &context).await {
            Err(Error::Conflict {
                stream,
                expected,
                actual,
            }) => {
                assert_eq!(stream, "Counter-c-1", "{label}");
                assert_eq!(expected, ExpectedVersion::Exact(0), "{label}");
                assert_eq!(actual, 1, "{label}");
            }
            other => panic!("{label}: expected a conflict, got {other:?}"),
        }
        assert_eq!(env.events.metrics().conflicts_of("Counter"), 1, "{label}");
        assert_eq!(repo.load("c-1", None).await.expect(label).0.value, 1);
    }
}

#[tokio::test]
async fn a_stored_event_that_does_not_read_is_a_decode_error() {
    for env in envs().await {
        let label = env.label;
        let repo = Repository::<Counter>::new(env.events.clone());
        let odd = NewEvent {
            event_id: new_event_id(),
            event_type: "Renamed".to_owned(),
            event_version: 1,
            payload: r#"{"type":"Renamed"}"#.to_owned(),
            correlation_id: correlation("c"),
            causation_id: None,
            traceparent: None,
        };
        env.events
            .store()
            .append_events("Counter-c-1", ExpectedVersion::Any, &[odd], None)
            .await
            .expect(label);
        match repo.load("c-1", None).await {
            Err(e @ Error::Decode { .. }) => {
                let text = e.to_string();
                assert!(text.contains("Counter-c-1 v1 (Renamed)"), "{label}: {text}");
            }
            other => panic!("{label}: expected a decode error, got {other:?}"),
        }
    }
}

/// A writer slips in between `execute`'s load and save (from inside
/// `decide`, on a connection of its own): without retries the conflict is
/// returned; with them the command is decided again on the new state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_decides_again_after_a_conflict() {
    for env in envs().await {
        let label = env.label;
        let context = CommandContext::new(correlation("c"));
        let interfere = interferer(env.db.url.clone(), "Counter-c-1");

        let strict = Repository::<Counter>::new(env.events.clone()).with_max_retries(0);
        let command = CounterCommand::IncrementAfter(1, interfere.clone());
        match strict.execute("c-1", &command, &context).await {
            Err(ExecuteError::Failed(Error::Conflict { actual, .. })) => {
                assert_eq!(actual, 1, "{label}")
            }
            other => panic!("{label}: expected a conflict, got {other:?}"),
        }
        assert_eq!(env.events.metrics().conflicts_of("Counter"), 1, "{label}");

        let patient = Repository::<Counter>::new(env.events.clone()).with_max_retries(1);
        let command =
            CounterCommand::IncrementAfter(1, interferer(env.db.url.clone(), "Counter-c-1"));
        let done = patient
            .execute("c-1", &command, &context)
            .await
            .expect(label);
        assert_eq!(done.conflicts, 1, "{label}");
        // 100 from each interfering writer, 1 from the retried command.
        assert_eq!(done.state.value, 201, "{label}");
        assert_eq!(done.version, 3, "{label}");
        assert_eq!(env.events.metrics().conflicts_of("Counter"), 2, "{label}");
        let (state, version) = patient.load("c-1", None).await.expect(label);
        assert_eq!((state.value, version), (201, 3), "{label}");
    }
}

/// A hook that, the first time it runs, appends `Incremented { by: 100 }`
/// to `stream` from another thread with its own runtime and connection,
/// and waits until that append committed.
fn interferer(url: String, stream: &'static str) -> Hook {
    let fired = Arc::new(AtomicBool::new(false));
    Hook(Arc::new(move || {
        if fired.swap(true, Ordering::SeqCst) {
            return;
        }
        let url = url.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let store = Store::connect(&url).await.expect("interfering store");
                let event = NewEvent {
                    event_id: new_event_id(),
                    event_type: "Incremented".to_owned(),
                    event_version: 1,
                    payload: r#"{"type":"Incremented","by":100}"#.to_owned(),
                    correlation_id: correlation("interferer"),
                    causation_id: None,
                    traceparent: None,
                };
                store
                    .append_events(stream, ExpectedVersion::Any, &[event], None)
                    .await
                    .expect("interfering append");
                store.close().await;
            });
        })
        .join()
        .expect("interfering thread");
    }))
}

/// Many tasks increment one counter through `execute` at once: every
/// increment lands exactly once, and the conflicts they met were retried
/// (counted by the metric and by what `execute` returned, alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_executes_on_one_stream_lose_no_update() {
    const TASKS: i64 = 8;
    const INCREMENTS: i64 = 10;
    for env in envs().await {
        let label = env.label;
        // Eight writers on one stream: allow enough retries that none gives
        // up on a bad streak (the bound itself is tested above).
        let repo = Repository::<Counter>::new(env.events.clone()).with_max_retries(100);
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let repo = repo.clone();
                tokio::spawn(async move {
                    let context = CommandContext::new(correlation(&format!("task-{t}")));
                    let mut conflicts = 0;
                    for _ in 0..INCREMENTS {
                        let done = repo
                            .execute("shared", &CounterCommand::Increment(1), &context)
                            .await
                            .expect("execute");
                        conflicts += u64::from(done.conflicts);
                    }
                    conflicts
                })
            })
            .collect();
        let mut retried = 0;
        for task in tasks {
            retried += tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .expect("the writers finish within two minutes")
                .expect("task");
        }
        let (state, version) = repo.load("shared", None).await.expect(label);
        assert_eq!(state.value, TASKS * INCREMENTS, "{label}: lost updates");
        assert_eq!(version, TASKS * INCREMENTS, "{label}");
        let counted = env.events.metrics().conflicts_of("Counter");
        assert_eq!(counted, retried, "{label}: every conflict was retried");
        if env.is_postgres() {
            assert!(counted > 0, "{label}: the writers never collided");
        }
        eprintln!("{label}: {counted} conflicts retried");
        let text = env.registry.encode();
        assert!(
            text.contains(&format!(
                "eventstore_append_duration_seconds_count{{aggregate_type=\"Counter\"}} {}",
                TASKS * INCREMENTS + counted as i64
            )),
            "{label}: every append timed\n{text}"
        );
    }
}
