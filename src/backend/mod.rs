//! The protocol: what is sent to Redis and what its replies mean. No policy
//! (waiting, renewing, deadlines) lives here; see [`crate::lease`] for that.
//!
//! Every operation is one Lua script that compares the holder inside Redis
//! (`scripts/*.lua`), so no check-then-act race exists between clients.
//!
//! Deployments:
//! - one logical Redis ([`node`]): a standalone server, a Sentinel-managed
//!   master, or a Cluster — the same scripts, thanks to the `{name}` hash tag;
//! - a quorum of N ≥ 3 independent servers ([`quorum`], Redlock).

pub(crate) mod chores;
mod conn;
pub mod keys;
pub mod node;
mod notify;
pub mod quorum;
mod reply;
mod scripts;
mod semaphore;
pub mod url;

use std::time::Duration;

use futures_util::future::select_all;

use crate::error::{Error, Result};
use crate::token::{FencingToken, HolderId};
pub use keys::Keys;
pub use node::{Node, RenewItem};
pub use notify::Event;
pub(crate) use notify::Grant;

/// Background clean-ups (a waiter leaving the queue, a dropped guard's
/// release) that a process should let finish before it exits:
/// [`crate::Client::close`] waits for them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cleanups(std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl Cleanups {
    /// Runs `f` in the background (no-op without a runtime).
    pub(crate) fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let h = rt.spawn(f);
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|h| !h.is_finished());
        all.push(h);
    }

    /// Waits for every clean-up started so far, at most `limit`.
    pub(crate) async fn wait(&self, limit: Duration) {
        let all: Vec<_> = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::time::timeout(limit, futures_util::future::join_all(all)).await;
    }
}
pub use quorum::Quorum;
pub use url::redact_url;

/// What an acquire attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcquireReply {
    /// The lease is ours, with this token.
    Acquired { token: FencingToken },
    /// Someone holds it; it expires in `info.ttl_left` unless renewed.
    /// `first`: we are first in line, the one waiter that must come on time.
    Held { info: HolderInfo, first: bool },
    /// A semaphore's slots are all taken; the first frees up in `wait`.
    Full { wait: Duration, used: u32 },
    /// Quorum: no majority agreed (split vote, or too few answered in time);
    /// try again after `wait`.
    NoMajority { wait: Duration },
    /// This Redis lost its data recently: nobody may start for `wait`.
    Quarantined { wait: Duration },
    /// Free, but another waiter (`head`) is first in line; its place lapses
    /// in `wait` unless it comes for the lease.
    Queued { wait: Duration, head: HolderId },
}

/// One acquisition attempt: what to take, for whom, for how long.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    pub kind: Kind,
    pub name: &'a str,
    pub holder: &'a HolderId,
    pub ttl: Duration,
    /// Published with the lease (e.g. the leader's address); may be empty.
    pub value: &'a str,
    /// Waiting: keep a place in the queue when not acquired. Trying: do not.
    pub queue: bool,
}

impl<'a> Attempt<'a> {
    /// One try at lease `name`, no value, no place in the queue.
    pub fn lease(name: &'a str, holder: &'a HolderId, ttl: Duration) -> Attempt<'a> {
        Attempt {
            kind: Kind::Lease,
            name,
            holder,
            ttl,
            value: "",
            queue: false,
        }
    }
}

/// What one holder gives back.
#[derive(Clone, Copy, Debug)]
pub struct Held<'a> {
    pub kind: Kind,
    pub name: &'a str,
    pub holder: &'a HolderId,
}

impl<'a> Held<'a> {
    /// Lease `name` as held by `holder`.
    pub fn lease(name: &'a str, holder: &'a HolderId) -> Held<'a> {
        Held {
            kind: Kind::Lease,
            name,
            holder,
        }
    }
}

/// What is held: a lease (one holder) or a slot of a semaphore (N holders).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Lease,
    Slot { limit: u32 },
}

/// What a renewal found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenewReply {
    Renewed,
    /// Not ours any more: `reason` says what is there now.
    Refused {
        reason: String,
    },
}

/// The current holder of a lease, as Redis sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderInfo {
    pub holder: HolderId,
    pub value: String,
    pub token: FencingToken,
    pub ttl_left: Duration,
}

/// A lease as Redis sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    pub name: String,
    /// `None` when the lease is free.
    pub holder: Option<HolderInfo>,
    /// The last fencing token issued for this name (0 if none is remembered).
    pub last_token: u64,
    /// The name is in use as a semaphore (see `Client::semaphore_status`).
    pub semaphore: bool,
    /// Free, but an acquisition now would wait this long: the server may lack
    /// writes its predecessor confirmed (restart, failover, first use).
    pub quarantine: Option<Duration>,
}

/// PEM files for `rediss://` connections.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// Trust this CA instead of the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate and key, for mutual TLS.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

/// Connection settings shared by every kind of backend.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Custom CA and client certificate for `rediss://` (system roots otherwise).
    pub tls: TlsFiles,
    /// How long one request may take before it counts as failed.
    pub op_timeout: Duration,
    /// Sentinel/single: acquire and renew count only once this many replicas
    /// have the write (`WAIT`).
    pub min_replicas: u32,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            tls: TlsFiles::default(),
            op_timeout: Duration::from_secs(5),
            min_replicas: 0,
        }
    }
}

/// How long past its next due attempt a waiter's place in line is kept: long
/// enough for a late wake-up, short enough that a crashed waiter holds up the
/// line only briefly.
pub fn queue_margin(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Where leases live: one logical Redis, or a quorum of independent ones.
///
/// Failure semantics:
/// - a request that fails or times out has an *unknown* outcome; callers must
///   not assume it did or did not take effect (the lease layer's deadline
///   arithmetic accounts for that);
/// - connections are re-established in the background after errors.
#[derive(Clone, Debug)]
pub enum Backend {
    Node(Node),
    Quorum(Quorum),
}

impl Backend {
    /// One URL: a single Redis, Sentinel (`redis+sentinel://`) or Cluster
    /// (`redis+cluster://`). Three or more `redis://` URLs: a quorum.
    ///
    /// # Errors
    /// [`Error::BadUrl`], [`Error::Unreachable`], [`Error::Auth`], [`Error::BadConfig`].
    pub async fn connect(urls: &[String], prefix: &str, opts: &ConnectOptions) -> Result<Backend> {
        match urls {
            [] => Err(Error::BadUrl {
                url: String::new(),
                reason: "no Redis URL given".into(),
            }),
            [one] => Ok(Backend::Node(Node::connect(one, prefix, opts).await?)),
            [_, _] => Err(Error::BadUrl {
                url: urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>().join(" "),
                reason: "a quorum needs at least 3 independent Redis servers (2 cannot outvote a failure)".into(),
            }),
            many => Ok(Backend::Quorum(Quorum::connect(many, prefix, opts).await?)),
        }
    }

    /// Background clean-ups of this backend's users.
    pub(crate) fn cleanups(&self) -> &Cleanups {
        match self {
            Backend::Node(n) => n.cleanups(),
            Backend::Quorum(q) => q.cleanups(),
        }
    }

    /// One receiver per node, changed each time that node's subscription
    /// connection was re-established (the server may have restarted).
    pub(crate) fn reconnects(&self) -> Vec<tokio::sync::watch::Receiver<u64>> {
        match self {
            Backend::Node(n) => vec![n.reconnects()],
            Backend::Quorum(q) => q.nodes().iter().map(|n| n.reconnects()).collect(),
        }
    }

    /// True when every write must be confirmed by replicas (`--min-replicas`):
    /// a lease handed over on release is then claimed before it is used.
    pub fn confirms_writes(&self) -> bool {
        match self {
            Backend::Node(n) => n.min_replicas() > 0,
            Backend::Quorum(_) => false,
        }
    }

    /// Asks for `name`'s events (`acquired`, `released`, `proclaimed`) for `d`.
    pub async fn observe(&self, name: &str, d: Duration) -> Result<()> {
        match self {
            Backend::Node(n) => n.observe(name, d).await,
            Backend::Quorum(q) => {
                for r in
                    futures_util::future::join_all(q.nodes().iter().map(|n| n.observe(name, d)))
                        .await
                {
                    r?;
                }
                Ok(())
            }
        }
    }

    /// The URL(s), passwords hidden.
    pub fn url(&self) -> String {
        match self {
            Backend::Node(n) => n.url().to_string(),
            Backend::Quorum(q) => q.url(),
        }
    }

    /// One attempt to take a lease or a semaphore slot. A waiting attempt
    /// that fails keeps (or takes) the holder's place in the lease's
    /// first-come-first-served queue until its next attempt is due, plus a
    /// margin (a quorum and a semaphore have no queue).
    pub async fn attempt(&self, a: &Attempt<'_>) -> Result<AcquireReply> {
        if let Kind::Slot { limit } = a.kind {
            return self.single("semaphore")?.sem_attempt(a, limit).await;
        }
        match self {
            Backend::Node(n) => n.attempt(a).await,
            Backend::Quorum(q) => q.attempt(a).await,
        }
    }

    /// Gives up `holder`'s place in the queue of `name`.
    pub async fn leave(&self, name: &str, holder: &HolderId) -> Result<()> {
        match self {
            Backend::Node(n) => n.leave(name, holder).await,
            Backend::Quorum(_) => Ok(()),
        }
    }

    /// Extends `name` by `ttl` if `holder` still holds it. Never re-creates it
    /// (a quorum re-creates it on nodes that lost it while a majority holds it).
    pub async fn renew(
        &self,
        name: &str,
        holder: &HolderId,
        ttl: Duration,
        token: FencingToken,
        value: &str,
    ) -> Result<RenewReply> {
        match self {
            Backend::Node(n) => n.renew(name, holder, ttl, None, Kind::Lease).await,
            Backend::Quorum(q) => q.renew(name, holder, ttl, token, value).await,
        }
    }

    /// Claims a lease handed over on release: renews it to the full `ttl` if
    /// `holder` still holds it *with `token`* (a grant found late may have
    /// lapsed and passed on, even back to us with another token).
    pub async fn claim(
        &self,
        name: &str,
        holder: &HolderId,
        ttl: Duration,
        token: FencingToken,
    ) -> Result<RenewReply> {
        match self {
            Backend::Node(n) => n.claim(name, holder, ttl, token).await,
            // No grants on a quorum: a plain renewal.
            Backend::Quorum(q) => q.renew(name, holder, ttl, token, "").await,
        }
    }

    /// Renews many leases at once: one round trip per node (a pipeline).
    /// `items` carry each lease's token and value for quorum repair.
    pub async fn renew_many(&self, items: &[RenewItem<'_>]) -> Vec<Result<RenewReply>> {
        match self {
            Backend::Node(n) => {
                // Repair is a quorum concern: a single Redis never re-creates.
                let plain: Vec<RenewItem<'_>> = items
                    .iter()
                    .map(|i| RenewItem {
                        kind: i.kind,
                        name: i.name,
                        holder: i.holder,
                        ttl: i.ttl,
                        repair: None,
                    })
                    .collect();
                n.renew_many(&plain).await
            }
            Backend::Quorum(q) => q.renew_many(items).await,
        }
    }

    /// Gives back a lease (handing it to the next waiter) or a semaphore
    /// slot, if `held.holder` holds it. False when it was not ours (any more).
    pub async fn release(&self, held: &Held<'_>) -> Result<bool> {
        if let Kind::Slot { .. } = held.kind {
            return self
                .single("semaphore")?
                .sem_release(held.name, held.holder)
                .await;
        }
        match self {
            Backend::Node(n) => n.release(held.name, held.holder, false).await,
            Backend::Quorum(q) => q.release(held.name, held.holder).await,
        }
    }

    /// Replaces the value of `name` if `holder` holds it.
    pub async fn proclaim(&self, name: &str, holder: &HolderId, value: &str) -> Result<bool> {
        match self {
            Backend::Node(n) => n.proclaim(name, holder, value).await,
            Backend::Quorum(q) => q.proclaim(name, holder, value).await,
        }
    }

    /// Reads `name` without changing it.
    pub async fn status(&self, name: &str) -> Result<LeaseStatus> {
        match self {
            Backend::Node(n) => n.status(name).await,
            Backend::Quorum(q) => q.status(name).await,
        }
    }

    /// The one logical Redis behind this backend, for features that need a
    /// single source of truth (quotas, the token cache).
    ///
    /// # Errors
    /// [`Error::BadConfig`] on a quorum.
    pub fn single(&self, feature: &'static str) -> Result<&Node> {
        match self {
            Backend::Node(n) => Ok(n),
            Backend::Quorum(_) => Err(Error::BadConfig {
                what: feature,
                value: "a quorum".into(),
                rule: "needs one logical Redis (single server, Sentinel or Cluster), not a quorum"
                    .into(),
            }),
        }
    }

    /// Joins the event channel of `name` (one shared connection per node).
    pub(crate) async fn subscribe(&self, name: &str) -> Result<Subscription> {
        let (parts, needed) = match self {
            Backend::Node(n) => {
                let parts = n.subscribe(name).await?;
                let needed = parts.len();
                (parts, needed)
            }
            Backend::Quorum(q) => (q.subscribe(name).await?, q.majority()),
        };
        Ok(Subscription { parts, needed })
    }
}

/// A subscription to one lease's events, on every node it lives on.
pub struct Subscription {
    parts: Vec<notify::Subscription>,
    /// How many nodes must have confirmed for no release to be missed: one,
    /// or a quorum's majority (a release reaches the majority that held the
    /// lease, and any two majorities share a node).
    needed: usize,
}

/// A waiter's wake-up, on every node.
pub(crate) struct Wake {
    parts: Vec<notify::Wake>,
}

impl Wake {
    pub(crate) async fn called(&self) {
        select_all(self.parts.iter().map(|p| Box::pin(p.called()))).await;
    }

    /// A grant handed to this waiter on release (single Redis only).
    pub(crate) fn take_grant(&self) -> Option<notify::Grant> {
        self.parts.iter().find_map(|p| p.take_grant())
    }

    /// When the grant before ours lapses unless claimed, if we are next.
    pub(crate) fn take_on_deck(&self) -> Option<std::time::Instant> {
        self.parts.iter().filter_map(|p| p.take_on_deck()).min()
    }
}

impl Subscription {
    /// True when enough nodes confirmed (re-subscribing where needed, on all
    /// nodes at once, each bounded in time).
    ///
    /// # Errors
    /// [`Error::Refused`] when Redis refuses the channel (ACL).
    pub(crate) async fn ensure_confirmed(&self) -> Result<bool> {
        let confirmed =
            futures_util::future::join_all(self.parts.iter().map(|p| p.ensure_confirmed())).await;
        let mut n = 0;
        for c in confirmed {
            n += usize::from(c?);
        }
        Ok(n >= self.needed)
    }

    pub(crate) async fn released(&self) {
        select_all(self.parts.iter().map(|p| Box::pin(p.released()))).await;
    }

    /// The wake-up of waiter `id`, once per connection (a node's lease
    /// channel and its inbox share one).
    pub(crate) fn wake(&self, id: &str) -> Wake {
        let mut parts = Vec::new();
        for (i, p) in self.parts.iter().enumerate() {
            if !self.parts[..i].iter().any(|q| q.shares_notifier(p)) {
                parts.push(p.wake(id));
            }
        }
        Wake { parts }
    }

    /// Resolves with the next event from any node.
    pub(crate) fn events(&self) -> Events {
        Events {
            rx: self.parts.iter().map(|p| p.events()).collect(),
        }
    }
}

/// Events of one lease from every node.
pub struct Events {
    rx: Vec<tokio::sync::broadcast::Receiver<Event>>,
}

impl Events {
    /// The next event (a lagging receiver reports `Reconnected`: re-read state).
    pub(crate) async fn recv(&mut self) -> Event {
        if self.rx.is_empty() {
            return std::future::pending().await;
        }
        let (r, _, _) = select_all(self.rx.iter_mut().map(|r| Box::pin(r.recv()))).await;
        match r {
            Ok(e) => e,
            Err(_) => Event::Reconnected,
        }
    }
}
