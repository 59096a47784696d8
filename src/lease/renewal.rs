//! The renewal service: one task per [`crate::Client`] keeps every lease it
//! holds, so that holding 100,000 leases costs one timer and a few pipelined
//! round trips per tick, not a task, a timer and a round trip per lease.
//!
//! For each lease it owns the [`LeaseState`]: `Held` with the current safety
//! deadline, then exactly one of `Lost` or `Released`.
//! - Renewals fall due every `renew_every` after the last confirmed one; all
//!   leases due within [`COALESCE`] go out together (one pipeline per node).
//! - A failed or unanswered renewal is retried every `retry_every`, never past
//!   the deadline; its outcome is unknown, so the deadline does not move.
//! - At the deadline without confirmation, or at the first refusal, the lease
//!   is lost — at the deadline exactly, even while a renewal is in flight.
//! - Stopping a lease (release) waits until no renewal of it is in flight, so
//!   a renewal never lands after the release (redis-semaphore#205).

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, mpsc, watch};

use crate::backend::{Backend, Kind, RenewItem, RenewReply};
use crate::config::LeaseConfig;
use crate::deadline;
use crate::error::Result;
use crate::token::{FencingToken, HolderId};

use super::{LeaseState, LostReason};

/// Renewals due within this window of each other go out in one batch.
pub const COALESCE: Duration = Duration::from_millis(20);

/// What the guard and the service share about one lease, so that releasing it
/// takes no round trip through the service unless a renewal is in flight.
#[derive(Debug)]
pub(crate) struct Shared {
    /// IDLE, IN_FLIGHT or STOPPED.
    flag: AtomicU8,
    /// Signalled when a renewal that was in flight at stop time has finished.
    landed: Notify,
    /// The lease's state: the service publishes `Held` and `Lost`, the guard
    /// `Released`.
    pub(crate) state: watch::Sender<LeaseState>,
}

const IDLE: u8 = 0;
const IN_FLIGHT: u8 = 1;
const STOPPED: u8 = 2;

impl Shared {
    pub(crate) fn new(state: watch::Sender<LeaseState>) -> Shared {
        Shared {
            flag: AtomicU8::new(IDLE),
            landed: Notify::new(),
            state,
        }
    }

    /// Stops renewal; resolves once no renewal of this lease is in flight.
    ///
    /// A renewal in flight never outlives the lease's safety deadline (the
    /// service abandons it there), so `bound` — the TTL — is only a guard
    /// against a lost notification: `release()` must never hang.
    pub(crate) async fn stop(&self, bound: Duration) {
        if self.flag.swap(STOPPED, Ordering::AcqRel) == IN_FLIGHT
            && tokio::time::timeout(bound, self.landed.notified())
                .await
                .is_err()
        {
            tracing::warn!("a renewal in flight did not land within {bound:?}; releasing anyway");
        }
    }

    fn stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire) == STOPPED
    }

    /// Marks the end of a renewal; wakes a guard waiting in `stop()`.
    /// Returns true when the guard stopped the lease meanwhile.
    fn landed(&self) -> bool {
        let stopped = self
            .flag
            .compare_exchange(IN_FLIGHT, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_err();
        if stopped {
            self.landed.notify_one();
        }
        stopped
    }
}

/// A lease handed to the service.
pub(crate) struct Entry {
    pub kind: Kind,
    pub name: String,
    pub holder: HolderId,
    pub config: LeaseConfig,
    pub token: FencingToken,
    pub value: String,
    /// When the acquiring request was sent.
    pub sent: Instant,
    /// How long Redis keeps the lease from `sent` without a renewal: the TTL,
    /// or the claim window of a lease handed over on release.
    pub first_ttl: Duration,
    pub shared: Arc<Shared>,
}

struct Kept {
    e: Entry,
    due: Instant,
    deadline: Instant,
    /// The instant under which it sits in the schedule.
    at: Instant,
    in_flight: bool,
    last_error: String,
    /// The guard was dropped: release once no renewal is in flight.
    abandon: bool,
    /// Lost at its deadline while a renewal was in flight: out of the
    /// schedule, dropped when that renewal lands (which wakes a guard waiting
    /// to release).
    lost: bool,
}

enum Cmd {
    Add(u64, Entry),
    /// The guard was dropped: stop, then release in the background.
    Abandon(u64),
    /// Redis may have restarted (its connection was re-established at this
    /// instant): renew everything now. A refused renewal there records our
    /// TTL in the server's quarantine (renew.lua), so that contenders with
    /// shorter TTLs wait for us; and we learn of a loss as early as possible.
    RenewAll(Instant),
}

/// A handle to one client's renewal service.
#[derive(Clone, Debug)]
pub(crate) struct Renewals {
    tx: mpsc::UnboundedSender<Cmd>,
    next_id: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Renewals {
    /// Starts the service for `backend` (needs a runtime).
    pub(crate) fn start(backend: Backend) -> Renewals {
        let (tx, rx) = mpsc::unbounded_channel();
        for mut reconnects in backend.reconnects() {
            let tx = tx.downgrade();
            tokio::spawn(async move {
                while reconnects.changed().await.is_ok() {
                    let at = Instant::now();
                    let Some(tx) = tx.upgrade() else { return };
                    if tx.send(Cmd::RenewAll(at)).is_err() {
                        return;
                    }
                }
            });
        }
        tokio::spawn(run(backend, rx));
        Renewals {
            tx,
            next_id: Default::default(),
        }
    }

    /// Hands a freshly acquired lease over; returns its id.
    pub(crate) fn add(&self, e: Entry) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Err(mpsc::error::SendError(Cmd::Add(_, e))) = self.tx.send(Cmd::Add(id, e)) {
            // The service is gone (runtime shutting down): nothing will renew.
            e.shared
                .state
                .send_replace(LeaseState::Lost(LostReason::Unconfirmed(
                    "the renewal service has stopped".into(),
                )));
        }
        id
    }

    /// For `Drop`: stop and release in the background. Never blocks.
    pub(crate) fn abandon(&self, id: u64) {
        let _ = self.tx.send(Cmd::Abandon(id));
    }
}

type Batch =
    Pin<Box<dyn std::future::Future<Output = (Vec<u64>, Instant, Vec<Result<RenewReply>>)> + Send>>;

struct Service {
    backend: Backend,
    kept: HashMap<u64, Kept>,
    schedule: BTreeSet<(Instant, u64)>,
    in_flight: FuturesUnordered<Batch>,
    /// The latest reconnect: a lease whose acquisition or renewal was sent
    /// before it may have been confirmed by a server that is gone, and is
    /// renewed at once — also when it is added or its renewal lands after
    /// the reconnect (the model found both: docs/design.md, known issue 4).
    reconnected: Option<Instant>,
}

async fn run(backend: Backend, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut s = Service {
        backend,
        kept: HashMap::new(),
        schedule: BTreeSet::new(),
        in_flight: FuturesUnordered::new(),
        reconnected: None,
    };
    let mut open = true;
    loop {
        if !open && s.kept.is_empty() && s.in_flight.is_empty() {
            return;
        }
        let next = s.schedule.first().map(|(t, _)| *t);
        tokio::select! {
            cmd = rx.recv(), if open => match cmd {
                Some(c) => s.command(c),
                None => open = false,
            },
            Some((ids, sent, replies)) = s.in_flight.next(), if !s.in_flight.is_empty() => {
                s.apply(ids, sent, replies);
            }
            _ = sleep_until_opt(next) => s.tick(),
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Service {
    fn reschedule(&mut self, id: u64) {
        let Some(k) = self.kept.get_mut(&id) else {
            return;
        };
        self.schedule.remove(&(k.at, id));
        k.at = if k.in_flight {
            k.deadline
        } else {
            k.due.min(k.deadline)
        };
        self.schedule.insert((k.at, id));
    }

    fn remove(&mut self, id: u64) -> Option<Kept> {
        let k = self.kept.remove(&id)?;
        self.schedule.remove(&(k.at, id));
        Some(k)
    }

    /// Removes `id` for good, answering whoever waits and releasing if abandoned.
    fn finish(&mut self, id: u64) {
        let Some(Kept {
            e,
            deadline,
            abandon,
            ..
        }) = self.remove(id)
        else {
            return;
        };
        let held = matches!(&*e.shared.state.borrow(), LeaseState::Held { .. });
        if abandon && held {
            crate::telemetry::released(&e.name);
            // Give the lease back now rather than making the next holder wait
            // out the TTL.
            let backend = self.backend.clone();
            self.backend.cleanups().spawn(async move {
                let _ = tokio::time::timeout_at(
                    deadline.into(),
                    backend.release(&crate::backend::Held {
                        kind: e.kind,
                        name: &e.name,
                        holder: &e.holder,
                    }),
                )
                .await;
                e.shared.state.send_replace(LeaseState::Released);
            });
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Add(id, e) => {
                let cfg = &e.config;
                let deadline = deadline::safety_deadline(e.sent, e.first_ttl);
                // A short first period (a grant's claim window) is renewed
                // within its first third, like any TTL.
                let mut due =
                    deadline::next_renewal(e.sent, cfg.renew_every().min(e.first_ttl / 3));
                if self.reconnected.is_some_and(|r| e.sent < r) {
                    due = Instant::now();
                }
                self.kept.insert(
                    id,
                    Kept {
                        e,
                        due,
                        deadline,
                        at: due,
                        in_flight: false,
                        last_error: "none".into(),
                        abandon: false,
                        lost: false,
                    },
                );
                self.reschedule(id);
            }
            Cmd::RenewAll(at) => {
                self.reconnected = Some(self.reconnected.map_or(at, |r| r.max(at)));
                let now = Instant::now();
                let ids: Vec<u64> = self.kept.keys().copied().collect();
                for id in ids {
                    if let Some(k) = self.kept.get_mut(&id)
                        && !k.in_flight
                        && !k.lost
                    {
                        k.due = now;
                        self.reschedule(id);
                    }
                }
            }
            Cmd::Abandon(id) => {
                if let Some(k) = self.kept.get_mut(&id) {
                    k.abandon = true;
                    if !k.in_flight {
                        self.finish(id);
                    }
                }
            }
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        // Losses first: at the deadline, even with a renewal in flight.
        let expired: Vec<u64> = self
            .schedule
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .filter(|id| self.kept.get(id).is_some_and(|k| k.deadline <= now))
            .collect();
        for id in expired {
            let Some(k) = self.kept.get_mut(&id) else {
                continue;
            };
            if k.e.shared.stopped() {
                // Released by its guard meanwhile: nothing to report.
                if !k.in_flight {
                    self.remove(id);
                }
                continue;
            }
            tracing::warn!(
                lease = %k.e.name,
                "lost: no renewal confirmed before the safety deadline ({})",
                k.last_error
            );
            crate::telemetry::lost(&k.e.name, "unconfirmed");
            k.e.shared
                .state
                .send_replace(LeaseState::Lost(LostReason::Unconfirmed(
                    k.last_error.clone(),
                )));
            if k.in_flight {
                // Keep it until that renewal lands, so that a guard waiting
                // in release() is told (the shared flag is still IN_FLIGHT).
                k.lost = true;
                let at = k.at;
                self.schedule.remove(&(at, id));
            } else {
                self.finish(id);
            }
        }
        // Everything due now or within the coalescing window goes out together.
        let horizon = now + COALESCE;
        let due: Vec<u64> = self
            .schedule
            .iter()
            .take_while(|(t, _)| *t <= horizon)
            .map(|(_, id)| *id)
            .filter(|id| {
                self.kept
                    .get(id)
                    .is_some_and(|k| !k.in_flight && k.due <= horizon)
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let mut owned = Vec::with_capacity(due.len());
        let mut first_deadline = now + Duration::from_secs(86_400);
        let mut ids = Vec::with_capacity(due.len());
        for id in due {
            let Some(k) = self.kept.get_mut(&id) else {
                continue;
            };
            if k.e
                .shared
                .flag
                .compare_exchange(IDLE, IN_FLIGHT, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Released by its guard: forget it quietly.
                self.remove(id);
                continue;
            }
            {
                k.in_flight = true;
                first_deadline = first_deadline.min(k.deadline);
                owned.push((
                    k.e.kind,
                    k.e.name.clone(),
                    k.e.holder.clone(),
                    k.e.config.ttl(),
                    k.e.token,
                    k.e.value.clone(),
                ));
            }
            self.reschedule(id);
            ids.push(id);
        }
        if ids.is_empty() {
            return;
        }
        let backend = self.backend.clone();
        self.in_flight.push(Box::pin(async move {
            let items: Vec<RenewItem<'_>> = owned
                .iter()
                .map(|(kind, name, holder, ttl, token, value)| RenewItem {
                    kind: *kind,
                    name,
                    holder,
                    ttl: *ttl,
                    repair: Some((*token, value.as_str())),
                })
                .collect();
            let replies =
                match tokio::time::timeout_at(first_deadline.into(), backend.renew_many(&items))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => items
                        .iter()
                        .map(|_| {
                            Err(crate::Error::Timeout {
                                op: "renew",
                                after: first_deadline.saturating_duration_since(now),
                            })
                        })
                        .collect(),
                };
            (ids, now, replies)
        }));
    }

    fn apply(&mut self, ids: Vec<u64>, sent: Instant, replies: Vec<Result<RenewReply>>) {
        let now = Instant::now();
        crate::telemetry::renewed(now.saturating_duration_since(sent));
        for (id, reply) in ids.into_iter().zip(replies) {
            let Some(k) = self.kept.get_mut(&id) else {
                continue;
            };
            k.in_flight = false;
            if k.e.shared.landed() {
                // The guard stopped it (release) and has been woken.
                self.remove(id);
                continue;
            }
            if k.lost {
                self.finish(id);
                continue;
            }
            let still_ours = !k.abandon;
            match reply {
                Ok(RenewReply::Renewed) => {
                    let cfg = &k.e.config;
                    k.deadline = deadline::safety_deadline(sent, cfg.ttl());
                    k.due = deadline::next_renewal(sent, cfg.renew_every());
                    if self.reconnected.is_some_and(|r| sent < r) {
                        k.due = now;
                    }
                    if still_ours {
                        k.e.shared.state.send_replace(LeaseState::Held {
                            token: k.e.token,
                            deadline: k.deadline,
                        });
                    }
                }
                Ok(RenewReply::Refused { reason }) => {
                    tracing::warn!(lease = %k.e.name, "lost: {reason}");
                    crate::telemetry::lost(&k.e.name, "refused");
                    k.e.shared
                        .state
                        .send_replace(LeaseState::Lost(LostReason::Refused(reason)));
                    k.abandon = false;
                    self.finish(id);
                    continue;
                }
                Err(e) => {
                    k.last_error = e.to_string();
                    tracing::debug!(lease = %k.e.name, "renewal failed, retrying: {e}");
                    k.due = deadline::retry_at(now, k.e.config.retry_every(), k.deadline);
                }
            }
            if still_ours {
                self.reschedule(id);
            } else {
                self.finish(id);
            }
        }
    }
}
