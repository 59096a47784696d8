//! A quota: at most 3 votes per user per day, in the user's time zone.
//!
//! `cargo run --example quota` (Redis at `$LEASEHOLD_REDIS_URL`, else
//! `redis://127.0.0.1:6379`).

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("LEASEHOLD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = leasehold::Client::connect(&url).await?;
    let votes = client
        .quota(3, Duration::from_secs(86_400))
        .time_zone("Asia/Shanghai")
        .build()?;
    let user = format!("example-votes:user-{}", std::process::id());
    for attempt in 1..=4 {
        let t = votes.take(&user, 1).await?;
        println!(
            "vote {attempt}: {} ({} left, resets at {})",
            if t.allowed { "allowed" } else { "denied" },
            t.remaining,
            humantime::format_rfc3339_seconds(t.reset_at)
        );
        assert_eq!(t.allowed, attempt <= 3);
    }
    Ok(())
}
