//! leasehold: "exactly one of these is running, and if it dies another takes
//! over", coordinated through Redis.
//!
//! ```no_run
//! # async fn demo() -> leasehold::Result<()> {
//! use std::time::Duration;
//! let client = leasehold::Client::connect("redis://127.0.0.1:6379").await?;
//! let lease = client.lease("nightly-report").ttl(Duration::from_secs(10)).acquire().await?;
//! println!("holding with fencing token {}", lease.token());
//! tokio::select! {
//!     reason = lease.lost() => eprintln!("lost: {reason}"),
//!     _ = async { /* the work, writing with lease.token() */ } => {}
//! }
//! lease.release().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`backend`]: the protocol — key schema, Lua scripts, replies; one shared
//!   pub/sub connection per client. No policy.
//! - [`lease`]: the policy of holding — waiting woken by releases or expiry,
//!   renewal, the safety deadline, `lost()`, release.
//! - [`deadline`]: the pure arithmetic behind every deadline.
//! - [`config`]: lease settings, validated when built.
//! - [`token`]: fencing tokens and holder ids.
//! - [`election`]: etcd-style leader election on a lease.
//! - [`supervisor`]: running a child process only while a lease is held.
//! - [`quota`]: atomic quota counters (fixed windows in a time zone, sliding).
//! - [`cache`]: a shared token cache with a single refresher.
//! - [`telemetry`]: metrics through the `metrics` facade (Prometheus in the CLI).
//! - [`error`]: the one error enum.
//!
//! `docs/design.md` explains the design: the keys, the scripts, the deadline
//! arithmetic and why fencing tokens never go backwards.

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
