//! The job as the second process of its own PID namespace.
//!
//! `unshare(CLONE_NEWPID)` only moves the caller's *future children* into the
//! new namespace, and the first of them becomes its init (PID 1), which the
//! kernel treats specially: a signal whose action is the default is not
//! delivered to it, so a job running as PID 1 would shrug off SIGTERM. So the
//! spawned process forks twice, all between fork and exec:
//!
//! ```text
//! supervisor ── relay (host namespace: the pid the supervisor spawned, group leader)
//!                 └── init (PID 1 of the new namespace)
//!                       └── job (PID 2; std's exec continues here)
//! ```
//!
//! - The relay forwards signals to init, waits for it, and ends as the job
//!   ended (same exit code, or the same signal re-raised), so exit codes,
//!   128+N and 126/127 (std reports a failed exec of the job through its own
//!   pipe) come out as without a namespace.
//! - Init sends every signal it gets to everything in the namespace
//!   (`kill(-1)`), reaps whatever is re-parented to it, and exits when the job
//!   exits, handing the job's wait status to the relay through a pipe.
//! - Parent-death signals chain: the supervisor dies → the relay gets SIGKILL →
//!   init gets SIGKILL → the kernel kills everything left in the namespace,
//!   `setsid` daemons included. A SIGKILL to the relay's process group (relay
//!   and init) has the same effect.
//!
//! Not root: the namespace is created inside a new user namespace that maps
//! our uid and gid to themselves, so the job runs as the same user, without
//! privileges; setuid programs cannot gain any there.
//!
//! Everything here runs in a child forked from a multi-threaded process: only
//! async-signal-safe calls (raw system calls), no allocation, no locks.

use std::ffi::CStr;
use std::io;

/// What the forked child needs, prepared before the fork (no allocation after).
pub(crate) struct Plan {
    /// `Some` when a user namespace is needed (not root): the maps to write.
    pub(crate) userns: Option<IdMaps>,
}

pub(crate) struct IdMaps {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
}

impl Plan {
    /// The plan for this process: a user namespace unless we are root.
    pub(crate) fn for_this_process() -> Plan {
        // SAFETY: geteuid/getegid cannot fail and touch no memory of ours.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Plan {
            userns: (uid != 0).then(|| IdMaps {
                uid_map: format!("{uid} {uid} 1\n").into_bytes(),
                gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            }),
        }
    }
}

const SETGROUPS: &CStr = c"/proc/self/setgroups";
const UID_MAP: &CStr = c"/proc/self/uid_map";
const GID_MAP: &CStr = c"/proc/self/gid_map";

/// Enters the new namespaces (for future children of the caller).
///
/// # Safety
/// Between fork and exec: async-signal-safe calls only.
pub(crate) unsafe fn unshare(plan: &Plan) -> io::Result<()> {
    let flags = match plan.userns {
        Some(_) => libc::CLONE_NEWUSER | libc::CLONE_NEWPID,
        None => libc::CLONE_NEWPID,
    };
    // SAFETY: unshare and the writes below are plain system calls.
    unsafe {
        if libc::unshare(flags) == -1 {
            return Err(io::Error::last_os_error());
        }
        if let Some(maps) = &plan.userns {
            // An unprivileged process may map only itself, and only after
            // giving up setgroups(2) for good.
            write_file(SETGROUPS, b"deny")?;
            write_file(UID_MAP, &maps.uid_map)?;
            write_file(GID_MAP, &maps.gid_map)?;
        }
    }
    Ok(())
}

unsafe fn write_file(path: &CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = io::Error::last_os_error();
        libc::close(fd);
        if n != data.len() as isize {
            return Err(err);
        }
    }
    Ok(())
}

/// In the spawned process, after [`unshare`]: forks init and the job. Returns
/// `Ok` only in the job, which std then execs; the relay and init never return.
///
/// # Safety
/// Between fork and exec: async-signal-safe calls only.
pub(crate) unsafe fn fork_init_and_job(
    terminal: Option<&super::terminal::Foreground>,
) -> io::Result<()> {
    // SAFETY: raw system calls on local buffers; see each step.
    unsafe {
        // Everything blocked from here on: the relay and init take signals
        // with sigwaitinfo, and no handler inherited from the supervisor
        // (tokio's) can run in them. The job unblocks again below.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());

        // `alive`: init learns that the relay died before init armed its
        // parent-death signal (its write end closes). `status`: init hands
        // the job's wait status to the relay.
        let alive = pipe()?;
        let status = pipe()?;
        let init = libc::fork();
        if init == -1 {
            return Err(io::Error::last_os_error());
        }
        if init > 0 {
            libc::close(alive[0]);
            libc::close(status[1]);
            name(c"leasehold-relay");
            close_fds_except(&[alive[1], status[0]]);
            relay(init, status[0]);
        }

        // Init, PID 1 of the new namespace.
        libc::close(alive[1]);
        libc::close(status[0]);
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        // getppid() is 0 here (the relay is outside the namespace): the pipe
        // tells whether the relay is still there.
        let mut pfd = libc::pollfd {
            fd: alive[0],
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, 0) != 0 {
            libc::_exit(1);
        }
        libc::close(alive[0]);
        name(c"leasehold-init");
        let job = libc::fork();
        if job == -1 {
            libc::_exit(127);
        }
        if job > 0 {
            close_fds_except(&[status[1]]);
            init_loop(job, status[1]);
        }

        // The job: its own process group inside the namespace (so a signal to
        // the relay's group does not reach it twice), which takes the
        // terminal when the supervisor had it; then signals unblocked.
        libc::close(status[1]);
        libc::setpgid(0, 0);
        if let Some(fg) = terminal {
            super::terminal::take_in_child(fg);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    Ok(())
}

unsafe fn pipe() -> io::Result<[libc::c_int; 2]> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into a live array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(fds)
}

/// Sets the process name `ps` shows (the command line stays the supervisor's).
unsafe fn name(n: &CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, n.as_ptr(), 0, 0, 0) };
}

/// Closes every fd from 3 up except `keep`: the relay and init must not hold
/// std's exec-error pipe (spawn() would wait for them) nor the supervisor's
/// sockets.
unsafe fn close_fds_except(keep: &[libc::c_int]) {
    let mut sorted = [libc::c_int::MAX; 2];
    for (i, fd) in keep.iter().take(2).enumerate() {
        sorted[i] = *fd;
    }
    if sorted[0] > sorted[1] {
        sorted.swap(0, 1);
    }
    let mut from: libc::c_int = 3;
    for k in sorted {
        if k == libc::c_int::MAX {
            break;
        }
        // SAFETY: closing fds we do not use; `k` stays open.
        unsafe { close_range(from, k - 1) };
        from = k + 1;
    }
    // SAFETY: as above.
    unsafe { close_range(from, libc::c_int::MAX) };
}

unsafe fn close_range(first: libc::c_int, last: libc::c_int) {
    if first > last {
        return;
    }
    // SAFETY: close_range(2) (Linux 5.9); older kernels: close one by one up
    // to the fd limit.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0) == 0 {
            return;
        }
        let mut lim: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1024
        };
        for fd in first..=last.min(max) {
            libc::close(fd);
        }
    }
}

/// The relay: forwards signals to init; ends as the job ended.
unsafe fn relay(init: libc::pid_t, status: libc::c_int) -> ! {
    // SAFETY: sigwaitinfo/waitpid/kill/read on local buffers.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        loop {
            let sig = libc::sigwaitinfo(&all, std::ptr::null_mut());
            if sig == libc::SIGCHLD {
                let mut st = 0;
                if libc::waitpid(init, &mut st, libc::WNOHANG) == init {
                    let mut buf = [0u8; 4];
                    let job = if libc::read(status, buf.as_mut_ptr().cast(), 4) == 4 {
                        i32::from_ne_bytes(buf)
                    } else {
                        // Init died without a word (killed): so did the job.
                        st
                    };
                    end_as(job);
                }
            } else if sig > 0 {
                libc::kill(init, sig);
            }
        }
    }
}

/// Init: fans signals out to the namespace, reaps, exits with the job.
unsafe fn init_loop(job: libc::pid_t, status: libc::c_int) -> ! {
    // SAFETY: as in `relay`.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        loop {
            let sig = libc::sigwaitinfo(&all, std::ptr::null_mut());
            if sig == libc::SIGCHLD {
                let mut job_status = None;
                loop {
                    let mut st = 0;
                    let pid = libc::waitpid(-1, &mut st, libc::WNOHANG);
                    if pid <= 0 {
                        break;
                    }
                    if pid == job {
                        job_status = Some(st);
                    }
                }
                if let Some(st) = job_status {
                    let bytes = st.to_ne_bytes();
                    libc::write(status, bytes.as_ptr().cast(), 4);
                    // Init's exit makes the kernel kill what the job left.
                    libc::_exit(0);
                }
            } else if sig > 0 {
                // Everything in the namespace but init itself.
                libc::kill(-1, sig);
            }
        }
    }
}

/// Exits with the job's status: its code, or death by the same signal.
unsafe fn end_as(status: libc::c_int) -> ! {
    // SAFETY: setrlimit/sigaction/sigprocmask/kill/_exit on local values.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            // The job dumped core if it had to; the relay must not add one.
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
            let mut one: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut one);
            libc::sigaddset(&mut one, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig);
        }
        libc::_exit(libc::WEXITSTATUS(status));
    }
}

/// Whether a PID namespace can be made here: forks a probe that does what
/// the spawned process will do (unshare, fork init) and reports.
pub(crate) fn probe(plan: &Plan) -> io::Result<()> {
    // SAFETY: the child calls only async-signal-safe functions and _exits.
    unsafe {
        let pid = libc::fork();
        if pid == -1 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            let code = match unshare(plan) {
                Err(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
                Ok(()) => {
                    let init = libc::fork();
                    if init == 0 {
                        libc::_exit(0);
                    }
                    let mut st = 0;
                    if init > 0 && libc::waitpid(init, &mut st, 0) == init && st == 0 {
                        0
                    } else {
                        libc::ENOSYS
                    }
                }
            };
            libc::_exit(code);
        }
        let mut st = 0;
        if libc::waitpid(pid, &mut st, 0) != pid {
            return Err(io::Error::last_os_error());
        }
        match libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st)) {
            Some(0) => Ok(()),
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Err(io::Error::other("the probe was killed")),
        }
    }
}
