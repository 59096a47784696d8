//! Leader election with `observe()`: one task campaigns, another watches who
//! leads; the leader proclaims a new value, then resigns.
//!
//! `cargo run --example election` (Redis at `$LEASEHOLD_REDIS_URL`, else
//! `redis://127.0.0.1:6379`).

use std::time::Duration;

use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("LEASEHOLD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = leasehold::Client::connect(&url).await?;
    let election = client
        .election("example-scheduler")
        .ttl(Duration::from_secs(5));

    // The observer: the current leader at once, then every change.
    let mut changes = Box::pin(election.observe());
    let observer = tokio::spawn(async move {
        let mut seen = 0;
        while let Some(leader) = changes.next().await {
            match leader {
                Ok(Some(l)) => println!("observer: leader is {:?} (token {})", l.value, l.token),
                Ok(None) => println!("observer: no leader"),
                Err(e) => eprintln!("observer: {e}"),
            }
            seen += 1;
            if seen == 4 {
                break;
            }
        }
    });

    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut leader = election.campaign("host-a:4711").await?;
    println!("campaign: leading with token {}", leader.token());
    tokio::time::sleep(Duration::from_millis(200)).await;
    leader.proclaim("host-a:4712").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    leader.resign().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), observer).await;
    Ok(())
}
