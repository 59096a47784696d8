//! Quorum (Redlock) over 5 independent redis-server processes.

use leasehold_testkit as support;

use std::time::{Duration, Instant};

use leasehold::{Client, Error, LostReason};
use support::{Proxy, RedisServer};

fn five() -> Vec<RedisServer> {
    (0..5)
        .map(|_| {
            let r = RedisServer::start();
            r.warm();
            r
        })
        .collect()
}

async fn client_of(urls: Vec<String>) -> Client {
    Client::builder_many(urls)
        .connect()
        .await
        .expect("connect quorum")
}

fn urls(nodes: &[RedisServer]) -> Vec<String> {
    nodes.iter().map(|r| r.url()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_five_down_still_acquires_and_renews() {
    let mut nodes = five();
    let c = client_of(urls(&nodes)).await;
    let ttl = Duration::from_millis(900);
    let first = c.lease("q").ttl(ttl).acquire().await.expect("acquire");
    let t1 = first.token();
    nodes[0].stop();
    nodes[1].stop();
    tokio::time::sleep(ttl * 3).await;
    assert!(first.is_held(), "renewal on 3 of 5 keeps the lease");
    let st = c.status("q").await.expect("status");
    assert_eq!(st.holder.expect("held").holder, *first.holder());
    first.release().await.expect("release");
    let second = c
        .lease("q")
        .ttl(ttl)
        .acquire()
        .await
        .expect("acquire again");
    assert!(second.token() > t1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_of_five_down_loses_before_the_deadline() {
    let mut nodes = five();
    let c = client_of(urls(&nodes)).await;
    let ttl = Duration::from_secs(1);
    let lease = c.lease("q").ttl(ttl).acquire().await.expect("acquire");
    for n in nodes.iter_mut().take(3) {
        n.stop();
    }
    let deadline = lease.deadline().expect("held");
    let reason = tokio::time::timeout(ttl * 2, lease.lost())
        .await
        .expect("lost fires");
    let at = Instant::now();
    assert!(matches!(reason, LostReason::Unconfirmed(_)), "{reason:?}");
    assert!(
        at < deadline + lease.config().drift(),
        "lost {:?} late",
        at - deadline
    );
    // Nobody can acquire with only 2 of 5.
    let e = c.lease("q2").ttl(ttl).try_acquire().await;
    assert!(matches!(e, Err(Error::NoQuorum { .. })), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_increase_across_node_restarts() {
    let mut nodes = five();
    let c = client_of(urls(&nodes)).await;
    let ttl = Duration::from_millis(500);
    let mut last = 0;
    for round in 0..10 {
        // Wipe a different node each round (restart without persistence).
        nodes[round % 5].restart();
        nodes[round % 5].warm();
        let l = c
            .lease("fence")
            .ttl(ttl)
            .acquire_timeout(Duration::from_secs(5))
            .await
            .expect("acquire");
        assert!(
            l.token().0 > last,
            "round {round}: {} after {last}",
            l.token()
        );
        last = l.token().0;
        l.release().await.expect("release");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_partitioned_into_a_minority_cannot_acquire() {
    let nodes = five();
    let proxies: Vec<Proxy> = nodes[2..]
        .iter()
        .map(|r| Proxy::start(r.port).expect("proxy"))
        .collect();
    let mut minority_urls: Vec<String> = nodes[..2].iter().map(|r| r.url()).collect();
    minority_urls.extend(proxies.iter().map(|p| p.url()));
    let partitioned = client_of(minority_urls).await;
    let other = client_of(urls(&nodes)).await;
    let ttl = Duration::from_secs(1);
    for p in &proxies {
        p.blackhole();
    }
    let got = partitioned.lease("part").ttl(ttl).try_acquire().await;
    assert!(
        matches!(got, Err(Error::NoQuorum { .. }) | Ok(None)),
        "a minority acquired: {got:?}"
    );
    // The majority side is unaffected.
    let l = other
        .lease("part")
        .ttl(ttl)
        .acquire_timeout(Duration::from_secs(3))
        .await
        .expect("majority acquires");
    for p in &proxies {
        p.heal();
    }
    // Healed: the formerly partitioned client sees the majority's holder.
    let again = partitioned
        .lease("part")
        .ttl(ttl)
        .try_acquire()
        .await
        .expect("try");
    assert!(again.is_none(), "acquired while another holds a majority");
    l.release().await.expect("release");
}

#[tokio::test]
async fn quorum_needs_three_servers_and_a_majority_at_start() {
    let nodes = five();
    let two: Vec<String> = urls(&nodes)[..2].to_vec();
    let e = Client::builder_many(two)
        .connect()
        .await
        .expect_err("2 nodes");
    assert!(e.to_string().contains("at least 3"), "{e}");
    let mut dead = urls(&nodes)[..2].to_vec();
    dead.push(format!("redis://127.0.0.1:{}", support::free_port()));
    dead.push(format!("redis://127.0.0.1:{}", support::free_port()));
    let e = Client::builder_many(dead)
        .connect()
        .await
        .expect_err("no majority");
    assert!(matches!(e, Error::NoQuorum { .. }), "{e}");
}

#[test]
fn run_stops_its_child_when_the_quorum_is_lost() {
    let mut nodes = five();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("log");
    let mut args: Vec<String> = vec![
        "run".into(),
        "--name".into(),
        "qjob".into(),
        "--ttl".into(),
        "2s".into(),
        "--grace".into(),
        "300ms".into(),
    ];
    for u in urls(&nodes) {
        args.push("--redis".into());
        args.push(u);
    }
    args.extend(["--", "sh", "-c", r#"echo start >> "$LOG"; trap 'echo stop >> "$LOG"; exit 0' TERM; while :; do sleep 0.02; done"#].map(String::from));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let log_s = log.to_string_lossy().to_string();
    let mut sup = support::leasehold(dir.path(), &argv, &[("LOG", &log_s)]);
    support::wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("start"))
    })
    .expect("child starts");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    for n in nodes.iter_mut().take(3) {
        n.stop();
    }
    assert_eq!(
        sup.wait_exit(Duration::from_secs(6)),
        Some(79),
        "{}",
        sup.stderr()
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "child outlived the TTL: {:?}",
        t.elapsed()
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("stop"), "{text}");
}
