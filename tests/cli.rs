//! `leasehold run` end to end: the real binary, a real redis-server, and
//! workers that log what they actually did.

use leasehold_testkit as support;

use std::path::Path;
use std::time::Duration;

use support::{Proc, RedisServer, leasehold, leasehold_output, now_ns, pid_alive, ppid, wait_for};

/// A worker that logs `start TOKEN PID NS` and, on SIGTERM, `stop TOKEN PID NS`.
/// PID is the host's (from /proc/self): in a PID namespace `$$` is not.
const WORKER: &str = r#"read -r pid _ < /proc/self/stat; echo "start $LEASEHOLD_TOKEN $pid $(date +%s%N)" >> "$LOG"; trap 'echo "stop $LEASEHOLD_TOKEN $pid $(date +%s%N)" >> "$LOG"; exit 0' TERM; while :; do sleep 0.02; done"#;

#[derive(Debug, Clone, PartialEq)]
struct Line {
    what: String,
    token: u64,
    pid: i32,
    ns: u128,
}

fn read_log(path: &Path) -> Vec<Line> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Line {
                what: f.first()?.to_string(),
                token: f.get(1)?.parse().ok()?,
                pid: f.get(2)?.parse().ok()?,
                ns: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// The supervisor among `sups` that `pid` descends from (directly, or through
/// a PID namespace's relay and init).
fn supervisor_of(pid: i32, sups: &[Proc]) -> Option<usize> {
    let mut p = pid;
    for _ in 0..4 {
        p = ppid(p)?;
        if let Some(i) = sups.iter().position(|s| s.pid() == p) {
            return Some(i);
        }
    }
    None
}

fn starts(path: &Path) -> Vec<Line> {
    read_log(path)
        .into_iter()
        .filter(|l| l.what == "start")
        .collect()
}

/// A Redis started for the test, a temp dir, and a log file the workers append to.
struct World {
    r: RedisServer,
    dir: tempfile::TempDir,
    log: std::path::PathBuf,
    log_s: String,
    url: String,
}

fn world(log_name: &str) -> World {
    let r = RedisServer::start();
    seed_epoch(&r);
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join(log_name);
    let log_s = log.to_string_lossy().to_string();
    let url = r.url();
    World {
        r,
        dir,
        log,
        log_s,
        url,
    }
}

fn seed_epoch(r: &RedisServer) {
    // A Redis "in use for long": no post-data-loss quarantine in tests not about it.
    r.warm();
}

fn run_args<'a>(url: &'a str, ttl: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["run", "--name", "job", "--redis", url, "--ttl", ttl];
    v.extend_from_slice(extra);
    v.extend_from_slice(&["--", "sh", "-c", WORKER]);
    v
}

#[test]
fn three_supervisors_one_child_and_takeover_after_sigkill() {
    let World {
        r: _redis,
        dir,
        log,
        log_s,
        url,
    } = world("work.log");
    let ttl = Duration::from_secs(2);
    let sups: Vec<_> = (0..3)
        .map(|_| leasehold(dir.path(), &run_args(&url, "2s", &[]), &[("LOG", &log_s)]))
        .collect();
    let first = wait_for(Duration::from_secs(10), || starts(&log).into_iter().next())
        .expect("a child starts");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        starts(&log).len(),
        1,
        "more than one child ran: {:?}",
        read_log(&log)
    );

    // SIGKILL the leader's supervisor: its child must die with it.
    let leader = &sups
        [supervisor_of(first.pid, &sups).expect("the child descends from one of the supervisors")];
    let killed_ns = now_ns();
    leader.signal(libc::SIGKILL);
    let died = wait_for(Duration::from_secs(2), || {
        (!pid_alive(first.pid)).then(now_ns)
    })
    .expect("the orphaned child died with its supervisor");
    let second = wait_for(ttl + Duration::from_secs(3), || {
        starts(&log).into_iter().nth(1)
    })
    .expect("another supervisor took over");
    assert!(second.token > first.token);
    assert!(
        died <= second.ns,
        "old child still alive when the new one started"
    );
    let took = Duration::from_nanos((second.ns - killed_ns) as u64);
    eprintln!("failover after SIGKILL: {took:?} (TTL {ttl:?})");
    assert!(
        took <= ttl + Duration::from_secs(1),
        "failover took {took:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(starts(&log).len(), 2, "{:?}", read_log(&log));
}

#[test]
fn sigterm_hands_over_well_under_a_second() {
    let World {
        r: _redis,
        dir,
        log,
        log_s,
        url,
    } = world("work.log");
    let mut sups: Vec<_> = (0..2)
        .map(|_| leasehold(dir.path(), &run_args(&url, "10s", &[]), &[("LOG", &log_s)]))
        .collect();
    let first = wait_for(Duration::from_secs(10), || starts(&log).into_iter().next())
        .expect("a child starts");
    std::thread::sleep(Duration::from_millis(300));
    let idx = supervisor_of(first.pid, &sups).expect("leader");
    let termed_ns = now_ns();
    sups[idx].signal(libc::SIGTERM);
    let code = sups[idx].wait_exit(Duration::from_secs(5));
    assert_eq!(
        code,
        Some(0),
        "run exits with the child's status after forwarding"
    );
    let second =
        wait_for(Duration::from_secs(5), || starts(&log).into_iter().nth(1)).expect("handover");
    let stop = read_log(&log)
        .into_iter()
        .find(|l| l.what == "stop" && l.token == first.token)
        .expect("the old child got SIGTERM and logged its stop");
    assert!(
        stop.ns <= second.ns,
        "overlap: new child started before the old stopped"
    );
    let took = Duration::from_nanos((second.ns - termed_ns) as u64);
    eprintln!("handover after SIGTERM: {took:?}");
    assert!(took < Duration::from_secs(1), "handover took {took:?}");
}

#[test]
fn child_is_stopped_before_the_ttl_when_redis_goes_away() {
    let World {
        mut r,
        dir,
        log,
        log_s,
        url,
    } = world("work.log");
    let ttl = Duration::from_secs(2);
    let mut sup = leasehold(
        dir.path(),
        &run_args(&url, "2s", &["--grace", "300ms"]),
        &[("LOG", &log_s)],
    );
    wait_for(Duration::from_secs(10), || starts(&log).into_iter().next()).expect("start");
    std::thread::sleep(Duration::from_millis(200));
    let stopped_ns = now_ns();
    r.stop();
    let code = sup.wait_exit(ttl * 3).expect("supervisor exits");
    let exited_ns = now_ns();
    assert_eq!(code, 79, "lost-lease exit code; stderr: {}", sup.stderr());
    let stop = read_log(&log)
        .into_iter()
        .find(|l| l.what == "stop")
        .expect("child got SIGTERM");
    // The lease could not expire in Redis before stopped + TTL.
    let expiry = stopped_ns + ttl.as_nanos();
    assert!(
        stop.ns < expiry,
        "child stopped after the lease could expire"
    );
    assert!(
        exited_ns < expiry,
        "supervisor (and so its reaped child) outlived the lease by {:?}",
        Duration::from_nanos((exited_ns - expiry) as u64)
    );
    assert!(sup.stderr().contains("lost the lease"), "{}", sup.stderr());
}

#[test]
fn exit_status_is_propagated_and_lease_released() {
    let r = RedisServer::start();
    seed_epoch(&r);
    let url = r.url();
    let (code, _, err) = leasehold_output(&[
        "run", "--name", "st", "--redis", &url, "--", "sh", "-c", "exit 7",
    ]);
    assert_eq!(code, 7, "{err}");
    let (code, out, _) = leasehold_output(&["status", "--name", "st", "--redis", &url]);
    assert_eq!(code, 0);
    assert!(out.contains("is free"), "{out}");
    let (code, _, err) = leasehold_output(&[
        "run",
        "--name",
        "st",
        "--redis",
        &url,
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]);
    assert_eq!(code, 128 + libc::SIGTERM, "{err}");
    let (code, _, err) = leasehold_output(&[
        "run",
        "--name",
        "st",
        "--redis",
        &url,
        "--",
        "/nonexistent/cmd",
    ]);
    assert_eq!(code, 127, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn wait_elapses_with_75() {
    let World {
        r: _redis,
        dir,
        log,
        log_s,
        url,
    } = world("work.log");
    let _holder = leasehold(dir.path(), &run_args(&url, "10s", &[]), &[("LOG", &log_s)]);
    wait_for(Duration::from_secs(10), || starts(&log).into_iter().next()).expect("start");
    let t = std::time::Instant::now();
    let (code, _, err) = leasehold_output(&[
        "run", "--name", "job", "--redis", &url, "--wait", "500ms", "--", "true",
    ]);
    assert_eq!(code, 75, "{err}");
    assert!(t.elapsed() >= Duration::from_millis(500));
    assert_eq!(starts(&log).len(), 1);
}

#[test]
fn forever_campaigns_again_after_the_child_exits() {
    let World {
        r: _redis,
        dir,
        log,
        log_s,
        url,
    } = world("runs.log");
    let mut sup = leasehold(
        dir.path(),
        &[
            "run",
            "--name",
            "svc",
            "--redis",
            &url,
            "--forever",
            "--",
            "sh",
            "-c",
            r#"read -r pid _ < /proc/self/stat; echo "start $LEASEHOLD_TOKEN $pid $(date +%s%N)" >> "$LOG"; sleep 0.1"#,
        ],
        &[("LOG", &log_s)],
    );
    let runs = wait_for(Duration::from_secs(10), || {
        let s = starts(&log);
        (s.len() >= 3).then_some(s)
    })
    .expect("three runs");
    assert!(runs.windows(2).all(|w| w[1].token > w[0].token));
    sup.signal(libc::SIGTERM);
    assert!(sup.wait_exit(Duration::from_secs(5)).is_some());
}

#[test]
fn hold_after_exit_keeps_the_lease() {
    let r = RedisServer::start();
    seed_epoch(&r);
    let url = r.url();
    let dir = tempfile::tempdir().expect("dir");
    let mut sup = leasehold(
        dir.path(),
        &[
            "run",
            "--name",
            "cron",
            "--redis",
            &url,
            "--hold-after-exit",
            "1500ms",
            "--",
            "true",
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(700));
    let (_, out, _) = leasehold_output(&["status", "--name", "cron", "--redis", &url, "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["state"], "held", "{out}");
    assert_eq!(sup.wait_exit(Duration::from_secs(5)), Some(0));
    let (_, out, _) = leasehold_output(&["status", "--name", "cron", "--redis", &url, "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["state"], "free", "{out}");
    assert!(v["last_token"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn usage_errors_are_one_line_and_64() {
    let r = RedisServer::start();
    let url = r.url();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "--name", "x", "--ttl", "10x", "--", "true"],
            "10x",
        ),
        (
            vec!["run", "--name", "x", "--ttl", "0s", "--", "true"],
            "TTL",
        ),
        (
            vec![
                "run", "--name", "x", "--ttl", "10s", "--grace", "9s", "--", "true",
            ],
            "grace",
        ),
        (
            vec!["run", "--name", "x", "--bogus", "--", "true"],
            "--bogus",
        ),
        (vec!["run", "--name", "x"], "COMMAND"),
        (vec!["run", "--name", "a b", "--", "true"], "a b"),
        (
            vec!["run", "--name", "x", "--wait", "soon", "--", "true"],
            "soon",
        ),
        (
            vec!["run", "--name", "x", "--redis", "http://h", "--", "true"],
            "URL",
        ),
        (vec!["status", "--name", "{x}"], "{x}"),
    ];
    for (mut args, needle) in cases {
        args.extend_from_slice(&[]);
        if !args.contains(&"--redis") {
            let pos = 1;
            args.insert(pos, &url);
            args.insert(pos, "--redis");
        }
        let (code, _, err) = leasehold_output(&args);
        assert_eq!(code, 64, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn unreachable_redis_is_69_and_hides_the_password() {
    let port = support::free_port();
    let url = format!("redis://user:hunter2@127.0.0.1:{port}");
    let (code, _, err) = leasehold_output(&["run", "--name", "x", "--redis", &url, "--", "true"]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("unreachable"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn status_and_watch_show_the_holder() {
    let r = RedisServer::start();
    seed_epoch(&r);
    let dir = tempfile::tempdir().expect("dir");
    let url = r.url();
    let watch_out = dir.path().join("watch.out");
    let out_file = std::fs::File::create(&watch_out).expect("file");
    let mut watcher = std::process::Command::new(support::leasehold_bin())
        .args(["watch", "--name", "w", "--redis", &url, "--json"])
        .stdout(out_file)
        .spawn()
        .expect("watch");
    let (_, out, _) = leasehold_output(&["status", "--name", "w", "--redis", &url]);
    assert!(out.contains("'w' is free"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, err) = leasehold_output(&[
        "run",
        "--name",
        "w",
        "--redis",
        &url,
        "--value",
        "host-a:8080",
        "--",
        "sleep",
        "0.5",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines = wait_for(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&watch_out).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (lines.len() >= 3).then_some(lines)
    })
    .expect("watch printed free, held, free");
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert_eq!(lines[0]["state"], "free");
    assert_eq!(lines[1]["state"], "held");
    assert_eq!(lines[1]["value"], "host-a:8080");
    assert_eq!(lines[2]["state"], "free");
}

#[test]
fn overwritten_lease_key_stops_the_child() {
    let World {
        r,
        dir,
        log,
        log_s,
        url,
    } = world("work.log");
    let mut sup = leasehold(
        dir.path(),
        &run_args(&url, "900ms", &["--grace", "200ms"]),
        &[("LOG", &log_s)],
    );
    let first =
        wait_for(Duration::from_secs(10), || starts(&log).into_iter().next()).expect("start");
    r.cmd(&["DEL", "leasehold:{job}:lease"]);
    r.cmd(&["SET", "leasehold:{job}:lease", "garbage"]);
    assert_eq!(
        sup.wait_exit(Duration::from_secs(3)),
        Some(79),
        "{}",
        sup.stderr()
    );
    assert!(!pid_alive(first.pid));
    assert!(sup.stderr().contains("foreign type"), "{}", sup.stderr());
}

#[test]
fn metrics_are_served_and_logs_can_be_json() {
    let r = RedisServer::start();
    seed_epoch(&r);
    let dir = tempfile::tempdir().expect("dir");
    let url = r.url();
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut sup = leasehold(
        dir.path(),
        &[
            "-v",
            "--log-format",
            "json",
            "run",
            "--name",
            "m",
            "--redis",
            &url,
            "--metrics-addr",
            &addr,
            "--",
            "sleep",
            "2",
        ],
        &[],
    );
    let scrape = || -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.contains("leasehold_is_holder").then_some(body)
    };
    let body = wait_for(Duration::from_secs(5), scrape).expect("metrics served");
    assert!(body.contains("leasehold_is_holder{name=\"m\"} 1"), "{body}");
    assert!(
        body.contains("leasehold_fencing_token{name=\"m\"}"),
        "{body}"
    );
    assert!(
        body.contains("leasehold_acquisitions_total{name=\"m\"} 1"),
        "{body}"
    );
    assert!(body.contains("leasehold_acquire_wait_seconds"), "{body}");
    assert!(body.contains("leasehold_containment{mode=\""), "{body}");
    assert_eq!(sup.wait_exit(Duration::from_secs(10)), Some(0));
    let err = sup.stderr();
    assert!(!err.trim().is_empty());
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    // A bad address is a usage error.
    let (code, _, err) = leasehold_output(&[
        "run",
        "--name",
        "m",
        "--redis",
        &url,
        "--metrics-addr",
        "nowhere",
        "--",
        "true",
    ]);
    assert_eq!(code, 64, "{err}");
}

/// Issue 21.4: a holder id or value in Redis carrying terminal escape
/// sequences (anyone with write access can put them there) reaches the
/// terminal escaped, as in the JSON output: `status`, and `watch`.
#[test]
fn status_and_watch_escape_control_characters_from_redis() {
    let r = RedisServer::start();
    seed_epoch(&r);
    let url = r.url();
    let holder = "evil\u{1b}]0;owned\u{7}\u{1b}[2J/77/0123456789abcdef0123456789abcdef";
    let value = "\u{1b}[31mred\u{9b}2J\u{202e}";
    let set = "local t = redis.call('TIME') \
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
        redis.call('HSET', KEYS[1], 'kind', 'lease', 'holder', ARGV[1], 'value', ARGV[2], \
          'exp', now + 60000, 'ttl', 60000, 'token', 5) return 1";
    let reply = r.cmd(&["EVAL", set, "1", "leasehold:{esc}:lease", holder, value]);
    assert!(reply.contains(":1"), "{reply}");
    let clean = |s: &str| {
        !s.chars()
            .any(|c| c.is_control() && c != '\n' || c == '\u{202e}')
    };
    let (code, out, err) = leasehold_output(&["status", "--name", "esc", "--redis", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("evil"), "{out:?}");
    assert!(clean(&out), "{out:?}");
    // watch prints the state it finds first.
    let dir = tempfile::tempdir().expect("dir");
    let watch_out = dir.path().join("watch.out");
    let mut watcher = std::process::Command::new(support::leasehold_bin())
        .args(["watch", "--name", "esc", "--redis", &url])
        .stdout(std::fs::File::create(&watch_out).expect("file"))
        .spawn()
        .expect("watch");
    let text = wait_for(Duration::from_secs(5), || {
        let t = std::fs::read_to_string(&watch_out).unwrap_or_default();
        t.contains("evil").then_some(t)
    });
    let _ = watcher.kill();
    let _ = watcher.wait();
    let text = text.expect("watch printed the holder");
    assert!(clean(&text), "{text:?}");
}

/// Issue 21.6: a waiter that gives up (`--wait` elapsed: 75; SIGTERM while
/// waiting: 143) leaves the queue before it exits, so the next in line starts
/// as soon as the holder releases, not when the leavers' places lapse.
#[test]
fn waiters_that_give_up_leave_the_queue_before_exiting() {
    let r = RedisServer::start();
    seed_epoch(&r);
    let dir = tempfile::tempdir().expect("dir");
    let url = r.url();
    let d = dir.path().display().to_string();
    let queued = |n: usize| {
        wait_for(Duration::from_secs(5), || {
            r.cmd(&["ZCARD", "leasehold:{q}:queue"])
                .contains(&format!(":{n}"))
                .then_some(())
        })
        .unwrap_or_else(|| panic!("{n} waiters queued"));
    };
    let job = |script: String| {
        vec![
            "run".to_string(),
            "--name".into(),
            "q".into(),
            "--redis".into(),
            url.clone(),
            "--ttl".into(),
            "10s".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            script,
        ]
    };
    let spawn = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        leasehold(dir.path(), &args, &[])
    };
    let mut holder = spawn(job(format!(
        "touch {d}/h-start; sleep 2.5; date +%s%N > {d}/h-end"
    )));
    wait_for(Duration::from_secs(5), || {
        dir.path().join("h-start").exists().then_some(())
    })
    .expect("the holder started");
    let mut a = {
        let mut args = job("true".into());
        args.splice(5..5, ["--wait".to_string(), "1s".into()]);
        spawn(args)
    };
    queued(1);
    let mut b = spawn(job("true".into()));
    queued(2);
    let mut next = spawn(job(format!("date +%s%N > {d}/next-start")));
    queued(3);
    assert_eq!(
        a.wait_exit(Duration::from_secs(3)),
        Some(75),
        "{}",
        a.stderr()
    );
    b.signal(libc::SIGTERM);
    assert_eq!(
        b.wait_exit(Duration::from_secs(3)),
        Some(143),
        "{}",
        b.stderr()
    );
    assert_eq!(
        holder.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        holder.stderr()
    );
    let read_ns = |f: &str| -> Option<u128> {
        let text = std::fs::read_to_string(dir.path().join(f)).ok()?;
        text.strip_suffix('\n')?.parse().ok()
    };
    let start = wait_for(Duration::from_secs(15), || read_ns("next-start"))
        .expect("the next waiter started");
    let end = read_ns("h-end").expect("the holder's job wrote its end");
    let late = Duration::from_nanos(start.saturating_sub(end) as u64);
    eprintln!("the next waiter started {late:?} after the holder's job ended");
    assert!(late < Duration::from_millis(600), "started {late:?} late");
    assert_eq!(
        next.wait_exit(Duration::from_secs(5)),
        Some(0),
        "{}",
        next.stderr()
    );
}
