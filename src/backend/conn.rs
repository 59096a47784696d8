//! Connections to one logical Redis: a standalone server (reconnecting), a
//! Sentinel-managed master (asked again after anything that may mean a
//! failover), or a Cluster (following MOVED/ASK); TLS files; the warning
//! about eviction policies; and the one place every request is sent through
//! (`Node::run`), with its timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Value};

use super::node::Node;
use super::notify::{Notifier, Source};
use super::url::{Target, parse, redact_url, scrub};
use super::{ConnectOptions, keys};
use crate::error::{Error, Fault, Result, fault};
use crate::token::HolderId;

/// How requests reach the Redis.
#[derive(Clone)]
pub(super) enum Conn {
    /// Reconnects to the same address after an I/O error.
    Plain(ConnectionManager),
    /// Asks the sentinels for the current master after an error that may mean
    /// a failover (I/O, READONLY, timeout).
    Sentinel(Arc<SentinelConn>),
    /// Follows MOVED/ASK and hash-slot migrations (redis-rs cluster-async).
    Cluster(ClusterConnection),
}

pub(super) struct SentinelConn {
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
pub(super) enum AnyConn {
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

/// An error after which the Sentinel master must be looked up again.
fn failover_hint(e: &redis::RedisError) -> bool {
    matches!(fault(e), Fault::Unreachable | Fault::Transient)
}

/// What a failed connection set-up means: refused credentials (69), a
/// database number or address Redis refuses (64 / 69, saying so), or no
/// answer (69, "is redis-server running there?").
fn classify(shown: &str) -> impl Fn(redis::RedisError) -> Error + '_ {
    move |e: redis::RedisError| match fault(&e) {
        Fault::Auth | Fault::NoPerm => Error::Auth {
            url: shown.to_string(),
            source: e,
        },
        Fault::BadDatabase => Error::BadUrl {
            url: shown.to_string(),
            reason: format!(
                "Redis refused its database number ({}): a server has databases 0 to 15 unless configured otherwise, a Cluster only 0",
                e.detail().unwrap_or("DB index is out of range")
            ),
        },
        Fault::NotSentinel => Error::Refused {
            op: "connect",
            message: format!(
                "{shown} does not answer as a Redis Sentinel (redis+sentinel:// lists sentinels, usually on port 26379; use redis:// for a server)"
            ),
        },
        // The server answered, with an error.
        Fault::Other | Fault::WrongType | Fault::BadData(_) | Fault::NoScript
            if e.code().is_some() =>
        {
            Error::Refused {
                op: "connect",
                message: format!("{shown} answered {e}"),
            }
        }
        _ => Error::Unreachable {
            url: shown.to_string(),
            source: e,
        },
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

    pub(super) async fn run<T>(
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
}

/// Under an `allkeys-*` eviction policy Redis may evict a name record under
/// memory pressure (a held lease then looks free) and queue keys under any
/// policy but `noeviction`. Say so once at connect; managed Redis often
/// forbids CONFIG, which is fine.
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
