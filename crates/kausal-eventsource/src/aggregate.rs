//! [`Aggregate`]: a consistency boundary whose state is the fold of its
//! events. Two pure functions: `decide` turns a command into new events
//! (or refuses it) from the current state, `apply` folds one event into the
//! state. Neither does I/O, so an aggregate is unit-tested with plain data
//! (given events, when command, then events or error), and the
//! [`crate::Repository`] owns loading, saving and retrying.
//!
//! ```
//! use kausal_eventsource::{Aggregate, AggregateEvent};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default)]
//! struct Account { balance: i64 }
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! #[serde(tag = "type")]
//! enum AccountEvent { Deposited { amount: i64 }, Withdrawn { amount: i64 } }
//!
//! impl AggregateEvent for AccountEvent {
//!     fn event_type(&self) -> &'static str {
//!         match self { Self::Deposited { .. } => "Deposited", Self::Withdrawn { .. } => "Withdrawn" }
//!     }
//! }
//!
//! enum AccountCommand { Deposit(i64), Withdraw(i64) }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("insufficient funds: balance {balance}, asked {asked}")]
//! struct InsufficientFunds { balance: i64, asked: i64 }
//!
//! impl Aggregate for Account {
//!     const TYPE: &'static str = "Account";
//!     type Event = AccountEvent;
//!     type Command = AccountCommand;
//!     type Error = InsufficientFunds;
//!
//!     fn decide(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, InsufficientFunds> {
//!         match *command {
//!             AccountCommand::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
//!             AccountCommand::Withdraw(asked) if asked > self.balance => {
//!                 Err(InsufficientFunds { balance: self.balance, asked })
//!             }
//!             AccountCommand::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
//!         }
//!     }
//!
//!     fn apply(&mut self, event: &AccountEvent) {
//!         match event {
//!             AccountEvent::Deposited { amount } => self.balance += amount,
//!             AccountEvent::Withdrawn { amount } => self.balance -= amount,
//!         }
//!     }
//! }
//!
//! let account = Account::replay(&[AccountEvent::Deposited { amount: 5 }]);
//! assert_eq!(account.balance, 5);
//! assert!(account.decide(&AccountCommand::Withdraw(7)).is_err());
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An aggregate's event: stored as the JSON of the whole value, with its
/// type name in a column of its own (the `event-type` header when it is
/// published). With `#[serde(tag = "type")]` on an enum the JSON names its
/// variant too, which keeps a published payload self-describing.
pub trait AggregateEvent: Serialize + DeserializeOwned + Send + Sync {
    /// The event's type name (`Deposited`); what consumers dispatch on.
    fn event_type(&self) -> &'static str;

    /// The payload's schema version, bumped on a breaking change.
    fn event_version(&self) -> u32 {
        1
    }
}

/// A consistency boundary decided from its own events. `Default` is the
/// state before the first event.
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate's type name: the stream prefix (`Account-42`), the
    /// `eventsource.aggregate.type` attribute and the metrics' label.
    const TYPE: &'static str;
    type Event: AggregateEvent;
    type Command: Send + Sync;
    /// Why a command is refused (a business rule, never an I/O failure).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The events a command leads to from this state, or why it is
    /// refused. Pure: no I/O, no clock, no randomness (put those in the
    /// command).
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state. Pure and total: an event is a fact
    /// that already happened, so applying it cannot fail.
    fn apply(&mut self, event: &Self::Event);

    /// The state after `events`, from the empty state.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    /// A door: opened and closed, locked only when closed.
    #[derive(Debug, Default, PartialEq)]
    struct Door {
        open: bool,
        locked: bool,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum DoorEvent {
        Opened,
        Closed,
        Locked,
    }

    impl AggregateEvent for DoorEvent {
        fn event_type(&self) -> &'static str {
            match self {
                Self::Opened => "Opened",
                Self::Closed => "Closed",
                Self::Locked => "Locked",
            }
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum DoorCommand {
        Open,
        Close,
        Lock,
    }

    #[derive(Debug, PartialEq, thiserror::Error)]
    enum DoorError {
        #[error("the door is locked")]
        Locked,
        #[error("an open door cannot be locked")]
        Open,
    }

    impl Aggregate for Door {
        const TYPE: &'static str = "Door";
        type Event = DoorEvent;
        type Command = DoorCommand;
        type Error = DoorError;

        fn decide(&self, command: &DoorCommand) -> Result<Vec<DoorEvent>, DoorError> {
            match (command, self.open, self.locked) {
                (DoorCommand::Open, _, true) => Err(DoorError::Locked),
                (DoorCommand::Open, true, _) | (DoorCommand::Close, false, _) => Ok(vec![]),
                (DoorCommand::Open, false, false) => Ok(vec![DoorEvent::Opened]),
                (DoorCommand::Close, true, _) => Ok(vec![DoorEvent::Closed]),
                (DoorCommand::Lock, true, _) => Err(DoorError::Open),
                (DoorCommand::Lock, false, true) => Ok(vec![]),
                (DoorCommand::Lock, false, false) => Ok(vec![DoorEvent::Locked]),
            }
        }

        fn apply(&mut self, event: &DoorEvent) {
            match event {
                DoorEvent::Opened => self.open = true,
                DoorEvent::Closed => self.open = false,
                DoorEvent::Locked => self.locked = true,
            }
        }
    }

    /// Given these events, when this command, then these events or error.
    type Case = (
        Vec<DoorEvent>,
        DoorCommand,
        Result<Vec<DoorEvent>, DoorError>,
    );

    #[test]
    fn decide_from_the_fold_of_the_given_events() {
        use DoorCommand as C;
        use DoorEvent as E;
        let cases: Vec<Case> = vec![
            (vec![], C::Open, Ok(vec![E::Opened])),
            (vec![E::Opened], C::Open, Ok(vec![])),
            (vec![E::Opened], C::Close, Ok(vec![E::Closed])),
            (vec![E::Opened], C::Lock, Err(DoorError::Open)),
            (vec![E::Opened, E::Closed], C::Lock, Ok(vec![E::Locked])),
            (vec![E::Locked], C::Open, Err(DoorError::Locked)),
            (vec![E::Locked], C::Lock, Ok(vec![])),
        ];
        for (given, when, then) in cases {
            let door = Door::replay(&given);
            assert_eq!(door.decide(&when), then, "given {given:?} when {when:?}");
        }
    }

    #[test]
    fn decide_does_not_change_the_state_and_apply_folds_in_order() {
        let door = Door::replay(&[DoorEvent::Opened]);
        let decided = door.decide(&DoorCommand::Close).expect("close");
        assert_eq!(
            door,
            Door {
                open: true,
                locked: false
            }
        );
        let mut after = door;
        for e in &decided {
            after.apply(e);
        }
        assert_eq!(after, Door::replay(&[DoorEvent::Opened, DoorEvent::Closed]));
    }

    #[test]
    fn events_round_trip_through_their_stored_json() {
        for event in [DoorEvent::Opened, DoorEvent::Closed, DoorEvent::Locked] {
            let json = serde_json::to_string(&event).expect("json");
            assert_eq!(json, format!(r#"{{"type":"{}"}}"#, event.event_type()));
            assert_eq!(
                serde_json::from_str::<DoorEvent>(&json).expect("back"),
                event
            );
            assert_eq!(event.event_version(), 1);
        }
    }
}
