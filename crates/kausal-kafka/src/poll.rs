//! The poll thread: the one place that talks to the group consumer.
//!
//! It runs on a thread of its own, never on the async runtime's workers,
//! so everything librdkafka does synchronously there — the rebalance
//! callback with its synchronous commit of revoked partitions, the final
//! commit, leaving the group — blocks no handler. It never stops polling:
//!
//! - every record goes to the worker of its partition ([`crate::worker`])
//!   through a bounded channel, or, while that is full, into the
//!   partition's overflow. A partition is *paused*
//!   (`rd_kafka_pause_partitions`) when its worker waits (on the database,
//!   the broker, a retry backoff or its unsettled records) or its overflow
//!   passes a high-water mark, so the poll goes on serving the group —
//!   `max.poll.interval.ms` is never exceeded by a stalled handler — and the
//!   other partitions keep flowing; it is resumed once the worker is back
//!   and the overflow is under half the mark (pausing drops librdkafka's
//!   prefetched records of the partition, so pausing at every full channel
//!   would fetch them again and again). Paused partitions are in the
//!   member's heartbeats;
//! - settled offsets ([`Pending`]) are committed asynchronously every
//!   commit interval;
//! - on a revoke (only the moving partitions under the default
//!   `cooperative-sticky` assignment) each revoked partition's worker is
//!   stopped and drained — the record in its handler finishes, what it
//!   finished settles — and its offset is committed synchronously before
//!   the partition is let go;
//! - on shutdown every worker is drained the same way, then the final
//!   offsets are committed synchronously.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::event::IncomingEvent;
use crate::heartbeat::{DEFAULT_HEARTBEAT_INTERVAL, HEARTBEATS_TOPIC, MemberState, PartitionRef};
use crate::ids;
use crate::member::{
    MemberIdentity, MemberStatus, beat_until, helper_alive, publish_beat, watch_orphans,
};
use crate::runtime::{ConsumerRuntime, Dispatch, RunSummary, RuntimeError};
use crate::settle::{Holding, Pending, died};
use crate::worker::{Seat, Workshop, work};

/// Longest the poll waits for a record while nothing else needs doing.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// Records polled back to back before the loop looks after its partitions.
const POLL_BURST: usize = 256;
/// An overflow this long or this large (bytes of keys, values and headers)
/// pauses its partition.
const OVERFLOW_RECORDS: usize = 1024;
const OVERFLOW_BYTES: usize = 8 << 20;

/// How often the loop looks after its partitions (overflows, dead workers)
/// at least while records flow.
const HOUSEKEEPING: Duration = Duration::from_millis(10);

type WorkerTask = JoinHandle<Result<RunSummary, RuntimeError>>;

/// The poll thread's side of one partition's worker.
struct Partition {
    records: mpsc::Sender<IncomingEvent>,
    /// Records polled while the channel was full, oldest first.
    overflow: VecDeque<IncomingEvent>,
    /// Bytes of keys, values and headers in `overflow`.
    overflow_bytes: usize,
    paused: bool,
    /// The next offset the worker expects: a record below it was handed
    /// over already (librdkafka fetches again from its position after a
    /// pause), so it is not handed over twice.
    next_offset: Option<i64>,
    stop: CancellationToken,
    live: Arc<AtomicBool>,
    /// The worker's waits in progress: paused while it waits.
    stalls: Arc<AtomicUsize>,
    task: WorkerTask,
}

/// What the workers counted and the first task of the runtime that died.
#[derive(Default)]
struct Totals {
    summary: RunSummary,
    failure: Option<RuntimeError>,
}

/// The consumer's context: the partitions' workers and what the rebalance
/// callback needs to drain and commit them.
pub(crate) struct Member {
    group: String,
    pending: Arc<Mutex<Pending>>,
    status: Arc<Mutex<MemberStatus>>,
    partitions: Mutex<HashMap<PartitionRef, Partition>>,
    totals: Mutex<Totals>,
    drain_timeout: Duration,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Member {
    fn status(&self) -> MutexGuard<'_, MemberStatus> {
        locked(&self.status)
    }

    /// Stops the workers of `which` (all when `None`), waits up to the drain
    /// timeout for them to finish the records in hand and settle, and
    /// collects their counts. Their offsets are then in [`Pending`].
    fn drain(&self, which: Option<&[PartitionRef]>) {
        let leaving: Vec<(PartitionRef, Partition)> = {
            let mut partitions = locked(&self.partitions);
            match which {
                None => partitions.drain().collect(),
                Some(refs) => refs
                    .iter()
                    .filter_map(|r| partitions.remove(r).map(|p| (r.clone(), p)))
                    .collect(),
            }
        };
        for (_, partition) in &leaving {
            partition.stop.cancel();
        }
        let deadline = Instant::now() + self.drain_timeout;
        for (at, partition) in leaving {
            while !partition.task.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if !partition.task.is_finished() {
                tracing::warn!(
                    group = %self.group,
                    topic = %at.topic,
                    partition = at.partition,
                    drainTimeoutMs = self.drain_timeout.as_millis() as u64,
                    "a revoked partition's handler did not finish in time; its unsettled records are left uncommitted to the next owner"
                );
                partition.live.store(false, Ordering::Release);
                continue;
            }
            // Finished: its settled offsets are in `pending` already.
            partition.live.store(false, Ordering::Release);
            let ended = futures::executor::block_on(partition.task);
            self.absorb(&at, ended);
        }
    }

    /// Counts a finished worker in, or keeps the failure that ended it.
    fn absorb(
        &self,
        at: &PartitionRef,
        ended: Result<Result<RunSummary, RuntimeError>, tokio::task::JoinError>,
    ) {
        let mut totals = locked(&self.totals);
        match ended {
            Ok(Ok(counts)) => {
                totals.summary.processed += counts.processed;
                totals.summary.dead_lettered += counts.dead_lettered;
                totals.summary.duplicates_skipped += counts.duplicates_skipped;
                totals.summary.retries += counts.retries;
            }
            Ok(Err(failure)) => {
                totals.failure.get_or_insert(failure);
            }
            Err(e) => {
                let failure = died(
                    format!("the worker of partition {}/{}", at.topic, at.partition),
                    e,
                );
                totals.failure.get_or_insert(failure);
            }
        }
    }

    /// Commits, synchronously, the settled offsets of `which` (all when
    /// `None`) and forgets them.
    fn commit_final(&self, consumer: &BaseConsumer<Self>, which: Option<&TopicPartitionList>) {
        let tpl = {
            let mut pending = locked(&self.pending);
            let tpl = pending.to_list(which);
            for elem in tpl.elements() {
                pending
                    .offsets
                    .remove(&(elem.topic().to_owned(), elem.partition()));
            }
            tpl
        };
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                tracing::info!(group = %self.group, partitions = tpl.count(), "committed finished work of the partitions let go")
            }
            Err(e) => {
                tracing::warn!(group = %self.group, error = %e, "commit of the partitions let go failed; their finished records will be redelivered")
            }
        }
    }
}

impl ClientContext for Member {}

impl ConsumerContext for Member {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => {
                let refs = refs(revoked);
                tracing::info!(group = %self.group, partitions = refs.len(), "partitions revoked; draining them");
                locked(&self.totals).summary.partitions_revoked += refs.len() as u64;
                self.drain(Some(&refs));
                self.commit_final(consumer, Some(revoked));
                let mut status = self.status();
                for r in &refs {
                    status.release(r);
                }
            }
            Rebalance::Assign(assigned) => {
                tracing::info!(group = %self.group, partitions = assigned.count(), "partitions assigned");
                let mut status = self.status();
                for r in refs(assigned) {
                    status.assigned.insert(r);
                }
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "rebalance error")
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance
            && assigned.count() > 0
            // A partition paused under a previous assignment would never
            // deliver to its new worker.
            && let Err(e) = consumer.resume(assigned)
        {
            tracing::warn!(group = %self.group, error = %e, "cannot resume newly assigned partitions");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                let at = ids::now_ms();
                let mut status = self.status();
                for elem in offsets.elements() {
                    if let Offset::Offset(o) = elem.offset() {
                        status
                            .committed
                            .insert((elem.topic().to_owned(), elem.partition()), (o, at));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(group = %self.group, error = %e, "offset commit failed; will retry with the next commit");
                locked(&self.pending).dirty = true;
            }
        }
    }
}

fn refs(tpl: &TopicPartitionList) -> Vec<PartitionRef> {
    tpl.elements()
        .iter()
        .map(|e| PartitionRef {
            topic: e.topic().to_owned(),
            partition: e.partition(),
        })
        .collect()
}

fn one(at: &PartitionRef) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&at.topic, at.partition);
    tpl
}

/// Runs a member of the group until `shutdown` (or until a task of it
/// dies): the poll thread, the partitions' workers, the heartbeats and the
/// orphaned-partition watch.
pub(crate) async fn run<D: Dispatch>(
    runtime: Arc<ConsumerRuntime<D>>,
    shutdown: CancellationToken,
) -> Result<RunSummary, RuntimeError> {
    // Cancelled as well when a task of this runtime dies, so that every
    // worker lets go of what it waits for.
    let shutdown = shutdown.child_token();
    ensure_own_topics(&runtime).await;
    let pending = Arc::new(Mutex::new(Pending::default()));
    let status = Arc::new(Mutex::new(MemberStatus::default()));
    let member = Member {
        group: runtime.group.clone(),
        pending: pending.clone(),
        status: status.clone(),
        partitions: Mutex::new(HashMap::new()),
        totals: Mutex::new(Totals::default()),
        drain_timeout: runtime.drain_timeout,
    };
    let client_id = format!("{}-{}", runtime.service, std::process::id());
    let consumer: BaseConsumer<Member> = runtime
        .config
        .consumer_config(&runtime.group, &client_id)
        .create_with_context(member)
        .map_err(RuntimeError::Create)?;
    let topics: Vec<&str> = runtime.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| RuntimeError::Subscribe {
            topics: runtime.topics.clone(),
            source,
        })?;
    tracing::info!(service = %runtime.service, group = %runtime.group, topics = ?runtime.topics, "consumer started");
    let identity = MemberIdentity {
        group: runtime.group.clone(),
        member: format!("{client_id}-{}", ids::new_span_id()),
        service: runtime.service.clone(),
        interval: runtime.heartbeat.unwrap_or(DEFAULT_HEARTBEAT_INTERVAL),
    };
    let beats = CancellationToken::new();
    let mut beating = runtime.heartbeat.map(|_| {
        tokio::spawn(beat_until(
            runtime.producer.clone(),
            identity.clone(),
            status.clone(),
            beats.clone(),
        ))
    });
    let rejoin = Arc::new(AtomicBool::new(false));
    let mut watching = runtime.heartbeat.map(|_| {
        tokio::spawn(watch_orphans(
            runtime.config.clone(),
            identity.clone(),
            runtime.topics.clone(),
            status.clone(),
            rejoin.clone(),
            beats.clone(),
        ))
    });

    let shop = Arc::new(Workshop {
        pending,
        status: status.clone(),
        holding: Arc::new(Holding::default()),
        handlers: Arc::new(Semaphore::new(runtime.partition_concurrency)),
    });
    let poller = Poller {
        runtime: runtime.clone(),
        shop,
        consumer,
        shutdown: shutdown.clone(),
        rejoin,
        tokio: tokio::runtime::Handle::current(),
        last_error_log: None,
        refetched: std::collections::HashSet::new(),
    };
    let (done, finished) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("kausal-poll-{}", runtime.group))
        .spawn(move || {
            let _ = done.send(poller.poll_until_shutdown());
        });
    let mut failure = None;
    let ended = match thread {
        Err(e) => Err(RuntimeError::TaskDied {
            task: "the poll thread".to_owned(),
            reason: format!("could not start: {e}"),
        }),
        Ok(_) => {
            let mut finished = finished;
            loop {
                tokio::select! {
                    ended = &mut finished => break ended.unwrap_or_else(|_| Err(RuntimeError::TaskDied {
                        task: "the poll thread".to_owned(),
                        reason: "panicked".to_owned(),
                    })),
                    () = tokio::time::sleep(Duration::from_millis(200)) => {
                        if failure.is_none()
                            && let Err(e) = helper_alive(&mut beating, "the heartbeat task")
                                .and_then(|()| helper_alive(&mut watching, "the orphaned-partition watch"))
                        {
                            failure = Some(e);
                            shutdown.cancel();
                        }
                    }
                }
            }
        }
    };

    beats.cancel();
    if let Some(task) = watching {
        let _ = task.await;
    }
    if let Some(task) = beating {
        let _ = task.await;
        let last = locked(&status).beat(&identity, MemberState::Stopped);
        // Bounded: with the broker gone, a stop must not wait for the
        // producer's delivery timeout.
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            publish_beat(&runtime.producer, &last),
        )
        .await;
    }
    let producer = runtime.producer.clone();
    let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    let summary = match (failure, ended) {
        (Some(e), _) | (None, Err(e)) => {
            tracing::error!(group = %runtime.group, error = %e, "a task of the consumer runtime died; stopping: records not settled stay uncommitted and will be redelivered");
            return Err(e);
        }
        (None, Ok(summary)) => summary,
    };
    tracing::info!(group = %runtime.group, processed = summary.processed, dead_lettered = summary.dead_lettered, "consumer stopped");
    Ok(summary)
}

/// The receipts topic (receipts are awaited before a commit, so it must
/// exist) and the heartbeats topic.
async fn ensure_own_topics<D>(runtime: &ConsumerRuntime<D>) {
    let mut own_topics = Vec::new();
    if runtime.receipts {
        own_topics.push(crate::admin::TopicSpec::new(
            crate::receipt::RECEIPTS_TOPIC,
            3,
        ));
    }
    if runtime.heartbeat.is_some() {
        own_topics.push(crate::admin::TopicSpec::new(HEARTBEATS_TOPIC, 1));
    }
    if own_topics.is_empty() {
        return;
    }
    let ensured = match crate::admin::Admin::new(&runtime.config) {
        Ok(admin) => admin
            .ensure_topics(&own_topics)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = ensured {
        tracing::error!(error = %e, topics = ?own_topics.iter().map(|t| &t.name).collect::<Vec<_>>(), "cannot create the runtime's topics; records wait until the receipts topic exists (create it, or disable receipts)");
    }
}

/// The poll thread's state.
struct Poller<D> {
    runtime: Arc<ConsumerRuntime<D>>,
    shop: Arc<Workshop>,
    consumer: BaseConsumer<Member>,
    shutdown: CancellationToken,
    rejoin: Arc<AtomicBool>,
    tokio: tokio::runtime::Handle,
    last_error_log: Option<Instant>,
    /// Partitions for which a re-fetch of records already handed over was
    /// noticed (logged once each).
    refetched: std::collections::HashSet<PartitionRef>,
}

impl<D: Dispatch> Poller<D> {
    fn member(&self) -> &Member {
        self.consumer.context()
    }

    /// The loop of the poll thread, then the graceful stop: drain every
    /// worker, commit, leave.
    fn poll_until_shutdown(mut self) -> Result<RunSummary, RuntimeError> {
        let topics: Vec<String> = self.runtime.topics.clone();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let mut last_commit = Instant::now();
        let mut last_housekeeping = Instant::now();
        while !self.shutdown.is_cancelled() {
            if self.rejoin.swap(false, Ordering::Relaxed) {
                // Leaving drains and commits (the revoke callback);
                // subscribing again joins a fresh generation, in which the
                // orphaned partitions are assigned.
                self.consumer.unsubscribe();
                if let Err(e) = self.consumer.subscribe(&topics) {
                    tracing::error!(group = %self.runtime.group, error = %e, "cannot rejoin the group; retrying at the next check");
                }
            }
            let wait = if self.any_overflow() {
                HOUSEKEEPING
            } else {
                POLL_WAIT
            };
            let mut polled = 0;
            let mut next = self.consumer.poll(wait);
            while let Some(received) = next {
                match received {
                    Ok(message) => {
                        let event = IncomingEvent::from_message(&message);
                        drop(message);
                        self.route(event);
                    }
                    Err(e) => {
                        // Transport errors and unknown topics are reported
                        // here and recover by themselves; log them without
                        // flooding.
                        if self
                            .last_error_log
                            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                        {
                            tracing::warn!(group = %self.runtime.group, error = %e, "consumer error");
                            self.last_error_log = Some(Instant::now());
                        }
                    }
                }
                polled += 1;
                if polled >= POLL_BURST || last_housekeeping.elapsed() >= HOUSEKEEPING {
                    break;
                }
                next = self.consumer.poll(Duration::ZERO);
            }
            last_housekeeping = Instant::now();
            self.feed();
            if self.reap_failed() {
                self.shutdown.cancel();
                break;
            }
            if last_commit.elapsed() >= self.runtime.commit_interval {
                self.commit_async();
                last_commit = Instant::now();
            }
        }
        // Graceful stop (or a task died): every worker finishes the records
        // in hand and settles; then the final commit.
        self.shutdown.cancel();
        self.member().drain(None);
        self.member().commit_final(&self.consumer, None);
        let ended = {
            let mut totals = locked(&self.member().totals);
            match totals.failure.take() {
                Some(failure) => Err(failure),
                None => Ok(totals.summary.clone()),
            }
        };
        // Leaving the group revokes what is left: nothing to drain.
        self.consumer.unsubscribe();
        ended
    }

    /// Hands `event` to its partition's worker (started on its first
    /// record), or keeps it in the overflow and pauses the partition.
    fn route(&mut self, event: IncomingEvent) {
        let at = PartitionRef {
            topic: event.topic.clone(),
            partition: event.partition,
        };
        let offset = event.offset;
        if let Some(next) = self.hand_over(&at, event)
            && self.refetched.insert(at.clone())
        {
            tracing::debug!(topic = %at.topic, partition = at.partition, offset, next, "a record handed over already was fetched again (after a pause); not handed over twice");
        }
    }

    /// [`Self::route`]'s work; `Some(next offset)` when `event` was handed
    /// over already.
    fn hand_over(&self, at: &PartitionRef, event: IncomingEvent) -> Option<i64> {
        let mut partitions = locked(&self.member().partitions);
        let partition = partitions
            .entry(at.clone())
            .or_insert_with(|| self.start_worker(at));
        if let Some(next) = partition.next_offset
            && event.offset < next
        {
            return Some(next);
        }
        partition.next_offset = Some(event.offset + 1);
        let event = if partition.overflow.is_empty() {
            match partition.records.try_send(event) {
                Ok(()) => return None,
                Err(mpsc::error::TrySendError::Full(event))
                | Err(mpsc::error::TrySendError::Closed(event)) => event,
            }
        } else {
            event
        };
        partition.overflow_bytes += event.size();
        partition.overflow.push_back(event);
        if partition.overflow.len() >= OVERFLOW_RECORDS
            || partition.overflow_bytes >= OVERFLOW_BYTES
        {
            self.pause(at, partition);
        }
        None
    }

    /// Stops fetching a partition whose worker is behind.
    fn pause(&self, at: &PartitionRef, partition: &mut Partition) {
        if partition.paused {
            return;
        }
        match self.consumer.pause(&one(at)) {
            Ok(()) => {
                partition.paused = true;
                locked(&self.shop.status).paused.insert(at.clone());
            }
            Err(e) => {
                tracing::warn!(group = %self.runtime.group, error = %e, "cannot pause a partition whose worker is behind; its records wait in memory")
            }
        }
    }

    fn start_worker(&self, at: &PartitionRef) -> Partition {
        let capacity = self
            .runtime
            .dispatch
            .batch_limits()
            .0
            .saturating_mul(2)
            .max(32);
        let (records, receiver) = mpsc::channel(capacity);
        let stop = self.shutdown.child_token();
        let live = Arc::new(AtomicBool::new(true));
        let stalls = Arc::new(AtomicUsize::new(0));
        let seat = Seat {
            partition: at.clone(),
            records: receiver,
            stop: stop.clone(),
            live: live.clone(),
            stalls: stalls.clone(),
        };
        let task = self
            .tokio
            .spawn(work(self.runtime.clone(), self.shop.clone(), seat));
        Partition {
            records,
            overflow: VecDeque::new(),
            overflow_bytes: 0,
            paused: false,
            next_offset: None,
            stop,
            live,
            stalls,
            task,
        }
    }

    fn any_overflow(&self) -> bool {
        locked(&self.member().partitions)
            .values()
            .any(|p| !p.overflow.is_empty())
    }

    /// Moves overflowed records into their workers' channels; pauses a
    /// partition whose worker waits, resumes one whose worker is back and
    /// whose overflow is gone.
    fn feed(&self) {
        let mut partitions = locked(&self.member().partitions);
        for (at, partition) in partitions.iter_mut() {
            let waiting = partition.stalls.load(Ordering::Acquire) > 0;
            if waiting {
                self.pause(at, partition);
            }
            while let Some(event) = partition.overflow.pop_front() {
                let size = event.size();
                match partition.records.try_send(event) {
                    Ok(()) => partition.overflow_bytes -= size,
                    Err(mpsc::error::TrySendError::Full(event))
                    | Err(mpsc::error::TrySendError::Closed(event)) => {
                        partition.overflow.push_front(event);
                        break;
                    }
                }
            }
            let drained = partition.overflow.len() < OVERFLOW_RECORDS / 2
                && partition.overflow_bytes < OVERFLOW_BYTES / 2;
            if partition.paused && !waiting && drained {
                match self.consumer.resume(&one(at)) {
                    Ok(()) => {
                        partition.paused = false;
                        locked(&self.shop.status).paused.remove(at);
                    }
                    Err(e) => {
                        tracing::warn!(group = %self.runtime.group, error = %e, "cannot resume a partition; retrying")
                    }
                }
            }
        }
    }

    /// True when a worker ended by itself: it only does when a task of the
    /// runtime died (or it panicked), which stops the member.
    fn reap_failed(&self) -> bool {
        let ended: Vec<(PartitionRef, Partition)> = {
            let mut partitions = locked(&self.member().partitions);
            let done: Vec<PartitionRef> = partitions
                .iter()
                .filter(|(_, p)| p.task.is_finished())
                .map(|(at, _)| at.clone())
                .collect();
            done.into_iter()
                .filter_map(|at| partitions.remove(&at).map(|p| (at, p)))
                .collect()
        };
        if ended.is_empty() {
            return false;
        }
        for (at, partition) in ended {
            partition.live.store(false, Ordering::Release);
            let result = match futures::executor::block_on(partition.task) {
                Ok(Ok(_)) if !self.shutdown.is_cancelled() => Ok(Err(RuntimeError::TaskDied {
                    task: format!("the worker of partition {}/{}", at.topic, at.partition),
                    reason: "stopped by itself".to_owned(),
                })),
                other => other,
            };
            self.member().absorb(&at, result);
        }
        true
    }

    /// Commits settled offsets without waiting for the broker (the answer
    /// comes to the commit callback).
    fn commit_async(&self) {
        let mut pending = locked(&self.shop.pending);
        if !pending.dirty {
            return;
        }
        let tpl = pending.to_list(None);
        if tpl.count() == 0 {
            pending.dirty = false;
            return;
        }
        match self.consumer.commit(&tpl, CommitMode::Async) {
            Ok(()) => pending.dirty = false,
            Err(e) => {
                tracing::warn!(group = %self.runtime.group, error = %e, "offset commit failed; will retry")
            }
        }
    }
}
