//! What the topology of an estate is made from: who produced to which topic
//! and which group handled what, over a recent window. The console turns
//! these rows into a service → topic → group graph with rates, and links
//! each group to its newest failure.

use serde::Serialize;
use sqlx::Row;

use crate::{Result, Store};

/// One handled record, as the topology needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HandledSample {
    pub consumer_group: String,
    pub service: String,
    pub topic: String,
    /// `processed`, `dead_lettered` or `duplicate_skipped`.
    pub outcome: String,
    pub duration_ms: f64,
}

/// Events one service produced to one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Produced {
    /// `None` for events without a `source-service` header.
    pub service: Option<String>,
    pub topic: String,
    pub events: i64,
}

/// The newest dead letter of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatestFailure {
    pub consumer_group: String,
    pub dlq_id: String,
    pub correlation_id: Option<String>,
    pub event_id: String,
    pub error_type: Option<String>,
    pub failed_at_ms: i64,
}

impl Store {
    /// The newest receipts handled at or after `since_ms`, at most `limit`.
    pub async fn handled_since(&self, since_ms: i64, limit: i64) -> Result<Vec<HandledSample>> {
        let rows = sqlx::query(include_str!("../sql/topology_receipts_since.sql"))
            .bind(since_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(HandledSample {
                    consumer_group: r.try_get("consumer_group")?,
                    service: r.try_get("service")?,
                    topic: r.try_get("topic")?,
                    outcome: r.try_get("outcome")?,
                    duration_ms: r.try_get("duration_ms")?,
                })
            })
            .collect()
    }

    /// Events recorded at or after `since_ms`, per producing service and
    /// topic.
    pub async fn produced_since(&self, since_ms: i64) -> Result<Vec<Produced>> {
        let rows = sqlx::query(include_str!("../sql/topology_produced_since.sql"))
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Produced {
                    service: r.try_get("source_service")?,
                    topic: r.try_get("topic")?,
                    events: r.try_get("events")?,
                })
            })
            .collect()
    }

    /// The newest dead letter of each consumer group that failed at or
    /// after `since_ms` (entries without a group are left out), by group.
    pub async fn latest_failures_since(&self, since_ms: i64) -> Result<Vec<LatestFailure>> {
        let rows = sqlx::query(include_str!("../sql/topology_latest_failures_since.sql"))
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LatestFailure {
                    consumer_group: r.try_get("consumer_group")?,
                    dlq_id: r.try_get("dlq_id")?,
                    correlation_id: r.try_get("correlation_id")?,
                    event_id: r.try_get("event_id")?,
                    error_type: r.try_get("error_type")?,
                    failed_at_ms: r.try_get("failed_at_ms")?,
                })
            })
            .collect()
    }
}
