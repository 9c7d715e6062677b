//! The consumer groups expected to receive an event of a type: those that
//! handled one of the latest [`SAMPLE`] events of that type. A correlation
//! document's `missing` hops are the expected groups that left no receipt
//! for one of its events (the "vanished" hop).
//!
//! What is expected changes when a deployment does, not from one document
//! to the next, while asking costs one query per event type of a document
//! (5–10 ms each with 10 M spans stored, docs/benchmarks.md). So the
//! console keeps each answer for [`TTL`], and documents that want one at
//! the same moment share one query: a group that starts or stops reading a
//! type shows up in `missing` at most that much later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kausal_store::Store;
use tokio::sync::OnceCell;

/// How many of a type's latest events say which groups receive it.
pub const SAMPLE: i64 = 1_000;
/// How long the console keeps an answer (its lag board refreshes as often).
pub const TTL: Duration = Duration::from_secs(5);
/// Most event types kept: the types come from recorded events, so from
/// outside, and the set is bounded.
const MAX_TYPES: usize = 1_024;

/// `(consumer group, service)` pairs, sorted by group.
pub type Groups = Arc<[(String, String)]>;

/// One type's answer: empty while the store is being asked, so that the
/// documents that want it meanwhile wait for that one query.
type Slot = Arc<OnceCell<(Instant, Groups)>>;

/// The expected groups of each event type, asked of the store at most once
/// per type and [`TTL`], however many documents want them at once. Cloning
/// shares the answers.
#[derive(Debug, Clone)]
pub struct ExpectedGroups {
    ttl: Duration,
    answers: Arc<Mutex<HashMap<String, Slot>>>,
}

impl Default for ExpectedGroups {
    fn default() -> Self {
        Self::new(TTL)
    }
}

impl ExpectedGroups {
    /// Answers kept for `ttl`; zero keeps none.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            answers: Arc::default(),
        }
    }

    /// Asks the store every time.
    pub fn uncached() -> Self {
        Self::new(Duration::ZERO)
    }

    /// The groups expected to receive an event of `event_type`. A failed
    /// query is not kept: the next caller, or one already waiting, asks
    /// again.
    pub async fn of(&self, store: &Store, event_type: &str) -> kausal_store::Result<Groups> {
        let ask = || async {
            let groups: Groups = store
                .receipt_groups_for_event_type(event_type, SAMPLE)
                .await?
                .into();
            Ok((Instant::now(), groups))
        };
        if self.ttl.is_zero() {
            return ask().await.map(|(_, groups)| groups);
        }
        let slot = self.slot(event_type);
        let (_, groups) = slot.get_or_try_init(ask).await?;
        Ok(groups.clone())
    }

    /// Whether `slot` holds an answer younger than the TTL or is being
    /// filled.
    fn live(&self, slot: &Slot) -> bool {
        slot.get().is_none_or(|(at, _)| at.elapsed() < self.ttl)
    }

    /// The slot of `event_type`: the live one, or a new empty one in its
    /// place.
    fn slot(&self, event_type: &str) -> Slot {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = answers.get(event_type).filter(|slot| self.live(slot)) {
            return slot.clone();
        }
        if answers.len() >= MAX_TYPES && !answers.contains_key(event_type) {
            answers.retain(|_, slot| self.live(slot));
            if answers.len() >= MAX_TYPES {
                answers.clear();
            }
        }
        let slot = Slot::default();
        answers.insert(event_type.to_owned(), slot.clone());
        slot
    }

    #[cfg(test)]
    fn kept(&self, event_type: &str) -> Option<Groups> {
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, groups) = answers.get(event_type)?.get()?;
        (at.elapsed() < self.ttl).then(|| groups.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::correlation::tests::{event, receipt};

    /// A store in a SQLite file of its own; keep the directory alive.
    async fn sqlite_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("expected.db").display());
        let store = Store::connect(&url).await.expect("store");
        (dir, store)
    }

    /// The `OrderPlaced` at `offset`, of correlation `corr`, with receipts
    /// of `groups`.
    async fn placed(store: &Store, offset: i64, corr: &str, groups: &[&str]) {
        let id = format!("ev-{offset}");
        let mut e = event(&id, None, "OrderPlaced", "order-service");
        e.correlation_id = corr.into();
        e.offset = offset;
        let receipts: Vec<_> = groups
            .iter()
            .map(|g| {
                let mut r = receipt(&id, g, "success");
                r.correlation_id = Some(corr.into());
                r
            })
            .collect();
        store
            .record_batch(&[e], &receipts, &[])
            .await
            .expect("record");
    }

    fn names(groups: &Groups) -> Vec<&str> {
        groups.iter().map(|(g, _)| g.as_str()).collect()
    }

    /// The vanished hop: a group that handles `OrderPlaced` elsewhere but
    /// left no receipt for this order is `missing` in its document; and
    /// kept answers are asked again only after their time.
    #[tokio::test]
    async fn a_group_that_handles_the_type_elsewhere_but_not_here_is_missing() {
        let (_dir, store) = sqlite_store().await;
        placed(&store, 1, "corr-1", &["payment", "fulfillment"]).await;
        placed(&store, 2, "corr-2", &["payment"]).await;

        let expected = ExpectedGroups::new(Duration::from_millis(300));
        let doc = crate::query::correlation(&store, &expected, "corr-2")
            .await
            .expect("query")
            .expect("document");
        let missing: Vec<_> = doc
            .missing
            .iter()
            .map(|m| (m.event_id.as_str(), m.consumer_group.as_str()))
            .collect();
        assert_eq!(missing, [("ev-2", "fulfillment")]);
        let doc = crate::query::correlation(&store, &expected, "corr-1")
            .await
            .expect("query")
            .expect("document");
        assert!(doc.missing.is_empty(), "{:?}", doc.missing);

        // A third group starts reading the type: the kept answer does not
        // know it yet, a fresh one does, and so does the kept one later.
        placed(&store, 3, "corr-3", &["payment", "fulfillment", "audit"]).await;
        let kept = expected.of(&store, "OrderPlaced").await.expect("kept");
        assert_eq!(names(&kept), ["fulfillment", "payment"]);
        let fresh = ExpectedGroups::uncached()
            .of(&store, "OrderPlaced")
            .await
            .expect("fresh");
        assert_eq!(names(&fresh), ["audit", "fulfillment", "payment"]);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let later = expected.of(&store, "OrderPlaced").await.expect("later");
        assert_eq!(names(&later), ["audit", "fulfillment", "payment"]);
    }

    /// Documents that want a type's groups at the same moment share one
    /// query: every caller gets the very same answer, not one each.
    #[tokio::test]
    async fn concurrent_askers_of_one_type_share_one_query() {
        let (_dir, store) = sqlite_store().await;
        placed(&store, 1, "corr-1", &["payment", "fulfillment"]).await;
        let expected = ExpectedGroups::new(Duration::from_secs(60));
        let answers =
            futures::future::join_all((0..16).map(|_| expected.of(&store, "OrderPlaced"))).await;
        let first = answers[0].as_ref().expect("answer").clone();
        assert_eq!(names(&first), ["fulfillment", "payment"]);
        for answer in &answers {
            let answer = answer.as_ref().expect("answer");
            assert!(Arc::ptr_eq(answer, &first), "a second query was made");
        }
    }

    /// Types come from outside: past the bound, expired answers go first,
    /// then all of them, and the map never grows beyond it.
    #[tokio::test]
    async fn the_kept_types_are_bounded() {
        let (_dir, store) = sqlite_store().await;
        let expected = ExpectedGroups::new(Duration::from_secs(60));
        for i in 0..MAX_TYPES + 10 {
            expected
                .of(&store, &format!("Type{i}"))
                .await
                .expect("answer");
            let kept = expected.answers.lock().expect("lock").len();
            assert!(kept <= MAX_TYPES, "{kept} types kept");
        }
        assert!(expected.kept(&format!("Type{}", MAX_TYPES + 9)).is_some());
    }
}
