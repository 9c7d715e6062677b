//! The projection's handler: each `EntryPosted` on `ledger.entry.v1` into
//! the store, in one transaction per event (see `kausal_store::read_model`).
//! A payload that does not decode, an entry the ledger could not have
//! posted, a currency that is not the account's and an overflowing sum are
//! fatal (dead-lettered at once: projecting them again gives the same
//! answer); a database failure is an outage
//! ([`kausal_kafka::ErrorClass::Unavailable`]:
//! the partition waits until the store is back, nothing is dead-lettered).

use kausal_contracts::ledger::EntryPosted;
use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};
use kausal_store::{ProjectError, Projected, Store};

use crate::names::error_type;
use crate::project;

/// Projects `EntryPosted` into the store.
#[derive(Debug, Clone)]
pub struct ProjectionHandler {
    store: Store,
}

impl ProjectionHandler {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl Handler for ProjectionHandler {
    async fn handle(&self, event: &IncomingEvent, _out: &mut Emitter) -> Result<(), HandlerError> {
        let posted: EntryPosted = event.decode()?;
        let event_id = event.event_id().to_string();
        let entry = project::entry(&event_id, &posted)
            .map_err(|e| HandlerError::fatal(error_type::INVALID_ENTRY, e.to_string()))?;
        let projected = self
            .store
            .project_entry(&entry, kausal_kafka::ids::now_ms())
            .await
            .map_err(|e| {
                let kind = match &e {
                    ProjectError::CurrencyMismatch { .. } => error_type::CURRENCY_MISMATCH,
                    ProjectError::InvalidAmount { .. } => error_type::INVALID_ENTRY,
                    ProjectError::Overflow { .. } => error_type::BALANCE_OVERFLOW,
                    ProjectError::Store(_) => {
                        return HandlerError::unavailable(
                            error_type::STORE_UNAVAILABLE,
                            format!("the read model's store failed: {e}"),
                        );
                    }
                };
                HandlerError::fatal(kind, e.to_string())
            })?;
        match projected {
            Projected::Applied { lines } => {
                tracing::info!(entryId = %posted.entry_id, lines, "entry projected");
            }
            Projected::Duplicate => {
                tracing::info!(entryId = %posted.entry_id, "entry already projected; nothing changed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kausal_contracts::ledger::{Direction, EntryLeg};
    use kausal_core::ErrorClass;
    use kausal_kafka::testing;

    use super::*;

    fn posted(entry_id: &str, currency: &str, amount: u64) -> EntryPosted {
        let leg = |account: &str, direction| EntryLeg {
            account: account.into(),
            direction,
            amount,
        };
        EntryPosted {
            entry_id: entry_id.into(),
            description: "coffee".into(),
            currency: currency.into(),
            legs: vec![
                leg("customer:1", Direction::Debit),
                leg("merchant:1", Direction::Credit),
            ],
            order_id: None,
            correlation_id: "c".into(),
            posted_at: "2026-11-02T10:00:00.000Z".into(),
        }
    }

    /// Each failure's class and type, on a real store of each backend.
    #[tokio::test]
    async fn failures_are_classified() {
        for db in kausal_store::testing::databases().await.expect("databases") {
            let store = kausal_store::testing::connect(&db).await.expect(db.label);
            let handler = ProjectionHandler::new(store.clone());
            let run = |event| {
                let handler = handler.clone();
                async move {
                    testing::handle(&handler, crate::SERVICE_NAME, &event)
                        .await
                        .result
                }
            };
            let first = testing::record(&posted("e1", "EUR", 500));
            assert_eq!(run(first.clone()).await, Ok(()), "{}", db.label);
            assert_eq!(run(first).await, Ok(()), "{}: a redelivery", db.label);
            let balance = store
                .read_model_account("customer:1")
                .await
                .expect("read")
                .map(|a| (a.balance, a.postings));
            assert_eq!(balance, Some((500, 1)), "{}", db.label);

            let mut garbled = testing::record(&posted("e2", "EUR", 1));
            garbled.payload = Some(b"{\"entry_id\": 7".to_vec());
            let usd = testing::record(&posted("e3", "USD", 1));
            let zero = testing::record(&posted("e4", "EUR", 0));
            for (event, want) in [
                (garbled, "DeserializationError"),
                (usd, error_type::CURRENCY_MISMATCH),
                (zero, error_type::INVALID_ENTRY),
            ] {
                let e = run(event).await.expect_err(want);
                assert_eq!((e.class, e.error_type.as_str()), (ErrorClass::Fatal, want));
            }

            store.close().await;
            let e = run(testing::record(&posted("e5", "EUR", 1)))
                .await
                .expect_err("a closed store");
            assert_eq!(
                (e.class, e.error_type.as_str()),
                (ErrorClass::Unavailable, error_type::STORE_UNAVAILABLE),
                "{}: {e}",
                db.label
            );
        }
    }
}
