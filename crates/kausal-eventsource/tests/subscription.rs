//! Catch-up subscription tests on every backend.

use std::collections::HashSet;
use std::time::Duration;

use kausal_core::{EventId, HandlerError};
use kausal_eventsource::{Batch, CommandContext, Error, GlobalCursor, Repository, Subscription};
use sqlx::Connection;
use tokio::sync::mpsc;

use crate::support::{Counter, CounterCommand, correlation, envs};
use kausal_store::testing::settle_read_all as settle;

/// Collects every event id handed over, in order.
fn collector(
    seen: &mut Vec<EventId>,
) -> impl FnMut(Batch) -> std::future::Ready<Result<(), HandlerError>> + Send + '_ {
    move |batch: Batch| {
        seen.extend(batch.events.iter().map(|e| e.event_id));
        std::future::ready(Ok(()))
    }
}

async fn increment(repo: &Repository<Counter>, id: &str, times: usize) {
    let context = CommandContext::new(correlation("sub"));
    for _ in 0..times {
        repo.execute(id, &CounterCommand::Increment(1), &context)
            .await
            .expect("increment");
    }
}

#[tokio::test]
async fn every_event_once_in_batches_then_resume_from_the_checkpoint() {
    for env in envs().await {
        let label = env.label;
        let repo = Repository::<Counter>::new(env.events.clone());
        increment(&repo, "a", 3).await;
        increment(&repo, "b", 2).await;
        settle(env.events.store()).await;
        let all = env
            .events
            .store()
            .read_all(GlobalCursor::START, 100)
            .await
            .expect(label);
        let all_ids: Vec<EventId> = all.iter().map(|e| e.event_id).collect();
        assert_eq!(all_ids.len(), 5, "{label}");

        let mut sub = Subscription::new("projector", env.events.clone()).with_batch_size(2);
        let mut seen = Vec::new();
        let mut handler = collector(&mut seen);
        assert_eq!(sub.poll_once(&mut handler).await.expect(label), 2);
        assert_eq!(
            env.events.metrics().lag_of("projector"),
            3,
            "{label}: three events behind after the first batch"
        );
        assert_eq!(
            env.events
                .store()
                .checkpoint("projector")
                .await
                .expect(label),
            Some(all[1].cursor()),
            "{label}: the checkpoint is the batch's last event"
        );
        assert_eq!(sub.poll_once(&mut handler).await.expect(label), 2);
        assert_eq!(sub.poll_once(&mut handler).await.expect(label), 1);
        assert_eq!(sub.poll_once(&mut handler).await.expect(label), 0);
        assert_eq!(env.events.metrics().lag_of("projector"), 0, "{label}");
        drop(handler);
        assert_eq!(seen, all_ids, "{label}: in order, each once");

        // A new subscription of the same name starts at the checkpoint.
        increment(&repo, "a", 1).await;
        settle(env.events.store()).await;
        let mut again = Subscription::new("projector", env.events.clone());
        let mut later = Vec::new();
        assert_eq!(
            again
                .poll_once(&mut collector(&mut later))
                .await
                .expect(label),
            1
        );
        assert_eq!(later.len(), 1, "{label}");
        assert!(!all_ids.contains(&later[0]), "{label}: only the new event");
        // Another name starts from the beginning.
        let mut fresh = Subscription::new("other", env.events.clone());
        let mut everything = Vec::new();
        assert_eq!(
            fresh
                .poll_once(&mut collector(&mut everything))
                .await
                .expect(label),
            6
        );
    }
}

#[tokio::test]
async fn a_failed_handler_gets_the_same_batch_again() {
    for env in envs().await {
        let label = env.label;
        let repo = Repository::<Counter>::new(env.events.clone());
        increment(&repo, "a", 3).await;
        settle(env.events.store()).await;
        let mut sub = Subscription::new("flaky", env.events.clone()).with_batch_size(10);
        let mut attempts: Vec<Vec<EventId>> = Vec::new();
        let mut handler = |batch: Batch| {
            attempts.push(batch.events.iter().map(|e| e.event_id).collect());
            let fail = attempts.len() == 1;
            async move {
                if fail {
                    Err(HandlerError::retryable(
                        "ProjectionDown",
                        "read model unreachable",
                    ))
                } else {
                    Ok(())
                }
            }
        };
        match sub.poll_once(&mut handler).await {
            Err(e @ Error::Handler { .. }) => {
                assert!(e.to_string().contains("handed over again"), "{label}: {e}")
            }
            other => panic!("{label}: expected the handler's failure, got {other:?}"),
        }
        assert_eq!(
            env.events.store().checkpoint("flaky").await.expect(label),
            None,
            "{label}: no checkpoint after a failure"
        );
        assert_eq!(sub.poll_once(&mut handler).await.expect(label), 3);
        assert_eq!(sub.poll_once(&mut handler).await.expect(label), 0);
        assert_eq!(attempts.len(), 2, "{label}");
        assert_eq!(attempts[0], attempts[1], "{label}: the same events again");
    }
}

/// The gap problem through a subscription (PostgreSQL): an event committed
/// after a later one is still handed over, first, and nothing twice.
#[tokio::test]
async fn a_subscription_does_not_skip_an_event_committed_out_of_order() {
    let env = crate::support::postgres_env().await;
    let repo = Repository::<Counter>::new(env.events.clone());
    let mut raw = sqlx::AnyConnection::connect(&env.db.url)
        .await
        .expect("a second connection");
    let mut open = raw.begin().await.expect("begin");
    let early = crate::support::new_event_id();
    sqlx::query(
            "INSERT INTO event_store_events (stream_id, stream_version, event_id, event_type, \
             event_version, payload, correlation_id, recorded_at_ms) \
             VALUES ('Counter-early', 1, $1, 'Incremented', 1, '{\"type\":\"Incremented\",\"by\":1}', 'c', 1)",
        )
        .bind(early.to_string())
        .execute(&mut *open)
        .await
        .expect("insert in the open transaction");
    increment(&repo, "late", 1).await;

    let mut sub = Subscription::new("gap", env.events.clone());
    let mut seen = Vec::new();
    assert_eq!(
        sub.poll_once(&mut collector(&mut seen))
            .await
            .expect("poll"),
        0,
        "the later event must wait for the open transaction"
    );
    assert_eq!(
        env.events
            .store()
            .checkpoint("gap")
            .await
            .expect("checkpoint"),
        None
    );
    open.commit().await.expect("commit");
    settle(env.events.store()).await;
    assert_eq!(
        sub.poll_once(&mut collector(&mut seen))
            .await
            .expect("poll"),
        2
    );
    assert_eq!(
        sub.poll_once(&mut collector(&mut seen))
            .await
            .expect("poll"),
        0
    );
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], early, "the earlier transaction's event first");
    raw.close().await.expect("close");
}

/// Writers execute commands on several counters while a subscription runs:
/// when they are done, the subscription has seen every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_subscription_sees_every_event_of_concurrent_writers_once() {
    for env in envs().await {
        let label = env.label;
        let repo = Repository::<Counter>::new(env.events.clone()).with_max_retries(100);
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<EventId>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut sub = Subscription::new("follower", env.events.clone())
            .with_batch_size(7)
            .with_idle_wait(Duration::from_millis(5));
        let follower = tokio::spawn(async move {
            let mut handler = move |batch: Batch| {
                for e in &batch.events {
                    seen_tx.send(e.event_id).expect("collector alive");
                }
                std::future::ready(Ok(()))
            };
            sub.run(&mut handler, async {
                let _ = stop_rx.await;
            })
            .await
        });
        // Four writers on three counters, in a shuffled order of their own.
        let writers: Vec<_> = (0..4usize)
            .map(|w| {
                let repo = repo.clone();
                tokio::spawn(async move {
                    let context = CommandContext::new(correlation(&format!("w{w}")));
                    for i in 0..15usize {
                        let id = format!("n{}", (w * 7 + i * 5) % 3);
                        repo.execute(&id, &CounterCommand::Increment(1), &context)
                            .await
                            .expect("execute");
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        settle(env.events.store()).await;
        let written: HashSet<EventId> = env
            .events
            .store()
            .read_all(GlobalCursor::START, 1_000)
            .await
            .expect(label)
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(written.len(), 60, "{label}");

        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), async {
            while seen.len() < written.len() {
                seen.push(seen_rx.recv().await.expect("the subscription runs"));
            }
        })
        .await
        .expect("the subscription caught up within a minute");
        stop_tx.send(()).expect("stop");
        follower.await.expect("follower").expect(label);
        // Nothing more arrived, and nothing twice.
        while let Ok(extra) = seen_rx.try_recv() {
            seen.push(extra);
        }
        let unique: HashSet<EventId> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "{label}: an event seen twice");
        assert_eq!(unique, written, "{label}");
    }
}
