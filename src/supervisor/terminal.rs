//! The controlling terminal, when the supervisor runs in its foreground.
//!
//! The job runs in a process group of its own (so that a stop reaches all of
//! it). A process group that is not the terminal's foreground group is
//! stopped by SIGTTIN when it reads the terminal (and by SIGTTOU when it
//! writes with `stty tostop`), and Ctrl-C reaches only the foreground group.
//! So, as shells and watchexec do, when the supervisor is in the terminal's
//! foreground the job's group is given the terminal while it runs, and the
//! supervisor takes it back afterwards:
//!
//! - the job itself calls `tcsetpgrp` between fork and exec, after it has its
//!   own group (in `pidns`, the job at PID 2 does, inside the namespace: the
//!   terminal's session spans namespaces), with SIGTTOU blocked, so the job
//!   holds the terminal before its first instruction;
//! - the supervisor ignores SIGTTOU from then on: in the background, it must
//!   neither be stopped by writing its log lines (`tostop`) nor by taking the
//!   terminal back. The job gets SIGTTOU's default disposition back;
//! - Ctrl-C, Ctrl-\ and Ctrl-Z now reach the job, not the supervisor. A job
//!   that dies of the terminal's SIGINT or SIGQUIT counts as the user's
//!   interrupt ([`super::Outcome::Interrupted`]): `run --forever` ends
//!   instead of campaigning again, as shells treat a child killed by SIGINT.
//!   Ctrl-Z would stop the job and leave the terminal with a stopped group
//!   the shell knows nothing of (no prompt, no `fg`): a job holding a lease
//!   is not suspended, the supervisor continues it (SIGCONT, within 200 ms)
//!   and says so.
//!
//! Not in the foreground (cron, systemd, `&`, output piped but no terminal),
//! nothing here happens.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once this process ignores SIGTTOU because of [`Foreground::detect`]
/// (not because whoever started it did): jobs get the default back.
static TTOU_IGNORED_BY_US: AtomicBool = AtomicBool::new(false);

/// Whether a child must get SIGTTOU's default disposition back (read before
/// the fork; [`restore_in_child`] after it).
pub(crate) fn ttou_to_restore() -> bool {
    TTOU_IGNORED_BY_US.load(Ordering::Relaxed)
}

/// The terminal the supervisor is in the foreground of.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Foreground {
    /// One of 0, 1, 2: the same file in the job (stdio is inherited).
    pub(crate) fd: RawFd,
    /// The supervisor's own process group, to take the terminal back to.
    pgrp: libc::pid_t,
}

impl Foreground {
    /// The terminal among stdin, stdout and stderr whose foreground process
    /// group is ours, if any. From then on SIGTTOU is ignored (see above).
    pub(crate) fn detect() -> Option<Foreground> {
        // SAFETY: getpgrp, isatty and tcgetpgrp take plain integers.
        let pgrp = unsafe { libc::getpgrp() };
        let fd = [0, 1, 2]
            .into_iter()
            .find(|&fd| unsafe { libc::isatty(fd) == 1 && libc::tcgetpgrp(fd) == pgrp })?;
        // SAFETY: installs SIG_IGN for SIGTTOU, which no handler of ours uses,
        // and returns the previous disposition.
        let prev = unsafe { libc::signal(libc::SIGTTOU, libc::SIG_IGN) };
        if prev != libc::SIG_IGN {
            TTOU_IGNORED_BY_US.store(true, Ordering::Relaxed);
        }
        Some(Foreground { fd, pgrp })
    }

    /// Continues the terminal's foreground group when it is a stopped group
    /// other than ours (the job after Ctrl-Z). Returns whether it did.
    pub(crate) fn continue_stopped(&self) -> bool {
        // SAFETY: tcgetpgrp on our terminal fd.
        let pg = unsafe { libc::tcgetpgrp(self.fd) };
        if pg <= 0 || pg == self.pgrp {
            return false;
        }
        let stopped = super::contain::stat(pg).is_some_and(|s| s.state == 'T');
        if stopped {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pg),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
        stopped
    }

    /// Gives the terminal back to the supervisor's group (SIGTTOU is ignored,
    /// so a background caller is not stopped by it).
    pub(crate) fn take_back(&self) {
        // SAFETY: tcsetpgrp on an fd that stays open for our whole life.
        unsafe { libc::tcsetpgrp(self.fd, self.pgrp) };
    }
}

/// Takes the terminal back when dropped (a system call that does not block).
pub(crate) struct TakeBack(pub(crate) Foreground);

impl Drop for TakeBack {
    fn drop(&mut self) {
        self.0.take_back();
    }
}

/// In the child, between fork and exec: SIGTTOU's default disposition back,
/// when [`ttou_to_restore`] said so.
///
/// # Safety
/// Async-signal-safe (signal).
pub(crate) unsafe fn restore_in_child() {
    // SAFETY: a plain system call.
    unsafe { libc::signal(libc::SIGTTOU, libc::SIG_DFL) };
}

/// In the job, between fork and exec, once it leads its own process group:
/// takes the terminal for that group.
///
/// # Safety
/// Async-signal-safe calls only (sigprocmask, tcsetpgrp).
pub(crate) unsafe fn take_in_child(fg: &Foreground) {
    // SAFETY: plain system calls on local values.
    unsafe {
        let mut ttou: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut ttou);
        libc::sigaddset(&mut ttou, libc::SIGTTOU);
        let mut old: libc::sigset_t = std::mem::zeroed();
        // A background group calling tcsetpgrp gets SIGTTOU unless it blocks
        // or ignores it.
        libc::sigprocmask(libc::SIG_BLOCK, &ttou, &mut old);
        libc::tcsetpgrp(fg.fd, libc::getpgrp());
        libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}
