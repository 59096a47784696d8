//! Leader election on top of a lease, in the shape of etcd's `concurrency.Election`:
//! campaign (block until leader), proclaim (change the value while leader),
//! resign, and observe the current leader.
//!
//! An election is a lease whose value names the leader (its address, say):
//! [`Election::campaign`] is [`LeaseBuilder::acquire`](crate::LeaseBuilder::acquire)
//! with that value, and [`Leadership`] wraps the [`Lease`], with the same
//! guarantees — a safety deadline, [`Leadership::lost`], a fencing token —
//! and the same limits: a leader that is paused may still act after its
//! leadership passed on, so what a leader writes should carry its token.
//!
//! Followers do not need to campaign to know the leader:
//! [`Election::leader`] reads it once, [`Election::observe`] follows every
//! change, woken by the lease's events rather than polling.
//!
//! ```no_run
//! # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
//! use futures_util::StreamExt;
//!
//! let election = client.election("scheduler");
//! let mut changes = std::pin::pin!(election.observe());
//! while let Some(leader) = changes.next().await {
//!     match leader? {
//!         Some(l) => println!("leader: {} (token {})", l.value, l.token),
//!         None => println!("no leader"),
//!     }
//! }
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio::sync::watch;

use crate::backend::HolderInfo;
use crate::error::Result;
use crate::lease::Leases;
use crate::lease::{DEFAULT_TTL, Guard, Lease, LeaseState, LostReason, ReleaseOutcome};
use crate::token::{FencingToken, HolderId};

/// How long one observer registration lasts (renewed at half-time).
const OBSERVE_FOR: Duration = Duration::from_secs(60);

/// The current leader as others see it: its holder id, the value it
/// proclaimed, its fencing token and how long its lease has left.
pub type LeaderInfo = HolderInfo;

/// An election named after its lease; made by
/// [`Client::election`](crate::Client::election). Cheap to clone; campaigning
/// and observing do not change it.
#[derive(Clone, Debug)]
pub struct Election {
    leases: Leases,
    name: String,
    ttl: Duration,
}

/// Being the leader. Same guarantees as [`Lease`], which it wraps: renewed
/// in the background, lost at the safety deadline at the latest, given up
/// in the background when dropped.
#[derive(Debug)]
pub struct Leadership {
    lease: Lease,
}

impl Election {
    pub(crate) fn new(leases: Leases, name: String) -> Election {
        Election {
            leases,
            name,
            ttl: DEFAULT_TTL,
        }
    }

    /// TTL of the leader's lease (default 10 s): how long a crashed leader
    /// keeps the others waiting. Observers use it as their backstop too.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Waits until we are the leader, publishing `value` (e.g. our address).
    /// Campaigners are served first come, first served (except on a quorum).
    ///
    /// Cancel-safe: cancel by dropping the future, as
    /// [`LeaseBuilder::acquire`](crate::LeaseBuilder::acquire).
    ///
    /// # Errors
    /// As [`LeaseBuilder::acquire`](crate::LeaseBuilder::acquire).
    pub async fn campaign(&self, value: impl Into<String>) -> Result<Leadership> {
        let lease = self
            .leases
            .lease(self.name.clone())
            .ttl(self.ttl)
            .value(value)
            .acquire()
            .await?;
        Ok(Leadership { lease })
    }

    /// The current leader, if any, as Redis sees it now. Cancel-safe (it
    /// only reads).
    ///
    /// # Errors
    /// Redis errors; [`crate::Error::BadName`] for a bad name.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>> {
        Ok(self.leases.status(&self.name).await?.holder)
    }

    /// A stream that yields the current leader at once, then again each time
    /// the leader or its value changes (`None` while there is none). Woken by
    /// the lease's events; after a crash, by the old lease's expiry.
    ///
    /// It never ends by itself. A Redis error is yielded as an `Err` item and
    /// the stream goes on (the next item tries again), so a reader decides
    /// whether to give up. Changes that come and go between two reads may be merged:
    /// it reports the leader as it is, not every step. Drop it to stop.
    pub fn observe(&self) -> impl Stream<Item = Result<Option<LeaderInfo>>> + Send + 'static {
        struct St {
            leases: Leases,
            name: String,
            sub: Option<crate::backend::Subscription>,
            events: Option<crate::backend::Events>,
            last: Option<Option<(String, u64, String)>>,
            backstop: Duration,
            /// Until when the scripts publish this name's events for us.
            observed_until: Instant,
        }
        let st = St {
            leases: self.leases.clone(),
            name: self.name.clone(),
            sub: None,
            events: None,
            last: None,
            backstop: self.ttl,
            observed_until: Instant::now(),
        };
        futures_util::stream::unfold(st, |mut st| async move {
            loop {
                if st.sub.is_none() {
                    match st.leases.backend().subscribe(&st.name).await {
                        Ok(sub) => {
                            st.events = Some(sub.events());
                            st.sub = Some(sub);
                        }
                        Err(e) => return Some((Err(e), st)),
                    }
                }
                // Without observers the scripts publish only what waiters
                // need: say we are here, well before the last notice runs out.
                if st.observed_until < Instant::now() + OBSERVE_FOR / 2 {
                    let asked = Instant::now();
                    st.observed_until =
                        match st.leases.backend().observe(&st.name, OBSERVE_FOR).await {
                            Ok(()) => asked + OBSERVE_FOR,
                            // Try again in a second; meanwhile release events still
                            // come when someone waits, and expiry by the timer.
                            Err(_) => asked + OBSERVE_FOR / 2 + Duration::from_secs(1),
                        };
                }
                let status = match st.leases.status(&st.name).await {
                    Ok(s) => s,
                    Err(e) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return Some((Err(e), st));
                    }
                };
                let key = status
                    .holder
                    .as_ref()
                    .map(|h| (h.holder.as_str().to_string(), h.token.0, h.value.clone()));
                let wait = match &status.holder {
                    Some(h) => h.ttl_left + Duration::from_millis(2),
                    None => st.backstop,
                };
                let changed = st.last.as_ref() != Some(&key);
                if changed {
                    st.last = Some(key);
                    return Some((Ok(status.holder), st));
                }
                let confirmed = match &st.sub {
                    Some(s) => match s.ensure_confirmed().await {
                        Ok(c) => c,
                        Err(e) => return Some((Err(e), st)),
                    },
                    None => false,
                };
                let wait = if confirmed {
                    wait
                } else {
                    wait.min(Duration::from_millis(250))
                };
                let wait = wait.min(
                    st.observed_until
                        .saturating_duration_since(Instant::now() + OBSERVE_FOR / 2),
                );
                if let Some(ev) = st.events.as_mut() {
                    tokio::select! {
                        _ = ev.recv() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                } else {
                    tokio::time::sleep(wait).await;
                }
            }
        })
    }
}

impl Leadership {
    /// The fencing token of this leadership: pass it to what the leader
    /// writes to.
    pub fn token(&self) -> FencingToken {
        self.lease.token()
    }

    /// The underlying lease (deadline, state, holder id).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Resolves when leadership is lost; see [`Lease::lost`].
    pub fn lost(&self) -> impl std::future::Future<Output = LostReason> + Send + 'static {
        self.lease.lost()
    }

    /// Changes the value observers see, while still leader.
    ///
    /// # Errors
    /// [`crate::Error::NotHolder`] when leadership is gone; see
    /// [`Lease::proclaim`].
    pub async fn proclaim(&mut self, value: impl Into<String>) -> Result<()> {
        self.lease.proclaim(value).await
    }

    /// Gives up leadership; observers and campaigners are woken at once.
    ///
    /// Not cancel-safe, as [`Lease::release`].
    ///
    /// # Errors
    /// As [`Lease::release`].
    pub async fn resign(self) -> Result<ReleaseOutcome> {
        self.lease.release().await
    }
}

impl Guard for Leadership {
    fn name(&self) -> &str {
        self.lease.name()
    }

    fn token(&self) -> FencingToken {
        self.lease.token()
    }

    fn holder(&self) -> &HolderId {
        self.lease.holder()
    }

    fn state(&self) -> watch::Receiver<LeaseState> {
        self.lease.state()
    }
}
