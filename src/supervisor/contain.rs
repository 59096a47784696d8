//! Containment: what makes sure that nothing the job started outlives the lease.
//!
//! | mode | how | stop and lease loss | supervisor killed |
//! |---|---|---|---|
//! | `pidns` | the job is PID 2 of its own PID namespace (`pidns.rs`) | everything inside | everything inside (the kernel kills the namespace) |
//! | `cgroup` | the job in its own cgroup v2 (`cgroup.rs`) | everything inside (`cgroup.kill`) | the direct child; the rest at the next start, or by systemd |
//! | `group` | process group + this process as child subreaper | the group, and descendants re-parented to us | the direct child only |

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::{cgroup, pidns};
use crate::error::Error;

/// Which containment to use; [`Contain::resolve`] checks it against this host.
///
/// | mode | stop and lease loss reach | when the supervisor is killed |
/// |---|---|---|
/// | `PidNs` | every process | every process (the kernel kills the namespace) |
/// | `Cgroup` | every process | the job's first process; the rest at the next start |
/// | `Group` | the group, and descendants re-parented to us | the job's first process only |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Contain {
    /// The best this host allows: `PidNs`, else `Cgroup`, else `Group`.
    Auto,
    /// A PID namespace (through a user namespace when not root).
    PidNs,
    /// A cgroup v2 of the job's own, killed with `cgroup.kill`.
    Cgroup,
    /// The job's process group, with this process as child subreaper.
    Group,
}

/// A containment checked to work here: made by [`Contain::resolve`] (or
/// [`Containment::group`]) and given to
/// [`Supervisor::containment`](super::Supervisor::containment). Cheap to clone.
#[derive(Clone)]
pub struct Containment {
    pub(crate) kind: Kind,
}

#[derive(Clone)]
pub(crate) enum Kind {
    PidNs(Arc<pidns::Plan>),
    Cgroup(cgroup::Parent),
    Group,
}

impl Contain {
    /// Checks what this host allows (one short-lived probe process for
    /// `PidNs`; a trial cgroup for `Cgroup`) and picks the containment.
    ///
    /// # Errors
    /// [`Error::BadConfig`] when an explicitly requested mode is not
    /// available here, naming why. `Auto` always succeeds.
    pub fn resolve(self) -> Result<Containment, Error> {
        let unavailable = |what: &str, e: std::io::Error| Error::BadConfig {
            what: "containment",
            value: what.to_string(),
            rule: format!("not available on this host ({e}); use auto to take the best available"),
        };
        match self {
            Contain::PidNs => try_pidns().map_err(|e| unavailable("pidns", e)),
            Contain::Cgroup => try_cgroup().map_err(|e| unavailable("cgroup", e)),
            Contain::Group => Ok(Containment::group()),
            Contain::Auto => {
                let pidns = try_pidns();
                if let Ok(c) = pidns {
                    return Ok(c);
                }
                if let Ok(c) = try_cgroup() {
                    return Ok(c);
                }
                Ok(Containment::group())
            }
        }
    }
}

fn try_pidns() -> std::io::Result<Containment> {
    let plan = pidns::Plan::for_this_process();
    pidns::probe(&plan).map_err(|e| {
        let how = if plan.userns.is_some() {
            "unshare(CLONE_NEWUSER|CLONE_NEWPID)"
        } else {
            "unshare(CLONE_NEWPID)"
        };
        std::io::Error::new(e.kind(), format!("{how}: {e}"))
    })?;
    Ok(Containment {
        kind: Kind::PidNs(Arc::new(plan)),
    })
}

fn try_cgroup() -> std::io::Result<Containment> {
    Ok(Containment {
        kind: Kind::Cgroup(cgroup::Parent::find()?),
    })
}

impl Containment {
    /// The process group, with this process as child subreaper: needs nothing
    /// from the host.
    pub fn group() -> Containment {
        Containment { kind: Kind::Group }
    }

    /// Every name [`Containment::name`] may return (what `leasehold status`
    /// accepts in a holder's note).
    pub const NAMES: [&'static str; 3] = ["pidns", "cgroup", "group"];

    /// `pidns`, `cgroup` or `group`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::PidNs(_) => Self::NAMES[0],
            Kind::Cgroup(_) => Self::NAMES[1],
            Kind::Group => Self::NAMES[2],
        }
    }

    /// One line: what is in force and what it cannot catch.
    pub fn summary(&self) -> String {
        match &self.kind {
            Kind::PidNs(plan) => format!(
                "containment pidns: the job runs in its own PID namespace{}; everything it starts dies with it, also when the supervisor is killed; not caught: work handed to other services (systemd-run, at, ssh)",
                if plan.userns.is_some() {
                    " (inside a user namespace, as the same user)"
                } else {
                    ""
                }
            ),
            Kind::Cgroup(_) => "containment cgroup: the job runs in a cgroup of its own, killed whole on stop; not caught: when the supervisor is killed, only the job's first process dies at once (the rest when the next supervisor starts here, or with the systemd unit)".to_string(),
            // PID 1 of a namespace (a container's entrypoint): if we die, the
            // kernel kills the namespace, which is what pidns would give.
            Kind::Group if std::process::id() == 1 => "containment group: stop reaches the job's process group and descendants re-parented to the supervisor; the supervisor is PID 1 of its PID namespace, so if it dies the kernel kills everything in it; not caught: work handed to other services".to_string(),
            Kind::Group => "containment group: stop reaches the job's process group and descendants re-parented to the supervisor; not caught: when the supervisor is killed, only the job's first process dies (use pidns or cgroup for the rest)".to_string(),
        }
    }
}

impl fmt::Debug for Containment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How one running job is reached. Used from the stop thread: `signal` and
/// `kill` do not allocate on the pidns and cgroup paths, and never log.
pub(crate) enum Target {
    /// The relay: signals go to it (it forwards them to init, which sends them
    /// to the whole namespace); SIGKILL to its group (relay and init) ends the
    /// namespace.
    PidNs { relay: Pid },
    /// Everything in the cgroup.
    Cgroup { cg: cgroup::JobCgroup },
    /// The group led by `pgid`, plus our children that came after it
    /// (re-parented orphans: we are a child subreaper).
    Group { pgid: Pid, since: u64 },
}

impl Target {
    /// `sig` to every process of the job.
    pub(crate) fn signal(&self, sig: Signal) {
        match self {
            Target::PidNs { relay } => {
                let _ = kill(*relay, sig);
            }
            Target::Cgroup { cg } => cg.signal(sig),
            Target::Group { pgid, since } => {
                let _ = killpg(*pgid, sig);
                for o in orphans(*pgid, *since) {
                    signal_with_group(o, sig);
                }
            }
        }
    }

    /// SIGKILL to every process of the job.
    pub(crate) fn kill(&self) {
        match self {
            Target::PidNs { relay } => {
                let _ = killpg(*relay, Signal::SIGKILL);
            }
            Target::Cgroup { cg } => cg.kill(),
            Target::Group { pgid, since } => {
                let _ = killpg(*pgid, Signal::SIGKILL);
                // Descendants outside the group come back to us one layer at a
                // time as their parents die: kill until none is left.
                let t = Instant::now();
                loop {
                    let left = orphans(*pgid, *since);
                    for o in &left {
                        signal_with_group(*o, Signal::SIGKILL);
                    }
                    if (left.is_empty() && !alive(*pgid))
                        || t.elapsed() > Duration::from_millis(200)
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    /// After the spawned process exited (not yet reaped): kill what is left
    /// and clean up. Bounded.
    pub(crate) async fn finish(&self) {
        match *self {
            Target::PidNs { .. } => {}
            Target::Cgroup { ref cg } => cg.remove().await,
            Target::Group { pgid, since } => {
                let _ = killpg(pgid, Signal::SIGKILL);
                let t = Instant::now();
                loop {
                    let left = orphans(pgid, since);
                    for o in &left {
                        signal_with_group(*o, Signal::SIGKILL);
                        // Our child now: reap it, or it stays a zombie.
                        let _ =
                            nix::sys::wait::waitpid(*o, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
                    }
                    if left.is_empty() || t.elapsed() > Duration::from_secs(1) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
}

fn signal_with_group(pid: Pid, sig: Signal) {
    let _ = kill(pid, sig);
    // A group `pid` can only be the one this process created.
    let _ = killpg(pid, sig);
}

/// Our children (re-parented to us) that started no earlier than the job
/// leader, other than the leader: what the job left behind.
fn orphans(leader: Pid, since: u64) -> Vec<Pid> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != leader.as_raw())
        .filter_map(|pid| {
            let s = stat(pid)?;
            (s.ppid == me && s.start >= since).then_some(Pid::from_raw(pid))
        })
        .collect()
}

fn alive(pid: Pid) -> bool {
    stat(pid.as_raw()).is_some_and(|s| s.state != 'Z')
}

pub(crate) struct Stat {
    pub(crate) state: char,
    pub(crate) ppid: i32,
    /// Start time after boot, in clock ticks.
    pub(crate) start: u64,
}

pub(crate) fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces and parentheses).
    let f: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}
