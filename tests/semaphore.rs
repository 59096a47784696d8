//! Semaphores (N holders) on a real redis-server.

use leasehold_testkit as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use leasehold::backend::{AcquireReply, Attempt, Kind};
use leasehold::{Client, HolderId, ReleaseOutcome};
use support::{RedisServer, leasehold};

async fn client(r: &RedisServer) -> Client {
    r.warm();
    Client::connect(&r.url()).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_contenders_never_exceed_three() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let inside = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = if i % 4 == 0 {
            Client::connect(&r.url()).await.expect("connect")
        } else {
            c.clone()
        };
        let (inside, max, tokens) = (inside.clone(), max.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            while t0.elapsed() < Duration::from_secs(2) {
                let slot = c
                    .semaphore("pool", 3)
                    .ttl(Duration::from_secs(5))
                    .acquire()
                    .await
                    .expect("slot");
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                tokens.lock().expect("lock").push(slot.token().0);
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                assert_eq!(
                    slot.release().await.expect("release"),
                    ReleaseOutcome::Released
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(
        max.load(Ordering::SeqCst),
        3,
        "the limit is 3 and it was used"
    );
    let mut all = tokens.lock().expect("lock").clone();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "every slot got its own token");
}

#[tokio::test]
async fn a_crashed_holders_slot_is_reused_within_ttl_plus_1s() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let ttl = Duration::from_secs(1);
    // Three holders that vanish: slots taken through the protocol layer and
    // never renewed.
    let mut last = 0;
    for _ in 0..3 {
        let ghost = HolderId::generate();
        match c
            .backend()
            .attempt(&Attempt {
                kind: Kind::Slot { limit: 3 },
                ..Attempt::lease("crashy", &ghost, ttl)
            })
            .await
            .expect("slot")
        {
            AcquireReply::Acquired { token } => last = token.0,
            other => panic!("{other:?}"),
        }
    }
    let crashed = Instant::now();
    assert!(
        c.semaphore("crashy", 3)
            .ttl(ttl)
            .try_acquire()
            .await
            .expect("try")
            .is_none()
    );
    let slot = c
        .semaphore("crashy", 3)
        .ttl(ttl)
        .acquire()
        .await
        .expect("slot after expiry");
    let took = crashed.elapsed();
    assert!(took <= ttl + Duration::from_secs(1), "{took:?}");
    assert!(slot.token().0 > last);
    // The other ghosts' slots ran out within milliseconds of the first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let holders = c.semaphore_status("crashy").await.expect("status");
    assert_eq!(holders.len(), 1, "expired slots are gone");
    assert_eq!(&holders[0].holder, slot.holder());
}

#[test]
fn run_slots_never_runs_more_than_n() {
    let r = RedisServer::start();
    r.warm();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("log");
    let log_s = log.to_string_lossy().to_string();
    let url = r.url();
    let job =
        r#"echo "start $(date +%s%N)" >> "$LOG"; sleep 0.3; echo "stop $(date +%s%N)" >> "$LOG""#;
    let mut sups: Vec<_> = (0..20)
        .map(|_| {
            leasehold(
                dir.path(),
                &[
                    "run", "--name", "pool", "--slots", "3", "--redis", &url, "--ttl", "5s", "--",
                    "sh", "-c", job,
                ],
                &[("LOG", &log_s)],
            )
        })
        .collect();
    for s in &mut sups {
        assert_eq!(
            s.wait_exit(Duration::from_secs(30)),
            Some(0),
            "{}",
            s.stderr()
        );
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut events: Vec<(u128, i32)> = text
        .lines()
        .filter_map(|l| {
            let (what, ns) = l.split_once(' ')?;
            Some((
                ns.trim().parse().ok()?,
                if what == "start" { 1 } else { -1 },
            ))
        })
        .collect();
    assert_eq!(events.len(), 40, "{text}");
    // Stops sort before starts at the same instant.
    events.sort();
    let (mut now, mut max) = (0, 0);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    assert!(max <= 3, "{max} jobs ran at once");
    assert_eq!(max, 3);
}
