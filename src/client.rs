//! The entry point: a connection to Redis from which leases and elections are made.

use std::time::Duration;

use crate::backend::{Backend, LeaseStatus, keys::DEFAULT_PREFIX};
use crate::election::Election;
use crate::error::Result;
use crate::lease::LeaseBuilder;

/// A connection to Redis, cheap to clone. No globals: make one per Redis (or
/// set of Redis servers) and pass it around.
#[derive(Clone, Debug)]
pub struct Client {
    backend: Backend,
}

/// Options for [`Client`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    url: String,
    prefix: String,
    op_timeout: Duration,
}

impl ClientBuilder {
    /// Prefix of every key (default `leasehold:`); no braces.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one request may take before it counts as failed (default 5 s).
    /// Renewals are additionally bounded by the lease's safety deadline.
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d;
        self
    }

    /// Connects and checks that Redis answers.
    ///
    /// # Errors
    /// [`crate::Error::BadUrl`], [`crate::Error::Unreachable`], [`crate::Error::Auth`],
    /// [`crate::Error::BadConfig`] (prefix).
    pub async fn connect(self) -> Result<Client> {
        let backend = Backend::connect(&self.url, &self.prefix, self.op_timeout).await?;
        Ok(Client { backend })
    }
}

impl Client {
    /// Options for a client of the Redis at `url`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_string(),
            op_timeout: Duration::from_secs(5),
        }
    }

    /// Connects to the Redis at `url` with default options.
    pub async fn connect(url: &str) -> Result<Client> {
        Self::builder(url).connect().await
    }

    /// A lease named `name`; see [`LeaseBuilder`].
    pub fn lease(&self, name: impl Into<String>) -> LeaseBuilder {
        LeaseBuilder::new(self.backend.clone(), name.into())
    }

    /// An election named `name` (a lease whose value names the leader).
    pub fn election(&self, name: impl Into<String>) -> Election {
        Election::new(self.clone(), name.into())
    }

    /// Who holds `name` right now, as Redis sees it.
    pub async fn status(&self, name: &str) -> Result<LeaseStatus> {
        self.backend.status(name).await
    }

    /// The protocol layer, for tools and tests that need single operations.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }
}
