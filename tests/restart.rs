//! Never two holders when Redis comes back with *older* data (issue 12):
//! restarts from an RDB snapshot or an AOF, wipes with holders of different
//! TTLs, and first use of a Redis that has been up for long.

use leasehold_testkit as support;

use std::time::{Duration, Instant};

use leasehold::{Client, Lease, LostReason};
use support::RedisServer;

async fn client(r: &RedisServer) -> Client {
    Client::connect(&r.url()).await.expect("connect")
}

/// Records when a held lease was lost (refused, or at its deadline).
fn watch_loss(lease: &Lease) -> tokio::task::JoinHandle<(Instant, LostReason)> {
    let lost = lease.lost();
    tokio::spawn(async move {
        let reason = lost.await;
        (Instant::now(), reason)
    })
}

/// The scenario of the issue: A holds, a snapshot is taken, A hands over to
/// B, B keeps renewing for more than a TTL, Redis dies and comes back from
/// the snapshot (which says A holds, or held, the lease). B must be out —
/// refused, or past its own deadline — before C gets the lease, and C's token
/// must be above B's.
async fn older_data_comes_back(
    r: &mut RedisServer,
    ttl: Duration,
    snapshot: impl Fn(&RedisServer),
    restore: impl Fn(&mut RedisServer),
) {
    let a = client(r).await;
    let b = client(r).await;
    let la = a.lease("job").ttl(ttl).acquire().await.expect("A");
    snapshot(r);
    la.release().await.expect("A releases");
    let lb = b.lease("job").ttl(ttl).acquire().await.expect("B");
    let b_token = lb.token();
    let b_lost = watch_loss(&lb);
    // More than a TTL of renewals after the snapshot.
    tokio::time::sleep(ttl + ttl / 2).await;
    assert!(lb.is_held(), "B renews while Redis is up");
    let b_deadline = lb.deadline().expect("held");
    restore(r);
    let c = client(r).await;
    let lc = c
        .lease("job")
        .ttl(ttl)
        .acquire_timeout(ttl * 4)
        .await
        .expect("C gets it in the end");
    let c_at = Instant::now();
    let (b_lost_at, reason) = tokio::time::timeout(ttl * 2, b_lost)
        .await
        .expect("B learns it lost the lease")
        .expect("join");
    assert!(
        b_lost_at <= c_at,
        "C acquired {:?} before B stopped ({reason})",
        b_lost_at - c_at
    );
    // Stronger: C came after the last deadline B could have believed in.
    assert!(
        c_at >= b_deadline.min(b_lost_at),
        "C acquired {:?} before B's safety deadline",
        b_deadline - c_at
    );
    assert!(lc.token() > b_token, "{} <= {}", lc.token(), b_token);
    drop(lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_an_older_rdb_snapshot_never_lets_two_hold() {
    let mut r = RedisServer::start();
    r.warm();
    older_data_comes_back(
        &mut r,
        Duration::from_secs(2),
        |r| assert!(r.cmd(&["SAVE"]).contains("OK")),
        |r| {
            // SIGKILL, then start on the same dir: it loads dump.rdb.
            r.restart();
            assert!(r.cmd(&["EXISTS", "leasehold:{job}:lease"]).contains(":1"));
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_an_older_aof_never_lets_two_hold() {
    let aof = ["--appendonly", "yes", "--appendfsync", "everysec"];
    let mut r = RedisServer::start_with(&aof);
    r.warm();
    let saved = tempfile::tempdir().expect("dir");
    let saved_dir = saved.path().to_path_buf();
    older_data_comes_back(
        &mut r,
        Duration::from_secs(2),
        |r| {
            // The AOF as a crash would leave it if what follows never reached
            // the disk (everysec loses up to a second; a lagging disk more).
            std::thread::sleep(Duration::from_millis(1200));
            copy_dir(&r.dir().join("appendonlydir"), &saved_dir);
        },
        |r| {
            r.stop();
            let dir = r.dir().join("appendonlydir");
            let _ = std::fs::remove_dir_all(&dir);
            copy_dir(&saved_dir, &dir);
            r.restart_with(&aof);
            assert!(r.cmd(&["EXISTS", "leasehold:{job}:lease"]).contains(":1"));
        },
    )
    .await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// The quarantine after a wipe covers the longest TTL in use, not the
/// acquirer's: a contender with TTL 1 s must not start while a holder with
/// TTL 10 s may still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_wipe_a_short_ttl_contender_waits_for_a_long_ttl_holder() {
    let mut r = RedisServer::start();
    r.warm();
    let h = client(&r).await;
    let long = Duration::from_secs(10);
    let lh = h.lease("mixed").ttl(long).acquire().await.expect("H");
    let h_lost = watch_loss(&lh);
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.restart();
    let wiped_at = Instant::now();
    let c = client(&r).await;
    let short = Duration::from_secs(1);
    let lc = c
        .lease("mixed")
        .ttl(short)
        .acquire_timeout(long * 2)
        .await
        .expect("C gets it in the end");
    let c_at = Instant::now();
    let (h_lost_at, _) = tokio::time::timeout(long, h_lost)
        .await
        .expect("H learns it lost the lease")
        .expect("join");
    assert!(h_lost_at <= c_at, "C started while H still held");
    assert!(
        c_at - wiped_at >= long - Duration::from_millis(500),
        "C waited only {:?} after the wipe; H's TTL is {long:?}",
        c_at - wiped_at
    );
    drop(lc);
}

/// A fresh marker on a Redis that has been up longer than the TTL needs no
/// wait: it cannot have lost a holder that is still running.
#[tokio::test]
async fn first_use_of_a_long_running_redis_does_not_wait() {
    let r = RedisServer::start();
    // Up for more than the TTL and the 3 s announce window, counted from
    // the start rounded up to a whole second (INFO counts whole seconds).
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let c = client(&r).await;
    let t0 = Instant::now();
    let l = c
        .lease("first")
        .ttl(Duration::from_secs(1))
        .acquire()
        .await
        .expect("acquire");
    let took = t0.elapsed();
    eprintln!("first acquisition on a Redis up for 3 s took {took:?}");
    assert!(took < Duration::from_millis(500), "waited {took:?}");
    drop(l);
}

/// Redis reports its uptime in whole seconds, rounded down: counting the
/// quarantine from `now - uptime` could start it up to a second before the
/// server did. Started at .5 of a wall-clock second and asked at .05, the
/// quarantine must still end no earlier than the start + 3 s.
#[tokio::test]
async fn the_quarantine_never_starts_before_the_server_did() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let since_epoch = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    };
    // To the next .500 of a wall-clock second.
    let now_ms = since_epoch().as_millis() as u64;
    let mut at = now_ms - now_ms % 1000 + 500;
    if at <= now_ms {
        at += 1000;
    }
    tokio::time::sleep(Duration::from_millis(at - now_ms)).await;
    let started_no_earlier = since_epoch();
    let r = RedisServer::start();
    let c = client(&r).await;
    let whole = started_no_earlier.as_secs();
    let ask_at = Duration::from_millis((whole + 2) * 1000 + 50);
    tokio::time::sleep(ask_at.saturating_sub(since_epoch())).await;
    let asked = since_epoch();
    let st = c.status("early").await.expect("status");
    let q = st.quarantine.expect("a new server is quarantined");
    let ends = asked + q;
    let floor = started_no_earlier + Duration::from_secs(3);
    assert!(
        ends >= floor,
        "the quarantine ends {:?} before the server's start + 3 s (started after {:?}, asked at {:?}, {q:?} left)",
        floor - ends,
        started_no_earlier,
        asked
    );
}

/// The quarantine is visible in `status` while it lasts.
#[tokio::test]
async fn status_shows_a_quarantine() {
    let r = RedisServer::start();
    let c = client(&r).await;
    // A fresh Redis: the first acquisition with TTL 5 s would wait.
    let t = c
        .lease("q")
        .ttl(Duration::from_secs(5))
        .try_acquire()
        .await
        .expect("try");
    assert!(t.is_none(), "quarantined");
    let st = c.status("q").await.expect("status");
    assert!(st.holder.is_none());
    let q = st.quarantine.expect("status shows the quarantine");
    // TTL 5 s from the server's start, rounded up to a whole second.
    assert!(
        q > Duration::from_secs(2) && q <= Duration::from_secs(6),
        "{q:?}"
    );
}

/// The same for a semaphore: after a wipe, a contender with a short TTL must
/// not take a slot beyond N while a holder with a long TTL may still run
/// (its refused renewal records its TTL, as a lease's does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_wipe_a_short_ttl_slot_waits_for_a_long_ttl_holder() {
    let mut r = RedisServer::start();
    r.warm();
    let h = client(&r).await;
    let long = Duration::from_secs(10);
    let slot = h.semaphore("pool", 1).ttl(long).acquire().await.expect("H");
    let lost = slot.lost();
    let h_lost = tokio::spawn(async move { (lost.await, Instant::now()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.restart();
    let wiped_at = Instant::now();
    let c = client(&r).await;
    let other = c
        .semaphore("pool", 1)
        .ttl(Duration::from_secs(1))
        .acquire_timeout(long * 2)
        .await
        .expect("C gets the slot in the end");
    let c_at = Instant::now();
    let (h_reason, h_lost_at) = tokio::time::timeout(long, h_lost)
        .await
        .expect("H learns it lost its slot")
        .expect("join");
    eprintln!("H lost after {:?}: {h_reason}", h_lost_at - wiped_at);
    assert!(
        h_lost_at <= c_at,
        "C took the only slot while H still held it"
    );
    assert!(
        c_at - wiped_at >= long - Duration::from_millis(500),
        "C waited only {:?} after the wipe; H's TTL is {long:?}",
        c_at - wiped_at
    );
    drop(other);
}

/// The record's `w` mark (its writes are on every replica, so a promoted
/// one may grant without a quarantine) is re-checked by every renewal: a
/// replica that joins while the lease is held — which `WAIT 1` may not
/// cover — unmarks it, and it is marked again once `WAIT 1` covers every
/// replica. The same for a semaphore (lowered only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_the_replica_mark_true() {
    let m = RedisServer::start();
    m.warm();
    let mp = m.port.to_string();
    let replicas = |n: usize| {
        let info = m.cmd(&["INFO", "replication"]);
        info.contains(&format!("connected_slaves:{n}"))
    };
    let online = |n: usize| {
        support::wait_for(Duration::from_secs(10), || replicas(n).then_some(()))
            .unwrap_or_else(|| panic!("{n} replica(s) never connected"));
    };
    // The field as RESP: "$1\r\n1\r\n", "$1\r\n0\r\n", or "$-1\r\n" (absent).
    let w = |key: &str| m.cmd(&["HGET", key, "w"]);
    let is = |key: &str, want: &str| w(key) == format!("$1\r\n{want}\r\n");
    let until_w = |key: &str, want: &str| {
        support::wait_for(Duration::from_secs(5), || is(key, want).then_some(())).is_some()
    };
    let _r1 = RedisServer::start_with(&["--replicaof", "127.0.0.1", &mp]);
    online(1);
    let c = Client::builder(m.url())
        .min_replicas(1)
        .connect()
        .await
        .expect("connect");
    let ttl = Duration::from_millis(1500);
    let l = c.lease("w").ttl(ttl).acquire().await.expect("acquire");
    let p = c
        .semaphore("ws", 2)
        .ttl(ttl)
        .acquire()
        .await
        .expect("permit");
    assert!(
        is("leasehold:{w}:lease", "1"),
        "{}",
        w("leasehold:{w}:lease")
    );
    assert!(
        is("leasehold:{ws}:lease", "1"),
        "{}",
        w("leasehold:{ws}:lease")
    );

    let r2 = RedisServer::start_with(&["--replicaof", "127.0.0.1", &mp]);
    online(2);
    assert!(
        until_w("leasehold:{w}:lease", "0"),
        "a renewal confirmed by WAIT 1 with two replicas left the lease marked"
    );
    assert!(
        until_w("leasehold:{ws}:lease", "0"),
        "a renewal confirmed by WAIT 1 with two replicas left the semaphore marked"
    );
    drop(r2);
    online(1);
    assert!(
        until_w("leasehold:{w}:lease", "1"),
        "renewals covering every replica again did not mark the lease"
    );
    assert!(
        l.is_held() && p.is_held(),
        "the lease and the permit are still held"
    );

    // A grant on release is not marked (its holder's writes are not known
    // to be on the replicas) until its claim, which is: with --min-replicas
    // every grant is claimed.
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.lease("w").ttl(ttl).acquire().await })
    };
    support::wait_for(Duration::from_secs(5), || {
        m.cmd(&["ZCARD", "leasehold:{w}:queue"])
            .contains(":1")
            .then_some(())
    })
    .expect("the waiter queued");
    l.release().await.expect("release");
    let next = waiter
        .await
        .expect("join")
        .expect("the waiter got the lease");
    assert!(
        until_w("leasehold:{w}:lease", "1"),
        "the claimed grant was not marked: {}",
        w("leasehold:{w}:lease")
    );
    drop(next);
}
