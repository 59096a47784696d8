//! Quota counters: at most N per period per key (e.g. 3 votes per user per
//! day), decided atomically in Redis.
//!
//! - **Fixed windows** aligned to the period in a time zone: with `per = 1d`
//!   and `Asia/Shanghai` a window is one Shanghai calendar day, midnight to
//!   midnight (23 or 25 hours on daylight-saving days elsewhere). Periods that
//!   are whole days count days since 1970-01-01 in that zone; shorter periods
//!   tile each local day from midnight. Window boundaries follow Redis's clock
//!   (an offset to it is measured once a minute), so hosts with skewed clocks
//!   agree.
//! - **Sliding window** ([`QuotaBuilder::sliding`]): at most N takes in *any*
//!   interval of the period, by Redis's clock; no burst at window edges.
//!
//! Counters expire on their own. A denied take takes nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};

use crate::client::Client;
use crate::error::{Error, Result};

/// Settings of a quota; made by [`Client::quota`].
#[derive(Clone, Debug)]
pub struct QuotaBuilder {
    client: Client,
    limit: u64,
    per: Duration,
    tz: Option<String>,
    sliding: bool,
}

/// What a take decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub allowed: bool,
    /// What is left in the current window after this take.
    pub remaining: u64,
    /// When the window resets (fixed) or the oldest take leaves it (sliding).
    pub reset_at: SystemTime,
}

/// A validated quota; cheap to clone.
#[derive(Clone, Debug)]
pub struct Quota {
    client: Client,
    limit: u64,
    per: Duration,
    tz: TimeZone,
    sliding: bool,
    /// Redis clock minus local clock, and when it was measured.
    offset: std::sync::Arc<Mutex<Option<(i128, Instant)>>>,
}

impl QuotaBuilder {
    pub(crate) fn new(client: Client, limit: u64, per: Duration) -> QuotaBuilder {
        QuotaBuilder {
            client,
            limit,
            per,
            tz: None,
            sliding: false,
        }
    }

    /// The time zone whose calendar the windows follow (IANA name, default UTC).
    pub fn time_zone(mut self, tz: impl Into<String>) -> Self {
        self.tz = Some(tz.into());
        self
    }

    /// A sliding window instead of fixed ones.
    pub fn sliding(mut self) -> Self {
        self.sliding = true;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// [`Error::BadConfig`] for a zero limit, a period under 1 ms or not whole
    /// milliseconds, or an unknown time zone.
    pub fn build(self) -> Result<Quota> {
        if self.limit == 0 {
            return Err(Error::BadConfig {
                what: "limit",
                value: "0".into(),
                rule: "a quota allows at least 1".into(),
            });
        }
        if self.per < Duration::from_millis(1) || !self.per.subsec_nanos().is_multiple_of(1_000_000)
        {
            return Err(Error::BadConfig {
                what: "period",
                value: humantime::format_duration(self.per).to_string(),
                rule: "must be a whole number of milliseconds, at least 1ms".into(),
            });
        }
        let tz = match &self.tz {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| Error::BadConfig {
                what: "time zone",
                value: name.clone(),
                rule: "is not an IANA time zone name (e.g. UTC, Europe/Berlin, Asia/Shanghai)"
                    .into(),
            })?,
        };
        self.client.backend().single("quota")?;
        Ok(Quota {
            client: self.client,
            limit: self.limit,
            per: self.per,
            tz,
            sliding: self.sliding,
            offset: Default::default(),
        })
    }
}

/// The fixed window containing `now` in `tz`: (start, end).
///
/// # Errors
/// [`Error::Protocol`] only for instants outside jiff's range.
pub fn window(now: Timestamp, per: Duration, tz: &TimeZone) -> Result<(Timestamp, Timestamp)> {
    let bad = |e: jiff::Error| Error::Protocol {
        op: "quota window",
        detail: e.to_string(),
    };
    let zoned = now.to_zoned_datetime(tz.clone());
    let day = Duration::from_secs(86_400);
    if per.as_millis().is_multiple_of(day.as_millis()) {
        let days = (per.as_millis() / day.as_millis()) as i64;
        let epoch = jiff::civil::date(1970, 1, 1);
        let since = zoned.date().duration_since(epoch).as_secs() / 86_400;
        let first = since - since.rem_euclid(days);
        let start_date = epoch
            .checked_add(jiff::Span::new().days(first))
            .map_err(bad)?;
        let end_date = start_date
            .checked_add(jiff::Span::new().days(days))
            .map_err(bad)?;
        let start = start_date
            .to_zoned_datetime(tz.clone())
            .map_err(bad)?
            .start_of_day()
            .map_err(bad)?;
        let end = end_date
            .to_zoned_datetime(tz.clone())
            .map_err(bad)?
            .start_of_day()
            .map_err(bad)?;
        return Ok((start.timestamp(), end.timestamp()));
    }
    let midnight: ZonedDateTime = zoned.start_of_day().map_err(bad)?;
    let next_midnight = zoned.tomorrow().map_err(bad)?.start_of_day().map_err(bad)?;
    let from_midnight = now.as_millisecond() - midnight.timestamp().as_millisecond();
    let per_ms = per.as_millis() as i64;
    let start_ms = midnight.timestamp().as_millisecond() + from_midnight / per_ms * per_ms;
    let end_ms = (start_ms + per_ms).min(next_midnight.timestamp().as_millisecond());
    let ts = |ms| Timestamp::from_millisecond(ms).map_err(bad);
    Ok((ts(start_ms)?, ts(end_ms)?))
}

fn to_system(ts: Timestamp) -> SystemTime {
    let ms = ts.as_millisecond();
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH
    }
}

impl Quota {
    /// Redis's clock now, from a measured offset to ours (refreshed each minute).
    async fn redis_now(&self) -> Result<Timestamp> {
        let local = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i128)
                .unwrap_or_default()
        };
        let known = *self.offset.lock().unwrap_or_else(|e| e.into_inner());
        let offset = match known {
            Some((o, at)) if at.elapsed() < Duration::from_secs(60) => o,
            _ => {
                let before = local();
                let redis = self.client.backend().single("quota")?.redis_time().await?;
                let after = local();
                let redis_ms = redis
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i128)
                    .unwrap_or_default();
                let o = redis_ms - (before + after) / 2;
                *self.offset.lock().unwrap_or_else(|e| e.into_inner()) = Some((o, Instant::now()));
                o
            }
        };
        let ms = (local() + offset) as i64;
        Timestamp::from_millisecond(ms).map_err(|e| Error::Protocol {
            op: "quota",
            detail: e.to_string(),
        })
    }

    /// Takes `n` from `key`'s quota, if that many are left.
    ///
    /// # Errors
    /// [`Error::BadName`] for a bad key; Redis errors.
    pub async fn take(&self, key: &str, n: u64) -> Result<Taken> {
        let node = self.client.backend().single("quota")?;
        if self.sliding {
            let (allowed, remaining, reset) =
                node.quota_sliding(key, self.limit, n, self.per).await?;
            return Ok(Taken {
                allowed,
                remaining,
                reset_at: SystemTime::now() + reset,
            });
        }
        let now = self.redis_now().await?;
        let (start, end) = window(now, self.per, &self.tz)?;
        // Counters outlive their window by a minute, for clocks slightly apart.
        let expire_at = end.as_millisecond() + 60_000;
        let (allowed, remaining) = node
            .quota_fixed(
                key,
                start.as_millisecond() as u64,
                self.limit,
                n,
                expire_at.max(0) as u64,
            )
            .await?;
        Ok(Taken {
            allowed,
            remaining,
            reset_at: to_system(end),
        })
    }

    /// The zone the windows follow.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_day_is_the_local_day() {
        let sh = TimeZone::get("Asia/Shanghai").expect("tz");
        let day = Duration::from_secs(86_400);
        // 23:59:59 in Shanghai is still the 29th there.
        let (s, e) = window(ts("2026-11-29T15:59:59Z"), day, &sh).expect("w");
        assert_eq!(s, ts("2026-11-28T16:00:00Z"));
        assert_eq!(e, ts("2026-11-29T16:00:00Z"));
        // One second later the next day begins.
        let (s2, _) = window(ts("2026-11-29T16:00:00Z"), day, &sh).expect("w");
        assert_eq!(s2, e);
    }

    #[test]
    fn daylight_saving_days_are_23_or_25_hours() {
        let ny = TimeZone::get("America/New_York").expect("tz");
        let day = Duration::from_secs(86_400);
        let (s, e) = window(ts("2026-03-08T12:00:00Z"), day, &ny).expect("w");
        assert_eq!(e.as_second() - s.as_second(), 23 * 3600);
        let (s, e) = window(ts("2026-11-01T12:00:00Z"), day, &ny).expect("w");
        assert_eq!(e.as_second() - s.as_second(), 25 * 3600);
    }

    #[test]
    fn short_periods_tile_the_local_day() {
        let utc = TimeZone::UTC;
        let (s, e) = window(ts("2026-11-29T10:17:00Z"), Duration::from_secs(900), &utc).expect("w");
        assert_eq!(s, ts("2026-11-29T10:15:00Z"));
        assert_eq!(e, ts("2026-11-29T10:30:00Z"));
        // A period that does not divide the day ends at midnight.
        let (_, e) = window(
            ts("2026-11-29T23:59:00Z"),
            Duration::from_secs(7 * 3600),
            &utc,
        )
        .expect("w");
        assert_eq!(e, ts("2026-11-30T00:00:00Z"));
    }

    #[test]
    fn multi_day_periods_count_from_1970() {
        let utc = TimeZone::UTC;
        let week = Duration::from_secs(7 * 86_400);
        let (s, e) = window(ts("2026-11-29T10:00:00Z"), week, &utc).expect("w");
        assert_eq!(e.as_second() - s.as_second(), 7 * 86_400);
        assert!(s <= ts("2026-11-29T10:00:00Z") && ts("2026-11-29T10:00:00Z") < e);
    }
}
