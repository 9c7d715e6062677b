//! DLQ ledger actions: replay a dead letter to its original topic, or
//! discard it with a reason.
//!
//! A replay republishes the original key, value and headers (without the
//! `dlq-*`/`kafka_dlt-*` headers) to the original topic with a fresh trace
//! whose origin is kept in `replay-link` (the original `traceparent`), the
//! same event id and correlation id, and `replay-count` incremented. Past the
//! cap it refuses: an event that keeps failing must be fixed or discarded,
//! not looped.
//!
//! The fresh trace starts with the replay's own `send <topic>` PRODUCER
//! span (DESIGN §6), a root with an OpenTelemetry link to the original
//! record's context; the replayed record's `traceparent` names that span,
//! so the consumer's `process` span has a parent that is exported, and the
//! old trace and the new one are joined by the link (replays use links
//! only, never a parent across traces).

use base64::Engine;
use kausal_core::TraceParent;
use kausal_core::dlq::DeadLetterOrigin;
use kausal_core::headers::{self, RawHeader};
use kausal_kafka::EventProducer;
use kausal_store::{DeadLetterEntry, Store};
use kausal_telemetry::spans::{self, KausalSpan, Kind, SpanStart, attr};
use rdkafka::message::{Header, OwnedHeaders};

/// Header carrying the original `traceparent` of a replayed event (the link
/// between the new trace and the old one).
pub const REPLAY_LINK: &str = "replay-link";
/// Header naming the ledger entry a record was replayed from.
pub const REPLAYED_FROM: &str = "replayed-from-dlq-id";
/// Default most replays of one event.
pub const DEFAULT_REPLAY_CAP: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("no dead letter {0} in the ledger (see `kausal dlq list`)")]
    NotFound(String),
    #[error("dead letter {id} is {status}, not pending: nothing to do")]
    NotPending { id: String, status: String },
    #[error(
        "refusing to replay {id}: the event was already replayed {count} times (cap {cap}); fix the consumer \
         and raise --max-replays, or discard it with a reason"
    )]
    CapReached { id: String, count: u32, cap: u32 },
    #[error("dead letter {id} has unreadable stored headers: {reason}")]
    Headers { id: String, reason: String },
    #[error("cannot publish the replay of {id}: {source}")]
    Publish {
        id: String,
        #[source]
        source: Box<kausal_kafka::PublishError>,
    },
    #[error("ledger database error: {0}")]
    Store(#[from] kausal_store::StoreError),
}

/// Where a replay went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replayed {
    pub dlq_id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub replay_count: u32,
    pub trace_id: String,
}

/// Record headers as stored: name and optional bytes.
type StoredHeaders = Vec<(String, Option<Vec<u8>>)>;

fn stored_headers(entry: &DeadLetterEntry) -> Result<StoredHeaders, LedgerError> {
    let bad = |reason: String| LedgerError::Headers {
        id: entry.dlq_id.clone(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(&entry.headers_json).map_err(|e| bad(e.to_string()))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    value
        .as_array()
        .ok_or_else(|| bad("not a JSON array".into()))?
        .iter()
        .map(|pair| {
            let name = pair[0]
                .as_str()
                .ok_or_else(|| bad("header name is not a string".into()))?;
            let value = match &pair[1] {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => {
                    Some(b64.decode(s).map_err(|e| bad(e.to_string()))?)
                }
                _ => return Err(bad("header value is not base64 or null".into())),
            };
            Ok((name.to_owned(), value))
        })
        .collect()
}

/// Headers a replay does not copy: the dead-letter ones (Kausal's and
/// Spring's) and those the replay sets anew.
fn replaced_on_replay(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("dlq-")
        || lower.starts_with("kafka_dlt-")
        || [
            REPLAYED_FROM,
            REPLAY_LINK,
            headers::REPLAY_COUNT,
            headers::TRACEPARENT,
            headers::TRACESTATE,
        ]
        .contains(&lower.as_str())
}

/// The entry, if it exists and is still pending.
async fn pending_entry(store: &Store, dlq_id: &str) -> Result<DeadLetterEntry, LedgerError> {
    let entry = store
        .dead_letter(dlq_id)
        .await?
        .ok_or_else(|| LedgerError::NotFound(dlq_id.to_owned()))?;
    if entry.status != "pending" {
        return Err(LedgerError::NotPending {
            id: entry.dlq_id,
            status: entry.status,
        });
    }
    Ok(entry)
}

/// Replays one pending dead letter. `by` names who or what replayed it.
pub async fn replay(
    store: &Store,
    producer: &EventProducer,
    dlq_id: &str,
    cap: u32,
    by: &str,
) -> Result<Replayed, LedgerError> {
    let entry = pending_entry(store, dlq_id).await?;
    let original = stored_headers(&entry)?;
    let raw: Vec<RawHeader<'_>> = original
        .iter()
        .map(|(n, v)| RawHeader {
            name: n,
            value: v.as_deref(),
        })
        .collect();
    let target = DeadLetterOrigin::from_headers(&raw)
        .map(|o| o.topic)
        .unwrap_or_else(|_| entry.source_topic.clone());
    let count = count_under_cap(&entry, &original, cap)?;
    let old_trace = raw
        .iter()
        .rev()
        .find(|h| h.name.eq_ignore_ascii_case(headers::TRACEPARENT))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let mut trace = TraceParent::new(
        kausal_kafka::ids::new_trace_id(),
        kausal_kafka::ids::new_span_id(),
        true,
    );
    let original_context = old_trace
        .as_deref()
        .and_then(|t| TraceParent::parse(t).ok());
    let span = spans::enabled().then(|| send_span(&entry, &target, trace, original_context));
    // Downstream parent-based samplers follow this span's decision.
    if let Some(span) = &span {
        trace.flags = u8::from(span.sampled());
    }

    let mut out = OwnedHeaders::new_with_capacity(original.len() + 6);
    for (name, value) in &original {
        if !replaced_on_replay(name) {
            out = out.insert(Header {
                key: name,
                value: value.as_deref(),
            });
        }
    }
    // A record from a plain client (a Spring service) has no `event-id` or
    // `correlation-id`: the ledger names it by its original position. The
    // replay carries those names, so that it keeps the same event id and
    // correlation id as the original (instead of the id of its new offset)
    // and consumers and the lineage see the same event again.
    let has = |name: &str| original.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has(headers::EVENT_ID) {
        out = out.insert(Header {
            key: headers::EVENT_ID,
            value: Some(entry.event_id.as_bytes()),
        });
    }
    if let Some(correlation) = entry
        .correlation_id
        .as_deref()
        .filter(|_| !has(headers::CORRELATION_ID))
    {
        out = out.insert(Header {
            key: headers::CORRELATION_ID,
            value: Some(correlation.as_bytes()),
        });
    }
    let trace_text = trace.to_string();
    let count_text = (count + 1).to_string();
    out = out.insert(Header {
        key: headers::TRACEPARENT,
        value: Some(trace_text.as_bytes()),
    });
    out = out.insert(Header {
        key: headers::REPLAY_COUNT,
        value: Some(count_text.as_bytes()),
    });
    out = out.insert(Header {
        key: REPLAYED_FROM,
        value: Some(entry.dlq_id.as_bytes()),
    });
    if let Some(link) = &old_trace {
        out = out.insert(Header {
            key: REPLAY_LINK,
            value: Some(link.as_bytes()),
        });
    }
    let published = producer
        .publish_raw(
            &target,
            entry.key.as_deref(),
            entry.payload.as_deref(),
            out,
            entry.event_type.as_deref().unwrap_or("unknown"),
        )
        .await;
    if let Some(mut span) = span {
        match &published {
            Ok(d) => {
                span.set_attribute(attr::PARTITION, d.partition.to_string());
                span.set_attribute(attr::OFFSET, d.offset);
            }
            Err(e) => span.fail(&e.error_type(), &e.to_string()),
        }
        span.end();
    }
    let delivery = published.map_err(|source| LedgerError::Publish {
        id: entry.dlq_id.clone(),
        source: Box::new(source),
    })?;
    let now = chrono::Utc::now().timestamp_millis();
    store
        .set_dead_letter_status(&entry.dlq_id, "replayed", now, Some(by), None)
        .await?;
    store.increment_replay_count(&entry.dlq_id).await?;
    Ok(Replayed {
        dlq_id: entry.dlq_id,
        topic: target,
        partition: delivery.partition,
        offset: delivery.offset,
        replay_count: count + 1,
        trace_id: trace.trace_id.to_string(),
    })
}

/// The replay's `send <topic>` span: the root of a new trace (`own`), linked
/// to the original record's context when its `traceparent` was readable.
fn send_span(
    entry: &DeadLetterEntry,
    topic: &str,
    own: TraceParent,
    original: Option<TraceParent>,
) -> KausalSpan {
    let mut start = SpanStart::new(format!("send {topic}"), Kind::Producer, own)
        .link(original)
        .attr(attr::MESSAGING_SYSTEM, "kafka")
        .attr(attr::OPERATION_NAME, "send")
        .attr(attr::OPERATION_TYPE, "send")
        .attr(attr::DESTINATION, topic.to_owned())
        .attr(attr::MESSAGE_ID, entry.event_id.clone());
    if let Some(correlation) = &entry.correlation_id {
        start = start.attr(attr::CONVERSATION_ID, correlation.clone());
    }
    if let Some(key) = entry
        .key
        .as_deref()
        .and_then(|k| std::str::from_utf8(k).ok())
    {
        start = start.attr(attr::KEY, key.to_owned());
    }
    if let Some(event_type) = &entry.event_type {
        start = start.attr(attr::EVENT_TYPE, event_type.clone());
    }
    start.start()
}

/// Marks a pending dead letter discarded, with the reason.
pub async fn discard(
    store: &Store,
    dlq_id: &str,
    reason: &str,
    by: &str,
) -> Result<(), LedgerError> {
    pending_entry(store, dlq_id).await?;
    let now = chrono::Utc::now().timestamp_millis();
    store
        .set_dead_letter_status(dlq_id, "discarded", now, Some(by), Some(reason))
        .await?;
    Ok(())
}

/// The `replay-count` the stored headers carry (0 when none), or
/// [`LedgerError::CapReached`] when it is at `cap` already.
fn count_under_cap(
    entry: &DeadLetterEntry,
    stored: &StoredHeaders,
    cap: u32,
) -> Result<u32, LedgerError> {
    let count = stored
        .iter()
        .rev()
        .find(|(name, _)| name.eq_ignore_ascii_case(headers::REPLAY_COUNT))
        .and_then(|(_, value)| value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if count >= cap {
        return Err(LedgerError::CapReached {
            id: entry.dlq_id.clone(),
            count,
            cap,
        });
    }
    Ok(count)
}

/// What [`discard`] would check, without changing anything: the entry
/// exists and is pending.
pub async fn check_pending(store: &Store, dlq_id: &str) -> Result<(), LedgerError> {
    pending_entry(store, dlq_id).await.map(|_| ())
}

/// What [`replay`] would check, without publishing: the entry exists, is
/// pending, has readable headers and is under the replay cap.
pub async fn check(store: &Store, dlq_id: &str, cap: u32) -> Result<(), LedgerError> {
    let entry = pending_entry(store, dlq_id).await?;
    count_under_cap(&entry, &stored_headers(&entry)?, cap).map(|_| ())
}
