//! Quota counters on a real redis-server.

mod support;

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
