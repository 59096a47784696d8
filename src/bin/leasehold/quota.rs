//! `leasehold quota take`.

use std::time::SystemTime;

use crate::cli::QuotaTakeArgs;
use crate::{exit, report};

pub async fn take(a: QuotaTakeArgs) -> u8 {
    let client = match a.conn.connect().await {
        Ok(c) => c,
        Err(e) => {
            report(&e);
            return exit::of_error(&e);
        }
    };
    let mut q = client.quota(a.limit, a.per);
    if let Some(tz) = &a.tz {
        q = q.time_zone(tz.clone());
    }
    if a.sliding {
        q = q.sliding();
    }
    let quota = match q.build() {
        Ok(q) => q,
        Err(e) => {
            report(&e);
            return exit::of_error(&e);
        }
    };
    let taken = match quota.take(&a.key, a.count).await {
        Ok(t) => t,
        Err(e) => {
            report(&e);
            return exit::of_error(&e);
        }
    };
    let reset = jiff::Timestamp::try_from(taken.reset_at)
        .map(|t| t.to_zoned_datetime(quota.time_zone().clone()).to_string())
        .unwrap_or_default();
    let in_secs = taken
        .reset_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "key": a.key,
                "allowed": taken.allowed,
                "remaining": taken.remaining,
                "limit": a.limit,
                "reset_at": reset,
                "reset_in_ms": in_secs.as_millis() as u64,
            })
        );
    } else {
        let rounded = std::time::Duration::from_secs(in_secs.as_secs());
        println!(
            "{} {:?}: {} of {} left, resets at {reset} (in {})",
            if taken.allowed { "allowed" } else { "denied" },
            a.key,
            taken.remaining,
            a.limit,
            humantime::format_duration(rounded)
        );
    }
    if taken.allowed {
        exit::OK
    } else {
        exit::DENIED
    }
}
