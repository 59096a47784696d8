//! `leasehold quota take`.

use std::time::SystemTime;

use crate::cli::QuotaTakeArgs;
use crate::exit::{self, Outcome};

pub async fn take(a: QuotaTakeArgs) -> Outcome {
    let client = match a.conn.connect().await {
        Ok(c) => c,
        Err(e) => return Err(e.into()),
    };
    let mut q = client
        .quota(a.limit, std::time::Duration::from_secs(1))
        .period(a.per)
        .timeout(a.timeout);
    if let Some(tz) = &a.tz {
        q = q.time_zone(tz.clone());
    }
    if a.sliding {
        q = q.sliding();
    }
    let quota = match q.build() {
        Ok(q) => q,
        Err(e) => return Err(e.into()),
    };
    // Always under a request id, so that an unknown outcome can be settled
    // by a retry that counts once.
    let request = a
        .request_id
        .clone()
        .unwrap_or_else(leasehold::quota::random_id);
    let taken = match quota.take_with_id(&a.key, a.count, &request).await {
        Ok(t) => t,
        Err(e) => return Err(e.into()),
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
                "taken": if taken.allowed && !taken.replayed { a.count } else { 0 },
                "replayed": taken.replayed,
                "remaining": taken.remaining,
                "limit": a.limit,
                "reset_at": reset,
                "reset_in_ms": u64::try_from(in_secs.as_millis()).unwrap_or(u64::MAX),
            })
        );
    } else {
        let rounded = std::time::Duration::from_secs(in_secs.as_secs());
        let verdict = match (taken.allowed, taken.replayed, a.count) {
            (true, true, _) => "allowed (this request id was counted already)",
            (true, false, 0) => "read",
            (true, false, _) => "allowed",
            (false, ..) => "denied",
        };
        println!(
            "{verdict} {:?}: {} of {} left, resets at {reset} (in {})",
            a.key,
            taken.remaining,
            a.limit,
            humantime::format_duration(rounded)
        );
    }
    if taken.allowed {
        Ok(exit::OK)
    } else {
        Ok(exit::DENIED)
    }
}
