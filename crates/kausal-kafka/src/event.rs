//! Events as handlers see them: what came in, and what a handler emits.

use kausal_core::headers::{
    self, DecodedHeaders, EventHeaders, HeaderIssue, RawHeader, RecordPosition,
};
use kausal_core::{CorrelationId, Event, EventId, HandlerError, SpanId, TraceParent};
use rdkafka::message::{Headers, Message};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ids;

/// One consumed record with its decoded (and repaired) Kausal headers.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Record timestamp, ms since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: EventHeaders,
    /// What was wrong with the headers and how it was repaired.
    pub issues: Vec<HeaderIssue>,
    /// Every header exactly as it arrived, for dead-lettering.
    pub raw_headers: Vec<(String, Option<Vec<u8>>)>,
    /// The trace context of this consumer's handling: the incoming trace
    /// (or a new one) continued by this consumer's own span.
    pub trace: TraceParent,
}

impl IncomingEvent {
    /// Copies a consumed record and decodes its headers.
    pub fn from_message<M: Message>(message: &M) -> Self {
        let raw_headers: Vec<(String, Option<Vec<u8>>)> = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self::from_record(
            RecordPosition {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
            },
            message.timestamp().to_millis(),
            message.key().map(<[u8]>::to_vec),
            message.payload().map(<[u8]>::to_vec),
            raw_headers,
        )
    }

    /// A record from its parts, its headers decoded as from the broker.
    pub(crate) fn from_record(
        position: RecordPosition<'_>,
        timestamp_ms: Option<i64>,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        raw_headers: Vec<(String, Option<Vec<u8>>)>,
    ) -> Self {
        let borrowed: Vec<RawHeader<'_>> = raw_headers
            .iter()
            .map(|(name, value)| RawHeader {
                name,
                value: value.as_deref(),
            })
            .collect();
        let DecodedHeaders { headers, issues } = headers::decode(&borrowed, position);
        let trace = match headers.traceparent {
            Some(parent) => parent.child(ids::new_span_id()),
            None => TraceParent::new(ids::new_trace_id(), ids::new_span_id(), true),
        };
        Self {
            topic: position.topic.to_owned(),
            partition: position.partition,
            offset: position.offset,
            timestamp_ms,
            key,
            payload,
            headers,
            issues,
            raw_headers,
            trace,
        }
    }

    pub fn event_id(&self) -> EventId {
        self.headers.event_id
    }

    pub fn correlation_id(&self) -> &CorrelationId {
        &self.headers.correlation_id
    }

    pub fn event_type(&self) -> Option<&str> {
        self.headers.event_type.as_deref()
    }

    /// The key as UTF-8, when it is.
    /// Bytes of its key, value and headers as they arrived.
    pub fn size(&self) -> usize {
        let len = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
        len(&self.key)
            + len(&self.payload)
            + self
                .raw_headers
                .iter()
                .map(|(name, value)| name.len() + len(value))
                .sum::<usize>()
    }

    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// Whether this record is an `E`, by its `event-type` header.
    pub fn is<E: Event>(&self) -> bool {
        self.event_type() == Some(E::TYPE)
    }

    /// The payload as an `E`. A record of another type is a fatal
    /// `UnknownEventType` (dispatch with [`is`](Self::is) first when a topic
    /// carries several types); a missing, empty or malformed payload is a
    /// fatal `DeserializationError`.
    pub fn decode<E: Event>(&self) -> Result<E, HandlerError> {
        if !self.is::<E>() {
            return Err(HandlerError::unknown_event_type(self.event_type()));
        }
        self.json()
    }

    /// The payload decoded as JSON. A missing, empty or malformed payload is
    /// a fatal error: retrying cannot fix the bytes.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        match self.payload.as_deref() {
            None | Some([]) => Err(HandlerError::bad_payload("the record has an empty value")),
            Some(bytes) => serde_json::from_slice(bytes).map_err(|e| {
                HandlerError::bad_payload(format!(
                    "payload is not a valid {}: {e}",
                    std::any::type_name::<T>()
                        .rsplit("::")
                        .next()
                        .unwrap_or("event")
                ))
            }),
        }
    }

    /// The headers a child event gets: same correlation id and trace, this
    /// event as the cause, a new event id.
    pub fn child_headers(
        &self,
        source_service: &str,
        event_type: &str,
        version: u32,
    ) -> EventHeaders {
        child_of(&self.child_template(source_service), event_type, version)
    }

    /// What every child of this event shares (all but id, type, version).
    fn child_template(&self, source_service: &str) -> EventHeaders {
        EventHeaders {
            event_id: self.headers.event_id,
            event_type: None,
            event_version: None,
            correlation_id: self.headers.correlation_id.clone(),
            causation_id: Some(self.headers.event_id),
            source_service: Some(source_service.to_owned()),
            content_type: Some(headers::CONTENT_TYPE_JSON.to_owned()),
            traceparent: Some(self.trace),
            tracestate: self.headers.tracestate.clone(),
            baggage: self.headers.baggage.clone(),
        }
    }

    /// The span id of this consumer's handling.
    pub fn span_id(&self) -> SpanId {
        self.trace.parent_id
    }
}

/// What a root event is: where it goes and what it is called.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec<'a> {
    pub topic: &'a str,
    pub key: Option<&'a str>,
    pub event_type: &'a str,
    pub version: u32,
    pub source_service: &'a str,
}

/// An event ready to publish.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: EventHeaders,
    /// Headers beyond the Kausal set, appended as they are.
    pub extra_headers: Vec<(String, Vec<u8>)>,
    /// The span this event's `send` span is a child of (the handler's
    /// `process` span, an HTTP server span); `None` for a root.
    pub parent_span: Option<SpanId>,
}

impl OutgoingEvent {
    /// A root event: starts a business operation (new correlation id unless
    /// given) and a trace (unless a parent context is given, e.g. from HTTP).
    pub fn root<T: Serialize>(
        spec: &EventSpec<'_>,
        payload: &T,
        correlation_id: Option<CorrelationId>,
        parent: Option<TraceParent>,
    ) -> Result<Self, serde_json::Error> {
        let event_id = ids::new_event_id();
        let trace = match parent {
            Some(p) => p.child(ids::new_span_id()),
            None => TraceParent::new(ids::new_trace_id(), ids::new_span_id(), true),
        };
        Ok(Self {
            topic: spec.topic.to_owned(),
            key: spec.key.map(|k| k.as_bytes().to_vec()),
            payload: serde_json::to_vec(payload)?,
            headers: EventHeaders {
                event_id,
                event_type: Some(spec.event_type.to_owned()),
                event_version: Some(spec.version),
                correlation_id: correlation_id.unwrap_or_else(|| CorrelationId::adopt(event_id)),
                causation_id: None,
                source_service: Some(spec.source_service.to_owned()),
                content_type: Some(headers::CONTENT_TYPE_JSON.to_owned()),
                traceparent: Some(trace),
                tracestate: None,
                baggage: None,
            },
            extra_headers: Vec::new(),
            parent_span: parent.map(|p| p.parent_id),
        })
    }
}

/// Collects the events a handler emits. They are published only after the
/// handler returns `Ok`, and the consumed offset is committed only after the
/// broker acknowledged them: a failed attempt emits nothing.
#[derive(Debug)]
pub struct Emitter {
    /// Headers shared by every event emitted for this record.
    template: EventHeaders,
    pending: Vec<OutgoingEvent>,
    /// Events emitted so far: the index of the next derived id. Every
    /// attempt gets a fresh emitter, so it numbers its events from zero and
    /// re-emits the ids of the attempt before.
    emitted: u32,
}

/// A child event's headers from its template: a fresh id, type and version.
fn child_of(template: &EventHeaders, event_type: &str, version: u32) -> EventHeaders {
    EventHeaders {
        event_id: ids::new_event_id(),
        event_type: Some(event_type.to_owned()),
        event_version: Some(version),
        ..template.clone()
    }
}

impl Emitter {
    /// The emitter `service` gets while handling `parent`. The runtime makes
    /// one per attempt; build one yourself to unit-test a handler without a
    /// broker (see [`crate::testing`]).
    pub fn new(service: &str, parent: &IncomingEvent) -> Self {
        Self {
            template: parent.child_template(service),
            pending: Vec::new(),
            emitted: 0,
        }
    }

    /// Emits `event` on its topic, with its key, type and version: a child
    /// of the record being handled (same correlation id and trace, the
    /// record as its cause).
    pub fn emit<E: Event>(&mut self, event: &E) -> Result<(), HandlerError> {
        self.emit_to(E::TOPIC, event.key(), E::TYPE, E::VERSION, event)
    }

    /// Emits `payload` as JSON on `topic` with the given key and type: for
    /// payloads without an [`Event`] declaration, or a topic chosen at run
    /// time.
    pub fn emit_to<T: Serialize>(
        &mut self,
        topic: &str,
        key: Option<&str>,
        event_type: &str,
        version: u32,
        payload: &T,
    ) -> Result<(), HandlerError> {
        let bytes = serde_json::to_vec(payload).map_err(|e| {
            HandlerError::fatal(
                "SerializationError",
                format!("cannot encode {event_type}: {e}"),
            )
        })?;
        let mut headers = child_of(&self.template, event_type, version);
        // Deterministic: a redelivered record re-emits the same ids, so
        // downstream guards see a redelivery, not a new event.
        if let (Some(cause), Some(service)) =
            (self.template.causation_id, &self.template.source_service)
        {
            headers.event_id = EventId::derived(cause, service, topic, event_type, self.emitted);
        }
        self.emitted += 1;
        // Each emitted event gets its own `send` span under the handler's
        // `process` span; its traceparent names that send span.
        let process_span = headers.traceparent.map(|t| t.parent_id);
        headers.traceparent = headers.traceparent.map(|t| t.child(ids::new_span_id()));
        self.pending.push(OutgoingEvent {
            topic: topic.to_owned(),
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: bytes,
            headers,
            extra_headers: Vec::new(),
            parent_span: process_span,
        });
        Ok(())
    }

    /// What was emitted so far, in order (published only if the handler
    /// returns `Ok`).
    pub fn events(&self) -> &[OutgoingEvent] {
        &self.pending
    }

    pub(crate) fn take(&mut self) -> Vec<OutgoingEvent> {
        std::mem::take(&mut self.pending)
    }
}

impl OutgoingEvent {
    /// Whether this is an `E`, by its event type.
    pub fn is<E: Event>(&self) -> bool {
        self.headers.event_type.as_deref() == Some(E::TYPE)
    }

    /// The payload as an `E` (tests: what did the handler emit?). `None`
    /// if it is another type or does not decode as one.
    pub fn decode<E: Event>(&self) -> Option<E> {
        if !self.is::<E>() {
            return None;
        }
        serde_json::from_slice(&self.payload).ok()
    }
}
