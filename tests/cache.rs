//! The shared token cache on a real redis-server.

mod support;

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
        .refresh_before(Duration::from_millis(700))
        .max_fetches_per_day(2)
        .build()
        .expect("cache");
    let fetches = Arc::new(AtomicUsize::new(0));
    let fetch = |f: Arc<AtomicUsize>| {
        move || async move {
            let n = f.fetch_add(1, Ordering::SeqCst) + 1;
            Ok((format!("v{n}"), Duration::from_millis(800)))
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        cache
            .get_or_refresh("b", fetch(fetches.clone()))
            .await
            .expect("v"),
        "v2"
    );
    // Again near expiry: budget spent, the still-valid value is served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        cache
            .get_or_refresh("b", fetch(fetches.clone()))
            .await
            .expect("v"),
        "v2"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // Once it expired: a clear error.
    tokio::time::sleep(Duration::from_millis(700)).await;
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
        r.cmd(&["EXISTS", "leasehold:{cache:bad}:value"])
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
