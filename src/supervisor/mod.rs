//! Running a child process only while a lease is held.
//!
//! # Theory of operation
//! The child starts after the lease is acquired, with `LEASEHOLD_NAME`,
//! `LEASEHOLD_TOKEN` and `LEASEHOLD_HOLDER` in its environment, *contained*
//! (`contain.rs`): in a PID namespace of its own (`pidns.rs`), a cgroup of its
//! own (`cgroup.rs`), or its own process group with this process as child
//! subreaper, so that a stop reaches everything it started, `setsid`
//! descendants included. From then on:
//! - a thread of its own (`stopper.rs`) holds the lease's safety deadline on
//!   its own timer: SIGTERM to the whole job when the deadline comes within the
//!   *stop budget* (`grace` + [`KILL_MARGIN`]) without a confirmed renewal, or
//!   at once when the lease is lost; SIGKILL `grace` later, and never later than
//!   [`KILL_MARGIN`] before the deadline. A stuck runtime cannot delay it;
//! - this task passes each confirmed renewal on to that thread, forwards
//!   SIGTERM/SIGINT/SIGHUP to the job (SIGKILL after `grace`), and logs what
//!   the thread did, after it did it;
//! - in a terminal's foreground, the job's group holds the terminal while it
//!   runs (`terminal.rs`);
//! - when the child exits, whatever it left behind is killed, and its status
//!   is the outcome.
//!
//! # What is guaranteed, and what is not
//! - The job gets SIGTERM when the lease's safety deadline comes within the
//!   stop budget without a confirmed renewal, and SIGKILL by
//!   [`KILL_MARGIN`] before the deadline: every process of the job is dead
//!   before Redis could give the lease to anyone else — as long as this
//!   process and its stop thread are not paused themselves (a frozen VM
//!   stops everything; that is what fencing tokens are for).
//! - [`Supervisor::check_fits`] refuses a grace that does not fit in the
//!   TTL; call it before acquiring.
//! - What "every process" means depends on the [`Containment`]: see
//!   [`Contain`]. Work handed to another service (`systemd-run`, `ssh`)
//!   is never caught.
//!
//! ```no_run
//! # async fn demo(client: leasehold::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use leasehold::LeaseConfig;
//! use leasehold::supervisor::{Contain, Outcome, Signals, Supervisor};
//!
//! let ttl = Duration::from_secs(10);
//! let supervisor = Supervisor::new("/opt/report/run.sh", vec![])
//!     .grace(Duration::from_secs(1))
//!     .containment(Contain::Auto.resolve()?);
//! supervisor.check_fits(&LeaseConfig::new(ttl)?)?; // before waiting in line
//! let mut signals = Signals::install()?;
//! let lease = client
//!     .lease("nightly-report")
//!     .ttl(ttl)
//!     .min_validity(supervisor.stop_budget())
//!     .acquire()
//!     .await?;
//! match supervisor.run_while_held(&lease, signals.recv()).await? {
//!     Outcome::Exited(status) => println!("done: {status}"),
//!     Outcome::Lost { reason, .. } => eprintln!("lost the lease ({reason}); the job was stopped"),
//!     Outcome::Interrupted { signal, .. } => eprintln!("signal {signal}; the job was stopped"),
//! }
//! lease.release().await?;
//! # Ok(()) }
//! ```

mod cgroup;
mod child;
mod contain;
mod pidns;
mod signals;
mod stopper;
mod terminal;

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::config::LeaseConfig;
use crate::error::Error;
use crate::lease::{Guard, LeaseState, LostReason};
pub use contain::{Contain, Containment};
pub use signals::Signals;
use stopper::Stopper;

/// Time reserved after `grace` for SIGKILL to take effect and the group to be reaped.
pub const KILL_MARGIN: Duration = Duration::from_millis(100);

/// How a supervised run ended.
///
/// Deliberately exhaustive: a run ends because the child exited, because the
/// lease was lost, or because we were told to stop; callers (the CLI picks
/// its exit code from it) match all three.
#[derive(Debug)]
pub enum Outcome {
    /// The child exited by itself.
    Exited(ExitStatus),
    /// The lease was lost (or about to be); the child was stopped.
    Lost {
        /// Why the lease was lost.
        reason: LostReason,
        /// How the child ended (usually by SIGTERM or SIGKILL).
        status: ExitStatus,
    },
    /// The supervisor got `signal`, forwarded it, and the child ended; or,
    /// in a terminal's foreground, the user's Ctrl-C (Ctrl-\) ended the job.
    Interrupted {
        /// The signal's number (`libc::SIGTERM`, …).
        signal: i32,
        /// How the child ended.
        status: ExitStatus,
    },
}

/// A command to run while holding a lease.
#[derive(Clone, Debug)]
pub struct Supervisor {
    program: OsString,
    args: Vec<OsString>,
    grace: Duration,
    env: Vec<(String, String)>,
    /// Variables of this process the child does not inherit.
    env_remove: Vec<String>,
    containment: Containment,
    /// Whether the containment was announced (once, at the first start).
    announced: Arc<AtomicBool>,
}

/// True while `pid` exists and is not a zombie (a zombie is dead already,
/// just not reaped by its new parent).
// Hidden, not part of the stable API: the fault-injection toolkit of the
// binary (src/bin/leasehold/faults.rs, also compiled into the tests) checks
// that no worker outlived its lease with it.
#[doc(hidden)]
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The conventional shell exit code of a status: the code, or 128 + signal
/// (what `leasehold run` exits with).
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    }
}

impl Supervisor {
    /// `program` with `args` (looked up in `PATH` when it has no `/`);
    /// grace defaults to 2 s, containment to the process group.
    pub fn new(program: impl Into<OsString>, args: Vec<OsString>) -> Supervisor {
        Supervisor {
            program: program.into(),
            args,
            grace: Duration::from_secs(2),
            env: Vec::new(),
            env_remove: Vec::new(),
            containment: Containment::group(),
            announced: Arc::new(AtomicBool::new(false)),
        }
    }

    /// How long the child may take to exit after SIGTERM before SIGKILL
    /// (default 2 s). Must fit in the lease: see [`Supervisor::check_fits`].
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How the job's process tree is held together (default: the process
    /// group, see [`Contain::resolve`] for more). The first start logs it once,
    /// at warn level, with what it cannot catch.
    pub fn containment(mut self, c: Containment) -> Self {
        self.containment = c;
        self
    }

    /// Adds a variable to the child's environment.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Keeps a variable of this process out of the child's environment (e.g.
    /// the Redis credentials: a job that has them can rewrite every lease).
    pub fn env_remove(mut self, key: impl Into<String>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// How long before the safety deadline stopping must begin: the grace
    /// plus [`KILL_MARGIN`]. Give it to
    /// [`LeaseBuilder::min_validity`](crate::LeaseBuilder::min_validity), so
    /// that a lease handed over has at least that long left.
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
        let half = config.ttl() / 2;
        if KILL_MARGIN > half {
            // Not even a grace of zero fits: stopping would begin the moment
            // the child starts, every time.
            return Err(Error::BadConfig {
                what: "TTL",
                value: humantime::format_duration(config.ttl()).to_string(),
                rule: format!(
                    "is too short to run a child: stopping it takes {} after SIGKILL, which must fit in half the TTL; use a TTL of at least {} (plus twice the grace)",
                    humantime::format_duration(KILL_MARGIN),
                    humantime::format_duration(KILL_MARGIN * 2),
                ),
            });
        }
        let room = half - KILL_MARGIN;
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

    /// Starts the child and supervises it while `lease` (or a permit) is held.
    /// When `shutdown` resolves with a signal number, that signal is
    /// forwarded to the job and the stop begins (SIGKILL after the grace).
    ///
    /// Stop signals come from a thread of their own (`stopper.rs`) that keeps
    /// the lease's deadline on its own timer: a busy or blocked runtime (a
    /// full stderr pipe) cannot delay them. This task only passes on each
    /// confirmed renewal, forwards signals, and logs after the fact.
    ///
    /// The child gets `LEASEHOLD_NAME`, `LEASEHOLD_TOKEN` and
    /// `LEASEHOLD_HOLDER` in its environment. The lease is left as it is:
    /// release it (or campaign again) after.
    ///
    /// Cancel-safety: dropping the future kills the job at once (SIGKILL, no
    /// grace); resolve `shutdown` instead for a graceful stop.
    ///
    /// # Errors
    /// Only when the child cannot be started (not found, not executable).
    pub async fn run_while_held(
        &self,
        lease: &impl Guard,
        shutdown: impl std::future::Future<Output = i32>,
    ) -> std::io::Result<Outcome> {
        let mut env = self.env.clone();
        env.push(("LEASEHOLD_NAME".into(), lease.name().to_string()));
        env.push(("LEASEHOLD_TOKEN".into(), lease.token().to_string()));
        env.push(("LEASEHOLD_HOLDER".into(), lease.holder().to_string()));
        crate::telemetry::containment(self.containment.name());
        // In a terminal's foreground: the job's group takes the terminal
        // while it runs (`terminal.rs`).
        let terminal = terminal::Foreground::detect();
        // Taken back when the child exits (below), and on every early return.
        let _give_back = terminal.map(terminal::TakeBack);
        let (mut child, target) = child::spawn(
            &self.program,
            &self.args,
            &env,
            &self.env_remove,
            &self.containment,
            terminal,
        )?;
        if !self.announced.swap(true, Ordering::Relaxed) {
            // Once, at every verbosity, after the first successful start (so
            // that a usage or exec error stays the only line): what holds the
            // job together, and what it cannot catch.
            tracing::warn!("{}", self.containment.summary());
        }
        let target = Arc::new(target);
        let pidfd = child.id().and_then(exit_fd);
        let mut state = lease.state();
        let held = match &*state.borrow_and_update() {
            LeaseState::Held { deadline, .. } => Some(*deadline),
            _ => None,
        };
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let stopper = Stopper::start(Arc::clone(&target), self.grace, held, events_tx)?;
        let mut cause = None;
        if held.is_none() {
            stopper.stop_now();
            cause = Some(StopCause::Lost(LostReason::Unconfirmed(
                "not held when the child started".into(),
            )));
        }
        let budget = self.stop_budget();
        let mut renewing = true;
        let mut shut_down = false;
        let shutdown = std::pin::pin!(shutdown);
        let mut shutdown = shutdown;
        let mut stop_check = tokio::time::interval(Duration::from_millis(200));
        stop_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reaped = {
            // Exit seen through a pidfd leaves the child unreaped, so that the
            // stop thread can be told to stop before its pid can be recycled.
            let mut exit = Box::pin(async {
                match &pidfd {
                    Some(fd) => fd.readable().await.map(|_| None),
                    None => child.wait().await.map(Some),
                }
            });
            loop {
                tokio::select! {
                    r = &mut exit => break r?,
                    Some(ev) = events.recv() => on_stop_event(ev, &mut cause, lease.name(), budget),
                    changed = state.changed(), if renewing => {
                        if changed.is_err() {
                            // The renewal service ended: its last state stands. If it ended
                            // without one (runtime shutting down), nothing renews.
                            renewing = false;
                            if matches!(&*state.borrow(), LeaseState::Held { .. }) {
                                stopper.stop_now();
                                cause.get_or_insert(StopCause::Lost(LostReason::Unconfirmed(
                                    "renewal stopped".into(),
                                )));
                            }
                            continue;
                        }
                        match &*state.borrow_and_update() {
                            LeaseState::Held { deadline, .. } => stopper.renewed(*deadline),
                            LeaseState::Lost(reason) => {
                                stopper.stop_now();
                                cause.get_or_insert(StopCause::Lost(reason.clone()));
                            }
                            LeaseState::Released => {
                                stopper.stop_now();
                                cause.get_or_insert(StopCause::Lost(LostReason::Unconfirmed(
                                    "released while the child ran".into(),
                                )));
                            }
                        }
                    }
                    _ = stop_check.tick(), if terminal.is_some() => {
                        if terminal.is_some_and(|t| t.continue_stopped()) {
                            tracing::warn!(
                                "the job was stopped from the terminal; a job holding lease '{}' cannot be suspended, so it was continued (Ctrl-C ends it)",
                                lease.name()
                            );
                        }
                    }
                    sig = &mut shutdown, if !shut_down => {
                        shut_down = true;
                        if let Ok(s) = Signal::try_from(sig) {
                            target.signal(s);
                        }
                        stopper.forwarded();
                        cause.get_or_insert(StopCause::Signal(sig));
                        tracing::info!("forwarded signal {sig} to the child");
                    }
                }
            }
        };
        if let Some(t) = &terminal {
            t.take_back();
        }
        stopper.finish();
        // The thread reports while it holds the plan, so after finish() every
        // report it made is here: a stop it began decides the outcome.
        while let Ok(ev) = events.try_recv() {
            on_stop_event(ev, &mut cause, lease.name(), budget);
        }
        // Whatever the job left behind goes too.
        target.finish().await;
        let status = match reaped {
            Some(status) => status,
            None => child.wait().await?,
        };
        Ok(match cause {
            // Killed by the terminal's Ctrl-C or Ctrl-\, which only the job
            // (holding the terminal) got: the user's interrupt, as a shell
            // takes it, not a failure to campaign again after.
            None if terminal.is_some()
                && matches!(status.signal(), Some(libc::SIGINT | libc::SIGQUIT)) =>
            {
                Outcome::Interrupted {
                    signal: status.signal().unwrap_or(libc::SIGINT),
                    status,
                }
            }
            None => Outcome::Exited(status),
            Some(StopCause::Lost(reason)) => Outcome::Lost { reason, status },
            Some(StopCause::Signal(signal)) => Outcome::Interrupted { signal, status },
        })
    }
}

/// Logs what the stop thread did (after it did it) and records why.
fn on_stop_event(ev: stopper::Event, cause: &mut Option<StopCause>, name: &str, budget: Duration) {
    match ev {
        stopper::Event::TermedForDeadline => {
            let reason = LostReason::Unconfirmed(format!(
                "no renewal confirmed {budget:?} before the safety deadline"
            ));
            tracing::warn!("lease '{name}' lost ({reason}); stopping the child (SIGTERM sent)");
            cause.get_or_insert(StopCause::Lost(reason));
        }
        stopper::Event::Termed => match cause {
            Some(StopCause::Lost(reason)) => {
                tracing::warn!("lease '{name}' lost ({reason}); stopping the child (SIGTERM sent)")
            }
            _ => tracing::warn!("stopping the child (SIGTERM sent)"),
        },
        stopper::Event::Killed => {
            tracing::warn!("child still running at its stop deadline; killed it (SIGKILL sent)");
        }
    }
}

/// A pidfd for `pid` (Linux 5.3): readable once the process exited, before it
/// is reaped. `None` on older kernels (then the exit is seen by reaping).
fn exit_fd(pid: u32) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the fd was just returned to us and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // SAFETY: the AsyncFd owns the fd and neither replaces nor closes it
    // while registered.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
}

enum StopCause {
    Lost(LostReason),
    Signal(i32),
}
