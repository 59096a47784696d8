//! The protocol: what is sent to Redis and what its replies mean. No policy
//! (waiting, renewing, deadlines) lives here; see [`crate::lease`] for that.
//!
//! Every operation is one Lua script that compares the holder inside Redis
//! (`scripts/*.lua`), so no check-then-act race exists between clients.

pub mod keys;
mod notify;
mod scripts;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Value};

use crate::error::{Error, Result};
use crate::token::{FencingToken, HolderId};
pub use keys::Keys;
pub use notify::Event;
pub(crate) use notify::{Notifier, Subscription};

/// What an acquire attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcquireReply {
    /// The lease is ours, with this token.
    Acquired { token: FencingToken },
    /// Someone holds it; it expires in `ttl_left` unless renewed.
    Held(HolderInfo),
    /// This Redis lost its data recently: nobody may start for `wait`.
    Quarantined { wait: Duration },
    /// Free, but another waiter (`head`) is first in line; its place lapses
    /// in `wait` unless it comes for the lease.
    Queued { wait: Duration, head: HolderId },
}

/// What a renewal found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenewReply {
    Renewed,
    /// Not ours any more: `reason` says what is there now.
    Refused {
        reason: String,
    },
}

/// The current holder of a lease, as Redis sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderInfo {
    pub holder: HolderId,
    pub value: String,
    pub token: FencingToken,
    pub ttl_left: Duration,
}

/// A lease as Redis sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    pub name: String,
    /// `None` when the lease is free.
    pub holder: Option<HolderInfo>,
    /// The last fencing token issued for this name (0 if none is remembered).
    pub last_token: u64,
}

/// One Redis server, through a reconnecting multiplexed connection plus one
/// shared pub/sub connection.
///
/// Failure semantics:
/// - a request that fails or times out has an *unknown* outcome; callers must
///   not assume it did or did not take effect (the lease layer's deadline
///   arithmetic accounts for that);
/// - the connection is re-established in the background after an I/O error.
#[derive(Clone)]
pub struct Backend {
    conn: ConnectionManager,
    prefix: String,
    url: String,
    op_timeout: Duration,
    notifier: Notifier,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Hides the password of a Redis URL, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://***@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

impl Backend {
    /// Connects to the Redis at `url`, checking that it answers.
    ///
    /// # Errors
    /// [`Error::BadUrl`], [`Error::Unreachable`], [`Error::Auth`], [`Error::BadConfig`] for the prefix.
    pub async fn connect(url: &str, prefix: &str, op_timeout: Duration) -> Result<Backend> {
        keys::validate_prefix(prefix)?;
        let shown = redact_url(url);
        let mut info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| Error::BadUrl {
                url: shown.clone(),
                reason: e.to_string().replace(url, &shown),
            })?;
        if let Ok(pw) = std::env::var("LEASEHOLD_REDIS_PASSWORD")
            && info.redis_settings().password().is_none()
        {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).map_err(|e| Error::BadUrl {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        let connect_timeout = op_timeout.min(Duration::from_secs(5));
        // One direct attempt first, so that a wrong address or password is
        // reported at once instead of after the manager's reconnect backoff.
        let probe = client
            .get_multiplexed_async_connection_with_config(
                &AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(connect_timeout)),
            )
            .await;
        let classify = |e: redis::RedisError| {
            let text = e.to_string();
            if e.kind() == redis::ErrorKind::AuthenticationFailed
                || text.contains("WRONGPASS")
                || text.contains("NOAUTH")
                || text.contains("NOPERM")
            {
                Error::Auth {
                    url: shown.clone(),
                    source: e,
                }
            } else {
                Error::Unreachable {
                    url: shown.clone(),
                    source: e,
                }
            }
        };
        let mut probe = probe.map_err(classify)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut probe)
            .await
            .map_err(classify)?;
        warn_on_eviction(&mut probe).await;
        drop(probe);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(classify)?;
        Ok(Backend {
            conn,
            prefix: prefix.to_string(),
            url: shown,
            notifier: Notifier::start(client),
            op_timeout,
        })
    }

    /// The URL with its password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key schema of `name` (validated).
    pub fn keys(&self, name: &str) -> Result<Keys> {
        keys::validate_name(name)?;
        Ok(Keys::new(&self.prefix, name))
    }

    async fn invoke(&self, op: &'static str, inv: redis::ScriptInvocation<'_>) -> Result<Value> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.op_timeout, inv.invoke_async::<Value>(&mut conn)).await {
            Ok(r) => r.map_err(|e| Error::redis(op, e)),
            Err(_) => Err(Error::Timeout {
                op,
                after: self.op_timeout,
            }),
        }
    }

    /// One attempt to take `name` for `holder` with `ttl`, publishing a
    /// value others can read. Does not join the queue: when waiters are queued
    /// for a free lease, the first of them gets it, not this attempt.
    pub async fn try_acquire(
        &self,
        name: &str,
        holder: &HolderId,
        ttl: Duration,
        value: &str,
    ) -> Result<AcquireReply> {
        self.attempt(name, holder, ttl, value, false).await
    }

    /// One attempt; when it fails and `queue` is set, `holder` keeps (or takes)
    /// its place in the lease's first-come-first-served queue until its next
    /// attempt is due, plus a margin.
    pub async fn attempt(
        &self,
        name: &str,
        holder: &HolderId,
        ttl: Duration,
        value: &str,
        queue: bool,
    ) -> Result<AcquireReply> {
        let k = self.keys(name)?;
        let mut inv = scripts::ACQUIRE.prepare_invoke();
        inv.key(&k.lease)
            .key(&k.fence)
            .key(&k.epoch)
            .key(&k.queue)
            .key(&k.qexp)
            .arg(holder.as_str())
            .arg(ttl.as_millis() as u64)
            .arg(value)
            .arg(&k.events)
            .arg(if queue { "wait" } else { "try" })
            .arg(queue_margin(ttl).as_millis() as u64);
        let reply = array("acquire", self.invoke("acquire", inv).await?)?;
        let ms = |i| -> Result<Duration> {
            Ok(Duration::from_millis(
                int_at("acquire", &reply, i)?.max(0) as u64
            ))
        };
        match int_at("acquire", &reply, 0)? {
            1 => Ok(AcquireReply::Acquired {
                token: FencingToken(u64_at("acquire", &reply, 1)?),
            }),
            0 => Ok(AcquireReply::Held(holder_info("acquire", &reply, 1)?)),
            2 => Ok(AcquireReply::Quarantined { wait: ms(1)? }),
            3 => Ok(AcquireReply::Queued {
                wait: ms(1)?,
                head: HolderId::from_raw(string_at("acquire", &reply, 2)?),
            }),
            other => Err(Error::Protocol {
                op: "acquire",
                detail: format!("status {other}"),
            }),
        }
    }

    /// Gives up `holder`'s place in the queue of `name` (it stopped waiting).
    pub async fn leave(&self, name: &str, holder: &HolderId) -> Result<()> {
        let k = self.keys(name)?;
        let mut inv = scripts::LEAVE.prepare_invoke();
        inv.key(&k.queue)
            .key(&k.qexp)
            .key(&k.lease)
            .arg(holder.as_str())
            .arg(&k.events);
        self.invoke("leave", inv).await.map(|_| ())
    }

    /// Extends `name` by `ttl` if `holder` still holds it. Never re-creates it.
    pub async fn renew(&self, name: &str, holder: &HolderId, ttl: Duration) -> Result<RenewReply> {
        let k = self.keys(name)?;
        let mut inv = scripts::RENEW.prepare_invoke();
        inv.key(&k.lease)
            .arg(holder.as_str())
            .arg(ttl.as_millis() as u64);
        let reply = array("renew", self.invoke("renew", inv).await?)?;
        if int_at("renew", &reply, 0)? == 1 {
            return Ok(RenewReply::Renewed);
        }
        let now = string_at("renew", &reply, 1)?;
        let reason = if now.is_empty() {
            "the lease key is gone (expired, deleted, or Redis lost its data)".to_string()
        } else if now.starts_with("foreign type") {
            format!("the lease key was overwritten: {now}")
        } else {
            format!("now held by {}", HolderId::from_raw(now).readable())
        };
        Ok(RenewReply::Refused { reason })
    }

    /// Deletes `name` if `holder` holds it and wakes a waiter. Returns false when
    /// it was not ours (any more).
    pub async fn release(&self, name: &str, holder: &HolderId) -> Result<bool> {
        let k = self.keys(name)?;
        let mut inv = scripts::RELEASE.prepare_invoke();
        inv.key(&k.lease)
            .key(&k.queue)
            .key(&k.qexp)
            .arg(holder.as_str())
            .arg(&k.events);
        Ok(int("release", &self.invoke("release", inv).await?)? == 1)
    }

    /// Replaces the value of `name` if `holder` holds it. Returns false when not ours.
    pub async fn proclaim(&self, name: &str, holder: &HolderId, value: &str) -> Result<bool> {
        let k = self.keys(name)?;
        let mut inv = scripts::PROCLAIM.prepare_invoke();
        inv.key(&k.lease)
            .arg(holder.as_str())
            .arg(value)
            .arg(&k.events);
        Ok(int("proclaim", &self.invoke("proclaim", inv).await?)? == 1)
    }

    /// Reads `name` without changing it.
    pub async fn status(&self, name: &str) -> Result<LeaseStatus> {
        let k = self.keys(name)?;
        let mut inv = scripts::STATUS.prepare_invoke();
        inv.key(&k.lease).key(&k.fence);
        let reply = array("status", self.invoke("status", inv).await?)?;
        let pttl = int_at("status", &reply, 0)?;
        let last_token = u64_at("status", &reply, 4)?;
        let holder = if pttl == -2 {
            None
        } else {
            Some(holder_info("status", &reply, 0)?)
        };
        Ok(LeaseStatus {
            name: name.to_string(),
            holder,
            last_token,
        })
    }

    /// Joins the event channel of `name` (shared per process).
    pub(crate) async fn subscribe(&self, name: &str) -> Result<Subscription> {
        let k = self.keys(name)?;
        Ok(self.notifier.subscribe(&k.events).await)
    }
}

/// Lease keys carry a TTL, so any eviction policy other than `noeviction` may
/// delete a held lease under memory pressure and let a second holder in. Say
/// so once at connect; managed Redis often forbids CONFIG, which is fine.
async fn warn_on_eviction(conn: &mut redis::aio::MultiplexedConnection) {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    if let Ok(kv) = reply
        && let Some(policy) = kv.get(1)
        && policy != "noeviction"
    {
        tracing::warn!(
            "Redis maxmemory-policy is {policy}: under memory pressure Redis may evict a held lease and let a second holder in; use noeviction (see docs/design.md)"
        );
    }
}

/// How long past its next due attempt a waiter's place in line is kept: long
/// enough for a late wake-up, short enough that a crashed waiter holds up the
/// line only briefly.
pub fn queue_margin(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

fn bad(op: &'static str, detail: impl Into<String>) -> Error {
    Error::Protocol {
        op,
        detail: detail.into(),
    }
}

fn array(op: &'static str, v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(bad(op, format!("expected an array, got {other:?}"))),
    }
}

fn int(op: &'static str, v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(op, "expected an integer")),
        other => Err(bad(op, format!("expected an integer, got {other:?}"))),
    }
}

fn int_at(op: &'static str, items: &[Value], i: usize) -> Result<i64> {
    int(op, items.get(i).ok_or_else(|| bad(op, "reply too short"))?)
}

fn u64_at(op: &'static str, items: &[Value], i: usize) -> Result<u64> {
    u64::try_from(int_at(op, items, i)?).map_err(|_| bad(op, "negative token"))
}

fn string_at(op: &'static str, items: &[Value], i: usize) -> Result<String> {
    match items.get(i) {
        Some(Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        Some(Value::SimpleString(s)) => Ok(s.clone()),
        Some(Value::Int(i)) => Ok(i.to_string()),
        Some(Value::Nil) | None => Ok(String::new()),
        Some(other) => Err(bad(op, format!("expected a string, got {other:?}"))),
    }
}

/// Parses `{pttl, holder, value, token}` starting at `at`.
fn holder_info(op: &'static str, items: &[Value], at: usize) -> Result<HolderInfo> {
    let pttl = int_at(op, items, at)?;
    Ok(HolderInfo {
        // -1 means a lease key without TTL, which only a foreign writer makes;
        // treat it as expiring now rather than never.
        ttl_left: Duration::from_millis(pttl.max(0) as u64),
        holder: HolderId::from_raw(string_at(op, items, at + 1)?),
        value: string_at(op, items, at + 2)?,
        token: FencingToken(u64_at(op, items, at + 3).unwrap_or(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("redis://user:s3cret@h:6379/0"),
            "redis://user:***@h:6379/0"
        );
        assert_eq!(redact_url("redis://:s3cret@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("rediss://s3cret@h/"), "rediss://***@h/");
    }
}
