//! The dead-letter ledger as the on-call engineer reads it: the dashboard
//! numbers (`stats`), one line per entry (`DeadLetterSummary`), one entry
//! in full (`DeadLetterDetail`), and replay or discard of one entry or of
//! every entry a filter selects (`act`). `kausal dlq … --json` and the
//! console's `/api/dlq…` answer from here, so they cannot disagree.

use std::collections::BTreeMap;

use base64::Engine;
use kausal_kafka::EventProducer;
use kausal_lineage::replay::{self, LedgerError, Replayed};
use kausal_store::{DeadLetterEntry, DeadLetterFilter, LineageEvent, Store};
use serde::Serialize;
use serde_json::Value;

/// The ledger's statuses.
pub const STATUSES: [&str; 3] = ["pending", "replayed", "discarded"];
/// Most entries one list or one bulk action touches.
pub const MAX_ENTRIES: i64 = 10_000;

const HOUR_MS: i64 = 3_600_000;

/// RFC 3339, to the second, in UTC.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A `since` bound, as the CLI and the API take it: an RFC 3339 time, or
/// a duration back from `now_ms` (`30s`, `30m`, `2h`, `7d`).
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let bad = || format!("since {text:?}: use RFC 3339 or a duration like 30m, 2h, 7d");
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let unit = text.chars().last().ok_or_else(bad)?;
    let n: i64 = text[..text.len() - unit.len_utf8()]
        .parse()
        .map_err(|_| bad())?;
    let unit_ms = match unit {
        's' => 1000,
        'm' => 60_000,
        'h' => HOUR_MS,
        'd' => 24 * HOUR_MS,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms)
        .filter(|ms| *ms >= 0)
        .map(|ms| now_ms.saturating_sub(ms))
        .ok_or_else(bad)
}

/// Seed 001's DLQ dashboard in numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DlqStats {
    pub pending: i64,
    pub oldest_pending_failed_at: Option<String>,
    pub oldest_pending_age_seconds: Option<i64>,
    pub inflow_last_hour: usize,
    pub outflow_last_hour: i64,
    pub pending_by_source_topic: BTreeMap<String, i64>,
    pub pending_by_error_type: BTreeMap<String, i64>,
    /// Entries that failed in each of the last 24 hours, oldest first.
    pub hourly_inflow_last_24h: [usize; 24],
}

/// The dashboard at `now_ms`.
pub async fn stats(store: &Store, now_ms: i64) -> kausal_store::Result<DlqStats> {
    let counts = store.dead_letter_counts().await?;
    let failures = store
        .dead_letter_failures_since(now_ms - 24 * HOUR_MS)
        .await?;
    let outflow = store.dead_letter_outflow_since(now_ms - HOUR_MS).await?;
    Ok(stats_of(&counts, &failures, outflow, now_ms))
}

/// The dashboard from the ledger's counts and the failure times of the last
/// 24 hours.
pub fn stats_of(
    counts: &[kausal_store::DeadLetterCount],
    failures_ms: &[i64],
    outflow_last_hour: i64,
    now_ms: i64,
) -> DlqStats {
    let pending: Vec<_> = counts.iter().filter(|c| c.status == "pending").collect();
    let oldest = pending.iter().map(|c| c.oldest_failed_at_ms).min();
    let mut by_topic: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_error: BTreeMap<String, i64> = BTreeMap::new();
    for c in &pending {
        *by_topic.entry(c.source_topic.clone()).or_default() += c.count;
        *by_error.entry(c.error_type.clone()).or_default() += c.count;
    }
    let mut trend = [0usize; 24];
    for t in failures_ms {
        trend[hour_of(*t, now_ms)] += 1;
    }
    DlqStats {
        pending: pending.iter().map(|c| c.count).sum(),
        oldest_pending_failed_at: oldest.map(rfc3339),
        oldest_pending_age_seconds: oldest.map(|t| (now_ms - t).max(0) / 1000),
        inflow_last_hour: failures_ms
            .iter()
            .filter(|t| **t >= now_ms - HOUR_MS)
            .count(),
        outflow_last_hour,
        pending_by_source_topic: by_topic,
        pending_by_error_type: by_error,
        hourly_inflow_last_24h: trend,
    }
}

/// The slot of time `t_ms` among the last 24 hours at `now_ms`: 23 for
/// the last hour, 0 for the 24th hour back (and anything older).
fn hour_of(t_ms: i64, now_ms: i64) -> usize {
    23 - ((now_ms - t_ms) / HOUR_MS).clamp(0, 23) as usize
}

/// One hour of the dashboard's 24-hour trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrendHour {
    /// When the hour ends, ms since the epoch (the last one ends now).
    pub end_ms: i64,
    /// Entries that failed in the hour.
    pub inflow: usize,
    /// Entries that left `pending` (replayed or discarded) in the hour.
    pub outflow: usize,
    /// Entries pending when the hour ended, worked back from the pending
    /// total now: an entry that failed after the hour's end was not
    /// pending yet, one that left after it still was.
    pub pending_at_end: i64,
}

/// The last 24 hours of the ledger, oldest first, around `stats` taken at
/// `now_ms`: inflow, outflow and pending per hour.
pub async fn trend(
    store: &Store,
    stats: &DlqStats,
    now_ms: i64,
) -> kausal_store::Result<Vec<TrendHour>> {
    let outflow = store
        .dead_letter_outflow_times_since(now_ms - 24 * HOUR_MS)
        .await?;
    Ok(trend_of(stats, &outflow, now_ms))
}

/// The trend from the dashboard's hourly inflow and the times entries left
/// `pending` in the last 24 hours.
pub fn trend_of(stats: &DlqStats, outflow_ms: &[i64], now_ms: i64) -> Vec<TrendHour> {
    let mut outflow = [0usize; 24];
    for t in outflow_ms {
        outflow[hour_of(*t, now_ms)] += 1;
    }
    let mut pending = stats.pending;
    let mut hours: Vec<TrendHour> = (0..24)
        .rev()
        .map(|i| {
            let hour = TrendHour {
                end_ms: now_ms - (23 - i as i64) * HOUR_MS,
                inflow: stats.hourly_inflow_last_24h[i],
                outflow: outflow[i],
                pending_at_end: pending.max(0),
            };
            pending = pending - hour.inflow as i64 + hour.outflow as i64;
            hour
        })
        .collect();
    hours.reverse();
    hours
}

/// One ledger entry without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterSummary {
    pub id: String,
    pub status: String,
    pub event_id: String,
    pub event_type: Option<String>,
    pub correlation_id: Option<String>,
    pub source_topic: String,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub dlq_topic: String,
    pub consumer_group: Option<String>,
    pub service: Option<String>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub attempts: Option<i64>,
    pub failed_at: String,
    pub failed_at_ms: i64,
    pub replay_count: i64,
    pub status_changed_at: Option<String>,
    pub status_by: Option<String>,
    pub status_reason: Option<String>,
}

impl From<&DeadLetterEntry> for DeadLetterSummary {
    fn from(e: &DeadLetterEntry) -> Self {
        Self {
            id: e.dlq_id.clone(),
            status: e.status.clone(),
            event_id: e.event_id.clone(),
            event_type: e.event_type.clone(),
            correlation_id: e.correlation_id.clone(),
            source_topic: e.source_topic.clone(),
            source_partition: e.source_partition,
            source_offset: e.source_offset,
            dlq_topic: e.dlq_topic.clone(),
            consumer_group: e.consumer_group.clone(),
            service: e.service.clone(),
            error_type: e.error_type.clone(),
            error_message: e.error_message.clone(),
            attempts: e.attempts,
            failed_at: rfc3339(e.failed_at_ms),
            failed_at_ms: e.failed_at_ms,
            replay_count: e.replay_count,
            status_changed_at: e.status_changed_at_ms.map(rfc3339),
            status_by: e.status_by.clone(),
            status_reason: e.status_reason.clone(),
        }
    }
}

/// Bytes as a reader wants them: JSON parsed, text as text, anything else
/// in hex.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "encoding", content = "value", rename_all = "snake_case")]
pub enum Bytes {
    Json(Value),
    Text(String),
    Hex(String),
}

impl Bytes {
    pub fn of(bytes: &[u8]) -> Self {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            return Self::Json(v);
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::Text(text.to_owned()),
            Err(_) => Self::Hex(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        }
    }

    /// How the CLI prints it on one line.
    pub fn display(&self) -> String {
        match self {
            Self::Json(v) => v.to_string(),
            Self::Text(t) => t.clone(),
            Self::Hex(h) => format!("0x{h}"),
        }
    }
}

/// One stored header of the original record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeaderView {
    pub name: String,
    /// `None` for a header without a value.
    pub value: Option<Bytes>,
}

/// One entry in full: the original headers, key and payload, and the
/// lineage chain of its correlation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub summary: DeadLetterSummary,
    pub key: Option<Bytes>,
    pub headers: Vec<HeaderView>,
    /// `None` when the broker refused the copy with its value.
    pub payload: Option<Bytes>,
    pub lineage: Vec<LineageEvent>,
}

/// The entry `id` in full; `None` when the ledger has no such entry.
pub async fn detail(store: &Store, id: &str) -> kausal_store::Result<Option<DeadLetterDetail>> {
    let Some(entry) = store.dead_letter(id).await? else {
        return Ok(None);
    };
    let lineage = match &entry.correlation_id {
        Some(c) => store.chain(c).await?,
        None => Vec::new(),
    };
    Ok(Some(DeadLetterDetail {
        summary: DeadLetterSummary::from(&entry),
        key: entry.key.as_deref().map(Bytes::of),
        headers: headers_of(&entry.headers_json),
        payload: entry.payload.as_deref().map(Bytes::of),
        lineage,
    }))
}

/// The stored `[name, base64 or null]` pairs, decoded. A pair that does
/// not parse is shown by name with no value rather than hidden.
fn headers_of(headers_json: &str) -> Vec<HeaderView> {
    let Ok(Value::Array(pairs)) = serde_json::from_str::<Value>(headers_json) else {
        return Vec::new();
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    pairs
        .iter()
        .map(|pair| HeaderView {
            name: pair[0].as_str().unwrap_or("?").to_owned(),
            value: pair[1]
                .as_str()
                .and_then(|v| b64.decode(v).ok())
                .map(|v| Bytes::of(&v)),
        })
        .collect()
}

/// Entries matching `filter`, newest first.
pub async fn list(
    store: &Store,
    filter: &DeadLetterFilter,
) -> kausal_store::Result<Vec<DeadLetterSummary>> {
    Ok(store
        .dead_letters(filter)
        .await?
        .iter()
        .map(DeadLetterSummary::from)
        .collect())
}

/// What to do with ledger entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Republish to the original topic, refusing entries replayed `cap`
    /// times already.
    Replay { cap: u32 },
    /// Mark discarded, with a reason.
    Discard { reason: String },
}

/// What happened to one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub id: String,
    /// `replayed`, `discarded`, `would_replay`, `would_discard` or `refused`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Replayed>,
    /// Why an entry was refused (not pending, cap reached, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Outcome {
    fn refused(id: &str, e: &LedgerError) -> Self {
        Self {
            id: id.to_owned(),
            result: "refused",
            replayed: None,
            reason: Some(e.to_string()),
        }
    }
}

/// Every outcome of one action, and the counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionReport {
    pub dry_run: bool,
    pub done: usize,
    pub refused: usize,
    pub outcomes: Vec<Outcome>,
}

/// Who acts, and whether for real.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// Recorded in the ledger.
    pub by: &'a str,
    /// Say what would be done, change nothing.
    pub dry_run: bool,
}

/// Applies `action` to each of `ids` in turn, calling `progress` after
/// each. A refusal of one entry never stops the others. `producer` is
/// needed for a replay that is not a dry run.
pub async fn act(
    store: &Store,
    producer: Option<&EventProducer>,
    ids: &[String],
    action: &Action,
    actor: Actor<'_>,
    mut progress: impl FnMut(&Outcome),
) -> ActionReport {
    let Actor { by, dry_run } = actor;
    let mut outcomes = Vec::with_capacity(ids.len());
    for id in ids {
        let outcome = act_one(store, producer, id, action, by, dry_run).await;
        progress(&outcome);
        outcomes.push(outcome);
    }
    let refused = outcomes.iter().filter(|o| o.result == "refused").count();
    ActionReport {
        dry_run,
        done: outcomes.len() - refused,
        refused,
        outcomes,
    }
}

async fn act_one(
    store: &Store,
    producer: Option<&EventProducer>,
    id: &str,
    action: &Action,
    by: &str,
    dry_run: bool,
) -> Outcome {
    let done = |result, replayed| Outcome {
        id: id.to_owned(),
        result,
        replayed,
        reason: None,
    };
    match (action, dry_run) {
        (Action::Replay { cap }, true) => match replay::check(store, id, *cap).await {
            Ok(()) => done("would_replay", None),
            Err(e) => Outcome::refused(id, &e),
        },
        (Action::Replay { cap }, false) => {
            let Some(producer) = producer else {
                return Outcome {
                    id: id.to_owned(),
                    result: "refused",
                    replayed: None,
                    reason: Some("no Kafka producer: start the console with --kafka".into()),
                };
            };
            match replay::replay(store, producer, id, *cap, by).await {
                Ok(r) => done("replayed", Some(r)),
                Err(e) => Outcome::refused(id, &e),
            }
        }
        (Action::Discard { .. }, true) => match replay::check_pending(store, id).await {
            Ok(()) => done("would_discard", None),
            Err(e) => Outcome::refused(id, &e),
        },
        (Action::Discard { reason }, false) => match replay::discard(store, id, reason, by).await {
            Ok(()) => done("discarded", None),
            Err(e) => Outcome::refused(id, &e),
        },
    }
}

/// The ids of the pending entries `filter` selects (a bulk action's
/// targets), at most [`MAX_ENTRIES`].
pub async fn pending_ids(
    store: &Store,
    filter: &DeadLetterFilter,
) -> kausal_store::Result<Vec<String>> {
    let filter = DeadLetterFilter {
        status: Some("pending".to_owned()),
        limit: Some(filter.limit.unwrap_or(MAX_ENTRIES).min(MAX_ENTRIES)),
        ..filter.clone()
    };
    Ok(store
        .dead_letters(&filter)
        .await?
        .into_iter()
        .map(|e| e.dlq_id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kausal_store::DeadLetterCount;

    fn count(status: &str, topic: &str, error: &str, n: i64, oldest: i64) -> DeadLetterCount {
        DeadLetterCount {
            status: status.into(),
            source_topic: topic.into(),
            error_type: error.into(),
            count: n,
            oldest_failed_at_ms: oldest,
        }
    }

    #[test]
    fn stats_count_pending_only_and_bucket_the_last_day() {
        let now = 100 * HOUR_MS;
        let counts = [
            count(
                "pending",
                "payments",
                "MissingCustomerEmail",
                3,
                now - 2 * HOUR_MS,
            ),
            count("pending", "orders", "MissingCustomerEmail", 1, now - 10_000),
            count("replayed", "orders", "Timeout", 5, now - 30 * HOUR_MS),
        ];
        let failures = [now - 10_000, now - 2 * HOUR_MS, now - 23 * HOUR_MS - 1];
        let s = stats_of(&counts, &failures, 2, now);
        assert_eq!(s.pending, 4);
        assert_eq!(s.oldest_pending_age_seconds, Some(2 * 3600));
        assert_eq!(s.inflow_last_hour, 1);
        assert_eq!(s.outflow_last_hour, 2);
        assert_eq!(s.pending_by_source_topic["payments"], 3);
        assert_eq!(s.pending_by_error_type["MissingCustomerEmail"], 4);
        assert!(!s.pending_by_error_type.contains_key("Timeout"));
        assert_eq!(s.hourly_inflow_last_24h[23], 1);
        assert_eq!(s.hourly_inflow_last_24h[21], 1);
        assert_eq!(s.hourly_inflow_last_24h[0], 1);
    }

    #[test]
    fn the_trend_works_pending_back_from_now_hour_by_hour() {
        let now = 100 * HOUR_MS;
        // Now: 2 pending. In the last hour 1 failed and 2 left; in the third
        // hour back 3 failed; in the 24th hour back 1 left.
        let counts = [count("pending", "orders", "Timeout", 2, now - 2 * HOUR_MS)];
        let failures = [
            now - 2 * HOUR_MS - 3,
            now - 2 * HOUR_MS - 2,
            now - 2 * HOUR_MS - 1,
            now - 5,
        ];
        let outflow = [now - 10, now - 20, now - 23 * HOUR_MS];
        let s = stats_of(&counts, &failures, 2, now);
        let t = trend_of(&s, &outflow, now);
        assert_eq!(t.len(), 24);
        assert_eq!(t[23].end_ms, now);
        assert_eq!(t[0].end_ms, now - 23 * HOUR_MS);
        let row = |i: usize| (t[i].inflow, t[i].outflow, t[i].pending_at_end);
        assert_eq!(row(23), (1, 2, 2));
        // Before the last hour: one fewer failed, two not yet gone.
        assert_eq!(row(22), (0, 0, 3));
        assert_eq!(row(21), (3, 0, 3));
        assert_eq!(row(20), (0, 0, 0));
        assert_eq!(row(0), (0, 1, 0));
        assert_eq!(
            t.iter().map(|h| h.inflow).sum::<usize>(),
            s.hourly_inflow_last_24h.iter().sum::<usize>(),
            "the same inflow as the stats"
        );
    }

    #[test]
    fn since_takes_times_and_durations() {
        let now = 10 * 24 * HOUR_MS;
        assert_eq!(parse_since("2h", now), Ok(now - 2 * HOUR_MS));
        assert_eq!(parse_since("7d", now), Ok(now - 7 * 24 * HOUR_MS));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now), Ok(1000));
        for bad in ["", "h", "2w", "-1h", "99999999999999999999d", "é"] {
            assert!(parse_since(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bytes_show_json_text_or_hex() {
        assert_eq!(
            Bytes::of(br#"{"a":1}"#),
            Bytes::Json(serde_json::json!({"a": 1}))
        );
        assert_eq!(Bytes::of(b"order-1"), Bytes::Text("order-1".into()));
        assert_eq!(Bytes::of(&[0xff, 0x00]), Bytes::Hex("ff00".into()));
        assert_eq!(
            serde_json::to_value(Bytes::of(&[0xff])).expect("json"),
            serde_json::json!({"encoding": "hex", "value": "ff"})
        );
    }

    #[test]
    fn headers_decode_and_keep_valueless_ones() {
        let json = r#"[["event-type","T3JkZXJQbGFjZWQ="],["empty",null]]"#;
        let h = headers_of(json);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].value, Some(Bytes::Text("OrderPlaced".into())));
        assert_eq!(h[1].value, None);
        assert!(headers_of("not json").is_empty());
    }
}
