//! [`Event`]: a payload type that knows its name, its schema version and
//! where it is published, so that handlers decode and emit it by type
//! (`let order: OrderPlaced = event.decode()?`, `out.emit(&paid)`) instead of
//! repeating topic, key, type and version at every call.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A versioned JSON payload of the event contract (DESIGN §4).
///
/// ```
/// use kausal_core::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct PointsAwarded {
///     customer_id: String,
///     points: u32,
/// }
///
/// impl Event for PointsAwarded {
///     const TYPE: &'static str = "PointsAwarded";
///     const VERSION: u32 = 1;
///     const TOPIC: &'static str = "loyalty";
///     fn key(&self) -> Option<&str> {
///         Some(&self.customer_id)
///     }
/// }
/// ```
pub trait Event: Serialize + DeserializeOwned {
    /// The `event-type` header: the name consumers dispatch on.
    const TYPE: &'static str;
    /// The `event-version` header: bumped on a breaking change of the
    /// payload (adding an optional field is not one: consumers ignore
    /// fields they do not know).
    const VERSION: u32;
    /// The topic this event is published on.
    const TOPIC: &'static str;

    /// The record key: events with one key stay in order (one partition).
    /// `None` spreads them over the partitions.
    fn key(&self) -> Option<&str> {
        None
    }
}
