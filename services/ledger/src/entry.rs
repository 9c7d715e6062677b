//! An entry: parsed from a [`PostEntryRequest`] into an [`Entry`] that is
//! balanced and within bounds (parse, don't validate), and the entry's own
//! stream, the [`EntryRecord`] aggregate (`LedgerEntry-<id>`), which holds
//! its one `EntryPosted` event. That stream is what makes an entry id
//! unique: it is appended with "no stream" expected, in the transaction
//! that posts the legs, and its event carries the outbox row to
//! `ledger.entry.v1`.

use std::collections::BTreeMap;

use kausal_contracts::Event as _;
use kausal_contracts::ledger::{
    Direction, EntryLeg, EntryPosted, MAX_DESCRIPTION_LEN, MAX_ID_LEN, MAX_LEG_AMOUNT, MAX_LEGS,
    PostEntryRequest,
};
use kausal_eventsource::{Aggregate, AggregateEvent};
use serde::{Deserialize, Serialize};

/// A balanced entry within bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub description: String,
    pub currency: String,
    pub order_id: Option<String>,
    pub legs: Vec<EntryLeg>,
}

/// Why a request is not an entry. The messages are for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("{field} {value:?} is not an id: {reason}")]
    BadId {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("currency must be a 3-letter ISO 4217 code in capitals (EUR), got {0:?}")]
    BadCurrency(String),
    #[error("description must be 1 to {MAX_DESCRIPTION_LEN} characters without control characters")]
    BadDescription,
    #[error(
        "an entry has at most {MAX_LEGS} legs, this one has {0}: split it into several entries"
    )]
    TooManyLegs(usize),
    #[error(
        "an entry needs at least one debit leg and one credit leg (it has {debits} debit and \
         {credits} credit legs)"
    )]
    OneSided { debits: usize, credits: usize },
    #[error(
        "legs[{index}].amount must be 1 to {MAX_LEG_AMOUNT} minor units, got {amount}: amounts \
         are positive integers of the currency's minor units (1250 for 12.50 EUR)"
    )]
    BadAmount { index: usize, amount: u64 },
    #[error(
        "the entry does not balance: debits sum to {debits} and credits to {credits} minor \
         units (a difference of {difference}); make both sides equal"
    )]
    Unbalanced {
        debits: u64,
        credits: u64,
        difference: u64,
    },
}

/// Checks an account, entry or order id: 1 to [`MAX_ID_LEN`] bytes of
/// `A-Z a-z 0-9 . _ : -`, starting with a letter or digit.
pub fn check_id(field: &'static str, value: &str) -> Result<(), EntryError> {
    let bad = |reason: String| EntryError::BadId {
        field,
        value: value.chars().take(MAX_ID_LEN + 8).collect(),
        reason,
    };
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(bad(format!("ids are 1 to {MAX_ID_LEN} bytes long")));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("ids start with a letter or a digit".into()));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(bad(format!(
            "{c:?} is not allowed; use letters, digits, '.', '_', ':' and '-'"
        )));
    }
    Ok(())
}

impl Entry {
    /// The entry `request` describes, its id `generated_id()` when the
    /// request names none; or the first thing wrong with it.
    pub fn parse(
        request: &PostEntryRequest,
        generated_id: impl FnOnce() -> String,
    ) -> Result<Self, EntryError> {
        let id = match &request.entry_id {
            Some(id) => {
                check_id("entry_id", id)?;
                id.clone()
            }
            None => generated_id(),
        };
        if let Some(order_id) = &request.order_id {
            check_id("order_id", order_id)?;
        }
        let currency = &request.currency;
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(EntryError::BadCurrency(currency.chars().take(16).collect()));
        }
        let description = &request.description;
        if description.trim().is_empty()
            || description.chars().count() > MAX_DESCRIPTION_LEN
            || description.chars().any(char::is_control)
        {
            return Err(EntryError::BadDescription);
        }
        if request.legs.len() > MAX_LEGS {
            return Err(EntryError::TooManyLegs(request.legs.len()));
        }
        let (mut debits, mut credits) = (0u64, 0u64);
        let (mut debit_legs, mut credit_legs) = (0, 0);
        for (index, leg) in request.legs.iter().enumerate() {
            check_id("account", &leg.account)?;
            if leg.amount == 0 || leg.amount > MAX_LEG_AMOUNT {
                return Err(EntryError::BadAmount {
                    index,
                    amount: leg.amount,
                });
            }
            // At most MAX_LEGS × MAX_LEG_AMOUNT: far below u64::MAX.
            match leg.direction {
                Direction::Debit => {
                    debits += leg.amount;
                    debit_legs += 1;
                }
                Direction::Credit => {
                    credits += leg.amount;
                    credit_legs += 1;
                }
            }
        }
        if debit_legs == 0 || credit_legs == 0 {
            return Err(EntryError::OneSided {
                debits: debit_legs,
                credits: credit_legs,
            });
        }
        if debits != credits {
            return Err(EntryError::Unbalanced {
                debits,
                credits,
                difference: debits.abs_diff(credits),
            });
        }
        Ok(Self {
            id,
            description: description.clone(),
            currency: currency.clone(),
            order_id: request.order_id.clone(),
            legs: request.legs.iter().map(EntryLeg::from).collect(),
        })
    }

    /// Each account's legs, in the entry's order, accounts sorted by id.
    pub fn by_account(&self) -> BTreeMap<&str, Vec<(Direction, u64)>> {
        let mut accounts: BTreeMap<&str, Vec<(Direction, u64)>> = BTreeMap::new();
        for leg in &self.legs {
            accounts
                .entry(leg.account.as_str())
                .or_default()
                .push((leg.direction, leg.amount));
        }
        accounts
    }
}

/// An entry's stream: empty, or its one `EntryPosted`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    pub posted: Option<EntryPosted>,
}

/// The entry stream's event: `EntryPosted` itself, so that the stored
/// payload is exactly what the outbox publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryEvent(pub EntryPosted);

impl AggregateEvent for EntryEvent {
    fn event_type(&self) -> &'static str {
        EntryPosted::TYPE
    }

    fn event_version(&self) -> u32 {
        EntryPosted::VERSION
    }
}

/// An entry id is posted once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "entry {entry_id} is already posted (under another Idempotency-Key): a new entry needs a new \
     entry_id; to retry the first request, send its Idempotency-Key again"
)]
pub struct AlreadyPosted {
    pub entry_id: String,
}

impl Aggregate for EntryRecord {
    const TYPE: &'static str = "LedgerEntry";
    type Event = EntryEvent;
    type Command = EntryPosted;
    type Error = AlreadyPosted;

    fn decide(&self, command: &EntryPosted) -> Result<Vec<EntryEvent>, AlreadyPosted> {
        match &self.posted {
            Some(posted) => Err(AlreadyPosted {
                entry_id: posted.entry_id.clone(),
            }),
            None => Ok(vec![EntryEvent(command.clone())]),
        }
    }

    fn apply(&mut self, event: &EntryEvent) {
        self.posted = Some(event.0.clone());
    }
}

#[cfg(test)]
mod tests {
    use kausal_contracts::ledger::LegRequest;

    use super::*;
    use Direction::{Credit, Debit};

    fn leg(account: &str, direction: Direction, amount: u64) -> LegRequest {
        LegRequest {
            account: account.into(),
            direction,
            amount,
        }
    }

    fn request(legs: Vec<LegRequest>) -> PostEntryRequest {
        PostEntryRequest {
            entry_id: None,
            description: "sale".into(),
            currency: "EUR".into(),
            order_id: Some("ord-1".into()),
            legs,
        }
    }

    fn balanced() -> PostEntryRequest {
        request(vec![
            leg("cash", Debit, 1_250),
            leg("revenue", Credit, 1_000),
            leg("vat:payable", Credit, 250),
        ])
    }

    #[test]
    fn a_balanced_request_is_an_entry() {
        let entry = Entry::parse(&balanced(), || "gen-1".into()).expect("balanced");
        assert_eq!(entry.id, "gen-1");
        assert_eq!(entry.legs.len(), 3);
        let named = PostEntryRequest {
            entry_id: Some("ent-7".into()),
            ..balanced()
        };
        assert_eq!(
            Entry::parse(&named, || unreachable!("named"))
                .expect("ok")
                .id,
            "ent-7"
        );
        // An account in several legs gets them together, in order.
        let twice = request(vec![
            leg("cash", Debit, 5),
            leg("bank", Credit, 8),
            leg("cash", Debit, 3),
        ]);
        let entry = Entry::parse(&twice, || "g".into()).expect("ok");
        let accounts: Vec<_> = entry.by_account().into_iter().collect();
        assert_eq!(
            accounts,
            [
                ("bank", vec![(Credit, 8)]),
                ("cash", vec![(Debit, 5), (Debit, 3)])
            ]
        );
    }

    #[test]
    fn what_is_wrong_is_named() {
        let mut too_many: Vec<LegRequest> = (0..MAX_LEGS).map(|_| leg("a", Debit, 1)).collect();
        too_many.push(leg("b", Credit, MAX_LEGS as u64 + 1));
        let cases: Vec<(PostEntryRequest, &str)> = vec![
            (
                request(vec![leg("a", Debit, 5), leg("b", Credit, 4)]),
                "debits sum to 5 and credits to 4 minor units (a difference of 1)",
            ),
            (
                request(vec![leg("a", Debit, 5)]),
                "1 debit and 0 credit legs",
            ),
            (request(vec![]), "0 debit and 0 credit legs"),
            (
                request(vec![leg("a", Credit, 5), leg("b", Credit, 5)]),
                "at least one debit leg",
            ),
            (
                request(vec![leg("a", Debit, 0), leg("b", Credit, 0)]),
                "legs[0].amount must be 1",
            ),
            (
                request(vec![
                    leg("a", Debit, 1),
                    leg("b", Credit, MAX_LEG_AMOUNT + 1),
                ]),
                "legs[1].amount",
            ),
            (request(too_many), "at most 16 legs, this one has 17"),
            (
                request(vec![leg("a b", Debit, 1), leg("b", Credit, 1)]),
                "account \"a b\" is not an id: ' ' is not allowed",
            ),
            (
                request(vec![leg("", Debit, 1), leg("b", Credit, 1)]),
                "1 to 64 bytes",
            ),
            (
                request(vec![leg(&"x".repeat(65), Debit, 1), leg("b", Credit, 1)]),
                "1 to 64 bytes",
            ),
            (
                request(vec![leg("-a", Debit, 1), leg("b", Credit, 1)]),
                "start with a letter or a digit",
            ),
            (
                PostEntryRequest {
                    currency: "eur".into(),
                    ..balanced()
                },
                "3-letter ISO 4217",
            ),
            (
                PostEntryRequest {
                    description: " ".into(),
                    ..balanced()
                },
                "description must be 1 to 500",
            ),
            (
                PostEntryRequest {
                    description: "x".repeat(501),
                    ..balanced()
                },
                "description must be 1 to 500",
            ),
            (
                PostEntryRequest {
                    entry_id: Some("e/1".into()),
                    ..balanced()
                },
                "entry_id \"e/1\" is not an id",
            ),
            (
                PostEntryRequest {
                    order_id: Some(String::new()),
                    ..balanced()
                },
                "order_id \"\" is not an id",
            ),
        ];
        for (request, part) in cases {
            let err = Entry::parse(&request, || "g".into()).expect_err(part);
            assert!(err.to_string().contains(part), "{part:?} not in {err}");
        }
    }

    #[test]
    fn an_entry_is_posted_once() {
        let posted = EntryPosted {
            entry_id: "e1".into(),
            description: "d".into(),
            currency: "EUR".into(),
            legs: vec![],
            order_id: None,
            correlation_id: "c".into(),
            posted_at: "t".into(),
        };
        let fresh = EntryRecord::default();
        let events = fresh.decide(&posted).expect("first");
        assert_eq!(events, [EntryEvent(posted.clone())]);
        // Stored as the contract's JSON, nothing wrapped around it.
        assert_eq!(
            serde_json::to_value(&events[0]).expect("json"),
            serde_json::to_value(&posted).expect("json")
        );
        let again = EntryRecord::replay(&events).decide(&posted);
        assert_eq!(
            again,
            Err(AlreadyPosted {
                entry_id: "e1".into()
            })
        );
    }
}
