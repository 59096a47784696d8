//! Careless and hostile input, end to end (issue 21): every case one clear
//! line and a documented exit code, nothing hammered, nothing leaked. The
//! real binary against redis-servers the tests start.

mod support;

use std::time::{Duration, Instant};

use support::{RedisServer, leasehold_output};

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
    // Fields missing or not numbers: the lease is free, and taken.
    for (name, fields) in [
        ("bare", vec!["foo", "bar"]),
        ("noexp", vec!["kind", "lease", "holder", "x/1/y"]),
        (
            "garbage",
            vec![
                "holder", "x", "exp", "soon", "token", "many", "maxttl", "long",
            ],
        ),
    ] {
        let key = format!("leasehold:{{{name}}}:lease");
        let mut args = vec!["HSET", key.as_str()];
        args.extend(fields);
        r.cmd(&args);
        let (code, _, err) = leasehold_output(&[
            "run", "--name", name, "--redis", &url, "--wait", "3s", "--", "true",
        ]);
        assert_eq!(code, 0, "{name}: {err}");
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
