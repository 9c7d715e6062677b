//! The outbox relay's lease, run on every configured backend: one holder
//! at a time, renewals, release, and the takeover of an expired lease.
//! Times are given explicitly (the store compares expiry with the caller's
//! clock), so the tests do not sleep.

use std::sync::Arc;

use kausal_store::{OutboxLease, testing};

const LEASE: &str = "outbox-relay";

#[tokio::test]
async fn one_holder_at_a_time_renewals_and_release() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        assert_eq!(store.outbox_lease(LEASE).await.expect(label), None);

        assert!(
            store
                .outbox_lease_acquire(LEASE, "a", 1_000, 500)
                .await
                .expect(label),
            "{label}: a free lease is taken"
        );
        assert!(
            !store
                .outbox_lease_acquire(LEASE, "b", 1_200, 500)
                .await
                .expect(label),
            "{label}: b must wait while a holds it"
        );
        // The refused attempt wrote nothing.
        assert_eq!(
            store.outbox_lease(LEASE).await.expect(label),
            Some(OutboxLease {
                holder: "a".into(),
                expires_at_ms: 1_500
            }),
            "{label}"
        );
        assert!(
            store
                .outbox_lease_acquire(LEASE, "a", 1_400, 500)
                .await
                .expect(label),
            "{label}: the holder renews"
        );
        // Renewed until 1900: at 1600 (past the first expiry) b still waits.
        assert!(
            !store
                .outbox_lease_acquire(LEASE, "b", 1_600, 500)
                .await
                .expect(label),
            "{label}: a renewed lease is not taken over at its old expiry"
        );
        // Another lease name is independent.
        assert!(
            store
                .outbox_lease_acquire("other-relay", "b", 1_600, 500)
                .await
                .expect(label),
            "{label}"
        );

        assert!(
            !store.outbox_lease_release(LEASE, "b").await.expect(label),
            "{label}: b cannot release a's lease"
        );
        assert!(store.outbox_lease_release(LEASE, "a").await.expect(label));
        assert_eq!(store.outbox_lease(LEASE).await.expect(label), None);
        assert!(
            store
                .outbox_lease_acquire(LEASE, "b", 1_700, 500)
                .await
                .expect(label),
            "{label}: a released lease is taken at once"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_its_old_holder_is_refused() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        assert!(
            store
                .outbox_lease_acquire(LEASE, "a", 1_000, 100)
                .await
                .expect(label)
        );
        // At its expiry the lease still holds (expired means strictly past).
        assert!(
            !store
                .outbox_lease_acquire(LEASE, "b", 1_100, 100)
                .await
                .expect(label),
            "{label}"
        );
        assert!(
            store
                .outbox_lease_acquire(LEASE, "b", 1_101, 100)
                .await
                .expect(label),
            "{label}: an expired lease is taken over"
        );
        assert!(
            !store
                .outbox_lease_acquire(LEASE, "a", 1_102, 100)
                .await
                .expect(label),
            "{label}: the old holder cannot renew what was taken over"
        );
        assert!(
            !store.outbox_lease_release(LEASE, "a").await.expect(label),
            "{label}: nor release it"
        );
        assert_eq!(
            store.outbox_lease(LEASE).await.expect(label),
            Some(OutboxLease {
                holder: "b".into(),
                expires_at_ms: 1_201
            }),
            "{label}"
        );
        store.close().await;
    }
}

/// Rounds of contenders racing for the lease at the same instant, each
/// round after the previous winner's lease expired: exactly one wins each
/// round, also when the row does not exist yet (the first round races two
/// inserts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_holders_never_both_win() {
    const ROUNDS: i64 = 15;
    const CONTENDERS: usize = 6;
    for db in testing::databases().await.expect("test databases") {
        let store = Arc::new(testing::connect(&db).await.expect(db.label));
        let label = db.label;
        for round in 0..ROUNDS {
            // Each round starts after the last lease (100 ms) expired.
            let now = 10_000 + round * 1_000;
            let start = Arc::new(tokio::sync::Barrier::new(CONTENDERS));
            let tasks: Vec<_> = (0..CONTENDERS)
                .map(|i| {
                    let (store, start) = (store.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        let holder = format!("holder-{i}");
                        let won = store
                            .outbox_lease_acquire(LEASE, &holder, now, 100)
                            .await
                            .expect("acquire");
                        (holder, won)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for task in tasks {
                let (holder, won) = task.await.expect("contender");
                if won {
                    winners.push(holder);
                }
            }
            assert_eq!(winners.len(), 1, "{label} round {round}: {winners:?}");
            let stored = store.outbox_lease(LEASE).await.expect(label);
            assert_eq!(
                stored,
                Some(OutboxLease {
                    holder: winners[0].clone(),
                    expires_at_ms: now + 100
                }),
                "{label} round {round}: the winner's row"
            );
        }
        store.close().await;
    }
}
