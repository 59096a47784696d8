//! The renewal task of one held lease.
//!
//! It owns the lease's [`LeaseState`]: `Held` with the current safety deadline,
//! then exactly one of `Lost` or `Released`. Renewal is sent every
//! `renew_every`; a failed or unanswered renewal is retried every
//! `retry_every` until the deadline. A renewal whose outcome is unknown never
//! moves the deadline (the lease may or may not have been extended).

use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio::time::{sleep_until, timeout_at};

use crate::backend::{Backend, RenewReply};
use crate::config::LeaseConfig;
use crate::deadline;
use crate::token::{FencingToken, HolderId};

/// Where a lease stands, as seen by its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Ours until `deadline` (local monotonic clock) unless renewed before.
    Held {
        token: FencingToken,
        deadline: Instant,
    },
    /// No longer ours; see the reason.
    Lost(LostReason),
    /// Given back by us.
    Released,
}

/// Why a lease was lost.
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

/// What the guard asks of its keeper.
#[derive(Debug)]
pub(crate) enum Ctl {
    /// Stop renewing; the guard releases itself.
    Stop,
}

pub(crate) struct Keeper {
    pub backend: Backend,
    pub name: String,
    pub holder: HolderId,
    pub config: LeaseConfig,
    pub token: FencingToken,
    pub value: String,
}

impl Keeper {
    /// Runs until the lease is lost, or the guard stops it (`Ctl::Stop`), or the
    /// guard is dropped (then it releases, best effort).
    pub(crate) async fn run(
        self,
        sent: Instant,
        state: watch::Sender<LeaseState>,
        mut ctl: oneshot::Receiver<Ctl>,
    ) {
        let cfg = &self.config;
        let mut deadline = deadline::safety_deadline(sent, cfg.ttl());
        let mut next = deadline::next_renewal(sent, cfg.renew_every());
        let mut last_error = String::from("none");
        loop {
            tokio::select! {
                biased;
                msg = &mut ctl => {
                    if msg.is_err() {
                        // Guard dropped without release(): give the lease back now
                        // rather than making the next holder wait out the TTL.
                        let give_back = timeout_at(
                            deadline.into(),
                            self.backend.release(&self.name, &self.holder),
                        );
                        let _ = give_back.await;
                        state.send_replace(LeaseState::Released);
                    }
                    return;
                }
                _ = sleep_until(next.min(deadline).into()) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(lease = %self.name, "lost: no renewal confirmed before the safety deadline ({last_error})");
                state.send_replace(LeaseState::Lost(LostReason::Unconfirmed(last_error)));
                return;
            }
            // Not cancelled by Ctl: an in-flight renewal finishes (or times out at
            // the deadline) before release runs, so the two never cross.
            let reply = timeout_at(
                deadline.into(),
                self.backend
                    .renew(&self.name, &self.holder, cfg.ttl(), self.token, &self.value),
            )
            .await;
            match reply {
                Ok(Ok(RenewReply::Renewed)) => {
                    deadline = deadline::safety_deadline(now, cfg.ttl());
                    next = deadline::next_renewal(now, cfg.renew_every());
                    state.send_replace(LeaseState::Held {
                        token: self.token,
                        deadline,
                    });
                }
                Ok(Ok(RenewReply::Refused { reason })) => {
                    tracing::warn!(lease = %self.name, "lost: {reason}");
                    state.send_replace(LeaseState::Lost(LostReason::Refused(reason)));
                    return;
                }
                Ok(Err(e)) => {
                    last_error = e.to_string();
                    tracing::debug!(lease = %self.name, "renewal failed, retrying: {e}");
                    next = deadline::retry_at(Instant::now(), cfg.retry_every(), deadline);
                }
                Err(_) => {
                    last_error = format!(
                        "renewal unanswered for {:?}",
                        Instant::now().saturating_duration_since(now)
                    );
                    next = deadline;
                }
            }
        }
    }
}

/// A small random delay so that waiters woken by the same expiry spread out.
pub(crate) fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let r = u16::from_le_bytes(b) as u32;
    max.mul_f64(r as f64 / u16::MAX as f64)
}
