mod support;
use std::time::Duration;

#[tokio::test]
async fn acquire_release() {
    let r = support::RedisServer::start();
    let c = leasehold::Client::connect(&r.url()).await.unwrap();
    let t0 = std::time::Instant::now();
    let l = c
        .lease("a")
        .ttl(Duration::from_millis(500))
        .acquire()
        .await
        .unwrap();
    eprintln!(
        "first acquire (quarantine) took {:?} token {}",
        t0.elapsed(),
        l.token()
    );
    let st = c.status("a").await.unwrap();
    eprintln!("{st:?}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(l.is_held());
    assert_eq!(
        l.release().await.unwrap(),
        leasehold::ReleaseOutcome::Released
    );
}
