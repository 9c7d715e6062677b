//! The event producer: idempotent, `acks=all`, delivery awaited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kausal_core::TraceParent;
use kausal_telemetry::metrics::{Metrics, TopicErrorType, TopicLabel};
use kausal_telemetry::spans::{self, KausalSpan, Kind, SpanStart, attr};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

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
    /// Shared with every [`Sending`] (one reference count, not a clone of
    /// each metric family, per record).
    metrics: Arc<Metrics>,
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
        Ok(Self {
            inner,
            metrics: Arc::new(metrics),
        })
    }

    /// Publishes an event with its Kausal headers and waits for `acks=all`.
    pub async fn publish(&self, event: &OutgoingEvent) -> Result<Delivery, PublishError> {
        self.enqueue(event).await?.acknowledged().await
    }

    /// Hands an event to the producer and returns without waiting for the
    /// broker (only while librdkafka's local queue is full); its
    /// [`Sending::acknowledged`] says whether the broker has it. Records of
    /// one partition are written in the order they were enqueued (the
    /// producer is idempotent). Errors found before sending (too large, not
    /// encodable) are returned here.
    pub async fn enqueue(&self, event: &OutgoingEvent) -> Result<Sending, PublishError> {
        // Kausal's bookkeeping topics (receipts, heartbeats) are not traced.
        let span = event
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
        match self
            .start_send(
                &event.topic,
                event.key.as_deref(),
                Some(&event.payload),
                headers,
                event_type,
            )
            .await
        {
            Ok(mut sending) => {
                sending.span = span;
                Ok(sending)
            }
            Err(e) => {
                if let Some(mut span) = span {
                    span.fail(&e.error_type(), &e.to_string());
                    span.end();
                }
                Err(e)
            }
        }
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
        self.start_send(topic, key, value, headers, event_type)
            .await?
            .acknowledged()
            .await
    }

    /// Enqueues one record, waiting (up to [`QUEUE_FULL_WAIT`]) only while
    /// librdkafka's local queue is full.
    async fn start_send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: OwnedHeaders,
        event_type: &str,
    ) -> Result<Sending, PublishError> {
        let started = Instant::now();
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        let sending = |delivery| Sending {
            delivery,
            topic: topic.to_owned(),
            event_type: event_type.to_owned(),
            started,
            span: None,
            metrics: Arc::clone(&self.metrics),
        };
        loop {
            match self.inner.send_result(record) {
                Ok(delivery) => return Ok(sending(delivery)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if started.elapsed() < QUEUE_FULL_WAIT =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((source, _)) => {
                    let err = PublishError::Delivery {
                        topic: topic.to_owned(),
                        source,
                    };
                    count_error(&self.metrics, topic, &err);
                    return Err(err);
                }
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

/// How long an enqueue waits for room in librdkafka's local queue before it
/// fails; delivery itself is bounded by `message.timeout.ms`.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(30);

/// A record handed to the producer whose acknowledgement is still to come.
/// Dropping it does not cancel the send.
pub struct Sending {
    delivery: DeliveryFuture,
    topic: String,
    event_type: String,
    started: Instant,
    /// The event's `send` span, ended with the acknowledgement.
    span: Option<KausalSpan>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Sending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sending")
            .field("topic", &self.topic)
            .field("event_type", &self.event_type)
            .finish_non_exhaustive()
    }
}

impl Sending {
    /// Waits for the broker's answer (`acks=all`).
    pub async fn acknowledged(mut self) -> Result<Delivery, PublishError> {
        let result = match (&mut self.delivery).await {
            Ok(Ok(delivery)) => Ok(Delivery {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((source, _))) => Err(PublishError::Delivery {
                topic: self.topic.clone(),
                source,
            }),
            // The producer is gone: the record's fate is unknown.
            Err(_canceled) => Err(PublishError::Delivery {
                topic: self.topic.clone(),
                source: KafkaError::Canceled,
            }),
        };
        match &result {
            Ok(d) => {
                self.metrics
                    .events_published
                    .get_or_create(
                        &self
                            .metrics
                            .topic_event_type(&self.topic, Some(&self.event_type)),
                    )
                    .inc();
                self.metrics
                    .event_publish_duration
                    .get_or_create(&TopicLabel {
                        topic: self.topic.clone(),
                    })
                    .observe(self.started.elapsed().as_secs_f64());
                if let Some(span) = self.span.as_mut() {
                    span.set_attribute(attr::PARTITION, d.partition.to_string());
                    span.set_attribute(attr::OFFSET, d.offset);
                }
            }
            Err(e) => {
                count_error(&self.metrics, &self.topic, e);
                if let Some(span) = self.span.as_mut() {
                    span.fail(&e.error_type(), &e.to_string());
                }
            }
        }
        if let Some(span) = self.span.take() {
            span.end();
        }
        result
    }
}

fn count_error(metrics: &Metrics, topic: &str, err: &PublishError) {
    metrics
        .event_publish_errors
        .get_or_create(&TopicErrorType {
            topic: topic.to_owned(),
            error_type: err.error_type(),
        })
        .inc();
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
