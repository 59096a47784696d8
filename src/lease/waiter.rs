//! Waiting for a lease without polling on a fixed interval.
//!
//! - Subscribe to the lease's event channel *before* each attempt, so that a
//!   release published between a failed attempt and the wait is not missed
//!   (redisson#1763).
//! - After a failed attempt, sleep until the holder's remaining TTL — that is
//!   when a crashed holder's lease frees up — or until a release names us,
//!   whichever comes first. Only the waiter first in line comes exactly on
//!   time; the others add a little jitter behind it.
//! - Each failed attempt keeps this waiter's place in the name's queue in
//!   Redis. A release hands the lease (or a semaphore's freed slot) straight
//!   to the first waiter in line
//!   (**grant on release**): it starts on the message, without an acquire
//!   round trip of its own. Its safety deadline counts from the send instant
//!   of its last queued attempt, which Redis processed before the release, so
//!   it never overestimates; the grant lasts only the claim window until the
//!   first renewal confirms it (a waiter that died meanwhile strands the lease
//!   for no longer, and the waiter after it is told when to come). When that
//!   window has too little left, the grant is claimed (renewed) first.
//! - A waiter that gives up (its future is dropped) leaves the queue, and gives
//!   back a grant that reached it too late.
//! - While the subscription is not confirmed (Redis pub/sub connection down),
//!   the sleep is capped so that waiting degrades to slow polling, never to
//!   waiting forever.

use std::time::{Duration, Instant};

use crate::backend::{AcquireReply, Attempt, Backend, Grant, Kind, RenewReply};
use crate::config::LeaseConfig;
use crate::deadline;
use crate::deadline::jitter;
use crate::error::Result;
use crate::token::{FencingToken, HolderId};

/// Cap on a sleep while release events cannot be received.
const UNCONFIRMED_CAP: Duration = Duration::from_millis(250);
/// Jitter added behind the first in line when a holder's TTL runs out.
const EXPIRY_JITTER: Duration = Duration::from_millis(3);

/// What a successful wait produced.
pub(crate) struct Won {
    pub token: FencingToken,
    /// When the request that made (or confirmed) the lease ours was sent.
    pub sent: Instant,
    /// How long Redis keeps it from then without renewal: the TTL, or a
    /// grant's claim window.
    pub ttl: Duration,
}

/// What the wait is for.
pub(crate) struct Want<'a> {
    pub kind: Kind,
    pub name: &'a str,
    pub holder: &'a HolderId,
    pub config: &'a LeaseConfig,
    pub value: &'a str,
    /// The lease must stay ours at least this long without a renewal when
    /// handed over (e.g. the supervisor's stop budget); a grant with less
    /// left is claimed first.
    pub min_validity: Duration,
}

/// Tries until the lease is ours. Cancel-safe: dropping the future leaves the
/// queue (in the background; [`crate::Client::close`] waits for it).
pub(crate) async fn acquire(backend: &Backend, want: &Want<'_>) -> Result<Won> {
    let Want {
        kind,
        name,
        holder,
        config,
        value,
        ..
    } = *want;
    let mut queued = LeaveOnDrop {
        backend: backend.clone(),
        name: name.to_string(),
        holder: holder.clone(),
        kind,
        armed: true,
    };
    let attempt = Attempt {
        kind,
        name,
        holder,
        ttl: config.ttl(),
        value,
        queue: true,
    };
    // Already subscribed (this client just waited on the name): the wake-up
    // is registered before the first attempt, which then counts as the first
    // attempt of the loop below — nothing published after it is missed.
    let early = backend.subscription_if_ready(name).await?;
    let early_wake = early.as_ref().map(|s| s.wake(holder.as_str()));
    // Fast path: a free lease costs one round trip, no subscription. If this
    // fails without an early subscription, the release we might miss while
    // subscribing is caught by the attempt that follows the subscription.
    let sent = Instant::now();
    let mut first_reply = match backend.attempt(&attempt).await {
        Ok(AcquireReply::Acquired { token }) => {
            queued.armed = false;
            return Ok(Won {
                token,
                sent,
                ttl: config.ttl(),
            });
        }
        Err(e) if !e.is_unavailable() => return Err(e),
        reply => early.is_some().then_some((sent, reply)),
    };
    let sub = match early {
        Some(sub) => sub,
        None => backend.subscribe(name).await?,
    };
    let wake = match early_wake {
        Some(w) => w,
        None => sub.wake(holder.as_str()),
    };
    let mut seen: Option<(String, u64)> = None;
    let mut told_quarantine = false;
    let mut backoff = Duration::from_millis(50);
    // The send instant of the latest attempt answered "held by someone
    // else", with the token it saw. A grant with a larger token was made
    // after Redis processed that attempt (tokens only grow), so after it was
    // sent; any other grant (an old one, found late) must be claimed first.
    let mut last_held: Option<(Instant, u64)>;
    loop {
        let (confirmed, sent, reply) = match first_reply.take() {
            // The fast path's attempt, sent with the wake-up registered and
            // the subscription confirmed: whatever the mailbox holds came
            // after it (grants name this acquisition's own holder id, which
            // only that attempt put in line).
            Some((sent, reply)) => (true, sent, reply),
            None => {
                let confirmed = sub.ensure_confirmed().await?;
                // What the line told us before this attempt is stale once it
                // is sent: the attempt finds a grant made before it (the
                // lease is ours, and is extended), and only what comes after
                // it may be taken on the proof of its token. A grant kept
                // across a failed attempt could come from a server that has
                // since restarted without it.
                let _ = wake.take_grant();
                let _ = wake.take_on_deck();
                let sent = Instant::now();
                (confirmed, sent, backend.attempt(&attempt).await)
            }
        };
        let mut precise = false;
        let wait = match reply {
            Ok(AcquireReply::Acquired { token }) => {
                queued.armed = false;
                return Ok(Won {
                    token,
                    sent,
                    ttl: config.ttl(),
                });
            }
            Ok(AcquireReply::Queued { wait, head }) => {
                last_held = None;
                tracing::debug!(
                    "waiting for '{name}': free, but {} is first in line",
                    head.readable()
                );
                wait + jitter(EXPIRY_JITTER)
            }
            Ok(AcquireReply::Held { info, first }) => {
                last_held = Some((sent, info.token.0));
                let key = (info.holder.as_str().to_string(), info.token.0);
                if seen.as_ref() != Some(&key) {
                    tracing::info!(
                        "waiting for '{name}', held by {} (token {}), expires in {:.1}s",
                        info.holder.readable(),
                        info.token,
                        info.ttl_left.as_secs_f64()
                    );
                    seen = Some(key);
                }
                backoff = Duration::from_millis(50);
                // Only the first in line needs to be there the moment a
                // crashed holder's lease expires; the others spread out.
                precise = first;
                if first {
                    info.ttl_left
                } else {
                    info.ttl_left + Duration::from_millis(1) + jitter(EXPIRY_JITTER)
                }
            }
            Ok(AcquireReply::Full {
                wait,
                first,
                last_token,
                ..
            }) => {
                last_held = Some((sent, last_token.0));
                backoff = Duration::from_millis(50);
                precise = first;
                if first {
                    wait
                } else {
                    wait + Duration::from_millis(1) + jitter(EXPIRY_JITTER)
                }
            }
            Ok(AcquireReply::NoMajority { wait }) => {
                last_held = None;
                backoff = Duration::from_millis(50);
                wait + jitter(EXPIRY_JITTER)
            }
            Ok(AcquireReply::Quarantined { wait }) => {
                last_held = None;
                if !told_quarantine {
                    tracing::warn!(
                        "'{name}' is free, but this Redis may lack writes it confirmed before (it restarted, failed over to a replica, or is new to leasehold): nobody starts for {:.1}s, until every earlier holder's deadline has passed. Avoid it with persistence (appendonly yes, appendfsync always) and --min-replicas, or a Redis that has been up longer than the TTL",
                        wait.as_secs_f64()
                    );
                    told_quarantine = true;
                }
                wait + jitter(EXPIRY_JITTER)
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!("waiting for '{name}': {e}; retrying in {backoff:?}");
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                // Not queued: nothing is handed to us, and a release (maybe
                // our own, e.g. of an acquisition not replicated in time)
                // must not cut the backoff short.
                tokio::time::sleep(w).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let wait = if confirmed {
            wait
        } else {
            wait.min(UNCONFIRMED_CAP)
        };
        // Counted from the send instant: the script measured the time left
        // about half a round trip later, so the first in line arrives right
        // at the expiry rather than a round trip after it.
        let mut until = sent + wait;
        loop {
            tokio::select! {
                _ = wake.called() => {
                    if let Some(grant) = wake.take_grant() {
                        match take_grant(backend, want, grant, last_held).await {
                            Some(won) => {
                                queued.armed = false;
                                return Ok(won);
                            }
                            None => break,
                        }
                    }
                    match wake.take_on_deck() {
                        // Next after a grant: come when it lapses unless claimed.
                        Some(at) => until = until.min(at + Duration::from_millis(1)),
                        None => break,
                    }
                }
                _ = sub.released() => break,
                _ = sleep_until(until, precise) => break,
            }
        }
    }
}

/// How close to its instant tokio's timer is left to wake a precise sleep;
/// the rest is spent yielding. Tokio's timer has millisecond ticks and never
/// fires early: a plain sleep ends up to a tick late.
const PRECISE_SPIN: Duration = Duration::from_micros(1500);

/// Sleeps until `until`; `precise`: to within microseconds rather than a
/// timer tick (the first in line at an expiry: every tick late is a tick the
/// lease of a crashed holder stays unused). Costs at most `PRECISE_SPIN` of
/// yielding, once per expiry the waiter comes for.
async fn sleep_until(until: Instant, precise: bool) {
    if !precise {
        return tokio::time::sleep_until(until.into()).await;
    }
    if let Some(early) = until.checked_sub(PRECISE_SPIN) {
        tokio::time::sleep_until(early.into()).await;
    }
    while Instant::now() < until {
        tokio::task::yield_now().await;
    }
}

/// A release handed us the lease. Use it as it is when it is certainly newer
/// than our latest attempt that saw someone else hold it (its token is
/// larger) and enough of its claim window is left, counted from that
/// attempt's send instant (Redis processed it before the release, so the
/// deadline never overestimates). Otherwise claim it first: a renewal that
/// Redis refuses unless the lease is still ours *with this token* — a grant
/// found late may have lapsed and passed on meanwhile. `None`: it is not ours
/// (any more); attempt again.
async fn take_grant(
    backend: &Backend,
    want: &Want<'_>,
    grant: Grant,
    last_held: Option<(Instant, u64)>,
) -> Option<Won> {
    let token = FencingToken(grant.token);
    if let Some((sent, seen)) = last_held
        && seen < grant.token
        && !backend.confirms_writes()
    {
        let deadline = deadline::safety_deadline(sent, grant.claim);
        let need = want.min_validity.max(grant.claim / 2);
        if deadline > Instant::now() + need {
            return Some(Won {
                token,
                sent,
                ttl: grant.claim,
            });
        }
    }
    let ttl = want.config.ttl();
    let sent = Instant::now();
    match backend
        .claim(want.kind, want.name, want.holder, ttl, token)
        .await
    {
        Ok(RenewReply::Renewed) => Some(Won { token, sent, ttl }),
        Ok(RenewReply::Refused { reason }) => {
            tracing::debug!(
                "a grant of '{}' was gone before claimed: {reason}",
                want.name
            );
            None
        }
        // Unknown: the next attempt finds it ours (and extends it) or not.
        Err(_) => None,
    }
}

/// Leaves the queue (and gives back a grant that came too late) when a waiter
/// stops waiting without the lease, so that it does not hold up the line
/// until its place lapses.
struct LeaveOnDrop {
    backend: Backend,
    kind: Kind,
    name: String,
    holder: HolderId,
    armed: bool,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (b, k, n, h) = (
            self.backend.clone(),
            self.kind,
            self.name.clone(),
            self.holder.clone(),
        );
        self.backend.cleanups().spawn(async move {
            let _ = b.leave(k, &n, &h).await;
        });
    }
}
