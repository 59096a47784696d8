//! Deadline arithmetic, pure so that it can be tested without Redis or a clock.
//!
//! A request's outcome is known only when its reply arrives, but the TTL it set
//! in Redis started counting at some moment after it was *sent*. Measuring from
//! the send instant therefore never overestimates how long the lease is ours.
//! The drift margin covers the difference between the rates of our monotonic
//! clock and Redis's clock, plus timer lateness (Redlock's validity time).
//!
//! Every instant here is on the local *monotonic* clock ([`Instant`]), which
//! no NTP step or wall-clock change can move; only the clocks' *rates* must
//! agree within the drift margin. The lease layer uses these functions; they
//! are public so that you (and the tests) can check the numbers:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use leasehold::deadline::{drift, safety_deadline};
//!
//! let sent = Instant::now(); // when the acquire (or renew) request left
//! let ttl = Duration::from_secs(10);
//! assert_eq!(drift(ttl), Duration::from_millis(102));
//! // Ours for 9.898 s from the send instant, whenever the reply arrives.
//! assert_eq!(safety_deadline(sent, ttl), sent + Duration::from_millis(9_898));
//! ```

use std::time::{Duration, Instant};

/// Clock drift allowed per TTL: 1 % plus 2 ms, as in Redlock.
pub fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// The instant until which a lease acquired or renewed by a request sent at
/// `sent` is certainly ours: `sent + ttl - drift(ttl)`.
pub fn safety_deadline(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl.saturating_sub(drift(ttl))
}

/// When to send the next renewal after a successful one sent at `sent`.
pub fn next_renewal(sent: Instant, renew_every: Duration) -> Instant {
    sent + renew_every
}

/// When to try again after a failed renewal, never later than the deadline.
pub fn retry_at(now: Instant, retry_every: Duration, deadline: Instant) -> Instant {
    (now + retry_every).min(deadline)
}

/// The instant at which a supervisor must start stopping its child so that the
/// child is gone by `deadline`: `deadline - stop_budget`.
pub fn stop_at(deadline: Instant, stop_budget: Duration) -> Instant {
    deadline.checked_sub(stop_budget).unwrap_or(deadline)
}

/// A small random delay so that waiters woken by the same expiry spread out.
pub(crate) fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let r = u16::from_le_bytes(b) as u32;
    max.mul_f64(r as f64 / u16::MAX as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_before_redis_expiry() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let d = safety_deadline(t0, ttl);
        assert_eq!(d, t0 + Duration::from_millis(10_000 - 102));
        assert!(d < t0 + ttl);
    }

    #[test]
    fn small_ttl_keeps_a_positive_window() {
        let t0 = Instant::now();
        let ttl = Duration::from_millis(100);
        assert_eq!(safety_deadline(t0, ttl), t0 + Duration::from_millis(97));
    }

    #[test]
    fn retries_never_pass_the_deadline() {
        let t0 = Instant::now();
        let d = t0 + Duration::from_millis(50);
        assert_eq!(retry_at(t0, Duration::from_millis(100), d), d);
        assert_eq!(
            retry_at(t0, Duration::from_millis(10), d),
            t0 + Duration::from_millis(10)
        );
    }

    #[test]
    fn stop_precedes_deadline_by_budget() {
        let t0 = Instant::now();
        let d = t0 + Duration::from_secs(5);
        assert_eq!(
            stop_at(d, Duration::from_secs(2)),
            t0 + Duration::from_secs(3)
        );
    }
}
