//! The protocol: what is sent to Redis and what its replies mean. No policy
//! (waiting, renewing, deadlines) lives here; see [`crate::lease`] for that.
//!
//! **Not part of the stable API** (hidden from the docs): the lease layer is
//! built on it, and it stays `pub` for the code that needs single protocol
//! steps — the CLI (`keys::validate_name`, to refuse a bad name before
//! connecting), the integration tests and benchmarks (one [`Attempt`] as a
//! crashed holder, a [`Backend::renew`] by a stranger, through
//! `Client::backend`), the property tests (`url::parse`, `redact_url`,
//! `keys::validate_name`) and the model tests ([`queue_margin`]). Its
//! signatures follow the scripts and may change in any release.
//!
//! Every operation is one Lua script that compares the holder inside Redis
//! (`scripts/*.lua`), so no check-then-act race exists between clients.
//! Every failure is an [`Error`] whose outcome is *unknown* (the script may
//! or may not have run); the lease layer's deadline arithmetic assumes
//! nothing either way.
//!
//! The files, one concern each:
//! - `conn.rs`: connections (single, Sentinel, Cluster, TLS) and the one
//!   request path with its timeout;
//! - [`node`]: one logical Redis — a standalone server, a Sentinel-managed
//!   master, or a Cluster (the same scripts, thanks to the `{name}` hash
//!   tag) — and the lease scripts;
//! - `semaphore.rs`: the semaphore scripts; `chores.rs`: the quota and token
//!   cache scripts;
//! - `reply.rs`: decoding replies; [`keys`]: the key schema;
//!   `scripts.rs` and `scripts/*.lua`: the scripts, run by SHA;
//! - `notify.rs`: one shared pub/sub connection per client, waking waiters;
//! - [`quorum`]: N ≥ 3 independent servers (Redlock, with fencing tokens
//!   that never go backwards);
//! - [`url`]: which deployment a URL names, and hiding its password.

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
pub(crate) use notify::Event;
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
#[non_exhaustive]
pub enum AcquireReply {
    /// The lease (or slot) is ours.
    Acquired {
        /// Its fencing token.
        token: FencingToken,
    },
    /// Someone holds it.
    Held {
        /// The holder; it expires in `ttl_left` unless renewed.
        info: HolderInfo,
        /// We are first in line: the one waiter that must come on time.
        first: bool,
    },
    /// A semaphore's slots are all taken.
    Full {
        /// When the first slot frees up unless renewed.
        wait: Duration,
        /// Slots in use.
        used: u32,
        /// We are first in line: the one waiter that must come on time.
        first: bool,
        /// The name's last fencing token as of this attempt: a slot handed
        /// over with a larger one was handed over after it.
        last_token: FencingToken,
    },
    /// Quorum: no majority agreed (split vote, or too few answered in time).
    NoMajority {
        /// When to try again.
        wait: Duration,
    },
    /// This Redis may lack writes its predecessor confirmed (restart,
    /// failover, first use): nobody may start before every earlier holder's
    /// deadline has passed.
    Quarantined {
        /// How long until then.
        wait: Duration,
    },
    /// Free (a lease), or a slot is free (a semaphore), but another waiter
    /// is first in line (the slots free go to the waiters before us).
    Queued {
        /// When its place lapses unless it comes for the lease.
        wait: Duration,
        /// That waiter.
        head: HolderId,
    },
}

/// One acquisition attempt: what to take, for whom, for how long.
///
/// Not `#[non_exhaustive]`, unlike its siblings: the integration tests build
/// a semaphore attempt with struct update syntax
/// (`Attempt { kind: Kind::Slot { .. }, ..Attempt::lease(..) }`).
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    /// A lease or a semaphore slot.
    pub kind: Kind,
    /// The lease's (or semaphore's) name.
    pub name: &'a str,
    /// Who asks: a fresh id per acquisition.
    pub holder: &'a HolderId,
    /// How long Redis keeps it without renewal.
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
#[non_exhaustive]
pub struct Held<'a> {
    /// A lease or a semaphore slot.
    pub kind: Kind,
    /// The lease's (or semaphore's) name.
    pub name: &'a str,
    /// The holder that acquired it.
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

    /// A slot of semaphore `name` (of `limit`) as held by `holder`.
    pub fn slot(name: &'a str, holder: &'a HolderId, limit: u32) -> Held<'a> {
        Held {
            kind: Kind::Slot { limit },
            name,
            holder,
        }
    }
}

/// What is held: a lease (one holder) or a slot of a semaphore (N holders).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A lease: one holder, a first-come-first-served queue of waiters.
    Lease,
    /// A slot of a semaphore: up to `limit` holders, a first-come-first-served
    /// queue of waiters.
    Slot {
        /// How many may hold the semaphore at once.
        limit: u32,
    },
}

/// What a renewal found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RenewReply {
    /// Still ours; Redis keeps it for another TTL from now.
    Renewed,
    /// Not ours any more.
    Refused {
        /// What is there now (gone, another holder), for the loss message.
        reason: String,
    },
}

/// The current holder of a lease (or one holder of a semaphore), as Redis
/// sees it. Read by [`Client::status`](crate::Client::status),
/// [`Client::semaphore_status`](crate::Client::semaphore_status) and
/// [`Election::leader`](crate::Election::leader) (where it is called
/// [`LeaderInfo`](crate::LeaderInfo)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HolderInfo {
    /// Who holds it: host, pid and a random part.
    pub holder: HolderId,
    /// The value it published (e.g. a leader's address); may be empty.
    pub value: String,
    /// The fencing token of its acquisition.
    pub token: FencingToken,
    /// How long Redis keeps it unless renewed, as of the reply. A holder
    /// that crashed loses it after this; a live one renews long before.
    pub ttl_left: Duration,
}

/// A lease as Redis sees it: [`Client::status`](crate::Client::status).
///
/// A snapshot: by the time it is read, the lease may have changed hands.
/// Use it to show and to decide whether to wait, never as proof of holding
/// (that is what a [`Lease`](crate::Lease) and its fencing token are for).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseStatus {
    /// The lease's name.
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

/// PEM files for `rediss://` connections; set through
/// [`ClientBuilder::tls_ca`](crate::ClientBuilder::tls_ca) and
/// [`ClientBuilder::tls_client_cert`](crate::ClientBuilder::tls_client_cert).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TlsFiles {
    /// Trust this CA instead of the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate, for mutual TLS (with `key`).
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's private key.
    pub key: Option<std::path::PathBuf>,
}

/// Connection settings shared by every kind of backend; set through
/// [`ClientBuilder`](crate::ClientBuilder).
#[derive(Clone, Debug)]
#[non_exhaustive]
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
/// - connections are re-established in the background after errors;
/// - dropping the future of a request before it resolves is the same as a
///   failure: its outcome is unknown.
#[derive(Clone, Debug)]
pub enum Backend {
    /// One logical Redis: a server, a Sentinel-managed master, or a Cluster.
    Node(Node),
    /// N ≥ 3 independent servers, a majority deciding.
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
    /// that fails keeps (or takes) the holder's place in the name's
    /// first-come-first-served queue until its next attempt is due, plus a
    /// margin (a quorum has no queue).
    pub async fn attempt(&self, a: &Attempt<'_>) -> Result<AcquireReply> {
        if let Kind::Slot { limit } = a.kind {
            return self.single("semaphore")?.sem_attempt(a, limit).await;
        }
        match self {
            Backend::Node(n) => n.attempt(a).await,
            Backend::Quorum(q) => q.attempt(a).await,
        }
    }

    /// Gives up `holder`'s place in the queue of `name` (and gives back what
    /// a release handed to it meanwhile).
    pub async fn leave(&self, kind: Kind, name: &str, holder: &HolderId) -> Result<()> {
        match (self, kind) {
            (Backend::Node(n), Kind::Lease) => n.leave(name, holder).await,
            (Backend::Node(n), Kind::Slot { limit }) => n.sem_leave(name, holder, limit).await,
            (Backend::Quorum(_), _) => Ok(()),
        }
    }

    /// Extends `name` by `ttl` if `holder` still holds it. Never re-creates it
    /// on a single Redis; a quorum re-creates it, with `token` and `value`, on
    /// nodes that lost it while a majority still holds it.
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
        kind: Kind,
        name: &str,
        holder: &HolderId,
        ttl: Duration,
        token: FencingToken,
    ) -> Result<RenewReply> {
        match self {
            Backend::Node(n) => n.claim(kind, name, holder, ttl, token).await,
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
        if let Kind::Slot { limit } = held.kind {
            return self
                .single("semaphore")?
                .sem_release(held.name, held.holder, limit)
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

    /// Notes what `holder` tells `leasehold status` about itself (`run`:
    /// how its job is contained); `note` empty removes it. Best effort, for
    /// people: nothing of the protocol reads it.
    pub async fn note(&self, name: &str, holder: &HolderId, note: &str) -> Result<bool> {
        match self {
            Backend::Node(n) => n.note(name, holder, note).await,
            Backend::Quorum(q) => q.note(name, holder, note).await,
        }
    }

    /// The notes of `holders`, in their order.
    pub async fn notes(&self, name: &str, holders: &[&str]) -> Result<Vec<Option<String>>> {
        match self {
            Backend::Node(n) => n.notes(name, holders).await,
            Backend::Quorum(q) => q.notes(name, holders).await,
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

    /// The subscription to `name`'s events and this client's inbox when it
    /// costs no round trip (both subscribed and confirmed already, as in a
    /// loop that takes the same name again and again); `None` otherwise, and
    /// always on a quorum.
    pub(crate) async fn subscription_if_ready(&self, name: &str) -> Result<Option<Subscription>> {
        let Backend::Node(n) = self else {
            return Ok(None);
        };
        if !n.subscribed(name) {
            return Ok(None);
        }
        let sub = self.subscribe(name).await?;
        Ok(sub.ensure_confirmed().await?.then_some(sub))
    }

    /// Joins the event channel of `name` (one shared connection per node).
    pub(crate) async fn subscribe(&self, name: &str) -> Result<Subscription> {
        let (parts, needed) = match self {
            Backend::Node(n) => {
                let parts = n.subscribe(name, true).await?;
                let needed = parts.len();
                (parts, needed)
            }
            Backend::Quorum(q) => (q.subscribe(name).await?, q.majority()),
        };
        Ok(Subscription { parts, needed })
    }
}

/// A subscription to one lease's events, on every node it lives on.
pub(crate) struct Subscription {
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
pub(crate) struct Events {
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
