//! A semaphore: at most 2 of 5 workers at once, each with its own fencing
//! token and `lost()`, exactly like a lease.
//!
//! `cargo run --example semaphore` (Redis at `$LEASEHOLD_REDIS_URL`, else
//! `redis://127.0.0.1:6379`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("LEASEHOLD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = leasehold::Client::connect(&url).await?;
    let inside = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for i in 0..5 {
        let (client, inside) = (client.clone(), inside.clone());
        workers.push(tokio::spawn(async move {
            let slot = client
                .semaphore("example-pool", 2)
                .ttl(Duration::from_secs(5))
                .acquire()
                .await?;
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            println!("worker {i}: in (token {}), {now} inside", slot.token());
            assert!(now <= 2, "never more than 2 at once");
            tokio::time::sleep(Duration::from_millis(150)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            slot.release().await?;
            Ok::<_, leasehold::Error>(())
        }));
    }
    for w in workers {
        w.await??;
    }
    println!("all 5 workers ran, at most 2 at a time");
    Ok(())
}
