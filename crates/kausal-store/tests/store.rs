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

#[tokio::test]
async fn a_down_database_is_a_clear_error() {
    let err = kausal_store::Store::connect("postgres://nobody@127.0.0.1:1/none")
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(text.contains("cannot connect"), "{text}");
}
