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
//! - The signal mask is reset, and the child is killed if the handle is dropped.

use std::ffi::OsString;
use std::io;

use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop, ProcessGroup, ResetSigmask};

/// Spawns `program args` with `env` added, in a new process group.
pub(crate) fn spawn(
    program: &OsString,
    args: &[OsString],
    env: &[(String, String)],
) -> io::Result<Box<dyn ChildWrapper>> {
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = CommandWrap::with_new(program, |cmd| {
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: only async-signal-safe calls (prctl, getppid, raise) run
        // between fork and exec.
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
                Ok(())
            });
        }
    });
    cmd.wrap(ProcessGroup::leader())
        .wrap(ResetSigmask)
        .wrap(KillOnDrop);
    cmd.spawn()
}

/// Sends `sig` to the process group `pgid`. A group that is already gone is fine.
pub(crate) fn signal_group(pgid: i32, sig: nix::sys::signal::Signal) {
    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!("cannot send {sig} to process group {pgid}: {e}"),
    }
}
