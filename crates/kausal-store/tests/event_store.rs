//! Event store tests, run on every configured backend.

use std::time::Duration;

use kausal_core::EventId;
use kausal_store::event_store::StreamAppend;
use kausal_store::testing::settle_read_all;
use kausal_store::{
    AppendError, Direction, ExpectedVersion, GlobalCursor, NewEvent, OutboxTarget, RecordedEvent,
    Store, testing,
};
use sqlx::Connection;

fn event(event_type: &str, payload: &str) -> NewEvent {
    NewEvent {
        event_id: EventId::from_uuid(uuid::Uuid::new_v4()),
        event_type: event_type.to_owned(),
        event_version: 1,
        payload: payload.to_owned(),
        correlation_id: "corr-1".parse().expect("correlation id"),
        causation_id: None,
        traceparent: None,
    }
}

fn payloads(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.payload.as_str()).collect()
}

fn outbox(topic: &str, key: &str) -> OutboxTarget {
    OutboxTarget {
        topic: topic.to_owned(),
        key: Some(key.to_owned()),
    }
}

#[tokio::test]
async fn append_then_read_forward_and_backward() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        assert_eq!(store.stream_version("acct-1").await.expect(label), 0);
        let mut first = event("Opened", r#"{"n":1}"#);
        let cause = EventId::from_uuid(uuid::Uuid::new_v4());
        let tp = kausal_core::TraceParent::parse(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .expect("traceparent");
        first.causation_id = Some(cause);
        first.traceparent = Some(tp);
        let appended = store
            .append_events(
                "acct-1",
                ExpectedVersion::NoStream,
                &[first.clone(), event("Deposited", r#"{"n":2}"#)],
                None,
            )
            .await
            .expect(label);
        assert_eq!(appended.stream_version, 2, "{label}");
        assert_eq!(appended.cursors.len(), 2, "{label}");
        assert!(appended.cursors[0] < appended.cursors[1], "{label}");
        store
            .append_events(
                "acct-1",
                ExpectedVersion::Exact(2),
                &[event("Deposited", r#"{"n":3}"#)],
                None,
            )
            .await
            .expect(label);
        // Another stream does not disturb this one.
        store
            .append_events(
                "acct-2",
                ExpectedVersion::Any,
                &[event("Opened", "{}")],
                None,
            )
            .await
            .expect(label);
        assert_eq!(store.stream_version("acct-1").await.expect(label), 3);

        let forward = store
            .read_stream("acct-1", 1, 100, Direction::Forward)
            .await
            .expect(label);
        assert_eq!(
            payloads(&forward),
            [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#],
            "{label}"
        );
        let stored = &forward[0];
        assert_eq!(stored.stream_id, "acct-1");
        assert_eq!(stored.stream_version, 1);
        assert_eq!(stored.event_id, first.event_id);
        assert_eq!(stored.event_type, "Opened");
        assert_eq!(stored.event_version, 1);
        assert_eq!(stored.correlation_id.as_str(), "corr-1");
        assert_eq!(stored.causation_id, Some(cause));
        assert_eq!(stored.traceparent, Some(tp));
        assert!(stored.recorded_at_ms > 0);
        assert_eq!(forward[1].causation_id, None, "{label}");

        let from_two = store
            .read_stream("acct-1", 2, 1, Direction::Forward)
            .await
            .expect(label);
        assert_eq!(payloads(&from_two), [r#"{"n":2}"#], "{label}");
        let backward = store
            .read_stream("acct-1", i64::MAX, 2, Direction::Backward)
            .await
            .expect(label);
        assert_eq!(payloads(&backward), [r#"{"n":3}"#, r#"{"n":2}"#], "{label}");
        let none = store
            .read_stream("nobody", 1, 10, Direction::Forward)
            .await
            .expect(label);
        assert!(none.is_empty(), "{label}");

        // The global order holds every stream, each event once, in append
        // order here (one writer at a time).
        settle_read_all(&store).await;
        let all = store.read_all(GlobalCursor::START, 100).await.expect(label);
        assert_eq!(all.len(), 4, "{label}");
        assert!(all.windows(2).all(|w| w[0].cursor() < w[1].cursor()));
        let after_two = store.read_all(all[1].cursor(), 100).await.expect(label);
        assert_eq!(after_two, all[2..].to_vec(), "{label}");
        assert_eq!(store.events_after(all[1].cursor()).await.expect(label), 2);
        assert_eq!(
            store.events_after(GlobalCursor::START).await.expect(label),
            4
        );
    }
}

#[tokio::test]
async fn a_stale_expected_version_is_a_conflict_and_writes_nothing() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        let target = outbox("ledger.entry.v1", "acct-1");
        store
            .append_events(
                "acct-1",
                ExpectedVersion::NoStream,
                &[event("Opened", "{}")],
                Some(&target),
            )
            .await
            .expect(label);
        let cases = [
            (ExpectedVersion::NoStream, 1),
            (ExpectedVersion::Exact(0), 1),
            (ExpectedVersion::Exact(2), 1),
        ];
        for (expected, actual) in cases {
            let err = store
                .append_events(
                    "acct-1",
                    expected,
                    &[event("Deposited", "{}"), event("Deposited", "{}")],
                    Some(&target),
                )
                .await
                .expect_err(label);
            match err {
                AppendError::Conflict {
                    stream,
                    expected: e,
                    actual: a,
                } => {
                    assert_eq!(stream, "acct-1", "{label}");
                    assert_eq!(e, expected, "{label}");
                    assert_eq!(a, actual, "{label}");
                }
                other => panic!("{label}: expected a conflict, got {other:?}"),
            }
        }
        assert_eq!(store.stream_version("acct-1").await.expect(label), 1);
        settle_read_all(&store).await;
        let all = store.read_all(GlobalCursor::START, 100).await.expect(label);
        assert_eq!(all.len(), 1, "{label}: no event of a conflicting append");
        let stats = store.outbox_stats(i64::MAX).await.expect(label);
        assert_eq!(stats.pending, 1, "{label}: no outbox row either");
    }
}

/// Two writers that read the same version race to append the next one
/// (PostgreSQL lets both read before either writes): exactly one wins, the
/// other gets a conflict, and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_of_one_version_one_wins() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        let writers = 8;
        let rounds = 10;
        let mut wins = 0;
        for round in 0..rounds {
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .append_events(
                                "race",
                                ExpectedVersion::Exact(round),
                                &[event("Bumped", &format!("{{\"w\":{w}}}"))],
                                Some(&outbox("race", "race")),
                            )
                            .await
                    })
                })
                .collect();
            let mut round_wins = 0;
            for task in tasks {
                match task.await.expect("task") {
                    Ok(appended) => {
                        assert_eq!(appended.stream_version, round + 1, "{label}");
                        round_wins += 1;
                    }
                    Err(AppendError::Conflict { actual, .. }) => {
                        assert_eq!(actual, round + 1, "{label}")
                    }
                    Err(other) => panic!("{label}: {other}"),
                }
            }
            assert_eq!(round_wins, 1, "{label}: round {round}");
            wins += round_wins;
        }
        assert_eq!(store.stream_version("race").await.expect(label), wins);
        let stats = store.outbox_stats(i64::MAX).await.expect(label);
        assert_eq!(stats.pending, wins, "{label}: one outbox row per winner");
    }
}

/// Appends with no expectation from many tasks at once all land, each at
/// its own version (the store retries the ones that lost a version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_version_appends_from_many_tasks_all_land() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .append_events(
                            "any",
                            ExpectedVersion::Any,
                            &[event("E", &i.to_string())],
                            None,
                        )
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect(label);
        }
        let events = store
            .read_stream("any", 1, 100, Direction::Forward)
            .await
            .expect(label);
        let versions: Vec<i64> = events.iter().map(|e| e.stream_version).collect();
        assert_eq!(versions, (1..=16).collect::<Vec<_>>(), "{label}");
        let mut payloads: Vec<i64> = events
            .iter()
            .map(|e| e.payload.parse().expect("number"))
            .collect();
        payloads.sort();
        assert_eq!(payloads, (0..16).collect::<Vec<_>>(), "{label}");
    }
}

#[tokio::test]
async fn an_event_id_is_stored_once() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        let once = event("Opened", "{}");
        store
            .append_events("a", ExpectedVersion::Any, std::slice::from_ref(&once), None)
            .await
            .expect(label);
        // Again, in another stream, behind a fresh event of the same append.
        let err = store
            .append_events(
                "b",
                ExpectedVersion::NoStream,
                &[event("Fresh", "{}"), once.clone()],
                Some(&outbox("t", "b")),
            )
            .await
            .expect_err(label);
        match err {
            AppendError::DuplicateEvent { event_id } => assert_eq!(event_id, once.event_id),
            other => panic!("{label}: expected a duplicate, got {other:?}"),
        }
        assert!(
            err_message_says_what_to_do(&store, &once).await,
            "{label}: the error names the event and what to do"
        );
        assert_eq!(
            store.stream_version("b").await.expect(label),
            0,
            "{label}: the fresh event of the failed append is not stored"
        );
        assert_eq!(store.outbox_stats(0).await.expect(label).pending, 0);
    }
}

async fn err_message_says_what_to_do(store: &Store, duplicate: &NewEvent) -> bool {
    let err = store
        .append_events(
            "c",
            ExpectedVersion::Any,
            std::slice::from_ref(duplicate),
            None,
        )
        .await
        .expect_err("duplicate");
    let text = err.to_string();
    text.contains(&duplicate.event_id.to_string()) && text.contains("new id")
}

#[tokio::test]
async fn outbox_rows_pending_in_order_then_sent() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        // No target: no rows.
        store
            .append_events("quiet", ExpectedVersion::Any, &[event("E", "{}")], None)
            .await
            .expect(label);
        assert_eq!(
            store.outbox_stats(0).await.expect(label),
            kausal_store::OutboxStats::default()
        );
        // Two streams interleaved.
        for (stream, n) in [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)] {
            store
                .append_events(
                    stream,
                    ExpectedVersion::Exact(n - 1),
                    &[event("E", &format!("{stream}{n}"))],
                    Some(&outbox("topic-x", stream)),
                )
                .await
                .expect(label);
        }
        let pending = store.outbox_pending(100).await.expect(label);
        let seen: Vec<&str> = pending.iter().map(|p| p.event.payload.as_str()).collect();
        assert_eq!(seen, ["a1", "b1", "a2", "b2", "a3"], "{label}");
        for p in &pending {
            assert_eq!(p.topic, "topic-x");
            assert_eq!(p.key.as_deref(), Some(p.event.stream_id.as_str()));
            assert!(p.created_at_ms > 0);
        }
        // Per stream, versions ascend.
        for stream in ["a", "b"] {
            let versions: Vec<i64> = pending
                .iter()
                .filter(|p| p.event.stream_id == stream)
                .map(|p| p.event.stream_version)
                .collect();
            assert!(versions.windows(2).all(|w| w[0] < w[1]), "{label} {stream}");
        }
        let oldest = pending[0].created_at_ms;
        let stats = store.outbox_stats(oldest + 1_500).await.expect(label);
        assert_eq!(stats.pending, 5);
        assert_eq!(stats.oldest_age_ms, Some(1_500));

        // Send the first two; the limit reads only what is asked for.
        let first_two: Vec<i64> = pending[..2].iter().map(|p| p.event.position).collect();
        assert_eq!(
            store.outbox_mark_sent(&first_two, 42).await.expect(label),
            2
        );
        // Marking again changes nothing.
        assert_eq!(
            store.outbox_mark_sent(&first_two, 43).await.expect(label),
            0
        );
        let rest = store.outbox_pending(2).await.expect(label);
        let seen: Vec<&str> = rest.iter().map(|p| p.event.payload.as_str()).collect();
        assert_eq!(seen, ["a2", "b2"], "{label}");
        let all: Vec<i64> = pending.iter().map(|p| p.event.position).collect();
        assert_eq!(store.outbox_mark_sent(&all, 44).await.expect(label), 3);
        assert!(store.outbox_pending(100).await.expect(label).is_empty());
        assert_eq!(store.outbox_stats(0).await.expect(label).pending, 0);
        assert_eq!(store.outbox_mark_sent(&[], 45).await.expect(label), 0);
    }
}

#[tokio::test]
async fn checkpoints_round_trip() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        assert_eq!(store.checkpoint("projector").await.expect(label), None);
        let first = GlobalCursor {
            tx_id: 7,
            position: 3,
        };
        store
            .save_checkpoint("projector", first)
            .await
            .expect(label);
        assert_eq!(
            store.checkpoint("projector").await.expect(label),
            Some(first)
        );
        let second = GlobalCursor {
            tx_id: 9,
            position: 2,
        };
        store
            .save_checkpoint("projector", second)
            .await
            .expect(label);
        assert_eq!(
            store.checkpoint("projector").await.expect(label),
            Some(second)
        );
        assert_eq!(store.checkpoint("other").await.expect(label), None);
    }
}

/// The gap problem, deterministically (PostgreSQL; SQLite has one writer
/// per file, so a second transaction cannot write while one is open). A
/// transaction appends and stays open; a later one commits; `read_all`
/// must not hand out the later event while the earlier one may still
/// commit below it. After the commit both come, the earlier one first, and
/// a reader that followed its cursor sees each exactly once.
#[tokio::test]
async fn read_all_does_not_skip_an_event_committed_out_of_order() {
    let db = testing::postgres().await;
    let store = testing::connect(&db).await.expect(db.label);
    let mut raw = sqlx::AnyConnection::connect(&db.url)
        .await
        .expect("a second connection");
    let mut open = raw.begin().await.expect("begin");
    let early = event("Early", "early");
    sqlx::query(
        "INSERT INTO event_store_events (stream_id, stream_version, event_id, event_type, \
             event_version, payload, correlation_id, recorded_at_ms) \
             VALUES ($1, 1, $2, 'Early', 1, 'early', 'corr-1', 1)",
    )
    .bind("gap-early")
    .bind(early.event_id.to_string())
    .execute(&mut *open)
    .await
    .expect("insert in the open transaction");

    let mut cursor = GlobalCursor::START;
    let mut seen = Vec::new();
    store
        .append_events(
            "gap-late",
            ExpectedVersion::NoStream,
            &[event("Late", "late")],
            None,
        )
        .await
        .expect("append while the other is open");
    // The late event is committed and visible to plain reads...
    assert_eq!(store.stream_version("gap-late").await.expect("version"), 1);
    // ...but not past the open transaction's gap.
    let batch = store.read_all(cursor, 100).await.expect("read");
    assert!(
        batch.is_empty(),
        "read_all handed out {:?} while an earlier transaction was open",
        payloads(&batch)
    );
    // A follower keeps its cursor where it was.
    for e in batch {
        cursor = e.cursor();
        seen.push(e.payload);
    }

    open.commit().await.expect("commit the early transaction");
    settle_read_all(&store).await;
    let batch = store.read_all(cursor, 100).await.expect("read");
    assert_eq!(payloads(&batch), ["early", "late"]);
    for e in batch {
        cursor = e.cursor();
        seen.push(e.payload);
    }
    assert!(store.read_all(cursor, 100).await.expect("read").is_empty());
    assert_eq!(seen, ["early", "late"], "each exactly once");
    raw.close().await.expect("close");
}

/// A follower of `read_all` running while several writers append: at the
/// end it has seen every committed event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_every_event_of_concurrent_writers_once() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for i in 0..25 {
                        let batch: Vec<NewEvent> =
                            (0..1 + (w + i) % 3).map(|_| event("E", "{}")).collect();
                        store
                            .append_events(&format!("w{w}"), ExpectedVersion::Any, &batch, None)
                            .await
                            .expect("append");
                        ids.extend(batch.iter().map(|e| e.event_id));
                    }
                    ids
                })
            })
            .collect();
        let follower = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut cursor = GlobalCursor::START;
                let mut seen = Vec::new();
                loop {
                    let batch = store.read_all(cursor, 7).await.expect("read");
                    if batch.is_empty() {
                        // Done first: once every writer has returned, no
                        // event after the cursor means none will come.
                        if store.checkpoint("done").await.expect("done").is_some()
                            && store.events_after(cursor).await.expect("lag") == 0
                        {
                            return seen;
                        }
                        tokio::task::yield_now().await;
                        continue;
                    }
                    for e in batch {
                        assert!(e.cursor() > cursor, "cursors only move forward");
                        cursor = e.cursor();
                        seen.push(e.event_id);
                    }
                }
            })
        };
        let mut written = Vec::new();
        for w in writers {
            written.extend(w.await.expect("writer"));
        }
        // Tells the follower that no writer is left (a checkpoint row is a
        // handy flag in the same database).
        store
            .save_checkpoint("done", GlobalCursor::START)
            .await
            .expect(label);
        let seen = tokio::time::timeout(Duration::from_secs(60), follower)
            .await
            .expect("the follower caught up within a minute")
            .expect("follower");
        let mut seen_sorted = seen.clone();
        seen_sorted.sort();
        seen_sorted.dedup();
        assert_eq!(
            seen_sorted.len(),
            seen.len(),
            "{label}: an event seen twice"
        );
        written.sort();
        assert_eq!(seen_sorted, written, "{label}: every event seen");
    }
}

/// The unique index is the arbiter (PostgreSQL): a writer that read the
/// version before another transaction's insert of the same version
/// committed waits for it on the index, then gets a conflict, not a
/// duplicate version and not a database error.
#[tokio::test]
async fn the_unique_index_turns_a_lost_race_into_a_conflict() {
    let db = testing::postgres().await;
    let store = testing::connect(&db).await.expect(db.label);
    let mut raw = sqlx::AnyConnection::connect(&db.url)
        .await
        .expect("a second connection");
    let raw_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut raw)
        .await
        .expect("pid");
    let mut open = raw.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO event_store_events (stream_id, stream_version, event_id, event_type, \
             event_version, payload, correlation_id, recorded_at_ms) \
             VALUES ('arbiter', 1, $1, 'First', 1, 'first', 'corr-1', 1)",
    )
    .bind(EventId::from_uuid(uuid::Uuid::new_v4()).to_string())
    .execute(&mut *open)
    .await
    .expect("insert in the open transaction");

    // Reads version 0 (the insert above is not committed), inserts
    // version 1 and waits on the index for the open transaction.
    let loser = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append_events(
                    "arbiter",
                    ExpectedVersion::NoStream,
                    &[event("Second", "second")],
                    Some(&outbox("t", "arbiter")),
                )
                .await
        })
    };
    let watcher = testing::connect(&db).await.expect("watcher");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            )
            .bind(raw_pid)
            .fetch_one(watcher.pool())
            .await
            .expect("blocked sessions");
            if waiting > 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the second writer waits on the first within 30 s");
    open.commit().await.expect("commit the first writer");

    match loser.await.expect("task") {
        Err(AppendError::Conflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, "arbiter");
            assert_eq!(expected, ExpectedVersion::NoStream);
            assert_eq!(actual, 1);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let events = store
        .read_stream("arbiter", 1, 10, Direction::Forward)
        .await
        .expect("read");
    assert_eq!(payloads(&events), ["first"]);
    assert_eq!(store.outbox_stats(0).await.expect("stats").pending, 0);
    raw.close().await.expect("close");
}

fn part<'a>(
    stream_id: &'a str,
    expected: ExpectedVersion,
    events: &'a [NewEvent],
    outbox: Option<&'a OutboxTarget>,
) -> StreamAppend<'a> {
    StreamAppend {
        stream_id,
        expected,
        events,
        outbox,
    }
}

/// Several streams in one transaction: all written when every version is
/// as expected, answered in the order given; nothing at all, outbox rows
/// included, when one stream moved, one event is a duplicate, or a stream
/// is named twice.
#[tokio::test]
async fn append_many_writes_every_stream_or_none() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        let target = outbox("ledger.entry.v1", "e-1");
        let entry = [event("EntryPosted", "e1")];
        let legs = [event("LegPosted", "cash1"), event("LegPosted", "cash2")];
        let revenue = [event("LegPosted", "revenue1")];
        // Given out of stream-id order on purpose: answers follow the input.
        let appended = store
            .append_many(&[
                part("entry-1", ExpectedVersion::NoStream, &entry, Some(&target)),
                part("account-revenue", ExpectedVersion::Exact(0), &revenue, None),
                part("account-cash", ExpectedVersion::Any, &legs, None),
            ])
            .await
            .expect(label);
        let versions: Vec<i64> = appended.iter().map(|a| a.stream_version).collect();
        assert_eq!(versions, [1, 1, 2], "{label}");
        let cursors: Vec<usize> = appended.iter().map(|a| a.cursors.len()).collect();
        assert_eq!(cursors, [1, 1, 2], "{label}");
        // One transaction: on PostgreSQL every row has its id.
        let tx_ids: Vec<i64> = appended
            .iter()
            .flat_map(|a| a.cursors.iter().map(|c| c.tx_id))
            .collect();
        assert!(
            tx_ids.windows(2).all(|w| w[0] == w[1]),
            "{label}: {tx_ids:?}"
        );
        let pending = store.outbox_pending(10).await.expect(label);
        assert_eq!(pending.len(), 1, "{label}: only the part with a target");
        assert_eq!(pending[0].event.stream_id, "entry-1");
        assert_eq!(pending[0].key.as_deref(), Some("e-1"));

        let count = |store: &Store| {
            let store = store.clone();
            async move {
                store
                    .events_after(GlobalCursor::START)
                    .await
                    .expect("count")
            }
        };
        let before = count(&store).await;
        assert_eq!(before, 4, "{label}");

        // One stale stream among fresh ones: a conflict naming it, nothing
        // written (the fresh streams first and last in lock order).
        let more = [event("LegPosted", "x")];
        let again = [event("EntryPosted", "e2")];
        let err = store
            .append_many(&[
                part("account-cash", ExpectedVersion::Exact(2), &more, None),
                part("entry-2", ExpectedVersion::NoStream, &again, Some(&target)),
                part("account-revenue", ExpectedVersion::Exact(0), &more, None),
                part(
                    "zz-last",
                    ExpectedVersion::NoStream,
                    &[event("E", "z")],
                    None,
                ),
            ])
            .await
            .expect_err(label);
        match err {
            AppendError::Conflict {
                stream,
                expected,
                actual,
            } => {
                assert_eq!(stream, "account-revenue", "{label}");
                assert_eq!(expected, ExpectedVersion::Exact(0));
                assert_eq!(actual, 1);
            }
            other => panic!("{label}: expected a conflict, got {other:?}"),
        }
        assert_eq!(count(&store).await, before, "{label}: nothing written");
        assert_eq!(store.stream_version("account-cash").await.expect(label), 2);
        assert_eq!(store.stream_version("entry-2").await.expect(label), 0);
        assert_eq!(store.outbox_stats(0).await.expect(label).pending, 1);

        // A duplicate event id in a later part: nothing of the earlier ones.
        let err = store
            .append_many(&[
                part("account-cash", ExpectedVersion::Exact(2), &more, None),
                part("zz-dup", ExpectedVersion::NoStream, &entry, Some(&target)),
            ])
            .await
            .expect_err(label);
        assert!(
            matches!(err, AppendError::DuplicateEvent { event_id } if event_id == entry[0].event_id),
            "{label}: {err:?}"
        );
        assert_eq!(count(&store).await, before, "{label}: nothing written");

        // A stream named twice is refused before anything runs.
        let err = store
            .append_many(&[
                part("account-cash", ExpectedVersion::Exact(2), &more, None),
                part("account-cash", ExpectedVersion::Exact(3), &again, None),
            ])
            .await
            .expect_err(label);
        assert!(
            matches!(&err, AppendError::StreamRepeated { stream } if stream == "account-cash"),
            "{label}: {err:?}"
        );
        assert!(err.to_string().contains("give each stream one part"));
        assert_eq!(count(&store).await, before, "{label}: nothing written");
        assert!(store.append_many(&[]).await.expect(label).is_empty());
    }
}

/// Writers that each append to the same two streams, half of them naming
/// the streams in the opposite order: per round exactly one wins and the
/// others get a conflict — never a deadlock error from PostgreSQL, since
/// the store inserts streams in one order whatever order it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_multi_stream_appends_one_wins_and_never_deadlock() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        let rounds = 10;
        for round in 0..rounds {
            let tasks: Vec<_> = (0..6)
                .map(|w| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let x = [event("E", &format!("x{w}"))];
                        let y = [event("E", &format!("y{w}"))];
                        let target = outbox("t", "k");
                        let mut parts = vec![
                            part("pair-x", ExpectedVersion::Exact(round), &x, Some(&target)),
                            part("pair-y", ExpectedVersion::Exact(round), &y, None),
                        ];
                        if w % 2 == 1 {
                            parts.reverse();
                        }
                        store.append_many(&parts).await
                    })
                })
                .collect();
            let mut wins = 0;
            for task in tasks {
                match task.await.expect("task") {
                    Ok(appended) => {
                        assert!(appended.iter().all(|a| a.stream_version == round + 1));
                        wins += 1;
                    }
                    Err(AppendError::Conflict { actual, .. }) => {
                        assert_eq!(actual, round + 1, "{label}")
                    }
                    Err(other) => panic!("{label}: round {round}: {other}"),
                }
            }
            assert_eq!(wins, 1, "{label}: round {round}");
        }
        for stream in ["pair-x", "pair-y"] {
            assert_eq!(store.stream_version(stream).await.expect(label), rounds);
        }
        let stats = store.outbox_stats(i64::MAX).await.expect(label);
        assert_eq!(stats.pending, rounds, "{label}: one outbox row per winner");
    }
}
