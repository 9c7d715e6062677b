//! `Idempotency-Key` in the event store, on every backend: one claimer per
//! key even when requests race, the first answer given again, a reused key
//! refused, a released or abandoned claim taken over.

use std::time::Duration;

use kausal_eventsource::{Claim, IdempotencyKey, IdempotencyKeys, StoredAnswer};
use serde_json::json;

use crate::support::{correlation, envs};

fn key(k: &str) -> IdempotencyKey {
    k.parse().expect("a valid key")
}

#[tokio::test]
async fn the_first_answer_is_given_again_and_a_reused_key_is_refused() {
    for env in envs().await {
        let label = env.label;
        let keys = IdempotencyKeys::new(env.events.clone(), "orders");
        let k = key("k-1");
        let request = json!({"user_id": "u-1", "amount": 42.0});
        let corr = correlation("c-1");
        let Claim::New(claimed) = keys.claim(&k, &request, &corr, None).await.expect(label) else {
            panic!("{label}: the first request claims the key");
        };
        assert_eq!(
            keys.claim(&k, &request, &corr, None).await.expect(label),
            Claim::InProgress,
            "{label}: the same request while the first runs"
        );
        let answer = StoredAnswer {
            status: 201,
            body: json!({"order_id": "o-1"}),
        };
        keys.complete(claimed, answer.clone(), None)
            .await
            .expect(label);
        // Key order and whitespace do not make another request.
        let same: serde_json::Value =
            serde_json::from_str(r#"{ "amount": 42.0, "user_id": "u-1" }"#).expect("JSON");
        assert_eq!(
            keys.claim(&k, &same, &corr, None).await.expect(label),
            Claim::Replay(answer),
            "{label}"
        );
        assert_eq!(
            keys.claim(&k, &json!({"user_id": "u-1", "amount": 43.0}), &corr, None)
                .await
                .expect(label),
            Claim::Mismatch,
            "{label}: another body under the same key"
        );
        // Keys are per scope.
        let other = IdempotencyKeys::new(env.events.clone(), "entries");
        assert!(matches!(
            other.claim(&k, &request, &corr, None).await.expect(label),
            Claim::New(_)
        ));
    }
}

#[tokio::test]
async fn of_concurrent_identical_requests_exactly_one_claims() {
    for env in envs().await {
        let label = env.label;
        let keys = IdempotencyKeys::new(env.events.clone(), "orders");
        let request = json!({"n": 1});
        let corr = correlation("c-race");
        let k = key("race-1");
        let claims = futures_join(
            (0..8)
                .map(|_| {
                    let (keys, k, request, corr) =
                        (keys.clone(), k.clone(), request.clone(), corr.clone());
                    tokio::spawn(async move { keys.claim(&k, &request, &corr, None).await })
                })
                .collect(),
        )
        .await;
        let new = claims.iter().filter(|c| matches!(c, Claim::New(_))).count();
        assert_eq!(new, 1, "{label}: {claims:?}");
        assert!(
            claims
                .iter()
                .all(|c| matches!(c, Claim::New(_) | Claim::InProgress)),
            "{label}: {claims:?}"
        );
    }
}

async fn futures_join(
    tasks: Vec<tokio::task::JoinHandle<kausal_eventsource::Result<Claim>>>,
) -> Vec<Claim> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task").expect("claim"));
    }
    out
}

#[tokio::test]
async fn a_released_or_abandoned_claim_is_taken_over() {
    for env in envs().await {
        let label = env.label;
        let keys = IdempotencyKeys::new(env.events.clone(), "orders")
            .in_progress_timeout(Duration::from_millis(300));
        let request = json!({"n": 2});
        let corr = correlation("c-2");
        let k = key("k-2");
        let Claim::New(first) = keys.claim(&k, &request, &corr, None).await.expect(label) else {
            panic!("{label}: claimed");
        };
        keys.release(first, None).await.expect(label);
        let Claim::New(second) = keys.claim(&k, &request, &corr, None).await.expect(label) else {
            panic!("{label}: a released key is claimed again");
        };
        // The second claimer "crashes": after the timeout a third takes over,
        // and the second's late completion is refused (a conflict), so the
        // key keeps one answer.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let Claim::New(third) = keys.claim(&k, &request, &corr, None).await.expect(label) else {
            panic!("{label}: an abandoned claim is taken over");
        };
        let late = keys
            .complete(
                second,
                StoredAnswer {
                    status: 201,
                    body: json!({"from": "second"}),
                },
                None,
            )
            .await;
        assert!(
            matches!(late, Err(kausal_eventsource::Error::Conflict { .. })),
            "{label}: {late:?}"
        );
        let answer = StoredAnswer {
            status: 201,
            body: json!({"from": "third"}),
        };
        keys.complete(third, answer.clone(), None)
            .await
            .expect(label);
        assert_eq!(
            keys.claim(&k, &request, &corr, None).await.expect(label),
            Claim::Replay(answer)
        );
    }
}

#[test]
fn keys_are_bounded_visible_ascii() {
    assert!(
        "550e8400-e29b-41d4-a716-446655440000"
            .parse::<IdempotencyKey>()
            .is_ok()
    );
    for bad in ["", "has space", "tab\t", "é", &"x".repeat(256)] {
        let e = bad.parse::<IdempotencyKey>().expect_err(bad);
        assert!(e.contains("Idempotency-Key"), "{e}");
    }
}
