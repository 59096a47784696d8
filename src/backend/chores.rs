//! The chores beside leases on one logical Redis: quota counters
//! (`quota_*.lua`) and the token cache (`cache_*.lua`).

use std::time::Duration;

use super::keys;
use super::node::Node;
use super::reply::{array, int, int_at, string_at};
use super::scripts::{self, Call};
use crate::error::Result;
use crate::token::HolderId;

impl Node {
    /// Redis's own clock.
    pub async fn redis_time(&self) -> Result<std::time::SystemTime> {
        let (secs, micros): (u64, u64) = self
            .run("time", async |c| redis::cmd("TIME").query_async(c).await)
            .await?;
        Ok(std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
    }

    /// The key `<prefix>{quota:<key>}:<suffix>`: every key of one quota key
    /// shares its hash tag, so one script may touch them all on Cluster.
    fn quota_key(&self, key: &str, suffix: &str) -> String {
        keys::quota(&self.prefix, key, suffix)
    }

    /// `quota_fixed.lua`: the take's outcome, or `Err(Redis time in ms)` when
    /// the window does not contain Redis's time.
    pub async fn quota_fixed(
        &self,
        t: &FixedTake<'_>,
    ) -> Result<std::result::Result<QuotaReply, i64>> {
        keys::validate_key_name(t.key)?;
        let call = Call::new(&scripts::QUOTA_FIXED)
            .key(self.quota_key(t.key, &format!("{}:{}", t.scope, t.window)))
            .key(self.quota_key(t.key, &format!("{}:req:{}", t.scope, t.request)))
            .arg(t.limit)
            .arg(t.n)
            .arg(t.from_ms)
            .arg(t.until_ms)
            .arg(t.expire_at_ms)
            .arg(t.remember_ms);
        let r = array("quota", self.call("quota", call).await?)?;
        let code = int_at("quota", &r, 0)?;
        let value = int_at("quota", &r, 1)?;
        if code == -1 {
            return Ok(Err(value));
        }
        Ok(Ok(QuotaReply {
            allowed: code != 0,
            replayed: code == 2,
            remaining: value.max(0) as u64,
            reset: Duration::ZERO,
        }))
    }

    /// `quota_sliding.lua`.
    pub async fn quota_sliding(&self, t: &SlidingTake<'_>) -> Result<QuotaReply> {
        keys::validate_key_name(t.key)?;
        let call = Call::new(&scripts::QUOTA_SLIDING)
            .key(self.quota_key(t.key, t.scope))
            .key(self.quota_key(t.key, &format!("{}:req:{}", t.scope, t.request)))
            .arg(t.limit)
            .arg(t.n)
            .arg(t.period_ms)
            .arg(t.request)
            .arg(t.remember_ms);
        let r = array("quota", self.call("quota", call).await?)?;
        let code = int_at("quota", &r, 0)?;
        Ok(QuotaReply {
            allowed: code != 0,
            replayed: code == 2,
            remaining: int_at("quota", &r, 1)?.max(0) as u64,
            reset: Duration::from_millis(int_at("quota", &r, 2)?.max(0) as u64),
        })
    }

    /// The key `<prefix>{cache#<name>}:<suffix>`; the refresher lease
    /// `cache#<name>` shares the hash tag (and no user name can: `#`).
    fn cache_key(&self, name: &str, suffix: &str) -> String {
        keys::cache(&self.prefix, name, suffix)
    }

    /// `cache_get.lua`: the cached value of `name` (if any) and the failure of
    /// a recent fetch (if any).
    pub async fn cache_get(&self, name: &str) -> Result<CacheEntry> {
        keys::validate_name(name)?;
        let call = Call::new(&scripts::CACHE_GET)
            .key(self.cache_key(name, "value"))
            .key(self.cache_key(name, "failed"));
        let r = array("cache get", self.call("cache get", call).await?)?;
        let ms = |i| -> Result<Duration> {
            Ok(Duration::from_millis(
                int_at("cache get", &r, i)?.max(0) as u64
            ))
        };
        let value = if int_at("cache get", &r, 0)? == 1 {
            Some((string_at("cache get", &r, 1)?, ms(2)?, ms(3)?))
        } else {
            None
        };
        let failure = if int_at("cache get", &r, 4)? == 1 {
            Some((string_at("cache get", &r, 5)?, ms(6)?))
        } else {
            None
        };
        Ok(CacheEntry { value, failure })
    }

    /// Stores `value` for `lifetime` or, with `Err((failure, remember))`,
    /// announces a failed refresh and keeps its failure for `remember` — if
    /// `holder` still holds the refresher lease `cache#<name>`. Returns false
    /// when it does not.
    pub async fn cache_store(
        &self,
        name: &str,
        holder: &HolderId,
        outcome: std::result::Result<(&str, Duration), (&str, Duration)>,
    ) -> Result<bool> {
        let lease = self.keys(&format!("cache#{name}"))?;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (value, life, failure, remember) = match outcome {
            Ok((v, life)) => (v, ms(life).max(1), "", 0),
            Err((text, remember)) => ("", 0, text, ms(remember)),
        };
        let call = Call::new(&scripts::CACHE_STORE)
            .key(self.cache_key(name, "value"))
            .key(&lease.lease)
            .key(self.cache_key(name, "failed"))
            .arg(holder.as_str())
            .arg(value)
            .arg(life)
            .arg(&lease.events)
            .arg(failure)
            .arg(remember);
        Ok(int("cache store", &self.call("cache store", call).await?)? == 1)
    }
}

/// One take of a fixed-window quota (`quota_fixed.lua`).
pub struct FixedTake<'a> {
    pub key: &'a str,
    /// The period, and the zone for zoned windows: one set of counters each.
    pub scope: &'a str,
    /// The window's name (its local start, or its start in Unix ms).
    pub window: &'a str,
    pub request: &'a str,
    pub limit: u64,
    pub n: u64,
    /// The window's current span of real time (Unix ms).
    pub from_ms: i64,
    pub until_ms: i64,
    pub expire_at_ms: i64,
    pub remember_ms: u64,
}

/// One take of a sliding-window quota (`quota_sliding.lua`).
pub struct SlidingTake<'a> {
    pub key: &'a str,
    pub scope: &'a str,
    pub request: &'a str,
    pub limit: u64,
    pub n: u64,
    pub period_ms: u64,
    pub remember_ms: u64,
}

/// What a quota script decided.
pub struct QuotaReply {
    pub allowed: bool,
    /// The request id had been counted already; nothing more was taken.
    pub replayed: bool,
    pub remaining: u64,
    /// Sliding: until the oldest live take leaves the window.
    pub reset: Duration,
}

/// What `cache_get.lua` found.
#[derive(Clone, Debug, Default)]
pub struct CacheEntry {
    /// The value, how long it stays valid, and the lifetime it was stored
    /// with (zero if unknown).
    pub value: Option<(String, Duration, Duration)>,
    /// A recent refresh's failure (`budget …` or `fetch …`) and how long it
    /// is kept.
    pub failure: Option<(String, Duration)>,
}
