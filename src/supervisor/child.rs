//! Starting the child so that it cannot outlive its supervisor unnoticed.
//!
//! - Its own process group (we signal the whole group, so `sh -c` wrappers and
//!   their children stop too — consul#2022).
//! - `PR_SET_PDEATHSIG(SIGKILL)`: if the supervisor dies, even by SIGKILL, the
//!   kernel kills the child. The "parent" in that rule is the *thread* that
//!   forked, so spawn from a thread that lives as long as the supervisor (the
//!   CLI runs a current-thread runtime on the main thread; on a multi-thread
//!   runtime, worker threads live as long as the runtime). After `prctl` we
//!   re-check `getppid()` to close the race with a parent that died already.
//! - Then the containment's own step (`contain.rs`): into a PID namespace
//!   (the child becomes the relay, see `pidns.rs`), into the job's cgroup, or
//!   nothing more (group; this process is a child subreaper).
//! - When the supervisor is in a terminal's foreground, the job's group takes
//!   the terminal (`terminal.rs`).
//! - The signal mask is reset, and the child is killed if the handle is dropped.

use std::ffi::OsString;
use std::io;
use std::sync::Arc;

use nix::unistd::Pid;
use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop, ProcessGroup, ResetSigmask};

use super::contain::{self, Containment, Kind, Target};
use super::pidns;
use super::terminal::{self, Foreground};

/// Spawns `program args` with `env` added and `remove` taken out, in a new
/// process group, contained.
/// Returns the child and how to reach everything it will start.
pub(crate) fn spawn(
    program: &OsString,
    args: &[OsString],
    env: &[(String, String)],
    remove: &[String],
    containment: &Containment,
    terminal: Option<Foreground>,
) -> io::Result<(Box<dyn ChildWrapper>, Target)> {
    let parent = std::process::id() as libc::pid_t;
    let cgroup = match &containment.kind {
        Kind::Cgroup(p) => Some(p.create()?),
        _ => None,
    };
    if matches!(containment.kind, Kind::Group) {
        // Orphans of the job come back to us instead of init, so a stop can
        // still find them (contain::orphans).
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let pidns_plan: Option<Arc<pidns::Plan>> = match &containment.kind {
        Kind::PidNs(plan) => Some(Arc::clone(plan)),
        _ => None,
    };
    let cgroup_procs = cgroup.as_ref().map(|c| c.procs_fd());
    let restore_ttou = terminal::ttou_to_restore();
    let mut cmd = CommandWrap::with_new(program, |cmd| {
        cmd.args(args);
        for k in remove {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: only async-signal-safe calls (prctl, getppid, raise, write,
        // and pidns.rs's and terminal.rs's raw system calls) run between fork
        // and exec; the plan was prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) == -1
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::raise(libc::SIGKILL);
                }
                if restore_ttou {
                    terminal::restore_in_child();
                }
                if let Some(fd) = cgroup_procs {
                    // "0" moves the writer itself.
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some(plan) = &pidns_plan {
                    pidns::unshare(plan)?;
                    // The job takes the terminal there, in its own group.
                    pidns::fork_init_and_job(terminal.as_ref())?;
                } else if let Some(fg) = &terminal {
                    // std made this process a group leader (process_group)
                    // before running this closure.
                    terminal::take_in_child(fg);
                }
                Ok(())
            });
        }
    });
    cmd.wrap(ProcessGroup::leader())
        .wrap(ResetSigmask)
        .wrap(KillOnDrop);
    let child = cmd.spawn()?;
    let pid = Pid::from_raw(child.id().map_or(0, |p| p as i32));
    let target = match (&containment.kind, cgroup) {
        (Kind::PidNs(_), _) => Target::PidNs { relay: pid },
        (Kind::Cgroup(_), Some(cg)) => Target::Cgroup { cg },
        _ => Target::Group {
            pgid: pid,
            since: contain::stat(pid.as_raw()).map_or(0, |s| s.start),
        },
    };
    Ok((child, target))
}
