//! The stop path, on an OS thread of its own.
//!
//! SIGTERM at `D - (grace + KILL_MARGIN)` and SIGKILL at `D - KILL_MARGIN` (or
//! `grace` after SIGTERM, whichever is first) must happen however busy or
//! stuck the async runtime is: a runtime blocked on a full stderr pipe, or
//! starved, cannot delay them. So a dedicated thread keeps its own timer on
//! the monotonic clock. The runtime only ever moves the deadline *later*, by
//! passing on each confirmed renewal; if it stops doing so, the thread acts on
//! the last deadline it was told, which is the safe direction.
//!
//! The thread signals first and only then reports what it did through a
//! channel; it never logs. After [`Stopper::finish`] returns it sends nothing
//! more, so the caller may reap the child without racing a signal to a
//! recycled pid.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::mpsc::UnboundedSender;

use super::KILL_MARGIN;
use super::contain::Target;
use crate::deadline;

/// What the thread did, for the runtime to log and account for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// SIGTERM sent because the safety deadline came within the stop budget.
    TermedForDeadline,
    /// SIGTERM sent because a stop was requested.
    Termed,
    /// SIGKILL sent.
    Killed,
}

#[derive(Default)]
struct Plan {
    /// The lease's safety deadline, as of the last confirmed renewal.
    deadline: Option<Instant>,
    /// A stop was requested for this instant (lease lost).
    stop_at: Option<Instant>,
    /// When the first stop signal went out (ours, or one forwarded).
    termed: Option<Instant>,
    killed: bool,
    finished: bool,
}

struct Shared {
    plan: Mutex<Plan>,
    wake: Condvar,
}

pub(crate) struct Stopper {
    shared: Arc<Shared>,
}

impl Stopper {
    /// Starts the thread for `target`, with the lease's current deadline.
    pub(crate) fn start(
        target: Arc<Target>,
        grace: Duration,
        deadline: Option<Instant>,
        events: UnboundedSender<Event>,
    ) -> std::io::Result<Stopper> {
        let shared = Arc::new(Shared {
            plan: Mutex::new(Plan {
                deadline,
                ..Plan::default()
            }),
            wake: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("leasehold-stop".into())
            .spawn(move || run(&s, &target, grace, &events))?;
        Ok(Stopper { shared })
    }

    /// A renewal was confirmed: the deadline moves to `d`.
    pub(crate) fn renewed(&self, d: Instant) {
        self.update(|p| p.deadline = Some(p.deadline.map_or(d, |old| old.max(d))));
    }

    /// Stop now: SIGTERM, and SIGKILL after grace (or at the deadline's margin).
    pub(crate) fn stop_now(&self) {
        let now = Instant::now();
        self.update(|p| p.stop_at = Some(p.stop_at.map_or(now, |s| s.min(now))));
    }

    /// The caller already sent a stop signal (forwarded): SIGKILL after grace.
    pub(crate) fn forwarded(&self) {
        let now = Instant::now();
        self.update(|p| {
            p.termed.get_or_insert(now);
        });
    }

    /// The child exited: no signal after this returns.
    pub(crate) fn finish(&self) {
        self.update(|p| p.finished = true);
    }

    fn update(&self, f: impl FnOnce(&mut Plan)) {
        f(&mut lock(&self.shared));
        self.shared.wake.notify_one();
    }
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.finish();
    }
}

fn lock(s: &Shared) -> MutexGuard<'_, Plan> {
    // The plan stays consistent even if a holder panicked: every update is a
    // single assignment.
    s.plan.lock().unwrap_or_else(PoisonError::into_inner)
}

fn min(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn run(s: &Shared, target: &Target, grace: Duration, events: &UnboundedSender<Event>) {
    let budget = grace + KILL_MARGIN;
    let mut plan = lock(s);
    loop {
        if plan.finished {
            return;
        }
        let now = Instant::now();
        let by_deadline = |d: Option<Instant>, b| d.map(|d| deadline::stop_at(d, b));
        let term_at = match plan.termed {
            Some(_) => None,
            None => min(plan.stop_at, by_deadline(plan.deadline, budget)),
        };
        let kill_at = match plan.killed {
            true => None,
            false => min(
                plan.termed.map(|t| t + grace),
                by_deadline(plan.deadline, KILL_MARGIN),
            ),
        };
        if let Some(t) = term_at.filter(|t| *t <= now) {
            target.signal(Signal::SIGTERM);
            plan.termed = Some(now);
            let requested = plan.stop_at.is_some_and(|s| s <= t);
            let _ = events.send(match requested {
                true => Event::Termed,
                false => Event::TermedForDeadline,
            });
            continue;
        }
        if kill_at.is_some_and(|k| k <= now) {
            target.kill();
            plan.killed = true;
            let _ = events.send(Event::Killed);
            continue;
        }
        plan = match min(term_at, kill_at) {
            Some(at) => {
                s.wake
                    .wait_timeout(plan, at.saturating_duration_since(now))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => s.wake.wait(plan).unwrap_or_else(PoisonError::into_inner),
        };
    }
}
