//! [`Subscription`]: a catch-up subscription by name. It reads the store's
//! global order ([`kausal_store::Store::read_all`]) from its stored
//! checkpoint in batches, hands each batch to a [`BatchHandler`], and only
//! then stores the cursor of the batch's last event.
//!
//! **At-least-once, never skip.** The checkpoint moves after the handler
//! succeeded, so a crash or a failed handler between the two hands the
//! same events over again: a handler must be idempotent (a projection
//! keyed by event id or by stream version is). The other order, checkpoint
//! first, would lose the batch on a crash, and a lost event in a read model
//! is silent; a repeated one is not, once handlers guard against it. The
//! read itself never skips either: on PostgreSQL `read_all` holds back
//! events behind a transaction that is still open (see
//! `kausal_store::event_store`).
//!
//! **Spans.** A poll that returns events is traced as
//! `eventsource.subscription.poll_batch` (a new trace per batch) with the
//! handler's `eventsource.subscription.process_batch` (linked to the spans
//! that appended the batch's events) and
//! `eventsource.subscription.save_checkpoint` as children. Polls that find
//! nothing are not traced: an idle subscription would otherwise export a
//! trace per poll interval, forever. The lag
//! (`eventstore_subscription_lag_events`) is measured after every poll.

use std::future::Future;
use std::time::{Duration, Instant};

use kausal_core::{HandlerError, TraceParent};
use kausal_store::{GlobalCursor, RecordedEvent};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::metrics::SubscriptionLabel;
use crate::names::span;
use crate::store::EventStore;
use crate::trace::{Subject, Traced};

/// Events per batch unless set.
pub const DEFAULT_BATCH_SIZE: i64 = 100;

/// How long [`Subscription::run`] waits after a poll that found nothing,
/// or after a retryable handler failure, unless set.
pub const DEFAULT_IDLE_WAIT: Duration = Duration::from_millis(200);

/// Events handed to a handler at once, in the global order.
#[derive(Debug, Clone)]
pub struct Batch {
    pub events: Vec<RecordedEvent>,
    /// The `process_batch` span's context: the parent of the handler's own
    /// spans.
    pub trace: TraceParent,
}

/// Handles a batch. Returning an error leaves the checkpoint where it was,
/// so the same events come again. Closures `FnMut(Batch) -> impl Future`
/// are handlers too.
pub trait BatchHandler: Send {
    fn handle(&mut self, batch: Batch) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<F, Fut> BatchHandler for F
where
    F: FnMut(Batch) -> Fut + Send,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(&mut self, batch: Batch) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(batch)
    }
}

/// A named catch-up subscription over every stream.
#[derive(Debug)]
pub struct Subscription {
    name: String,
    store: EventStore,
    batch_size: i64,
    idle_wait: Duration,
    /// The stored checkpoint, once read.
    cursor: Option<GlobalCursor>,
}

impl Subscription {
    pub fn new(name: impl Into<String>, store: EventStore) -> Self {
        Self {
            name: name.into(),
            store,
            batch_size: DEFAULT_BATCH_SIZE,
            idle_wait: DEFAULT_IDLE_WAIT,
            cursor: None,
        }
    }

    /// Events per batch (at least 1).
    pub fn with_batch_size(mut self, batch_size: i64) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The wait after an empty poll in [`run`](Self::run).
    pub fn with_idle_wait(mut self, idle_wait: Duration) -> Self {
        self.idle_wait = idle_wait;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the subscription stands: its stored checkpoint, the start
    /// when it has none.
    pub async fn position(&mut self) -> Result<GlobalCursor> {
        if let Some(cursor) = self.cursor {
            return Ok(cursor);
        }
        let cursor = self
            .store
            .store()
            .checkpoint(&self.name)
            .await?
            .unwrap_or(GlobalCursor::START);
        self.cursor = Some(cursor);
        Ok(cursor)
    }

    /// Reads one batch after the checkpoint, hands it to `handler` and
    /// stores the new checkpoint; returns how many events were handled (0:
    /// nothing new). A handler failure is [`Error::Handler`] and leaves the
    /// checkpoint where it was.
    pub async fn poll_once<H: BatchHandler>(&mut self, handler: &mut H) -> Result<usize> {
        let after = self.position().await?;
        let started = Instant::now();
        let events = self.store.store().read_all(after, self.batch_size).await?;
        let Some(last) = events.last().map(RecordedEvent::cursor) else {
            self.record_lag(after).await?;
            return Ok(0);
        };
        let count = events.len();
        let mut poll = Traced::start(
            span::POLL_BATCH,
            None,
            self.store.db_system(),
            self.subject(),
            &[],
        );
        poll.set_count(count);
        tracing::debug!(
            parent: &poll.log_span(),
            subscription = %self.name,
            %after,
            count,
            read_ms = started.elapsed().as_millis() as u64,
            "handling a batch"
        );
        let result = self.handle(events, after, last, handler, &poll).await;
        if let Err(e) = &result {
            poll.fail(&e.error_type(), &e.to_string());
        }
        poll.end();
        result?;
        self.record_lag(last).await?;
        Ok(count)
    }

    async fn handle<H: BatchHandler>(
        &mut self,
        events: Vec<RecordedEvent>,
        after: GlobalCursor,
        last: GlobalCursor,
        handler: &mut H,
        poll: &Traced,
    ) -> Result<()> {
        let links: Vec<TraceParent> = events.iter().filter_map(|e| e.traceparent).collect();
        let mut process = Traced::start(
            span::PROCESS_BATCH,
            Some(poll.context()),
            self.store.db_system(),
            self.subject(),
            &links,
        );
        process.set_count(events.len());
        let batch = Batch {
            events,
            trace: process.context(),
        };
        let handled = handler
            .handle(batch)
            .instrument(process.log_span())
            .await
            .map_err(|source| Error::Handler {
                subscription: self.name.clone(),
                after,
                source,
            });
        if let Err(e) = &handled {
            process.fail(&e.error_type(), &e.to_string());
        }
        process.end();
        handled?;

        let mut save = Traced::start(
            span::SAVE_CHECKPOINT,
            Some(poll.context()),
            self.store.db_system(),
            self.subject(),
            &[],
        );
        let saved = self
            .store
            .store()
            .save_checkpoint(&self.name, last)
            .instrument(save.log_span())
            .await
            .map_err(Error::from);
        if let Err(e) = &saved {
            save.fail(&e.error_type(), &e.to_string());
        }
        save.end();
        saved?;
        self.cursor = Some(last);
        Ok(())
    }

    /// Polls until `shutdown` completes, waiting the idle wait after a poll
    /// that found nothing. A retryable handler failure is logged and the
    /// batch is handed over again after the idle wait; anything else ends
    /// the run with the error.
    pub async fn run<H: BatchHandler>(
        &mut self,
        handler: &mut H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let polled = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                polled = self.poll_once(handler) => polled,
            };
            let wait = match polled {
                Ok(0) => self.idle_wait,
                Ok(_) => continue,
                Err(Error::Handler { source, .. }) if source.is_retryable() => {
                    tracing::warn!(
                        subscription = %self.name,
                        error = %source,
                        errorType = %source.error_type,
                        "subscription handler failed; the batch is handed over again"
                    );
                    self.idle_wait
                }
                Err(e) => return Err(e),
            };
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Measures how many committed events lie after `cursor` into the lag
    /// gauge.
    async fn record_lag(&self, cursor: GlobalCursor) -> Result<()> {
        let behind = self.store.store().events_after(cursor).await?;
        self.store
            .metrics()
            .subscription_lag
            .get_or_create(&SubscriptionLabel {
                subscription: self.name.clone(),
            })
            .set(behind);
        Ok(())
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            aggregate: None,
            subscription: Some(&self.name),
        }
    }
}
