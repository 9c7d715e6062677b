//! A partition's worker: the task that hands one partition's records to the
//! business logic, in order, and settles them.
//!
//! The poll thread ([`crate::poll`]) routes every record to the worker of
//! its partition through a small bounded channel; the worker takes records
//! (one, or a batch for a batch handler, never mixing partitions), admits,
//! handles, retries or dead-letters them ([`Dispatch`]), then settles them in
//! its own queue ([`Settling`]): a record's offset becomes committable when it
//! and every earlier record of the partition are settled. Partitions work
//! concurrently, at most [`ConsumerRuntime::partition_concurrency`] of them
//! inside a handler at once; a slow, retrying or stalled partition holds up
//! only itself (its channel fills and the poll thread pauses it).
//!
//! A worker stops when its `stop` token is cancelled (shutdown, or its
//! partition being revoked): the record in the handler finishes, waits on
//! infrastructure or a backoff are abandoned (those records stay
//! uncommitted), finished records settle, and records still in the channel
//! are left to the partition's next owner.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::event::IncomingEvent;
use crate::heartbeat::{InFlight, PartitionRef};
use crate::ids;
use crate::member::MemberStatus;
use crate::runtime::{ConsumerRuntime, Dispatch, RunSummary, RuntimeError};
use crate::settle::{Holding, MAX_UNSETTLED, Pending, Position, Settling};

/// How often a worker looks again whether a copy of one of its records is
/// still being settled by another partition.
const COPY_RECHECK: Duration = Duration::from_millis(10);

tokio::task_local! {
    /// The worker's count of waits in progress, for [`stalled`].
    static STALLS: Arc<AtomicUsize>;
}

/// Says, until dropped, that the partition's worker is waiting — on the
/// database, the broker, a retry backoff or its unsettled records — so the
/// poll thread pauses the partition (and the heartbeats say so) instead of
/// prefetching records nobody takes. Does nothing outside a worker (a
/// settle task; its wait shows when the worker waits for it).
pub(crate) fn stalled() -> Stalled {
    let stalls = STALLS.try_with(Arc::clone).ok();
    if let Some(stalls) = &stalls {
        stalls.fetch_add(1, Ordering::AcqRel);
    }
    Stalled(stalls)
}

/// See [`stalled`].
pub(crate) struct Stalled(Option<Arc<AtomicUsize>>);

impl Drop for Stalled {
    fn drop(&mut self) {
        if let Some(stalls) = &self.0 {
            stalls.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What every worker of a member shares.
pub(crate) struct Workshop {
    pub(crate) pending: Arc<Mutex<Pending>>,
    pub(crate) status: Arc<Mutex<MemberStatus>>,
    pub(crate) holding: Arc<Holding>,
    /// One permit per partition inside a handler.
    pub(crate) handlers: Arc<Semaphore>,
}

/// One worker's own inputs.
pub(crate) struct Seat {
    pub(crate) partition: PartitionRef,
    pub(crate) records: mpsc::Receiver<IncomingEvent>,
    pub(crate) stop: CancellationToken,
    /// False once the partition was revoked from this worker.
    pub(crate) live: Arc<AtomicBool>,
    /// Waits in progress ([`stalled`]), read by the poll thread.
    pub(crate) stalls: Arc<AtomicUsize>,
}

/// Works one partition until `seat.stop`; the counts of what it settled, or
/// the task of the runtime that died.
pub(crate) async fn work<D: Dispatch>(
    runtime: Arc<ConsumerRuntime<D>>,
    shop: Arc<Workshop>,
    seat: Seat,
) -> Result<RunSummary, RuntimeError> {
    let stalls = seat.stalls.clone();
    STALLS
        .scope(stalls, work_stalled(runtime, shop, seat))
        .await
}

async fn work_stalled<D: Dispatch>(
    runtime: Arc<ConsumerRuntime<D>>,
    shop: Arc<Workshop>,
    seat: Seat,
) -> Result<RunSummary, RuntimeError> {
    let Seat {
        partition,
        mut records,
        stop,
        live,
        stalls: _,
    } = seat;
    let mut settling = Settling::new(
        shop.pending.clone(),
        shop.holding.clone(),
        live,
        runtime.observer.clone(),
    );
    let mut summary = RunSummary::default();
    let (max_records, max_wait) = runtime.dispatch.batch_limits();
    loop {
        // Idle: settle what is finished while waiting for the next record,
        // so that its offset is committed without waiting for more traffic.
        let first = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            settled = settling.settle_until(0), if !settling.is_empty() => {
                if !settled {
                    break;
                }
                continue;
            }
            next = records.recv() => match next {
                Some(event) => event,
                None => break,
            },
        };
        let mut events = vec![first];
        fill_batch(&mut records, &mut events, max_records, max_wait, &stop).await;
        // A copy of an unsettled record is not marked processed yet: let
        // the first settle so that the idempotency guard sees it.
        if !copies_settled(&mut settling, &events, &stop).await {
            break;
        }
        let permit = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            permit = shop.handlers.clone().acquire_owned() => permit,
        };
        let Ok(_permit) = permit else {
            break;
        };
        in_flight(&shop.status, &partition, Some(&events[0]));
        let finished = D::dispatch(&runtime, &mut events, &stop, &mut summary).await;
        in_flight(&shop.status, &partition, None);
        drop(_permit);
        let Some(finished) = finished else {
            // Stopped while waiting on infrastructure: the records are not
            // finished, so neither they nor anything after them is
            // committed.
            break;
        };
        for (event, done) in events.into_iter().zip(finished) {
            let position = Position::of(&event);
            let event_id = event.headers.event_id;
            let settle = runtime.settle(event, done, &stop);
            settling.push(position, event_id, settle);
        }
        // Settling overlaps the next records' handling; the next record
        // waits once too many are unsettled.
        if !settling.settle_ready() {
            break;
        }
        if settling.len() > MAX_UNSETTLED {
            let _stalled = stalled();
            if !settling.settle_until(MAX_UNSETTLED).await {
                break;
            }
        }
    }
    settling.settle_until(0).await;
    if let Some(failure) = settling.take_failure() {
        return Err(failure);
    }
    summary.processed = settling.counts.processed;
    summary.dead_lettered = settling.counts.dead_lettered;
    summary.duplicates_skipped = settling.counts.duplicates_skipped;
    Ok(summary)
}

/// Adds records of the partition that arrive within the dispatch's wait, up
/// to its size (nothing for one-at-a-time handlers).
async fn fill_batch(
    records: &mut mpsc::Receiver<IncomingEvent>,
    events: &mut Vec<IncomingEvent>,
    max_records: usize,
    max_wait: Duration,
    stop: &CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + max_wait;
    while events.len() < max_records {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            next = tokio::time::timeout_at(deadline, records.recv()) => next,
        };
        match next {
            Ok(Some(event)) => events.push(event),
            Ok(None) | Err(_) => return,
        }
    }
}

/// Waits until no copy of `events` is being settled (here or in another
/// partition). False when stopped first or settling broke.
async fn copies_settled(
    settling: &mut Settling,
    events: &[IncomingEvent],
    stop: &CancellationToken,
) -> bool {
    while events.iter().any(|e| settling.holds(&e.headers.event_id)) {
        if !settling.is_empty() {
            if !settling.settle_until(0).await {
                return false;
            }
            continue;
        }
        // Held by another partition's worker, which settles by itself.
        let _stalled = stalled();
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(COPY_RECHECK) => {}
        }
    }
    true
}

/// Tells the heartbeats which record the partition is handling (or none).
fn in_flight(
    status: &Mutex<MemberStatus>,
    partition: &PartitionRef,
    event: Option<&IncomingEvent>,
) {
    let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
    match event {
        Some(event) => {
            status.in_flight.insert(
                partition.clone(),
                InFlight {
                    topic: event.topic.clone(),
                    partition: event.partition,
                    offset: event.offset,
                    since_ms: ids::now_ms(),
                },
            );
        }
        None => {
            status.in_flight.remove(partition);
        }
    }
}
