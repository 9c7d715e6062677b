//! Settling: what happens to a record after its handler returned. The
//! broker's acknowledgements of what the handler emitted, the idempotency
//! mark and the receipt complete in a task of the record's own while the
//! runtime hands the next records to the handler; a record's offset becomes
//! committable only when it and every record before it are settled.
//!
//! So the handler is never kept waiting on the network, and the guarantees
//! stay those of a runtime that waits: nothing is committed before what its
//! handler emitted is acknowledged (or the record is dead-lettered), and a
//! record whose output the broker refuses for good is dead-lettered before
//! its offset moves (ARCHITECTURE.md, "Settling behind the handler").
//!
//! Every partition has its own settling queue (in its worker, see
//! [`crate::worker`]); the event ids being settled are shared by all of
//! them ([`Holding`]), so that a copy of a record in another partition waits
//! for the first to settle.
//!
//! A settle task that dies (a panic) stops the runtime with
//! [`RuntimeError::TaskDied`]: neither its record nor any record after it
//! is committed, so they are redelivered, and the failure is not hidden
//! behind a clean exit.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use kausal_core::{EventId, HandlerError};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::event::{IncomingEvent, OutgoingEvent};
use crate::producer::{PublishError, Sending};
use crate::receipt::ReceiptRecord;
use crate::runtime::{
    ConsumerRuntime, Dispatch, Outcome, OutcomeObserver, RunSummary, RuntimeError, record_log_span,
};

/// Records at most between a partition's oldest unsettled one and the one
/// being handled; its worker waits for the oldest beyond that.
pub(crate) const MAX_UNSETTLED: usize = 64;

/// Offsets of settled records not yet committed: (topic, partition) → next
/// offset to read.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) offsets: HashMap<(String, i32), i64>,
    pub(crate) dirty: bool,
}

impl Pending {
    pub(crate) fn to_list(&self, only: Option<&TopicPartitionList>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.offsets {
            let wanted = only.is_none_or(|l| l.find_partition(topic, *partition).is_some());
            if wanted {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
            }
        }
        tpl
    }
}

/// Where a finished record leaves its partition: the next offset to read.
#[derive(Debug)]
pub(crate) struct Position {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) next_offset: i64,
}

impl Position {
    pub(crate) fn of(event: &IncomingEvent) -> Self {
        Self {
            topic: event.topic.clone(),
            partition: event.partition,
            next_offset: event.offset + 1,
        }
    }

    /// Makes the offset committable, unless the partition was revoked from
    /// this worker in the meantime (`live` false: its next owner commits
    /// it; committing here could move that owner's offset).
    fn finish(self, pending: &Mutex<Pending>, live: &AtomicBool) {
        if live.load(Ordering::Acquire) {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            p.offsets
                .insert((self.topic, self.partition), self.next_offset);
            p.dirty = true;
        }
    }
}

/// An event a successful handling emitted, handed to the producer.
#[derive(Debug)]
pub(crate) struct Emitted {
    pub(crate) event: OutgoingEvent,
    pub(crate) sending: Sending,
}

/// A record the dispatch is done with: how, how long it took (ms), and
/// what it emitted that the broker has still to acknowledge.
#[doc(hidden)]
#[derive(Debug)]
pub struct Finished {
    pub(crate) outcome: Outcome,
    pub(crate) duration_ms: f64,
    pub(crate) emitted: Vec<Emitted>,
}

impl Finished {
    pub(crate) fn new(outcome: Outcome, duration_ms: f64, emitted: Vec<Emitted>) -> Self {
        Self {
            outcome,
            duration_ms,
            emitted,
        }
    }
}

/// How a record settles: nothing left to wait for, or a task that answers
/// with its final outcome (`None`: shutdown interrupted it, so neither it nor
/// anything after it may be committed).
#[derive(Debug)]
pub(crate) enum Settle {
    Ready(Box<(IncomingEvent, Outcome)>),
    Task(JoinHandle<Option<(IncomingEvent, Outcome)>>),
}

/// Event ids being settled, in any partition of the member: a second copy
/// of one of them must wait until the first is settled, or the idempotency
/// guard could not see it.
#[derive(Debug, Default)]
pub(crate) struct Holding {
    ids: Mutex<HashMap<EventId, usize>>,
}

impl Holding {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, usize>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hold(&self, id: EventId) {
        *self.ids().entry(id).or_default() += 1;
    }

    fn release(&self, id: &EventId) {
        let mut ids = self.ids();
        if let Some(n) = ids.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                ids.remove(id);
            }
        }
    }

    /// True while a copy of `id` is unsettled somewhere.
    pub(crate) fn holds(&self, id: &EventId) -> bool {
        self.ids().contains_key(id)
    }
}

/// One partition's records between the handler and the commit, oldest
/// first.
pub(crate) struct Settling {
    queue: VecDeque<(Position, EventId, Settle)>,
    holding: Arc<Holding>,
    /// A record could not be settled (shutdown, or its task died): nothing
    /// after it may be committed.
    broken: bool,
    /// Why, when it was not shutdown: the task that died.
    failure: Option<RuntimeError>,
    pending: Arc<Mutex<Pending>>,
    /// False once the partition was revoked from this worker.
    live: Arc<AtomicBool>,
    observer: Option<OutcomeObserver>,
    /// Settled records by outcome.
    pub(crate) counts: RunSummary,
}

impl Settling {
    pub(crate) fn new(
        pending: Arc<Mutex<Pending>>,
        holding: Arc<Holding>,
        live: Arc<AtomicBool>,
        observer: Option<OutcomeObserver>,
    ) -> Self {
        Self {
            queue: VecDeque::new(),
            holding,
            broken: false,
            failure: None,
            pending,
            live,
            observer,
            counts: RunSummary::default(),
        }
    }

    pub(crate) fn push(&mut self, position: Position, event_id: EventId, settle: Settle) {
        self.holding.hold(event_id);
        self.queue.push_back((position, event_id, settle));
    }

    /// True while a copy of `event_id` is unsettled in any partition.
    pub(crate) fn holds(&self, event_id: &EventId) -> bool {
        self.holding.holds(event_id)
    }

    /// True when no record waits to settle.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records waiting to settle.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// The task that died settling a record, if one did (once).
    pub(crate) fn take_failure(&mut self) -> Option<RuntimeError> {
        self.failure.take()
    }

    /// Settles the finished prefix. False once a record could not be
    /// settled.
    pub(crate) fn settle_ready(&mut self) -> bool {
        while !self.broken {
            let Some((_, _, settle)) = self.queue.front_mut() else {
                break;
            };
            let result = match settle {
                Settle::Ready(_) => None,
                Settle::Task(task) => match task.now_or_never() {
                    None => break,
                    Some(done) => Some(done),
                },
            };
            self.settle_front(result);
        }
        !self.broken
    }

    /// Waits until at most `limit` records are unsettled. False once a
    /// record could not be settled.
    pub(crate) async fn settle_until(&mut self, limit: usize) -> bool {
        while !self.broken && self.queue.len() > limit {
            let Some((_, _, settle)) = self.queue.front_mut() else {
                break;
            };
            let result = match settle {
                Settle::Ready(_) => None,
                Settle::Task(task) => Some(task.await),
            };
            self.settle_front(result);
        }
        !self.broken
    }

    /// Pops the oldest record; `result` is its task's answer (`None` for a
    /// ready one).
    fn settle_front(
        &mut self,
        result: Option<Result<Option<(IncomingEvent, Outcome)>, JoinError>>,
    ) {
        let Some((position, event_id, settle)) = self.queue.pop_front() else {
            return;
        };
        self.holding.release(&event_id);
        let settled = match (settle, result) {
            (Settle::Ready(ready), _) => Some(*ready),
            (Settle::Task(_), Some(Ok(answer))) => answer,
            (Settle::Task(_), Some(Err(e))) => {
                self.fail(Some(died(format!("the task settling {position}"), e)));
                return;
            }
            (Settle::Task(_), None) => None,
        };
        let Some((event, outcome)) = settled else {
            self.fail(None);
            return;
        };
        // The observer is part of settling: when it panics, the record is
        // not settled either.
        if let Some(observer) = &self.observer
            && let Err(panic) =
                std::panic::catch_unwind(AssertUnwindSafe(|| observer(&event, &outcome)))
        {
            self.fail(Some(RuntimeError::TaskDied {
                task: format!("the outcome observer settling {position}"),
                reason: format!("panicked: {}", panic_message(panic.as_ref())),
            }));
            return;
        }
        match outcome {
            Outcome::Processed { .. } => self.counts.processed += 1,
            Outcome::DeadLettered { .. } => self.counts.dead_lettered += 1,
            Outcome::DuplicateSkipped => self.counts.duplicates_skipped += 1,
        }
        position.finish(&self.pending, &self.live);
    }

    /// Nothing from the front on settles: not this record, not any after it
    /// (their tasks are let go: the shutdown token stops them). `failure`:
    /// the task that died, `None` for shutdown.
    fn fail(&mut self, failure: Option<RuntimeError>) {
        self.broken = true;
        if self.failure.is_none() {
            self.failure = failure;
        }
        for (_, event_id, _) in self.queue.drain(..) {
            self.holding.release(&event_id);
        }
    }
}

impl std::fmt::Display for Position {
    /// `topic/partition@offset` of the record (not the next offset).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}@{}",
            self.topic,
            self.partition,
            self.next_offset - 1
        )
    }
}

/// A task that ended in a panic (or was cancelled by the async runtime's
/// shutdown), as the error that stops the runtime.
pub(crate) fn died(task: String, error: JoinError) -> RuntimeError {
    RuntimeError::TaskDied {
        task,
        reason: join_reason(error),
    }
}

fn join_reason(error: JoinError) -> String {
    if error.is_cancelled() {
        return "cancelled (the async runtime is shutting down)".to_owned();
    }
    match error.try_into_panic() {
        Ok(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
        Err(error) => error.to_string(),
    }
}

/// The text a panic was raised with (`panic!("…")`), if it has one.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

impl<D: Dispatch> ConsumerRuntime<D> {
    /// How a finished record leaves the runtime: at once when nothing is
    /// left to wait for, else through a task of its own.
    pub(crate) fn settle(
        self: &Arc<Self>,
        event: IncomingEvent,
        done: Finished,
        shutdown: &CancellationToken,
    ) -> Settle {
        let marks = self.store.is_some() && matches!(done.outcome, Outcome::Processed { .. });
        if done.emitted.is_empty() && !marks && !self.receipts {
            return Settle::Ready(Box::new((event, done.outcome)));
        }
        let this = Arc::clone(self);
        let shutdown = shutdown.clone();
        Settle::Task(tokio::spawn(async move {
            this.settled(event, done, &shutdown).await
        }))
    }

    /// Waits for the acknowledgements of what the record's handling
    /// emitted, marks it processed (or dead-letters it when the broker
    /// refused its output for good), then publishes its receipt.
    async fn settled(
        &self,
        event: IncomingEvent,
        done: Finished,
        shutdown: &CancellationToken,
    ) -> Option<(IncomingEvent, Outcome)> {
        let Finished {
            mut outcome,
            duration_ms,
            emitted,
        } = done;
        if let Outcome::Processed { attempts } = outcome {
            match self.acknowledged(emitted, shutdown).await? {
                Ok(()) => {
                    self.mark(&event, &event.headers.event_id.to_string(), shutdown)
                        .await?;
                }
                Err(error) => {
                    outcome = async {
                        let outcome = self.dead_letter(&event, &error, attempts, shutdown).await?;
                        tracing::error!(
                            attempts,
                            outcome = "dead_lettered",
                            errorType = %error.error_type,
                            error = %error.message,
                            dlqTopic = %self.dlq_topic_for(&event.topic),
                            "event dead-lettered: the broker refused what its handler emitted"
                        );
                        Some(outcome)
                    }
                    .instrument(record_log_span(&event, &self.group))
                    .await?;
                }
            }
        }
        if self.receipts {
            self.publish_receipt(&event, &outcome, duration_ms, shutdown)
                .await?;
        }
        Some((event, outcome))
    }

    /// Hands what a successful attempt emitted to the producer, in order,
    /// without waiting for the broker. Transient refusals are retried (an
    /// infrastructure fault, not the handler's); one that cannot succeed
    /// (too large, not encodable) fails the attempt. `None` on shutdown.
    pub(crate) async fn enqueue_emitted(
        &self,
        events: Vec<OutgoingEvent>,
        shutdown: &CancellationToken,
    ) -> Option<Result<Vec<Emitted>, HandlerError>> {
        let mut emitted = Vec::with_capacity(events.len());
        for event in events {
            loop {
                match self.producer.enqueue(&event).await {
                    Ok(sending) => {
                        emitted.push(Emitted { event, sending });
                        break;
                    }
                    Err(e) if e.is_permanent() => return Some(Err(publish_failed(&event, &e))),
                    Err(e) => {
                        tracing::warn!(error = %e, "publish failed; retrying");
                        self.pause(shutdown).await?;
                    }
                }
            }
        }
        Some(Ok(emitted))
    }

    /// Waits until the broker has every emitted event, sending again those
    /// it lost on the way. `Some(Err)` when one can never be published.
    async fn acknowledged(
        &self,
        emitted: Vec<Emitted>,
        shutdown: &CancellationToken,
    ) -> Option<Result<(), HandlerError>> {
        for Emitted { event, sending } in emitted {
            let mut result = sending.acknowledged().await;
            loop {
                match result {
                    Ok(_) => break,
                    Err(e) if e.is_permanent() => return Some(Err(publish_failed(&event, &e))),
                    Err(e) => {
                        tracing::warn!(error = %e, "publish failed; retrying");
                        self.pause(shutdown).await?;
                        result = self.producer.publish(&event).await;
                    }
                }
            }
        }
        Some(Ok(()))
    }

    /// Publishes a record's receipt, retrying until the broker has it;
    /// `None` when shutdown interrupted (the record then stays
    /// uncommitted).
    async fn publish_receipt(
        &self,
        event: &IncomingEvent,
        outcome: &Outcome,
        duration_ms: f64,
        shutdown: &CancellationToken,
    ) -> Option<()> {
        let record = ReceiptRecord::new(event, outcome, &self.group, &self.service, duration_ms);
        let receipt = match record.to_event(event) {
            Ok(r) => r,
            Err(e) => {
                // Serialising our own struct cannot fail in practice; never
                // block the partition on it.
                tracing::error!(error = %e, "cannot encode a receipt; skipping it");
                return Some(());
            }
        };
        loop {
            match self.producer.publish(&receipt).await {
                Ok(_) => return Some(()),
                Err(e) => {
                    tracing::warn!(error = %e, "receipt not published; retrying");
                    self.pause(shutdown).await?;
                }
            }
        }
    }
}

impl<D> ConsumerRuntime<D> {
    /// Waits out the infrastructure backoff; `None` when shutdown came
    /// first.
    pub(crate) async fn pause(&self, shutdown: &CancellationToken) -> Option<()> {
        let _stalled = crate::worker::stalled();
        tokio::select! {
            () = shutdown.cancelled() => None,
            () = tokio::time::sleep(self.infra_backoff) => Some(()),
        }
    }
}

/// An emitted event the broker will never take, as a fatal handler error:
/// its record is dead-lettered.
fn publish_failed(event: &OutgoingEvent, e: &PublishError) -> HandlerError {
    HandlerError::fatal(
        "PublishFailed",
        format!(
            "cannot publish {} to {}: {e}",
            event.headers.event_type.as_deref().unwrap_or("event"),
            event.topic
        ),
    )
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{OwnedMessage, Timestamp};

    use super::*;

    fn record(partition: i32, offset: i64) -> IncomingEvent {
        let message = OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            "orders".to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        );
        IncomingEvent::from_message(&message)
    }

    /// Settling of a live worker.
    fn settling(observer: Option<OutcomeObserver>) -> (Settling, Arc<Mutex<Pending>>) {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let live = Arc::new(AtomicBool::new(true));
        let settling = Settling::new(pending.clone(), Arc::default(), live, observer);
        (settling, pending)
    }

    fn push(
        settling: &mut Settling,
        event: IncomingEvent,
        settle: impl FnOnce(IncomingEvent) -> Settle,
    ) {
        let position = Position::of(&event);
        let id = event.headers.event_id;
        settling.push(position, id, settle(event));
    }

    fn ready(event: IncomingEvent) -> Settle {
        Settle::Ready(Box::new((event, Outcome::Processed { attempts: 1 })))
    }

    fn committable(pending: &Mutex<Pending>) -> Vec<((String, i32), i64)> {
        let mut offsets: Vec<_> = pending
            .lock()
            .expect("lock")
            .offsets
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        offsets.sort();
        offsets
    }

    async fn explode() -> Option<(IncomingEvent, Outcome)> {
        panic!("the receipt encoder blew up")
    }

    #[tokio::test]
    async fn a_settle_task_that_panics_fails_the_run_and_nothing_from_its_record_on_is_committable()
    {
        let (mut settling, pending) = settling(None);
        push(&mut settling, record(0, 5), ready);
        push(&mut settling, record(0, 6), |_| {
            Settle::Task(tokio::spawn(explode()))
        });
        // Behind the dead one: on its own partition and on another.
        push(&mut settling, record(0, 7), ready);
        push(&mut settling, record(1, 3), ready);

        assert!(!settling.settle_until(0).await, "settling stops");
        match settling.take_failure() {
            Some(RuntimeError::TaskDied { task, reason }) => {
                assert_eq!(task, "the task settling orders/0@6");
                assert_eq!(reason, "panicked: the receipt encoder blew up");
            }
            other => panic!("expected TaskDied, got {other:?}"),
        }
        assert_eq!(
            committable(&pending),
            vec![(("orders".to_owned(), 0), 6)],
            "offset 5 is done; 6 (the dead one) and everything after it are not"
        );
        assert_eq!(settling.counts.processed, 1);
        assert!(!settling.settle_ready(), "and it stays stopped");
    }

    #[tokio::test]
    async fn a_panicking_outcome_observer_fails_the_run_like_a_dead_settle_task() {
        let observer: OutcomeObserver = Arc::new(|event, _| {
            assert_ne!(event.offset, 6, "the observer rejects offset 6");
        });
        let (mut settling, pending) = settling(Some(observer));
        for offset in [5, 6, 7] {
            push(&mut settling, record(0, offset), ready);
        }
        assert!(!settling.settle_ready());
        match settling.take_failure() {
            Some(RuntimeError::TaskDied { task, reason }) => {
                assert_eq!(task, "the outcome observer settling orders/0@6");
                assert!(reason.contains("the observer rejects offset 6"), "{reason}");
            }
            other => panic!("expected TaskDied, got {other:?}"),
        }
        assert_eq!(committable(&pending), vec![(("orders".to_owned(), 0), 6)]);
    }

    #[tokio::test]
    async fn a_revoked_worker_settles_but_commits_nothing() {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let live = Arc::new(AtomicBool::new(true));
        let mut settling = Settling::new(pending.clone(), Arc::default(), live.clone(), None);
        push(&mut settling, record(0, 5), ready);
        assert!(settling.settle_ready());
        live.store(false, Ordering::Release);
        push(&mut settling, record(0, 6), ready);
        assert!(settling.settle_ready());
        assert_eq!(
            committable(&pending),
            vec![(("orders".to_owned(), 0), 6)],
            "offset 6 belongs to the partition's next owner"
        );
        assert_eq!(settling.counts.processed, 2);
    }

    #[tokio::test]
    async fn a_copy_being_settled_in_one_partition_is_seen_by_the_others() {
        let holding: Arc<Holding> = Arc::default();
        let pending = Arc::new(Mutex::new(Pending::default()));
        let live = || Arc::new(AtomicBool::new(true));
        let mut first = Settling::new(pending.clone(), holding.clone(), live(), None);
        let second = Settling::new(pending, holding.clone(), live(), None);
        let event = record(0, 5);
        let id = event.headers.event_id;
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        push(&mut first, event, move |event| {
            Settle::Task(tokio::spawn(async move {
                released.await.ok()?;
                Some((event, Outcome::Processed { attempts: 1 }))
            }))
        });
        assert!(second.holds(&id), "partition 1 sees partition 0's copy");
        assert!(first.settle_ready() && second.holds(&id), "still settling");
        release.send(()).expect("task waits");
        assert!(first.settle_until(0).await);
        assert!(!second.holds(&id), "released once settled");
    }

    #[tokio::test]
    async fn a_settle_task_stopped_by_shutdown_is_no_failure() {
        let (mut settling, pending) = settling(None);
        push(&mut settling, record(0, 5), |_| {
            Settle::Task(tokio::spawn(async { None }))
        });
        push(&mut settling, record(0, 6), ready);
        assert!(!settling.settle_until(0).await);
        assert!(settling.take_failure().is_none(), "shutdown is not a death");
        assert!(committable(&pending).is_empty());
    }
}
