//! The entry point: a connection to Redis from which leases and elections are made.

use std::time::Duration;

use crate::backend::{Backend, ConnectOptions, LeaseStatus, keys::DEFAULT_PREFIX};
use crate::election::Election;
use crate::error::Result;
use crate::lease::{LeaseBuilder, Leases, SemaphoreBuilder};

/// A connection to Redis (one server, a Sentinel group, a Cluster, or a quorum
/// of independent servers), cheap to clone. No globals: make one and pass it around.
#[derive(Clone, Debug)]
pub struct Client {
    /// The backend and one renewal service for every lease this client holds.
    leases: Leases,
}

/// Options for [`Client`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    urls: Vec<String>,
    prefix: String,
    opts: ConnectOptions,
}

impl ClientBuilder {
    /// Adds another server: three or more `redis://` URLs form a quorum.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Prefix of every key (default `leasehold:`); no braces.
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
    /// replicas have the write (`WAIT`), so that a failover keeps the lease.
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

    /// Connects and checks that Redis answers.
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

    /// Options for a client of several servers (a quorum when three or more).
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

    /// Connects to the Redis at `url` with default options.
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

    /// The holders of semaphore `name`, as Redis sees them.
    pub async fn semaphore_status(&self, name: &str) -> Result<Vec<crate::HolderInfo>> {
        self.leases
            .backend()
            .single("semaphore")?
            .sem_status(name)
            .await
    }

    /// An election named `name` (a lease whose value names the leader).
    pub fn election(&self, name: impl Into<String>) -> Election {
        Election::new(self.leases.clone(), name.into())
    }

    /// A quota of `limit` per `per` (e.g. 3 per day); see [`crate::quota`].
    pub fn quota(&self, limit: u64, per: Duration) -> crate::quota::QuotaBuilder {
        crate::quota::QuotaBuilder::new(self.leases.backend().clone(), limit, per)
    }

    /// A shared token cache; see [`crate::cache`].
    pub fn token_cache(&self) -> crate::cache::TokenCacheBuilder {
        crate::cache::TokenCacheBuilder::new(self.leases.clone())
    }

    /// Who holds `name` right now, as Redis sees it.
    pub async fn status(&self, name: &str) -> Result<LeaseStatus> {
        self.leases.status(name).await
    }

    /// Waits (at most `limit`) for the background clean-ups this client
    /// started: waiters that gave up leaving their queues, dropped guards
    /// giving their leases back. Call it before the process exits, so that
    /// the next waiter in line is not held up by a place nobody will claim.
    pub async fn close(&self, limit: Duration) {
        self.leases.backend().cleanups().wait(limit).await;
    }

    /// The protocol layer, for tools and tests that need single operations.
    pub fn backend(&self) -> &Backend {
        self.leases.backend()
    }
}
