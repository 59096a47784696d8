//! One logical Redis: a standalone server, a Sentinel-managed master, or a
//! Cluster. The same scripts run on all three; only the connection differs
//! (`conn.rs`). This file holds the node itself, the one path every script
//! call takes (`exec`), and the lease scripts; the semaphore scripts are in
//! `semaphore.rs`, quotas and the token cache in `chores.rs`, reply decoding
//! in `reply.rs`.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::conn::Conn;
use super::notify::Notifier;
use super::reply::{
    array, bad, clone_unavailable, holder_info, int, int_at, is_noscript, parse_renew, string_at,
    u64_at,
};
use super::scripts::{self, Call, Lua};
use super::{AcquireReply, Kind, LeaseStatus, RenewReply, keys};
use crate::error::{Error, Result};
use crate::token::{FencingToken, HolderId};

/// One logical Redis.
#[derive(Clone)]
pub struct Node {
    pub(super) conn: Conn,
    pub(super) prefix: String,
    pub(super) url: String,
    pub(super) op_timeout: Duration,
    pub(super) min_replicas: u32,
    pub(super) notifier: Notifier,
    pub(super) cleanups: super::Cleanups,
    /// This client's own channel: a release hands the lease to a waiter of
    /// ours by publishing there, so that the message reaches this connection
    /// only, not every process waiting on the name.
    pub(super) inbox: String,
    /// Subscribed to at the first wait, kept for the client's life.
    pub(super) inbox_sub: Arc<tokio::sync::OnceCell<super::notify::Subscription>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("url", &self.url).finish()
    }
}

impl Node {
    /// The URL, password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key prefix (`leasehold:` by default).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many replicas must confirm each acquisition and renewal (`WAIT`).
    pub fn min_replicas(&self) -> u32 {
        self.min_replicas
    }

    /// How long `WAIT` may take for a write with TTL `ttl`: a fifth of it, and
    /// well inside the request timeout, so that an unconfirmed acquisition is
    /// answered as such (and given back) rather than timing out unknown.
    pub(super) fn wait_limit(&self, ttl: Duration) -> Duration {
        (ttl / 5).min(self.op_timeout / 2)
    }

    /// Tells the scripts that this client's writes are confirmed by replicas
    /// (`WAIT`): a promoted replica may then trust them (prelude.lua).
    pub(super) fn confirm_flag(&self) -> u32 {
        self.min_replicas
    }

    pub(crate) fn cleanups(&self) -> &super::Cleanups {
        &self.cleanups
    }

    /// Changes each time the subscription connection to this Redis was
    /// re-established (it may have restarted).
    pub(crate) fn reconnects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notifier.reconnects()
    }

    /// The key schema of `name` (validated), with the epoch marker placed in
    /// the lease's hash slot on Cluster.
    pub fn keys(&self, name: &str) -> Result<keys::Keys> {
        keys::validate_key_name(name)?;
        let mut k = keys::Keys::new(&self.prefix, name);
        if matches!(self.conn, Conn::Cluster(_))
            && let Some(epoch) = keys::cluster_epoch(&self.prefix, &k.lease)
        {
            k.epoch = epoch;
        }
        Ok(k)
    }

    /// Runs `calls` and, when `wait` is set and `min_replicas` > 0, a `WAIT`
    /// for their writes — one pipeline on one connection, so that a reconnect
    /// cannot send the `WAIT` to another server than the scripts. On Cluster
    /// the calls go out concurrently (they may live on several nodes; `WAIT`
    /// is refused there at connect).
    ///
    /// Redis's script cache may be empty (restart, failover, `SCRIPT FLUSH`):
    /// the calls answered NOSCRIPT are run again after loading their scripts,
    /// in one more round trip. Single calls and batches share this path.
    ///
    /// Returns each call's reply, and whether the writes reached
    /// `min_replicas` replicas (always true without `wait`).
    pub(crate) async fn exec(
        &self,
        op: &'static str,
        calls: &[Call],
        wait: Option<Duration>,
    ) -> Result<(Vec<Result<Value>>, bool)> {
        if matches!(self.conn, Conn::Cluster(_)) {
            let replies =
                futures_util::future::join_all(calls.iter().map(|c| self.exec_one(op, c))).await;
            return Ok((replies, true));
        }
        let wait = wait.filter(|_| self.min_replicas > 0);
        let (mut values, mut acked) = self.pipeline(op, calls.iter(), &[], wait).await?;
        let missing: Vec<usize> = (0..calls.len())
            .filter(|&i| values.get(i).is_some_and(is_noscript))
            .collect();
        if !missing.is_empty() {
            let mut scripts: Vec<&Lua> = missing.iter().map(|&i| calls[i].script).collect();
            scripts.sort_by_key(|s| s.hash());
            scripts.dedup_by_key(|s| s.hash());
            let (again, acked2) = self
                .pipeline(op, missing.iter().map(|&i| &calls[i]), &scripts, wait)
                .await?;
            for (i, v) in missing.into_iter().zip(again) {
                values[i] = v;
            }
            acked = acked.min(acked2);
        }
        let replicated = wait.is_none() || acked >= self.min_replicas as i64;
        let replies = values
            .into_iter()
            .take(calls.len())
            .map(|v| match v {
                Value::ServerError(e) => Err(Error::redis(op, redis::RedisError::from(e))),
                v => Ok(v),
            })
            .collect();
        Ok((replies, replicated))
    }

    /// One pipeline: `SCRIPT LOAD` for `load`, the calls, and `WAIT` if asked.
    /// Returns the calls' replies and the replicas `WAIT` counted.
    async fn pipeline(
        &self,
        op: &'static str,
        calls: impl Iterator<Item = &Call>,
        load: &[&Lua],
        wait: Option<Duration>,
    ) -> Result<(Vec<Value>, i64)> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for s in load {
            pipe.add_command(s.load_cmd()).ignore();
        }
        for c in calls {
            pipe.add_command(c.cmd());
        }
        if let Some(limit) = wait {
            pipe.cmd("WAIT")
                .arg(self.min_replicas)
                .arg(limit.as_millis().max(1) as u64);
        }
        let mut values = self
            .run(op, async |c| pipe.query_async::<Vec<Value>>(c).await)
            .await?;
        let acked = match wait {
            Some(_) => match values.pop() {
                Some(Value::Int(n)) => n,
                _ => 0,
            },
            None => 0,
        };
        Ok((values, acked))
    }

    /// One call on Cluster (routed by its first key), loading its script on NOSCRIPT.
    async fn exec_one(&self, op: &'static str, call: &Call) -> Result<Value> {
        let cmd = call.cmd();
        match self
            .run(op, async |c| cmd.query_async::<Value>(c).await)
            .await
        {
            Err(Error::Redis { source, .. }) if source.code() == Some("NOSCRIPT") => {
                let load = call.script.load_cmd();
                self.run(op, async |c| load.query_async::<String>(c).await)
                    .await?;
                self.run(op, async |c| cmd.query_async::<Value>(c).await)
                    .await
            }
            other => other,
        }
    }

    /// One call, no `WAIT`.
    pub(super) async fn call(&self, op: &'static str, call: Call) -> Result<Value> {
        let (mut replies, _) = self.exec(op, std::slice::from_ref(&call), None).await?;
        replies.pop().unwrap_or_else(|| Err(bad(op, "no reply")))
    }

    fn acquire_call(&self, k: &keys::Keys, a: &super::Attempt<'_>) -> Call {
        let (holder, ttl, value, queue) = (a.holder, a.ttl, a.value, a.queue);
        Call::new(&scripts::ACQUIRE)
            .key(&k.lease)
            .key(&k.queue)
            .key(&k.qinfo)
            .key(&k.epoch)
            .key(&k.slots)
            .arg(holder.as_str())
            .arg(ttl.as_millis() as u64)
            .arg(value)
            .arg(&k.events)
            .arg(if queue { "wait" } else { "try" })
            .arg(super::queue_margin(ttl).as_millis() as u64)
            .arg(self.confirm_flag())
            .arg(if queue { self.inbox.as_str() } else { "" })
    }

    /// `acquire.lua`: one attempt at a lease.
    pub async fn attempt(&self, a: &super::Attempt<'_>) -> Result<AcquireReply> {
        let (name, holder, ttl) = (a.name, a.holder, a.ttl);
        let k = self.keys(name)?;
        let call = self.acquire_call(&k, a);
        let (mut replies, replicated) = self
            .exec(
                "acquire",
                std::slice::from_ref(&call),
                Some(self.wait_limit(ttl)),
            )
            .await?;
        let reply = array(
            "acquire",
            replies
                .pop()
                .unwrap_or_else(|| Err(bad("acquire", "no reply")))?,
        )?;
        let ms = |i| -> Result<Duration> {
            Ok(Duration::from_millis(
                int_at("acquire", &reply, i)?.max(0) as u64
            ))
        };
        match int_at("acquire", &reply, 0)? {
            1 => {
                let token = FencingToken(u64_at("acquire", &reply, 1)?);
                if !replicated {
                    // Not on enough replicas: a failover could drop it. Give it back.
                    let _ = self.release(name, holder, false).await;
                    return Err(Error::NotReplicated {
                        op: "acquire",
                        want: self.min_replicas,
                    });
                }
                Ok(AcquireReply::Acquired { token })
            }
            0 => Ok(AcquireReply::Held {
                info: holder_info("acquire", &reply, 1)?,
                first: int_at("acquire", &reply, 5).unwrap_or(0) == 1,
            }),
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

    /// `leave.lua`: takes `holder` out of `name`'s queue (a waiter that gave up).
    pub async fn leave(&self, name: &str, holder: &HolderId) -> Result<()> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::LEAVE)
            .key(&k.lease)
            .key(&k.queue)
            .key(&k.qinfo)
            .arg(holder.as_str())
            .arg(&k.events);
        self.call("leave", call).await.map(|_| ())
    }

    fn renew_call(&self, k: &keys::Keys, item: &RenewItem<'_>) -> Call {
        let call = match item.kind {
            Kind::Lease => Call::new(&scripts::RENEW).key(&k.lease).key(&k.epoch),
            Kind::Slot { .. } => Call::new(&scripts::SEM_RENEW)
                .key(&k.slots)
                .key(&k.slotinfo)
                .key(&k.lease)
                .key(&k.epoch),
        }
        .arg(item.holder.as_str())
        .arg(item.ttl.as_millis() as u64);
        // The WAIT's replica count, for the record's `w` (renew.lua ARGV[6],
        // sem_renew.lua ARGV[3]).
        match (item.repair, item.kind) {
            (Some((token, value)), Kind::Lease) => call.arg(token.0).arg(value),
            (None, Kind::Lease) => call.arg("").arg(""),
            (_, Kind::Slot { .. }) => return call.arg(self.min_replicas),
        }
        .arg("")
        .arg(self.min_replicas)
    }

    /// Renews; with `repair = Some((token, value))` a missing key is re-created
    /// for us (quorum repair after a node lost its data), never a foreign one.
    pub async fn renew(
        &self,
        name: &str,
        holder: &HolderId,
        ttl: Duration,
        repair: Option<(FencingToken, &str)>,
        kind: Kind,
    ) -> Result<RenewReply> {
        let item = RenewItem {
            kind,
            name,
            holder,
            ttl,
            repair,
        };
        self.renew_many(std::slice::from_ref(&item))
            .await
            .pop()
            .unwrap_or_else(|| Err(bad("renew", "no reply")))
    }

    /// `renew.lua` (`sem_renew.lua`) with an expected token: a grant's claim
    /// (see `Backend::claim`).
    pub async fn claim(
        &self,
        kind: Kind,
        name: &str,
        holder: &HolderId,
        ttl: Duration,
        token: FencingToken,
    ) -> Result<RenewReply> {
        let k = self.keys(name)?;
        let call = match kind {
            Kind::Lease => Call::new(&scripts::RENEW)
                .key(&k.lease)
                .key(&k.epoch)
                .arg(holder.as_str())
                .arg(ttl.as_millis() as u64)
                .arg("")
                .arg("")
                .arg(token.0)
                .arg(self.min_replicas),
            Kind::Slot { .. } => Call::new(&scripts::SEM_RENEW)
                .key(&k.slots)
                .key(&k.slotinfo)
                .key(&k.lease)
                .key(&k.epoch)
                .arg(holder.as_str())
                .arg(ttl.as_millis() as u64)
                .arg(self.min_replicas)
                .arg(token.0),
        };
        let (mut replies, replicated) = self
            .exec(
                "claim",
                std::slice::from_ref(&call),
                Some(self.wait_limit(ttl)),
            )
            .await?;
        let reply = parse_renew(
            replies
                .pop()
                .unwrap_or_else(|| Err(bad("claim", "no reply")))?,
        )?;
        if reply == RenewReply::Renewed && !replicated {
            return Err(Error::NotReplicated {
                op: "claim",
                want: self.min_replicas,
            });
        }
        Ok(reply)
    }

    /// Renews many leases in one round trip: one pipeline of EVALSHAs, with one
    /// `WAIT` for all when `min_replicas` is set (on Cluster, concurrently).
    pub async fn renew_many(&self, items: &[RenewItem<'_>]) -> Vec<Result<RenewReply>> {
        if items.is_empty() {
            return Vec::new();
        }
        let keys: Vec<Result<keys::Keys>> = items.iter().map(|i| self.keys(i.name)).collect();
        let calls: Vec<Call> = items
            .iter()
            .zip(&keys)
            .filter_map(|(i, k)| k.as_ref().ok().map(|k| self.renew_call(k, i)))
            .collect();
        let ttl = items.iter().map(|i| i.ttl).min().unwrap_or_default();
        let (replies, replicated) =
            match self.exec("renew", &calls, Some(self.wait_limit(ttl))).await {
                Ok(r) => r,
                Err(e) => return items.iter().map(|_| Err(clone_unavailable(&e))).collect(),
            };
        let mut replies = replies.into_iter();
        keys.into_iter()
            .map(|k| {
                k?;
                let reply = parse_renew(
                    replies
                        .next()
                        .ok_or_else(|| bad("renew", "pipeline reply too short"))??,
                )?;
                if reply == RenewReply::Renewed && !replicated {
                    return Err(Error::NotReplicated {
                        op: "renew",
                        want: self.min_replicas,
                    });
                }
                Ok(reply)
            })
            .collect()
    }

    /// Gives the lease back (handing it to the first waiter in line, if any).
    /// `always_publish`: announce the release even when nobody observes (a
    /// quorum's waiters have no queue and listen for it).
    pub async fn release(
        &self,
        name: &str,
        holder: &HolderId,
        always_publish: bool,
    ) -> Result<bool> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::RELEASE)
            .key(&k.lease)
            .key(&k.queue)
            .key(&k.qinfo)
            .key(&k.epoch)
            .arg(holder.as_str())
            .arg(&k.events)
            .arg(if always_publish { "always" } else { "" });
        Ok(int("release", &self.call("release", call).await?)? == 1)
    }

    /// Asks for the name's `acquired`/`released`/`proclaimed` events for `d`
    /// (without observers the scripts publish only what waiters need).
    pub async fn observe(&self, name: &str, d: Duration) -> Result<()> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::OBSERVE)
            .key(&k.lease)
            .arg(d.as_millis() as u64);
        self.call("observe", call).await.map(|_| ())
    }

    /// Raises the fence to at least `token` and records it as the lease's token,
    /// if `holder` holds it (quorum: the token agreed on by a majority).
    pub async fn confirm(
        &self,
        name: &str,
        holder: &HolderId,
        token: FencingToken,
    ) -> Result<bool> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::CONFIRM)
            .key(&k.lease)
            .arg(holder.as_str())
            .arg(token.0);
        Ok(int("confirm", &self.call("confirm", call).await?)? == 1)
    }

    /// `proclaim.lua`: replaces the value of `name` if `holder` holds it.
    pub async fn proclaim(&self, name: &str, holder: &HolderId, value: &str) -> Result<bool> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::PROCLAIM)
            .key(&k.lease)
            .arg(holder.as_str())
            .arg(value)
            .arg(&k.events);
        Ok(int("proclaim", &self.call("proclaim", call).await?)? == 1)
    }

    /// `status.lua`: reads `name` without changing it.
    pub async fn status(&self, name: &str) -> Result<LeaseStatus> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::STATUS).key(&k.lease).key(&k.epoch);
        let reply = array("status", self.call("status", call).await?)?;
        let pttl = int_at("status", &reply, 0)?;
        let last_token = u64_at("status", &reply, 4)?;
        let holder = if pttl == -2 {
            None
        } else {
            Some(holder_info("status", &reply, 0)?)
        };
        let quarantine = Duration::from_millis(int_at("status", &reply, 6)?.max(0) as u64);
        Ok(LeaseStatus {
            name: name.to_string(),
            holder,
            last_token,
            semaphore: string_at("status", &reply, 5)? == "sem",
            quarantine: (!quarantine.is_zero()).then_some(quarantine),
        })
    }

    /// `run_note.lua`: notes (or, with `note` empty, removes) what `holder`
    /// tells `leasehold status` about itself; notes of former holders are
    /// dropped on the way. `false`: a key of `name` is not leasehold's.
    pub async fn note(&self, name: &str, holder: &HolderId, note: &str) -> Result<bool> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::RUN_NOTE)
            .key(&k.notes)
            .key(&k.lease)
            .key(&k.slots)
            .arg(holder.as_str())
            .arg(note);
        Ok(int("note", &self.call("note", call).await?)? == 1)
    }

    /// The notes of `holders` (absent: none), read by holder id only, so a
    /// notes hash someone else filled cannot make this read large.
    pub async fn notes(&self, name: &str, holders: &[&str]) -> Result<Vec<Option<String>>> {
        if holders.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys(name)?;
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&k.notes).arg(holders);
        self.run("notes", async |c| cmd.query_async(c).await).await
    }

    /// Joins the events of `name`, and this client's inbox (where releases
    /// hand over the lease to our waiters), both confirmed by Redis.
    /// (With `inbox` false — a quorum, which has no queue — the name's events
    /// only.)
    pub(crate) async fn subscribe(
        &self,
        name: &str,
        inbox: bool,
    ) -> Result<Vec<super::notify::Subscription>> {
        let k = self.keys(name)?;
        let mut parts = vec![self.notifier.subscribe(&k.events).await?];
        if inbox {
            // Subscribed once and kept for the client's life; each waiter
            // takes a reference (no SUBSCRIBE of its own once confirmed).
            self.inbox_sub
                .get_or_try_init(|| self.notifier.subscribe(&self.inbox))
                .await?;
            parts.push(self.notifier.subscribe(&self.inbox).await?);
        }
        Ok(parts)
    }

    /// True when the name's events and this client's inbox are both
    /// subscribed and confirmed already (a waiter of this client on `name`
    /// just left): a new waiter joins them without a round trip.
    pub(crate) fn subscribed(&self, name: &str) -> bool {
        self.keys(name).is_ok_and(|k| {
            self.notifier.is_confirmed(&k.events) && self.notifier.is_confirmed(&self.inbox)
        })
    }

    /// The server's `run_id` (new on every start): tells two addresses of one
    /// server apart from two servers.
    pub(crate) async fn run_id(&self) -> Result<String> {
        let info: String = self
            .run("info", async |c| {
                redis::cmd("INFO").arg("server").query_async(c).await
            })
            .await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap_or_default()
            .trim()
            .to_string())
    }
}

/// One lease (or semaphore slot) to renew in a batch.
#[non_exhaustive]
pub struct RenewItem<'a> {
    /// A lease or a semaphore slot.
    pub kind: Kind,
    /// The lease's (or semaphore's) name.
    pub name: &'a str,
    /// The holder that acquired it.
    pub holder: &'a HolderId,
    /// How long Redis keeps it from now.
    pub ttl: Duration,
    /// Quorum repair: re-create the key with this token and value if missing.
    pub repair: Option<(FencingToken, &'a str)>,
}
