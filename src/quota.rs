//! Quota counters: at most N per period per key (e.g. 3 votes per user per
//! day), decided atomically in Redis.
//!
//! ```no_run
//! # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
//! use std::time::Duration;
//! use leasehold::Period;
//!
//! let votes = client
//!     .quota(3, Duration::from_secs(86_400))
//!     .period(Period::Days(1))          // calendar days…
//!     .time_zone("Asia/Shanghai")       // …of this zone
//!     .build()?;
//! let t = votes.take("votes:user-42", 1).await?;
//! if t.allowed {
//!     println!("counted; {} left", t.remaining);
//! }
//! # Ok(()) }
//! ```
//!
//! Quotas need one logical Redis (a server, Sentinel or Cluster), not a
//! quorum: [`QuotaBuilder::build`] refuses one.
//!
//! # What a window is
//!
//! A [`Period`] is one number and one unit. Fixed windows (the default) are:
//!
//! - **Calendar periods** in the quota's time zone (UTC unless set): `Nd`
//!   is N local days from local midnight (23 or 25 hours on daylight-saving
//!   days); `Nw` is N weeks starting Monday 00:00; `Nmo` is N calendar months
//!   from the 1st at 00:00; `Ny` is N calendar years from January 1st. Blocks
//!   of several units are counted from a fixed origin, so that everyone agrees
//!   on them: days and weeks from Monday 1970-01-05, months from January
//!   (`3mo` are quarters, `6mo` halves), years from year 0 (`2y` starts in
//!   even years).
//! - **Wall-clock periods**: a length that divides a day evenly (`1s`, `15m`,
//!   `1h`, `12h`, `24h`, …) tiles the local day from midnight: `12h` windows
//!   are 00:00–12:00 and 12:00–24:00 on the clock on the wall. On a
//!   daylight-saving day the window that contains the change is longer or
//!   shorter in real time (`12h` on a fall-back day: 13 h then 12 h), and
//!   an hour the clock repeats belongs to the window its clock time names —
//!   one counter for both passes, so no window ever grants more than N.
//! - **Elapsed periods**: any other length (`7h`, `25h`, `36h`, `90m`) means
//!   exactly that much real time, in consecutive windows counted from the
//!   Unix epoch (1970-01-01T00:00:00Z); the time zone plays no part.
//!
//! Periods run from 1 ms to 100 years. Each period (and time zone) has its
//! own counters, so "10 per hour and 100 per day" on one key both hold.
//! Window boundaries follow Redis's clock: the client computes the window
//! from a measured offset to Redis's clock, and the script refuses a window
//! that does not contain Redis's own time, so hosts with skewed clocks agree.
//!
//! The **sliding window** ([`QuotaBuilder::sliding`]) allows at most N in
//! *any* interval of the period, by Redis's clock: no burst at window edges.
//! It needs a fixed length (`d` counts as 24 hours; months and years are
//! refused). Each take is one sorted-set entry carrying its weight, so a take
//! costs O(log n) in the number of live entries, whatever `n` it takes.
//!
//! # Exactness
//!
//! - Counts are exact up to 2^53 − 1 (what Lua's numbers hold exactly); a
//!   larger limit is refused, and so is a take of more than the limit.
//! - Taking 0 only reads: nothing is written.
//! - A denied take takes nothing. Counters expire on their own.
//! - **Retries count once.** Every take carries a request id (random, or the
//!   caller's with [`Quota::take_with_id`]); Redis remembers it next to the
//!   counter, and a take whose id was already counted takes nothing more. A
//!   take that got no answer is retried with the same id until the quota's
//!   timeout; when that runs out the outcome is unknown
//!   ([`Error::QuotaUnknown`]), and only a retry with the same id (within
//!   [`QuotaBuilder::remember_requests`]) finds out without counting twice.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};

use crate::backend::Backend;
use crate::backend::chores::{FixedTake, SlidingTake};
use crate::error::{Error, Result};

/// The largest count Redis's Lua computes exactly (2^53 − 1): the largest limit.
pub const MAX_COUNT: u64 = (1 << 53) - 1;

const DAY_MS: i64 = 86_400_000;
/// 100 years, the longest period: far past any real quota, and short enough
/// that every window stays inside the calendar's range.
const MAX_DAYS: u64 = 36_525;
const MAX_MONTHS: u64 = 1_200;
const MAX_YEARS: u64 = 100;
const PERIOD_HELP: &str = "use a whole number and a unit: ms, s, m, h, d, w, mo or y (e.g. 30s, 15m, 12h, 1d, 1w, 1mo, 1y)";

/// How long a quota's window is; see the [module docs](self) for what each
/// kind of window means.
///
/// Parse one from text with [`Period::parse`] (or `str::parse`); a
/// [`Duration`] converts into [`Period::Length`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Period {
    /// A length of time in whole milliseconds: wall-clock windows if it
    /// divides a day, else elapsed windows counted from the Unix epoch.
    Length(Duration),
    /// N local calendar days (7 days = a week starting Monday).
    Days(u32),
    /// N calendar months, starting on the 1st.
    Months(u32),
    /// N calendar years, starting on January 1st.
    Years(u32),
}

impl From<Duration> for Period {
    fn from(d: Duration) -> Period {
        Period::Length(d)
    }
}

impl std::str::FromStr for Period {
    type Err = Error;

    fn from_str(s: &str) -> Result<Period> {
        Period::parse(s)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Length(d) => write!(f, "{}", humantime::format_duration(*d)),
            Period::Days(n) if n % 7 == 0 => write!(f, "{}w", n / 7),
            Period::Days(n) => write!(f, "{n}d"),
            Period::Months(n) => write!(f, "{n}mo"),
            Period::Years(n) => write!(f, "{n}y"),
        }
    }
}

/// How the windows of a period are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// A length dividing the day: tiles of the local wall clock from midnight.
    Wall(i64),
    /// Any other length: real time, from the Unix epoch.
    Elapsed(i64),
    Days(i64),
    Months(i64),
    Years(i64),
}

impl Period {
    /// Parses `30s`, `15m`, `12h`, `36h`, `1d`, `1w`, `1mo`, `1y` (one whole
    /// number and one unit) and checks the bounds.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the rule that was broken.
    pub fn parse(s: &str) -> Result<Period> {
        parse_period(s).map_err(|rule| Error::BadConfig {
            what: "period",
            value: format!("{s:?}"),
            rule,
        })
    }

    /// The rule this period breaks, if any.
    fn check(self) -> std::result::Result<Period, String> {
        let max = "a period is at most 100 years (36525d, 1200mo, 100y)";
        let zero = "a period is at least 1ms";
        match self {
            Period::Length(d) => {
                if d < Duration::from_millis(1) {
                    return Err(zero.into());
                }
                if !d.subsec_nanos().is_multiple_of(1_000_000) {
                    return Err("a period is a whole number of milliseconds".into());
                }
                if d > Duration::from_secs(MAX_DAYS * 86_400) {
                    return Err(max.into());
                }
            }
            Period::Days(0) | Period::Months(0) | Period::Years(0) => return Err(zero.into()),
            Period::Days(n) if u64::from(n) > MAX_DAYS => return Err(max.into()),
            Period::Months(n) if u64::from(n) > MAX_MONTHS => return Err(max.into()),
            Period::Years(n) if u64::from(n) > MAX_YEARS => return Err(max.into()),
            _ => {}
        }
        Ok(self)
    }

    fn layout(self) -> Layout {
        match self {
            Period::Length(d) => {
                // Bounded by check(): at most 100 years of milliseconds.
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                if DAY_MS % ms == 0 {
                    Layout::Wall(ms)
                } else {
                    Layout::Elapsed(ms)
                }
            }
            Period::Days(n) => Layout::Days(i64::from(n)),
            Period::Months(n) => Layout::Months(i64::from(n)),
            Period::Years(n) => Layout::Years(i64::from(n)),
        }
    }

    /// The period's name in its counters' keys: one per distinct meaning.
    fn key_name(self) -> String {
        match self {
            Period::Length(d) => format!("{}ms", d.as_millis()),
            Period::Days(n) => format!("{n}d"),
            Period::Months(n) => format!("{n}mo"),
            Period::Years(n) => format!("{n}y"),
        }
    }

    /// The length of a sliding window of this period, if it has a fixed one.
    fn sliding_length(self) -> Option<Duration> {
        match self {
            Period::Length(d) => Some(d),
            Period::Days(n) => Some(Duration::from_secs(u64::from(n) * 86_400)),
            Period::Months(_) | Period::Years(_) => None,
        }
    }
}

/// The parser behind [`Period::parse`]; the error is the broken rule.
fn parse_period(s: &str) -> std::result::Result<Period, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(PERIOD_HELP.into());
    }
    let too_long = || "a period is at most 100 years (36525d, 1200mo, 100y)".to_string();
    let n: u64 = t[..digits].parse().map_err(|_| too_long())?;
    let ms = |unit: u64| {
        n.checked_mul(unit)
            .map(|ms| Period::Length(Duration::from_millis(ms)))
            .ok_or_else(too_long)
    };
    let small = |n: u64| u32::try_from(n).map_err(|_| too_long());
    let period = match t[digits..].trim_start() {
        "ms" | "msec" | "msecs" => ms(1)?,
        "s" | "sec" | "secs" | "second" | "seconds" => ms(1_000)?,
        "m" | "min" | "mins" | "minute" | "minutes" => ms(60_000)?,
        "h" | "hr" | "hrs" | "hour" | "hours" => ms(3_600_000)?,
        "d" | "day" | "days" => Period::Days(small(n)?),
        "w" | "week" | "weeks" => Period::Days(small(n.checked_mul(7).ok_or_else(too_long)?)?),
        "mo" | "mon" | "month" | "months" | "M" => Period::Months(small(n)?),
        "y" | "yr" | "year" | "years" => Period::Years(small(n)?),
        "" => return Err(format!("a period needs a unit; {PERIOD_HELP}")),
        _ => return Err(PERIOD_HELP.into()),
    };
    period.check()
}

/// The fixed window of a period that contains an instant.
// Hidden, not part of the stable API: public for the property tests
// (tests/props.rs), which check that windows tile time; see [`window`].
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Window {
    /// Names the window in its counter's key: the local date and time it
    /// starts at (calendar and wall-clock windows; both passes of a repeated
    /// hour share it), or its start in Unix ms (elapsed windows).
    pub id: String,
    /// The span of real time around the instant during which the window is
    /// current: takes in it count against this window's counter. This is its
    /// start (inclusive)…
    pub start: Timestamp,
    /// …and its end (exclusive).
    pub end: Timestamp,
    /// When the counter may go: the last instant that can belong to the
    /// window (a repeated hour may bring it back once more).
    pub last: Timestamp,
}

fn bad_time(e: jiff::Error) -> Error {
    Error::Protocol {
        op: "quota window",
        detail: e.to_string(),
    }
}

fn ts_ms(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(bad_time)
}

/// The first day of month number `i` (months since January of year 0).
fn month_start(i: i64) -> Result<DateTime> {
    let year = i16::try_from(i.div_euclid(12)).map_err(|_| Error::Protocol {
        op: "quota window",
        detail: format!("month {i} is outside the calendar"),
    })?;
    // rem_euclid(12) + 1 is 1..=12.
    let month = (i.rem_euclid(12) + 1) as i8;
    Ok(Date::new(year, month, 1).map_err(bad_time)?.at(0, 0, 0, 0))
}

/// The fixed window of `period` in `tz` that contains `now`; see the
/// [module docs](self) for the layouts.
///
/// # Errors
/// [`Error::Protocol`] only for instants near the ends of the calendar.
// Hidden, not part of the stable API: public for the property tests
// (tests/props.rs); quotas compute their windows with it.
#[doc(hidden)]
pub fn window(now: Timestamp, period: Period, tz: &TimeZone) -> Result<Window> {
    let local = tz.to_datetime(now);
    let (from, to) = match period.layout() {
        Layout::Elapsed(p) => {
            let start = now.as_millisecond().div_euclid(p) * p;
            let end = ts_ms(start + p)?;
            return Ok(Window {
                id: start.to_string(),
                start: ts_ms(start)?,
                end,
                last: end,
            });
        }
        Layout::Wall(p) => {
            let midnight = local.date().at(0, 0, 0, 0);
            // Under a day of milliseconds, so it fits.
            let into = local.duration_since(midnight).as_millis() as i64;
            let k = into / p;
            let at = |ms| {
                midnight
                    .checked_add(SignedDuration::from_millis(ms))
                    .map_err(bad_time)
            };
            (at(k * p)?, at((k + 1) * p)?)
        }
        Layout::Days(n) => {
            // A Monday: blocks of 7 days are weeks starting Monday.
            let origin = jiff::civil::date(1970, 1, 5);
            let day = local
                .date()
                .duration_since(origin)
                .as_secs()
                .div_euclid(86_400);
            let first = day - day.rem_euclid(n);
            let at = |days: i64| -> Result<DateTime> {
                let span = Span::new().try_days(days).map_err(bad_time)?;
                Ok(origin.checked_add(span).map_err(bad_time)?.at(0, 0, 0, 0))
            };
            (at(first)?, at(first + n)?)
        }
        Layout::Months(n) => {
            let month = i64::from(local.year()) * 12 + i64::from(local.month()) - 1;
            let first = month - month.rem_euclid(n);
            (month_start(first)?, month_start(first + n)?)
        }
        Layout::Years(n) => {
            let year = i64::from(local.year());
            let first = year - year.rem_euclid(n);
            (month_start(first * 12)?, month_start((first + n) * 12)?)
        }
    };
    let (start, end) = span_around(now, from, to, tz)?;
    // A clock set back may show the window's times again after `end`: the
    // later reading of its last instant is when that would end.
    let again = tz.to_ambiguous_timestamp(to).later().map_err(bad_time)?;
    Ok(Window {
        id: from.to_string(),
        start,
        end,
        last: end.max(again),
    })
}

/// The longest span of real time around `now` in which the clock of `tz`
/// shows a time in `[from, to)` (it does at `now`). Walks the time zone's
/// transitions, so that a boundary in a skipped hour ends the window when
/// the clock jumps, and a repeated hour extends it.
fn span_around(
    now: Timestamp,
    from: DateTime,
    to: DateTime,
    tz: &TimeZone,
) -> Result<(Timestamp, Timestamp)> {
    let inside = |t: Timestamp| {
        let c = tz.to_datetime(t);
        from <= c && c < to
    };
    let ns = SignedDuration::from_nanos(1);
    // 100 years have about 200 transitions; more means a broken zone.
    const STEPS: usize = 1_000;
    let mut end = None;
    let mut t = now;
    for _ in 0..STEPS {
        let guess = tz.to_offset(t).to_timestamp(to).map_err(bad_time)?;
        match tz.following(t).next() {
            Some(tr) if tr.timestamp() <= guess => {
                if inside(tr.timestamp()) {
                    t = tr.timestamp();
                } else {
                    end = Some(tr.timestamp());
                    break;
                }
            }
            _ => {
                end = Some(guess);
                break;
            }
        }
    }
    let mut start = None;
    let mut t = now;
    for _ in 0..STEPS {
        let guess = tz.to_offset(t).to_timestamp(from).map_err(bad_time)?;
        let at_or_before = t.checked_add(ns).map_err(bad_time)?;
        match tz.preceding(at_or_before).next() {
            Some(tr) if tr.timestamp() > guess => {
                let before = tr.timestamp().checked_sub(ns).map_err(bad_time)?;
                if inside(before) {
                    t = before;
                } else {
                    start = Some(tr.timestamp());
                    break;
                }
            }
            _ => {
                start = Some(guess);
                break;
            }
        }
    }
    match (start, end) {
        (Some(s), Some(e)) => Ok((s, e)),
        _ => Err(Error::Protocol {
            op: "quota window",
            detail: "the time zone changes its offset too often".into(),
        }),
    }
}

/// Settings of a quota; made by [`crate::Client::quota`].
#[derive(Clone, Debug)]
pub struct QuotaBuilder {
    backend: Backend,
    limit: u64,
    period: Period,
    tz: Option<String>,
    sliding: bool,
    timeout: Duration,
    remember: Duration,
}

/// What a take decided.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Taken {
    /// The take counted; false: denied, and nothing was taken. A read
    /// (`n = 0`) is always allowed.
    pub allowed: bool,
    /// What is left in the current window after this take.
    pub remaining: u64,
    /// When the window resets (fixed) or the oldest take leaves it (sliding).
    pub reset_at: SystemTime,
    /// The request id had been counted already — by an earlier call with the
    /// same id ([`Quota::take_with_id`]) or by an attempt of this call whose
    /// answer was lost: nothing more was taken, and `allowed` is true.
    pub replayed: bool,
}

/// A validated quota; cheap to clone. Made by [`QuotaBuilder::build`].
///
/// Every process that counts against the same key must use the same limit,
/// period, time zone and kind of window: each combination has counters of
/// its own.
#[derive(Clone, Debug)]
pub struct Quota {
    backend: Backend,
    limit: u64,
    period: Period,
    tz: TimeZone,
    /// The zone's name in counter keys (`UTC` by default).
    tz_name: String,
    sliding: Option<Duration>,
    timeout: Duration,
    remember: Duration,
    /// Redis clock minus local clock, and when it was measured.
    offset: Arc<Mutex<Option<(i128, Instant)>>>,
}

impl QuotaBuilder {
    pub(crate) fn new(backend: Backend, limit: u64, per: Duration) -> QuotaBuilder {
        QuotaBuilder {
            backend,
            limit,
            period: Period::Length(per),
            tz: None,
            sliding: false,
            timeout: Duration::from_secs(5),
            remember: Duration::from_secs(600),
        }
    }

    /// A calendar period instead of the length given to [`crate::Client::quota`]
    /// (e.g. `Period::Months(1)`, or `"1w".parse()?`).
    pub fn period(mut self, period: Period) -> Self {
        self.period = period;
        self
    }

    /// The time zone whose calendar the windows follow (IANA name, default UTC).
    pub fn time_zone(mut self, tz: impl Into<String>) -> Self {
        self.tz = Some(tz.into());
        self
    }

    /// A sliding window instead of fixed ones: at most N in *any* interval
    /// of the period (needs a fixed length: not months or years).
    pub fn sliding(mut self) -> Self {
        self.sliding = true;
        self
    }

    /// How long one take may keep trying (default 5 s). A take that got no
    /// answer is retried with its request id (so it counts once) until then;
    /// after that its outcome is unknown ([`Error::QuotaUnknown`]).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// How long Redis remembers a request id given to [`Quota::take_with_id`]
    /// (default 10 min): a retry with the same id within that time counts once.
    pub fn remember_requests(mut self, d: Duration) -> Self {
        self.remember = d;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// [`Error::BadConfig`] for a limit of 0 or above [`MAX_COUNT`], a period
    /// outside 1 ms – 100 years or not in whole milliseconds, a sliding window
    /// of months or years, an unknown time zone, a timeout outside
    /// 100 ms – 10 min, or requests remembered for less than the timeout or
    /// more than a day.
    pub fn build(self) -> Result<Quota> {
        if self.limit == 0 || self.limit > MAX_COUNT {
            return Err(Error::BadConfig {
                what: "limit",
                value: self.limit.to_string(),
                rule: format!(
                    "a quota allows from 1 to {MAX_COUNT} (2^53 - 1, the largest count Redis's Lua computes exactly)"
                ),
            });
        }
        let period = self.period.check().map_err(|rule| Error::BadConfig {
            what: "period",
            value: self.period.to_string(),
            rule,
        })?;
        let sliding = match (self.sliding, period.sliding_length()) {
            (false, _) => None,
            (true, Some(d)) => Some(d),
            (true, None) => {
                return Err(Error::BadConfig {
                    what: "period",
                    value: period.to_string(),
                    rule: "a sliding window needs a fixed length (ms, s, m, h, d or w); a month or a year has none".into(),
                });
            }
        };
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(600) {
            return Err(Error::BadConfig {
                what: "quota timeout",
                value: humantime::format_duration(self.timeout).to_string(),
                rule: "must be between 100ms and 10m".into(),
            });
        }
        if self.remember < self.timeout || self.remember > Duration::from_secs(86_400) {
            return Err(Error::BadConfig {
                what: "request memory",
                value: humantime::format_duration(self.remember).to_string(),
                rule: "must be at least the quota's timeout and at most 1 day".into(),
            });
        }
        let (tz, tz_name) = match &self.tz {
            None => (TimeZone::UTC, "UTC".to_string()),
            Some(name) => {
                let tz = TimeZone::get(name).map_err(|_| Error::BadConfig {
                    what: "time zone",
                    value: name.clone(),
                    rule: "is not an IANA time zone name (e.g. UTC, Europe/Berlin, Asia/Shanghai)"
                        .into(),
                })?;
                let canonical = tz.iana_name().unwrap_or(name).to_string();
                (tz, canonical)
            }
        };
        self.backend.single("quota")?;
        Ok(Quota {
            backend: self.backend,
            limit: self.limit,
            period,
            tz,
            tz_name,
            sliding,
            timeout: self.timeout,
            remember: self.remember,
            offset: Default::default(),
        })
    }
}

fn to_system(ts: Timestamp) -> SystemTime {
    let ms = ts.as_millisecond();
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH
    }
}

/// 128 random bits in hex: a request id nobody else has, for
/// [`Quota::take_with_id`] when the caller must know the id before the take
/// (to log it, or to retry after [`Error::QuotaUnknown`]).
pub fn random_id() -> String {
    let id = crate::token::HolderId::generate();
    id.as_str()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Checks a quota key and says "quota key", not "lease name", when it is bad.
fn check_key(what: &'static str, key: &str) -> Result<()> {
    crate::backend::keys::validate_name(key).map_err(|e| match e {
        Error::BadName { name, reason } => Error::BadConfig {
            what,
            value: format!("{name:?}"),
            rule: reason.replace("a lease name", "it"),
        },
        other => other,
    })
}

/// The reply of one attempt.
enum Attempt {
    Done(Taken),
    /// The window computed locally does not contain Redis's time (ms).
    WrongWindow(i64),
}

impl Quota {
    fn local_ms() -> i128 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i128)
            .unwrap_or_default()
    }

    /// Redis's clock now, from a measured offset to ours (refreshed each minute).
    async fn redis_now(&self) -> Result<Timestamp> {
        let known = *self.offset.lock().unwrap_or_else(|e| e.into_inner());
        let offset = match known {
            Some((o, at)) if at.elapsed() < Duration::from_secs(60) => o,
            _ => {
                let before = Self::local_ms();
                let redis = self.backend.single("quota")?.redis_time().await?;
                let after = Self::local_ms();
                let redis_ms = redis
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i128)
                    .unwrap_or_default();
                let o = redis_ms - (before + after) / 2;
                self.set_offset(o);
                o
            }
        };
        ts_ms((Self::local_ms() + offset) as i64)
    }

    fn set_offset(&self, o: i128) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) = Some((o, Instant::now()));
    }

    /// Takes `n` from `key`'s quota, if that many are left; `n = 0` only reads.
    /// A denied take is `Ok` with [`Taken::allowed`] false.
    ///
    /// Retried under a random request id until the quota's timeout, so it
    /// counts once however many attempts reach Redis.
    ///
    /// Not cancel-safe: a dropped call may or may not have counted, and its
    /// request id is lost; use [`Quota::take_with_id`] to be able to retry.
    ///
    /// # Errors
    /// [`Error::BadConfig`] for a bad key or `n` above the limit;
    /// [`Error::QuotaUnknown`] when no attempt was answered in time; Redis
    /// errors that a retry cannot mend.
    pub async fn take(&self, key: &str, n: u64) -> Result<Taken> {
        check_key("quota key", key)?;
        self.take_reserved(key, n).await
    }

    /// [`Quota::take`] for leasehold's own keys (`cache#<name>:fetches`),
    /// which no user key can name.
    pub(crate) async fn take_reserved(&self, key: &str, n: u64) -> Result<Taken> {
        // Only this call's own attempts use the id: remember it a little
        // longer than they can arrive.
        let remember = (self.timeout * 2 + Duration::from_secs(60)).min(self.remember);
        let mut t = self.take_inner(key, n, &random_id(), remember).await?;
        // The id was this call's alone: a replay was one of its own attempts.
        t.replayed = false;
        Ok(t)
    }

    /// Like [`Quota::take`], under the caller's request id: a retry with the
    /// same id (from any process, within [`QuotaBuilder::remember_requests`])
    /// takes nothing more and answers allowed with `replayed` set.
    ///
    /// Cancel-safe in that sense: after a dropped call (or
    /// [`Error::QuotaUnknown`]), call again with the same id.
    ///
    /// # Errors
    /// As [`Quota::take`], and [`Error::BadConfig`] for an id that is not
    /// 1–100 bytes of letters, digits and `- _ . : / @ + =`.
    pub async fn take_with_id(&self, key: &str, n: u64, request_id: &str) -> Result<Taken> {
        if request_id.len() > 100 {
            return Err(Error::BadConfig {
                what: "request id",
                value: format!("{:?}…", request_id.chars().take(64).collect::<String>()),
                rule: "is at most 100 bytes".into(),
            });
        }
        check_key("request id", request_id)?;
        check_key("quota key", key)?;
        self.take_inner(key, n, request_id, self.remember).await
    }

    async fn take_inner(
        &self,
        key: &str,
        n: u64,
        request: &str,
        remember: Duration,
    ) -> Result<Taken> {
        if n > self.limit {
            return Err(Error::BadConfig {
                what: "count",
                value: n.to_string(),
                rule: format!(
                    "is more than the limit of {}: such a take could never be allowed",
                    self.limit
                ),
            });
        }
        let deadline = Instant::now() + self.timeout;
        // Each attempt gets a share of the timeout, so that a stalled one
        // leaves time for a retry.
        let per_attempt = (self.timeout / 3).max(Duration::from_millis(100));
        let mut pause = Duration::from_millis(25);
        let mut redis_now = None;
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::QuotaUnknown {
                    key: key.to_string(),
                    after: self.timeout,
                    last: last.unwrap_or_else(|| "no answer".into()),
                    request: request.to_string(),
                    remember,
                });
            }
            let attempt = self.attempt(key, n, request, remember, redis_now.take());
            match tokio::time::timeout(per_attempt.min(left), attempt).await {
                Ok(Ok(Attempt::Done(t))) => return Ok(t),
                Ok(Ok(Attempt::WrongWindow(now_ms))) => {
                    // Our estimate of Redis's clock was off: use its own.
                    self.set_offset(i128::from(now_ms) - Self::local_ms());
                    redis_now = Some(now_ms);
                    continue;
                }
                Ok(Err(e)) if e.is_unavailable() => last = Some(e.to_string()),
                Ok(Err(e)) => return Err(e),
                Err(_) => last = Some(format!("no answer within {per_attempt:?}")),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The counters' key scope: the period, and the zone for zoned windows.
    fn scope(&self) -> String {
        match (self.sliding, self.period.layout()) {
            (Some(d), _) => format!("sliding:{}ms", d.as_millis()),
            (None, Layout::Elapsed(_)) => self.period.key_name(),
            (None, _) => format!("{}@{}", self.period.key_name(), self.tz_name),
        }
    }

    async fn attempt(
        &self,
        key: &str,
        n: u64,
        request: &str,
        remember: Duration,
        redis_now: Option<i64>,
    ) -> Result<Attempt> {
        let node = self.backend.single("quota")?;
        let scope = self.scope();
        let remember_ms = u64::try_from(remember.as_millis()).unwrap_or(u64::MAX);
        if let Some(period) = self.sliding {
            let r = node
                .quota_sliding(&SlidingTake {
                    key,
                    scope: &scope,
                    request,
                    limit: self.limit,
                    n,
                    period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
                    remember_ms,
                })
                .await?;
            return Ok(Attempt::Done(Taken {
                allowed: r.allowed,
                remaining: r.remaining,
                // Bounded by the period, unless Redis answered nonsense.
                reset_at: SystemTime::now()
                    .checked_add(r.reset.min(period))
                    .unwrap_or(UNIX_EPOCH),
                replayed: r.replayed,
            }));
        }
        let now = match redis_now {
            Some(ms) => ts_ms(ms)?,
            None => self.redis_now().await?,
        };
        let w = window(now, self.period, &self.tz)?;
        // Counters outlive their window by a minute, for clocks slightly apart.
        let expire_at = w.last.as_millisecond().saturating_add(60_000);
        let r = node
            .quota_fixed(&FixedTake {
                key,
                scope: &scope,
                window: &w.id,
                request,
                limit: self.limit,
                n,
                from_ms: w.start.as_millisecond(),
                until_ms: w.end.as_millisecond(),
                expire_at_ms: expire_at,
                remember_ms,
            })
            .await?;
        Ok(match r {
            Err(now_ms) => Attempt::WrongWindow(now_ms),
            Ok(r) => Attempt::Done(Taken {
                allowed: r.allowed,
                remaining: r.remaining,
                reset_at: to_system(w.end),
                replayed: r.replayed,
            }),
        })
    }

    /// The zone the windows follow.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The period.
    pub fn period(&self) -> Period {
        self.period
    }

    /// The limit per period.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn p(s: &str) -> Period {
        Period::parse(s).expect("period")
    }

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).expect("tz")
    }

    /// The windows met walking through [from, to) in steps of `step`.
    fn windows(from: &str, to: &str, step: i64, period: Period, tz: &TimeZone) -> Vec<Window> {
        let mut out: Vec<Window> = Vec::new();
        let (mut t, end) = (ts(from).as_millisecond(), ts(to).as_millisecond());
        while t < end {
            let w = window(ts_ms(t).expect("t"), period, tz).expect("window");
            assert!(w.start <= ts_ms(t).expect("t") && ts_ms(t).expect("t") < w.end);
            if out.last() != Some(&w) {
                out.push(w);
            }
            t += step;
        }
        out
    }

    #[test]
    fn a_day_is_the_local_day() {
        let sh = tz("Asia/Shanghai");
        // 23:59:59 in Shanghai is still the 29th there.
        let w = window(ts("2026-11-29T15:59:59Z"), p("1d"), &sh).expect("w");
        assert_eq!(w.start, ts("2026-11-28T16:00:00Z"));
        assert_eq!(w.end, ts("2026-11-29T16:00:00Z"));
        assert_eq!(w.id, "2026-11-29T00:00:00");
        // One second later the next day begins.
        let w2 = window(ts("2026-11-29T16:00:00Z"), p("1d"), &sh).expect("w");
        assert_eq!(w2.start, w.end);
        // 24h is the same local day.
        let w3 = window(ts("2026-11-29T15:59:59Z"), p("24h"), &sh).expect("w");
        assert_eq!((w3.start, w3.end), (w.start, w.end));
    }

    #[test]
    fn daylight_saving_days_are_23_or_25_hours() {
        let ny = tz("America/New_York");
        let w = window(ts("2026-03-08T12:00:00Z"), p("1d"), &ny).expect("w");
        assert_eq!(w.end.as_second() - w.start.as_second(), 23 * 3600);
        let w = window(ts("2026-11-01T12:00:00Z"), p("1d"), &ny).expect("w");
        assert_eq!(w.end.as_second() - w.start.as_second(), 25 * 3600);
    }

    #[test]
    fn short_periods_tile_the_local_day() {
        let w = window(ts("2026-11-29T10:17:00Z"), p("15m"), &TimeZone::UTC).expect("w");
        assert_eq!(w.start, ts("2026-11-29T10:15:00Z"));
        assert_eq!(w.end, ts("2026-11-29T10:30:00Z"));
        let w = window(ts("2026-11-29T10:17:00Z"), p("15m"), &tz("Asia/Kolkata")).expect("w");
        assert_eq!(w.start, ts("2026-11-29T10:15:00Z"));
    }

    /// Issue 20.6: a fall-back day with 12h windows gave 11 h, 12 h and 1 h
    /// windows, the last granting an extra N.
    #[test]
    fn twelve_hour_windows_on_daylight_saving_days_follow_the_wall_clock() {
        let ny = tz("America/New_York");
        // Fall back on 2026-11-01 (EDT -4 → EST -5 at 06:00Z).
        let ws = windows(
            "2026-11-01T04:00:00Z",
            "2026-11-02T05:00:00Z",
            60_000,
            p("12h"),
            &ny,
        );
        let spans: Vec<(String, i64)> = ws
            .iter()
            .map(|w| {
                (
                    w.id.clone(),
                    (w.end.as_second() - w.start.as_second()) / 3600,
                )
            })
            .collect();
        assert_eq!(
            spans,
            vec![
                ("2026-11-01T00:00:00".to_string(), 13),
                ("2026-11-01T12:00:00".to_string(), 12)
            ]
        );
        // Spring forward on 2026-03-08 (at 07:00Z): 11 h then 12 h.
        let ws = windows(
            "2026-03-08T05:00:00Z",
            "2026-03-09T04:00:00Z",
            60_000,
            p("12h"),
            &ny,
        );
        let hours: Vec<i64> = ws
            .iter()
            .map(|w| (w.end.as_second() - w.start.as_second()) / 3600)
            .collect();
        assert_eq!(hours, vec![11, 12]);
    }

    #[test]
    fn a_repeated_hour_shares_its_windows_counter() {
        let ny = tz("America/New_York");
        // 01:20 EDT and 01:20 EST: the same 15-minute window on the clock.
        let a = window(ts("2026-11-01T05:20:00Z"), p("15m"), &ny).expect("w");
        let b = window(ts("2026-11-01T06:20:00Z"), p("15m"), &ny).expect("w");
        assert_eq!(a.id, b.id);
        assert_eq!(
            (a.start, a.end),
            (ts("2026-11-01T05:15:00Z"), ts("2026-11-01T05:30:00Z"))
        );
        assert_eq!(
            (b.start, b.end),
            (ts("2026-11-01T06:15:00Z"), ts("2026-11-01T06:30:00Z"))
        );
        // The counter lives until the second pass is over.
        assert_eq!(a.last, ts("2026-11-01T06:30:00Z"));
        // An hour window takes both passes: two hours of real time.
        let h = window(ts("2026-11-01T05:20:00Z"), p("1h"), &ny).expect("w");
        assert_eq!(
            (h.start, h.end),
            (ts("2026-11-01T05:00:00Z"), ts("2026-11-01T07:00:00Z"))
        );
    }

    #[test]
    fn a_boundary_in_a_skipped_hour_ends_the_window_at_the_jump() {
        let ny = tz("America/New_York");
        // 45m windows: 01:30–02:15 ends when the clock jumps from 02:00 to 03:00.
        let w = window(ts("2026-03-08T06:40:00Z"), p("45m"), &ny).expect("w");
        assert_eq!(w.id, "2026-03-08T01:30:00");
        assert_eq!(w.end, ts("2026-03-08T07:00:00Z"));
        let next = window(ts("2026-03-08T07:00:00Z"), p("45m"), &ny).expect("w");
        assert_eq!(next.id, "2026-03-08T03:00:00");
    }

    /// Issue 20.1: periods over a day that are not whole days became one day.
    #[test]
    fn months_years_and_long_hours_are_what_they_say() {
        let sh = tz("Asia/Shanghai");
        let now = ts("2026-11-29T10:00:00Z");
        let m = window(now, p("1mo"), &sh).expect("w");
        assert_eq!(m.start, ts("2026-10-31T16:00:00Z"));
        assert_eq!(m.end, ts("2026-11-30T16:00:00Z"));
        let q = window(now, p("3mo"), &sh).expect("w");
        assert_eq!(q.id, "2026-10-01T00:00:00");
        assert_eq!(q.end, ts("2026-12-31T16:00:00Z"));
        let y = window(now, p("1y"), &TimeZone::UTC).expect("w");
        assert_eq!(
            (y.start, y.end),
            (ts("2026-01-01T00:00:00Z"), ts("2027-01-01T00:00:00Z"))
        );
        for hours in [25, 36, 7] {
            let w = window(now, Period::Length(Duration::from_secs(hours * 3600)), &sh).expect("w");
            assert_eq!(w.end.as_second() - w.start.as_second(), hours as i64 * 3600);
            assert_eq!(w.start.as_second() % (hours as i64 * 3600), 0);
            assert!(w.start <= now && now < w.end);
        }
    }

    /// Issue 20.6: `7d` weeks started on Thursday (days counted from 1970).
    #[test]
    fn weeks_start_on_monday() {
        let utc = TimeZone::UTC;
        // 2026-11-29 is a Sunday.
        for per in ["7d", "1w"] {
            let w = window(ts("2026-11-29T10:00:00Z"), p(per), &utc).expect("w");
            assert_eq!(
                (w.start, w.end),
                (ts("2026-11-23T00:00:00Z"), ts("2026-11-30T00:00:00Z"))
            );
        }
        let w = window(ts("2026-11-30T00:00:00Z"), p("1w"), &utc).expect("w");
        assert_eq!(w.start, ts("2026-11-30T00:00:00Z"));
    }

    #[test]
    fn periods_parse_and_refuse() {
        assert_eq!(p("1d"), Period::Days(1));
        assert_eq!(p("2w"), Period::Days(14));
        assert_eq!(p(" 36h "), Period::Length(Duration::from_secs(36 * 3600)));
        assert_eq!(p("1month"), Period::Months(1));
        assert_eq!(p("3 mo"), Period::Months(3));
        assert_eq!(p("1y"), Period::Years(1));
        assert_eq!(p("250ms"), Period::Length(Duration::from_millis(250)));
        for bad in [
            "",
            "d",
            "1",
            "0s",
            "1.5h",
            "-1d",
            "1h30m",
            "20000000d",
            "101y",
            "1x",
            "99999999999999999999999s",
            "18446744073709551615w",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }
}
