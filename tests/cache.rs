//! The shared token cache on a real redis-server.

use leasehold_testkit as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use leasehold::{Client, Error};
use support::{RedisServer, leasehold_output};

async fn client(r: &RedisServer) -> Client {
    r.warm();
    Client::connect(&r.url()).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_getters_on_an_empty_cache_fetch_once() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let fetches = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..50 {
        // Several clients, as if several processes.
        let cache = if i % 5 == 0 {
            Client::connect(&r.url()).await.expect("connect")
        } else {
            c.clone()
        }
        .token_cache()
        .build()
        .expect("cache");
        let fetches = fetches.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_refresh("api-token", || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(("secret-1".to_string(), Duration::from_secs(7200)))
                })
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("value"), "secret-1");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_expiry_one_refresh() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let cache = c
        .token_cache()
        .refresh_before(Duration::from_millis(500))
        .build()
        .expect("cache");
    let fetches = Arc::new(AtomicUsize::new(0));
    let fetch = |f: Arc<AtomicUsize>| {
        move || async move {
            let n = f.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok((format!("v{n}"), Duration::from_millis(1000)))
        }
    };
    assert_eq!(
        cache
            .get_or_refresh("t", fetch(fetches.clone()))
            .await
            .expect("v"),
        "v1"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (cache, f) = (cache.clone(), fetches.clone());
        tasks.push(tokio::spawn(async move {
            cache.get_or_refresh("t", fetch(f)).await
        }));
    }
    for t in tasks {
        let v = t.await.expect("task").expect("value");
        assert!(v == "v1" || v == "v2", "{v}");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "exactly one refresh");
    assert_eq!(
        cache
            .get_or_refresh("t", fetch(fetches.clone()))
            .await
            .expect("v"),
        "v2"
    );
}

#[tokio::test]
async fn spent_budget_serves_the_old_value_then_errors() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let cache = c
        .token_cache()
        .refresh_before(Duration::from_millis(500))
        .max_fetches_per_day(2)
        .build()
        .expect("cache");
    let fetches = Arc::new(AtomicUsize::new(0));
    let fetch = |f: Arc<AtomicUsize>| {
        move || async move {
            let n = f.fetch_add(1, Ordering::SeqCst) + 1;
            Ok((format!("v{n}"), Duration::from_millis(1000)))
        }
    };
    assert_eq!(
        cache
            .get_or_refresh("b", fetch(fetches.clone()))
            .await
            .expect("v"),
        "v1"
    );
    // Within refresh-before: refresh #2 (the last of the budget).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        cache
            .get_or_refresh("b", fetch(fetches.clone()))
            .await
            .expect("v"),
        "v2"
    );
    // Again near expiry: budget spent, the still-valid value is served.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        cache
            .get_or_refresh("b", fetch(fetches.clone()))
            .await
            .expect("v"),
        "v2"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // Once it expired: a clear error.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = cache
        .get_or_refresh("b", fetch(fetches.clone()))
        .await
        .expect_err("budget");
    assert!(matches!(e, Error::BudgetExhausted { limit: 2, .. }), "{e}");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_reaches_every_waiter_and_caches_nothing() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let fetches = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let cache = c.token_cache().build().expect("cache");
        let fetches = fetches.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_refresh("bad", || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err::<(String, Duration), _>("issuer said 503".to_string())
                })
                .await
        }));
    }
    for t in tasks {
        let e = t.await.expect("task").expect_err("failed fetch");
        assert!(e.to_string().contains("issuer said 503"), "{e}");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert!(
        r.cmd(&["EXISTS", "leasehold:{cache#bad}:value"])
            .contains(":0")
    );
}

#[test]
fn cli_cache_get_prints_the_value_and_fetches_once() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    let dir = tempfile::tempdir().expect("dir");
    let count = dir.path().join("count");
    let count_s = count.to_string_lossy().to_string();
    let script = format!("echo x >> '{count_s}'; echo s3cret-token; echo 2h");
    for _ in 0..3 {
        let (code, out, err) = leasehold_output(&[
            "cache", "get", "api", "--redis", &url, "-v", "--", "sh", "-c", &script,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), "s3cret-token");
        assert!(!err.contains("s3cret"), "the value was logged: {err}");
    }
    let fetched = std::fs::read_to_string(&count).unwrap_or_default();
    assert_eq!(fetched.lines().count(), 1);
    let (code, _, err) =
        leasehold_output(&["cache", "get", "down", "--redis", &url, "--", "false"]);
    assert_eq!(code, 70, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Runs `leasehold cache get NAME --redis URL ARGS...`: (code, stdout, stderr).
fn cache_get(url: &str, name: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["cache", "get", name, "--redis", url];
    all.extend_from_slice(args);
    leasehold_output(&all)
}

/// Issue 20.8: a spent budget gave 75 to the refresher and 70 ("fetch
/// failed") to those waiting for it. It is 75 (BudgetExhausted) everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_is_the_same_error_for_everyone() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let build = |c: &Client| {
        c.token_cache()
            .max_fetches_per_day(1)
            .build()
            .expect("cache")
    };
    let first = build(&c)
        .get_or_refresh("b", || async {
            Ok(("v1".to_string(), Duration::from_millis(300)))
        })
        .await
        .expect("v1");
    assert_eq!(first, "v1");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let cache = if i % 6 == 0 {
            build(&Client::connect(&r.url()).await.expect("connect"))
        } else {
            build(&c)
        };
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_refresh("b", || async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(("v2".to_string(), Duration::from_secs(60)))
                })
                .await
        }));
    }
    for t in tasks {
        let e = t.await.expect("task").expect_err("budget spent");
        assert!(matches!(e, Error::BudgetExhausted { limit: 1, .. }), "{e}");
    }
    // And in the CLI, several processes at once: 75 each.
    let url = r.url();
    let procs: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                cache_get(
                    &url,
                    "b",
                    &["--max-fetches-per-day", "1", "--", "echo", "v3"],
                )
            })
        })
        .collect();
    for p in procs {
        let (code, out, err) = p.join().expect("thread");
        assert_eq!(code, 75, "{out} {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// Collects what is published on `channel` while `f` runs (raw RESP).
fn published_during(r: &RedisServer, channel: &str, f: impl FnOnce()) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", r.port)).expect("connect");
    let req = format!(
        "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{channel}\r\n",
        channel.len()
    );
    s.write_all(req.as_bytes()).expect("subscribe");
    s.set_read_timeout(Some(Duration::from_millis(500))).ok();
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    // The confirmation first, so that nothing published after it is missed.
    while !String::from_utf8_lossy(&seen).contains("subscribe") {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => panic!("no subscription confirmation"),
        }
    }
    f();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Issue 20.9: a value of several lines had its second line read as the
/// lifetime, quoted in the error, logged and published.
#[test]
fn no_part_of_a_value_is_shown_published_or_kept() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    for (name, output) in [
        ("pem", "printf 's3cret-line-1\\ns3cret-line-2\\n'"),
        (
            "pem3",
            "printf -- '-----BEGIN-----\\ns3cret\\n-----END-----\\n'",
        ),
    ] {
        let mut result = None;
        let events = published_during(&r, &format!("leasehold:{{cache#{name}}}:events"), || {
            result = Some(cache_get(&url, name, &["-vv", "--", "sh", "-c", output]));
        });
        let (code, out, err) = result.expect("ran");
        assert_eq!(code, 70, "{err}");
        assert!(out.is_empty(), "{out}");
        let last = err.trim().lines().last().unwrap_or_default().to_string();
        assert!(last.contains("JSON"), "the error says what to do: {err}");
        assert!(!err.contains("s3cret") && !err.contains("BEGIN"), "{err}");
        assert!(events.contains("failed"), "waiters are told: {events}");
        assert!(
            !events.contains("s3cret") && !events.contains("BEGIN"),
            "{events}"
        );
        let kept = r.cmd(&["GET", &format!("leasehold:{{cache#{name}}}:failed")]);
        assert!(
            !kept.contains("s3cret") && !kept.contains("BEGIN"),
            "{kept}"
        );
    }
    // The JSON form carries a value of several lines.
    let (code, out, err) = cache_get(
        &url,
        "json",
        &["--", "echo", r#"{"value": "l1\nl2", "expires_in": 60}"#],
    );
    assert_eq!((code, out.as_str()), (0, "l1\nl2\n"), "{err}");
}

/// Issue 20.10: a lifetime at or below --refresh-before refetched on every
/// call. refresh-before is now at most half the lifetime, with one warning.
#[tokio::test]
async fn a_short_lifetime_is_not_fetched_on_every_call() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let cache = c
        .token_cache()
        .refresh_before(Duration::from_secs(300))
        .build()
        .expect("cache");
    let fetches = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        let f = fetches.clone();
        let v = cache
            .get_or_refresh("short", || async move {
                f.fetch_add(1, Ordering::SeqCst);
                Ok(("v".to_string(), Duration::from_secs(200)))
            })
            .await
            .expect("value");
        assert_eq!(v, "v");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // The CLI warns once, without the value.
    let (code, out, err) = leasehold_output(&[
        "cache",
        "get",
        "short2",
        "--redis",
        &r.url(),
        "--refresh-before",
        "5m",
        "--",
        "sh",
        "-c",
        "echo s3cret; echo 200",
    ]);
    assert_eq!((code, out.trim()), (0, "s3cret"), "{err}");
    assert_eq!(err.matches("half").count(), 1, "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

/// Issue 20.11: when Redis stalled after the fetch, the fetched value was
/// thrown away (budget unit spent, caller got 69). The caller gets it, and
/// the store is retried until Redis answers.
#[tokio::test]
async fn a_fetched_value_survives_a_redis_stall() {
    let r = RedisServer::start();
    r.warm();
    let c = leasehold::Client::builder(r.url())
        .op_timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect");
    let cache = c
        .token_cache()
        .fetch_timeout(Duration::from_secs(8))
        .max_fetches_per_day(3)
        .build()
        .expect("cache");
    let pid = r.pid();
    let fetches = Arc::new(AtomicUsize::new(0));
    let f = fetches.clone();
    let mut thaw = None;
    let v = cache
        .get_or_refresh("stall", || async {
            f.fetch_add(1, Ordering::SeqCst);
            // Redis stops answering right after the upstream answered.
            r.freeze();
            thaw = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1500));
                if let Some(pid) = pid {
                    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
                }
            }));
            Ok(("fetched-1".to_string(), Duration::from_secs(3600)))
        })
        .await;
    if let Some(t) = thaw {
        t.join().expect("thaw");
    }
    r.thaw();
    assert_eq!(v.expect("the caller gets what it fetched"), "fetched-1");
    // It was stored once Redis came back: the next caller does not fetch.
    let f = fetches.clone();
    let again = cache
        .get_or_refresh("stall", || async move {
            f.fetch_add(1, Ordering::SeqCst);
            Ok(("fetched-2".to_string(), Duration::from_secs(3600)))
        })
        .await
        .expect("cached");
    assert_eq!(again, "fetched-1");
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

/// Issue 20.12: `expires_in` of 1e30 panicked while holding the refresher
/// lease; a huge second-line lifetime stored the value without a TTL.
#[test]
fn lifetimes_are_bounded() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    for (name, script) in [
        ("big1", r#"echo '{"value": "v", "expires_in": 1e30}'"#),
        ("big2", "echo v; echo 99999999999999999"),
        ("big3", "echo v; echo 400d"),
    ] {
        let (code, _, err) = cache_get(&url, name, &["--", "sh", "-c", script]);
        assert_eq!(code, 70, "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("365 days"), "{err}");
        let exists = r.cmd(&["EXISTS", &format!("leasehold:{{cache#{name}}}:value")]);
        assert!(exists.contains(":0"), "{name} was stored: {exists}");
    }
    let (code, _, err) = cache_get(
        &url,
        "d",
        &["--default-lifetime", "400d", "--", "echo", "v"],
    );
    assert_eq!(code, 64, "{err}");
}

/// Issue 20.13: a hanging fetch left its grandchildren running (the shell
/// was killed at the timeout, `curl` went on).
#[test]
fn a_fetch_that_times_out_is_killed_with_its_children() {
    let r = RedisServer::start();
    r.warm();
    let dir = tempfile::tempdir().expect("dir");
    let pid_file = dir.path().join("grandchild.pid");
    let script = format!(
        "sh -c 'echo $$ > {}; exec sleep 30'; echo tok",
        pid_file.display()
    );
    let (code, _, err) = cache_get(
        &r.url(),
        "hang",
        &["--fetch-timeout", "1s", "--", "sh", "-c", &script],
    );
    assert_eq!(code, 70, "{err}");
    assert!(err.contains("timed out"), "{err}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the grandchild started")
        .trim()
        .parse()
        .expect("pid");
    let gone = support::wait_for(Duration::from_secs(5), || {
        (!support::pid_alive(pid)).then_some(())
    });
    if gone.is_none() {
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("the fetch's grandchild {pid} outlived the timeout");
    }
}

/// Issue 20.14: a failing upstream was hit (and a budget unit spent) by
/// every wave of callers. A failure is kept briefly in Redis and shared.
#[test]
fn a_failing_upstream_is_fetched_once_per_interval() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    let dir = tempfile::tempdir().expect("dir");
    let count = dir.path().join("count");
    let script = format!("echo x >> '{}'; exit 1", count.display());
    for _ in 0..3 {
        let (code, _, err) = cache_get(
            &url,
            "down",
            &["--max-fetches-per-day", "5", "--", "sh", "-c", &script],
        );
        assert_eq!(code, 70, "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let fetched = std::fs::read_to_string(&count).unwrap_or_default();
    assert_eq!(fetched.lines().count(), 1, "one fetch for three callers");
    // One budget unit spent: the budget's counter (the cache's own quota key
    // `cache#down:fetches`, which no user key can name) says 1.
    let keys = r.cmd(&["KEYS", "leasehold:{quota:cache#down:fetches}:*"]);
    let counter = keys
        .lines()
        .find(|l| l.starts_with("leasehold:") && !l.contains(":req:"))
        .unwrap_or_else(|| panic!("no budget counter: {keys}"))
        .to_string();
    let used = r.cmd(&["GET", &counter]);
    assert!(used.contains("\r\n1\r\n"), "budget used: {used}");
    // Without the memory of failures, every caller fetches.
    let (code, _, _) = cache_get(
        &url,
        "down2",
        &["--retry-failed-after", "0s", "--", "sh", "-c", &script],
    );
    assert_eq!(code, 70);
    let (code, _, _) = cache_get(
        &url,
        "down2",
        &["--retry-failed-after", "0s", "--", "sh", "-c", &script],
    );
    assert_eq!(code, 70);
    let fetched = std::fs::read_to_string(&count).unwrap_or_default();
    assert_eq!(fetched.lines().count(), 3);
}

/// A lease named like the cache's refresher used to be (`cache:<name>`) is an
/// ordinary lease: it neither blocks nor is blocked by the cache (issue 21).
#[tokio::test]
async fn a_user_lease_cannot_take_the_cache_refresher_lock() {
    let r = RedisServer::start();
    r.warm();
    let c = leasehold::Client::connect(&r.url()).await.expect("connect");
    let squatter = c.lease("cache:tok").acquire().await.expect("a user lease");
    let cache = c.token_cache().build().expect("cache");
    let v = tokio::time::timeout(
        Duration::from_secs(5),
        cache.get_or_refresh("tok", || async {
            Ok(("secret".to_string(), Duration::from_secs(60)))
        }),
    )
    .await
    .expect("not blocked by the user lease")
    .expect("fetched");
    assert_eq!(v, "secret");
    assert!(
        c.lease("cache#tok").try_acquire().await.is_err(),
        "# is not a user name"
    );
    squatter.release().await.expect("release");
}
