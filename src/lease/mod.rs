//! Holding a lease: acquire (woken, not polling), keep (renewal, deadline,
//! loss signal), give back.
//!
//! # Life of a lease
//! 1. [`Client::lease`](crate::Client::lease) gives a [`LeaseBuilder`];
//!    [`acquire`](LeaseBuilder::acquire) waits in line (first come, first
//!    served, except on a quorum), woken when the holder releases and sleeping to the exact
//!    expiry when it crashed; [`try_acquire`](LeaseBuilder::try_acquire)
//!    tries once.
//! 2. The [`Lease`] guard is renewed in the background — one renewal task
//!    per client, for all its leases (`renewal.rs`) — every TTL/3. Each
//!    confirmed renewal moves the **safety deadline**: the send instant of
//!    the renewal plus the TTL minus a drift margin, on the local monotonic
//!    clock ([`crate::deadline`]). A renewal that fails or is not answered
//!    has an unknown outcome, so it moves nothing.
//! 3. It ends in exactly one of two ways, published on [`Lease::state`] and
//!    resolved by [`Lease::lost`]: [`LeaseState::Lost`] (a renewal was
//!    refused, or none was confirmed by the deadline) or
//!    [`LeaseState::Released`] ([`Lease::release`], or dropping the guard).
//!
//! # What is guaranteed, and what is not
//! - While [`Lease::is_held`] is true, no other holder of this name can have
//!   been granted the lease by a Redis that kept its data; after data loss
//!   that leasehold detects (a restart: see `docs/design.md` for each
//!   deployment), not before every earlier holder's deadline passed.
//! - [`Lease::lost`] resolves at the safety deadline at the latest, which is
//!   strictly before Redis could give the lease to anyone else.
//! - Not guaranteed: that your code *acts* on the loss in time. A process
//!   that is paused (GC, SIGSTOP, a swapped-out VM) cannot act on anything;
//!   that is why every acquisition carries a [`FencingToken`], which the
//!   resources you write to should check.
//! - Not guaranteed: liveness under a partition. A holder cut off from Redis
//!   loses its lease at its deadline; nobody else gets it before the TTL
//!   runs out in Redis.
//!
//! # Dropping and cancelling
//! - Dropping a [`Lease`] stops its renewal and releases it in the
//!   background (nothing blocks in `Drop`);
//!   [`Client::close`](crate::Client::close) waits for such clean-ups before
//!   a process exits.
//! - Dropping an `acquire` future gives up the place in line (in the
//!   background too).
//!
//! Semaphores ([`Permit`], [`SemaphoreBuilder`]) are the same machinery with
//! up to N holders: see [`Client::semaphore`](crate::Client::semaphore).

pub(crate) mod renewal;
mod semaphore;
mod waiter;

pub use semaphore::{Permit, SemaphoreBuilder};

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::backend::{Backend, Kind};
use crate::config::LeaseConfig;
use crate::error::{Error, Result};
use crate::token::{FencingToken, HolderId};
pub(crate) use renewal::Renewals;
use renewal::{Entry, Shared};

/// Where a lease stands, as seen by its holder: published by
/// [`Lease::state`] on every change. `Held` (with each new deadline), then
/// exactly one of `Lost` or `Released`, which are final.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseState {
    /// Ours until `deadline` unless renewed before.
    #[non_exhaustive]
    Held {
        /// The fencing token of this acquisition (it does not change on renewal).
        token: FencingToken,
        /// The safety deadline, on the local monotonic clock: strictly before
        /// Redis could give the lease to anyone else.
        deadline: Instant,
    },
    /// No longer ours; see the reason.
    Lost(LostReason),
    /// Given back by us.
    Released,
}

/// Why a lease was lost: what [`Lease::lost`] resolves with.
///
/// An `Error` (it has a message) so that it can be reported like one, but
/// it is no failure of leasehold: losing a lease is an expected event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LostReason {
    /// Redis answered a renewal: the lease is not ours any more.
    #[error("renewal refused: {0}")]
    Refused(String),
    /// No renewal was confirmed before the safety deadline; Redis may hand the
    /// lease to someone else soon after.
    #[error("no renewal confirmed before the safety deadline (last error: {0})")]
    Unconfirmed(String),
    /// The lease was released (explicitly or by dropping the guard).
    #[error("released")]
    Released,
}

/// Default TTL of a lease, a semaphore permit and an election's leader: 10 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// The lease machinery of one client: where leases live and who renews them.
/// Features (elections, the token cache) take this, not the whole client.
#[derive(Clone, Debug)]
pub(crate) struct Leases {
    backend: Backend,
    renewals: Renewals,
}

impl Leases {
    /// Starts the renewal service (needs a runtime).
    pub(crate) fn start(backend: Backend) -> Leases {
        let renewals = Renewals::start(backend.clone());
        Leases { backend, renewals }
    }

    pub(crate) fn lease(&self, name: impl Into<String>) -> LeaseBuilder {
        LeaseBuilder::new(self.backend.clone(), self.renewals.clone(), name.into())
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    pub(crate) async fn status(&self, name: &str) -> Result<crate::backend::LeaseStatus> {
        self.backend.status(name).await
    }
}

/// Settings of one acquisition; made by [`crate::Client::lease`].
///
/// The settings are checked when the lease is acquired (see
/// [`crate::config`] for the rules): every acquiring method can fail with
/// [`Error::BadName`] or [`Error::BadConfig`] before anything is sent.
#[derive(Clone, Debug)]
pub struct LeaseBuilder {
    backend: Backend,
    renewals: Renewals,
    kind: Kind,
    name: String,
    ttl: Duration,
    renew_every: Option<Duration>,
    value: String,
    min_validity: Duration,
    /// One of leasehold's own names (`cache#<name>`), not a user's.
    reserved: bool,
}

/// What [`Lease::release`] found.
///
/// Deliberately exhaustive: we either gave the lease back or it was no
/// longer ours; a caller may match both without a wildcard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// We held it and gave it back; a waiter has been woken.
    Released,
    /// It was no longer ours when we tried; nothing was changed in Redis.
    AlreadyLost(LostReason),
}

impl LeaseBuilder {
    pub(crate) fn new(backend: Backend, renewals: Renewals, name: String) -> Self {
        LeaseBuilder {
            backend,
            renewals,
            kind: Kind::Lease,
            name,
            ttl: DEFAULT_TTL,
            renew_every: None,
            value: String::new(),
            min_validity: Duration::ZERO,
            reserved: false,
        }
    }

    /// For leasehold's own leases (the token cache's refresher), named
    /// `<kind>#<name>`, which no user name can be.
    pub(crate) fn reserved(mut self) -> Self {
        self.reserved = true;
        self
    }

    /// How long Redis keeps the lease without renewal (default 10 s). This is
    /// the failover time after a crash.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Renewal interval (default TTL/3); must be well below the TTL, so that
    /// retries fit before the deadline.
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = Some(every);
        self
    }

    /// A value stored with the lease that others can read (e.g. the leader's address).
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = value.into();
        self
    }

    /// `acquire()` returns a lease that stays ours at least `d` without a
    /// renewal: a lease handed over on release whose claim window has less
    /// left is claimed (renewed) first. Set it to the time the guarded work
    /// needs to stop (the supervisor uses its stop budget). Default: none.
    pub fn min_validity(mut self, d: Duration) -> Self {
        self.min_validity = d;
        self
    }

    /// Makes this a slot of a semaphore of `limit` slots (see [`crate::Client::semaphore`]).
    pub(crate) fn slots(mut self, limit: u32) -> Self {
        self.kind = Kind::Slot { limit };
        self
    }

    fn config(&self) -> Result<LeaseConfig> {
        if let Kind::Slot { limit: 0 } = self.kind {
            return Err(Error::BadConfig {
                what: "slots",
                value: "0".into(),
                rule: "a semaphore needs at least 1 slot".into(),
            });
        }
        if self.reserved {
            crate::backend::keys::validate_key_name(&self.name)?;
        } else {
            crate::backend::keys::validate_name(&self.name)?;
        }
        LeaseConfig::with_intervals(self.ttl, self.renew_every)
    }

    /// One attempt. `Ok(None)` when someone else holds the lease (or this Redis
    /// is in its post-data-loss quarantine); no place in line is kept.
    ///
    /// Cancel-safe only in the sense that an attempt whose reply was never read
    /// may have taken the lease; it then expires after one TTL.
    ///
    /// # Errors
    /// [`Error::BadName`], [`Error::BadConfig`] for bad settings; Redis
    /// errors ([`Error::is_unavailable`] tells which are worth a retry);
    /// [`Error::NameInUse`] when the name is a semaphore's.
    pub async fn try_acquire(self) -> Result<Option<Lease>> {
        let config = self.config()?;
        let began = Instant::now();
        let holder = HolderId::generate();
        let sent = Instant::now();
        let attempt = crate::backend::Attempt {
            kind: self.kind,
            name: &self.name,
            holder: &holder,
            ttl: config.ttl(),
            value: &self.value,
            queue: false,
        };
        match Box::pin(self.backend.attempt(&attempt)).await? {
            crate::backend::AcquireReply::Acquired { token } => {
                let ttl = config.ttl();
                Ok(Some(self.start(config, holder, token, sent, ttl, began)))
            }
            _ => Ok(None),
        }
    }

    /// Waits until the lease is ours: woken when it is released, or when the
    /// holder's TTL runs out after a crash. Waiters are served first come,
    /// first served (on one logical Redis; a quorum has no queue).
    ///
    /// Cancel-safe: cancel by dropping the future; the waiter leaves the line
    /// in the background ([`crate::Client::close`] waits for that), and a
    /// lease handed to it too late is given back.
    ///
    /// # Errors
    /// As [`LeaseBuilder::try_acquire`]. While Redis is unreachable it keeps
    /// trying; an error that a retry cannot mend ends the wait.
    pub async fn acquire(self) -> Result<Lease> {
        let config = self.config()?;
        let began = Instant::now();
        let holder = HolderId::generate();
        let want = waiter::Want {
            kind: self.kind,
            name: &self.name,
            holder: &holder,
            config: &config,
            value: &self.value,
            min_validity: self.min_validity,
        };
        // Boxed: the waiting loop's state machine is deep, and inlining it
        // into every caller's future overflows rustc's query depth in user
        // code that holds two kinds of acquire in one async fn.
        let won = Box::pin(waiter::acquire(&self.backend, &want)).await?;
        Ok(self.start(config, holder, won.token, won.sent, won.ttl, began))
    }

    /// Like [`LeaseBuilder::acquire`], giving up after `limit`.
    ///
    /// # Errors
    /// [`Error::AcquireTimeout`] when `limit` elapses.
    ///
    /// On timeout the waiter has left the queue (or is given at most a second
    /// to), so that the next one in line does not wait for its place to lapse.
    pub async fn acquire_timeout(self, limit: Duration) -> Result<Lease> {
        let name = self.name.clone();
        let backend = self.backend.clone();
        match tokio::time::timeout(limit, self.acquire()).await {
            Ok(r) => r,
            Err(_) => {
                backend.cleanups().wait(Duration::from_secs(1)).await;
                Err(Error::AcquireTimeout { name, after: limit })
            }
        }
    }

    fn start(
        self,
        config: LeaseConfig,
        holder: HolderId,
        token: FencingToken,
        sent: Instant,
        first_ttl: Duration,
        began: Instant,
    ) -> Lease {
        crate::telemetry::acquired(&self.name, token.0, began.elapsed());
        let deadline = crate::deadline::safety_deadline(sent, first_ttl);
        let (state_tx, state_rx) = watch::channel(LeaseState::Held { token, deadline });
        let shared = std::sync::Arc::new(Shared::new(state_tx));
        let id = self.renewals.add(Entry {
            kind: self.kind,
            name: self.name.clone(),
            holder: holder.clone(),
            config: config.clone(),
            token,
            value: self.value.clone(),
            sent,
            first_ttl,
            shared: shared.clone(),
        });
        Lease {
            backend: self.backend,
            renewals: self.renewals,
            kind: self.kind,
            id,
            name: self.name,
            value: self.value,
            holder,
            token,
            config,
            state: state_rx,
            shared,
            done: false,
        }
    }
}

/// A held lease. Renewed in the background until released, dropped or lost.
///
/// Dropping it stops renewal and releases it in the background (best effort);
/// call [`Lease::release`] to know the outcome. Nothing blocks in `Drop`.
///
/// Guard work with it by racing the work against [`Lease::lost`], and pass
/// [`Lease::token`] to whatever the work writes to (see the
/// [crate docs](crate) for an example).
#[derive(Debug)]
pub struct Lease {
    backend: Backend,
    renewals: Renewals,
    kind: Kind,
    /// This lease's id in the renewal service.
    id: u64,
    name: String,
    value: String,
    holder: HolderId,
    token: FencingToken,
    config: LeaseConfig,
    state: watch::Receiver<LeaseState>,
    /// Shared with the renewal service: stop without a round trip through it.
    shared: std::sync::Arc<Shared>,
    /// Set once released, so that Drop does nothing more.
    done: bool,
}

impl Lease {
    fn held(&self) -> crate::backend::Held<'_> {
        crate::backend::Held {
            kind: self.kind,
            name: &self.name,
            holder: &self.holder,
        }
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token of this acquisition: strictly greater than every
    /// token issued before for this name. Pass it to what the work writes to.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// This acquisition's holder id, as stored in Redis.
    pub fn holder(&self) -> &HolderId {
        &self.holder
    }

    /// The value published with the lease.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The validated settings it is held with (TTL, renewal interval).
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The safety deadline: the local instant until which the lease is
    /// certainly ours, moved by each confirmed renewal; `None` once lost or
    /// released.
    pub fn deadline(&self) -> Option<Instant> {
        match &*self.state.borrow() {
            LeaseState::Held { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// True while held and before the safety deadline. A snapshot: check
    /// [`Lease::lost`] (or fence your writes) rather than polling this.
    pub fn is_held(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() < d)
    }

    /// Every state change: `Held` with each new deadline, then `Lost` or
    /// `Released`. A `watch` receiver: any number of tasks may hold one, and
    /// a slow reader sees the latest state, never a backlog.
    pub fn state(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Resolves when the lease is no longer ours: a renewal was refused, or none
    /// was confirmed before the safety deadline (which is strictly before Redis
    /// could give the lease to anyone else), or it was released.
    ///
    /// Cancel-safe; may be awaited from many tasks at once.
    pub fn lost(&self) -> impl std::future::Future<Output = LostReason> + Send + 'static {
        let mut rx = self.state.clone();
        async move {
            let outcome = match rx.wait_for(|s| !matches!(s, LeaseState::Held { .. })).await {
                Ok(s) => s.clone(),
                // The renewal service ended without a final state: only if the runtime is
                // shutting down. Nothing is held any more.
                Err(_) => LeaseState::Released,
            };
            match outcome {
                LeaseState::Lost(r) => r,
                _ => LostReason::Released,
            }
        }
    }

    /// Changes the published value (what [`crate::Client::status`] and
    /// election observers see), if the lease is still ours in Redis.
    ///
    /// Cancel-safe in the sense that a dropped call either changed the value
    /// in Redis or did not; [`Lease::value`] then still shows the old one.
    ///
    /// # Errors
    /// [`Error::NotHolder`] when the lease is gone; Redis errors (the value
    /// may or may not have changed).
    pub async fn proclaim(&mut self, value: impl Into<String>) -> Result<()> {
        let value = value.into();
        if self
            .backend
            .proclaim(&self.name, &self.holder, &value)
            .await?
        {
            self.value = value;
            Ok(())
        } else {
            Err(Error::NotHolder {
                name: self.name.clone(),
            })
        }
    }

    /// Stops renewal (waiting for an in-flight renewal to finish), then deletes
    /// the lease if it is still ours and wakes one waiter. Afterwards
    /// [`Lease::state`] reads `Released` (or `Lost` when it was not ours any more).
    ///
    /// A lease lost at its safety deadline may still be ours in Redis (the
    /// renewal's reply was what got lost): it is deleted too if so, so that the
    /// next holder need not wait out the TTL. The outcome is then `AlreadyLost`.
    ///
    /// Not cancel-safe: a dropped call has stopped renewal but may not have
    /// deleted the lease, which then expires after its TTL (the next holder
    /// waits that long). Bound it with a timeout of about the TTL rather than
    /// dropping it early.
    ///
    /// # Errors
    /// Redis errors: the outcome is unknown, and the lease is no longer
    /// renewed either way (receivers from [`Lease::state`] read `Released`);
    /// it expires by itself if the delete did not happen.
    pub async fn release(mut self) -> Result<ReleaseOutcome> {
        self.done = true;
        self.shared.stop(self.config.ttl()).await;
        let current = self.state.borrow().clone();
        if let LeaseState::Lost(reason) = current {
            if let LostReason::Unconfirmed(_) = reason {
                let _ = tokio::time::timeout(
                    self.config.ttl(),
                    Box::pin(self.backend.release(&self.held())),
                )
                .await;
            }
            return Ok(ReleaseOutcome::AlreadyLost(reason));
        }
        crate::telemetry::released(&self.name);
        // Said before the release is sent: the next holder may start the
        // moment Redis hands the lease on, before our reply arrives, and no
        // watcher of state() may go on believing it is held.
        self.shared.state.send_replace(LeaseState::Released);
        // Boxed, as in acquire: a caller's future stays shallow.
        let outcome = Box::pin(self.backend.release(&self.held())).await;
        match outcome {
            Ok(true) => Ok(ReleaseOutcome::Released),
            Ok(false) => Ok(ReleaseOutcome::AlreadyLost(LostReason::Refused(
                "the lease key was gone or held by someone else at release".into(),
            ))),
            // Unknown outcome; either way we no longer hold it (it expires
            // by itself if the release did not happen).
            Err(e) => Err(e),
        }
    }
}

/// What is held — a [`Lease`], a semaphore [`Permit`] or a
/// [`Leadership`](crate::Leadership) — as code that guards work with it needs
/// it ([`Supervisor::run_while_held`](crate::supervisor::Supervisor::run_while_held),
/// for one).
///
/// Not sealed: the CLI implements it for an enum of a lease and a permit.
/// An implementation must delegate to one of leasehold's guards — the
/// supervisor stops the child by [`Guard::state`], and trusts it to be the
/// renewal service's own.
pub trait Guard {
    /// The lease's (or semaphore's) name.
    fn name(&self) -> &str;
    /// The fencing token of this acquisition.
    fn token(&self) -> FencingToken;
    /// This acquisition's holder id.
    fn holder(&self) -> &HolderId;
    /// Every state change: `Held` with each new deadline, then `Lost` or `Released`.
    fn state(&self) -> watch::Receiver<LeaseState>;
}

impl Guard for Lease {
    fn name(&self) -> &str {
        Lease::name(self)
    }

    fn token(&self) -> FencingToken {
        Lease::token(self)
    }

    fn holder(&self) -> &HolderId {
        Lease::holder(self)
    }

    fn state(&self) -> watch::Receiver<LeaseState> {
        Lease::state(self)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The renewal service releases in the background; Drop never blocks.
        if !self.done {
            self.renewals.abandon(self.id);
        }
    }
}
