#![warn(missing_docs)]

//! leasehold: "exactly one of these is running, and if it dies another takes
//! over", coordinated through Redis.
//!
//! A **lease** is a named, expiring right to do something, held by one
//! process at a time. leasehold gives every acquisition a **fencing token**
//! (a number that only grows), renews it in the background, and tells the
//! holder when it must stop — at a local **safety deadline** strictly before
//! Redis could give the lease to anyone else. Waiters are woken when the
//! holder releases (a hand-over takes about a millisecond) and when a
//! crashed holder's lease expires.
//!
//! # A lease guarding work
//!
//! Race the work against [`Lease::lost`], and pass the token to what the work
//! writes to, so that a former holder that was paused cannot overwrite a
//! newer one:
//!
//! ```no_run
//! # async fn do_the_work(_token: leasehold::FencingToken) {}
//! # async fn demo() -> leasehold::Result<()> {
//! use std::time::Duration;
//!
//! let client = leasehold::Client::connect("redis://127.0.0.1:6379").await?;
//! let lease = client
//!     .lease("nightly-report")
//!     .ttl(Duration::from_secs(10)) // the failover time after a crash
//!     .acquire()                    // waits in line; cancel by dropping
//!     .await?;
//! tokio::select! {
//!     reason = lease.lost() => eprintln!("lost the lease ({reason}): stopped the work"),
//!     _ = do_the_work(lease.token()) => {}
//! }
//! lease.release().await?;           // or drop it: released in the background
//! # Ok(()) }
//! ```
//!
//! # Leader election
//!
//! [`Client::election`]: campaign to lead (a lease whose value names the
//! leader), and observe who leads, woken by every change:
//!
//! ```no_run
//! # async fn lead(_token: leasehold::FencingToken) {}
//! # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
//! use futures_util::StreamExt;
//!
//! let election = client.election("scheduler");
//!
//! // Anyone can follow the leader, without campaigning.
//! let follower = election.clone();
//! tokio::spawn(async move {
//!     let mut changes = std::pin::pin!(follower.observe());
//!     while let Some(change) = changes.next().await {
//!         match change {
//!             Ok(Some(leader)) => println!("leader: {} (token {})", leader.value, leader.token),
//!             Ok(None) => println!("no leader right now"),
//!             Err(e) => eprintln!("cannot tell: {e}"), // the stream goes on
//!         }
//!     }
//! });
//!
//! // Wait to lead, publishing our address; then lead until told otherwise.
//! let leadership = election.campaign("host-a:4711").await?;
//! tokio::select! {
//!     reason = leadership.lost() => eprintln!("no longer leader: {reason}"),
//!     _ = lead(leadership.token()) => {}
//! }
//! leadership.resign().await?;
//! # Ok(()) }
//! ```
//!
//! # A semaphore: up to N at once
//!
//! [`Client::semaphore`] gives one of N permits; a [`Permit`] is held,
//! renewed, lost and released exactly like a lease:
//!
//! ```no_run
//! # async fn consume(_token: leasehold::FencingToken) {}
//! # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
//! use std::time::Duration;
//!
//! let permit = client
//!     .semaphore("api-consumers", 3) // at most 3 holders at once
//!     .ttl(Duration::from_secs(10))
//!     .acquire()
//!     .await?;
//! tokio::select! {
//!     reason = permit.lost() => eprintln!("lost the permit: {reason}"),
//!     _ = consume(permit.token()) => {}
//! }
//! permit.release().await?;
//! # Ok(()) }
//! ```
//!
//! Also here: [`supervisor`] runs a child process only while a lease is held
//! (what `leasehold run` does), [`quota`] counts "at most N per period per
//! key", and [`cache`] keeps a shared credential with a single refresher.
//!
//! # What is guaranteed
//!
//! - While [`Lease::is_held`] is true, nobody else holds the lease, on a
//!   Redis that keeps its data (`maxmemory-policy noeviction`); after a
//!   restart that lost data, nobody gets it before every earlier holder's
//!   deadline has passed.
//! - [`Lease::lost`] resolves by the safety deadline at the latest, and the
//!   [`supervisor`]'s child is dead by then.
//! - Fencing tokens of one name strictly increase, across holders and
//!   (under the clock conditions `docs/design.md` states) restarts.
//!
//! Not guaranteed: that a paused process notices in time — nothing can
//! (hence the tokens) — nor that a lease can be had while Redis cannot be
//! reached. See [`lease`] for the details, and `docs/design.md` for the
//! argument and for what each deployment (Sentinel, Cluster, quorum) adds.
//!
//! # Layout
//!
//! The *protocol* (what goes to Redis) is kept apart from the *policy*
//! (waiting, renewing, deadlines), one file per concept:
//!
//! - `client.rs`: [`Client`] and [`ClientBuilder`], the entry point.
//! - `backend/` (the protocol; hidden from these docs, not a stable API):
//!   `conn.rs` connections (single, Sentinel, Cluster, TLS) and the one
//!   request path; `node.rs` one logical Redis and the lease scripts;
//!   `semaphore.rs` the semaphore scripts; `chores.rs` the quota and token
//!   cache scripts; `reply.rs` decoding replies; `keys.rs` the key schema;
//!   `scripts.rs` and `scripts/*.lua` the Lua scripts, run by SHA;
//!   `notify.rs` one shared pub/sub connection per client, waking waiters;
//!   `quorum.rs` N ≥ 3 independent servers (Redlock); `url.rs` which
//!   deployment a URL names, and hiding its password.
//! - [`lease`]: the policy of holding — [`Lease`], [`LeaseBuilder`];
//!   `renewal.rs` one renewal task per client, owner of every
//!   [`LeaseState`]; `waiter.rs` waiting woken by releases and expiries;
//!   `semaphore.rs` [`Permit`] and [`SemaphoreBuilder`].
//! - [`election`]: etcd-style leader election on a lease.
//! - [`supervisor`]: running a child only while a lease is held —
//!   `child.rs` spawning (process group, parent-death signal),
//!   `contain.rs` choosing the containment, `pidns.rs` a PID namespace,
//!   `cgroup.rs` a cgroup v2, `stopper.rs` the stop thread with its own
//!   timer, `terminal.rs` the terminal's foreground, `signals.rs` SIGTERM,
//!   SIGINT and SIGHUP.
//! - [`quota`]: atomic quota counters (fixed windows in a time zone, sliding).
//! - [`cache`]: a shared token cache with a single refresher.
//! - [`config`]: lease settings, validated when built.
//! - [`deadline`]: the pure arithmetic behind every deadline.
//! - [`token`]: fencing tokens and holder ids.
//! - [`telemetry`]: metrics through the `metrics` facade.
//! - [`error`]: the one error enum.
//!
//! The binary (`src/bin/leasehold/`) is a thin CLI over this library; the
//! fault-injection toolkit behind `leasehold chaos` and the chaos tests
//! lives there too (`faults.rs`), not in the library.
//!
//! `docs/design.md` explains the design: the keys, the scripts, the deadline
//! arithmetic, why fencing tokens never go backwards, and what is public.

// Hidden, not part of the stable API: the protocol layer stays `pub` for the
// CLI (`keys::validate_name`), the integration tests and benches (single
// protocol steps through `Client::backend`), the property tests
// (`url::parse`, `redact_url`) and the model tests (`queue_margin`). Its
// `HolderInfo` and `LeaseStatus` are public, re-exported below.
#[doc(hidden)]
pub mod backend;
pub mod cache;
mod client;
pub mod config;
pub mod deadline;
pub mod election;
pub mod error;
pub mod lease;
pub mod quota;
pub mod supervisor;
pub mod telemetry;
pub mod token;

pub use backend::{HolderInfo, LeaseStatus};
pub use cache::{TokenCache, TokenCacheBuilder};
pub use client::{Client, ClientBuilder};
pub use config::LeaseConfig;
pub use election::{Election, LeaderInfo, Leadership};
pub use error::{Error, Result};
pub use lease::{
    Guard, Lease, LeaseBuilder, LeaseState, LostReason, Permit, ReleaseOutcome, SemaphoreBuilder,
};
pub use quota::{Period, Quota, QuotaBuilder, Taken};
pub use token::{FencingToken, HolderId};
