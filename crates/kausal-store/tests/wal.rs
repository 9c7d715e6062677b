//! SQLite's write-ahead log under writers that never pause: the store's
//! checkpoint task keeps it bounded (see `kausal_store`'s `checkpoint`
//! module). Without the task, with SQLite's automatic checkpoint turned
//! off, the log would hold everything written; with the automatic
//! checkpoint and overlapping writers it grew to 5 GB behind 1.8 GB of
//! data in the console's ingest benchmark.

use std::time::Duration;

use kausal_store::{SpanDetail, SpanRow, testing};

const WRITERS: usize = 4;
const BATCHES: usize = 150;
const SPANS: usize = 50;
/// Detail per span: 150 × 50 × 4 spans of ~10 KB is ~300 MB written.
const ATTRIBUTES_BYTES: usize = 10_000;

fn span(writer: usize, batch: usize, n: usize) -> SpanRow {
    SpanRow {
        trace_id: format!("{writer:08x}{batch:08x}{n:016x}"),
        span_id: format!("{n:016x}"),
        parent_span_id: None,
        name: "process orders".to_owned(),
        kind: "consumer".to_owned(),
        service: Some("payment-service".to_owned()),
        start_ns: 1,
        end_ns: 2,
        status_code: "unset".to_owned(),
        status_message: None,
        correlation_id: None,
        event_id: None,
        detail: SpanDetail::Otlp(vec![b'x'; ATTRIBUTES_BYTES]),
        resource_id: None,
        received_at_ms: 1,
    }
}

fn size(path: &str) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_write_ahead_log_stays_bounded_under_writers_that_never_pause() {
    let db = testing::sqlite().expect("a SQLite file");
    let store = testing::connect(&db).await.expect("store");
    let path = db
        .url
        .strip_prefix("sqlite://")
        .expect("a sqlite URL")
        .to_owned();
    let wal = format!("{path}-wal");

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for batch in 0..BATCHES {
                    let spans: Vec<SpanRow> = (0..SPANS).map(|n| span(writer, batch, n)).collect();
                    store
                        .record_telemetry(&spans, &[], &[], &[], 1)
                        .await
                        .expect("a batch of spans");
                }
            })
        })
        .collect();
    let mut largest_log = 0;
    while !writers.iter().all(tokio::task::JoinHandle::is_finished) {
        largest_log = largest_log.max(size(&wal));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    largest_log = largest_log.max(size(&wal));

    let written = (WRITERS * BATCHES * SPANS * ATTRIBUTES_BYTES) as u64;
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM spans")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(stored, (WRITERS * BATCHES * SPANS) as i64);
    // Let the task copy the rest, then the data is in the database file.
    tokio::time::timeout(Duration::from_secs(30), async {
        while size(&path) < written {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the checkpoint task copied the log into the database file: {} of {written} bytes after 30 s",
            size(&path)
        )
    });
    // The log is started over after 4 096 frames (16 MiB at 4 KiB pages);
    // a writer may append for a tick (100 ms) and a turn past that.
    assert!(
        largest_log < written / 2,
        "the write-ahead log stays bounded: it reached {largest_log} bytes while {written} bytes were written"
    );
    eprintln!("largest write-ahead log: {largest_log} bytes for {written} bytes written");
    store.close().await;
}
