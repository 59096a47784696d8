//! A shared token cache: many callers, one fetch. The fetch runs in exactly
//! one caller across all processes; the others wait for its value.
//!
//! `cargo run --example token_cache` (Redis at `$LEASEHOLD_REDIS_URL`, else
//! `redis://127.0.0.1:6379`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("LEASEHOLD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = leasehold::Client::connect(&url).await?;
    let cache = client
        .token_cache()
        .refresh_before(Duration::from_secs(60))
        .max_fetches_per_day(100)
        .build()?;
    let fetches = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..10 {
        let (cache, fetches) = (cache.clone(), fetches.clone());
        callers.push(tokio::spawn(async move {
            cache
                .get_or_refresh("example-token", || async move {
                    // Stands for a call to an identity provider.
                    fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(("s3cr3t-token".to_string(), Duration::from_secs(3600)))
                })
                .await
        }));
    }
    for c in callers {
        let value = c.await??;
        assert_eq!(value, "s3cr3t-token");
    }
    println!(
        "10 callers got the token; fetches made: {}",
        fetches.load(Ordering::SeqCst)
    );
    Ok(())
}
