//! [`Account`]: one ledger account, an event-sourced aggregate. Its stream
//! (`LedgerAccount-<id>`) holds one `LegPosted` event per leg posted to it;
//! its state is the sums of its debits and credits. Pure: the
//! [`crate::post`] module loads, decides and appends.
//!
//! **Convention.** The balance is `debits - credits`: positive is a net
//! debit (the usual side of asset and expense accounts), negative a net
//! credit (liabilities, equity, income). Across all accounts of one
//! currency the balances sum to zero, since every entry balances.
//!
//! **Rules.** An account holds one currency, fixed by its first posting;
//! a leg in another currency is refused. Sums are `i64` minor units and
//! never overflow: a posting that would is refused.

use kausal_contracts::ledger::Direction;
use kausal_eventsource::{Aggregate, AggregateEvent};
use serde::{Deserialize, Serialize};

/// An account's state: the fold of its `LegPosted` events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Account {
    /// `None` before the first posting.
    pub currency: Option<String>,
    /// Sum of the debit legs, minor units.
    pub debits: i64,
    /// Sum of the credit legs, minor units.
    pub credits: i64,
    /// Legs posted.
    pub postings: i64,
}

impl Account {
    /// `debits - credits` (see the module comment).
    pub fn balance(&self) -> i64 {
        // Both sums lie in 0..=i64::MAX, so the difference cannot overflow.
        self.debits - self.credits
    }
}

/// What happens to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AccountEvent {
    /// One leg of entry `entry_id` was posted to the account.
    LegPosted {
        entry_id: String,
        direction: Direction,
        /// Minor units, positive.
        amount: u64,
        currency: String,
    },
}

impl AggregateEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::LegPosted { .. } => "LegPosted",
        }
    }
}

/// Post this entry's legs on one account (an account may appear in
/// several legs of one entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostLegs {
    pub account: String,
    pub entry_id: String,
    pub currency: String,
    /// (direction, amount in minor units), in the entry's order.
    pub legs: Vec<(Direction, u64)>,
}

/// Why an account refuses a posting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error(
        "account {account} holds {holds}, not {posted}: an account has one currency, fixed by \
         its first posting; post {posted} amounts to a {posted} account"
    )]
    CurrencyMismatch {
        account: String,
        holds: String,
        posted: String,
    },
    #[error(
        "account {account}'s {direction} total would pass {max} minor units: post to another \
         account"
    )]
    Overflow {
        account: String,
        direction: Direction,
        max: i64,
    },
}

impl Aggregate for Account {
    const TYPE: &'static str = "LedgerAccount";
    type Event = AccountEvent;
    type Command = PostLegs;
    type Error = AccountError;

    fn decide(&self, command: &PostLegs) -> Result<Vec<AccountEvent>, AccountError> {
        if let Some(holds) = self.currency.as_ref().filter(|c| **c != command.currency) {
            return Err(AccountError::CurrencyMismatch {
                account: command.account.clone(),
                holds: holds.clone(),
                posted: command.currency.clone(),
            });
        }
        let mut after = self.clone();
        let mut events = Vec::with_capacity(command.legs.len());
        for &(direction, amount) in &command.legs {
            let event = AccountEvent::LegPosted {
                entry_id: command.entry_id.clone(),
                direction,
                amount,
                currency: command.currency.clone(),
            };
            after.checked_apply(&event).ok_or(AccountError::Overflow {
                account: command.account.clone(),
                direction,
                max: i64::MAX,
            })?;
            events.push(event);
        }
        Ok(events)
    }

    fn apply(&mut self, event: &AccountEvent) {
        // `decide` refuses what would overflow, so a stored event never
        // does; saturate rather than panic should one be written by hand.
        if self.checked_apply(event).is_none() {
            tracing::error!(?event, "a stored posting overflows its account; saturating");
            let AccountEvent::LegPosted { direction, .. } = event;
            match direction {
                Direction::Debit => self.debits = i64::MAX,
                Direction::Credit => self.credits = i64::MAX,
            }
        }
    }
}

impl Account {
    /// Applies `event` unless a sum would overflow (then `None`, unchanged).
    fn checked_apply(&mut self, event: &AccountEvent) -> Option<()> {
        let AccountEvent::LegPosted {
            direction,
            amount,
            currency,
            ..
        } = event;
        let amount = i64::try_from(*amount).ok()?;
        let side = match direction {
            Direction::Debit => &mut self.debits,
            Direction::Credit => &mut self.credits,
        };
        *side = side.checked_add(amount)?;
        self.postings = self.postings.saturating_add(1);
        if self.currency.is_none() {
            self.currency = Some(currency.clone());
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Credit, Debit};
    use kausal_eventsource::testing::given;

    fn posted(direction: Direction, amount: u64, currency: &str) -> AccountEvent {
        AccountEvent::LegPosted {
            entry_id: "e0".into(),
            direction,
            amount,
            currency: currency.into(),
        }
    }

    fn post(currency: &str, legs: &[(Direction, u64)]) -> PostLegs {
        PostLegs {
            account: "cash".into(),
            entry_id: "e1".into(),
            currency: currency.into(),
            legs: legs.to_vec(),
        }
    }

    #[test]
    fn balance_is_debits_minus_credits() {
        let account = Account::replay(&[
            posted(Debit, 1_000, "EUR"),
            posted(Credit, 250, "EUR"),
            posted(Credit, 1_000, "EUR"),
        ]);
        assert_eq!(account.debits, 1_000);
        assert_eq!(account.credits, 1_250);
        assert_eq!(account.balance(), -250);
        assert_eq!(account.postings, 3);
        assert_eq!(account.currency.as_deref(), Some("EUR"));
        assert_eq!(Account::default().balance(), 0);
    }

    /// Given these events, when this posting, then these events or error.
    #[test]
    fn decide_from_the_fold_of_the_given_events() {
        let near_max = i64::MAX as u64 - 10;
        let cases: Vec<(Vec<AccountEvent>, PostLegs, Result<usize, &str>)> = vec![
            (vec![], post("EUR", &[(Debit, 5)]), Ok(1)),
            (vec![], post("USD", &[(Debit, 5), (Credit, 3)]), Ok(2)),
            (
                vec![posted(Debit, 1, "EUR")],
                post("EUR", &[(Credit, 9)]),
                Ok(1),
            ),
            (
                vec![posted(Debit, 1, "EUR")],
                post("USD", &[(Credit, 9)]),
                Err("holds EUR, not USD"),
            ),
            (
                vec![posted(Debit, near_max, "EUR")],
                post("EUR", &[(Debit, 11)]),
                Err("debit total would pass"),
            ),
            // The credit side is its own sum.
            (
                vec![posted(Debit, near_max, "EUR")],
                post("EUR", &[(Credit, near_max)]),
                Ok(1),
            ),
            // Two legs that overflow only together.
            (
                vec![posted(Credit, near_max, "EUR")],
                post("EUR", &[(Credit, 5), (Credit, 6)]),
                Err("credit total would pass"),
            ),
        ];
        for (history, when, then) in cases {
            let before = given::<Account>(history.clone()).state().postings;
            match (given::<Account>(history.clone()).when(&when), then) {
                (Ok(decided), Ok(count)) => {
                    assert_eq!(decided.events.len(), count, "{when:?}");
                    assert_eq!(decided.state.postings, before + count as i64);
                }
                (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{e}"),
                (got, want) => panic!(
                    "given {history:?} when {when:?}: {:?}, want {want:?}",
                    got.map(|d| d.events)
                ),
            }
        }
    }

    #[test]
    fn events_round_trip_through_their_stored_json() {
        let event = posted(Credit, 42, "JPY");
        let json = serde_json::to_string(&event).expect("json");
        assert_eq!(
            json,
            r#"{"type":"LegPosted","entry_id":"e0","direction":"credit","amount":42,"currency":"JPY"}"#
        );
        assert_eq!(
            serde_json::from_str::<AccountEvent>(&json).expect("back"),
            event
        );
    }
}
