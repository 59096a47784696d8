//! Sentinel: 1 master + 1 replica + 3 sentinels, started by the test.

use leasehold_testkit as support;

use std::time::{Duration, Instant};

use leasehold::Client;
use support::{SentinelGroup, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_min_replicas_a_held_lease_survives_failover() {
    let mut g = SentinelGroup::start();
    g.master.warm();
    let c = Client::builder(g.url())
        .min_replicas(1)
        .connect()
        .await
        .expect("connect through sentinels");
    let ttl = Duration::from_secs(15);
    let lease = c.lease("svc").ttl(ttl).acquire().await.expect("acquire");
    let token = lease.token();
    let mut state = lease.state();

    let took = g.fail_over();
    eprintln!("failover took {took:?}");

    // The holder reconnects to the new master and keeps renewing.
    let renewed_after = Instant::now();
    tokio::time::timeout(ttl, async {
        loop {
            state.changed().await.expect("keeper alive");
            if let leasehold::LeaseState::Held { deadline, .. } = &*state.borrow() {
                if *deadline > renewed_after + ttl / 2 {
                    break;
                }
            } else {
                panic!("lease lost across the failover: {:?}", *state.borrow());
            }
        }
    })
    .await
    .expect("a renewal on the new master");
    assert!(lease.is_held());
    let st = c.status("svc").await.expect("status");
    assert_eq!(st.holder.expect("held").token, token);
    // The fencing floor survived on the promoted replica.
    let fence = g.master.cmd(&["HGET", "leasehold:{svc}:lease", "token"]);
    assert!(fence.contains(&token.to_string()), "{fence}");

    lease.release().await.expect("release");
    let next = c
        .lease("svc")
        .ttl(ttl)
        .acquire()
        .await
        .expect("acquire on new master");
    assert!(next.token() > token);
}

#[test]
fn run_keeps_exactly_one_child_across_failover() {
    let mut g = SentinelGroup::start();
    g.master.warm();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("log");
    let log_s = log.to_string_lossy().to_string();
    let url = g.url();
    let worker = r#"read -r pid _ < /proc/self/stat; echo "start $pid" >> "$LOG"; trap 'echo stop >> "$LOG"; exit 0' TERM; while :; do sleep 0.05; done"#;
    let args = [
        "run",
        "-v",
        "--name",
        "svc",
        "--redis",
        &url,
        "--min-replicas",
        "1",
        "--ttl",
        "15s",
        "--",
        "sh",
        "-c",
        worker,
    ];
    let mut first = support::leasehold(dir.path(), &args, &[("LOG", &log_s)]);
    let started = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).ok().and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<i32>().ok())
        })
    })
    .expect("child started");
    let mut second = support::leasehold(dir.path(), &args, &[("LOG", &log_s)]);
    std::thread::sleep(Duration::from_millis(500));

    g.fail_over();
    // Past a few renewals (every TTL/3) on the new master.
    std::thread::sleep(Duration::from_secs(11));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        text.matches("start").count(),
        1,
        "{text}\nfirst supervisor: {}\nsecond supervisor: {}\nnew master: {}",
        first.stderr(),
        second.stderr(),
        g.master.cmd(&["INFO", "replication"])
    );
    assert!(
        !text.contains("stop"),
        "the child was stopped: {text}\nfirst supervisor: {}\nsecond supervisor: {}\nnew master: {}",
        first.stderr(),
        second.stderr(),
        g.master.cmd(&["INFO", "replication"])
    );
    assert!(support::pid_alive(started), "the child died");
    assert!(
        first.wait_exit(Duration::ZERO).is_none(),
        "{}",
        first.stderr()
    );
    assert!(
        second.wait_exit(Duration::ZERO).is_none(),
        "{}",
        second.stderr()
    );
    first.signal(libc::SIGTERM);
    assert_eq!(
        first.wait_exit(Duration::from_secs(5)),
        Some(0),
        "{}",
        first.stderr()
    );
    // The standby takes over on the new master.
    let took_over = wait_for(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.matches("start").count() == 2).then_some(())
    });
    assert!(
        took_over.is_some(),
        "standby took over after the failover: {}\n---first:\n{}",
        second.stderr(),
        first.stderr()
    );
}

/// `--min-replicas` holds for semaphores too: a slot whose acquisition did
/// not reach a replica does not count, so when the master dies before
/// replicating it, the promoted replica cannot let an N+1-th holder in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_min_replicas_a_semaphore_never_has_n_plus_1_holders_after_failover() {
    let mut g = SentinelGroup::start();
    g.master.warm();
    let connect = || async {
        Client::builder(g.url())
            .min_replicas(1)
            .connect()
            .await
            .expect("connect")
    };
    let (a, b, c) = (connect().await, connect().await, connect().await);
    // Long TTLs and rare renewals: nobody learns of the failover from a
    // renewal before C comes.
    let ttl = Duration::from_secs(60);
    let every = Duration::from_secs(30);
    let sa = a
        .semaphore("pool", 2)
        .ttl(ttl)
        .renew_every(every)
        .acquire()
        .await
        .expect("A holds a slot (replicated)");
    // The replica stops receiving: B's slot is written on the master only.
    g.replica.freeze();
    let sb = b
        .semaphore("pool", 2)
        .ttl(ttl)
        .renew_every(every)
        .try_acquire()
        .await;
    // Not on a replica: it does not count, and it is given back at once.
    assert!(
        matches!(sb, Err(leasehold::Error::NotReplicated { .. })),
        "B's slot counted without a replica: {sb:?}"
    );
    let slots = g.master.cmd(&["ZCARD", "leasehold:{pool}:slots"]);
    assert!(slots.contains(":1"), "B's slot was not given back: {slots}");
    // The master dies before the replica got anything of B's.
    g.master.stop();
    g.replica.thaw();
    g.fail_over();
    let sc = c
        .semaphore("pool", 2)
        .ttl(ttl)
        .renew_every(every)
        .acquire_timeout(Duration::from_secs(20))
        .await
        .expect("C takes the slot the promoted replica has free");
    let mut holding = vec![("A", sa.is_held()), ("C", sc.is_held())];
    if let Ok(Some(sb)) = &sb {
        holding.push(("B", sb.is_held()));
    }
    let n = holding.iter().filter(|(_, h)| *h).count();
    assert!(
        n <= 2,
        "{n} holders of a 2-slot semaphore: {holding:?} (B: {sb:?})"
    );
}
