//! Leader election on a real redis-server.

use leasehold_testkit as support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use leasehold::{Client, LostReason, ReleaseOutcome};
use support::RedisServer;

async fn client(r: &RedisServer) -> Client {
    Client::connect(&r.url()).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_observe_proclaim_resign() {
    let r = RedisServer::start();
    r.warm();
    let a = client(&r).await;
    let b = client(&r).await;
    let watcher = client(&r).await;
    let ttl = Duration::from_secs(5);

    let observed = watcher.election("sched").ttl(ttl).observe();
    tokio::pin!(observed);
    let first = observed.next().await.expect("item").expect("ok");
    assert!(first.is_none(), "nobody leads yet");

    let mut leader_a = a
        .election("sched")
        .ttl(ttl)
        .campaign("host-a:1")
        .await
        .expect("a leads");
    let seen = observed
        .next()
        .await
        .expect("item")
        .expect("ok")
        .expect("a leader");
    assert_eq!(seen.value, "host-a:1");
    assert_eq!(seen.token, leader_a.token());

    // B campaigns and blocks while A leads.
    let eb = b.election("sched").ttl(ttl);
    let campaign_b = tokio::spawn(async move { eb.campaign("host-b:2").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!campaign_b.is_finished());

    leader_a.proclaim("host-a:1 v2").await.expect("proclaim");
    let seen = observed
        .next()
        .await
        .expect("item")
        .expect("ok")
        .expect("a leader");
    assert_eq!(seen.value, "host-a:1 v2");
    assert_eq!(
        a.election("sched")
            .leader()
            .await
            .expect("leader")
            .expect("some")
            .value,
        "host-a:1 v2"
    );

    let resigned_at = Instant::now();
    assert_eq!(
        leader_a.resign().await.expect("resign"),
        ReleaseOutcome::Released
    );
    let leader_b = campaign_b.await.expect("join").expect("b leads");
    assert!(resigned_at.elapsed() < Duration::from_millis(500));
    assert!(leader_b.token() > seen.token);
    // The observer sees B (possibly after a "free" in between).
    loop {
        let item = observed.next().await.expect("item").expect("ok");
        if let Some(h) = item {
            assert_eq!(h.value, "host-b:2");
            break;
        }
    }
}

#[tokio::test]
async fn proclaim_after_loss_fails_and_lost_says_why() {
    let r = RedisServer::start();
    r.warm();
    let c = client(&r).await;
    let mut l = c
        .election("e")
        .ttl(Duration::from_millis(600))
        .campaign("v")
        .await
        .expect("lead");
    // Another client overwrites the key with garbage of another type.
    r.cmd(&["DEL", "leasehold:{e}:lease"]);
    r.cmd(&["SET", "leasehold:{e}:lease", "garbage"]);
    let reason = tokio::time::timeout(Duration::from_secs(2), l.lost())
        .await
        .expect("lost");
    match reason {
        LostReason::Refused(why) => assert!(why.contains("foreign type string"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(l.proclaim("x").await.is_err());
}
