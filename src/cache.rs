//! A shared token cache with a single refresher: many processes need a value
//! that expires (an API access token); it lives in Redis, and when it is
//! missing or about to expire **exactly one** process fetches a new one while
//! the others wait for it (woken by an event, not polling) or keep using the
//! old one while it is still valid.
//!
//! - The refresher is whoever holds the lease `cache#<name>` (`#`: no user
//!   lease can take that name); it stores the new
//!   value only while it still holds that lease (`cache_store.lua`), so a
//!   refresher that stalled cannot overwrite a newer value.
//! - Refresh-ahead: when less than `refresh_before` of the value's life is
//!   left, one caller refreshes while everyone else is served the old value.
//!   `refresh_before` is at most half the value's lifetime (a warning says so
//!   once), so that a short-lived value is not fetched again on every call.
//! - Lifetimes run from 1 ms to [`MAX_LIFETIME`] (365 days); a fetch that
//!   reports another counts as failed.
//! - A daily fetch budget (a [`crate::Quota`] of `max_fetches_per_day`) is never
//!   exceeded, whatever the concurrency. The day is the calendar day of the
//!   budget's time zone (UTC by default), so up to 2N fetches can happen
//!   within minutes around its midnight: N before and N after. When the budget
//!   is spent, a still-valid value is served; with none, every caller gets
//!   [`Error::BudgetExhausted`] — the refresher and those waiting for it alike.
//! - A failed fetch stores nothing and wipes nothing. Its failure is kept in
//!   Redis for `retry_failed_after` (10 s by default): meanwhile callers get the
//!   old value if it is still valid, else the failure, and nobody fetches —
//!   a failing upstream sees one fetch per interval, not one per wave of
//!   callers.
//! - The fetched value goes to the caller that fetched it even when storing
//!   it fails: the store is retried for up to `fetch_timeout` while Redis
//!   does not answer.
//! - No part of the value is ever logged, put in an error or published: the
//!   messages of failures are leasehold's own (a fetch closure's error message
//!   is its author's responsibility).
//!
//! Not guaranteed: that the value is still valid when you *use* it. A value
//! is served while it has life left; keep `refresh_before` above the time
//! a request with it takes.
//!
//! ```no_run
//! # async fn fetch_from_the_identity_provider() -> Result<(String, std::time::Duration), String> { unimplemented!() }
//! # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
//! use std::time::Duration;
//!
//! let cache = client
//!     .token_cache()
//!     .refresh_before(Duration::from_secs(300))
//!     .max_fetches_per_day(20)
//!     .build()?;
//! // Run by one process at a time, across all hosts, and only when needed.
//! let token = cache
//!     .get_or_refresh("crm-token", || async { fetch_from_the_identity_provider().await })
//!     .await?;
//! # let _ = token;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::backend::Event;
use crate::backend::chores::CacheEntry;
use crate::error::{Error, Result};
use crate::lease::Leases;
use crate::quota::Quota;

/// The longest lifetime a value may have: 365 days.
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// Longest cache name: the budget's quota key `cache#<name>:fetches` is a
/// lease-style name of at most 200 bytes.
const MAX_NAME_LEN: usize = 200 - "cache#".len() - ":fetches".len();

const JSON_FORM: &str =
    r#"a value of several lines needs the JSON form {"value": "...", "expires_in": SECONDS}"#;

/// Parses what a fetch command printed (the CLI's `leasehold cache get`): a JSON object
/// `{"value": "...", "expires_in": SECONDS}`, or the value on the first line
/// and optionally its lifetime on the second (`7200` or `2h`). Without a
/// lifetime `default` applies.
///
/// # Errors
/// One line saying what is wrong, never quoting any part of the output (it
/// may be a secret): bad JSON, no string `value`, more than two lines, a
/// second line that is not a lifetime, a lifetime of zero or over a year.
// Hidden, not part of the stable API: the CLI's output format, public for
// the binary (`cache get`) and the property tests (tests/props.rs).
#[doc(hidden)]
pub fn parse_fetch_output(
    out: &str,
    default: Duration,
) -> std::result::Result<(String, Duration), String> {
    let trimmed = out.trim();
    if trimmed.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(trimmed).map_err(|e| {
            // serde_json's messages name positions, not content; say only that.
            format!(
                "the fetch command printed JSON that does not parse (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        let value = v
            .get("value")
            .and_then(serde_json::Value::as_str)
            .ok_or("the fetch command's JSON has no string \"value\"")?;
        if value.is_empty() {
            return Err("the fetch command's JSON \"value\" is empty".into());
        }
        let life = match v.get("expires_in") {
            None | Some(serde_json::Value::Null) => default,
            Some(serde_json::Value::Number(n)) => {
                let secs = n.as_f64().unwrap_or(f64::NAN);
                if !secs.is_finite() || secs * 1000.0 < 1.0 || secs > MAX_LIFETIME.as_secs_f64() {
                    return Err(lifetime_rule("\"expires_in\""));
                }
                Duration::from_millis((secs * 1000.0).round() as u64)
            }
            Some(_) => return Err("\"expires_in\" must be a number of seconds".into()),
        };
        return Ok((value.to_string(), life));
    }
    let mut lines = trimmed.lines();
    let value = lines.next().unwrap_or("").trim_end();
    if value.is_empty() {
        return Err("the fetch command printed nothing".into());
    }
    let second = lines.next().map(str::trim);
    if lines.next().is_some() {
        return Err(format!(
            "the fetch command printed more than two lines; {JSON_FORM}"
        ));
    }
    let life = match second {
        None | Some("") => default,
        Some(l) => {
            let parsed = match l.parse::<u64>() {
                Ok(secs) => Some(Duration::from_secs(secs)),
                Err(_) => humantime::parse_duration(l).ok(),
            };
            let Some(life) = parsed else {
                // Not quoted: if it is not a lifetime it may be part of the value.
                return Err(format!(
                    "the second line of the fetch command's output is not a lifetime (e.g. 7200 or 2h); {JSON_FORM}"
                ));
            };
            if life.is_zero() || life > MAX_LIFETIME {
                return Err(lifetime_rule("the lifetime on the second line"));
            }
            life
        }
    };
    Ok((value.to_string(), life))
}

fn lifetime_rule(what: &str) -> String {
    format!("{what} must be more than 0 and at most 365 days (31536000 seconds)")
}

/// Settings of a token cache; made by [`crate::Client::token_cache`].
#[derive(Clone, Debug)]
pub struct TokenCacheBuilder {
    leases: Leases,
    refresh_before: Duration,
    max_fetches_per_day: Option<u64>,
    fetch_timeout: Duration,
    time_zone: Option<String>,
    retry_failed_after: Duration,
}

/// A validated token cache; cheap to clone. Made by
/// [`TokenCacheBuilder::build`]; see the [module docs](self) for what it
/// guarantees.
#[derive(Clone, Debug)]
pub struct TokenCache {
    leases: Leases,
    refresh_before: Duration,
    fetch_timeout: Duration,
    retry_failed_after: Duration,
    budget: Option<(u64, Quota)>,
    /// The refresh-before clamp is reported once per cache, not per call.
    warned: Arc<AtomicBool>,
}

impl TokenCacheBuilder {
    pub(crate) fn new(leases: Leases) -> Self {
        TokenCacheBuilder {
            leases,
            refresh_before: Duration::from_secs(60),
            max_fetches_per_day: None,
            fetch_timeout: Duration::from_secs(30),
            time_zone: None,
            retry_failed_after: Duration::from_secs(10),
        }
    }

    /// Refresh when less than this is left of the value's life (default
    /// 1 min; at most half the value's lifetime is used).
    pub fn refresh_before(mut self, d: Duration) -> Self {
        self.refresh_before = d;
        self
    }

    /// At most this many fetches per calendar day (of [`Self::time_zone`]),
    /// across all processes.
    pub fn max_fetches_per_day(mut self, n: u64) -> Self {
        self.max_fetches_per_day = Some(n);
        self
    }

    /// How long one fetch may take (default 30 s); also the refresher lease's
    /// TTL, and how long a fetched value's store is retried.
    pub fn fetch_timeout(mut self, d: Duration) -> Self {
        self.fetch_timeout = d;
        self
    }

    /// Whose calendar day the fetch budget counts (IANA name, default UTC).
    pub fn time_zone(mut self, tz: impl Into<String>) -> Self {
        self.time_zone = Some(tz.into());
        self
    }

    /// After a failed fetch (or a spent budget), callers get that failure for
    /// this long without fetching again (default 10 s; zero: not at all).
    pub fn retry_failed_after(mut self, d: Duration) -> Self {
        self.retry_failed_after = d;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// [`Error::BadConfig`] for a fetch timeout outside 100 ms – 1 day, a
    /// `retry_failed_after` over an hour, or a bad budget (see
    /// [`crate::QuotaBuilder::build`]).
    pub fn build(self) -> Result<TokenCache> {
        crate::config::LeaseConfig::new(self.fetch_timeout).map_err(|_| Error::BadConfig {
            what: "fetch timeout",
            value: humantime::format_duration(self.fetch_timeout).to_string(),
            rule: "must be between 100ms and 1 day, in whole milliseconds".into(),
        })?;
        if self.retry_failed_after > Duration::from_secs(3600) {
            return Err(Error::BadConfig {
                what: "retry-failed-after",
                value: humantime::format_duration(self.retry_failed_after).to_string(),
                rule: "must be at most 1h".into(),
            });
        }
        self.leases.backend().single("token cache")?;
        let budget = match self.max_fetches_per_day {
            None => None,
            Some(n) => {
                let mut q = crate::quota::QuotaBuilder::new(
                    self.leases.backend().clone(),
                    n,
                    Duration::from_secs(86_400),
                )
                .period(crate::quota::Period::Days(1));
                if let Some(tz) = self.time_zone {
                    q = q.time_zone(tz);
                }
                Some((n, q.build()?))
            }
        };
        Ok(TokenCache {
            leases: self.leases,
            refresh_before: self.refresh_before,
            fetch_timeout: self.fetch_timeout,
            retry_failed_after: self.retry_failed_after,
            budget,
            warned: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// Checks a cache name and calls it a cache name when it is bad.
fn check_name(name: &str) -> Result<()> {
    let bad = |rule: String| Error::BadConfig {
        what: "cache name",
        value: format!("{:?}", name.chars().take(64).collect::<String>()),
        rule,
    };
    if name.len() > MAX_NAME_LEN {
        return Err(bad(format!("is at most {MAX_NAME_LEN} bytes")));
    }
    crate::backend::keys::validate_name(name).map_err(|e| match e {
        Error::BadName { reason, .. } => bad(reason.replace("a lease name", "it")),
        other => other,
    })
}

/// A failure as kept in Redis and published: `budget <limit> <reset>` or
/// `fetch <message>`, so that every process maps it to the same error.
fn failure_text(e: &Error) -> String {
    match e {
        Error::BudgetExhausted { limit, reset, .. } => format!("budget {limit} {reset}"),
        Error::FetchFailed { message, .. } => format!("fetch {message}"),
        other => format!("fetch {other}"),
    }
}

fn failure_error(name: &str, text: &str, ago: Option<Duration>) -> Error {
    let mut parts = text.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("budget"), Some(limit), Some(reset)) => Error::BudgetExhausted {
            name: name.to_string(),
            limit: limit.parse().unwrap_or_default(),
            reset: reset.to_string(),
        },
        _ => {
            let message = text.strip_prefix("fetch ").unwrap_or(text).to_string();
            Error::FetchFailed {
                name: name.to_string(),
                message: match ago {
                    Some(left) => format!(
                        "{message} (this was a recent fetch; the next may run in {})",
                        humantime::format_duration(Duration::from_secs(left.as_secs().max(1)))
                    ),
                    None => message,
                },
            }
        }
    }
}

impl TokenCache {
    /// The cached value of `name`, fetched by `fetch` when missing or about to
    /// expire — by exactly one caller across all processes. `fetch` returns the
    /// value and how long it is valid, or an error message (which must not
    /// contain the value: it is shown to every waiting caller).
    ///
    /// Cancel-safe: a dropped call leaves at most a refresher lease that
    /// expires after `fetch_timeout`.
    ///
    /// # Errors
    /// [`Error::BudgetExhausted`] when the budget is spent and nothing valid
    /// is cached; [`Error::FetchFailed`] when this or a recent fetch failed
    /// and nothing valid is cached; [`Error::BadConfig`] for a bad name;
    /// Redis errors.
    pub async fn get_or_refresh<F, Fut>(&self, name: &str, fetch: F) -> Result<String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(String, Duration), String>>,
    {
        check_name(name)?;
        let node = self.leases.backend().single("token cache")?;
        let lease_name = format!("cache#{name}");
        let mut fetch = Some(fetch);
        let mut sub = None;
        let mut events = None;
        loop {
            let entry = node.cache_get(name).await?;
            if let Some(v) = self.fresh(name, &entry) {
                return Ok(v);
            }
            if let Some(served) = self.after_failure(name, &entry) {
                return served;
            }
            let refresher = self
                .leases
                .lease(lease_name.clone())
                .reserved()
                .ttl(self.fetch_timeout)
                .try_acquire()
                .await?;
            if let Some(lease) = refresher {
                let outcome = self.refresh(name, &lease, &mut fetch, entry).await;
                let _ = lease.release().await;
                return outcome;
            }
            // Someone else is refreshing. The old value is still good meanwhile.
            if let Some((v, left, _)) = entry.value
                && !left.is_zero()
            {
                return Ok(v);
            }
            if sub.is_none() {
                // Subscribe, then look again: no stored event can slip between.
                let s = self.leases.backend().subscribe(&lease_name).await?;
                events = Some(s.events());
                sub = Some(s);
                continue;
            }
            let Some(ev) = events.as_mut() else { continue };
            tokio::select! {
                e = ev.recv() => {
                    if let Event::Failed(text) = e {
                        return Err(failure_error(name, &text, None));
                    }
                }
                // The refresher may have died: its lease expires after fetch_timeout.
                _ = tokio::time::sleep(self.fetch_timeout) => {}
            }
        }
    }

    /// How little life may be left before a value is refreshed: at most
    /// half its lifetime, so that a value that lives less than
    /// `refresh_before` is not fetched again on every call.
    fn threshold(&self, name: &str, life: Duration) -> Duration {
        let half = life / 2;
        if life.is_zero() || self.refresh_before <= half {
            return self.refresh_before;
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "token cache '{name}': the value lives {}, so refresh-before {} would refetch on every call; refreshing when half its life is left",
                humantime::format_duration(life),
                humantime::format_duration(self.refresh_before)
            );
        }
        half
    }

    /// The cached value, if it is valid and not yet due for a refresh.
    fn fresh(&self, name: &str, entry: &CacheEntry) -> Option<String> {
        let (v, left, life) = entry.value.as_ref()?;
        (*left > self.threshold(name, *life)).then(|| v.clone())
    }

    /// A fetch failed (or the budget was found spent) moments ago: serve the
    /// old value while it is valid, else that failure — without fetching.
    fn after_failure(&self, name: &str, entry: &CacheEntry) -> Option<Result<String>> {
        let (text, left) = entry.failure.as_ref()?;
        if let Some((v, valid, _)) = &entry.value
            && !valid.is_zero()
        {
            return Some(Ok(v.clone()));
        }
        Some(Err(failure_error(name, text, Some(*left))))
    }

    async fn refresh<F, Fut>(
        &self,
        name: &str,
        lease: &crate::Lease,
        fetch: &mut Option<F>,
        before: CacheEntry,
    ) -> Result<String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(String, Duration), String>>,
    {
        let node = self.leases.backend().single("token cache")?;
        // Someone may have refreshed, or failed, between our read and our lease.
        let mut entry = node.cache_get(name).await?;
        if entry.value.is_none() {
            entry.value = before.value;
        }
        if let Some(v) = self.fresh(name, &entry) {
            return Ok(v);
        }
        if let Some(served) = self.after_failure(name, &entry) {
            return served;
        }
        let still_valid = entry
            .value
            .filter(|(_, left, _)| !left.is_zero())
            .map(|(v, _, _)| v);
        if let Some((limit, quota)) = &self.budget {
            let taken = quota
                .take_reserved(&format!("cache#{name}:fetches"), 1)
                .await?;
            if !taken.allowed {
                if let Some(v) = still_valid {
                    tracing::warn!(
                        "token cache '{name}': fetch budget spent; serving the cached value while it is valid"
                    );
                    return Ok(v);
                }
                let reset = humantime::format_rfc3339_seconds(taken.reset_at).to_string();
                let e = Error::BudgetExhausted {
                    name: name.to_string(),
                    limit: *limit,
                    reset,
                };
                self.announce_failure(name, lease, &e).await;
                return Err(e);
            }
        }
        let Some(f) = fetch.take() else {
            return Err(Error::FetchFailed {
                name: name.to_string(),
                message: "fetch already used".into(),
            });
        };
        let limit = self.fetch_timeout.saturating_sub(self.fetch_timeout / 10);
        let result = match tokio::time::timeout(limit, f()).await {
            Ok(Ok((_, life))) if life.is_zero() || life > MAX_LIFETIME => Err(format!(
                "the fetched value's lifetime ({}) is not between 1ms and 365 days",
                humantime::format_duration(life.min(MAX_LIFETIME * 2))
            )),
            Ok(r) => r,
            Err(_) => Err(format!(
                "timed out after {}",
                humantime::format_duration(limit)
            )),
        };
        match result {
            Ok((value, life)) => {
                // Say now, not at the next call, if this value's life is too
                // short for refresh-before.
                self.threshold(name, life);
                self.store(name, lease, &value, life).await;
                Ok(value)
            }
            Err(message) => {
                let e = Error::FetchFailed {
                    name: name.to_string(),
                    message,
                };
                self.announce_failure(name, lease, &e).await;
                match still_valid {
                    Some(v) => {
                        tracing::warn!(
                            "token cache '{name}': refresh failed ({e}); serving the cached value while it is valid"
                        );
                        Ok(v)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Stores a fetched value, retrying while Redis does not answer, for up
    /// to `fetch_timeout`: the fetch spent a budget unit, so it is worth
    /// keeping. The caller gets the value whatever happens here.
    async fn store(&self, name: &str, lease: &crate::Lease, value: &str, life: Duration) {
        let Ok(node) = self.leases.backend().single("token cache") else {
            return;
        };
        let deadline = Instant::now() + self.fetch_timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let why = match tokio::time::timeout(
                left,
                node.cache_store(name, lease.holder(), Ok((value, life))),
            )
            .await
            {
                Ok(Ok(true)) => return,
                Ok(Ok(false)) => {
                    tracing::warn!(
                        "token cache '{name}': lost the refresher lease before storing; the value was handed to this caller only"
                    );
                    return;
                }
                Ok(Err(e)) if e.is_unavailable() => e.to_string(),
                Ok(Err(e)) => {
                    tracing::warn!(
                        "token cache '{name}': storing the fetched value failed ({e}); it was handed to this caller only"
                    );
                    return;
                }
                Err(_) => "no answer".to_string(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "token cache '{name}': could not store the fetched value within {} ({why}); it was handed to this caller only",
                    humantime::format_duration(self.fetch_timeout)
                );
                return;
            }
            tracing::debug!("token cache '{name}': storing the fetched value: {why}; retrying");
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Tells those waiting, and those who come within `retry_failed_after`,
    /// that this refresh failed. Best effort: the caller has its answer.
    async fn announce_failure(&self, name: &str, lease: &crate::Lease, e: &Error) {
        let Ok(node) = self.leases.backend().single("token cache") else {
            return;
        };
        let text = failure_text(e);
        let store = node.cache_store(name, lease.holder(), Err((&text, self.retry_failed_after)));
        let _ = tokio::time::timeout(self.fetch_timeout, store).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetched_output_forms() {
        let d = Duration::from_secs(60);
        let ok = |s: &str| parse_fetch_output(s, d);
        assert_eq!(ok("tok\n"), Ok(("tok".into(), d)));
        assert_eq!(
            ok("tok\n7200\n"),
            Ok(("tok".into(), Duration::from_secs(7200)))
        );
        assert_eq!(
            ok("tok\n2h\n"),
            Ok(("tok".into(), Duration::from_secs(7200)))
        );
        assert_eq!(
            ok(r#"{"value":"t","expires_in":30}"#),
            Ok(("t".into(), Duration::from_secs(30)))
        );
        assert_eq!(
            ok(r#"{"value":"a\nb","expires_in":0.5}"#),
            Ok(("a\nb".into(), Duration::from_millis(500)))
        );
        assert!(ok("").is_err());
        assert!(ok("{\"x\":1}").is_err());
    }

    /// Issue 20.9 and 20.12: a second line that is not a lifetime was quoted;
    /// 1e30 panicked; a huge lifetime stored the value without a TTL.
    #[test]
    fn bad_output_is_refused_without_quoting_it() {
        let d = Duration::from_secs(60);
        for out in [
            "s3cret-a\ns3cret-b\n",
            "s3cret-a\ns3cret-b\ns3cret-c\n",
            "-----BEGIN KEY-----\ns3cret\n-----END KEY-----\n",
            "s3cret\n0\n",
            "s3cret\n99999999999999999999\n",
            "s3cret\n400days\n",
            r#"{"value":"s3cret","expires_in":1e30}"#,
            r#"{"value":"s3cret","expires_in":-5}"#,
            r#"{"value":"s3cret","expires_in":0}"#,
            r#"{"value":"s3cret","expires_in":"soon s3cret"}"#,
            r#"{"value":"s3cret", s3cret}"#,
        ] {
            let e = parse_fetch_output(out, d).expect_err(out);
            assert!(!e.contains("s3cret") && !e.contains("KEY"), "{out:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = parse_fetch_output("a\nb\nc\n", d).expect_err("3 lines");
        assert!(e.contains("JSON"), "{e}");
    }
}
