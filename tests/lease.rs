//! The lease against a real redis-server started by the test.

use leasehold_testkit as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use leasehold::backend::{AcquireReply, Attempt, Held, RenewReply};
use leasehold::{Client, Error, FencingToken, HolderId, LostReason, ReleaseOutcome};
use support::RedisServer;

async fn client(r: &RedisServer) -> Client {
    Client::connect(&r.url()).await.expect("connect")
}

/// A fresh Redis quarantines acquisitions for one TTL after its first use;
/// tests that are not about that start from a Redis "in use since long ago".
async fn warmed(r: &RedisServer) -> Client {
    r.warm();
    client(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_exclusion_16_contenders_1000_sections() {
    let r = RedisServer::start();
    let _ = warmed(&r).await;
    // Four clients (as if four processes), four contenders each.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client(&r).await);
    }
    let inside = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let c = clients[i % 4].clone();
        let (inside, done, max_seen) = (inside.clone(), done.clone(), max_seen.clone());
        tasks.push(tokio::spawn(async move {
            let mut last_token = 0;
            while done.load(Ordering::SeqCst) < 1000 {
                let lease = c
                    .lease("mutex")
                    .ttl(Duration::from_secs(5))
                    .acquire()
                    .await
                    .expect("acquire");
                let now_inside = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max_seen.fetch_max(now_inside, Ordering::SeqCst);
                assert!(lease.token().0 > last_token);
                last_token = lease.token().0;
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                assert_eq!(
                    lease.release().await.expect("release"),
                    ReleaseOutcome::Released
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("contender");
    }
    assert_eq!(max_seen.load(Ordering::SeqCst), 1, "two holders at once");
    assert!(done.load(Ordering::SeqCst) >= 1000);
}

#[tokio::test]
async fn tokens_strictly_increase_over_10000_acquisitions() {
    let r = RedisServer::start();
    let c = warmed(&r).await;
    let b = c.backend();
    let mut last = 0u64;
    for _ in 0..10_000 {
        let h = HolderId::generate();
        let token = match b
            .attempt(&Attempt::lease("tokens", &h, Duration::from_secs(5)))
            .await
            .expect("acquire")
        {
            AcquireReply::Acquired { token } => token.0,
            other => panic!("not acquired: {other:?}"),
        };
        assert!(token > last, "token {token} after {last}");
        last = token;
        assert!(
            b.release(&Held::lease("tokens", &h))
                .await
                .expect("release")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_quarantines_and_keeps_tokens_increasing() {
    let mut r = RedisServer::start();
    let c = warmed(&r).await;
    let ttl = Duration::from_secs(2);
    let a = c.lease("job").ttl(ttl).acquire().await.expect("a");
    let a_token = a.token();
    let a_deadline = a.deadline().expect("held");
    r.restart();
    // A contender on the wiped Redis must not start while A may still be inside
    // its deadline, even though the key is gone.
    let c2 = client(&r).await;
    let b = c2
        .lease("job")
        .ttl(ttl)
        .acquire_timeout(Duration::from_secs(10))
        .await
        .expect("b");
    let b_at = Instant::now();
    assert!(
        b_at >= a_deadline,
        "second holder started {:?} before the first one's deadline",
        a_deadline - b_at
    );
    assert!(b.token() > a_token, "{} <= {}", b.token(), a_token);
    // A learns it lost: its renewal is refused (the key is gone) or unconfirmed.
    let reason = tokio::time::timeout(Duration::from_secs(5), a.lost())
        .await
        .expect("a notices");
    assert!(matches!(
        reason,
        LostReason::Refused(_) | LostReason::Unconfirmed(_)
    ));
    // A new name on the now-healthy Redis pays no quarantine.
    let t = Instant::now();
    let other = c2
        .lease("other")
        .ttl(ttl)
        .try_acquire()
        .await
        .expect("other");
    assert!(other.is_some(), "new name quarantined on a healthy Redis");
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn non_holder_can_neither_renew_nor_release() {
    let r = RedisServer::start();
    let c = warmed(&r).await;
    let lease = c
        .lease("mine")
        .ttl(Duration::from_secs(5))
        .acquire()
        .await
        .expect("acquire");
    let stranger = HolderId::generate();
    let b = c.backend();
    assert!(matches!(
        b.renew(
            "mine",
            &stranger,
            Duration::from_secs(60),
            FencingToken(0),
            ""
        )
        .await
        .expect("renew"),
        RenewReply::Refused { .. }
    ));
    assert!(
        !b.release(&Held::lease("mine", &stranger))
            .await
            .expect("release")
    );
    let st = c.status("mine").await.expect("status");
    let h = st.holder.expect("still held");
    assert_eq!(&h.holder, lease.holder());
    assert!(h.ttl_left <= Duration::from_secs(5), "stranger extended it");
    // Renewing a lease that expired never re-creates it.
    let gone = HolderId::generate();
    assert!(matches!(
        b.renew(
            "never-held",
            &gone,
            Duration::from_secs(5),
            FencingToken(0),
            ""
        )
        .await
        .expect("renew"),
        RenewReply::Refused { .. }
    ));
    assert!(
        c.status("never-held")
            .await
            .expect("status")
            .holder
            .is_none()
    );
}

#[tokio::test]
async fn renewed_lease_outlives_its_ttl_several_times() {
    let r = RedisServer::start();
    let c = warmed(&r).await;
    let ttl = Duration::from_millis(300);
    let lease = c.lease("long").ttl(ttl).acquire().await.expect("acquire");
    let first_deadline = lease.deadline().expect("held");
    tokio::time::sleep(ttl * 5).await;
    assert!(lease.is_held());
    assert!(lease.deadline().expect("held") > first_deadline);
    let st = c.status("long").await.expect("status");
    assert_eq!(st.holder.expect("held").token, lease.token());
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Released
    );
    assert!(c.status("long").await.expect("status").holder.is_none());
}

#[test]
fn crashed_holder_is_replaced_within_ttl_plus_1s() {
    let r = RedisServer::start();
    let ttl = Duration::from_secs(2);
    // The "crashed" holder lives on its own runtime, which we then tear down:
    // renewal stops, nothing is released.
    let crash_rt = tokio::runtime::Runtime::new().expect("rt");
    let leaked = crash_rt.block_on(async {
        let c = warmed(&r).await;
        c.lease("crash").ttl(ttl).acquire().await.expect("acquire")
    });
    let crashed_at = Instant::now();
    crash_rt.shutdown_background();
    drop(leaked); // no runtime: Drop must not panic, and cannot release

    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let c = client(&r).await;
        let pttl = c
            .status("crash")
            .await
            .expect("status")
            .holder
            .expect("still held")
            .ttl_left;
        let t = Instant::now();
        let lease = c
            .lease("crash")
            .ttl(ttl)
            .acquire()
            .await
            .expect("take over");
        let took = crashed_at.elapsed();
        let overhead = t.elapsed().saturating_sub(pttl);
        eprintln!(
            "crash takeover: {took:?} after the crash, {overhead:?} beyond the key's remaining TTL"
        );
        assert!(took <= ttl + Duration::from_secs(1), "took {took:?}");
        lease.release().await.expect("release");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_lease_wakes_a_waiter_at_once() {
    let r = RedisServer::start();
    let c = warmed(&r).await;
    let c2 = client(&r).await;
    let ttl = Duration::from_secs(10);
    let holder = c.lease("handover").ttl(ttl).acquire().await.expect("a");
    let waiter = tokio::spawn(async move {
        let l = c2.lease("handover").ttl(ttl).acquire().await.expect("b");
        (Instant::now(), l)
    });
    // Let the waiter subscribe and sleep on the 10 s TTL.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released_at = Instant::now();
    holder.release().await.expect("release");
    let (got_at, lease) = waiter.await.expect("waiter");
    let took = got_at - released_at;
    eprintln!("handover after release: {took:?}");
    // Polling would have taken up to the 10 s TTL.
    assert!(took < Duration::from_millis(100), "took {took:?}");
    lease.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiters_in_many_processes_one_attempt_per_release() {
    let r = RedisServer::start();
    let c = warmed(&r).await;
    let ttl = Duration::from_secs(10);
    // Load every script once, so that no NOSCRIPT retry shows in the counts.
    let warm = c.lease("warm").ttl(ttl).acquire().await.expect("warm");
    c.backend()
        .renew("warm", warm.holder(), ttl, warm.token(), "")
        .await
        .expect("renew");
    warm.release().await.expect("release");
    let holder = c.lease("herd").ttl(ttl).acquire().await.expect("a");
    let got = Arc::new(AtomicUsize::new(0));
    let mut waiters = Vec::new();
    // Ten clients (as if ten processes), three waiters each.
    for _ in 0..10 {
        let c = client(&r).await;
        for _ in 0..3 {
            let c = c.clone();
            let got = got.clone();
            waiters.push(tokio::spawn(async move {
                let l = c.lease("herd").ttl(ttl).acquire().await.expect("acquire");
                got.fetch_add(1, Ordering::SeqCst);
                l
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = eval_calls(&r);
    holder.release().await.expect("release");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = eval_calls(&r);
    assert_eq!(got.load(Ordering::SeqCst), 1);
    // The release script, which hands the lease to the first in line, plus
    // that waiter's claim (its last attempt was 500 ms ago, so little of the
    // 1 s claim window is left). Nobody else makes a call.
    assert_eq!(
        after - before,
        2,
        "script calls for one release with 30 waiters in 10 processes"
    );
    for w in waiters {
        w.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_first_come_first_served() {
    let r = RedisServer::start();
    let c = warmed(&r).await;
    let ttl = Duration::from_secs(10);
    let holder = c.lease("fifo").ttl(ttl).acquire().await.expect("a");
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..5 {
        let c = client(&r).await;
        let order = order.clone();
        waiters.push(tokio::spawn(async move {
            let l = c.lease("fifo").ttl(ttl).acquire().await.expect("acquire");
            order.lock().expect("lock").push(i);
            tokio::time::sleep(Duration::from_millis(20)).await;
            l.release().await.expect("release");
        }));
        // Arrive one after another.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    holder.release().await.expect("release");
    for w in waiters {
        w.await.expect("waiter");
    }
    assert_eq!(*order.lock().expect("lock"), vec![0, 1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_gives_up_leaves_the_line() {
    let r = RedisServer::start();
    let c = warmed(&r).await;
    let ttl = Duration::from_secs(10);
    let holder = c.lease("quit").ttl(ttl).acquire().await.expect("a");
    let quitter = c
        .lease("quit")
        .ttl(ttl)
        .acquire_timeout(Duration::from_millis(200));
    let c2 = client(&r).await;
    let patient = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let l = c2.lease("quit").ttl(ttl).acquire().await.expect("acquire");
        (Instant::now(), l)
    });
    assert!(quitter.await.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let released = Instant::now();
    holder.release().await.expect("release");
    let (at, _l) = patient.await.expect("patient");
    assert!(
        at - released < Duration::from_millis(100),
        "{:?}",
        at - released
    );
}

#[test]
fn a_crashed_waiter_holds_up_the_line_only_briefly() {
    let r = RedisServer::start();
    let ttl = Duration::from_secs(1);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let holder = rt.block_on(async {
        let c = warmed(&r).await;
        c.lease("line").ttl(ttl).acquire().await.expect("a")
    });
    // The first waiter queues, then its process "crashes" (runtime torn down).
    let crash_rt = tokio::runtime::Runtime::new().expect("rt");
    crash_rt.block_on(async {
        let c = client(&r).await;
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            c.lease("line").ttl(ttl).acquire(),
        )
        .await;
    });
    // The timeout dropped the future, which leaves the line in the background:
    // kill the runtime first so that the leave never happens (a crash).
    crash_rt.shutdown_background();
    rt.block_on(async {
        let c = client(&r).await;
        let queued = r.cmd(&["ZCARD", "leasehold:{line}:queue"]);
        let waiter = tokio::spawn(async move {
            let l = c.lease("line").ttl(ttl).acquire().await.expect("acquire");
            (Instant::now(), l)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let released = Instant::now();
        holder.release().await.expect("release");
        let (at, _l) = waiter.await.expect("waiter");
        let took = at - released;
        eprintln!("queue had {queued:?}; served {took:?} after release");
        assert!(took <= ttl + Duration::from_secs(1), "took {took:?}");
    });
}

fn eval_calls(r: &RedisServer) -> u64 {
    r.command_calls(&["evalsha", "eval"])
}

#[tokio::test]
async fn lost_fires_before_the_deadline_when_redis_stops() {
    let mut r = RedisServer::start();
    let c = warmed(&r).await;
    let ttl = Duration::from_secs(2);
    let lease = c.lease("doomed").ttl(ttl).acquire().await.expect("acquire");
    r.stop();
    let stopped_at = Instant::now();
    // The last confirmed deadline before Redis went away.
    let deadline = lease.deadline().expect("held");
    let reason = tokio::time::timeout(ttl * 2, lease.lost())
        .await
        .expect("lost fires");
    let lost_at = Instant::now();
    assert!(matches!(reason, LostReason::Unconfirmed(_)), "{reason:?}");
    // Redis could hand the lease on at the earliest at deadline + drift.
    let drift = lease.config().drift();
    assert!(
        lost_at < deadline + drift,
        "lost {:?} after the deadline",
        lost_at - deadline
    );
    assert!(lost_at <= stopped_at + ttl);
    assert!(!lease.is_held());
}

#[tokio::test]
async fn lost_fires_when_another_client_deletes_the_key() {
    let r = RedisServer::start();
    let c = warmed(&r).await;
    let ttl = Duration::from_millis(600);
    let lease = c
        .lease("deleted")
        .ttl(ttl)
        .acquire()
        .await
        .expect("acquire");
    r.cmd(&["DEL", "leasehold:{deleted}:lease"]);
    let reason = tokio::time::timeout(ttl, lease.lost())
        .await
        .expect("lost within one TTL");
    assert!(matches!(reason, LostReason::Refused(_)), "{reason:?}");
    assert!(matches!(
        lease.release().await.expect("release"),
        ReleaseOutcome::AlreadyLost(_)
    ));
}

#[tokio::test]
async fn bad_input_gives_clear_errors() {
    let r = RedisServer::start();
    let c = warmed(&r).await;
    for name in ["", "has space", "{tag}", &"x".repeat(300)] {
        let e = c.lease(name).try_acquire().await.expect_err("bad name");
        assert!(matches!(e, Error::BadName { .. }), "{e}");
    }
    let e = c
        .lease("ok")
        .ttl(Duration::ZERO)
        .try_acquire()
        .await
        .expect_err("zero ttl");
    assert!(matches!(e, Error::BadConfig { .. }), "{e}");
    assert!(e.to_string().contains("above zero"), "{e}");
    let e = c
        .lease("ok")
        .ttl(Duration::from_millis(5))
        .try_acquire()
        .await
        .expect_err("tiny ttl");
    assert!(e.to_string().contains("drift"), "{e}");

    // Nobody listens on this port.
    let port = support::free_port();
    let e = Client::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .expect_err("unreachable");
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("unreachable"));

    let e = Client::connect("http://nope")
        .await
        .expect_err("bad scheme");
    assert!(matches!(e, Error::BadUrl { .. }), "{e}");

    // Passwords never show in errors.
    let e = Client::connect(&format!("redis://u:hunter2@127.0.0.1:{port}"))
        .await
        .expect_err("unreachable");
    assert!(!e.to_string().contains("hunter2"), "{e}");

    r.cmd(&["SET", "leasehold:{foreign}:lease", "not ours"]);
    let e = c
        .lease("foreign")
        .try_acquire()
        .await
        .expect_err("foreign key");
    assert!(matches!(e, Error::ForeignKey { .. }), "{e}");
    assert!(e.to_string().contains("string"), "{e}");
}

#[tokio::test]
async fn auth_refused_is_reported_as_such() {
    let r = RedisServer::start_with(&["--requirepass", "right"]);
    let e = Client::connect(&format!("redis://:wrong@127.0.0.1:{}", r.port))
        .await
        .expect_err("auth");
    assert!(matches!(e, Error::Auth { .. }), "{e}");
    assert!(!e.to_string().contains("wrong@"), "{e}");
    let ok = Client::connect(&format!("redis://:right@127.0.0.1:{}", r.port)).await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn dropping_the_guard_releases_in_the_background() {
    let r = RedisServer::start();
    let c = warmed(&r).await;
    let lease = c
        .lease("dropped")
        .ttl(Duration::from_secs(10))
        .acquire()
        .await
        .expect("acquire");
    drop(lease);
    let t = Instant::now();
    let next = c
        .lease("dropped")
        .ttl(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(2))
        .await
        .expect("released by drop, not by expiry");
    assert!(t.elapsed() < Duration::from_secs(1));
    next.release().await.expect("release");
}

#[tokio::test]
async fn acquire_timeout_and_try_acquire_when_held() {
    let r = RedisServer::start();
    let c = warmed(&r).await;
    let _held = c
        .lease("busy")
        .ttl(Duration::from_secs(10))
        .acquire()
        .await
        .expect("acquire");
    assert!(c.lease("busy").try_acquire().await.expect("try").is_none());
    let e = c
        .lease("busy")
        .acquire_timeout(Duration::from_millis(200))
        .await
        .expect_err("timeout");
    assert!(matches!(e, Error::AcquireTimeout { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_leases_are_kept_by_one_service() {
    let r = RedisServer::start();
    let c = warmed(&r).await;
    let ttl = Duration::from_millis(600);
    let mut leases = Vec::new();
    for i in 0..2000 {
        leases.push(
            c.lease(format!("many-{i}"))
                .ttl(ttl)
                .try_acquire()
                .await
                .expect("acquire")
                .expect("free"),
        );
    }
    tokio::time::sleep(ttl * 4).await;
    let lost = leases.iter().filter(|l| !l.is_held()).count();
    assert_eq!(lost, 0, "{lost} of 2000 leases lost while renewing");
    for l in leases {
        assert_eq!(
            l.release().await.expect("release"),
            ReleaseOutcome::Released
        );
    }
}
