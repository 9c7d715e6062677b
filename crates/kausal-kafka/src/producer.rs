//! The event producer: idempotent, `acks=all`, delivery awaited.

use std::time::{Duration, Instant};

use kausal_core::TraceParent;
use kausal_telemetry::metrics::{Metrics, TopicErrorType, TopicEventType, TopicLabel};
use kausal_telemetry::spans::{self, KausalSpan, Kind, SpanStart, attr};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::config::KafkaConfig;
use crate::event::OutgoingEvent;

/// Where the broker stored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot encode the event as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot create the Kafka producer: {0}")]
    Create(KafkaError),
    #[error("publishing to {topic} failed: {source}")]
    Delivery {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

impl PublishError {
    /// True when sending the same record again cannot succeed (it is too
    /// large, or the topic does not accept it).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Create(_) | Self::Encode(_) => true,
            Self::Delivery { source, .. } => matches!(
                source.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::InvalidMessageSize
                        | RDKafkaErrorCode::InvalidRecord
                        | RDKafkaErrorCode::InvalidMessage
                        | RDKafkaErrorCode::UnknownTopic
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                )
            ),
        }
    }

    /// A stable label for metrics and DLQ headers.
    pub fn error_type(&self) -> String {
        match self {
            Self::Create(_) => "ProducerCreateFailed".to_owned(),
            Self::Encode(_) => "SerializationError".to_owned(),
            Self::Delivery { source, .. } => match source.rdkafka_error_code() {
                Some(code) => format!("{code:?}"),
                None => "PublishFailed".to_owned(),
            },
        }
    }
}

/// Publishes events and awaits the broker's acknowledgement.
#[derive(Clone)]
pub struct EventProducer {
    inner: FutureProducer,
    metrics: Metrics,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer").finish_non_exhaustive()
    }
}

impl EventProducer {
    pub fn new(
        config: &KafkaConfig,
        client_id: &str,
        metrics: Metrics,
    ) -> Result<Self, PublishError> {
        let inner: FutureProducer = config
            .producer_config(client_id)
            .create()
            .map_err(PublishError::Create)?;
        Ok(Self { inner, metrics })
    }

    /// Publishes an event with its Kausal headers and waits for `acks=all`.
    pub async fn publish(&self, event: &OutgoingEvent) -> Result<Delivery, PublishError> {
        // Kausal's bookkeeping topics (receipts, heartbeats) are not traced.
        let mut span = event
            .headers
            .traceparent
            .filter(|_| spans::enabled() && !event.topic.starts_with(crate::INTERNAL_TOPIC_PREFIX))
            .map(|own| send_span(event, own));
        // Downstream parent-based samplers follow this span's decision.
        let sampled = span.as_ref().map(KausalSpan::sampled);
        let encoded = match (sampled, event.headers.traceparent) {
            (Some(sampled), Some(tp)) if tp.sampled() != sampled => {
                let mut headers = event.headers.clone();
                headers.traceparent = Some(TraceParent {
                    flags: u8::from(sampled),
                    ..tp
                });
                std::borrow::Cow::Owned(headers)
            }
            _ => std::borrow::Cow::Borrowed(&event.headers),
        };
        let mut headers = OwnedHeaders::new_with_capacity(12);
        for (name, value) in encoded.encode() {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        for (name, value) in &event.extra_headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_slice()),
            });
        }
        let event_type = event.headers.event_type.as_deref().unwrap_or("unknown");
        let result = self
            .send(
                &event.topic,
                event.key.as_deref(),
                Some(&event.payload),
                headers,
                event_type,
            )
            .await;
        if let Some(span) = span.as_mut() {
            match &result {
                Ok(d) => {
                    span.set_attribute(attr::PARTITION, d.partition.to_string());
                    span.set_attribute(attr::OFFSET, d.offset);
                }
                Err(e) => span.fail(&e.error_type(), &e.to_string()),
            }
        }
        if let Some(span) = span {
            span.end();
        }
        result
    }

    /// Publishes raw bytes and headers (dead-lettering, replay).
    pub async fn publish_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: OwnedHeaders,
        event_type: &str,
    ) -> Result<Delivery, PublishError> {
        self.send(topic, key, value, headers, event_type).await
    }

    async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: OwnedHeaders,
        event_type: &str,
    ) -> Result<Delivery, PublishError> {
        let started = Instant::now();
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        // The queue timeout only covers a full local queue; delivery itself
        // is bounded by message.timeout.ms.
        let result = self.inner.send(record, Duration::from_secs(30)).await;
        match result {
            Ok(delivery) => {
                self.metrics
                    .events_published
                    .get_or_create(&TopicEventType {
                        topic: topic.to_owned(),
                        event_type: event_type.to_owned(),
                    })
                    .inc();
                self.metrics
                    .event_publish_duration
                    .get_or_create(&TopicLabel {
                        topic: topic.to_owned(),
                    })
                    .observe(started.elapsed().as_secs_f64());
                Ok(Delivery {
                    partition: delivery.partition,
                    offset: delivery.offset,
                })
            }
            Err((source, _)) => {
                let err = PublishError::Delivery {
                    topic: topic.to_owned(),
                    source,
                };
                self.metrics
                    .event_publish_errors
                    .get_or_create(&TopicErrorType {
                        topic: topic.to_owned(),
                        error_type: err.error_type(),
                    })
                    .inc();
                Err(err)
            }
        }
    }

    /// Waits until every queued record is delivered (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.inner.flush(timeout) {
            tracing::warn!(error = %e, "producer flush did not complete");
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// The `send <topic>` span of an event (DESIGN §6).
fn send_span(event: &OutgoingEvent, own: TraceParent) -> KausalSpan {
    // Same trace, the parent's span id.
    let parent = event.parent_span.map(|id| own.child(id));
    let mut start = SpanStart::new(format!("send {}", event.topic), Kind::Producer, own)
        .parent(parent)
        .attr(attr::MESSAGING_SYSTEM, "kafka")
        .attr(attr::OPERATION_NAME, "send")
        .attr(attr::OPERATION_TYPE, "send")
        .attr(attr::DESTINATION, event.topic.clone())
        .attr(attr::MESSAGE_ID, event.headers.event_id.to_string())
        .attr(
            attr::CONVERSATION_ID,
            event.headers.correlation_id.to_string(),
        );
    if let Some(key) = event
        .key
        .as_deref()
        .and_then(|k| std::str::from_utf8(k).ok())
    {
        start = start.attr(attr::KEY, key.to_owned());
    }
    if let Some(t) = &event.headers.event_type {
        start = start.attr(attr::EVENT_TYPE, t.clone());
    }
    start.start()
}
