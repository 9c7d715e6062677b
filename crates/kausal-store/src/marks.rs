//! Idempotency marks written in batches. Many records settle at once; each
//! writing its own row made the writes contend for SQLite's single write
//! lock (busy waits) and hold the pool's connections that the next
//! record's idempotency check needs. One writer task takes every mark that
//! queued up while its last statement ran and writes them in one statement;
//! each caller waits for its own mark.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use crate::{Result, Store, StoreError};

/// Most marks in one statement (three parameters each; SQLite's oldest
/// limit is 999 parameters).
const MAX_MARKS_PER_STATEMENT: usize = 256;

struct Mark {
    group: String,
    event_id: String,
    done: oneshot::Sender<Result<(), String>>,
}

/// A handle to the writer task; clones share it. The task ends when the
/// last handle is dropped.
#[derive(Debug, Clone)]
pub struct MarkWriter {
    queue: mpsc::UnboundedSender<Mark>,
}

impl MarkWriter {
    /// Starts the writer task on the current tokio runtime.
    pub fn spawn(store: Store) -> Self {
        let (queue, marks) = mpsc::unbounded_channel();
        tokio::spawn(write_marks(store, marks));
        Self { queue }
    }

    /// Records that `group` handled `event_id`, together with whatever else
    /// is queued; returns once the row is written.
    pub async fn mark(&self, group: &str, event_id: &str) -> Result<()> {
        let (done, written) = oneshot::channel();
        let mark = Mark {
            group: group.to_owned(),
            event_id: event_id.to_owned(),
            done,
        };
        if self.queue.send(mark).is_err() {
            return Err(StoreError::Write("the mark writer has stopped".to_owned()));
        }
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Write(e)),
            Err(_) => Err(StoreError::Write("the mark writer has stopped".to_owned())),
        }
    }
}

async fn write_marks(store: Store, mut marks: mpsc::UnboundedReceiver<Mark>) {
    while let Some(first) = marks.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_MARKS_PER_STATEMENT {
            match marks.try_recv() {
                Ok(mark) => batch.push(mark),
                Err(_) => break,
            }
        }
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let rows: Vec<(&str, &str)> = batch
            .iter()
            .map(|m| (m.group.as_str(), m.event_id.as_str()))
            .collect();
        let result = store
            .mark_processed_many(&rows, at_ms)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        for mark in batch {
            let _ = mark.done.send(result.clone());
        }
    }
}
