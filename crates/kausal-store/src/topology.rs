//! What the topology of an estate is made from: who produced to which topic
//! and which group handled what, over a recent window. The console turns
//! these rows into a service → topic → group graph with rates.

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
}
