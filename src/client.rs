//! The entry point: a connection to Redis from which leases and elections are made.

use std::time::Duration;

use crate::backend::{Backend, ConnectOptions, LeaseStatus, keys::DEFAULT_PREFIX};
use crate::election::Election;
use crate::error::Result;
use crate::lease::{LeaseBuilder, Leases, SemaphoreBuilder};

/// A connection to Redis (one server, a Sentinel group, a Cluster, or a quorum
/// of independent servers), cheap to clone. No globals: make one and pass it around.
///
/// Everything starts here: [`Client::lease`], [`Client::semaphore`],
/// [`Client::election`], [`Client::quota`], [`Client::token_cache`]. One
/// client keeps all its leases with one background renewal task and waits
/// on all of them over one shared pub/sub connection (per server), so make
/// one per process and clone it rather than one per lease.
///
/// It needs a tokio runtime (with the time and I/O drivers) from
/// [`Client::connect`] on.
#[derive(Clone, Debug)]
pub struct Client {
    /// The backend and one renewal service for every lease this client holds.
    leases: Leases,
}

/// Options for [`Client`]; made by [`Client::builder`] or
/// [`Client::builder_many`], finished by [`ClientBuilder::connect`].
///
/// ```no_run
/// # async fn demo() -> leasehold::Result<()> {
/// use std::time::Duration;
/// let client = leasehold::Client::builder("redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster")
///     .min_replicas(1)                       // a failover keeps held leases
///     .op_timeout(Duration::from_secs(2))
///     .prefix("myapp:")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    urls: Vec<String>,
    prefix: String,
    opts: ConnectOptions,
}

impl ClientBuilder {
    /// Adds another server: three or more `redis://` URLs form a quorum
    /// (two are refused: they cannot outvote a failure).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Prefix of every key and channel (default `leasehold:`): 1 to 64 bytes of
    /// letters, digits and `- _ . : / @ + =`, ending in a separator (`:`
    /// usually), checked at [`ClientBuilder::connect`]. Every client of one
    /// lease must use the same prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one request may take before it counts as failed (default 5 s).
    /// Renewals are additionally bounded by the lease's safety deadline.
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.opts.op_timeout = d;
        self
    }

    /// Single server or Sentinel: acquire and renew count only once `n`
    /// replicas have the write (`WAIT`), so that a failover keeps the lease
    /// (default 0). Refused on Cluster and on a quorum.
    pub fn min_replicas(mut self, n: u32) -> Self {
        self.opts.min_replicas = n;
        self
    }

    /// For `rediss://`: trust this CA (PEM) instead of the system's roots.
    pub fn tls_ca(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.opts.tls.ca = Some(path.into());
        self
    }

    /// For `rediss://`: present this client certificate and key (PEM; mutual TLS).
    pub fn tls_client_cert(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.opts.tls.cert = Some(cert.into());
        self.opts.tls.key = Some(key.into());
        self
    }

    /// Connects and checks that Redis answers (a majority, for a quorum).
    /// Starts the client's renewal task, so it must run inside a tokio
    /// runtime. Cancel-safe: a dropped call leaves nothing behind.
    ///
    /// # Errors
    /// [`crate::Error::BadUrl`], [`crate::Error::Unreachable`], [`crate::Error::Auth`],
    /// [`crate::Error::BadConfig`] (prefix), [`crate::Error::NoQuorum`].
    pub async fn connect(self) -> Result<Client> {
        let backend = Backend::connect(&self.urls, &self.prefix, &self.opts).await?;
        Ok(Client {
            leases: Leases::start(backend),
        })
    }
}

impl Client {
    /// Options for a client of the Redis at `url` (`redis://`, `rediss://`,
    /// `redis+sentinel://`, `redis+cluster://`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            urls: vec![url.into()],
            prefix: DEFAULT_PREFIX.to_string(),
            opts: ConnectOptions::default(),
        }
    }

    /// Options for a client of several servers: three or more `redis://`
    /// URLs form a quorum (Redlock); a single URL is the same as
    /// [`Client::builder`].
    pub fn builder_many<I, S>(urls: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            urls: urls.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_string(),
            opts: ConnectOptions::default(),
        }
    }

    /// Connects to the Redis at `url` with default options; see
    /// [`Client::builder`] for the URL forms and [`ClientBuilder::connect`]
    /// for what it checks.
    ///
    /// # Errors
    /// As [`ClientBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Client> {
        Self::builder(url).connect().await
    }

    /// A lease named `name`; see [`LeaseBuilder`].
    pub fn lease(&self, name: impl Into<String>) -> LeaseBuilder {
        self.leases.lease(name)
    }

    /// One of `limit` slots of the semaphore `name`: at most `limit` holders at
    /// once, each with its own expiring entry, fencing token, renewal, `lost()`
    /// and safety deadline, exactly like a lease (the guard is a [`crate::Permit`]).
    pub fn semaphore(&self, name: impl Into<String>, limit: u32) -> SemaphoreBuilder {
        SemaphoreBuilder::new(self.lease(name), limit)
    }

    /// The holders of semaphore `name`, as Redis sees them (a snapshot).
    /// Cancel-safe (it only reads).
    ///
    /// # Errors
    /// Redis errors; [`crate::Error::BadConfig`] on a quorum (semaphores
    /// need one logical Redis).
    pub async fn semaphore_status(&self, name: &str) -> Result<Vec<crate::HolderInfo>> {
        self.leases
            .backend()
            .single("semaphore")?
            .sem_status(name)
            .await
    }

    /// An election named `name` (a lease whose value names the leader); see
    /// [`crate::election`].
    pub fn election(&self, name: impl Into<String>) -> Election {
        Election::new(self.leases.clone(), name.into())
    }

    /// A quota of `limit` per `per` (e.g. 3 per day); see [`crate::quota`]
    /// for what a window is. Checked by [`crate::QuotaBuilder::build`].
    pub fn quota(&self, limit: u64, per: Duration) -> crate::quota::QuotaBuilder {
        crate::quota::QuotaBuilder::new(self.leases.backend().clone(), limit, per)
    }

    /// A shared token cache; see [`crate::cache`]. Checked by
    /// [`crate::TokenCacheBuilder::build`].
    pub fn token_cache(&self) -> crate::cache::TokenCacheBuilder {
        crate::cache::TokenCacheBuilder::new(self.leases.clone())
    }

    /// Who holds `name` right now, as Redis sees it (a snapshot, never proof
    /// of holding). Cancel-safe (it only reads).
    ///
    /// # Errors
    /// Redis errors; [`crate::Error::BadName`] for a bad name.
    pub async fn status(&self, name: &str) -> Result<LeaseStatus> {
        self.leases.status(name).await
    }

    /// Waits (at most `limit`) for the background clean-ups this client
    /// started: waiters that gave up leaving their queues, dropped guards
    /// giving their leases back. Call it before the process exits, so that
    /// the next waiter in line is not held up by a place nobody will claim.
    /// Cancel-safe: the clean-ups go on in the background.
    pub async fn close(&self, limit: Duration) {
        self.leases.backend().cleanups().wait(limit).await;
    }

    /// The protocol layer, for tools and tests that need single operations.
    // Hidden, not part of the stable API: the integration tests and benches
    // use it to act as a crashed holder or a stranger (`attempt`, `renew`,
    // `release`); see the `backend` module.
    #[doc(hidden)]
    pub fn backend(&self) -> &Backend {
        self.leases.backend()
    }
}
