//! The job in a cgroup of its own (cgroup v2), killed whole with `cgroup.kill`.
//!
//! The supervisor's cgroup must be writable (root, or delegated: systemd's
//! `Delegate=yes`). Each run gets a child cgroup `leasehold-<pid>-<n>`; the
//! spawned process moves itself in before exec (writing `0` to
//! `cgroup.procs`), so everything it starts is inside from the first
//! instruction, whatever it does later (`setsid`, double fork). Stopping
//! signals every process in it; killing writes `1` to `cgroup.kill` (Linux
//! 5.14), which the kernel applies to the whole cgroup at once, forks in
//! flight included.
//!
//! What it cannot do by itself: when the supervisor dies, only the direct child
//! dies (parent-death signal); the rest stays in the cgroup. The next
//! supervisor started in the same cgroup kills such leftovers (their owner's
//! pid is in the name), and systemd kills them with the unit
//! (`KillMode=control-group`).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The supervisor's own cgroup, where job cgroups are made.
#[derive(Clone, Debug)]
pub(crate) struct Parent {
    dir: PathBuf,
}

/// A job's cgroup, removed once empty.
#[derive(Debug)]
pub(crate) struct JobCgroup {
    dir: PathBuf,
    procs: OwnedFd,
    kill: OwnedFd,
    removed: AtomicBool,
}

const PREFIX: &str = "leasehold-";

impl Parent {
    /// Finds the supervisor's cgroup v2 directory and checks that a job
    /// cgroup can be made there and killed whole.
    pub(crate) fn find() -> io::Result<Parent> {
        let own = fs::read_to_string("/proc/self/cgroup")?;
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| {
                io::Error::other("no cgroup v2 hierarchy (/proc/self/cgroup has no 0:: line)")
            })?;
        let (mount, root) = cgroup2_mount()?;
        let rel = path.strip_prefix(root.as_str()).unwrap_or(path);
        let dir = mount.join(rel.trim_start_matches('/'));
        let parent = Parent { dir };
        parent.sweep();
        // A trial cgroup: can we make one, move into it, and kill it?
        let trial = parent.create()?;
        let ok = if trial.dir.join("cgroup.kill").exists() {
            Ok(())
        } else {
            Err(io::Error::other(
                "cgroup.kill is missing (Linux 5.14 or later is needed)",
            ))
        };
        drop(trial);
        ok?;
        let procs = parent.dir.join("cgroup.procs");
        fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", procs.display())))?;
        Ok(parent)
    }

    /// Makes a fresh job cgroup.
    pub(crate) fn create(&self) -> io::Result<JobCgroup> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("{PREFIX}{}-{n}", std::process::id()));
        fs::create_dir(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        let open = |name: &str| {
            fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(dir.join(name))
                .map(OwnedFd::from)
        };
        match (open("cgroup.procs"), open("cgroup.kill")) {
            (Ok(procs), Ok(kill)) => Ok(JobCgroup {
                dir,
                procs,
                kill,
                removed: AtomicBool::new(false),
            }),
            (Err(e), _) | (_, Err(e)) => {
                let _ = fs::remove_dir(&dir);
                Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
            }
        }
    }

    /// Kills and removes job cgroups whose supervisor is gone (it was killed
    /// before it could clean up).
    fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(owner) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if super::pid_alive(owner as u32) {
                continue;
            }
            let dir = e.path();
            if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                tracing::warn!(
                    "killed what a dead supervisor (pid {owner}) left in {}",
                    dir.display()
                );
            }
            remove_when_empty(&dir, Duration::from_secs(1));
        }
    }
}

impl JobCgroup {
    /// The fd a child writes `0` to, to move itself in.
    pub(crate) fn procs_fd(&self) -> libc::c_int {
        self.procs.as_raw_fd()
    }

    /// SIGKILL to every process in the cgroup, at once. No allocation.
    pub(crate) fn kill(&self) {
        // SAFETY: a one-byte write to an fd we own.
        unsafe { libc::write(self.kill.as_raw_fd(), b"1".as_ptr().cast(), 1) };
    }

    /// `sig` to every process in the cgroup.
    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills what is left and removes the cgroup once the kernel has freed
    /// the killed processes (milliseconds; bounded).
    pub(crate) async fn remove(&self) {
        self.kill();
        let t = Instant::now();
        loop {
            match fs::remove_dir(&self.dir) {
                Ok(()) => break,
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && t.elapsed() < Duration::from_secs(1) =>
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(e) => {
                    tracing::warn!("cannot remove {}: {e}", self.dir.display());
                    break;
                }
            }
        }
        self.removed.store(true, Ordering::Relaxed);
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        if !self.removed.load(Ordering::Relaxed) {
            self.kill();
            remove_when_empty(&self.dir, Duration::from_millis(100));
        }
    }
}

fn remove_when_empty(dir: &Path, limit: Duration) {
    let t = Instant::now();
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && t.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                tracing::warn!("cannot remove {}: {e}", dir.display());
                return;
            }
        }
    }
}

/// Where cgroup v2 is mounted, and which cgroup is that mount's root.
fn cgroup2_mount() -> io::Result<(PathBuf, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    for line in info.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        if let (Some(root), Some(mount)) = (f.get(3), f.get(4)) {
            return Ok((PathBuf::from(unescape(mount)), unescape(root)));
        }
    }
    Err(io::Error::other("cgroup v2 is not mounted"))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let d = |j: usize| u32::from(b[i + j] - b'0');
            out.push((d(1) * 64 + d(2) * 8 + d(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
