//! Semaphores: up to N holders of one name at once, each with a
//! [`Permit`] — a lease in everything but name and value changes: its own
//! expiring entry, fencing token, renewal, safety deadline and `lost()`.
//!
//! Waiters are served first come, first served, as a lease's are: a permit
//! given back is handed straight to the first waiter in line (grant on
//! release), and a free permit goes to the waiters in line before anyone
//! else. Differences from a lease: a permit's value cannot be changed after
//! acquisition. A name is either a
//! lease or a semaphore: using it as the other kind fails with
//! [`Error::NameInUse`](crate::Error::NameInUse), since the two would not
//! exclude each other. Each acquirer is checked against its own `limit`
//! (at most `limit` holders at the moment it acquires): use one limit per
//! name.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Guard, Lease, LeaseBuilder, LeaseState, LostReason, ReleaseOutcome};
use crate::config::LeaseConfig;
use crate::error::Result;
use crate::token::{FencingToken, HolderId};

/// Settings of one permit of a semaphore; made by [`crate::Client::semaphore`].
#[derive(Clone, Debug)]
pub struct SemaphoreBuilder(LeaseBuilder);

impl SemaphoreBuilder {
    pub(crate) fn new(lease: LeaseBuilder, limit: u32) -> SemaphoreBuilder {
        SemaphoreBuilder(lease.slots(limit))
    }

    /// How long Redis keeps the permit without renewal (default 10 s): the
    /// time a crashed holder's permit takes to free itself.
    pub fn ttl(self, ttl: Duration) -> Self {
        SemaphoreBuilder(self.0.ttl(ttl))
    }

    /// Renewal interval (default TTL/3); see [`LeaseBuilder::renew_every`].
    pub fn renew_every(self, every: Duration) -> Self {
        SemaphoreBuilder(self.0.renew_every(every))
    }

    /// A value stored with the permit that others can read (`status`).
    pub fn value(self, value: impl Into<String>) -> Self {
        SemaphoreBuilder(self.0.value(value))
    }

    /// See [`LeaseBuilder::min_validity`].
    pub fn min_validity(self, d: Duration) -> Self {
        SemaphoreBuilder(self.0.min_validity(d))
    }

    /// One attempt; `Ok(None)` when all permits are taken (or this Redis is in
    /// its post-restart quarantine).
    ///
    /// Cancel-safe as [`LeaseBuilder::try_acquire`]: an attempt whose reply
    /// was never read may have taken a permit, which expires after one TTL.
    ///
    /// # Errors
    /// As [`LeaseBuilder::try_acquire`], and [`crate::Error::BadConfig`] for
    /// a limit of 0 or on a quorum (semaphores need one logical Redis).
    pub async fn try_acquire(self) -> Result<Option<Permit>> {
        Ok(self.0.try_acquire().await?.map(Permit))
    }

    /// Waits until a permit is ours: woken when one is given back, or when the
    /// first of the holders' TTLs runs out after a crash.
    ///
    /// Cancel-safe: cancel by dropping the future; as with
    /// [`SemaphoreBuilder::try_acquire`], an attempt whose reply was never
    /// read may have taken a permit, which expires after one TTL.
    ///
    /// # Errors
    /// As [`SemaphoreBuilder::try_acquire`]; while Redis is unreachable it
    /// keeps trying.
    pub async fn acquire(self) -> Result<Permit> {
        self.0.acquire().await.map(Permit)
    }

    /// Like [`SemaphoreBuilder::acquire`], giving up after `limit`.
    ///
    /// # Errors
    /// [`crate::Error::AcquireTimeout`] when `limit` elapses.
    pub async fn acquire_timeout(self, limit: Duration) -> Result<Permit> {
        self.0.acquire_timeout(limit).await.map(Permit)
    }
}

/// One held permit of a semaphore. Renewed in the background until released,
/// dropped or lost; dropping it gives it back in the background.
///
/// Every method means what it means on a [`Lease`], with the same
/// guarantees.
#[derive(Debug)]
pub struct Permit(Lease);

impl Permit {
    /// The semaphore's name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// The fencing token of this permit (strictly increasing per name, across
    /// permits and leases of that name).
    pub fn token(&self) -> FencingToken {
        self.0.token()
    }

    /// This permit's holder id, as stored in Redis.
    pub fn holder(&self) -> &HolderId {
        self.0.holder()
    }

    /// The value published with the permit.
    pub fn value(&self) -> &str {
        self.0.value()
    }

    /// The validated settings it is held with (TTL, renewal interval).
    pub fn config(&self) -> &LeaseConfig {
        self.0.config()
    }

    /// The safety deadline, as [`Lease::deadline`]: the local instant until
    /// which the permit is certainly ours; `None` once lost or released.
    pub fn deadline(&self) -> Option<Instant> {
        self.0.deadline()
    }

    /// True while held and before the safety deadline.
    pub fn is_held(&self) -> bool {
        self.0.is_held()
    }

    /// Every state change, as [`Lease::state`].
    pub fn state(&self) -> watch::Receiver<LeaseState> {
        self.0.state()
    }

    /// Resolves when the permit is no longer ours, as [`Lease::lost`].
    pub fn lost(&self) -> impl std::future::Future<Output = LostReason> + Send + 'static {
        self.0.lost()
    }

    /// Gives the permit back, as [`Lease::release`] (which says what a
    /// dropped call leaves behind).
    ///
    /// # Errors
    /// Redis errors: the outcome is unknown; the permit expires by itself.
    pub async fn release(self) -> Result<ReleaseOutcome> {
        self.0.release().await
    }
}

impl Guard for Permit {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn token(&self) -> FencingToken {
        self.0.token()
    }

    fn holder(&self) -> &HolderId {
        self.0.holder()
    }

    fn state(&self) -> watch::Receiver<LeaseState> {
        self.0.state()
    }
}
