//! [`Ledger`]: posting an entry and reading an account, over the event
//! store. Not HTTP: the API in [`crate::http`] calls it, and so could a
//! consumer.
//!
//! Posting is one multi-stream append ([`EventStore::append_many`]) of:
//! the entry's stream (`EntryPosted`, with its outbox row to
//! `ledger.entry.v1` keyed by entry id), one stream per account touched
//! (`LegPosted` per leg, each decided by the [`Account`] aggregate from the
//! state it was loaded at), and the idempotency key's stream (the request
//! and the answer; see [`crate::idempotency`]). Every stream is appended at
//! the version it was loaded at, so if anything moved in between — another
//! entry on a shared account, a racing request with the same key — the
//! store writes nothing and the posting loads, decides and tries again, at
//! most `max_conflict_retries` times with a random, growing wait
//! ([`kausal_eventsource::repository::retry_wait`]); then
//! [`PostError::Contended`].

use kausal_contracts::ledger::{
    AccountBalance, AccountVersion, EntryPosted, LEDGER_ENTRIES_TOPIC, PostEntryRequest,
    PostEntryResponse,
};
use kausal_core::{CorrelationId, EventId, TraceParent};
use kausal_eventsource::repository::{DEFAULT_MAX_RETRIES, retry_wait};
use kausal_eventsource::{Aggregate, CommandContext, EventStore, Repository, StreamEvents};

use crate::account::{Account, AccountError, PostLegs};
use crate::entry::{AlreadyPosted, Entry, EntryRecord};
use crate::idempotency::{IdempotencyEvent, IdempotencyKey, IdempotencyRecord, KeyUsed};

/// The status of a posted entry's answer.
const CREATED: u16 = 201;

/// Where a posting comes from: stored with every event it appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub correlation_id: CorrelationId,
    /// The event the caller was handling (`X-Causation-ID`).
    pub causation_id: Option<EventId>,
    /// The caller's span (the API's SERVER span): the store's spans are
    /// its children, and the appended events carry the append span's
    /// context.
    pub traceparent: Option<TraceParent>,
}

/// What a posting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// The entry was posted now; this is the answer stored with its key.
    Created(KeyUsed),
    /// The key was used before with this request: its first answer.
    Replayed(KeyUsed),
}

/// Why an entry was not posted. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error(
        "Idempotency-Key {} was first used with a different request body; an idempotency \
         key names one request: send the first body again to get its answer, or use a new key \
         for a new entry",
        key.as_str()
    )]
    KeyReused { key: IdempotencyKey },
    #[error(transparent)]
    AlreadyPosted(AlreadyPosted),
    /// An account refused its legs (currency, overflow).
    #[error(transparent)]
    Refused(AccountError),
    #[error(
        "the accounts of this entry kept changing under it ({retries} retries): other entries \
         are posting to them right now; retry this request later with the same Idempotency-Key"
    )]
    Contended { retries: u32 },
    #[error("the ledger's event store failed: {0}")]
    Store(#[source] kausal_eventsource::Error),
}

impl PostError {
    /// A stable name for the `error.type` span attribute.
    pub fn error_type(&self) -> String {
        match self {
            Self::KeyReused { .. } => "IdempotencyKeyReused".to_owned(),
            Self::AlreadyPosted(_) => "EntryAlreadyPosted".to_owned(),
            Self::Refused(_) => "AccountRefused".to_owned(),
            Self::Contended { .. } => "Contended".to_owned(),
            Self::Store(e) => e.error_type(),
        }
    }
}

/// One try's outcome, inside [`Ledger::post`].
enum Attempt {
    Done(Posted),
    Conflict,
    Failed(PostError),
}

impl From<kausal_eventsource::Error> for Attempt {
    fn from(e: kausal_eventsource::Error) -> Self {
        Self::Failed(PostError::Store(e))
    }
}

/// Accounts kept loaded in memory (see `Repository::with_cache`).
const ACCOUNT_CACHE: usize = 10_000;

/// The ledger over an event store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ledger {
    events: EventStore,
    accounts: Repository<Account>,
    entries: Repository<EntryRecord>,
    keys: Repository<IdempotencyRecord>,
    max_conflict_retries: u32,
}

impl Ledger {
    pub fn new(events: EventStore) -> Self {
        Self {
            // Accounts are read on every posting and the busiest (the
            // merchant's) gets a posting per order: without the cache each
            // load would replay its whole history.
            accounts: Repository::new(events.clone()).with_cache(ACCOUNT_CACHE),
            entries: Repository::new(events.clone()),
            keys: Repository::new(events.clone()),
            events,
            max_conflict_retries: DEFAULT_MAX_RETRIES,
        }
    }

    /// How many conflicts a posting retries before it gives up (default
    /// [`DEFAULT_MAX_RETRIES`]).
    pub fn with_max_conflict_retries(mut self, retries: u32) -> Self {
        self.max_conflict_retries = retries;
        self
    }

    pub fn events(&self) -> &EventStore {
        &self.events
    }

    /// Posts `entry` (parsed from `request`) under `key`, or returns the
    /// answer `key` was given before if it was used with this request.
    pub async fn post(
        &self,
        key: &IdempotencyKey,
        request: &PostEntryRequest,
        entry: &Entry,
        origin: &Origin,
    ) -> Result<Posted, PostError> {
        let mut conflicts = 0;
        loop {
            match self.try_post(key, request, entry, origin).await {
                Attempt::Done(posted) => return Ok(posted),
                Attempt::Failed(e) => return Err(e),
                Attempt::Conflict if conflicts < self.max_conflict_retries => {
                    conflicts += 1;
                    tracing::debug!(
                        entry = %entry.id,
                        conflicts,
                        "a stream of the entry moved while deciding; loading and deciding again"
                    );
                    tokio::time::sleep(retry_wait(conflicts)).await;
                }
                Attempt::Conflict => {
                    return Err(PostError::Contended { retries: conflicts });
                }
            }
        }
    }

    /// Loads every stream the entry touches, decides, and appends them all
    /// at the versions loaded.
    async fn try_post(
        &self,
        key: &IdempotencyKey,
        request: &PostEntryRequest,
        entry: &Entry,
        origin: &Origin,
    ) -> Attempt {
        let parent = origin.traceparent;
        let (record, key_version) = match self.keys.load(key.as_str(), parent).await {
            Ok(loaded) => loaded,
            Err(e) => return e.into(),
        };
        if let Some(used) = record.used {
            return if used.request == *request {
                Attempt::Done(Posted::Replayed(used))
            } else {
                Attempt::Failed(PostError::KeyReused { key: key.clone() })
            };
        }
        match self.decide(key, key_version, request, entry, origin).await {
            Ok((parts, used)) => match self.events.append_many(parts, parent).await {
                Ok(_) => Attempt::Done(Posted::Created(used)),
                Err(kausal_eventsource::Error::Conflict { .. }) => Attempt::Conflict,
                Err(e) => e.into(),
            },
            Err(attempt) => attempt,
        }
    }

    /// The streams to append and the answer they make.
    async fn decide(
        &self,
        key: &IdempotencyKey,
        key_version: i64,
        request: &PostEntryRequest,
        entry: &Entry,
        origin: &Origin,
    ) -> Result<(Vec<StreamEvents>, KeyUsed), Attempt> {
        let parent = origin.traceparent;
        let context = CommandContext {
            correlation_id: origin.correlation_id.clone(),
            causation_id: origin.causation_id,
            traceparent: parent,
            outbox: None,
        };
        let mut parts = Vec::new();
        let mut event_ids = Vec::new();

        let (record, entry_version) = self.entries.load(&entry.id, parent).await?;
        let posted = EntryPosted {
            entry_id: entry.id.clone(),
            description: entry.description.clone(),
            currency: entry.currency.clone(),
            legs: entry.legs.clone(),
            order_id: entry.order_id.clone(),
            correlation_id: origin.correlation_id.to_string(),
            posted_at: kausal_contracts::now_rfc3339(),
        };
        let decided = record
            .decide(&posted)
            .map_err(|e| Attempt::Failed(PostError::AlreadyPosted(e)))?;
        let published = context
            .clone()
            .publish_to(LEDGER_ENTRIES_TOPIC, Some(entry.id.clone()));
        parts.push(Repository::<EntryRecord>::stage(
            &entry.id,
            entry_version,
            &decided,
            &published,
        )?);

        let mut accounts = Vec::new();
        for (account, legs) in entry.by_account() {
            let (state, version) = self.accounts.load(account, parent).await?;
            let decided = state
                .decide(&PostLegs {
                    account: account.to_owned(),
                    entry_id: entry.id.clone(),
                    currency: entry.currency.clone(),
                    legs,
                })
                .map_err(|e| Attempt::Failed(PostError::Refused(e)))?;
            accounts.push(AccountVersion {
                account: account.to_owned(),
                version: version + decided.len() as i64,
            });
            parts.push(Repository::<Account>::stage(
                account, version, &decided, &context,
            )?);
        }
        for part in &parts {
            event_ids.extend(part.events.iter().map(|e| e.event_id.to_string()));
        }

        let used = KeyUsed {
            request: request.clone(),
            status: CREATED,
            response: PostEntryResponse {
                entry_id: entry.id.clone(),
                correlation_id: origin.correlation_id.to_string(),
                accounts,
                event_ids,
            },
        };
        parts.push(Repository::<IdempotencyRecord>::stage(
            key.as_str(),
            key_version,
            &[IdempotencyEvent::KeyUsed(used.clone())],
            &context,
        )?);
        Ok((parts, used))
    }

    /// An account's balance and version; `None` for an account never
    /// posted to.
    pub async fn account(
        &self,
        id: &str,
        parent: Option<TraceParent>,
    ) -> Result<Option<AccountBalance>, kausal_eventsource::Error> {
        let (state, version) = self.accounts.load(id, parent).await?;
        if version == 0 {
            return Ok(None);
        }
        Ok(Some(AccountBalance {
            account: id.to_owned(),
            currency: state.currency.clone().unwrap_or_default(),
            debits: state.debits,
            credits: state.credits,
            balance: state.balance(),
            postings: state.postings,
            version,
        }))
    }
}
