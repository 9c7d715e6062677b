//! Spans and log records received over OTLP by the console (DESIGN §7),
//! stored next to the lineage so that one correlation id answers with both.
//! Rows are written as received (an exporter's retry of the same spans or
//! logs is stored once) and pruned by age in bounded batches.
//!
//! On SQLite the spans of a trace, and the links touching a trace, are
//! found through FTS5 indexes of trace ids (`span_traces` and
//! `span_link_traces`; `ddl/011-span-trace-index.sql` and
//! `ddl/012-span-link-index.sql` say why), kept in step with `spans` and
//! `span_links` by this module alone: every row appended is indexed in its
//! transaction, and every one pruned leaves its index in its transaction.
//! A request whose spans were stored before is known by its digest
//! (`span_batches`) and writes no span or link; a span sent again in
//! another request is stored again and read once.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::lineage::multi_row;
use crate::{Backend, Result, Store};

/// One span as an SDK exported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanRow {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    /// `internal`, `server`, `client`, `producer`, `consumer` or `unspecified`.
    pub kind: String,
    /// The resource's `service.name`.
    pub service: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub start_ns: i64,
    pub end_ns: i64,
    /// `unset`, `ok` or `error`.
    pub status_code: String,
    pub status_message: Option<String>,
    /// `messaging.message.conversation_id`, where the span has one.
    pub correlation_id: Option<String>,
    /// `messaging.message.id`, where the span has one.
    pub event_id: Option<String>,
    /// Attributes, events and links.
    pub detail: SpanDetail,
    /// The [`ResourceRow`] of the resource that sent the span.
    pub resource_id: Option<String>,
    pub received_at_ms: i64,
}

/// What a span says beyond its columns: its attributes, events and links.
/// The store keeps the bytes as given; the console encodes and reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpanDetail {
    /// The protobuf of an OTLP `Span` message holding only its attributes,
    /// events and links: what the receiver writes (since migration 010).
    Otlp(Vec<u8>),
    /// JSON text of each, as rows written before migration 010 hold them:
    /// attributes an object of name → value, events an array, links an
    /// array of `{trace_id, span_id, attributes}`.
    Json {
        attributes: String,
        events: String,
        links: String,
    },
}

/// A resource (the service that sent spans), stored once however many
/// spans name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRow {
    /// A digest of `resource`.
    pub resource_id: String,
    /// The protobuf of an OTLP `Resource` message.
    pub resource: Vec<u8>,
}

/// A link from one span to another span's context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanLinkRow {
    pub trace_id: String,
    pub span_id: String,
    pub linked_trace_id: String,
    pub linked_span_id: String,
}

/// One log record as an SDK exported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRow {
    /// A digest of the record's content (its identity for retries).
    pub log_id: String,
    /// Nanoseconds since the Unix epoch (the observed time when the record
    /// had none).
    pub time_ns: i64,
    pub severity_number: Option<i64>,
    pub severity_text: Option<String>,
    pub service: Option<String>,
    pub body: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    /// The `correlationId` attribute (Kausal's log field), where present.
    pub correlation_id: Option<String>,
    pub attributes_json: String,
    pub received_at_ms: i64,
}

/// New rows per table from [`Store::record_telemetry`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TelemetryCounts {
    pub spans: u64,
    pub links: u64,
    pub logs: u64,
}

/// Rows per statement: 19 columns × 400 stays under SQLite's limit of
/// 32 766 bound parameters.
const CHUNK_ROWS: usize = 400;

impl Store {
    /// Stores spans, their links and resources, and log records in one
    /// transaction; rows already present are skipped.
    pub async fn record_telemetry(
        &self,
        spans: &[SpanRow],
        links: &[SpanLinkRow],
        resources: &[ResourceRow],
        logs: &[LogRow],
        received_at_ms: i64,
    ) -> Result<TelemetryCounts> {
        let mut counts = TelemetryCounts::default();
        let (_turn, mut tx) = self.begin_write().await?;
        // SQLite: a request stored before writes no span or link again, and
        // the rows appended after `last_rowids` are indexed below.
        let (mut spans, mut links) = (spans, links);
        let mut last_rowids = None;
        if self.backend == Backend::Sqlite && !(spans.is_empty() && links.is_empty()) {
            let stored_before = !spans.is_empty()
                && sqlx::query(include_str!("../sql/span_batch_insert.sqlite.sql"))
                    .bind(batch_digest(spans))
                    .bind(received_at_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 0;
            if stored_before {
                (spans, links) = (&[], &[]);
            } else {
                let row = sqlx::query(include_str!("../sql/span_last_rowids.sqlite.sql"))
                    .fetch_one(&mut *tx)
                    .await?;
                last_rowids = Some((
                    row.try_get::<i64, _>("last_span_rowid")?,
                    row.try_get::<i64, _>("last_link_rowid")?,
                ));
            }
        }
        for r in resources {
            sqlx::query(include_str!("../sql/span_resource_insert.sql"))
                .bind(&r.resource_id)
                .bind(&r.resource)
                .bind(received_at_ms)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in spans.chunks(CHUNK_ROWS) {
            let sql = multi_row(
                include_str!("../sql/span_insert.sql"),
                chunk.len(),
                self.backend,
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for s in chunk {
                q = q
                    .bind(&s.trace_id)
                    .bind(&s.span_id)
                    .bind(&s.parent_span_id)
                    .bind(&s.name)
                    .bind(&s.kind)
                    .bind(&s.service)
                    .bind(s.start_ns)
                    .bind(s.end_ns)
                    .bind(&s.status_code)
                    .bind(&s.status_message)
                    .bind(&s.correlation_id)
                    .bind(&s.event_id);
                // The JSON columns of the old form are NOT NULL: '' when
                // the detail is protobuf; no resource copy per span.
                q = match &s.detail {
                    SpanDetail::Otlp(bytes) => q.bind("").bind("").bind("").bind("").bind(bytes),
                    SpanDetail::Json {
                        attributes,
                        events,
                        links,
                    } => q
                        .bind(attributes)
                        .bind(events)
                        .bind(links)
                        .bind("{}")
                        .bind(None::<Vec<u8>>),
                };
                q = q.bind(&s.resource_id).bind(s.received_at_ms);
            }
            counts.spans += q.execute(&mut *tx).await?.rows_affected();
        }
        for chunk in links.chunks(CHUNK_ROWS) {
            let sql = multi_row(
                include_str!("../sql/span_link_insert.sql"),
                chunk.len(),
                self.backend,
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for l in chunk {
                q = q
                    .bind(&l.trace_id)
                    .bind(&l.span_id)
                    .bind(&l.linked_trace_id)
                    .bind(&l.linked_span_id)
                    .bind(received_at_ms);
            }
            counts.links += q.execute(&mut *tx).await?.rows_affected();
        }
        if let Some((last_span, last_link)) = last_rowids {
            // Only a table that got rows has rows to index: one statement
            // less on the writer's turn for the many requests without links.
            for (sql, last, appended) in [
                (
                    include_str!("../sql/span_trace_index_insert.sqlite.sql"),
                    last_span,
                    counts.spans,
                ),
                (
                    include_str!("../sql/span_link_index_insert.sqlite.sql"),
                    last_link,
                    counts.links,
                ),
            ] {
                if appended > 0 {
                    sqlx::query(sql).bind(last).execute(&mut *tx).await?;
                }
            }
        }
        for chunk in logs.chunks(CHUNK_ROWS) {
            let sql = multi_row(
                include_str!("../sql/log_record_insert.sql"),
                chunk.len(),
                self.backend,
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for l in chunk {
                q = q
                    .bind(&l.log_id)
                    .bind(l.time_ns)
                    .bind(l.severity_number)
                    .bind(&l.severity_text)
                    .bind(&l.service)
                    .bind(&l.body)
                    .bind(&l.trace_id)
                    .bind(&l.span_id)
                    .bind(&l.correlation_id)
                    .bind(&l.attributes_json)
                    .bind(l.received_at_ms);
            }
            counts.logs += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(counts)
    }

    /// The spans of one trace in start order, at most `limit`.
    pub async fn spans_for_trace(&self, trace_id: &str, limit: i64) -> Result<Vec<SpanRow>> {
        let q = match self.backend {
            Backend::Sqlite => {
                let Some(term) = fts_term(trace_id) else {
                    return Ok(Vec::new());
                };
                sqlx::query(include_str!("../sql/spans_for_trace.sqlite.sql"))
                    .bind(term)
                    .bind(trace_id)
            }
            Backend::Postgres => {
                sqlx::query(include_str!("../sql/spans_for_trace.postgres.sql")).bind(trace_id)
            }
        };
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(span_from).collect()
    }

    /// Traces with a span naming the correlation id.
    pub async fn span_traces_for_correlation(
        &self,
        correlation_id: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        self.trace_ids(
            include_str!("../sql/span_traces_for_correlation.sql"),
            correlation_id,
            Some(limit),
        )
        .await
    }

    /// Traces with a span naming the event id.
    pub async fn span_traces_for_event(&self, event_id: &str, limit: i64) -> Result<Vec<String>> {
        self.trace_ids(
            include_str!("../sql/span_traces_for_event.sql"),
            event_id,
            Some(limit),
        )
        .await
    }

    /// Traces joined to `trace_id` by a span link, either way.
    pub async fn linked_traces(&self, trace_id: &str) -> Result<Vec<String>> {
        self.linked_traces_of(&[trace_id.to_owned()]).await
    }

    async fn trace_ids(
        &self,
        sql: &'static str,
        id: &str,
        limit: Option<i64>,
    ) -> Result<Vec<String>> {
        let mut q = sqlx::query(sql).bind(id);
        if let Some(limit) = limit {
            q = q.bind(limit);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("trace_id")?))
            .collect()
    }

    /// Log records of one trace in time order, at most `limit`.
    pub async fn logs_for_trace(&self, trace_id: &str, limit: i64) -> Result<Vec<LogRow>> {
        let rows = sqlx::query(include_str!("../sql/log_records_for_trace.sql"))
            .bind(trace_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(log_from).collect()
    }

    /// The spans of `trace_ids`, at most `per_trace` of each, in start
    /// order: one query for all of them.
    pub async fn spans_for_traces(
        &self,
        trace_ids: &[String],
        per_trace: i64,
    ) -> Result<Vec<SpanRow>> {
        if self.backend == Backend::Postgres {
            let rows = self
                .for_traces(
                    include_str!("../sql/spans_for_traces.postgres.sql"),
                    trace_ids,
                    Some(per_trace),
                )
                .await?;
            return rows.iter().map(span_from).collect();
        }
        let rows = self
            .for_indexed_traces(
                include_str!("../sql/spans_for_traces.sqlite.sql"),
                trace_ids,
                Some(per_trace),
            )
            .await?;
        rows.iter().map(span_from).collect()
    }

    /// Traces joined by a span link, either way, to any of `trace_ids`.
    pub async fn linked_traces_of(&self, trace_ids: &[String]) -> Result<Vec<String>> {
        let rows = match self.backend {
            Backend::Postgres => {
                self.for_traces(
                    include_str!("../sql/span_linked_traces_of.postgres.sql"),
                    trace_ids,
                    None,
                )
                .await?
            }
            Backend::Sqlite => {
                self.for_indexed_traces(
                    include_str!("../sql/span_linked_traces_of.sqlite.sql"),
                    trace_ids,
                    None,
                )
                .await?
            }
        };
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("trace_id")?))
            .collect()
    }

    /// SQLite: runs a many-trace query through an FTS5 index of trace ids:
    /// `$1` is `number` when there is one, the next parameter the ids as
    /// terms joined by `OR`, and `$IDS` becomes the placeholders after it,
    /// one bound id each. Ids that cannot be terms (see [`fts_term`]) are
    /// left out; no ids, no rows (and no query).
    async fn for_indexed_traces(
        &self,
        sql: &'static str,
        trace_ids: &[String],
        number: Option<i64>,
    ) -> Result<Vec<AnyRow>> {
        let (terms, trace_ids): (Vec<String>, Vec<&String>) = trace_ids
            .iter()
            .filter_map(|id| fts_term(id).map(|term| (term, id)))
            .unzip();
        if trace_ids.is_empty() {
            return Ok(Vec::new());
        }
        let first = if number.is_some() { 3 } else { 2 };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(id_list(sql, first, trace_ids.len())));
        if let Some(n) = number {
            q = q.bind(n);
        }
        q = q.bind(terms.join(" OR "));
        for id in trace_ids {
            q = q.bind(id);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// Runs a many-trace query: `$1` is `number` when there is one, and
    /// `$IDS` becomes the next placeholders, one bound id each. No ids, no
    /// rows (and no query).
    async fn for_traces(
        &self,
        sql: &'static str,
        trace_ids: &[String],
        number: Option<i64>,
    ) -> Result<Vec<AnyRow>> {
        if trace_ids.is_empty() {
            return Ok(Vec::new());
        }
        let first = if number.is_some() { 2 } else { 1 };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(id_list(sql, first, trace_ids.len())));
        if let Some(n) = number {
            q = q.bind(n);
        }
        for id in trace_ids {
            q = q.bind(id);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// Log records naming the correlation id or belonging to one of
    /// `trace_ids`, in time order, at most `limit` in all; each once.
    pub async fn logs_for_correlation(
        &self,
        correlation_id: &str,
        trace_ids: &[String],
        limit: i64,
    ) -> Result<Vec<LogRow>> {
        let sql = include_str!("../sql/log_records_for_correlation.sql");
        let sql = if trace_ids.is_empty() {
            sql.replace("$IDS", "NULL")
        } else {
            id_list(sql, 3, trace_ids.len())
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .bind(correlation_id);
        for id in trace_ids {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(log_from).collect()
    }

    /// A resource stored by [`Store::record_telemetry`], while a span
    /// within retention names it.
    pub async fn span_resource(&self, resource_id: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query(include_str!("../sql/span_resource.sql"))
            .bind(resource_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("resource")).transpose()?)
    }

    /// Deletes at most `batch` spans, links, resources and log records each
    /// that were received (resources: last named) before `before_ms`;
    /// returns how many rows went. Call again until it returns 0.
    pub async fn prune_telemetry(&self, before_ms: i64, batch: i64) -> Result<u64> {
        let mut removed = match self.backend {
            Backend::Sqlite => self.prune_indexed(before_ms, batch).await?,
            Backend::Postgres => {
                self.prune(
                    &[
                        include_str!("../sql/telemetry_prune_spans.postgres.sql"),
                        include_str!("../sql/telemetry_prune_span_links.postgres.sql"),
                    ],
                    before_ms,
                    batch,
                )
                .await?
            }
        };
        removed += self
            .prune(
                &[
                    include_str!("../sql/telemetry_prune_span_resources.sql"),
                    include_str!("../sql/telemetry_prune_log_records.sql"),
                ],
                before_ms,
                batch,
            )
            .await?;
        Ok(removed)
    }
}

impl Store {
    /// Runs each pruning statement once (`$1` the cut-off, `$2` the batch);
    /// the rows they deleted.
    async fn prune(&self, statements: &[&'static str], before_ms: i64, batch: i64) -> Result<u64> {
        let mut removed = 0;
        for &sql in statements {
            removed += sqlx::query(sql)
                .bind(before_ms)
                .bind(batch)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(removed)
    }

    /// SQLite: one bounded batch each of the spans and links received
    /// before `before_ms`, with their index entries, and of the digests of
    /// old requests, in one write transaction (an index must never name a
    /// row that is gone: a contentless FTS5 entry is deleted by the values
    /// it was made of, read from the row before it goes). The rows deleted,
    /// index entries not counted.
    async fn prune_indexed(&self, before_ms: i64, batch: i64) -> Result<u64> {
        let (_turn, mut tx) = self.begin_write().await?;
        let mut removed = 0;
        for (sql, counted) in [
            (
                include_str!("../sql/telemetry_prune_span_trace_index.sqlite.sql"),
                false,
            ),
            (
                include_str!("../sql/telemetry_prune_spans.sqlite.sql"),
                true,
            ),
            (
                include_str!("../sql/telemetry_prune_span_link_index.sqlite.sql"),
                false,
            ),
            (
                include_str!("../sql/telemetry_prune_span_links.sqlite.sql"),
                true,
            ),
            (
                include_str!("../sql/telemetry_prune_span_batches.sqlite.sql"),
                true,
            ),
        ] {
            let deleted = sqlx::query(sql)
                .bind(before_ms)
                .bind(batch)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if counted {
                removed += deleted;
            }
        }
        tx.commit().await?;
        Ok(removed)
    }
}

/// A trace id as an FTS5 query term: quoted, so that nothing in it is read
/// as an operator. `None` for an id that is not one token (not all ASCII
/// letters and digits): no stored id is like that (they are hex), and the
/// index cannot look one up (it keeps no positions, so no phrases). The
/// queries also compare the id itself, so a term matches no wrong span.
fn fts_term(trace_id: &str) -> Option<String> {
    (!trace_id.is_empty() && trace_id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| format!("\"{trace_id}\""))
}

/// The name of a request's spans in `span_batches`: a digest of its
/// (trace id, span id) pairs in sorted order, so that an exporter's retry
/// of the same request, in whatever order, is known.
fn batch_digest(spans: &[SpanRow]) -> String {
    let mut ids: Vec<(&str, &str)> = spans
        .iter()
        .map(|s| (s.trace_id.as_str(), s.span_id.as_str()))
        .collect();
    ids.sort_unstable();
    let mut text = String::with_capacity(ids.len() * 50);
    for (trace, span) in ids {
        text.push_str(trace);
        text.push(':');
        text.push_str(span);
        text.push('\n');
    }
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes()).to_string()
}

fn span_from(row: &AnyRow) -> Result<SpanRow> {
    Ok(SpanRow {
        trace_id: row.try_get("trace_id")?,
        span_id: row.try_get("span_id")?,
        parent_span_id: row.try_get("parent_span_id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        service: row.try_get("service")?,
        start_ns: row.try_get("start_ns")?,
        end_ns: row.try_get("end_ns")?,
        status_code: row.try_get("status_code")?,
        status_message: row.try_get("status_message")?,
        correlation_id: row.try_get("correlation_id")?,
        event_id: row.try_get("event_id")?,
        detail: match row.try_get::<Option<Vec<u8>>, _>("detail")? {
            Some(bytes) => SpanDetail::Otlp(bytes),
            None => SpanDetail::Json {
                attributes: row.try_get("attributes_json")?,
                events: row.try_get("events_json")?,
                links: row.try_get("links_json")?,
            },
        },
        resource_id: row.try_get("resource_id")?,
        received_at_ms: row.try_get("received_at_ms")?,
    })
}

fn log_from(row: &AnyRow) -> Result<LogRow> {
    Ok(LogRow {
        log_id: row.try_get("log_id")?,
        time_ns: row.try_get("time_ns")?,
        severity_number: row.try_get("severity_number")?,
        severity_text: row.try_get("severity_text")?,
        service: row.try_get("service")?,
        body: row.try_get("body")?,
        trace_id: row.try_get("trace_id")?,
        span_id: row.try_get("span_id")?,
        correlation_id: row.try_get("correlation_id")?,
        attributes_json: row.try_get("attributes_json")?,
        received_at_ms: row.try_get("received_at_ms")?,
    })
}

/// `sql` with every `$IDS` replaced by `$first, …, $(first+n-1)`:
/// placeholders only, every id is bound.
fn id_list(sql: &str, first: usize, n: usize) -> String {
    let ids: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    sql.replace("$IDS", &ids.join(", "))
}

#[cfg(test)]
mod id_list_tests {
    #[test]
    fn ids_are_numbered_after_the_first_parameter() {
        assert_eq!(
            super::id_list("a IN ($IDS) AND b IN ($IDS) LIMIT $1", 2, 3),
            "a IN ($2, $3, $4) AND b IN ($2, $3, $4) LIMIT $1"
        );
        assert_eq!(super::id_list("IN ($IDS)", 1, 1), "IN ($1)");
    }
}
