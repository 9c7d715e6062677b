//! Records copied out of a topic for a person to read (the console's topic
//! pages): read with the [`Admin`]'s group-less reader (no group joined,
//! nothing committed), and bounded — a key, a value or a header value is
//! kept up to a given number of bytes, with its full length, however large
//! the record is.

use std::time::Duration;

use rdkafka::message::{Headers, Message};

use crate::admin::{Admin, Result};

/// The first bytes of a key, value or header value, and how long it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    pub bytes: Vec<u8>,
    /// The length of the whole, in bytes.
    pub len: usize,
}

impl Excerpt {
    /// At most `max` bytes of `whole`.
    pub fn of(whole: &[u8], max: usize) -> Self {
        Self {
            bytes: whole[..whole.len().min(max)].to_vec(),
            len: whole.len(),
        }
    }

    /// Whether bytes were left out.
    pub fn is_cut(&self) -> bool {
        self.bytes.len() < self.len
    }
}

/// One record as read, bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCopy {
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp, ms since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Excerpt>,
    pub value: Option<Excerpt>,
    /// Every header in the order it came, `None` for a null value.
    pub headers: Vec<(String, Option<Excerpt>)>,
}

impl RecordCopy {
    /// Copies `message`, keeping at most `max_bytes` of its key, its value
    /// and each header value.
    pub fn of<M: Message>(message: &M, max_bytes: usize) -> Self {
        let cut = |bytes: &[u8]| Excerpt::of(bytes, max_bytes);
        Self {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(cut),
            value: message.payload().map(cut),
            headers: message
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(cut)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Reads `[from, to)` of each `(partition, from, to)` of `topic` (see
/// [`Admin::read_range`], which this wraps: group-less, one partition at a
/// time, giving up on a partition after `idle` without a record), keeping
/// at most `max_bytes` of each key, value and header value. Blocking.
pub fn read_records(
    admin: &Admin,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    max_bytes: usize,
    idle: Duration,
) -> Result<Vec<RecordCopy>> {
    let mut records = Vec::new();
    admin.read_range(topic, ranges, idle, |m| {
        records.push(RecordCopy::of(m, max_bytes));
    })?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    #[test]
    fn a_copy_keeps_the_first_bytes_and_the_whole_length() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "event-type",
                value: Some("OrderPlaced"),
            })
            .insert(Header::<&str> {
                key: "empty",
                value: None,
            });
        let message = OwnedMessage::new(
            Some(vec![b'v'; 10]),
            Some(b"ord-1".to_vec()),
            "orders".into(),
            Timestamp::CreateTime(1_700_000_000_000),
            2,
            41,
            Some(headers),
        );
        let copy = RecordCopy::of(&message, 4);
        assert_eq!((copy.partition, copy.offset), (2, 41));
        assert_eq!(copy.timestamp_ms, Some(1_700_000_000_000));
        let value = copy.value.expect("value");
        assert_eq!((value.bytes.as_slice(), value.len), (&b"vvvv"[..], 10));
        assert!(value.is_cut());
        let key = copy.key.expect("key");
        assert_eq!(key.bytes, b"ord-");
        assert_eq!(copy.headers.len(), 2);
        assert_eq!(copy.headers[0].0, "event-type");
        assert_eq!(
            copy.headers[0].1,
            Some(Excerpt {
                bytes: b"Orde".to_vec(),
                len: 11
            })
        );
        assert_eq!(copy.headers[1], ("empty".to_owned(), None));
        assert!(!Excerpt::of(b"abc", 3).is_cut());
    }
}
