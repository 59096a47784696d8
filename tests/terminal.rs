//! `leasehold run` in the foreground of a terminal (issue 21.11): the job's
//! process group holds the terminal while it runs, as under a shell. A real
//! pseudo-terminal, with leasehold as its session's foreground group.

use leasehold_testkit as support;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{RedisServer, wait_for};

/// A pseudo-terminal: the master (the test types into it) and its slave's path.
struct Pty {
    master: File,
    slave: std::path::PathBuf,
}

fn pty() -> Pty {
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on the fd just opened
    // and a local buffer.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        let master = File::from(OwnedFd::from_raw_fd(fd));
        assert_eq!(libc::grantpt(fd), 0);
        assert_eq!(libc::unlockpt(fd), 0);
        let mut buf = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(fd, buf.as_mut_ptr(), buf.len()), 0);
        let name = std::ffi::CStr::from_ptr(buf.as_ptr());
        Pty {
            master,
            slave: name.to_string_lossy().into_owned().into(),
        }
    }
}

/// A leasehold process, SIGKILLed (with its job, by the parent-death
/// signal) when the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `leasehold ARGS` as the session leader of the pty (so in its foreground),
/// with the pty as stdin and stdout; stderr to a file.
fn leasehold_on(pty: &Pty, dir: &Path, args: &[&str]) -> (Running, std::path::PathBuf) {
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pty.slave)
        .expect("open the pty's slave");
    let stderr = dir.join("stderr");
    let mut cmd = Command::new(support::leasehold_bin());
    cmd.args(args)
        .env_remove("LEASEHOLD_REDIS_URL")
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave))
        .stderr(File::create(&stderr).expect("stderr"));
    // SAFETY: setsid and ioctl between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    (Running(cmd.spawn().expect("spawn leasehold")), stderr)
}

fn foreground_group(pty: &Pty) -> libc::pid_t {
    // SAFETY: TIOCGPGRP on the master reports the slave's foreground group.
    unsafe { libc::tcgetpgrp(pty.master.as_raw_fd()) }
}

fn wait_code(child: &mut Running, limit: Duration) -> Option<i32> {
    wait_for(limit, || {
        use std::os::unix::process::ExitStatusExt;
        let st = child.0.try_wait().ok()??;
        Some(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
    })
}

/// A job that reads the terminal gets what is typed (it is not stopped by
/// SIGTTIN), and the terminal comes back to leasehold when the job ended.
#[test]
fn a_job_in_the_foreground_reads_the_terminal() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    for contain in ["group", "auto"] {
        let dir = tempfile::tempdir().expect("dir");
        let got = dir.path().join("got");
        let mut pty = pty();
        let script = format!("read line; echo \"got:$line\" > {}", got.display());
        let (mut child, stderr) = leasehold_on(
            &pty,
            dir.path(),
            &[
                "run",
                "--name",
                "tty",
                "--redis",
                &url,
                "--contain",
                contain,
                "--hold-after-exit",
                "2s",
                "--",
                "sh",
                "-c",
                &script,
            ],
        );
        let me = child.0.id() as libc::pid_t;
        // The job takes the terminal as it starts.
        wait_for(Duration::from_secs(5), || {
            let fg = foreground_group(&pty);
            (fg > 0 && fg != me).then_some(())
        })
        .unwrap_or_else(|| {
            let err = std::fs::read_to_string(&stderr).unwrap_or_default();
            panic!("{contain}: the job never held the terminal: {err}")
        });
        pty.master.write_all(b"hello\n").expect("type");
        let line = wait_for(Duration::from_secs(5), || {
            let t = std::fs::read_to_string(&got).ok()?;
            t.ends_with('\n').then_some(t)
        });
        let err = std::fs::read_to_string(&stderr).unwrap_or_default();
        let line = line.unwrap_or_else(|| panic!("{contain}: the job read nothing: {err}"));
        assert_eq!(line, "got:hello\n");
        // Back to leasehold while it holds the lease after the job.
        wait_for(Duration::from_secs(1), || {
            (foreground_group(&pty) == me).then_some(())
        })
        .unwrap_or_else(|| panic!("{contain}: the terminal was not taken back"));
        assert_eq!(
            wait_code(&mut child, Duration::from_secs(5)),
            Some(0),
            "{err}"
        );
    }
}

/// Ctrl-C reaches the job, which holds the terminal; a job it kills counts as
/// the user's interrupt: `--forever` ends (130) instead of starting it again.
/// Ctrl-Z does not leave a stopped job in the terminal: it is continued.
#[test]
fn ctrl_c_ends_run_forever_and_ctrl_z_does_not_suspend_the_job() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    for contain in ["group", "auto"] {
        let dir = tempfile::tempdir().expect("dir");
        let ticks = dir.path().join("ticks");
        let mut pty = pty();
        let script = format!(
            "while :; do echo t >> {}; sleep 0.05; done",
            ticks.display()
        );
        let (mut child, stderr) = leasehold_on(
            &pty,
            dir.path(),
            &[
                "run",
                "--name",
                "tty2",
                "--redis",
                &url,
                "--contain",
                contain,
                "--forever",
                "--",
                "sh",
                "-c",
                &script,
            ],
        );
        let count = || {
            std::fs::read_to_string(&ticks)
                .map(|t| t.lines().count())
                .unwrap_or(0)
        };
        wait_for(Duration::from_secs(5), || (count() > 2).then_some(())).expect("the job runs");
        pty.master.write_all(&[0x1a]).expect("Ctrl-Z");
        std::thread::sleep(Duration::from_millis(700));
        let before = count();
        wait_for(Duration::from_secs(2), || {
            (count() > before + 3).then_some(())
        })
        .unwrap_or_else(|| {
            let err = std::fs::read_to_string(&stderr).unwrap_or_default();
            panic!("{contain}: the job stays stopped: {err}")
        });
        pty.master.write_all(&[0x03]).expect("Ctrl-C");
        let code = wait_code(&mut child, Duration::from_secs(5));
        let err = std::fs::read_to_string(&stderr).unwrap_or_default();
        assert_eq!(code, Some(130), "{contain}: {err}");
        assert!(err.contains("cannot be suspended"), "{err}");
    }
}
