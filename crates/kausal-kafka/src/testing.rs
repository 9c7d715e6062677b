//! Unit-testing a [`Handler`] without a broker: build the record it
//! receives, run it once, and look at what it emitted, returned and traced.
//!
//! ```
//! # use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent, testing};
//! # use kausal_core::Event;
//! # use serde::{Deserialize, Serialize};
//! #[derive(Serialize, Deserialize)]
//! struct Ping { id: String }
//! impl Event for Ping {
//!     const TYPE: &'static str = "Ping";
//!     const VERSION: u32 = 1;
//!     const TOPIC: &'static str = "pings";
//! }
//! #[derive(Serialize, Deserialize)]
//! struct Pong { id: String }
//! impl Event for Pong {
//!     const TYPE: &'static str = "Pong";
//!     const VERSION: u32 = 1;
//!     const TOPIC: &'static str = "pongs";
//!     fn key(&self) -> Option<&str> { Some(&self.id) }
//! }
//!
//! struct Echo;
//! impl Handler for Echo {
//!     async fn handle(&self, event: &IncomingEvent, out: &mut Emitter) -> Result<(), HandlerError> {
//!         let ping: Ping = event.decode()?;
//!         tracing::info!(id = %ping.id, "pong");
//!         out.emit(&Pong { id: ping.id })
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let ping = testing::record(&Ping { id: "p-1".into() });
//! let handled = testing::handle(&Echo, "echo-service", &ping).await;
//! assert!(handled.result.is_ok());
//! let pong: Pong = handled.emitted[0].decode().unwrap();
//! assert_eq!(pong.id, "p-1");
//! assert_eq!(handled.emitted[0].headers.correlation_id, *ping.correlation_id());
//! assert_eq!(handled.captured.logs[0].message, "pong");
//! # });
//! ```
//!
//! The runtime's own guarantees (retries, dead letters, commits, receipts)
//! are not simulated here: they are the runtime's, tested against real
//! brokers. What this checks is the handler's business logic — what it
//! decides from a record.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use kausal_core::headers::RecordPosition;
use kausal_core::{Event, HandlerError};
use tracing::field::{Field, Visit};
use tracing::instrument::WithSubscriber;
use tracing::span::{Attributes, Id};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::event::{EventSpec, IncomingEvent, OutgoingEvent};
use crate::{Emitter, Handler};

/// The service name records built here claim to come from.
pub const TEST_SOURCE: &str = "test";

/// `event` as a consumer of its topic receives it: a root event (new event,
/// correlation and trace ids) at partition 0, offset 0, with every Kausal
/// header.
pub fn record<E: Event>(event: &E) -> IncomingEvent {
    let spec = EventSpec {
        topic: E::TOPIC,
        key: event.key(),
        event_type: E::TYPE,
        version: E::VERSION,
        source_service: TEST_SOURCE,
    };
    let outgoing = OutgoingEvent::root(&spec, event, None, None)
        .unwrap_or_else(|e| panic!("{} does not encode as JSON: {e}", E::TYPE));
    consumed(&outgoing, 0, 0)
}

/// What a consumer receives for `event` published at `partition`/`offset`
/// (its headers encoded and decoded as on the wire): feeds one handler's
/// output to the next one's input.
pub fn consumed(event: &OutgoingEvent, partition: i32, offset: i64) -> IncomingEvent {
    let raw_headers = event
        .headers
        .encode()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), Some(value.into_bytes())))
        .chain(
            event
                .extra_headers
                .iter()
                .map(|(name, value)| (name.clone(), Some(value.clone()))),
        )
        .collect();
    IncomingEvent::from_record(
        RecordPosition {
            topic: &event.topic,
            partition,
            offset,
        },
        Some(crate::ids::now_ms()),
        event.key.clone(),
        Some(event.payload.clone()),
        raw_headers,
    )
}

/// What one call of a handler did.
#[derive(Debug)]
pub struct Handled {
    /// What the handler returned.
    pub result: Result<(), HandlerError>,
    /// What it emitted, in order. The runtime publishes these only when
    /// `result` is `Ok`; they are kept here either way so a test can see
    /// what a failed attempt tried.
    pub emitted: Vec<OutgoingEvent>,
    /// The spans it opened and the log lines it wrote.
    pub captured: Captured,
}

/// Calls `handler` once on `event`, as `service` (the emitted events'
/// `source-service`), capturing its `tracing` spans and events.
pub async fn handle<H: Handler>(handler: &H, service: &str, event: &IncomingEvent) -> Handled {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let mut out = Emitter::new(service, event);
    let result = handler
        .handle(event, &mut out)
        .with_subscriber(subscriber)
        .await;
    Handled {
        result,
        emitted: out.take(),
        captured: capture.take(),
    }
}

/// Spans and log events recorded while a handler ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// Spans in the order they were opened.
    pub spans: Vec<CapturedSpan>,
    /// Log events in the order they were written.
    pub logs: Vec<CapturedLog>,
}

impl Captured {
    /// The first span named `name`.
    pub fn span(&self, name: &str) -> Option<&CapturedSpan> {
        self.spans.iter().find(|s| s.name == name)
    }
}

/// One span a handler opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedSpan {
    pub name: String,
    /// Fields given when the span was opened, rendered as text.
    pub fields: BTreeMap<String, String>,
}

/// One log event a handler wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedLog {
    pub level: Level,
    /// The event's message (its `message` field).
    pub message: String,
    /// Its other fields, rendered as text.
    pub fields: BTreeMap<String, String>,
    /// The span it was written in, if any.
    pub span: Option<String>,
}

/// The layer that records what [`handle`] returns.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Captured>>);

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Capture")
    }
}

impl Capture {
    fn take(&self) -> Captured {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spans
            .push(CapturedSpan {
                name: attrs.metadata().name().to_owned(),
                fields: fields.0,
            });
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        let span = ctx.event_span(event).map(|s| s.name().to_owned());
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .logs
            .push(CapturedLog {
                level: *event.metadata().level(),
                message,
                fields: fields.0,
                span,
            });
    }
}

/// Fields rendered as text: strings as they are, the rest by `Debug`.
#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Asked {
        id: String,
    }
    impl Event for Asked {
        const TYPE: &'static str = "Asked";
        const VERSION: u32 = 2;
        const TOPIC: &'static str = "questions";
        fn key(&self) -> Option<&str> {
            Some(&self.id)
        }
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Answered {
        id: String,
    }
    impl Event for Answered {
        const TYPE: &'static str = "Answered";
        const VERSION: u32 = 1;
        const TOPIC: &'static str = "answers";
        fn key(&self) -> Option<&str> {
            Some(&self.id)
        }
    }

    struct Answer;
    impl Handler for Answer {
        async fn handle(
            &self,
            event: &IncomingEvent,
            out: &mut Emitter,
        ) -> Result<(), HandlerError> {
            let asked: Asked = event.decode()?;
            let span = tracing::info_span!("lookup", id = %asked.id);
            let _entered = span.enter();
            tracing::warn!(attempt = 1, "answering");
            out.emit(&Answered { id: asked.id })
        }
    }

    #[tokio::test]
    async fn a_record_carries_the_events_type_version_topic_and_key() {
        let record = record(&Asked { id: "q-1".into() });
        assert_eq!(record.topic, "questions");
        assert_eq!(record.key_str(), Some("q-1"));
        assert_eq!(record.event_type(), Some("Asked"));
        assert_eq!(record.headers.event_version, Some(2));
        assert!(record.issues.is_empty(), "{:?}", record.issues);
        assert!(record.is::<Asked>() && !record.is::<Answered>());
        assert_eq!(
            record.decode::<Asked>().ok(),
            Some(Asked { id: "q-1".into() })
        );
        let wrong = record.decode::<Answered>().expect_err("another type");
        assert_eq!(wrong.error_type, "UnknownEventType");
    }

    #[tokio::test]
    async fn handle_returns_what_was_emitted_logged_and_spanned() {
        let asked = record(&Asked { id: "q-7".into() });
        let handled = handle(&Answer, "answer-service", &asked).await;
        assert!(handled.result.is_ok(), "{:?}", handled.result);
        assert_eq!(handled.emitted.len(), 1);
        let answer = &handled.emitted[0];
        assert_eq!(answer.topic, "answers");
        assert_eq!(answer.key.as_deref(), Some(&b"q-7"[..]));
        assert_eq!(
            answer.decode::<Answered>(),
            Some(Answered { id: "q-7".into() })
        );
        assert_eq!(answer.headers.causation_id, Some(asked.event_id()));
        assert_eq!(answer.headers.correlation_id, *asked.correlation_id());
        assert_eq!(
            answer.headers.source_service.as_deref(),
            Some("answer-service")
        );
        let lookup = handled.captured.span("lookup").expect("the lookup span");
        assert_eq!(lookup.fields.get("id").map(String::as_str), Some("q-7"));
        let log = &handled.captured.logs[0];
        assert_eq!(
            (log.level, log.message.as_str(), log.span.as_deref()),
            (Level::WARN, "answering", Some("lookup"))
        );
        assert_eq!(log.fields.get("attempt").map(String::as_str), Some("1"));

        // The answer, consumed, is the next handler's input in the chain.
        let next = consumed(answer, 2, 41);
        assert_eq!((next.partition, next.offset), (2, 41));
        assert_eq!(next.headers.causation_id, Some(asked.event_id()));
        assert_eq!(next.decode::<Answered>().ok(), answer.decode::<Answered>());
    }

    #[tokio::test]
    async fn a_record_of_another_type_fails_as_unknown() {
        let wrong = record(&Answered { id: "a-1".into() });
        let handled = handle(&Answer, "answer-service", &wrong).await;
        let error = handled.result.expect_err("not an Asked");
        assert_eq!(error.error_type, "UnknownEventType");
        assert!(handled.emitted.is_empty());
    }
}
