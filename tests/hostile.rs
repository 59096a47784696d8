//! Careless and hostile input, end to end (issue 21): every case one clear
//! line and a documented exit code, nothing hammered, nothing leaked. The
//! real binary against redis-servers the tests start.

use leasehold_testkit as support;

use std::time::{Duration, Instant};

use support::{RedisServer, leasehold, leasehold_output};

fn one_line(err: &str) {
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Issue 21.7: a lease record that another writer (or a bug) left with an
/// expiry far in the future makes a waiter wait quietly, not spin; records
/// missing fields or holding garbage are taken over or refused with one
/// line, never hammered.
#[test]
fn odd_lease_records_are_not_hammered() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    // Held "forever", by something that is not a leasehold holder.
    r.cmd(&[
        "HSET",
        "leasehold:{odd}:lease",
        "kind",
        "lease",
        "holder",
        "someone",
        "exp",
        "99999999999999",
        "token",
        "1",
    ]);
    let before = r.command_calls(&["evalsha", "eval", "zadd", "hset"]);
    let t = Instant::now();
    let (code, _, err) = leasehold_output(&[
        "run", "--name", "odd", "--redis", &url, "--wait", "3s", "--", "true",
    ]);
    let calls = r.command_calls(&["evalsha", "eval", "zadd", "hset"]) - before;
    assert_eq!(code, 75, "{err}");
    one_line(&err);
    eprintln!("{calls} commands in {:?}", t.elapsed());
    assert!(calls < 60, "{calls} commands in 3 s");
    let (code, out, err) = leasehold_output(&["status", "--name", "odd", "--redis", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("someone"), "{out}");
    // Fields missing, not numbers, or numbers leasehold never writes (an
    // "infinite" expiry): the lease is free, and taken at once.
    for (name, fields) in [
        ("bare", vec!["foo", "bar"]),
        ("noexp", vec!["kind", "lease", "holder", "x/1/y"]),
        (
            "garbage",
            vec![
                "holder", "x", "exp", "soon", "token", "many", "maxttl", "long",
            ],
        ),
        (
            "inf",
            vec!["kind", "lease", "holder", "x", "exp", "inf", "qu", "inf"],
        ),
        (
            "huge",
            vec![
                "holder", "x", "exp", "1e400", "ttl", "1e400", "maxttl", "inf",
            ],
        ),
        (
            "nan",
            vec!["holder", "x", "exp", "nan", "token", "-inf", "obs", "nan"],
        ),
    ] {
        let key = format!("leasehold:{{{name}}}:lease");
        let mut args = vec!["HSET", key.as_str()];
        args.extend(fields);
        r.cmd(&args);
        let before = r.command_calls(&["evalsha", "eval"]);
        let (code, _, err) = leasehold_output(&[
            "run", "--name", name, "--redis", &url, "--wait", "3s", "--", "true",
        ]);
        let calls = r.command_calls(&["evalsha", "eval"]) - before;
        assert_eq!(code, 0, "{name}: {err}");
        assert!(calls < 20, "{name}: {calls} scripts");
    }
}

/// Issue 21.7: the same server given twice (also as another database, or as
/// localhost and 127.0.0.1) is no quorum: refused at once, 64.
#[test]
fn duplicate_quorum_members_are_refused() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    let (ua, ub) = (a.url(), b.url());
    let other_db = format!("redis://localhost:{}/1", a.port);
    for urls in [
        vec![ua.as_str(), ua.as_str(), ua.as_str()],
        vec![ua.as_str(), ub.as_str(), other_db.as_str()],
    ] {
        let mut args = vec!["run", "--name", "dup", "--wait", "2s"];
        for u in &urls {
            args.extend(["--redis", u]);
        }
        args.extend(["--", "true"]);
        let t = Instant::now();
        let (code, _, err) = leasehold_output(&args);
        assert_eq!(code, 64, "{urls:?}: {err}");
        one_line(&err);
        assert!(err.contains("independent"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}

/// Two addresses that reach one server (here a proxy in front of it; in
/// life a hostname and its IP) are the same quorum member: told apart by the
/// server's run_id, not by the URL's text.
#[test]
fn one_server_behind_two_addresses_is_refused_as_a_quorum_member() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    let proxy = support::Proxy::start(a.port).expect("proxy");
    let (ua, ub, via) = (a.url(), b.url(), proxy.url());
    let (code, _, err) = leasehold_output(&[
        "run", "--name", "dup", "--wait", "2s", "--redis", &ua, "--redis", &ub, "--redis", &via,
        "--", "true",
    ]);
    assert_eq!(code, 64, "{err}");
    one_line(&err);
    assert!(err.contains("same Redis"), "{err}");
}

/// Issue 21.8: `--min-replicas` with no replica attached: every attempt is
/// refused (not replicated), and attempts are spaced by the backoff (50 ms
/// doubling to 2 s), not woken by the attempt's own give-back.
#[test]
fn min_replicas_retries_keep_their_backoff() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    let before = r.command_calls(&["wait"]);
    let (code, _, err) = leasehold_output(&[
        "run",
        "--name",
        "norepl",
        "--redis",
        &url,
        "--min-replicas",
        "1",
        "--ttl",
        "1s",
        "--wait",
        "6s",
        "--",
        "true",
    ]);
    let attempts = r.command_calls(&["wait"]) - before;
    assert_eq!(code, 75, "{err}");
    // Each attempt: WAIT (up to TTL/5) then the backoff: 0.05 + 0.1 + 0.2 +
    // 0.4 + 0.8 + 1.6 + 2 s ... = about 8 attempts in 6 s; woken at once by
    // its own release it made 25 or more.
    eprintln!("{attempts} attempts in 6 s");
    assert!((3..=12).contains(&attempts), "{attempts} attempts in 6 s");
}

/// Issue 21.9: SIGTERM or SIGINT while connecting (to an address that
/// accepts but never answers) ends `run` at once with 143 / 130, not after
/// the connect timeout with 69.
#[test]
fn a_signal_while_connecting_ends_run_at_once() {
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "redis://127.0.0.1:{}",
        silent.local_addr().expect("addr").port()
    );
    let dir = tempfile::tempdir().expect("dir");
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let mut p = leasehold(
            dir.path(),
            &["run", "--name", "x", "--redis", &url, "--", "true"],
            &[],
        );
        // Well inside the connect (its timeout is several seconds).
        std::thread::sleep(Duration::from_millis(700));
        let t = Instant::now();
        p.signal(sig);
        assert_eq!(
            p.wait_exit(Duration::from_secs(2)),
            Some(code),
            "{}",
            p.stderr()
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}

/// Issue 21.9: a TLS file that never ends (a FIFO without a writer,
/// /dev/zero) or is not a file is refused at once (64), not read forever.
#[test]
fn tls_files_that_never_end_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let fifo = dir.path().join("ca.fifo");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("path");
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let fifo = fifo.to_string_lossy().into_owned();
    let d = dir.path().to_string_lossy().into_owned();
    for ca in [fifo.as_str(), "/dev/zero", d.as_str()] {
        let mut p = leasehold(
            dir.path(),
            &[
                "run",
                "--name",
                "x",
                "--redis",
                "rediss://127.0.0.1:1",
                "--tls-ca",
                ca,
                "--",
                "true",
            ],
            &[],
        );
        let code = p.wait_exit(Duration::from_secs(3));
        let err = p.stderr();
        assert_eq!(code, Some(64), "{ca}: {err}");
        one_line(&err);
        assert!(err.contains(ca), "{err}");
    }
}

/// Issue 21.10: a TTL too short for any grace (stopping takes 100 ms after
/// SIGKILL, which must fit in half the TTL) is refused before anything runs,
/// not accepted and then the child stopped at once (79, or a loop).
#[test]
fn a_ttl_too_short_to_run_a_child_is_refused() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    for (ttl, grace) in [
        ("100ms", Some("0s")),
        ("150ms", Some("0s")),
        ("199ms", Some("0s")),
        ("150ms", None),
    ] {
        let mut args = vec!["run", "--name", "short", "--redis", &url, "--ttl", ttl];
        if let Some(g) = grace {
            args.extend(["--grace", g]);
        }
        args.extend(["--wait", "2s", "--", "sleep", "1"]);
        let (code, _, err) = leasehold_output(&args);
        assert_eq!(code, 64, "--ttl {ttl} --grace {grace:?}: {err}");
        one_line(&err);
        assert!(err.contains("TTL"), "{err}");
    }
    let (code, _, err) = leasehold_output(&[
        "run", "--name", "short", "--redis", &url, "--ttl", "1s", "--grace", "0s", "--", "sh",
        "-c", "exit 3",
    ]);
    assert_eq!(code, 3, "{err}");
}

/// Issue 21.13: what Redis or the environment refuses is said as one line
/// with the documented code: a database number Redis does not have (64, not
/// "unreachable"), a value of another type or one leasehold never writes
/// (70, not a raw script error), a URL or password in the environment that
/// is not UTF-8 (64, not a silent fallback to localhost).
#[test]
fn refusals_are_one_clear_line() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    let db99 = format!("{url}/99");
    let (code, _, err) = leasehold_output(&["status", "--name", "x", "--redis", &db99]);
    assert_eq!(code, 64, "{err}");
    one_line(&err);
    assert!(
        err.contains("database") && !err.contains("unreachable"),
        "{err}"
    );
    // A semaphore's slot info that is a string (WRONGTYPE inside a script);
    // a queue whose info is a string, while the record says someone queues.
    r.cmd(&["SET", "leasehold:{sem}:slotinfo", "str"]);
    r.cmd(&["SET", "leasehold:{line}:qinfo", "str"]);
    r.cmd(&[
        "ZADD",
        "leasehold:{line}:queue",
        "1",
        "h/1/0123456789abcdef0123456789abcdef",
    ]);
    r.cmd(&["HSET", "leasehold:{line}:lease", "qu", "99999999999999"]);
    for args in [
        vec![
            "run", "--name", "sem", "--slots", "2", "--redis", &url, "--wait", "5s", "--", "true",
        ],
        vec![
            "run", "--name", "line", "--redis", &url, "--wait", "5s", "--", "true",
        ],
    ] {
        let (code, _, err) = leasehold_output(&args);
        assert_eq!(code, 70, "{args:?}: {err}");
        one_line(&err);
        assert!(
            !err.contains("user_script") && !err.contains("type another type"),
            "{err}"
        );
        assert!(
            err.contains("leasehold did not write") || err.contains("not written by leasehold"),
            "{err}"
        );
    }
    // Not UTF-8 in the environment: refused, never replaced by a default.
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"redis://127.0.0.1:\xff");
    for var in ["LEASEHOLD_REDIS_URL", "LEASEHOLD_REDIS_PASSWORD"] {
        let mut cmd = std::process::Command::new(support::leasehold_bin());
        cmd.args(["status", "--name", "x"]);
        if var != "LEASEHOLD_REDIS_URL" {
            cmd.args(["--redis", &url]);
        }
        let out = cmd
            .env_remove("LEASEHOLD_REDIS_URL")
            .env(var, bad)
            .output()
            .expect("status");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{var}: {err}");
        one_line(&err);
        assert!(err.contains(var), "{err}");
    }
}

/// Issue 21.13: `chaos` refuses a TTL its contenders cannot run with and a
/// timeline it cannot write, before starting anything (64), instead of
/// printing NaN and exiting 0.
#[test]
fn chaos_refuses_what_cannot_work() {
    let r = RedisServer::start();
    let url = r.url();
    let dir = tempfile::tempdir().expect("dir");
    let svg = dir.path().join("t.svg").to_string_lossy().into_owned();
    for (ttl, svg) in [
        ("0s", svg.as_str()),
        ("150ms", svg.as_str()),
        ("1s", "/nonexistent/dir/t.svg"),
    ] {
        let t = Instant::now();
        let (code, out, err) = leasehold_output(&[
            "chaos",
            "--redis",
            &url,
            "--ttl",
            ttl,
            "--duration",
            "1s",
            "--svg",
            svg,
        ]);
        assert_eq!(code, 64, "--ttl {ttl} --svg {svg}: {out} {err}");
        one_line(&err);
        assert!(!out.contains("NaN"), "{out}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
