//! Liveness: paths that used to hang or lose leases for nothing (issue 19).
//! Each test failed before its fix; they use real redis-server processes,
//! frozen (SIGSTOP), flushed, or reached through a proxy that stalls.

use leasehold_testkit as support;

use std::time::{Duration, Instant};

use leasehold::{Client, LeaseState, LostReason, ReleaseOutcome};
use support::{Proxy, RedisServer};

async fn client(url: &str) -> Client {
    Client::connect(url).await.expect("connect")
}

/// Takes and gives back a lease and a slot, so that Redis knows the scripts
/// (a stalled NOSCRIPT reply would hide what is tested) and every connection
/// is up.
async fn load_scripts(c: &Client) {
    let l = c.lease("warmup").try_acquire().await.expect("warmup");
    l.expect("free").release().await.expect("release");
    let s = c
        .semaphore("warmup-sem", 1)
        .try_acquire()
        .await
        .expect("warmup");
    s.expect("free").release().await.expect("release");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A loss at the safety deadline while a renewal is in flight used to leave
/// the lease's shared flag "in flight" for good: `release()` then waited for a
/// notification that never came. Whether the renewal's own timeout or the
/// deadline fires first is a coin toss, so 16 leases make the old failure
/// certain (1 in 65,536 to pass by luck).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_after_a_loss_at_the_deadline_returns() {
    let r = RedisServer::start();
    r.warm();
    let ttl = Duration::from_millis(900);
    let mut leases = Vec::new();
    for i in 0..16 {
        // One client each: sixteen renewal services, sixteen races.
        let c = client(&r.url()).await;
        let l = c
            .lease(format!("hang-{i}"))
            .ttl(ttl)
            .acquire()
            .await
            .expect("acquire");
        leases.push((c, l));
    }
    r.freeze();
    for (_, l) in &leases {
        let reason = tokio::time::timeout(ttl * 3, l.lost())
            .await
            .expect("lost fires while Redis is frozen");
        assert!(matches!(reason, LostReason::Unconfirmed(_)), "{reason:?}");
    }
    r.thaw();
    for (_, l) in leases {
        let out = tokio::time::timeout(Duration::from_secs(3), l.release())
            .await
            .expect("release() returns after a loss at the deadline")
            .expect("release");
        assert!(matches!(out, ReleaseOutcome::AlreadyLost(_)), "{out:?}");
    }
}

/// `release()` publishes `Released` on the guard's state, so that other tasks
/// watching `state()` or `lost()` do not go on believing it is held.
#[tokio::test]
async fn release_publishes_released_to_state_watchers() {
    let r = RedisServer::start();
    r.warm();
    let c = client(&r.url()).await;
    let l = c.lease("watched").acquire().await.expect("acquire");
    let state = l.state();
    let lost = l.lost();
    assert!(matches!(*state.borrow(), LeaseState::Held { .. }));
    assert_eq!(
        l.release().await.expect("release"),
        ReleaseOutcome::Released
    );
    assert_eq!(*state.borrow(), LeaseState::Released);
    let reason = tokio::time::timeout(Duration::from_secs(1), lost)
        .await
        .expect("lost() resolves after release");
    assert_eq!(reason, LostReason::Released);
}

/// A batch of renewals holding semaphore slots used to reload only
/// `renew.lua` after NOSCRIPT (restart, failover, `SCRIPT FLUSH`), so every
/// slot was lost within a TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_and_leases_survive_a_script_flush() {
    let r = RedisServer::start();
    r.warm();
    let c = client(&r.url()).await;
    let ttl = Duration::from_millis(600);
    // Acquired together, renewed together (one batch of three).
    let (a, b, l) = tokio::join!(
        c.semaphore("flushed", 3).ttl(ttl).acquire(),
        c.semaphore("flushed", 3).ttl(ttl).acquire(),
        c.lease("flushed-lease").ttl(ttl).acquire(),
    );
    let (a, b, l) = (a.expect("slot a"), b.expect("slot b"), l.expect("lease"));
    assert!(r.cmd(&["SCRIPT", "FLUSH"]).contains("OK"));
    tokio::time::sleep(ttl * 4).await;
    for (what, held, state) in [
        ("slot a", a.is_held(), a.state()),
        ("slot b", b.is_held(), b.state()),
        ("lease", l.is_held(), l.state()),
    ] {
        assert!(
            held,
            "{what} lost after SCRIPT FLUSH: {:?}",
            *state.borrow()
        );
    }
    // And a fresh acquisition after another flush loads its script again.
    assert!(r.cmd(&["SCRIPT", "FLUSH"]).contains("OK"));
    let other = c.lease("after-flush").try_acquire().await.expect("try");
    assert!(other.is_some());
}

/// An acquire that succeeded in Redis but whose reply was lost (timeout) is
/// retried with the same holder id; the retry used to answer "held by
/// <ourselves>" and the waiter slept on its own key for a whole TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_grant_reply_was_lost_takes_its_own_lease() {
    let r = RedisServer::start();
    r.warm();
    let proxy = Proxy::start(r.port).expect("proxy");
    let c = Client::builder(proxy.url())
        .op_timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect");
    load_scripts(&c).await;
    proxy.stall_replies();
    let ttl = Duration::from_secs(10);
    let t0 = Instant::now();
    let acquiring =
        tokio::spawn(async move { c.lease("mine").ttl(ttl).acquire_timeout(ttl / 2).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Redis executed the first attempt: the lease is ours there already.
    let raw = r.cmd(&["HGET", "leasehold:{mine}:lease", "holder"]);
    assert!(raw.contains('/'), "the first attempt reached Redis: {raw}");
    proxy.heal();
    let lease = acquiring
        .await
        .expect("join")
        .expect("the waiter takes the lease its lost reply granted");
    assert!(
        t0.elapsed() < ttl / 4,
        "took {:?}: slept on its own key",
        t0.elapsed()
    );
    assert!(lease.is_held());
    // Its deadline counts from the retry, which extended the lease.
    let direct = client(&r.url()).await;
    let left = direct
        .status("mine")
        .await
        .expect("status")
        .holder
        .expect("held")
        .ttl_left;
    assert!(left > ttl * 8 / 10, "{left:?} left");
}

/// The same for a semaphore slot: the retry found its own entry and failed
/// with a "duplicate holder" error instead of taking the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_whose_grant_reply_was_lost_is_taken_on_retry() {
    let r = RedisServer::start();
    r.warm();
    let proxy = Proxy::start(r.port).expect("proxy");
    let c = Client::builder(proxy.url())
        .op_timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect");
    load_scripts(&c).await;
    proxy.stall_replies();
    let acquiring = tokio::spawn(async move {
        c.semaphore("pool", 2)
            .ttl(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(4))
            .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(r.cmd(&["ZCARD", "leasehold:{pool}:slots"]).contains(":1"));
    proxy.heal();
    let slot = acquiring.await.expect("join").expect("slot taken on retry");
    assert!(slot.is_held());
    // One entry, ours: the retry did not take a second slot.
    assert!(r.cmd(&["ZCARD", "leasehold:{pool}:slots"]).contains(":1"));
}

/// A failed quorum acquire must give back what a node whose reply timed out
/// may have granted; it used to release only where "acquired" was heard, so
/// that node kept the key for a whole TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_quorum_acquire_releases_where_the_reply_was_lost() {
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    for n in &nodes {
        n.warm();
    }
    let direct: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let other = Client::builder_many(direct.clone())
        .connect()
        .await
        .expect("other");
    // Long enough that the grant cannot simply expire while the test looks.
    let ttl = Duration::from_secs(20);
    let held = other.lease("leak").ttl(ttl).acquire().await.expect("held");
    // Node 2 forgets the other holder: only nodes 0 and 1 refuse us.
    assert!(
        nodes[2]
            .cmd(&["DEL", "leasehold:{leak}:lease"])
            .contains(":1")
    );
    let proxy = Proxy::start(nodes[2].port).expect("proxy");
    let mut urls = direct[..2].to_vec();
    urls.push(proxy.url());
    let me = Client::builder_many(urls).connect().await.expect("me");
    // Connected through the proxy, with the scripts loaded, before replies stall.
    let warmup = me.lease("warmup").try_acquire().await.expect("warmup");
    warmup.expect("free").release().await.expect("release");
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.stall_replies();
    let got = me.lease("leak").ttl(ttl).try_acquire().await.expect("try");
    assert!(got.is_none(), "no majority: nodes 0 and 1 are held");
    // Node 2 granted it (its reply was lost), and must have been told to let go.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.heal();
    let ok = support::wait_for(Duration::from_secs(1), || {
        let holder = nodes[2].cmd(&["HGET", "leasehold:{leak}:lease", "holder"]);
        (holder.contains("$0") || holder.contains("$-1")).then_some(())
    });
    assert!(
        ok.is_some(),
        "node 2 still holds a grant nobody will use: {}",
        nodes[2].cmd(&["HGET", "leasehold:{leak}:lease", "holder"])
    );
    drop(held);
}

/// One partitioned quorum node (a fault the quorum tolerates) used to stall
/// every waiter: subscriptions went node by node, a subscription request
/// waited for the partitioned node's (re)connect, and SUBSCRIBE had no
/// timeout. Here the waiter starts while node 2 is partitioned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_quorum_node_does_not_stall_waiters() {
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    for n in &nodes {
        n.warm();
    }
    let direct: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let holder = Client::builder_many(direct.clone())
        .connect()
        .await
        .expect("holder");
    let ttl = Duration::from_secs(3);
    let lease = holder
        .lease("stall")
        .ttl(ttl)
        .acquire()
        .await
        .expect("held");
    let proxy = Proxy::start(nodes[2].port).expect("proxy");
    proxy.blackhole();
    let mut urls = direct[..2].to_vec();
    urls.push(proxy.url());
    let waiter = Client::builder_many(urls)
        .op_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect("a majority answers");
    let waiting = tokio::spawn(async move {
        waiter
            .lease("stall")
            .ttl(ttl)
            .acquire_timeout(Duration::from_secs(20))
            .await
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let released_at = Instant::now();
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Released
    );
    eprintln!("released after {:?}", released_at.elapsed());
    let got = waiting.await.expect("join").expect("the waiter gets it");
    let took = released_at.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "handover took {took:?} with one node partitioned"
    );
    assert!(got.is_held());
    proxy.heal();
}

/// `run --hold-after-exit` whose hold ends on a loss at the deadline used to
/// hang in the release, deaf to SIGTERM (the reproduction).
#[test]
fn run_holding_after_exit_stays_responsive_after_a_frozen_redis() {
    let r = RedisServer::start();
    r.warm();
    let dir = tempfile::tempdir().expect("dir");
    let mut p = support::leasehold(
        dir.path(),
        &[
            "run",
            "--redis",
            &r.url(),
            "--name",
            "h",
            "--ttl",
            "1s",
            "--hold-after-exit",
            "30s",
            "--",
            "true",
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(300));
    r.freeze();
    std::thread::sleep(Duration::from_secs(2));
    r.thaw();
    std::thread::sleep(Duration::from_millis(500));
    p.signal(libc::SIGTERM);
    let code = p.wait_exit(Duration::from_secs(3));
    assert!(
        code.is_some(),
        "run did not exit after SIGTERM: {}",
        p.stderr()
    );
}

/// A lease and a semaphore of one name would not exclude each other: while
/// one kind is in use, the other is refused with a clear error (issue 21).
#[tokio::test]
async fn a_lease_and_a_semaphore_of_one_name_exclude_each_other() {
    let r = RedisServer::start();
    r.warm();
    let c = client(&r.url()).await;
    let slot = c.semaphore("both", 2).acquire().await.expect("slot");
    let e = c.lease("both").try_acquire().await.expect_err("refused");
    assert!(
        matches!(e, leasehold::Error::NameInUse { kind: "semaphore" }),
        "{e}"
    );
    slot.release().await.expect("release");
    let lease = c
        .lease("both")
        .acquire()
        .await
        .expect("free now: the lease");
    let e = c
        .semaphore("both", 2)
        .try_acquire()
        .await
        .expect_err("refused");
    assert!(
        matches!(e, leasehold::Error::NameInUse { kind: "lease" }),
        "{e}"
    );
    lease.release().await.expect("release");
    assert!(
        c.semaphore("both", 2)
            .try_acquire()
            .await
            .expect("slot")
            .is_some()
    );
}

/// The subscription's keepalive must not tear down a healthy connection: an
/// idle waiter behind a live holder subscribes once and attempts only when
/// the holder's lease could have expired. (The keepalive used to misread the
/// PING reply of a subscribed connection, reconnect every 2 s and wake every
/// waiter.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_waiter_costs_nothing_between_expiry_checks() {
    let r = RedisServer::start();
    r.warm();
    let holder = client(&r.url()).await;
    let ttl = Duration::from_secs(30);
    let held = holder.lease("idle").ttl(ttl).acquire().await.expect("held");
    let w = client(&r.url()).await;
    let waiting = tokio::spawn(async move { w.lease("idle").ttl(ttl).acquire().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let subs = r.command_calls(&["subscribe"]);
    let scripts = r.command_calls(&["evalsha", "eval"]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        r.command_calls(&["subscribe"]),
        subs,
        "resubscribed while idle"
    );
    assert_eq!(
        r.command_calls(&["evalsha", "eval"]),
        scripts,
        "attempted while the holder's lease could not have expired"
    );
    waiting.abort();
    drop(held);
}

/// A grant found late must be claimed with its own token: after it lapsed
/// and the lease came back to the same waiter with a newer token, claiming
/// the old grant is refused (it used to succeed, and the waiter would have
/// worked under a token lower than one already issued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_grant_cannot_be_claimed_with_its_old_token() {
    use leasehold::backend::{AcquireReply, Attempt, Kind, RenewReply};
    let r = RedisServer::start();
    r.warm();
    let c = client(&r.url()).await;
    let ttl = Duration::from_secs(10);
    let holder = c.lease("late").ttl(ttl).acquire().await.expect("held");
    let w = leasehold::HolderId::generate();
    let waiting = Attempt {
        queue: true,
        ..Attempt::lease("late", &w, ttl)
    };
    let reply = c.backend().attempt(&waiting).await.expect("attempt");
    assert!(matches!(reply, AcquireReply::Held { .. }), "{reply:?}");
    // The release hands the lease to w, to be claimed within 1 s.
    holder.release().await.expect("release");
    let granted = c
        .status("late")
        .await
        .expect("status")
        .holder
        .expect("granted");
    assert_eq!(granted.holder, w);
    let old = granted.token;
    // w does not claim in time; the grant lapses; w takes the lease again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = c.backend().attempt(&waiting).await.expect("attempt");
    let AcquireReply::Acquired { token: new } = again else {
        panic!("{again:?}");
    };
    assert!(new > old);
    let claim = c
        .backend()
        .claim(Kind::Lease, "late", &w, ttl, old)
        .await
        .expect("claim");
    assert!(
        matches!(claim, RenewReply::Refused { .. }),
        "the old grant was claimed: {claim:?}"
    );
    let claim = c
        .backend()
        .claim(Kind::Lease, "late", &w, ttl, new)
        .await
        .expect("claim");
    assert_eq!(claim, RenewReply::Renewed);
}

/// A channel a waiter subscribed to stays subscribed while the same name is
/// taken again and again (a new waiter then joins it without a round
/// trip), and is given up once nobody has used it for the linger time
/// (2 s): one pending clean-up per channel, however many waiters came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_channel_is_unsubscribed_after_the_linger_time() {
    let r = RedisServer::start();
    r.warm();
    let c = client(&r.url()).await;
    let ttl = Duration::from_secs(10);
    let channels = || {
        r.cmd(&["PUBSUB", "NUMSUB", "leasehold:{idle}:events"])
            .trim()
            .to_string()
    };
    // One waiter subscribes: the lease is held by someone else for a moment.
    let held = c.lease("idle").ttl(ttl).acquire().await.expect("held");
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.lease("idle").ttl(ttl).acquire().await })
    };
    // In line once its first attempt found the lease held.
    let t0 = Instant::now();
    while r.cmd(&["ZCARD", "leasehold:{idle}:queue"]).trim() != ":1" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the waiter never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    held.release().await.expect("release");
    waiter
        .await
        .expect("task")
        .expect("acquired")
        .release()
        .await
        .expect("release");
    assert!(channels().ends_with(":1"), "{}", channels());
    // Taken again and again for 3 s: the channel stays.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        let l = c.lease("idle").ttl(ttl).acquire().await.expect("acquire");
        l.release().await.expect("release");
    }
    assert!(channels().ends_with(":1"), "{}", channels());
    // Idle: gone after the linger time (2 s), well within 5 s.
    let idle = Instant::now();
    while !channels().ends_with(":0") {
        assert!(idle.elapsed() < Duration::from_secs(5), "{}", channels());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A waiter that waited inside another tokio runtime, which then shut down
/// with the channel's linger task: the channel is still given up (the
/// dropped task used to leave it marked as lingering, and nobody
/// unsubscribed it while the client lived).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_is_given_up_when_its_linger_task_dies_with_its_runtime() {
    let r = RedisServer::start();
    r.warm();
    let c = client(&r.url()).await;
    let ttl = Duration::from_secs(10);
    let channels = || {
        r.cmd(&["PUBSUB", "NUMSUB", "leasehold:{other}:events"])
            .trim()
            .to_string()
    };
    let held = c.lease("other").ttl(ttl).acquire().await.expect("held");
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let l = c.lease("other").ttl(ttl).acquire().await.expect("acquired");
                l.release().await.expect("release");
            });
            // The runtime (and the linger task it holds) goes here.
        })
    };
    let t0 = Instant::now();
    while r.cmd(&["ZCARD", "leasehold:{other}:queue"]).trim() != ":1" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the waiter never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    held.release().await.expect("release");
    tokio::task::spawn_blocking(move || waiter.join())
        .await
        .expect("join")
        .expect("waiter thread");
    let idle = Instant::now();
    while !channels().ends_with(":0") {
        assert!(idle.elapsed() < Duration::from_secs(5), "{}", channels());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
