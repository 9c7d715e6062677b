//! A record as a person reads it: key, value and header values as JSON,
//! text or hex (`crate::dlq::Bytes`) with how much was left out, and the
//! contract's headers (DESIGN §4) decoded into what they lead to — the
//! trace of a `traceparent`, the correlation of a `correlation-id`, the
//! event named by an `event-id` or `causation-id`, the topic a dead letter
//! came from. Pure.

use kausal_core::headers::{CAUSATION_ID, CORRELATION_ID, EVENT_ID, EVENT_TYPE, TRACEPARENT};
use kausal_core::trace::TraceParent;
use kausal_kafka::browse::{Excerpt, RecordCopy};

use crate::dlq::Bytes;

/// Bytes as shown: decoded, with the whole length and whether the shown
/// part is only the first bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub bytes: Bytes,
    pub len: usize,
    pub cut: bool,
}

impl Shown {
    pub fn of(excerpt: &Excerpt) -> Self {
        let cut = excerpt.is_cut();
        let mut bytes = excerpt.bytes.as_slice();
        // A cut through a character would turn the text into hex: show the
        // text up to the last whole character instead.
        if cut
            && let Err(e) = std::str::from_utf8(bytes)
            && e.error_len().is_none()
        {
            bytes = &bytes[..e.valid_up_to()];
        }
        Self {
            bytes: Bytes::of(bytes),
            len: excerpt.len,
            cut,
        }
    }

    /// The text, when it is not shown in hex.
    pub fn text(&self) -> Option<String> {
        match &self.bytes {
            Bytes::Hex(_) => None,
            other => Some(other.display()),
        }
    }
}

/// Where a header leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderLink {
    /// `traceparent`: the trace page of its trace id.
    Trace(String),
    /// `correlation-id`: the correlation page.
    Correlation(String),
    /// `event-id`, `causation-id`: a search for the event.
    Event(String),
    /// `dlq-original-topic`: the topic the dead letter came from.
    Topic(String),
}

/// One header of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderLine {
    pub name: String,
    /// `None` for a header without a value.
    pub value: Option<Shown>,
    pub link: Option<HeaderLink>,
}

/// The longest id a header may link with: the bound of every id the
/// console looks up.
const MAX_LINKED_ID: usize = 256;

/// `headers` decoded, in their order. A header of the contract whose value
/// cannot be used (not UTF-8, cut, a malformed `traceparent`) is shown
/// without a link rather than hidden.
pub fn header_lines(headers: &[(String, Option<Excerpt>)]) -> Vec<HeaderLine> {
    headers
        .iter()
        .map(|(name, value)| HeaderLine {
            name: name.clone(),
            value: value.as_ref().map(Shown::of),
            link: value.as_ref().and_then(|v| link_of(name, v)),
        })
        .collect()
}

fn link_of(name: &str, value: &Excerpt) -> Option<HeaderLink> {
    if value.is_cut() {
        return None;
    }
    let is = |header: &str| name.eq_ignore_ascii_case(header);
    if is(TRACEPARENT) {
        return TraceParent::parse_bytes(&value.bytes)
            .ok()
            .map(|t| HeaderLink::Trace(t.trace_id.to_string()));
    }
    let text = std::str::from_utf8(&value.bytes).ok()?.trim();
    if text.is_empty() || text.len() > MAX_LINKED_ID {
        return None;
    }
    if is(CORRELATION_ID) {
        Some(HeaderLink::Correlation(text.to_owned()))
    } else if is(EVENT_ID) || is(CAUSATION_ID) {
        Some(HeaderLink::Event(text.to_owned()))
    } else if is(kausal_core::dlq::ORIGINAL_TOPIC) {
        Some(HeaderLink::Topic(text.to_owned()))
    } else {
        None
    }
}

/// One record as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Shown>,
    /// `None`: a tombstone (no value).
    pub value: Option<Shown>,
    pub headers: Vec<HeaderLine>,
}

impl RecordView {
    pub fn of(record: &RecordCopy) -> Self {
        Self {
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key.as_ref().map(Shown::of),
            value: record.value.as_ref().map(Shown::of),
            headers: header_lines(&record.headers),
        }
    }

    /// The `event-type` header's text, when there is one.
    pub fn event_type(&self) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|h| h.name.eq_ignore_ascii_case(EVENT_TYPE))
            .and_then(|h| h.value.as_ref()?.text())
    }

    /// Where the record's correlation leads, when its headers name one.
    pub fn correlation_id(&self) -> Option<&str> {
        self.headers.iter().rev().find_map(|h| match &h.link {
            Some(HeaderLink::Correlation(id)) => Some(id.as_str()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: &[u8]) -> (String, Option<Excerpt>) {
        (name.to_owned(), Some(Excerpt::of(value, 4096)))
    }

    const TRACEPARENT_VALUE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_contract_headers_become_links() {
        let lines = header_lines(&[
            header(TRACEPARENT, TRACEPARENT_VALUE.as_bytes()),
            header("Correlation-ID", b"checkout-1"),
            header(EVENT_ID, b"0192f3c4-0000-7000-8000-000000000001"),
            header(CAUSATION_ID, b"0192f3c4-0000-7000-8000-000000000000"),
            header(kausal_core::dlq::ORIGINAL_TOPIC, b"orders"),
            header(EVENT_TYPE, b"OrderPlaced"),
            ("tombstone-ish".to_owned(), None),
        ]);
        let links: Vec<Option<HeaderLink>> = lines.iter().map(|l| l.link.clone()).collect();
        assert_eq!(
            links,
            vec![
                Some(HeaderLink::Trace("4bf92f3577b34da6a3ce929d0e0e4736".into())),
                Some(HeaderLink::Correlation("checkout-1".into())),
                Some(HeaderLink::Event(
                    "0192f3c4-0000-7000-8000-000000000001".into()
                )),
                Some(HeaderLink::Event(
                    "0192f3c4-0000-7000-8000-000000000000".into()
                )),
                Some(HeaderLink::Topic("orders".into())),
                None,
                None,
            ]
        );
        assert_eq!(lines[0].name, TRACEPARENT);
        assert_eq!(lines[6].value, None);
    }

    #[test]
    fn unusable_contract_headers_are_shown_without_a_link() {
        let lines = header_lines(&[
            header(TRACEPARENT, b"00-not-a-trace"),
            header(CORRELATION_ID, &[0xff, 0xfe]),
            header(CORRELATION_ID, b"   "),
            header(EVENT_ID, "x".repeat(257).as_bytes()),
            (
                CORRELATION_ID.to_owned(),
                Some(Excerpt::of(b"a-long-correlation-id", 4)),
            ),
        ]);
        assert!(lines.iter().all(|l| l.link.is_none()), "{lines:?}");
        assert_eq!(
            lines[1].value.as_ref().map(|v| v.bytes.clone()),
            Some(Bytes::Hex("fffe".into()))
        );
    }

    #[test]
    fn a_cut_value_says_so_and_stays_text_across_a_split_character() {
        // "é" is two bytes: cutting after the first leaves half a character.
        let shown = Shown::of(&Excerpt::of("abé".as_bytes(), 3));
        assert_eq!(shown.bytes, Bytes::Text("ab".into()));
        assert!(shown.cut);
        assert_eq!(shown.len, 4);
        let json = Shown::of(&Excerpt::of(br#"{"order_id":"ord-1"}"#, 4096));
        assert!(!json.cut);
        assert!(matches!(json.bytes, Bytes::Json(_)));
        // Bytes that are no text at all stay hex even when cut.
        let binary = Shown::of(&Excerpt::of(&[0xff, 0x00, 0xfe, 0x01], 2));
        assert_eq!(binary.bytes, Bytes::Hex("ff00".into()));
        assert_eq!(binary.text(), None);
    }

    #[test]
    fn a_record_names_its_event_type_and_correlation() {
        let record = RecordCopy {
            partition: 1,
            offset: 9,
            timestamp_ms: Some(5),
            key: Some(Excerpt::of(b"ord-1", 4096)),
            value: None,
            headers: vec![
                header(EVENT_TYPE, b"OrderPlaced"),
                header(CORRELATION_ID, b"c-1"),
            ],
        };
        let view = RecordView::of(&record);
        assert_eq!(view.event_type().as_deref(), Some("OrderPlaced"));
        assert_eq!(view.correlation_id(), Some("c-1"));
        assert_eq!(view.key.and_then(|k| k.text()).as_deref(), Some("ord-1"));
        assert_eq!(view.value, None);
    }
}
