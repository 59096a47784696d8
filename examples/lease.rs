//! A lease guarding work: stop the work the moment the lease is lost.
//!
//! `cargo run --example lease` (Redis at `$LEASEHOLD_REDIS_URL`, else
//! `redis://127.0.0.1:6379`). Run it twice: the second waits, and takes over
//! at once when the first finishes (or within the TTL if you kill it).

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("LEASEHOLD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = leasehold::Client::connect(&url).await?;
    let lease = client
        .lease("example-report")
        .ttl(Duration::from_secs(5))
        .acquire()
        .await?;
    // Pass the token along with every write: a resource that remembers the
    // highest token it saw can refuse a holder that lost the lease meanwhile.
    let token = lease.token();
    println!("holding 'example-report' with fencing token {token}");
    tokio::select! {
        reason = lease.lost() => {
            eprintln!("lease lost ({reason}); the work stopped");
            return Ok(());
        }
        () = work(token) => {}
    }
    println!("done: {:?}", lease.release().await?);
    Ok(())
}

async fn work(token: leasehold::FencingToken) {
    for step in 1..=3 {
        println!("  step {step} (token {token})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
