//! One logical Redis: a standalone server, a Sentinel-managed master, or a
//! Cluster. The same scripts run on all three; only the connection differs.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Value};

use super::notify::{Notifier, Source};
use super::scripts::{self, Call, Lua};
use super::url::{Target, parse, redact_url, scrub};
use super::{AcquireReply, ConnectOptions, HolderInfo, Kind, LeaseStatus, RenewReply, keys};
use crate::error::{Error, Result};
use crate::token::{FencingToken, HolderId};

/// How requests reach the Redis.
#[derive(Clone)]
enum Conn {
    /// Reconnects to the same address after an I/O error.
    Plain(ConnectionManager),
    /// Asks the sentinels for the current master after an error that may mean
    /// a failover (I/O, READONLY, timeout).
    Sentinel(Arc<SentinelConn>),
    /// Follows MOVED/ASK and slot migrations (redis-rs cluster-async).
    Cluster(ClusterConnection),
}

struct SentinelConn {
    client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

impl SentinelConn {
    async fn get(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = lock(&self.current).clone() {
            return Ok(c);
        }
        let mut sc = self.client.lock().await;
        if let Some(c) = lock(&self.current).clone() {
            return Ok(c);
        }
        let client = sc.async_get_client().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *lock(&self.current) = Some(conn.clone());
        Ok(conn)
    }

    fn forget(&self) {
        lock(&self.current).take();
    }
}

/// A connection of any kind, so that one code path runs every request.
enum AnyConn {
    Plain(ConnectionManager),
    Multi(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for AnyConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            AnyConn::Plain(c) => c.req_packed_command(cmd),
            AnyConn::Multi(c) => c.req_packed_command(cmd),
            AnyConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            AnyConn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            AnyConn::Multi(c) => c.req_packed_commands(pipeline, offset, count),
            AnyConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AnyConn::Plain(c) => c.get_db(),
            AnyConn::Multi(c) => c.get_db(),
            AnyConn::Cluster(c) => c.get_db(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn failover_hint(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || text.contains("READONLY")
        || text.contains("LOADING")
        || text.contains("MASTERDOWN")
}

/// One logical Redis.
#[derive(Clone)]
pub struct Node {
    conn: Conn,
    prefix: String,
    url: String,
    op_timeout: Duration,
    min_replicas: u32,
    notifier: Notifier,
    cleanups: super::Cleanups,
    /// This client's own channel: a release hands the lease to a waiter of
    /// ours by publishing there, so that the message reaches this connection
    /// only, not every process waiting on the name.
    inbox: String,
    /// Subscribed to at the first wait, kept for the client's life.
    inbox_sub: Arc<tokio::sync::OnceCell<super::notify::Subscription>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("url", &self.url).finish()
    }
}

/// Per-slot epoch markers on Cluster: a hash tag that lands in each slot, so
/// that the marker shares the slot of the lease it guards.
static SLOT_TAGS: LazyLock<HashMap<redis::cluster_routing::Slot, String>> = LazyLock::new(|| {
    let mut tags = HashMap::with_capacity(16_384);
    let mut i: u64 = 0;
    while tags.len() < 16_384 {
        let tag = format!("e{i}");
        tags.entry(redis::cluster_routing::Slot::for_key(&tag))
            .or_insert(tag);
        i += 1;
    }
    tags
});

/// What a failed connection set-up means: refused credentials (69), a
/// database number or address Redis refuses (64 / 69, saying so), or no
/// answer (69, "is redis-server running there?").
fn classify(shown: &str) -> impl Fn(redis::RedisError) -> Error + '_ {
    move |e: redis::RedisError| {
        let text = e.to_string();
        if e.kind() == redis::ErrorKind::AuthenticationFailed
            || text.contains("AuthenticationFailed")
            || text.contains("WRONGPASS")
            || text.contains("NOAUTH")
            || text.contains("NOPERM")
        {
            Error::Auth {
                url: shown.to_string(),
                source: e,
            }
        } else if text.contains("switch database") || text.contains("DB index") {
            Error::BadUrl {
                url: shown.to_string(),
                reason: format!(
                    "Redis refused its database number ({}): a server has databases 0 to 15 unless configured otherwise, a Cluster only 0",
                    e.detail().unwrap_or("DB index is out of range")
                ),
            }
        } else if text.contains("sentinel node") {
            Error::Refused {
                op: "connect",
                message: format!(
                    "{shown} does not answer as a Redis Sentinel (redis+sentinel:// lists sentinels, usually on port 26379; use redis:// for a server)"
                ),
            }
        } else if e.code().is_some()
            && !e.is_io_error()
            && !e.is_connection_refusal()
            && !["LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN"]
                .iter()
                .any(|c| text.contains(c))
        {
            // The server answered, with an error.
            Error::Refused {
                op: "connect",
                message: format!("{shown} answered {text}"),
            }
        } else {
            Error::Unreachable {
                url: shown.to_string(),
                source: e,
            }
        }
    }
}

/// Longest PEM file read (a CA bundle is a few hundred kB at most).
const MAX_PEM: u64 = 4 << 20;

/// Reads a PEM file, refusing what is not a regular file of sane size: a
/// FIFO or `/dev/zero` must not hang (or fill) start-up. The open does not
/// block (O_NONBLOCK: a FIFO without a writer), and the type is checked on
/// the opened file, not on a path that could change in between.
fn read_pem(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |rule: String| Error::BadConfig {
        what,
        value: path.display().to_string(),
        rule,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| bad(format!("cannot be read: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| bad(format!("cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(bad("is not a regular file (a PEM file is expected)".into()));
    }
    let mut out = Vec::new();
    file.take(MAX_PEM + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("cannot be read: {e}")))?;
    if out.len() as u64 > MAX_PEM {
        return Err(bad(format!(
            "is larger than {} MiB: not a PEM file",
            MAX_PEM >> 20
        )));
    }
    Ok(out)
}

/// The custom CA and client certificate for a `rediss://` URL, if any were given.
fn tls_certificates(
    url: &str,
    shown: &str,
    tls: &super::TlsFiles,
) -> Result<Option<redis::TlsCertificates>> {
    if tls.ca.is_none() && tls.cert.is_none() && tls.key.is_none() {
        return Ok(None);
    }
    if !url.starts_with("rediss") {
        return Err(Error::BadConfig {
            what: "TLS files",
            value: shown.to_string(),
            rule: "apply to rediss:// URLs only".into(),
        });
    }
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
            client_cert: read_pem("TLS client certificate", c)?,
            client_key: read_pem("TLS client key", k)?,
        }),
        (None, None) => None,
        _ => {
            return Err(Error::BadConfig {
                what: "TLS client certificate",
                value: shown.to_string(),
                rule: "needs both --tls-cert and --tls-key".into(),
            });
        }
    };
    let root_cert = match &tls.ca {
        Some(ca) => Some(read_pem("TLS CA file", ca)?),
        None => None,
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// `LEASEHOLD_REDIS_PASSWORD`, for URLs without a password of their own.
fn env_password() -> Result<Option<String>> {
    match std::env::var("LEASEHOLD_REDIS_PASSWORD") {
        Ok(pw) => Ok(Some(pw)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::BadConfig {
            what: "LEASEHOLD_REDIS_PASSWORD",
            value: "(not shown)".into(),
            rule: "is not valid UTF-8; Redis passwords are text".into(),
        }),
    }
}

fn client_for(url: &str, shown: &str, tls: &super::TlsFiles) -> Result<redis::Client> {
    if url.starts_with("rediss") {
        // One process-wide rustls provider; a second install is a no-op error.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let mut info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| Error::BadUrl {
            url: shown.to_string(),
            reason: format!(
                "not a valid URL ({}); a password with reserved characters must be percent-encoded, or left out and set in LEASEHOLD_REDIS_PASSWORD",
                scrub(&e.to_string(), url)
            ),
        })?;
    if let Some(pw) = env_password()?
        && info.redis_settings().password().is_none()
    {
        let settings = info.redis_settings().clone().set_password(pw);
        info = info.set_redis_settings(settings);
    }
    let Some(certs) = tls_certificates(url, shown, tls)? else {
        return redis::Client::open(info).map_err(|e| Error::BadUrl {
            url: shown.to_string(),
            reason: scrub(&e.to_string(), url),
        });
    };
    redis::Client::build_with_tls(info, certs).map_err(|e| Error::BadConfig {
        what: "TLS files",
        value: shown.to_string(),
        rule: format!("are not usable PEM: {e}"),
    })
}

impl Node {
    /// Connects to the Redis named by `url` and checks that it answers.
    pub async fn connect(url: &str, prefix: &str, opts: &ConnectOptions) -> Result<Node> {
        Self::open(url, prefix, opts, false).await
    }

    /// Like [`Node::connect`] for a plain server, but connects on first use, so
    /// that a quorum member may be down at start.
    pub async fn connect_lazy(url: &str, prefix: &str, opts: &ConnectOptions) -> Result<Node> {
        Self::open(url, prefix, opts, true).await
    }

    /// Checks that the server answers.
    pub async fn ping(&self) -> Result<()> {
        let shown = self.url.clone();
        self.run("ping", async |c| {
            redis::cmd("PING").query_async::<String>(c).await
        })
        .await
        .map(|_| ())
        .map_err(|e| match e {
            Error::Redis { source, .. } => classify(&shown)(source),
            other => other,
        })
    }

    async fn open(url: &str, prefix: &str, opts: &ConnectOptions, lazy: bool) -> Result<Node> {
        keys::validate_prefix(prefix)?;
        let shown = redact_url(url);
        let timeout = opts.op_timeout.min(Duration::from_secs(5));
        let aconfig = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let (conn, source) = match parse(url)? {
            Target::Single(u) if lazy => {
                let client = client_for(&u, &shown, &opts.tls)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(200));
                let mgr = ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map_err(classify(&shown))?;
                (Conn::Plain(mgr), Source::Clients(vec![client]))
            }
            Target::Single(u) => {
                let client = client_for(&u, &shown, &opts.tls)?;
                // One direct attempt first, so that a wrong address or password
                // is reported at once instead of after the manager's backoff.
                let mut probe = client
                    .get_multiplexed_async_connection_with_config(&aconfig)
                    .await
                    .map_err(classify(&shown))?;
                let _: String = redis::cmd("PING")
                    .query_async(&mut probe)
                    .await
                    .map_err(classify(&shown))?;
                warn_on_eviction(&mut probe).await;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_number_of_retries(3)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(500));
                let mgr = ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map_err(classify(&shown))?;
                (Conn::Plain(mgr), Source::Clients(vec![client]))
            }
            Target::Sentinel {
                sentinels,
                master,
                user,
                password,
                db,
            } => {
                let mut rci = redis::RedisConnectionInfo::default().set_db(db);
                let password = match password {
                    Some(p) => Some(p),
                    None => env_password()?,
                };
                if let Some(u) = user {
                    rci = rci.set_username(u);
                }
                if let Some(p) = password {
                    rci = rci.set_password(p);
                }
                let node_info = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(rci);
                let sc = redis::sentinel::SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    Some(node_info.clone()),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| Error::BadUrl {
                    url: shown.clone(),
                    reason: scrub(&e.to_string(), url),
                })?;
                let sc2 = redis::sentinel::SentinelClient::build(
                    sentinels,
                    master,
                    Some(node_info),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| Error::BadUrl {
                    url: shown.clone(),
                    reason: scrub(&e.to_string(), url),
                })?;
                let conn = Arc::new(SentinelConn {
                    client: tokio::sync::Mutex::new(sc),
                    current: Mutex::new(None),
                    config: aconfig.clone(),
                });
                let mut probe = conn.get().await.map_err(classify(&shown))?;
                let _: String = redis::cmd("PING")
                    .query_async(&mut probe)
                    .await
                    .map_err(classify(&shown))?;
                warn_on_eviction(&mut probe).await;
                (
                    Conn::Sentinel(conn),
                    Source::Sentinel(Arc::new(tokio::sync::Mutex::new(sc2))),
                )
            }
            Target::Cluster(seeds) => {
                let mut clients = Vec::new();
                for s in &seeds {
                    clients.push(client_for(s, &shown, &opts.tls)?);
                }
                let mut ccb = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(6);
                // The seeds carry the URL's password, if it has one; otherwise
                // the environment's, as for every other kind of URL.
                let url_has_password = seeds.first().is_some_and(|s| {
                    redis::IntoConnectionInfo::into_connection_info(s.as_str())
                        .is_ok_and(|i| i.redis_settings().password().is_some())
                });
                if !url_has_password && let Some(pw) = env_password()? {
                    ccb = ccb.password(pw);
                }
                if let Some(certs) = tls_certificates(url, &shown, &opts.tls)? {
                    ccb = ccb.certs(certs);
                }
                let cc = ccb.build().map_err(|e| Error::BadUrl {
                    url: shown.clone(),
                    reason: scrub(&e.to_string(), url),
                })?;
                let mut conn = cc.get_async_connection().await.map_err(classify(&shown))?;
                let _: String = redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .map_err(classify(&shown))?;
                if opts.min_replicas > 0 {
                    return Err(Error::BadConfig {
                        what: "min-replicas",
                        value: opts.min_replicas.to_string(),
                        rule: "is supported with a single Redis or Sentinel, not on Cluster".into(),
                    });
                }
                (Conn::Cluster(conn), Source::Clients(clients))
            }
        };
        Ok(Node {
            conn,
            prefix: prefix.to_string(),
            url: shown,
            op_timeout: opts.op_timeout,
            min_replicas: opts.min_replicas,
            notifier: Notifier::start(source),
            cleanups: super::Cleanups::default(),
            inbox: format!("{prefix}inbox:{}", HolderId::generate().random_part()),
            inbox_sub: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn min_replicas(&self) -> u32 {
        self.min_replicas
    }

    /// How long `WAIT` may take for a write with TTL `ttl`: a fifth of it, and
    /// well inside the request timeout, so that an unconfirmed acquisition is
    /// answered as such (and given back) rather than timing out unknown.
    fn wait_limit(&self, ttl: Duration) -> Duration {
        (ttl / 5).min(self.op_timeout / 2)
    }

    /// Tells the scripts that this client's writes are confirmed by replicas
    /// (`WAIT`): a promoted replica may then trust them (prelude.lua).
    fn confirm_flag(&self) -> &'static str {
        if self.min_replicas > 0 { "w" } else { "" }
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
    /// the lease's slot on Cluster.
    pub fn keys(&self, name: &str) -> Result<keys::Keys> {
        keys::validate_key_name(name)?;
        let mut k = keys::Keys::new(&self.prefix, name);
        if matches!(self.conn, Conn::Cluster(_)) {
            let slot = redis::cluster_routing::Slot::for_key(&k.lease);
            if let Some(tag) = SLOT_TAGS.get(&slot) {
                k.epoch = format!("{}{{{tag}}}:epoch", self.prefix);
            }
        }
        Ok(k)
    }

    async fn run<T>(
        &self,
        op: &'static str,
        f: impl AsyncFnOnce(&mut AnyConn) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let fut = async {
            match &self.conn {
                Conn::Plain(m) => f(&mut AnyConn::Plain(m.clone())).await,
                Conn::Cluster(cc) => f(&mut AnyConn::Cluster(cc.clone())).await,
                Conn::Sentinel(s) => {
                    let mut c = AnyConn::Multi(s.get().await?);
                    let r = f(&mut c).await;
                    if let Err(e) = &r
                        && failover_hint(e)
                    {
                        s.forget();
                    }
                    r
                }
            }
        };
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(r) => r.map_err(|e| Error::redis(op, e)),
            Err(_) => {
                if let Conn::Sentinel(s) = &self.conn {
                    s.forget();
                }
                Err(Error::Timeout {
                    op,
                    after: self.op_timeout,
                })
            }
        }
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
    async fn call(&self, op: &'static str, call: Call) -> Result<Value> {
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
                .key(&k.slotinfo),
        }
        .arg(item.holder.as_str())
        .arg(item.ttl.as_millis() as u64);
        match (item.repair, item.kind) {
            (Some((token, value)), Kind::Lease) => call.arg(token.0).arg(value),
            _ => call,
        }
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

    pub async fn proclaim(&self, name: &str, holder: &HolderId, value: &str) -> Result<bool> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::PROCLAIM)
            .key(&k.lease)
            .arg(holder.as_str())
            .arg(value)
            .arg(&k.events);
        Ok(int("proclaim", &self.call("proclaim", call).await?)? == 1)
    }

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

    /// `sem_acquire.lua`: one attempt at one of `limit` slots of `a.name`.
    pub async fn sem_attempt(&self, a: &super::Attempt<'_>, limit: u32) -> Result<AcquireReply> {
        let (name, holder, ttl, value) = (a.name, a.holder, a.ttl, a.value);
        let k = self.keys(name)?;
        let call = Call::new(&scripts::SEM_ACQUIRE)
            .key(&k.slots)
            .key(&k.slotinfo)
            .key(&k.lease)
            .key(&k.epoch)
            .arg(holder.as_str())
            .arg(ttl.as_millis() as u64)
            .arg(value)
            .arg(limit)
            .arg(&k.events)
            .arg(self.confirm_flag());
        let (mut replies, replicated) = self
            .exec(
                "semaphore",
                std::slice::from_ref(&call),
                Some(self.wait_limit(ttl)),
            )
            .await?;
        let r = array(
            "semaphore",
            replies
                .pop()
                .unwrap_or_else(|| Err(bad("semaphore", "no reply")))?,
        )?;
        let ms = |i| -> Result<Duration> {
            Ok(Duration::from_millis(
                int_at("semaphore", &r, i)?.max(0) as u64
            ))
        };
        match int_at("semaphore", &r, 0)? {
            1 => {
                if !replicated {
                    let _ = self.sem_release(name, holder).await;
                    return Err(Error::NotReplicated {
                        op: "semaphore acquire",
                        want: self.min_replicas,
                    });
                }
                Ok(AcquireReply::Acquired {
                    token: FencingToken(u64_at("semaphore", &r, 1)?),
                })
            }
            0 => Ok(AcquireReply::Full {
                wait: ms(1)?,
                used: int_at("semaphore", &r, 2)?.max(0) as u32,
            }),
            2 => Ok(AcquireReply::Quarantined { wait: ms(1)? }),
            other => Err(Error::Protocol {
                op: "semaphore",
                detail: format!("status {other}"),
            }),
        }
    }

    /// `sem_release.lua`: gives `holder`'s slot back.
    pub async fn sem_release(&self, name: &str, holder: &HolderId) -> Result<bool> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::SEM_RELEASE)
            .key(&k.slots)
            .key(&k.slotinfo)
            .arg(holder.as_str())
            .arg(&k.events);
        Ok(int(
            "semaphore release",
            &self.call("semaphore release", call).await?,
        )? == 1)
    }

    /// The unexpired holders of semaphore `name`.
    pub async fn sem_status(&self, name: &str) -> Result<Vec<HolderInfo>> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::SEM_STATUS)
            .key(&k.slots)
            .key(&k.slotinfo);
        let r = array(
            "semaphore status",
            self.call("semaphore status", call).await?,
        )?;
        let mut out = Vec::new();
        for i in (0..r.len()).step_by(3) {
            let info = string_at("semaphore status", &r, i + 2)?;
            let (token, value) = info.split_once(' ').unwrap_or((&info, ""));
            out.push(HolderInfo {
                holder: HolderId::from_raw(string_at("semaphore status", &r, i)?),
                ttl_left: Duration::from_millis(
                    int_at("semaphore status", &r, i + 1)?.max(0) as u64
                ),
                token: FencingToken(token.parse().unwrap_or(0)),
                value: value.to_string(),
            });
        }
        Ok(out)
    }

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
        format!("{}{{quota:{key}}}:{suffix}", self.prefix)
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
        format!("{}{{cache#{name}}}:{suffix}", self.prefix)
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

    /// Joins the events of `name`, and this client's inbox (where releases
    /// hand over the lease to our waiters), both confirmed by Redis.
    pub(crate) async fn subscribe(&self, name: &str) -> Result<Vec<super::notify::Subscription>> {
        let k = self.keys(name)?;
        self.inbox_sub
            .get_or_try_init(|| self.notifier.subscribe(&self.inbox))
            .await?;
        Ok(vec![
            self.notifier.subscribe(&k.events).await?,
            self.notifier.subscribe(&self.inbox).await?,
        ])
    }
}

/// Lease keys carry a TTL, so any eviction policy other than `noeviction` may
/// delete a held lease under memory pressure and let a second holder in. Say
/// so once at connect; managed Redis often forbids CONFIG, which is fine.
async fn warn_on_eviction(conn: &mut MultiplexedConnection) {
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

/// One lease (or semaphore slot) to renew in a batch.
pub struct RenewItem<'a> {
    pub kind: Kind,
    pub name: &'a str,
    pub holder: &'a HolderId,
    pub ttl: Duration,
    /// Quorum repair: re-create the key with this token and value if missing.
    pub repair: Option<(FencingToken, &'a str)>,
}

fn parse_renew(v: Value) -> Result<RenewReply> {
    let reply = array("renew", v)?;
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

/// The same failure for every item of a failed batch.
fn clone_unavailable(e: &Error) -> Error {
    match e {
        Error::Timeout { op, after } => Error::Timeout { op, after: *after },
        other => Error::Redis {
            op: "renew",
            source: redis::RedisError::from(std::io::Error::other(other.to_string())),
        },
    }
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
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
