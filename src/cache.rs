//! A shared token cache with a single refresher: many processes need a value
//! that expires (an API access token); it lives in Redis, and when it is
//! missing or about to expire **exactly one** process fetches a new one while
//! the others wait for it (woken by an event, not polling) or keep using the
//! old one while it is still valid.
//!
//! - The refresher is whoever holds the lease `cache:<name>`; it stores the new
//!   value only while it still holds that lease (`cache_store.lua`), so a
//!   refresher that stalled cannot overwrite a newer value.
//! - Refresh-ahead: when less than `refresh_before` of the value's life is
//!   left, one caller refreshes while everyone else is served the old value.
//! - A daily fetch budget (a [`crate::Quota`] of `max_fetches_per_day`) is never
//!   exceeded, whatever the concurrency. When it is spent, a still-valid value
//!   is served; with none, callers get [`Error::BudgetExhausted`].
//! - A failed fetch stores nothing and wipes nothing: the refresher gets the old
//!   value if it is still valid, else the error, and so do those waiting for it.
//! - The value is never logged.

use std::time::Duration;

use crate::backend::Event;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::quota::Quota;

/// Settings of a token cache; made by [`Client::token_cache`].
#[derive(Clone, Debug)]
pub struct TokenCacheBuilder {
    client: Client,
    refresh_before: Duration,
    max_fetches_per_day: Option<u64>,
    fetch_timeout: Duration,
    time_zone: Option<String>,
}

/// A validated token cache; cheap to clone.
#[derive(Clone, Debug)]
pub struct TokenCache {
    client: Client,
    refresh_before: Duration,
    fetch_timeout: Duration,
    budget: Option<(u64, Quota)>,
}

impl TokenCacheBuilder {
    pub(crate) fn new(client: Client) -> Self {
        TokenCacheBuilder {
            client,
            refresh_before: Duration::from_secs(60),
            max_fetches_per_day: None,
            fetch_timeout: Duration::from_secs(30),
            time_zone: None,
        }
    }

    /// Refresh when less than this is left of the value's life (default 1 min).
    pub fn refresh_before(mut self, d: Duration) -> Self {
        self.refresh_before = d;
        self
    }

    /// At most this many fetches per day, across all processes.
    pub fn max_fetches_per_day(mut self, n: u64) -> Self {
        self.max_fetches_per_day = Some(n);
        self
    }

    /// How long one fetch may take (default 30 s); also the refresher lease's TTL.
    pub fn fetch_timeout(mut self, d: Duration) -> Self {
        self.fetch_timeout = d;
        self
    }

    /// Whose calendar day the fetch budget counts (IANA name, default UTC).
    pub fn time_zone(mut self, tz: impl Into<String>) -> Self {
        self.time_zone = Some(tz.into());
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<TokenCache> {
        crate::config::LeaseConfig::new(self.fetch_timeout).map_err(|_| Error::BadConfig {
            what: "fetch timeout",
            value: humantime::format_duration(self.fetch_timeout).to_string(),
            rule: "must be between 100ms and 1 day, in whole milliseconds".into(),
        })?;
        self.client.backend().single("token cache")?;
        let budget = match self.max_fetches_per_day {
            None => None,
            Some(n) => {
                let mut q = self.client.quota(n, Duration::from_secs(86_400));
                if let Some(tz) = self.time_zone {
                    q = q.time_zone(tz);
                }
                Some((n, q.build()?))
            }
        };
        Ok(TokenCache {
            client: self.client,
            refresh_before: self.refresh_before,
            fetch_timeout: self.fetch_timeout,
            budget,
        })
    }
}

impl TokenCache {
    /// The cached value of `name`, fetched by `fetch` when missing or about to
    /// expire — by exactly one caller across all processes. `fetch` returns the
    /// value and how long it is valid, or an error message.
    ///
    /// Cancel-safe: a dropped call leaves at most a refresher lease that
    /// expires after `fetch_timeout`.
    pub async fn get_or_refresh<F, Fut>(&self, name: &str, fetch: F) -> Result<String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(String, Duration), String>>,
    {
        let node = self.client.backend().single("token cache")?;
        let lease_name = format!("cache:{name}");
        let mut fetch = Some(fetch);
        let mut sub = None;
        let mut events = None;
        loop {
            let current = node.cache_get(name).await?;
            if let Some((v, left)) = &current
                && *left > self.refresh_before
            {
                return Ok(v.clone());
            }
            let refresher = self
                .client
                .lease(lease_name.clone())
                .ttl(self.fetch_timeout)
                .try_acquire()
                .await?;
            if let Some(lease) = refresher {
                let outcome = self.refresh(name, &lease, &mut fetch, current).await;
                let _ = lease.release().await;
                return outcome;
            }
            // Someone else is refreshing. The old value is still good meanwhile.
            if let Some((v, left)) = current
                && !left.is_zero()
            {
                return Ok(v);
            }
            if sub.is_none() {
                // Subscribe, then look again: no stored event can slip between.
                let s = self.client.backend().subscribe(&lease_name).await?;
                events = Some(s.events());
                sub = Some(s);
                continue;
            }
            let Some(ev) = events.as_mut() else { continue };
            tokio::select! {
                e = ev.recv() => {
                    if let Event::Failed(message) = e {
                        return Err(Error::FetchFailed { name: name.to_string(), message });
                    }
                }
                // The refresher may have died: its lease expires after fetch_timeout.
                _ = tokio::time::sleep(self.fetch_timeout) => {}
            }
        }
    }

    async fn refresh<F, Fut>(
        &self,
        name: &str,
        lease: &crate::Lease,
        fetch: &mut Option<F>,
        before: Option<(String, Duration)>,
    ) -> Result<String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(String, Duration), String>>,
    {
        let node = self.client.backend().single("token cache")?;
        // Someone may have refreshed between our read and our lease.
        let current = node.cache_get(name).await?.or(before);
        if let Some((v, left)) = &current
            && *left > self.refresh_before
        {
            return Ok(v.clone());
        }
        let still_valid = current.filter(|(_, left)| !left.is_zero()).map(|(v, _)| v);
        if let Some((limit, quota)) = &self.budget {
            let taken = quota.take(&format!("cache:{name}:fetches"), 1).await?;
            if !taken.allowed {
                if let Some(v) = still_valid {
                    tracing::warn!(
                        "token cache '{name}': fetch budget spent; serving the cached value while it is valid"
                    );
                    return Ok(v);
                }
                let reset = humantime::format_rfc3339_seconds(taken.reset_at).to_string();
                let message = format!("the budget of {limit} fetches per day is spent");
                let _ = node.cache_store(name, lease.holder(), Err(&message)).await;
                return Err(Error::BudgetExhausted {
                    name: name.to_string(),
                    limit: *limit,
                    reset,
                });
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
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {limit:?}")),
        };
        match result {
            Ok((value, life)) if !life.is_zero() => {
                if !node
                    .cache_store(name, lease.holder(), Ok((&value, life)))
                    .await?
                {
                    tracing::warn!(
                        "token cache '{name}': lost the refresher lease before storing; the value was not cached"
                    );
                }
                Ok(value)
            }
            Ok(_) => {
                let message = "the fetched value has no lifetime".to_string();
                let _ = node.cache_store(name, lease.holder(), Err(&message)).await;
                Err(Error::FetchFailed {
                    name: name.to_string(),
                    message,
                })
            }
            Err(message) => {
                let _ = node.cache_store(name, lease.holder(), Err(&message)).await;
                match still_valid {
                    Some(v) => {
                        tracing::warn!(
                            "token cache '{name}': refresh failed ({message}); serving the cached value while it is valid"
                        );
                        Ok(v)
                    }
                    None => Err(Error::FetchFailed {
                        name: name.to_string(),
                        message,
                    }),
                }
            }
        }
    }
}
