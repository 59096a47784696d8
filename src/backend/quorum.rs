//! A quorum of N ≥ 3 independent Redis servers: the Redlock algorithm, done
//! carefully.
//!
//! - Requests go to every node at once (never one after another), each bounded
//!   by a per-node timeout much shorter than the TTL.
//! - **Acquire** counts only when a majority granted it and the whole attempt,
//!   including the token write-back below, finished within the validity time
//!   `TTL - drift` measured from when it was sent. Otherwise every grant is
//!   released again.
//! - **Fencing tokens**: each node issues its own `max(fence+1, now_us)`. The
//!   lease's token is the maximum over the granting majority, written back to
//!   that majority (`confirm.lua`) before the lease counts as held. Any two
//!   majorities share a node, and that node's fence already holds the previous
//!   lease's token, so the next maximum is strictly larger.
//! - **Renew** on every node; a majority must confirm. Nodes that lost the key
//!   (restarted empty) get it back (repair), never taking a key held by
//!   someone else.
//! - **Release** on every node.
//! - No waiting queue: a quorum's waiters wake on any node's release event,
//!   or when enough nodes' keys will have expired.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::node::Node;
use super::notify;
use super::{AcquireReply, ConnectOptions, HolderInfo, LeaseStatus, RenewReply, redact_url};
use crate::deadline;
use crate::deadline::jitter;
use crate::error::{Error, Result};
use crate::token::{FencingToken, HolderId};

/// N ≥ 3 independent Redis servers; every decision needs a majority.
#[derive(Clone, Debug)]
pub struct Quorum {
    nodes: Vec<Node>,
    urls: String,
    cleanups: super::Cleanups,
}

fn node_timeout(ttl: Duration) -> Duration {
    // Redlock: small against the TTL, so that a dead node costs little of the
    // validity time.
    (ttl / 10).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// Refuses a server given twice (also as another database of it): a quorum
/// over one server is no quorum, and its members would grant each other's
/// keys away (one key per name on that server) so that none ever acquires.
fn check_independent(urls: &[String]) -> Result<()> {
    let mut seen: Vec<(String, &String)> = Vec::with_capacity(urls.len());
    for u in urls {
        // Unparsable URLs are reported by the connect that follows.
        let Ok(info) = redis::IntoConnectionInfo::into_connection_info(u.as_str()) else {
            continue;
        };
        let addr = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port)
            | redis::ConnectionAddr::TcpTls { host, port, .. } => {
                let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
                let host = match host.as_str() {
                    "localhost" | "::1" | "0.0.0.0" => "127.0.0.1".to_string(),
                    _ => host,
                };
                format!("{host}:{port}")
            }
            redis::ConnectionAddr::Unix(path) => format!("unix:{}", path.display()),
            other => format!("{other:?}"),
        };
        if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
            return Err(Error::BadUrl {
                url: format!("{} {}", redact_url(first), redact_url(u)),
                reason: format!(
                    "both name the server {addr}: a quorum needs 3 or more independent Redis servers, each given once"
                ),
            });
        }
        seen.push((addr, u));
    }
    Ok(())
}

impl Quorum {
    /// Connects to every server; a majority must answer now, the rest may
    /// come back later.
    ///
    /// # Errors
    /// [`Error::BadConfig`] with `min_replicas` (it does not apply),
    /// [`Error::BadUrl`] for a URL that is not a plain `redis://` server or a
    /// server given twice, [`Error::Auth`], [`Error::NoQuorum`].
    pub async fn connect(urls: &[String], prefix: &str, opts: &ConnectOptions) -> Result<Quorum> {
        if opts.min_replicas > 0 {
            return Err(Error::BadConfig {
                what: "min-replicas",
                value: opts.min_replicas.to_string(),
                rule: "does not apply to a quorum of independent servers".into(),
            });
        }
        for u in urls {
            if !matches!(super::url::parse(u)?, super::url::Target::Single(_)) {
                return Err(Error::BadUrl {
                    url: redact_url(u),
                    reason: "a quorum is made of independent redis:// servers".into(),
                });
            }
        }
        check_independent(urls)?;
        let shown = urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(" ");
        let nodes = join_all(urls.iter().map(|u| Node::connect_lazy(u, prefix, opts))).await;
        let nodes: Vec<Node> = nodes.into_iter().collect::<Result<_>>()?;
        let q = Quorum {
            nodes,
            urls: shown,
            cleanups: super::Cleanups::default(),
        };
        // At least a majority must answer now; the rest may come back later.
        let answered = join_all(q.nodes.iter().map(|n| n.ping())).await;
        let up = answered.iter().filter(|r| r.is_ok()).count();
        if up < q.majority() {
            let first_err = answered.into_iter().find_map(|r| r.err());
            return Err(match first_err {
                Some(e @ Error::Auth { .. }) => e,
                other => Error::NoQuorum {
                    op: "connect",
                    answered: up,
                    needed: q.majority(),
                    total: q.nodes.len(),
                    last: other.map(|e| e.to_string()).unwrap_or_default(),
                },
            });
        }
        // Two addresses of one server (a hostname and its IP, another
        // loopback address) would let a single server be counted twice.
        let ids = join_all(q.nodes.iter().map(|n| n.run_id())).await;
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let Ok(id) = id else { continue };
            if id.is_empty() {
                continue;
            }
            if let Some((_, j)) = seen.iter().find(|(s, _)| s == id) {
                return Err(Error::BadUrl {
                    url: q.urls.clone(),
                    reason: format!(
                        "servers {} and {} are the same Redis (same run_id): a quorum needs independent servers",
                        j + 1,
                        i + 1
                    ),
                });
            }
            seen.push((id, i));
        }
        Ok(q)
    }

    /// The URLs, passwords hidden, separated by spaces.
    pub fn url(&self) -> String {
        self.urls.clone()
    }

    pub(crate) fn cleanups(&self) -> &super::Cleanups {
        &self.cleanups
    }

    /// How many servers make a majority: N/2 + 1.
    pub fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// The servers.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    async fn all<'a, T, F>(&'a self, ttl: Duration, f: impl Fn(&'a Node) -> F) -> Vec<Result<T>>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let limit = node_timeout(ttl);
        join_all(self.nodes.iter().map(|n| {
            let fut = f(n);
            async move {
                match tokio::time::timeout(limit, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout {
                        op: "quorum request",
                        after: limit,
                    }),
                }
            }
        }))
        .await
    }

    /// One attempt on every node at once (no queue: `a.queue` is ignored).
    pub async fn attempt(&self, a: &super::Attempt<'_>) -> Result<AcquireReply> {
        let (name, holder, ttl) = (a.name, a.holder, a.ttl);
        let on_node = super::Attempt { queue: false, ..*a };
        let sent = Instant::now();
        let validity = ttl.saturating_sub(deadline::drift(ttl));
        let replies = self.all(ttl, |n| n.attempt(&on_node)).await;
        let mut granted = Vec::new();
        let mut held: Vec<HolderInfo> = Vec::new();
        let mut quarantine = Duration::ZERO;
        let mut failed = Vec::new();
        let mut fatal = None;
        // Nodes that granted it or may have (no clear answer): released below
        // unless the lease becomes ours.
        let mut maybe = Vec::new();
        for (i, r) in replies.into_iter().enumerate() {
            match r {
                Ok(AcquireReply::Acquired { token }) => {
                    granted.push((i, token));
                    maybe.push(i);
                }
                Ok(AcquireReply::Held { info, .. }) => held.push(info),
                Ok(AcquireReply::Quarantined { wait }) => quarantine = quarantine.max(wait),
                Ok(
                    AcquireReply::Queued { wait, .. }
                    | AcquireReply::Full { wait, .. }
                    | AcquireReply::NoMajority { wait },
                ) => quarantine = quarantine.max(wait),
                Err(e @ (Error::ForeignKey { .. } | Error::BadName { .. })) => fatal = Some(e),
                Err(e) => {
                    failed.push(e);
                    maybe.push(i);
                }
            }
        }
        let majority = self.majority();
        if fatal.is_none() && granted.len() >= majority && sent.elapsed() < validity {
            let token = granted
                .iter()
                .map(|(_, t)| *t)
                .max()
                .unwrap_or(FencingToken(0));
            let confirmed = join_all(granted.iter().map(|(i, _)| {
                let n = &self.nodes[*i];
                async move {
                    tokio::time::timeout(node_timeout(ttl), n.confirm(name, holder, token))
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .unwrap_or(false)
                }
            }))
            .await;
            if confirmed.iter().filter(|c| **c).count() >= majority && sent.elapsed() < validity {
                return Ok(AcquireReply::Acquired { token });
            }
        }
        // Not ours: give back what we may have got — not only where a grant
        // was answered: a node whose reply timed out may have granted it too
        // (Redlock releases everywhere). The script deletes only our own key.
        // Announced (`released`, which wakes every quorum waiter) only when
        // we held a majority, which others were told to wait for. A split
        // vote's give-back is quiet: announced, each wakes the other side at
        // once, and two waiters split the free servers again and again for
        // as long as one server is quarantined (a livelock the model found:
        // tests/model.rs, quorum_give_back_livelock); quiet, they retry
        // after 20–100 ms of jitter.
        let loud = granted.len() >= majority;
        let limit = node_timeout(ttl);
        join_all(
            maybe
                .iter()
                .map(|&i| tokio::time::timeout(limit, self.nodes[i].release(name, holder, loud))),
        )
        .await;
        if let Some(e) = fatal {
            return Err(e);
        }
        if failed.len() > self.nodes.len() - majority {
            return Err(Error::NoQuorum {
                op: "acquire",
                answered: self.nodes.len() - failed.len(),
                needed: majority,
                total: self.nodes.len(),
                last: failed.last().map(|e| e.to_string()).unwrap_or_default(),
            });
        }
        if !quarantine.is_zero() {
            return Ok(AcquireReply::Quarantined { wait: quarantine });
        }
        // When will enough nodes be free? Sort the holders' remaining TTLs.
        let free_now = self.nodes.len() - held.len();
        held.sort_by_key(|h| h.ttl_left);
        let wait = match majority.checked_sub(free_now) {
            Some(k) if k >= 1 && k <= held.len() => held[k - 1].ttl_left,
            // A split vote or a slow attempt: try again shortly, spread out.
            _ => Duration::from_millis(20) + jitter(Duration::from_millis(80)),
        };
        let Some(mut info) = held.into_iter().next() else {
            return Ok(AcquireReply::NoMajority { wait });
        };
        info.ttl_left = wait;
        Ok(AcquireReply::Held { info, first: false })
    }

    /// Renews on every server; a majority must confirm. A server that lost
    /// the key gets it back with `token` and `value` (repair), never taking
    /// a key someone else holds.
    pub async fn renew(
        &self,
        name: &str,
        holder: &HolderId,
        ttl: Duration,
        token: FencingToken,
        value: &str,
    ) -> Result<RenewReply> {
        let replies = self
            .all(ttl, |n| {
                n.renew(name, holder, ttl, Some((token, value)), super::Kind::Lease)
            })
            .await;
        self.tally_renew(replies)
    }

    fn tally_renew(&self, replies: Vec<Result<RenewReply>>) -> Result<RenewReply> {
        let majority = self.majority();
        let renewed = replies
            .iter()
            .filter(|r| matches!(r, Ok(RenewReply::Renewed)))
            .count();
        if renewed >= majority {
            return Ok(RenewReply::Renewed);
        }
        let refused: Vec<&String> = replies
            .iter()
            .filter_map(|r| match r {
                Ok(RenewReply::Refused { reason }) => Some(reason),
                _ => None,
            })
            .collect();
        if refused.len() > self.nodes.len() - majority {
            return Ok(RenewReply::Refused {
                reason: format!(
                    "refused by {} of {} nodes: {}",
                    refused.len(),
                    self.nodes.len(),
                    refused[0]
                ),
            });
        }
        Err(Error::NoQuorum {
            op: "renew",
            answered: renewed,
            needed: majority,
            total: self.nodes.len(),
            last: replies
                .into_iter()
                .find_map(|r| r.err())
                .map(|e| e.to_string())
                .unwrap_or_default(),
        })
    }

    /// Renews many leases with one pipeline per node, then tallies each lease's
    /// majority as [`Quorum::renew`] does.
    pub async fn renew_many(&self, items: &[super::RenewItem<'_>]) -> Vec<Result<RenewReply>> {
        let ttl = items.iter().map(|i| i.ttl).min().unwrap_or_default();
        let limit = node_timeout(ttl);
        let per_node: Vec<Vec<Result<RenewReply>>> =
            join_all(self.nodes.iter().map(|n| async move {
                match tokio::time::timeout(limit, n.renew_many(items)).await {
                    Ok(r) => r,
                    Err(_) => items
                        .iter()
                        .map(|_| {
                            Err(Error::Timeout {
                                op: "quorum request",
                                after: limit,
                            })
                        })
                        .collect(),
                }
            }))
            .await;
        let mut columns: Vec<Vec<Result<RenewReply>>> =
            (0..items.len()).map(|_| Vec::new()).collect();
        for node in per_node {
            for (i, r) in node.into_iter().enumerate() {
                if let Some(col) = columns.get_mut(i) {
                    col.push(r);
                }
            }
        }
        columns
            .into_iter()
            .map(|replies| self.tally_renew(replies))
            .collect()
    }

    /// Releases on every server; true when any of them still had it.
    pub async fn release(&self, name: &str, holder: &HolderId) -> Result<bool> {
        let replies = self
            .all(Duration::from_secs(10), |n| n.release(name, holder, true))
            .await;
        Ok(replies.iter().any(|r| matches!(r, Ok(true))))
    }

    /// Replaces the value on every server; true when a majority did.
    pub async fn proclaim(&self, name: &str, holder: &HolderId, value: &str) -> Result<bool> {
        let replies = self
            .all(Duration::from_secs(10), |n| n.proclaim(name, holder, value))
            .await;
        Ok(replies.iter().filter(|r| matches!(r, Ok(true))).count() >= self.majority())
    }

    /// `run`'s note on every server that answers (it is for people only).
    pub async fn note(&self, name: &str, holder: &HolderId, note: &str) -> Result<bool> {
        let replies = self
            .all(Duration::from_secs(10), |n| n.note(name, holder, note))
            .await;
        let mut last = None;
        for r in replies {
            match r {
                Ok(true) => return Ok(true),
                Ok(false) => last = Some(Ok(false)),
                Err(e) => last = last.or(Some(Err(e))),
            }
        }
        last.unwrap_or(Ok(false))
    }

    /// The notes of `holders`: from the first server that has any.
    pub async fn notes(&self, name: &str, holders: &[&str]) -> Result<Vec<Option<String>>> {
        let replies = self
            .all(Duration::from_secs(10), |n| n.notes(name, holders))
            .await;
        let mut first = None;
        for r in replies {
            match r {
                Ok(v) if v.iter().any(Option::is_some) => return Ok(v),
                Ok(v) => first = first.or(Some(Ok(v))),
                Err(e) => first = first.or(Some(Err(e))),
            }
        }
        first.unwrap_or_else(|| Ok(vec![None; holders.len()]))
    }

    /// The holder a majority agrees on, if any.
    pub async fn status(&self, name: &str) -> Result<LeaseStatus> {
        let replies = self.all(Duration::from_secs(10), |n| n.status(name)).await;
        let ok: Vec<LeaseStatus> = replies.into_iter().filter_map(|r| r.ok()).collect();
        let majority = self.majority();
        if ok.len() < majority {
            return Err(Error::NoQuorum {
                op: "status",
                answered: ok.len(),
                needed: majority,
                total: self.nodes.len(),
                last: String::new(),
            });
        }
        let last_token = ok.iter().map(|s| s.last_token).max().unwrap_or(0);
        let mut best: Option<HolderInfo> = None;
        for s in &ok {
            let Some(h) = &s.holder else { continue };
            let same: Vec<&HolderInfo> = ok
                .iter()
                .filter_map(|o| o.holder.as_ref())
                .filter(|o| o.holder == h.holder)
                .collect();
            if same.len() >= majority {
                let mut info = h.clone();
                info.ttl_left = same.iter().map(|o| o.ttl_left).min().unwrap_or_default();
                info.token = same.iter().map(|o| o.token).max().unwrap_or(info.token);
                best = Some(info);
                break;
            }
        }
        // A grant needs a majority out of quarantine: the majority-th shortest wait.
        let mut waits: Vec<Duration> = ok
            .iter()
            .map(|s| s.quarantine.unwrap_or_default())
            .collect();
        waits.sort();
        let quarantine = match &best {
            None => waits.get(majority - 1).copied().filter(|w| !w.is_zero()),
            Some(_) => None,
        };
        Ok(LeaseStatus {
            name: name.to_string(),
            holder: best,
            last_token,
            semaphore: false,
            quarantine,
        })
    }

    /// Subscribes on every node at once; a node that does not answer in time
    /// stays unconfirmed and does not hold up the others.
    pub(crate) async fn subscribe(&self, name: &str) -> Result<Vec<notify::Subscription>> {
        // A quorum has no queue, so no grants reach inboxes: only the name's
        // events matter.
        let parts = join_all(self.nodes.iter().map(|n| n.subscribe(name, false))).await;
        let mut out = Vec::new();
        for p in parts {
            out.extend(p?);
        }
        Ok(out)
    }
}
