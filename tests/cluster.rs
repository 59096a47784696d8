//! Leases on a 3-master Redis Cluster started by the test.

use leasehold_testkit as support;

use std::time::Duration;

use leasehold::{Client, ReleaseOutcome};
use support::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_spread_over_all_masters_and_survive_slot_migration() {
    let cluster = Cluster::start(3);
    let c = Client::connect(&cluster.url()).await.expect("connect");
    let ttl = Duration::from_secs(2);

    // Many names, all slots' owners involved. A fresh cluster quarantines each
    // slot's first acquisition for one TTL; they wait it out concurrently.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.lease(format!("job-{i}"))
                .ttl(ttl)
                .acquire_timeout(ttl * 3)
                .await
        }));
    }
    let mut leases = Vec::new();
    for t in tasks {
        leases.push(t.await.expect("task").expect("acquired"));
    }
    let mut per_node = [0usize; 3];
    for l in &leases {
        let slot = cluster.keyslot(&format!("leasehold:{{{}}}:lease", l.name()));
        per_node[cluster.owner(slot)] += 1;
    }
    assert!(per_node.iter().all(|n| *n > 0), "{per_node:?}");
    for l in leases {
        assert_eq!(
            l.release().await.expect("release"),
            ReleaseOutcome::Released
        );
    }

    // Hold one lease while its slot moves to another master.
    let held = c.lease("moving").ttl(ttl).acquire().await.expect("acquire");
    let token = held.token();
    let slot = cluster.keyslot("leasehold:{moving}:lease");
    let from = cluster.owner(slot);
    let to = (from + 1) % 3;
    cluster.migrate_slot(slot, from, to);
    assert_eq!(cluster.owner(slot), to);
    tokio::time::sleep(ttl * 2).await;
    assert!(held.is_held(), "renewal followed the slot");
    let st = c.status("moving").await.expect("status");
    assert_eq!(st.holder.expect("held").holder, *held.holder());
    // Another client sees it held; after release the next token is larger.
    let other = Client::connect(&cluster.url()).await.expect("connect");
    assert!(
        other
            .lease("moving")
            .ttl(ttl)
            .try_acquire()
            .await
            .expect("try")
            .is_none()
    );
    held.release().await.expect("release");
    let next = other
        .lease("moving")
        .ttl(ttl)
        .acquire_timeout(Duration::from_secs(2))
        .await
        .expect("acquire after move");
    assert!(next.token() > token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_token_cache_work_on_cluster() {
    let cluster = Cluster::start(3);
    let c = Client::connect(&cluster.url()).await.expect("connect");
    let q = std::sync::Arc::new(
        c.quota(3, Duration::from_secs(86_400))
            .build()
            .expect("quota"),
    );
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let q = q.clone();
        tasks.push(tokio::spawn(
            async move { q.take("votes:cluster", 1).await },
        ));
    }
    let mut allowed = 0;
    for t in tasks {
        if t.await.expect("task").expect("take").allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3);
    let sliding = c
        .quota(2, Duration::from_secs(5))
        .sliding()
        .build()
        .expect("q");
    assert!(sliding.take("s", 2).await.expect("take").allowed);
    assert!(!sliding.take("s", 1).await.expect("take").allowed);

    let cache = c
        .token_cache()
        .fetch_timeout(Duration::from_secs(2))
        .build()
        .expect("cache");
    let fetched = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (cache, fetched) = (cache.clone(), fetched.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_refresh("tok", || async move {
                    fetched.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(("v".to_string(), Duration::from_secs(3600)))
                })
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("value"), "v");
    }
    assert_eq!(fetched.load(std::sync::atomic::Ordering::SeqCst), 1);
}
