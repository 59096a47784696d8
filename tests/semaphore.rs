//! Semaphores (N holders) on a real redis-server.

use leasehold_testkit as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use leasehold::backend::{AcquireReply, Attempt, Held, Kind};
use leasehold::{Client, HolderId, ReleaseOutcome};
use support::{RedisServer, leasehold};

/// Waits until `n` waiters are in the line of `name` (each attempt that found
/// it taken keeps a place there), at most 10 s.
async fn in_line(r: &RedisServer, name: &str, n: usize) {
    let key = format!("leasehold:{{{name}}}:queue");
    let t0 = Instant::now();
    loop {
        let card = r.cmd(&["ZCARD", &key]);
        if card.trim() == format!(":{n}") {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{name}: {card} in line, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

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

/// A waiting acquirer queued at `name` through the protocol layer: it never
/// comes back (a crashed waiter), unless the test claims for it.
async fn queued_ghost(c: &Client, name: &str, limit: u32, ttl: Duration) -> HolderId {
    let ghost = HolderId::generate();
    let reply = c
        .backend()
        .attempt(&Attempt {
            kind: Kind::Slot { limit },
            queue: true,
            ..Attempt::lease(name, &ghost, ttl)
        })
        .await
        .expect("attempt");
    assert!(matches!(reply, AcquireReply::Full { .. }), "{reply:?}");
    ghost
}

/// Grant on release: a freed slot goes to the waiter in line, so an
/// acquirer that comes after the release finds none free (before, the
/// release only woke the waiters, and whoever came first took the slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_slot_goes_to_the_waiter_in_line_not_to_a_latecomer() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let ttl = Duration::from_secs(10);
    let held = c
        .semaphore("line", 1)
        .ttl(ttl)
        .acquire()
        .await
        .expect("slot");
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.semaphore("line", 1).ttl(ttl).acquire().await })
    };
    in_line(&r, "line", 1).await;
    assert_eq!(
        held.release().await.expect("release"),
        ReleaseOutcome::Released
    );
    let latecomer = c
        .semaphore("line", 1)
        .ttl(ttl)
        .try_acquire()
        .await
        .expect("try");
    assert!(latecomer.is_none(), "a latecomer took the released slot");
    let permit = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("the waiter got the slot in time")
        .expect("task")
        .expect("slot");
    let holders = c.semaphore_status("line").await.expect("status");
    assert_eq!(holders.len(), 1);
    assert_eq!(&holders[0].holder, permit.holder());
}

/// Waiters get freed slots in the order they came, whichever holder frees
/// one: the tokens (issued in the order slots are handed out) grow with the
/// order of arrival.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_slots_first_come_first_served() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let ttl = Duration::from_secs(10);
    let a = c.semaphore("fifo", 2).ttl(ttl).acquire().await.expect("a");
    let b = c.semaphore("fifo", 2).ttl(ttl).acquire().await.expect("b");
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        // Separate connections: no waiter shares another's round trips.
        let c = Client::connect(&r.url()).await.expect("connect");
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let p = c
                .semaphore("fifo", 2)
                .ttl(ttl)
                .acquire()
                .await
                .expect("slot");
            order.lock().expect("lock").push((p.token().0, i));
            tokio::time::sleep(Duration::from_millis(30)).await;
            p.release().await.expect("release");
        }));
        // Each is in line before the next comes.
        in_line(&r, "fifo", i + 1).await;
    }
    drop(a.release().await.expect("release"));
    drop(b.release().await.expect("release"));
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("in time")
            .expect("task");
    }
    let mut order = order.lock().expect("lock").clone();
    order.sort_unstable();
    let arrivals: Vec<usize> = order.iter().map(|(_, i)| *i).collect();
    assert_eq!(arrivals, vec![0, 1, 2, 3, 4, 5]);
}

/// A slot handed to a waiter that died is not stranded: it lapses after the
/// claim window (TTL/10, at least 100 ms) and the next waiter takes it, with
/// a larger token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_granted_to_a_dead_waiter_passes_on_after_the_claim_window() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let ttl = Duration::from_secs(2);
    let held = c
        .semaphore("lapse", 1)
        .ttl(ttl)
        .acquire()
        .await
        .expect("slot");
    let ghost = queued_ghost(&c, "lapse", 1, ttl).await;
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.semaphore("lapse", 1).ttl(ttl).acquire().await })
    };
    in_line(&r, "lapse", 2).await;
    let released = Instant::now();
    held.release().await.expect("release");
    let holders = c.semaphore_status("lapse").await.expect("status");
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].holder, ghost, "the first in line got the slot");
    let granted = holders[0].token;
    let permit = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("in time")
        .expect("task")
        .expect("slot");
    let took = released.elapsed();
    // Claim window 200 ms; well under the TTL the ghost asked for.
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(permit.token() > granted);
    // The ghost's grant is gone and cannot be claimed any more.
    let claim = c
        .backend()
        .claim(Kind::Slot { limit: 1 }, "lapse", &ghost, ttl, granted)
        .await
        .expect("claim");
    assert!(
        matches!(claim, leasehold::backend::RenewReply::Refused { .. }),
        "{claim:?}"
    );
}

/// A waiter that stops waiting leaves the line and gives back a slot handed
/// to it meanwhile: the next waiter gets it at once, not after the claim
/// window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_leaves_gives_back_a_granted_slot() {
    let r = RedisServer::start();
    let c = client(&r).await;
    // Claim window 1 s: long enough to tell "given back" from "lapsed".
    let ttl = Duration::from_secs(10);
    let held = c
        .semaphore("leave", 1)
        .ttl(ttl)
        .acquire()
        .await
        .expect("slot");
    let ghost = queued_ghost(&c, "leave", 1, ttl).await;
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.semaphore("leave", 1).ttl(ttl).acquire().await })
    };
    in_line(&r, "leave", 2).await;
    held.release().await.expect("release");
    let left = Instant::now();
    c.backend()
        .leave(Kind::Slot { limit: 1 }, "leave", &ghost)
        .await
        .expect("leave");
    let permit = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("in time")
        .expect("task")
        .expect("slot");
    assert!(
        left.elapsed() < Duration::from_millis(700),
        "{:?}",
        left.elapsed()
    );
    let holders = c.semaphore_status("leave").await.expect("status");
    assert_eq!(holders.len(), 1);
    assert_eq!(&holders[0].holder, permit.holder());
}

/// One attempt through the protocol layer, never renewed: a holder or a
/// waiter that vanishes unless the test acts for it.
async fn ghost_attempt(
    c: &Client,
    kind: Kind,
    name: &str,
    ttl: Duration,
    queue: bool,
) -> (HolderId, AcquireReply) {
    let ghost = HolderId::generate();
    let reply = c
        .backend()
        .attempt(&Attempt {
            kind,
            queue,
            ..Attempt::lease(name, &ghost, ttl)
        })
        .await
        .expect("attempt");
    (ghost, reply)
}

const SLOT1: Kind = Kind::Slot { limit: 1 };
const SLOT2: Kind = Kind::Slot { limit: 2 };

/// Review finding (mixed kinds): a holder releasing a slot that already
/// expired, while the name is now a held lease, handed a "slot" to the
/// lease's waiter — which took it as the lease: two lease holders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_release_of_an_expired_slot_hands_nothing_on() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let long = Duration::from_secs(10);
    let (s1, _) = ghost_attempt(&c, SLOT2, "mix", long, false).await;
    let (s, _) = ghost_attempt(&c, SLOT2, "mix", Duration::from_millis(300), false).await;
    assert!(
        c.backend()
            .release(&Held::slot("mix", &s1, 2))
            .await
            .expect("release")
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let lease = c.lease("mix").ttl(long).acquire().await.expect("lease");
    let (waiter, reply) = ghost_attempt(&c, Kind::Lease, "mix", long, true).await;
    assert!(matches!(reply, AcquireReply::Held { .. }), "{reply:?}");
    let released = c
        .backend()
        .release(&Held::slot("mix", &s, 2))
        .await
        .expect("release");
    assert!(!released, "an expired slot was released as if held");
    let st = c.status("mix").await.expect("status").holder.expect("held");
    assert_eq!(&st.holder, lease.holder(), "the lease passed to {waiter:?}");
}

/// Review finding (mixed kinds): a late release of an expired lease, after
/// the name became a semaphore, handed the lease's record to a semaphore
/// waiter — which took it as a slot: two holders of one slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_release_of_an_expired_lease_hands_nothing_to_a_semaphore_waiter() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let long = Duration::from_secs(10);
    let (l, _) = ghost_attempt(&c, Kind::Lease, "mix2", Duration::from_millis(300), false).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let slot = c
        .semaphore("mix2", 1)
        .ttl(long)
        .acquire()
        .await
        .expect("slot");
    let (_w, reply) = ghost_attempt(&c, SLOT1, "mix2", long, true).await;
    assert!(matches!(reply, AcquireReply::Full { .. }), "{reply:?}");
    let released = c
        .backend()
        .release(&Held::lease("mix2", &l))
        .await
        .expect("release");
    assert!(!released);
    let holders = c.semaphore_status("mix2").await.expect("status");
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(&holders[0].holder, slot.holder());
    assert!(c.status("mix2").await.expect("status").holder.is_none());
}

/// Review finding (mixed kinds): a semaphore's release handed its slot to a
/// lease waiter first in line, which took it as the lease beside a slot
/// holder. The lease waiter is told to attempt instead (and is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_slot_is_not_handed_to_a_lease_waiter() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let long = Duration::from_secs(10);
    let _x = ghost_attempt(&c, Kind::Lease, "mix3", Duration::from_millis(300), false).await;
    let (_l, reply) = ghost_attempt(&c, Kind::Lease, "mix3", long, true).await;
    assert!(matches!(reply, AcquireReply::Held { .. }), "{reply:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (s, reply) = ghost_attempt(&c, SLOT2, "mix3", long, false).await;
    assert!(matches!(reply, AcquireReply::Acquired { .. }), "{reply:?}");
    assert!(
        c.backend()
            .release(&Held::slot("mix3", &s, 2))
            .await
            .expect("release")
    );
    assert!(
        c.status("mix3").await.expect("status").holder.is_none(),
        "the lease waiter was handed a slot as the lease"
    );
    assert!(c.semaphore_status("mix3").await.expect("status").is_empty());
}

/// Review finding: a grant is made under the releaser's limit only; a
/// waiter asking for at most 1 holder was handed a slot beside another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_is_handed_on_only_within_the_waiters_own_limit() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let long = Duration::from_secs(10);
    let (a, _) = ghost_attempt(&c, SLOT2, "limits", long, false).await;
    let (b, _) = ghost_attempt(&c, SLOT2, "limits", long, false).await;
    let (_w, reply) = ghost_attempt(&c, SLOT1, "limits", long, true).await;
    assert!(matches!(reply, AcquireReply::Full { .. }), "{reply:?}");
    assert!(
        c.backend()
            .release(&Held::slot("limits", &a, 2))
            .await
            .expect("release")
    );
    let holders = c.semaphore_status("limits").await.expect("status");
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0].holder, b);
}

/// Review finding: the waiter after a grant leaving the line told nobody;
/// if the granted waiter is dead, the one after them slept until its own
/// timer (up to a TTL) instead of coming when the grant lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_next_leaves_the_one_after_comes_when_a_dead_grant_lapses() {
    for kind in [Kind::Lease, SLOT1] {
        let r = RedisServer::start();
        let c = client(&r).await;
        let ttl = Duration::from_secs(10);
        let (holder, _) = ghost_attempt(&c, kind, "deck", ttl, false).await;
        let (_dead, _) = ghost_attempt(&c, kind, "deck", ttl, true).await;
        let (next, _) = ghost_attempt(&c, kind, "deck", ttl, true).await;
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move {
                match kind {
                    Kind::Lease => c.lease("deck").ttl(ttl).acquire().await.map(|l| l.token()),
                    _ => c
                        .semaphore("deck", 1)
                        .ttl(ttl)
                        .acquire()
                        .await
                        .map(|p| p.token()),
                }
            })
        };
        in_line(&r, "deck", 3).await;
        let held = match kind {
            Kind::Lease => Held::lease("deck", &holder),
            _ => Held::slot("deck", &holder, 1),
        };
        assert!(c.backend().release(&held).await.expect("release"));
        let t = Instant::now();
        c.backend().leave(kind, "deck", &next).await.expect("leave");
        // The grant to the dead waiter lapses after 1 s (TTL/10).
        tokio::time::timeout(Duration::from_secs(4), waiter)
            .await
            .unwrap_or_else(|_| panic!("{kind:?}: the waiter slept on"))
            .expect("task")
            .expect("acquired");
        assert!(t.elapsed() < Duration::from_secs(4));
    }
}

/// Review finding: after a leave emptied the line, the next place re-created
/// the queue keys without an expiry (the record still said they lived), so
/// a waiter that then crashed left them behind for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_keys_expire_after_a_leave_emptied_the_line() {
    for kind in [Kind::Lease, SLOT1] {
        let r = RedisServer::start();
        let c = client(&r).await;
        let ttl = Duration::from_secs(10);
        let _holder = ghost_attempt(&c, kind, "gone", ttl, false).await;
        let (w, _) = ghost_attempt(&c, kind, "gone", ttl, true).await;
        c.backend().leave(kind, "gone", &w).await.expect("leave");
        let _w2 = ghost_attempt(&c, kind, "gone", Duration::from_secs(1), true).await;
        for key in ["leasehold:{gone}:queue", "leasehold:{gone}:qinfo"] {
            let pttl: i64 = r
                .cmd(&["PTTL", key])
                .trim()
                .trim_start_matches(':')
                .parse()
                .expect("pttl");
            assert!(pttl > 0, "{kind:?}: {key} has PTTL {pttl}");
        }
    }
}

/// Review finding: a queue-info key of another type (a prefix shared with
/// another application) made `sem_release` fail with a raw WRONGTYPE error
/// after it had already removed the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_copes_with_a_foreign_queue_key() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let ttl = Duration::from_secs(10);
    let (a, _) = ghost_attempt(&c, SLOT1, "odd", ttl, false).await;
    let _w = ghost_attempt(&c, SLOT1, "odd", ttl, true).await;
    r.cmd(&["DEL", "leasehold:{odd}:qinfo"]);
    r.cmd(&["SET", "leasehold:{odd}:qinfo", "not ours"]);
    let released = c.backend().release(&Held::slot("odd", &a, 1)).await;
    assert!(matches!(released, Ok(true)), "{released:?}");
    // Third review: with the queue gone and the queue info foreign, a
    // waiting attempt created the queue, failed on the info, and left the
    // queue without an expiry; and a lease's attempt named the wrong key.
    r.cmd(&["DEL", "leasehold:{odd}:queue"]);
    let (_b, reply) = ghost_attempt(&c, SLOT1, "odd", ttl, false).await;
    assert!(matches!(reply, AcquireReply::Acquired { .. }), "{reply:?}");
    let err = c
        .semaphore("odd", 1)
        .ttl(ttl)
        .acquire_timeout(Duration::from_secs(2))
        .await
        .expect_err("the queue is unusable");
    assert!(err.to_string().contains("{odd}:qinfo"), "{err}");
    let pttl = r.cmd(&["PTTL", "leasehold:{odd}:queue"]);
    assert_ne!(pttl.trim(), ":-1", "a queue key without an expiry");
    let _held = c.lease("odd2").ttl(ttl).acquire().await.expect("held");
    r.cmd(&["SET", "leasehold:{odd2}:qinfo", "not ours"]);
    let err = c
        .lease("odd2")
        .ttl(ttl)
        .acquire_timeout(Duration::from_secs(2))
        .await
        .expect_err("the queue is unusable");
    assert!(err.to_string().contains("{odd2}:qinfo"), "{err}");
    let pttl = r.cmd(&["PTTL", "leasehold:{odd2}:queue"]);
    assert_ne!(pttl.trim(), ":-1", "a queue key without an expiry");
}

/// The record's `qu` field of `name` (the queue keys' expiry), if any.
fn qu_field(r: &RedisServer, name: &str) -> String {
    r.cmd(&["HGET", &format!("leasehold:{{{name}}}:lease"), "qu"])
        .trim()
        .to_string()
}

fn queue_exists(r: &RedisServer, name: &str) -> bool {
    r.cmd(&["EXISTS", &format!("leasehold:{{{name}}}:queue")])
        .trim()
        == ":1"
}

/// Second review: a leave emptied the line through the lapsed places it
/// removed on the way (not its own), and the record kept saying the queue
/// keys lived — the next place re-created them without an expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_that_empties_the_line_through_lapsed_places_clears_qu() {
    let r = RedisServer::start();
    let c = client(&r).await;
    let short = Duration::from_secs(1);
    // Semaphore: H holds (renewed); A waits long, C's place lapses soon.
    let _h = c
        .semaphore("lapsed", 1)
        .ttl(short)
        .acquire()
        .await
        .expect("h");
    let (a, _) = ghost_attempt(&c, SLOT1, "lapsed", Duration::from_secs(10), true).await;
    let _c = ghost_attempt(&c, SLOT1, "lapsed", short, true).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    c.backend().leave(SLOT1, "lapsed", &a).await.expect("leave");
    assert!(!queue_exists(&r, "lapsed"));
    assert_eq!(qu_field(&r, "lapsed"), "$-1", "qu outlived the queue");
    // Lease: L releases, the lease is granted to A (next: C); C lapses; A
    // gives the grant back and the line is empty.
    let l = c.lease("lapsed2").ttl(short).acquire().await.expect("l");
    let (a, _) = ghost_attempt(&c, Kind::Lease, "lapsed2", Duration::from_secs(10), true).await;
    let _c = ghost_attempt(&c, Kind::Lease, "lapsed2", short, true).await;
    l.release().await.expect("release");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    c.backend()
        .leave(Kind::Lease, "lapsed2", &a)
        .await
        .expect("leave");
    assert!(!queue_exists(&r, "lapsed2"));
    assert_eq!(qu_field(&r, "lapsed2"), "$-1", "qu outlived the queue");
}
