//! Nothing the job started outlives the lease: the real binary, a real
//! redis-server, and a job whose processes leave its process group (`setsid`).
//!
//! Every process of a job carries `LH_TEST_MARK=<n>` and `LEASEHOLD_HOLDER` in
//! its environment (the supervisor has only the first), which is how the tests
//! find the tree in /proc, and how a guard kills whatever is left at the end,
//! also when an assertion failed.

use leasehold_testkit as support;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use support::{Proc, RedisServer, leasehold, leasehold_bin, wait_for};

/// Two sleeps, one of which leaves the group (and the session); the shell waits.
const TREE: &str = "sleep 1000 & setsid sleep 1000 & wait";
const TTL: Duration = Duration::from_secs(2);

/// The processes of one job, found by their environment; SIGKILLed on drop.
struct Tree {
    mark: String,
}

impl Tree {
    fn new() -> Tree {
        static N: AtomicU32 = AtomicU32::new(0);
        Tree {
            mark: format!(
                "{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
        }
    }

    /// Live (not zombie) processes whose environment has our mark and a holder.
    fn pids(&self) -> Vec<i32> {
        let want = format!("LH_TEST_MARK={}", self.mark);
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| {
                let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                    return false;
                };
                let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
                vars.contains(&want.as_bytes())
                    && vars.iter().any(|v| v.starts_with(b"LEASEHOLD_HOLDER="))
                    && support::pid_alive(pid)
            })
            .collect()
    }

    /// Waits until the job's tree is up: `n` processes.
    fn wait_started(&self, n: usize) -> Vec<i32> {
        wait_for(Duration::from_secs(10), || {
            let p = self.pids();
            (p.len() >= n).then_some(p)
        })
        .unwrap_or_else(|| panic!("the job's {n} processes did not start: {:?}", self.pids()))
    }

    /// When the tree was first seen empty, if within `limit`.
    fn gone_within(&self, limit: Duration) -> Option<Instant> {
        wait_for(limit, || self.pids().is_empty().then(Instant::now))
    }

    /// What is left of the tree, described for a failure message.
    fn describe(&self) -> String {
        self.pids()
            .iter()
            .map(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let cmd: Vec<String> = cmd
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                format!("{p} {:?}", cmd.join(" ").trim())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn run_args<'a>(url: &'a str, extra: &[&'a str], job: &'a str) -> Vec<&'a str> {
    let mut v = vec!["run", "--name", "job", "--redis", url, "--ttl", "2s"];
    v.extend_from_slice(extra);
    v.extend_from_slice(&["--", "sh", "-c", job]);
    v
}

/// The lease's expiry in Redis, read right after a renewal landed (so that
/// no other renewal can land before the caller freezes Redis): returns the
/// instant by which the lease could expire at the earliest.
fn expiry_after_a_renewal(r: &RedisServer) -> Instant {
    let pttl = || {
        let t = Instant::now();
        (t, r.lease_left_ms("job"))
    };
    let (_, mut last) = pttl();
    let t0 = Instant::now();
    loop {
        let (t, ms) = pttl();
        assert!(ms > 0, "the lease is not held (PTTL {ms})");
        if ms > last + 100 {
            return t + Duration::from_millis(ms as u64);
        }
        last = ms;
        assert!(t0.elapsed() < TTL * 2, "no renewal seen in {:?}", TTL * 2);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The supervisor's safety deadline is at most `expiry - drift`; the tree
/// must be dead by then (the supervisor kills at 100 ms before it).
fn safety_deadline(expiry: Instant) -> Instant {
    expiry - leasehold::deadline::drift(TTL)
}

fn supervisor_killed(extra: &[&str], as_nobody: bool) {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    let dir = tempfile::tempdir().expect("dir");
    let tree = Tree::new();
    let mut args = run_args(&url, extra, TREE);
    let sup = if as_nobody {
        let mut a = vec![
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            leasehold_bin(),
        ];
        a.append(&mut args);
        let err = std::fs::File::create(dir.path().join("sup.stderr")).expect("stderr file");
        let child = Command::new("setpriv")
            .args(&a)
            .env("LH_TEST_MARK", &tree.mark)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("setpriv");
        Proc {
            child,
            stderr_path: dir.path().join("sup.stderr"),
        }
    } else {
        leasehold(dir.path(), &args, &[("LH_TEST_MARK", &tree.mark)])
    };
    let pids = tree.wait_started(3);
    std::thread::sleep(Duration::from_millis(200));
    sup.signal(libc::SIGKILL);
    let gone = tree.gone_within(Duration::from_secs(1));
    assert!(
        gone.is_some(),
        "1 s after the supervisor was SIGKILLed, the job's processes are still running: {} (started: {pids:?}); supervisor stderr: {}",
        tree.describe(),
        sup.stderr()
    );
}

/// SIGKILL to the supervisor: within 1 s no process of the job is left,
/// `setsid` descendants included.
#[test]
fn supervisor_killed_takes_the_whole_tree() {
    supervisor_killed(&[], false);
}

#[test]
fn supervisor_killed_takes_the_whole_tree_pidns() {
    supervisor_killed(&["--contain", "pidns"], false);
}

/// The same for a user that is not root (through a user namespace).
#[test]
fn supervisor_killed_takes_the_whole_tree_not_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to become another user");
        return;
    }
    let userns = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["unshare", "--user", "--pid", "--fork", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !userns {
        eprintln!("skipped: unprivileged user namespaces are not available here");
        return;
    }
    supervisor_killed(&[], true);
}

/// Redis stops answering: every process of the job is dead before the
/// supervisor's safety deadline, for every containment.
fn lease_lost(extra: &[&str]) {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    let dir = tempfile::tempdir().expect("dir");
    let tree = Tree::new();
    let mut sup = leasehold(
        dir.path(),
        &run_args(&url, extra, TREE),
        &[("LH_TEST_MARK", &tree.mark)],
    );
    tree.wait_started(3);
    let expiry = expiry_after_a_renewal(&r);
    r.freeze();
    let gone = tree.gone_within(TTL * 2);
    r.thaw();
    let gone = gone.unwrap_or_else(|| {
        panic!(
            "the job outlived the lease: {} still running; supervisor stderr: {}",
            tree.describe(),
            sup.stderr()
        )
    });
    let deadline = safety_deadline(expiry);
    assert!(
        gone <= deadline,
        "the job's last process died {:?} after the safety deadline; supervisor stderr: {}",
        gone - deadline,
        sup.stderr()
    );
    eprintln!(
        "{extra:?}: the whole tree was gone {:?} before the safety deadline",
        deadline - gone
    );
    assert_eq!(
        sup.wait_exit(TTL * 2),
        Some(79),
        "lost-lease exit code; stderr: {}",
        sup.stderr()
    );
}

#[test]
fn lease_lost_stops_the_whole_tree_before_the_deadline() {
    lease_lost(&[]);
}

#[test]
fn lease_lost_stops_the_whole_tree_cgroup() {
    if !Command::new(leasehold_bin())
        .args([
            "run",
            "--contain",
            "cgroup",
            "--name",
            "x",
            "--redis",
            "redis://127.0.0.1:1",
        ])
        .args(["--", "true"])
        .stderr(Stdio::piped())
        .output()
        .is_ok_and(|o| !String::from_utf8_lossy(&o.stderr).contains("not available"))
    {
        eprintln!("skipped: no writable cgroup v2 here");
        return;
    }
    lease_lost(&["--contain", "cgroup"]);
}

#[test]
fn lease_lost_stops_the_whole_tree_group() {
    lease_lost(&["--contain", "group"]);
}

/// The child fills the supervisor's stderr, which nobody reads; the lease is
/// lost: the stop does not wait for the log, the tree is dead before the
/// deadline all the same.
#[test]
fn full_stderr_does_not_delay_the_stop() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    let tree = Tree::new();
    // The pause lets the supervisor write its one startup line first: a
    // supervisor blocked on stderr from the start could not renew at all.
    let job = "setsid sleep 1000 & sleep 1000 & sleep 0.5; exec yes 'stderr that nobody reads' >&2";
    let mut child = Command::new(leasehold_bin())
        .args(run_args(&url, &[], job))
        .env("LH_TEST_MARK", &tree.mark)
        .env_remove("LEASEHOLD_REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn leasehold");
    let stderr = child.stderr.take().expect("stderr pipe");
    let sup = Proc {
        child,
        stderr_path: std::path::PathBuf::new(),
    };
    // sh execs `yes`: three processes.
    tree.wait_started(3);
    wait_for(Duration::from_secs(5), || {
        tree.describe().contains("yes").then_some(())
    })
    .expect("the job starts writing");
    let full = wait_for(Duration::from_secs(5), || {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        unsafe { libc::ioctl(stderr.as_raw_fd(), libc::FIONREAD, &mut n) };
        (n >= 60_000).then_some(n)
    });
    assert!(full.is_some(), "the job did not fill the stderr pipe");
    let expiry = expiry_after_a_renewal(&r);
    r.freeze();
    let gone = tree.gone_within(TTL * 2);
    r.thaw();
    let mut stderr = stderr;
    let gone = gone.unwrap_or_else(|| {
        let mut text = vec![0u8; 2000];
        let n = stderr.read(&mut text).unwrap_or(0);
        panic!(
            "with stderr full, the job outlived the lease: {} still running; stderr began {:?}",
            tree.describe(),
            String::from_utf8_lossy(&text[..n])
        )
    });
    let deadline = safety_deadline(expiry);
    assert!(
        gone <= deadline,
        "with stderr full, the job's last process died {:?} after the safety deadline",
        gone - deadline
    );
    drop(sup);
}

/// `status --json` says how each holder's job is contained (issue 13): for a
/// lease and for the permits of a semaphore; a former holder's note is
/// dropped when the next one notes its own, and a note someone else wrote
/// in a shape `run` never writes is not shown.
#[test]
fn status_shows_the_containment() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    let dir = tempfile::tempdir().expect("dir");
    let tree = Tree::new();
    let status = |name: &str| -> serde_json::Value {
        let (code, out, err) =
            support::leasehold_output(&["status", "--name", name, "--redis", &url, "--json"]);
        assert_eq!(code, 0, "status failed: {err}");
        serde_json::from_str(out.trim()).expect("status --json prints JSON")
    };

    let first = leasehold(
        dir.path(),
        &run_args(&url, &["--contain", "group"], "sleep 1000"),
        &[("LH_TEST_MARK", &tree.mark)],
    );
    tree.wait_started(1);
    let v = wait_for(Duration::from_secs(5), || {
        let v = status("job");
        v.get("contain").is_some().then_some(v)
    })
    .unwrap_or_else(|| panic!("status never showed the containment: {}", status("job")));
    assert_eq!(v["contain"], "group", "{v}");
    let first_holder = v["holder"].as_str().expect("holder").to_string();
    // A hostile note beside ours: not a mode `run` writes.
    r.cmd(&[
        "HSET",
        "leasehold:{job}:run",
        &first_holder,
        "contain=\u{1b}[2Jevil",
    ]);
    assert!(status("job").get("contain").is_none(), "{}", status("job"));
    r.cmd(&[
        "HSET",
        "leasehold:{job}:run",
        &first_holder,
        "contain=group",
    ]);

    // The next holder notes its own and drops the crashed one's.
    first.signal(libc::SIGKILL);
    drop(tree);
    let tree = Tree::new();
    let _second = leasehold(
        dir.path(),
        &run_args(&url, &["--contain", "group"], "sleep 1000"),
        &[("LH_TEST_MARK", &tree.mark)],
    );
    let v = wait_for(Duration::from_secs(10), || {
        let v = status("job");
        (v["state"] == "held" && v["holder"] != first_holder.as_str() && v.get("contain").is_some())
            .then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "the next holder's containment never showed: {}",
            status("job")
        )
    });
    assert_eq!(v["contain"], "group", "{v}");
    let notes = r.cmd(&["HKEYS", "leasehold:{job}:run"]);
    assert!(
        !notes.contains(&first_holder),
        "the crashed holder's note was kept: {notes}"
    );

    // A semaphore: every permit's holder shows its own.
    let sems: Vec<Proc> = (0..2)
        .map(|_| {
            let mut args = run_args(&url, &["--contain", "group", "--slots", "2"], "sleep 1000");
            args[2] = "sem";
            leasehold(dir.path(), &args, &[("LH_TEST_MARK", &tree.mark)])
        })
        .collect();
    let v = wait_for(Duration::from_secs(10), || {
        let v = status("sem");
        let slots = v.get("slots")?.as_array()?.clone();
        (slots.len() == 2 && slots.iter().all(|s| s.get("contain").is_some())).then_some(v)
    })
    .unwrap_or_else(|| panic!("the permits' containment never showed: {}", status("sem")));
    for s in v["slots"].as_array().into_iter().flatten() {
        assert_eq!(s["contain"], "group", "{v}");
    }
    drop(sems);
}

/// The containment note goes when `run` gives the lease back (a name run
/// once keeps no key for it), also when someone else filled the notes hash
/// with 1500 foreign fields beforehand (the script drops such a hash whole
/// rather than walking it — a cost bound this test does not observe; what it
/// checks is that nothing is left behind).
#[test]
fn the_note_goes_with_the_lease() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    let key = "leasehold:{job}:run";
    let mut fill = vec!["HSET", key];
    let fields: Vec<String> = (0..1500).map(|i| format!("f{i}")).collect();
    for f in &fields {
        fill.push(f);
        fill.push("x");
    }
    r.cmd(&fill);
    let (code, _, err) =
        support::leasehold_output(&run_args(&url, &["--contain", "group"], "sleep 1"));
    assert_eq!(code, 0, "{err}");
    let left = r.cmd(&["HLEN", key]);
    assert_eq!(
        left, ":0\r\n",
        "after run exited its notes key still has fields: {left}"
    );
}
