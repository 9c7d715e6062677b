//! `dlq::DeadLetterOrigin::from_headers`: reading dead-letter headers back,
//! Kausal's `dlq-*` text headers and Spring Kafka's `kafka_dlt-*` headers
//! (binary big-endian partition, offset and timestamp).
//!
//! Input: the text format of `kausal_fuzz` (first line `#kausal-dlq`): the
//! headers of a dead-letter record as they are; or anything else, decoded
//! with `arbitrary` into a record's original headers plus, optionally, the
//! headers Kausal's runtime (`DeadLetter::headers`) or a Spring
//! `DeadLetterPublishingRecoverer` appends to them.
//!
//! Checks, beyond "never panics":
//! - the result is an error exactly when neither dialect names a non-empty
//!   UTF-8 original topic, Kausal's dialect is preferred, and the topic is
//!   the last header's value;
//! - Spring's integers are read only from values of exactly 4 or 8 bytes;
//! - what `DeadLetter::headers` writes after any original headers reads back
//!   field for field (empty text is absent, the error message is cut to
//!   `MAX_ERROR_MESSAGE_BYTES` on a character boundary), and likewise for
//!   Spring's headers when no Kausal origin is present.
#![no_main]

use arbitrary::Arbitrary;
use kausal_core::dlq::{self, DeadLetter, DeadLetterOrigin, Dialect, DlqHeaderError, spring};
use kausal_fuzz::{ArbHeaders, OwnedHeader, borrow, last};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 19] = [
    dlq::ORIGINAL_TOPIC,
    dlq::ORIGINAL_PARTITION,
    dlq::ORIGINAL_OFFSET,
    dlq::ORIGINAL_TIMESTAMP,
    dlq::CONSUMER_GROUP,
    dlq::SERVICE,
    dlq::ERROR_TYPE,
    dlq::ERROR_MESSAGE,
    dlq::ATTEMPTS,
    dlq::FAILED_AT,
    spring::ORIGINAL_TOPIC,
    spring::ORIGINAL_PARTITION,
    spring::ORIGINAL_OFFSET,
    spring::ORIGINAL_TIMESTAMP,
    spring::ORIGINAL_CONSUMER_GROUP,
    spring::EXCEPTION_FQCN,
    spring::EXCEPTION_MESSAGE,
    "kafka_dlt-exception-stacktrace",
    "event-id",
];

#[derive(Debug, Arbitrary)]
struct Input {
    original: ArbHeaders,
    appended: Appended,
}

#[derive(Debug, Arbitrary)]
enum Appended {
    Nothing,
    Kausal {
        topic: String,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        consumer_group: String,
        service: String,
        error_type: String,
        /// Repeated to cross `MAX_ERROR_MESSAGE_BYTES` now and then.
        error_message: String,
        repeat: u8,
        attempts: u32,
        failed_at: String,
    },
    Spring {
        topic: String,
        partition: i32,
        offset: i64,
        timestamp_ms: i64,
        consumer_group: String,
        exception_fqcn: String,
        exception_message: String,
    },
}

fuzz_target!(|data: &[u8]| {
    if let Some(text) = kausal_fuzz::parse_text(data, "#kausal-dlq") {
        check_raw(&text.headers);
        return;
    }
    let Some(input) = kausal_fuzz::from_arbitrary::<Input>(data) else {
        return;
    };
    let mut raw = input.original.resolve(&NAMES);
    match input.appended {
        Appended::Nothing => check_raw(&raw),
        Appended::Kausal {
            topic,
            partition,
            offset,
            timestamp_ms,
            consumer_group,
            service,
            error_type,
            error_message,
            repeat,
            attempts,
            failed_at,
        } => {
            let dead_letter = DeadLetter {
                original_topic: topic,
                original_partition: partition,
                original_offset: offset,
                original_timestamp_ms: timestamp_ms,
                consumer_group,
                service,
                error_type,
                error_message: error_message.repeat(usize::from(repeat % 8) * 200 + 1),
                attempts,
                failed_at,
            };
            let written = dead_letter.headers();
            let names: Vec<&str> = written.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, dlq::ALL.to_vec());
            raw.extend(
                written
                    .iter()
                    .map(|(n, v)| OwnedHeader::new(*n, Some(v.clone().into_bytes()))),
            );
            check_raw(&raw);
            check_kausal(&dead_letter, &raw);
        }
        Appended::Spring {
            topic,
            partition,
            offset,
            timestamp_ms,
            consumer_group,
            exception_fqcn,
            exception_message,
        } => {
            let kausal_origin = text(&raw, dlq::ORIGINAL_TOPIC).is_some();
            for (name, value) in [
                (spring::ORIGINAL_TOPIC, topic.clone().into_bytes()),
                (spring::ORIGINAL_PARTITION, partition.to_be_bytes().to_vec()),
                (spring::ORIGINAL_OFFSET, offset.to_be_bytes().to_vec()),
                (
                    spring::ORIGINAL_TIMESTAMP,
                    timestamp_ms.to_be_bytes().to_vec(),
                ),
                (
                    spring::ORIGINAL_CONSUMER_GROUP,
                    consumer_group.clone().into_bytes(),
                ),
                (spring::EXCEPTION_FQCN, exception_fqcn.clone().into_bytes()),
                (
                    spring::EXCEPTION_MESSAGE,
                    exception_message.clone().into_bytes(),
                ),
            ] {
                raw.push(OwnedHeader::new(name, Some(value)));
            }
            check_raw(&raw);
            if kausal_origin || topic.is_empty() {
                return;
            }
            let origin = DeadLetterOrigin::from_headers(&borrow(&raw)).expect("spring origin");
            let expected = DeadLetterOrigin {
                topic,
                partition: Some(partition),
                offset: Some(offset),
                timestamp_ms: Some(timestamp_ms),
                consumer_group: non_empty(consumer_group),
                service: None,
                error_type: non_empty(exception_fqcn),
                error_message: non_empty(exception_message),
                attempts: None,
                failed_at: None,
                dialect: Dialect::Spring,
            };
            assert_eq!(origin, expected);
        }
    }
});

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The last value of `name` as non-empty UTF-8.
fn text<'h>(raw: &'h [OwnedHeader], name: &str) -> Option<&'h str> {
    last(raw, name)
        .flatten()
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|s| !s.is_empty())
}

/// Properties of any header list.
fn check_raw(raw: &[OwnedHeader]) {
    let result = DeadLetterOrigin::from_headers(&borrow(raw));
    let kausal_topic = text(raw, dlq::ORIGINAL_TOPIC);
    let spring_topic = text(raw, spring::ORIGINAL_TOPIC);
    match (&result, kausal_topic, spring_topic) {
        (Ok(origin), Some(topic), _) => {
            assert_eq!(origin.dialect, Dialect::Kausal);
            assert_eq!(origin.topic, topic);
            let attempts = text(raw, dlq::ATTEMPTS).and_then(|s| s.trim().parse::<u32>().ok());
            assert_eq!(origin.attempts, attempts);
        }
        (Ok(origin), None, Some(topic)) => {
            assert_eq!(origin.dialect, Dialect::Spring);
            assert_eq!(origin.topic, topic);
            let bytes = |name| last(raw, name).flatten();
            assert_eq!(
                origin.partition,
                bytes(spring::ORIGINAL_PARTITION)
                    .and_then(|v| <[u8; 4]>::try_from(v).ok())
                    .map(i32::from_be_bytes)
            );
            assert_eq!(
                origin.offset,
                bytes(spring::ORIGINAL_OFFSET)
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map(i64::from_be_bytes)
            );
            assert_eq!(
                origin.timestamp_ms,
                bytes(spring::ORIGINAL_TIMESTAMP)
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map(i64::from_be_bytes)
            );
            assert_eq!((origin.service.as_ref(), origin.attempts), (None, None));
        }
        (Err(e), None, None) => {
            assert_eq!(*e, DlqHeaderError::NoOriginalTopic);
            assert!(!e.to_string().is_empty());
        }
        other => panic!("unexpected result {other:?}"),
    }
    if let Ok(origin) = result {
        for s in [
            &origin.consumer_group,
            &origin.service,
            &origin.error_type,
            &origin.error_message,
            &origin.failed_at,
        ] {
            assert_ne!(s.as_deref(), Some(""), "empty text must read as absent");
        }
    }
}

/// What the runtime wrote reads back field for field.
fn check_kausal(dead_letter: &DeadLetter, raw: &[OwnedHeader]) {
    let result = DeadLetterOrigin::from_headers(&borrow(raw));
    if dead_letter.original_topic.is_empty() {
        // Not something the runtime writes (a record always has a topic);
        // whatever is read, it is not this dead letter's Kausal origin.
        if let Ok(origin) = result {
            assert_eq!(origin.dialect, Dialect::Spring);
        }
        return;
    }
    let origin = result.expect("a Kausal dead letter names its origin");
    let message = &dead_letter.error_message;
    let kept = origin.error_message.clone().unwrap_or_default();
    if message.len() <= dlq::MAX_ERROR_MESSAGE_BYTES {
        assert_eq!(&kept, message);
    } else {
        let cut = kept.strip_suffix('…').expect("a cut message ends with …");
        assert!(cut.len() <= dlq::MAX_ERROR_MESSAGE_BYTES);
        assert!(
            cut.len() + 4 > dlq::MAX_ERROR_MESSAGE_BYTES,
            "cut too short"
        );
        assert!(message.starts_with(cut));
    }
    let expected = DeadLetterOrigin {
        topic: dead_letter.original_topic.clone(),
        partition: Some(dead_letter.original_partition),
        offset: Some(dead_letter.original_offset),
        timestamp_ms: dead_letter.original_timestamp_ms,
        consumer_group: non_empty(dead_letter.consumer_group.clone()),
        service: non_empty(dead_letter.service.clone()),
        error_type: non_empty(dead_letter.error_type.clone()),
        error_message: origin.error_message.clone(),
        attempts: Some(dead_letter.attempts),
        failed_at: non_empty(dead_letter.failed_at.clone()),
        dialect: Dialect::Kausal,
    };
    assert_eq!(origin, expected);
}
