//! Lease configuration, validated once when it is built: a [`LeaseConfig`]
//! can only be obtained through validation, so code that holds one need not
//! check it again.
//!
//! Rules (each has its own message, naming the bad value):
//! - TTL is at least [`MIN_TTL`] (100 ms), at most [`MAX_TTL`] (1 day), and a
//!   whole number of milliseconds (Redis keeps milliseconds);
//! - renewal happens every TTL/3 unless set, and must be shorter than TTL
//!   minus the drift (see [`crate::deadline`]);
//! - the retry interval after a failed renewal is TTL/20 (at least 10 ms),
//!   at most the renewal interval.
//!
//! You rarely build one yourself: [`LeaseBuilder`](crate::LeaseBuilder)
//! validates its settings into one when it acquires, and
//! [`Lease::config`](crate::Lease::config) shows it. Build one to check
//! settings up front, as the CLI does with
//! [`Supervisor::check_fits`](crate::supervisor::Supervisor::check_fits).
//!
//! ```
//! use std::time::Duration;
//! use leasehold::LeaseConfig;
//!
//! let c = LeaseConfig::new(Duration::from_secs(9))?;
//! assert_eq!(c.renew_every(), Duration::from_secs(3));
//! assert!(LeaseConfig::new(Duration::from_millis(50)).is_err());
//! # Ok::<(), leasehold::Error>(())
//! ```

use std::time::Duration;

use crate::deadline;
use crate::error::{Error, Result};

/// Smallest TTL accepted: below this the drift margin and a round trip eat the lease.
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// Largest TTL accepted.
pub const MAX_TTL: Duration = Duration::from_secs(86_400);

/// How a lease is held. Obtain one through [`LeaseConfig::new`], which validates.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    ttl: Duration,
    renew_every: Duration,
    retry_every: Duration,
}

impl LeaseConfig {
    /// A config with `ttl`, renewal every `ttl/3`, retries every `ttl/20` (at least 10 ms).
    ///
    /// # Errors
    /// [`Error::BadConfig`] when `ttl` breaks a rule listed in the module doc.
    pub fn new(ttl: Duration) -> Result<LeaseConfig> {
        Self::with_intervals(ttl, None)
    }

    /// Like [`LeaseConfig::new`] with an explicit renewal interval (`None`:
    /// TTL/3).
    ///
    /// # Errors
    /// [`Error::BadConfig`] when `ttl` or `renew_every` breaks a rule listed
    /// in the module doc.
    pub fn with_intervals(ttl: Duration, renew_every: Option<Duration>) -> Result<LeaseConfig> {
        let bad = |rule: String| Error::BadConfig {
            what: "TTL",
            value: humantime::format_duration(ttl).to_string(),
            rule,
        };
        if ttl.is_zero() {
            return Err(bad("a lease needs a TTL above zero (try 10s)".into()));
        }
        if ttl < MIN_TTL {
            return Err(bad(format!(
                "must be at least {}: below that the {} drift margin and one Redis round trip leave no time to hold it",
                humantime::format_duration(MIN_TTL),
                humantime::format_duration(deadline::drift(ttl)),
            )));
        }
        if ttl > MAX_TTL {
            return Err(bad(
                "must be at most 1 day; renewal keeps a lease as long as needed".into(),
            ));
        }
        if !ttl.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(bad("must be a whole number of milliseconds".into()));
        }
        let renew_every = renew_every.unwrap_or(ttl / 3);
        if renew_every.is_zero() || renew_every >= ttl.saturating_sub(deadline::drift(ttl)) {
            return Err(Error::BadConfig {
                what: "renewal interval",
                value: humantime::format_duration(renew_every).to_string(),
                rule: format!(
                    "must be above zero and well below the TTL {} (default TTL/3)",
                    humantime::format_duration(ttl)
                ),
            });
        }
        // At most 500 ms: after a restart, a holder's refused renewal is what
        // tells the new server its TTL (the quarantine must cover it), so it
        // must not wait long for its next try, whatever its TTL.
        let retry_every = (ttl / 20)
            .max(Duration::from_millis(10))
            .min(Duration::from_millis(500))
            .min(renew_every);
        Ok(LeaseConfig {
            ttl,
            renew_every,
            retry_every,
        })
    }

    /// How long Redis keeps the lease without a renewal; the failover time
    /// after a crash.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long after a confirmed renewal (or the acquisition) the next one
    /// is sent.
    pub fn renew_every(&self) -> Duration {
        self.renew_every
    }

    /// How soon a failed or unanswered renewal is tried again (never past the
    /// safety deadline).
    pub fn retry_every(&self) -> Duration {
        self.retry_every
    }

    /// The drift margin subtracted from every deadline: [`deadline::drift`]
    /// of the TTL.
    pub fn drift(&self) -> Duration {
        deadline::drift(self.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(LeaseConfig::new(Duration::ZERO).is_err());
        assert!(LeaseConfig::new(Duration::from_millis(99)).is_err());
        assert!(LeaseConfig::new(Duration::from_micros(100_500)).is_err());
        assert!(LeaseConfig::new(Duration::from_secs(86_401)).is_err());
        let c = LeaseConfig::new(Duration::from_secs(9)).expect("valid");
        assert_eq!(c.renew_every(), Duration::from_secs(3));
        assert!(
            LeaseConfig::with_intervals(Duration::from_secs(1), Some(Duration::from_secs(1)))
                .is_err()
        );
    }
}
