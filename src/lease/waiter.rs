//! Waiting for a lease without polling on a fixed interval.
//!
//! - Subscribe to the lease's event channel *before* each attempt, so that a
//!   release published between a failed attempt and the wait is not missed
//!   (redisson#1763).
//! - After a failed attempt, sleep until the holder's remaining TTL (plus a
//!   little jitter) — that is when a crashed holder's lease frees up — or until
//!   a release is published, whichever comes first.
//! - Each failed attempt keeps this waiter's place in the lease's queue in
//!   Redis; a release names the first waiter in line, and only that one is
//!   woken. A waiter that gives up (its future is dropped) leaves the queue.
//! - While the subscription is not confirmed (Redis pub/sub connection down),
//!   the sleep is capped so that waiting degrades to slow polling, never to
//!   waiting forever.

use std::time::{Duration, Instant};

use super::keeper::jitter;
use crate::backend::{AcquireReply, Backend, Kind};
use crate::config::LeaseConfig;
use crate::error::Result;
use crate::token::{FencingToken, HolderId};

/// Cap on a sleep while release events cannot be received.
const UNCONFIRMED_CAP: Duration = Duration::from_millis(250);
/// Jitter added to a sleep until expiry.
const EXPIRY_JITTER: Duration = Duration::from_millis(3);

/// What a successful wait produced.
pub(crate) struct Won {
    pub token: FencingToken,
    pub sent: Instant,
}

/// Tries until the lease is ours. Cancel-safe: dropping the future leaves
/// nothing behind in Redis (a waiter holds no state there).
pub(crate) async fn acquire(
    backend: &Backend,
    kind: Kind,
    name: &str,
    holder: &HolderId,
    config: &LeaseConfig,
    value: &str,
) -> Result<Won> {
    let mut queued = LeaveOnDrop {
        backend: backend.clone(),
        name: name.to_string(),
        holder: holder.clone(),
        // Semaphore slots have no queue to leave.
        armed: kind == Kind::Lease,
    };
    // Fast path: a free lease costs one round trip, no subscription. If this
    // fails, the release we might miss while subscribing is caught by the
    // attempt that follows the subscription.
    let sent = Instant::now();
    match backend
        .attempt_as(kind, name, holder, config.ttl(), value, true)
        .await
    {
        Ok(AcquireReply::Acquired { token }) => {
            queued.armed = false;
            return Ok(Won { token, sent });
        }
        Err(e) if !e.is_unavailable() => return Err(e),
        _ => {}
    }
    let sub = backend.subscribe(name).await?;
    let slot = sub.slot(holder.as_str());
    let mut seen: Option<(String, u64)> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let confirmed = sub.ensure_confirmed().await;
        let sent = Instant::now();
        let reply = backend
            .attempt_as(kind, name, holder, config.ttl(), value, true)
            .await;
        let wait = match reply {
            Ok(AcquireReply::Acquired { token }) => {
                queued.armed = false;
                return Ok(Won { token, sent });
            }
            Ok(AcquireReply::Queued { wait, head }) => {
                tracing::debug!(
                    "waiting for '{name}': free, but {} is first in line",
                    head.readable()
                );
                wait + jitter(EXPIRY_JITTER)
            }
            Ok(AcquireReply::Held(h)) => {
                let key = (h.holder.as_str().to_string(), h.token.0);
                if seen.as_ref() != Some(&key) {
                    tracing::info!(
                        "waiting for '{name}', held by {} (token {}), expires in {:.1}s",
                        h.holder.readable(),
                        h.token,
                        h.ttl_left.as_secs_f64()
                    );
                    seen = Some(key);
                }
                backoff = Duration::from_millis(50);
                h.ttl_left + jitter(EXPIRY_JITTER)
            }
            Ok(AcquireReply::Quarantined { wait }) => {
                tracing::info!(
                    "waiting for '{name}': this Redis lost its data or is new, so no one starts for {:.1}s (until any earlier holder's deadline has passed)",
                    wait.as_secs_f64()
                );
                wait + jitter(EXPIRY_JITTER)
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!("waiting for '{name}': {e}; retrying in {backoff:?}");
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                w
            }
            Err(e) => return Err(e),
        };
        let wait = if confirmed {
            wait
        } else {
            wait.min(UNCONFIRMED_CAP)
        };
        tokio::select! {
            _ = slot.called() => {}
            _ = sub.released() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Leaves the queue when a waiter stops waiting without the lease, so that it
/// does not hold up the line until its place lapses.
struct LeaveOnDrop {
    backend: Backend,
    name: String,
    holder: HolderId,
    armed: bool,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (b, n, h) = (self.backend.clone(), self.name.clone(), self.holder.clone());
            rt.spawn(async move {
                let _ = b.leave(&n, &h).await;
            });
        }
    }
}
