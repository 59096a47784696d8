//! Quota counters on a real redis-server.

use leasehold_testkit as support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::Client;
use support::{RedisServer, leasehold_output};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_takers_limit_three() {
    let r = RedisServer::start();
    let c = Client::connect(&r.url()).await.expect("connect");
    let q = Arc::new(
        c.quota(3, Duration::from_secs(86_400))
            .time_zone("Asia/Shanghai")
            .build()
            .expect("quota"),
    );
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move { q.take("votes:user-1", 1).await }));
    }
    let mut allowed = 0;
    for t in tasks {
        if t.await.expect("task").expect("take").allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3);
    // Another user has their own 3.
    assert!(q.take("votes:user-2", 1).await.expect("take").allowed);
}

#[tokio::test]
async fn the_window_ends_at_the_zones_midnight() {
    let r = RedisServer::start();
    let c = Client::connect(&r.url()).await.expect("connect");
    let q = c
        .quota(3, Duration::from_secs(86_400))
        .time_zone("Asia/Shanghai")
        .build()
        .expect("quota");
    let t = q.take("votes:u", 1).await.expect("take");
    assert!(t.allowed);
    assert_eq!(t.remaining, 2);
    let reset = jiff::Timestamp::try_from(t.reset_at)
        .expect("ts")
        .to_zoned_datetime(jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz"));
    assert_eq!(
        (reset.hour(), reset.minute(), reset.second()),
        (0, 0, 0),
        "{reset}"
    );
    let until = t
        .reset_at
        .duration_since(std::time::SystemTime::now())
        .expect("future");
    assert!(until <= Duration::from_secs(86_400));
}

#[tokio::test]
async fn fixed_windows_roll_over() {
    let r = RedisServer::start();
    let c = Client::connect(&r.url()).await.expect("connect");
    let q = c.quota(2, Duration::from_secs(1)).build().expect("quota");
    // Start right after a window boundary, so the whole test fits in windows.
    let first = q.take("tick", 1).await.expect("take");
    let wait = first
        .reset_at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert!(q.take("tick", 1).await.expect("take").allowed);
    assert!(q.take("tick", 1).await.expect("take").allowed);
    let denied = q.take("tick", 1).await.expect("take");
    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 0);
    let wait = denied
        .reset_at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(wait <= Duration::from_secs(1));
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert!(q.take("tick", 1).await.expect("take").allowed, "new window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_window_admits_no_burst_beyond_its_limit() {
    let r = RedisServer::start();
    let c = Client::connect(&r.url()).await.expect("connect");
    let period = Duration::from_millis(500);
    let q = Arc::new(c.quota(5, period).sliding().build().expect("quota"));
    let t0 = Instant::now();
    let allowed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (q, allowed) = (q.clone(), allowed.clone());
        tasks.push(tokio::spawn(async move {
            while t0.elapsed() < Duration::from_millis(1600) {
                let sent = Instant::now();
                if q.take("api", 1).await.expect("take").allowed {
                    allowed.lock().expect("lock").push((sent, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let times = allowed.lock().expect("lock").clone();
    assert!(times.len() >= 10, "{} allowed", times.len());
    // In any interval of the period at most 5: check every allowed take against
    // those that surely happened within one period before it (allowing for the
    // request's time in flight).
    for (_, done) in &times {
        let in_window = times
            .iter()
            .filter(|(sent, d2)| d2 <= done && *sent + period > *done + Duration::from_millis(5))
            .count();
        assert!(in_window <= 5, "{in_window} takes within one period");
    }
    // And the limit is used: 5 at once from a fresh key.
    let mut n = 0;
    for _ in 0..7 {
        if q.take("fresh", 1).await.expect("take").allowed {
            n += 1;
        }
    }
    assert_eq!(n, 5);
}

#[test]
fn cli_quota_take_exit_codes_and_json() {
    let r = RedisServer::start();
    let url = r.url();
    let args = |json: bool| {
        let mut v = vec![
            "quota",
            "take",
            "votes:u9",
            "--redis",
            &url,
            "--limit",
            "2",
            "--per",
            "1d",
            "--tz",
            "Asia/Shanghai",
        ];
        if json {
            v.push("--json");
        }
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        leasehold_output(&a)
    };
    let (code, out, err) = run(args(false));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("allowed") && out.contains("1 of 2 left"),
        "{out}"
    );
    assert!(out.contains("+08:00[Asia/Shanghai]"), "{out}");
    let (code, _, _) = run(args(false));
    assert_eq!(code, 0);
    let (code, out, _) = run(args(true));
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["allowed"], false);
    assert_eq!(v["remaining"], 0);
    let (code, _, err) = leasehold_output(&[
        "quota",
        "take",
        "k",
        "--redis",
        &url,
        "--limit",
        "2",
        "--per",
        "1d",
        "--tz",
        "Mars/Olympus",
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("Mars/Olympus"), "{err}");
}

/// `leasehold quota take KEY --redis URL ARGS... --json`: (exit code, JSON, stderr).
fn take_json(url: &str, key: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["quota", "take", key, "--redis", url, "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = leasehold_output(&all);
    let v = serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
    (code, v, err)
}

fn reset_of(v: &serde_json::Value) -> jiff::ZonedDateTime {
    v["reset_at"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("reset_at of {v}: {e}"))
}

/// Keys of this Redis matching `pattern` (raw RESP reply of KEYS).
fn keys(r: &RedisServer, pattern: &str) -> Vec<String> {
    r.cmd(&["KEYS", pattern])
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .map(str::to_string)
        .collect()
}

/// Issue 20.1: `1mo`, `1y`, `25h`, `36h` all reset at the next midnight.
#[test]
fn periods_longer_than_a_day_are_what_they_say() {
    let r = RedisServer::start();
    let url = r.url();
    let (code, v, err) = take_json(
        &url,
        "m",
        &["--limit", "3", "--per", "1month", "--tz", "Asia/Shanghai"],
    );
    assert_eq!(code, 0, "{err}");
    let reset = reset_of(&v);
    assert_eq!(
        (reset.day(), reset.hour(), reset.minute()),
        (1, 0, 0),
        "{reset}"
    );
    let today = jiff::Timestamp::now().to_zoned_datetime(reset.time_zone().clone());
    assert_eq!(
        reset.date(),
        today
            .date()
            .first_of_month()
            .checked_add(jiff::Span::new().months(1))
            .expect("date")
    );
    let (code, v, err) = take_json(&url, "y", &["--limit", "3", "--per", "1y"]);
    assert_eq!(code, 0, "{err}");
    let reset = reset_of(&v);
    assert_eq!(
        (reset.month(), reset.day(), reset.hour()),
        (1, 1, 0),
        "{reset}"
    );
    assert_eq!(reset.year(), today.year() + 1);
    for hours in [25i64, 36] {
        let per = format!("{hours}h");
        let (code, v, err) = take_json(&url, "h", &["--limit", "3", "--per", &per]);
        assert_eq!(code, 0, "{err}");
        let reset = reset_of(&v).timestamp().as_second();
        assert_eq!(reset % (hours * 3600), 0, "{per}: {v}");
        let left = reset - jiff::Timestamp::now().as_second();
        assert!(left > 0 && left <= hours * 3600, "{per}: {v}");
        assert_eq!(v["remaining"], 2, "{per} has its own counter: {v}");
    }
    // What is not supported is refused with one line and 64.
    for bad in [
        &["--per", "1h30m"][..],
        &["--per", "1.5d"],
        &["--per", "soon"],
        &["--per", "1mo", "--sliding"],
    ] {
        let mut args = vec!["--limit", "3"];
        args.extend_from_slice(bad);
        let (code, _, err) = take_json(&url, "bad", &args);
        assert_eq!(code, 64, "{bad:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// A zone in which the local time is now between 01:00 and 10:59, so that
/// a 12-hour window and the day start together.
fn a_morning_zone() -> String {
    for off in -12i32..=14 {
        // Etc/GMT-N is N hours *ahead* of UTC (POSIX sign).
        let name = match off {
            0 => "Etc/GMT".to_string(),
            o if o > 0 => format!("Etc/GMT-{o}"),
            o => format!("Etc/GMT+{}", -o),
        };
        let tz = jiff::tz::TimeZone::get(&name).expect("zone");
        let hour = jiff::Timestamp::now().to_zoned_datetime(tz).hour();
        if (1..11).contains(&hour) {
            return name;
        }
    }
    unreachable!("some zone is in its morning")
}

/// Issue 20.2: different periods on one key shared one counter, and a short
/// sliding window deleted a daily one's entries.
#[test]
fn periods_on_one_key_have_their_own_counters() {
    let r = RedisServer::start();
    let url = r.url();
    let tz = a_morning_zone();
    let twelve = ["--limit", "2", "--per", "12h", "--tz", &tz];
    let day = ["--limit", "3", "--per", "1d", "--tz", &tz];
    let (code, v, err) = take_json(&url, "k", &twelve);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["remaining"], 1);
    for left in [2, 1, 0] {
        let (code, v, err) = take_json(&url, "k", &day);
        assert_eq!(code, 0, "{err}");
        assert_eq!(v["remaining"], left);
    }
    assert_eq!(take_json(&url, "k", &day).0, 1, "the day's 3 are used");
    let (code, v, err) = take_json(&url, "k", &twelve);
    assert_eq!(code, 0, "the 12h window has its own count: {v} {err}");
    assert_eq!(v["remaining"], 0);

    let daily = ["--limit", "3", "--per", "1d", "--sliding"];
    for _ in 0..3 {
        assert_eq!(take_json(&url, "s", &daily).0, 0);
    }
    assert_eq!(take_json(&url, "s", &daily).0, 1);
    // A short sliding window on the same key, once the daily takes are
    // older than its period, must not forget them.
    std::thread::sleep(Duration::from_millis(200));
    let short = ["--limit", "5", "--per", "100ms", "--sliding"];
    assert_eq!(take_json(&url, "s", &short).0, 0);
    assert_eq!(take_json(&url, "s", &short).0, 0);
    let (code, v, _) = take_json(&url, "s", &daily);
    assert_eq!(code, 1, "a 4th daily take against a limit of 3: {v}");
    // Fixed and sliding windows of the same period do not meet either.
    let fixed_day = ["--limit", "3", "--per", "1d"];
    assert_eq!(take_json(&url, "s", &fixed_day).1["remaining"], 2);
}

/// Issue 20.3: `--sliding -n N` added N entries in one script (BUSY for
/// seconds at N = 4,000,000).
#[test]
fn a_sliding_take_of_n_is_one_entry() {
    let r = RedisServer::start();
    let url = r.url();
    let args = |n: &'static str| ["--limit", "10000000", "--per", "1h", "--sliding", "-n", n];
    let (code, v, err) = take_json(&url, "big", &args("300000"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["remaining"], 9_700_000);
    let entries: u64 = keys(&r, "leasehold:{quota:big}:sliding*")
        .iter()
        .filter(|k| r.cmd(&["TYPE", k]).contains("zset"))
        .map(|k| {
            r.cmd(&["ZCARD", k])
                .trim()
                .trim_start_matches(':')
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(entries, 1, "one entry carries the weight of the take");
    let (code, v, err) = take_json(&url, "big", &args("9700000"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["remaining"], 0);
    let (code, _, err) = take_json(&url, "big", &args("1"));
    assert_eq!(code, 1, "{err}");
    // Reading costs nothing and says the same.
    let (code, v, _) = take_json(&url, "big", &args("0"));
    assert_eq!((code, v["remaining"].as_u64()), (0, Some(0)));
}

/// Issue 20.5: Lua doubles are not exact above 2^53; `-n 0` made an empty
/// counter; `--per 20000000d` panicked.
#[test]
fn numbers_that_cannot_be_exact_are_refused() {
    let r = RedisServer::start();
    let url = r.url();
    for (limit, n) in [
        ("9007199254740993", "9007199254740993"),
        ("18446744073709551615", "1"),
        ("0", "0"),
        ("2", "3"),
    ] {
        let (code, _, err) = take_json(&url, "big", &["--limit", limit, "--per", "1d", "-n", n]);
        assert_eq!(code, 64, "--limit {limit} -n {n}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let (code, _, err) = take_json(&url, "big", &["--limit", "3", "--per", "20000000d"]);
    assert_eq!(code, 64, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Exact at the top of the range, fixed and sliding.
    for mode in [&[][..], &["--sliding"]] {
        let key = format!("top{}", mode.len());
        let run = |n: &str| {
            let mut a = vec!["--limit", "9007199254740991", "--per", "1d", "-n", n];
            a.extend_from_slice(mode);
            take_json(&url, &key, &a)
        };
        let (code, v, err) = run("9007199254740990");
        assert_eq!((code, v["remaining"].as_u64()), (0, Some(1)), "{err}");
        let (code, v, _) = run("2");
        assert_eq!(
            (code, v["remaining"].as_u64()),
            (1, Some(1)),
            "{mode:?}: {v}"
        );
        let (code, v, _) = run("1");
        assert_eq!(
            (code, v["remaining"].as_u64()),
            (0, Some(0)),
            "{mode:?}: {v}"
        );
        let (code, _, _) = run("1");
        assert_eq!(code, 1);
    }
    // -n 0 reads and writes nothing.
    let (code, v, err) = take_json(&url, "zero", &["--limit", "3", "--per", "1d", "-n", "0"]);
    assert_eq!((code, v["remaining"].as_u64()), (0, Some(3)), "{err}");
    assert!(keys(&r, "leasehold:{quota:zero}*").is_empty());
}

/// Issue 20.7: the key is a quota key, not a lease name.
#[test]
fn a_bad_key_is_called_a_quota_key() {
    let r = RedisServer::start();
    let (code, _, err) = take_json(&r.url(), "a b", &["--limit", "3", "--per", "1d"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("quota key"), "{err}");
    assert!(!err.contains("lease name"), "{err}");
}

/// Issue 20.4: a take that timed out may have been applied, and a retry
/// counted it twice. Now a retry with the same request id counts once.
#[test]
fn a_retry_with_the_same_request_id_counts_once() {
    let r = RedisServer::start();
    let url = r.url();
    let args = |id: &'static str| ["--limit", "5", "--per", "1d", "--request-id", id];
    let (code, v, err) = take_json(&url, "k", &args("r1"));
    assert_eq!((code, v["remaining"].as_u64()), (0, Some(4)), "{err}");
    let (code, v, err) = take_json(&url, "k", &args("r1"));
    assert_eq!((code, v["remaining"].as_u64()), (0, Some(4)), "{err}");
    assert_eq!(v["replayed"], true);
    let (code, v, _) = take_json(&url, "k", &["--limit", "5", "--per", "1d", "-n", "0"]);
    assert_eq!((code, v["remaining"].as_u64()), (0, Some(4)), "r1 once");
}

/// Issue 20.4: a take that gets no answer within its timeout says that its
/// outcome is unknown (exit 69 in the CLI) and names its request id; a retry
/// with that id settles it without counting twice.
#[tokio::test]
async fn an_unanswered_take_is_unknown_and_its_retry_counts_once() {
    let r = RedisServer::start();
    let c = leasehold::Client::connect(&r.url()).await.expect("connect");
    let q = c
        .quota(5, Duration::from_secs(86_400))
        .timeout(Duration::from_millis(600))
        .build()
        .expect("quota");
    assert_eq!(q.take("k", 0).await.expect("read").remaining, 5);
    r.freeze();
    let e = q.take_with_id("k", 1, "r2").await.expect_err("no answer");
    r.thaw();
    assert!(e.is_unavailable(), "exit 69: {e}");
    let text = e.to_string();
    assert!(
        text.contains("may or may not") && text.contains("r2"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    // Whether or not the stalled attempts ran once Redis woke, the retry
    // leaves exactly one unit taken.
    let t = q.take_with_id("k", 1, "r2").await.expect("retry");
    assert!(t.allowed);
    assert_eq!(t.remaining, 4, "{t:?}");
    assert_eq!(q.take("k", 0).await.expect("read").remaining, 4);
}

/// Issue 20.4: a take that got no answer is retried under its request id
/// within the quota's timeout, so a Redis that stalls for a while costs one
/// unit, not one per attempt, and the caller gets the answer.
#[tokio::test]
async fn a_stalled_take_is_retried_and_counts_once() {
    let r = RedisServer::start();
    let c = leasehold::Client::builder(r.url())
        .op_timeout(Duration::from_millis(200))
        .connect()
        .await
        .expect("connect");
    let q = c
        .quota(10, Duration::from_secs(86_400))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("quota");
    assert!(q.take("st", 1).await.expect("take").allowed);
    r.freeze();
    let thaw = {
        let pid = r.pid();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1200));
            if let Some(pid) = pid {
                unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            }
        })
    };
    let t = q.take("st", 1).await;
    thaw.join().expect("thaw");
    let t = t.expect("the take is answered once Redis is back");
    assert!(t.allowed);
    assert_eq!(t.remaining, 8, "counted once: {t:?}");
    assert_eq!(q.take("st", 0).await.expect("read").remaining, 8);
}
