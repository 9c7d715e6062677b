//! `EntryPosted` → the rows the store projects (pure). The ledger only
//! publishes balanced entries; an event that breaks its rules anyway (a
//! hand-written record, a buggy producer) is refused here, before anything
//! is written, so one bad event cannot skew every balance after it.

use kausal_contracts::ledger::{Direction, EntryPosted, MAX_LEG_AMOUNT, MAX_LEGS};
use kausal_store::{ProjectedEntry, ProjectedLeg, Side};

/// What is wrong with an `EntryPosted`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEntry {
    #[error("entry {entry_id} has {count} legs: an entry has 1 to {MAX_LEGS}")]
    LegCount { entry_id: String, count: usize },
    #[error(
        "leg {index} of entry {entry_id} has amount {amount}: amounts are 1 to {MAX_LEG_AMOUNT} \
         minor units"
    )]
    Amount {
        entry_id: String,
        index: usize,
        amount: u64,
    },
    #[error("entry {entry_id} is unbalanced: debits {debits}, credits {credits}")]
    Unbalanced {
        entry_id: String,
        debits: u64,
        credits: u64,
    },
    #[error("entry {entry_id} has currency {currency:?}: an ISO 4217 code is three capitals")]
    Currency { entry_id: String, currency: String },
}

/// The entry `posted` (event `event_id`) as the store projects it.
pub fn entry(event_id: &str, posted: &EntryPosted) -> Result<ProjectedEntry, InvalidEntry> {
    let entry_id = || posted.entry_id.clone();
    if posted.legs.is_empty() || posted.legs.len() > MAX_LEGS {
        return Err(InvalidEntry::LegCount {
            entry_id: entry_id(),
            count: posted.legs.len(),
        });
    }
    let currency = &posted.currency;
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(InvalidEntry::Currency {
            entry_id: entry_id(),
            currency: currency.chars().take(16).collect(),
        });
    }
    let (mut debits, mut credits) = (0u64, 0u64);
    let mut legs = Vec::with_capacity(posted.legs.len());
    for (index, leg) in posted.legs.iter().enumerate() {
        // At most MAX_LEGS legs of at most MAX_LEG_AMOUNT: no sum overflows.
        let amount = Some(leg.amount)
            .filter(|a| (1..=MAX_LEG_AMOUNT).contains(a))
            .and_then(|a| i64::try_from(a).ok())
            .ok_or_else(|| InvalidEntry::Amount {
                entry_id: entry_id(),
                index,
                amount: leg.amount,
            })?;
        let side = match leg.direction {
            Direction::Debit => {
                debits += leg.amount;
                Side::Debit
            }
            Direction::Credit => {
                credits += leg.amount;
                Side::Credit
            }
        };
        legs.push(ProjectedLeg {
            account: leg.account.clone(),
            side,
            amount,
        });
    }
    if debits != credits {
        return Err(InvalidEntry::Unbalanced {
            entry_id: entry_id(),
            debits,
            credits,
        });
    }
    Ok(ProjectedEntry {
        event_id: event_id.to_owned(),
        entry_id: entry_id(),
        description: posted.description.clone(),
        currency: currency.clone(),
        order_id: posted.order_id.clone(),
        posted_at: posted.posted_at.clone(),
        legs,
    })
}

#[cfg(test)]
mod tests {
    use kausal_contracts::ledger::EntryLeg;

    use super::*;

    fn posted(currency: &str, legs: &[(&str, Direction, u64)]) -> EntryPosted {
        EntryPosted {
            entry_id: "e1".into(),
            description: "coffee".into(),
            currency: currency.into(),
            legs: legs
                .iter()
                .map(|(account, direction, amount)| EntryLeg {
                    account: (*account).into(),
                    direction: *direction,
                    amount: *amount,
                })
                .collect(),
            order_id: Some("ord-1".into()),
            correlation_id: "c".into(),
            posted_at: "2026-11-02T10:00:00.000Z".into(),
        }
    }

    #[test]
    fn entries_the_ledger_could_not_have_posted_are_refused() {
        use Direction::{Credit, Debit};
        let too_many: Vec<(&str, Direction, u64)> = (0..=MAX_LEGS)
            .map(|i| ("a", if i % 2 == 0 { Debit } else { Credit }, 1))
            .collect();
        let cases: [(EntryPosted, Result<usize, &str>); 7] = [
            (posted("EUR", &[("a", Debit, 5), ("b", Credit, 5)]), Ok(2)),
            (
                posted("EUR", &[("a", Debit, 3), ("a", Debit, 2), ("b", Credit, 5)]),
                Ok(3),
            ),
            (posted("EUR", &[]), Err("has 0 legs")),
            (posted("EUR", &too_many), Err("has 17 legs")),
            (
                posted("EUR", &[("a", Debit, 0), ("b", Credit, 0)]),
                Err("leg 0 of entry e1 has amount 0"),
            ),
            (
                posted("EUR", &[("a", Debit, 5), ("b", Credit, 4)]),
                Err("unbalanced: debits 5, credits 4"),
            ),
            (
                posted("eur", &[("a", Debit, 5), ("b", Credit, 5)]),
                Err("currency \"eur\""),
            ),
        ];
        for (event, want) in cases {
            match (entry("evt-1", &event), want) {
                (Ok(got), Ok(legs)) => {
                    assert_eq!(got.legs.len(), legs, "{event:?}");
                    assert_eq!(got.event_id, "evt-1");
                    assert_eq!(got.order_id.as_deref(), Some("ord-1"));
                }
                (Err(got), Err(part)) => {
                    assert!(got.to_string().contains(part), "{event:?}: {got}");
                }
                (got, want) => panic!("{event:?}: got {got:?}, want {want:?}"),
            }
        }
        let huge = posted(
            "EUR",
            &[
                ("a", Debit, MAX_LEG_AMOUNT + 1),
                ("b", Credit, MAX_LEG_AMOUNT + 1),
            ],
        );
        assert!(matches!(
            entry("evt", &huge),
            Err(InvalidEntry::Amount { index: 0, .. })
        ));
    }
}
