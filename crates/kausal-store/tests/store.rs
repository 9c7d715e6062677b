//! Store tests, run on every configured backend.

use kausal_store::testing;

#[tokio::test]
async fn idempotency_keys_on_every_backend() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        assert!(
            !store.is_processed("g", "e1").await.expect(db.label),
            "{}",
            db.label
        );
        assert!(
            store.mark_processed("g", "e1", 1).await.expect(db.label),
            "{}",
            db.label
        );
        assert!(
            store.is_processed("g", "e1").await.expect(db.label),
            "{}",
            db.label
        );
        // A second mark is a no-op, not an error.
        assert!(
            !store.mark_processed("g", "e1", 2).await.expect(db.label),
            "{}",
            db.label
        );
        // Keys are per group.
        assert!(
            !store.is_processed("other", "e1").await.expect(db.label),
            "{}",
            db.label
        );
        // Either of two keys (the runtime's handled / dead-lettered check).
        for (first, second, want) in [("e1", "x", true), ("x", "e1", true), ("x", "y", false)] {
            let got = store
                .is_processed_either("g", first, second)
                .await
                .expect(db.label);
            assert_eq!(got, want, "{} {first} {second}", db.label);
        }
        assert!(
            !store
                .is_processed_either("other", "e1", "e1")
                .await
                .expect(db.label),
            "{}",
            db.label
        );
        store.close().await;
        // Reconnecting re-runs migrations harmlessly and keeps the rows.
        let again = testing::connect(&db).await.expect(db.label);
        assert!(
            again.is_processed("g", "e1").await.expect(db.label),
            "{}",
            db.label
        );
    }
}

/// Marks written by many callers at once through the batching writer: each
/// caller returns once its own row is there; a repeated mark is harmless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_marks_are_all_written_on_every_backend() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let writer = kausal_store::MarkWriter::spawn(store.clone());
        let ids: Vec<String> = (0..600).map(|i| format!("m{i}")).collect();
        let writes = ids.iter().map(|id| {
            let writer = writer.clone();
            let group = if id.ends_with('7') { "g2" } else { "g1" };
            async move { writer.mark(group, id).await }
        });
        for result in futures::future::join_all(writes).await {
            result.expect(db.label);
        }
        writer.mark("g1", "m0").await.expect(db.label);
        for id in &ids {
            let group = if id.ends_with('7') { "g2" } else { "g1" };
            assert!(
                store.is_processed(group, id).await.expect(db.label),
                "{} {group} {id}",
                db.label
            );
            let other = if group == "g1" { "g2" } else { "g1" };
            assert!(
                !store.is_processed(other, id).await.expect(db.label),
                "{} {other} {id}",
                db.label
            );
        }
        assert_eq!(
            store
                .mark_processed_many(&[("g1", "m0"), ("g1", "new")], 1)
                .await
                .expect(db.label),
            1,
            "{}: only the new pair is inserted",
            db.label
        );
        store.close().await;
    }
}

#[tokio::test]
async fn a_down_database_is_a_clear_error() {
    let err = kausal_store::Store::connect("postgres://nobody@127.0.0.1:1/none")
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(text.contains("cannot connect"), "{text}");
}

#[tokio::test]
async fn order_views_round_trip_and_upsert_on_every_backend() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        assert_eq!(
            store.order_view("ord-1").await.expect(db.label),
            None,
            "{}",
            db.label
        );
        let mut v = kausal_store::OrderView {
            order_id: "ord-1".into(),
            status: "placed".into(),
            amount: Some(12.5),
            currency: Some("EUR".into()),
            updated_at_ms: 1,
            ..Default::default()
        };
        store.save_order_view(&v).await.expect(db.label);
        v.status = "paid".into();
        v.payment_id = Some("pay-1".into());
        v.notified = true;
        v.updated_at_ms = 2;
        store.save_order_view(&v).await.expect(db.label);
        assert_eq!(
            store.order_view("ord-1").await.expect(db.label),
            Some(v.clone()),
            "{}",
            db.label
        );
    }
}

/// Events of one order are folded concurrently (a worker per partition):
/// six folds at once, each setting its own field, must all be kept. A read
/// outside the write would lose some (the order view once stayed `placed`
/// with its payment on the topic).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_order_view_folds_lose_nothing_on_every_backend() {
    type Set = fn(&mut kausal_store::OrderView);
    const FOLDS: [Set; 6] = [
        |v| v.payment_id = Some("pay".into()),
        |v| v.reservation_id = Some("res".into()),
        |v| v.shipment_id = Some("ship".into()),
        |v| v.user_id = Some("u".into()),
        |v| v.currency = Some("EUR".into()),
        |v| v.notified = true,
    ];
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        for order in 0..20 {
            let id = format!("ord-{order}");
            let folds = FOLDS.iter().map(|set| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move {
                    store
                        .update_order_view(&id, |current| {
                            let mut v = current.unwrap_or_else(|| kausal_store::OrderView {
                                order_id: id.clone(),
                                status: "placed".into(),
                                ..Default::default()
                            });
                            set(&mut v);
                            Ok::<_, std::convert::Infallible>(Some(v))
                        })
                        .await
                })
            });
            for fold in futures::future::join_all(folds).await {
                fold.expect("task").expect(db.label).expect("infallible");
            }
            let v = store
                .order_view(&id)
                .await
                .expect(db.label)
                .expect("a view");
            assert!(
                v.payment_id.is_some()
                    && v.reservation_id.is_some()
                    && v.shipment_id.is_some()
                    && v.user_id.is_some()
                    && v.currency.is_some()
                    && v.notified,
                "{}: a fold was lost: {v:?}",
                db.label
            );
        }
    }
}

/// A view first saved without an amount (a later event folded before the
/// order's OrderPlaced) and then with one: found by the lag monitor, which
/// showed the order view stuck on PostgreSQL behind a binding error.
#[tokio::test]
async fn order_views_with_and_without_an_amount_on_every_backend() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let mut view = kausal_store::OrderView {
            order_id: "ord-1".into(),
            status: "reserved".into(),
            updated_at_ms: 1,
            ..Default::default()
        };
        store.save_order_view(&view).await.expect(db.label);
        let got = store.order_view("ord-1").await.expect(db.label);
        assert_eq!(got.as_ref().and_then(|v| v.amount), None, "{}", db.label);
        view.amount = Some(12.5);
        view.status = "shipped".into();
        store.save_order_view(&view).await.expect(db.label);
        let got = store.order_view("ord-1").await.expect(db.label);
        assert_eq!(got, Some(view.clone()), "{}", db.label);
    }
}

/// Services started at the same moment share one fresh database: every one
/// of them must get through the migrations, and each migration is applied
/// and recorded exactly once. Each `Store::connect` has its own pool, which
/// behaves like a separate process for the database's locks. On SQLite a
/// deferred transaction used to fail with "database is locked" instead of
/// waiting; on PostgreSQL two connects both saw a version missing and both
/// ran its `CREATE TABLE` (a duplicate-key error in the catalog) until
/// migrations took an advisory lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_starting_together_all_migrate_one_fresh_database_on_every_backend() {
    const SERVICES: usize = 8;
    let expected: Vec<(i64, String)> = kausal_store::MIGRATIONS
        .iter()
        .map(|(version, name, _)| (*version, (*name).to_owned()))
        .collect();
    for round in 0..5 {
        for db in testing::databases().await.expect("test databases") {
            let connects: Vec<_> = (0..SERVICES)
                .map(|_| {
                    let url = db.url.clone();
                    // A lock left held would make the others wait forever.
                    tokio::spawn(async move {
                        tokio::time::timeout(
                            std::time::Duration::from_secs(60),
                            kausal_store::Store::connect(&url),
                        )
                        .await
                    })
                })
                .collect();
            let mut stores = Vec::new();
            for (i, c) in connects.into_iter().enumerate() {
                let store = c
                    .await
                    .expect("task")
                    .unwrap_or_else(|_| panic!("{} round {round}, store {i}: timed out", db.label))
                    .unwrap_or_else(|e| panic!("{} round {round}, store {i}: {e}", db.label));
                assert!(!store.is_processed("g", "e").await.expect(db.label));
                stores.push(store);
            }
            assert_eq!(
                stores[0].applied_migrations().await.expect(db.label),
                expected,
                "{} round {round}: one row per migration",
                db.label
            );
            for store in stores {
                store.close().await;
            }
        }
    }
}
