//! Running a child process only while a lease is held.
//!
//! # Theory of operation
//! The child starts after the lease is acquired, in its own process group,
//! with `LEASEHOLD_NAME`, `LEASEHOLD_TOKEN` and `LEASEHOLD_HOLDER` in its
//! environment. From then on the supervisor watches three things:
//! - the child exiting: its status is the outcome;
//! - the lease: when it is lost, or when its safety deadline comes within the
//!   *stop budget* (`grace` + [`KILL_MARGIN`]) without a confirmed renewal, the
//!   group gets SIGTERM, then SIGKILL after `grace`, so that the child is dead
//!   before the lease could expire in Redis;
//! - SIGTERM/SIGINT/SIGHUP to the supervisor: forwarded to the group; after
//!   `grace` the group is killed.
//!
//! After the child (group leader) exits, the rest of its group gets SIGKILL, so
//! nothing it left behind runs on without the lease.

mod child;
mod signals;

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::config::LeaseConfig;
use crate::deadline;
use crate::error::Error;
use crate::lease::{Lease, LeaseState, LostReason};
pub use signals::Signals;

/// Time reserved after `grace` for SIGKILL to take effect and the group to be reaped.
pub const KILL_MARGIN: Duration = Duration::from_millis(100);

/// How a supervised run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The child exited by itself.
    Exited(ExitStatus),
    /// The lease was lost (or about to be); the child was stopped.
    Lost {
        reason: LostReason,
        status: ExitStatus,
    },
    /// The supervisor got `signal`, forwarded it, and the child ended.
    Interrupted { signal: i32, status: ExitStatus },
}

/// A command to run while holding a lease.
#[derive(Clone, Debug)]
pub struct Supervisor {
    program: OsString,
    args: Vec<OsString>,
    grace: Duration,
    env: Vec<(String, String)>,
}

/// The conventional shell exit code of a status: the code, or 128 + signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    }
}

impl Supervisor {
    /// `program` with `args`; grace defaults to 2 s.
    pub fn new(program: impl Into<OsString>, args: Vec<OsString>) -> Supervisor {
        Supervisor {
            program: program.into(),
            args,
            grace: Duration::from_secs(2),
            env: Vec::new(),
        }
    }

    /// How long the child may take to exit after SIGTERM before SIGKILL.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Adds a variable to the child's environment.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// How long before the safety deadline stopping must begin.
    pub fn stop_budget(&self) -> Duration {
        self.grace + KILL_MARGIN
    }

    /// Checks that stopping fits in the lease: the stop budget must be at most
    /// half the TTL, so that a renewal (every TTL/3) and its retries come before
    /// stopping starts.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the largest grace that fits.
    pub fn check_fits(&self, config: &LeaseConfig) -> Result<(), Error> {
        let room = (config.ttl() / 2).saturating_sub(KILL_MARGIN);
        if self.grace > room {
            return Err(Error::BadConfig {
                what: "grace",
                value: humantime::format_duration(self.grace).to_string(),
                rule: format!(
                    "does not fit inside TTL {}: the child must be dead before the lease can expire; use a grace of at most {} or a longer TTL",
                    humantime::format_duration(config.ttl()),
                    humantime::format_duration(room),
                ),
            });
        }
        Ok(())
    }

    /// Starts the child and supervises it while `lease` is held.
    ///
    /// # Errors
    /// Only when the child cannot be started (not found, not executable).
    pub async fn run_while_held(
        &self,
        lease: &Lease,
        signals: &mut Signals,
    ) -> std::io::Result<Outcome> {
        let mut env = self.env.clone();
        env.push(("LEASEHOLD_NAME".into(), lease.name().to_string()));
        env.push(("LEASEHOLD_TOKEN".into(), lease.token().to_string()));
        env.push(("LEASEHOLD_HOLDER".into(), lease.holder().to_string()));
        let mut child = child::spawn(&self.program, &self.args, &env)?;
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        let mut state = lease.state();
        let budget = self.stop_budget();
        let grace = self.grace;
        let mut wait = Box::into_pin(Box::new(child.wait()));
        let mut phase = Phase::Running;
        let mut keeper_alive = true;
        loop {
            let now = Instant::now();
            // The latest moments the lease allows for SIGTERM and SIGKILL.
            let (term_by, kill_by) = match &*state.borrow() {
                LeaseState::Held { deadline, .. } => (
                    deadline::stop_at(*deadline, budget),
                    Some(deadline::stop_at(*deadline, KILL_MARGIN)),
                ),
                _ => (now, None),
            };
            let timer = match &phase {
                Phase::Running => Some(term_by),
                Phase::Stopping { kill_at, .. } => {
                    Some(kill_by.map_or(*kill_at, |k| k.min(*kill_at)))
                }
                Phase::Killed { .. } => None,
            };
            tokio::select! {
                status = &mut wait => {
                    let status = status?;
                    // Whatever the leader left behind in its group goes too.
                    child::signal_group(pgid, Signal::SIGKILL);
                    return Ok(match phase {
                        Phase::Running => Outcome::Exited(status),
                        Phase::Stopping { cause, .. } | Phase::Killed { cause } => match cause {
                            StopCause::Lost(reason) => Outcome::Lost { reason, status },
                            StopCause::Signal(signal) => Outcome::Interrupted { signal, status },
                        },
                    });
                }
                _ = sleep_until_opt(timer) => {
                    phase = match phase {
                        Phase::Running => {
                            let reason = match &*state.borrow() {
                                LeaseState::Lost(r) => r.clone(),
                                _ => LostReason::Unconfirmed(format!(
                                    "no renewal confirmed {budget:?} before the safety deadline"
                                )),
                            };
                            tracing::warn!("lease '{}' lost ({reason}); stopping the child", lease.name());
                            child::signal_group(pgid, Signal::SIGTERM);
                            Phase::Stopping { cause: StopCause::Lost(reason), kill_at: Instant::now() + grace }
                        }
                        Phase::Stopping { cause, .. } => {
                            tracing::warn!("child still running at its stop deadline; killing its process group");
                            child::signal_group(pgid, Signal::SIGKILL);
                            Phase::Killed { cause }
                        }
                        killed => killed,
                    };
                }
                changed = state.changed(), if keeper_alive => {
                    if changed.is_err() {
                        // The keeper ended: its last state stands. If it ended
                        // without one (runtime shutting down), nothing renews.
                        keeper_alive = false;
                        if matches!(&*state.borrow(), LeaseState::Held { .. }) {
                            let (_tx, rx) = tokio::sync::watch::channel(LeaseState::Lost(
                                LostReason::Unconfirmed("renewal stopped".into()),
                            ));
                            state = rx;
                        }
                    }
                }
                sig = signals.recv() => {
                    tracing::info!("forwarding signal {sig} to the child");
                    if let Ok(s) = Signal::try_from(sig) {
                        child::signal_group(pgid, s);
                    }
                    if matches!(phase, Phase::Running) {
                        phase = Phase::Stopping { cause: StopCause::Signal(sig), kill_at: Instant::now() + grace };
                    }
                }
            }
        }
    }
}

enum Phase {
    Running,
    /// SIGTERM sent; SIGKILL due at `kill_at` (or earlier if the lease demands).
    Stopping {
        cause: StopCause,
        kill_at: Instant,
    },
    Killed {
        cause: StopCause,
    },
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

enum StopCause {
    Lost(LostReason),
    Signal(i32),
}
