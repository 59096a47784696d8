//! Errors: one enum for the whole library, [`Error`]. Every message says
//! what to do next.
//!
//! Three things are deliberately *not* errors:
//! - losing a lease, which is an expected event reported by
//!   [`Lease::lost`](crate::Lease::lost), [`LeaseState`](crate::LeaseState)
//!   and [`ReleaseOutcome`](crate::ReleaseOutcome);
//! - finding a lease held by someone else
//!   ([`LeaseBuilder::try_acquire`](crate::LeaseBuilder::try_acquire) answers
//!   `Ok(None)`);
//! - a quota take that is denied ([`Taken::allowed`](crate::Taken::allowed)
//!   is false).
//!
//! [`Error::is_unavailable`] sorts the rest into "Redis could not be reached
//! or answered too late, try again later" and everything else (a bad
//! setting, a refusal, data leasehold did not write), which retrying does
//! not mend. Messages never contain a password (URLs are redacted) nor a
//! token cache's value.

use std::time::Duration;

/// Everything that can go wrong in leasehold's library.
///
/// Losing a lease is *not* an error: it is reported by [`crate::Lease::lost`]
/// and [`crate::ReleaseOutcome`], because it is an expected event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis URL could not be parsed.
    #[error("bad Redis URL {url}: {reason} (expected redis://[user:password@]host:port[/db])")]
    BadUrl {
        /// The URL, its password hidden (`user:***@`).
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No Redis answered at the address.
    #[error("Redis at {url} is unreachable: {source} (is redis-server running there?)")]
    Unreachable {
        /// The URL, its password hidden.
        url: String,
        /// What the connection attempt ran into.
        #[source]
        source: redis::RedisError,
    },

    /// Redis refused our credentials.
    #[error(
        "Redis at {url} refused authentication: {source} (check the user and password in the URL or LEASEHOLD_REDIS_PASSWORD)"
    )]
    Auth {
        /// The URL, its password hidden.
        url: String,
        /// Redis's refusal (`WRONGPASS`, `NOAUTH`).
        #[source]
        source: redis::RedisError,
    },

    /// A command failed after the connection was up. Its outcome is unknown:
    /// it may or may not have taken effect in Redis.
    #[error("Redis {op} failed: {source}")]
    Redis {
        /// The operation (`acquire`, `renew`, `release`, `status`, …).
        op: &'static str,
        /// The error the Redis client reported.
        #[source]
        source: redis::RedisError,
    },

    /// Fewer quorum nodes answered than a majority.
    #[error(
        "quorum {op} failed: {answered} of {total} Redis servers answered, {needed} needed (last error: {last}); bring servers back or check the network"
    )]
    NoQuorum {
        /// The operation.
        op: &'static str,
        /// How many servers answered in time.
        answered: usize,
        /// How many make a majority.
        needed: usize,
        /// How many servers the quorum has.
        total: usize,
        /// The last error a server gave, for a clue.
        last: String,
    },

    /// `WAIT` did not see the write on enough replicas in time.
    #[error(
        "{op} was not confirmed by {want} replica(s) in time: a failover could lose it (check the replicas, or lower --min-replicas)"
    )]
    NotReplicated {
        /// The write (`acquire`, `renew`); an unconfirmed acquisition has
        /// been given back, an unconfirmed renewal does not move the deadline.
        op: &'static str,
        /// The replicas asked for ([`ClientBuilder::min_replicas`](crate::ClientBuilder::min_replicas)).
        want: u32,
    },

    /// Redis refused a command (an ACL without the rights leasehold needs),
    /// or the connection's set-up.
    #[error("Redis refused {op}: {message}{}", acl_hint(message))]
    Refused {
        /// The operation refused.
        op: &'static str,
        /// Redis's message (e.g. `NOPERM …`).
        message: String,
    },

    /// A request did not complete in time.
    #[error("Redis {op} timed out after {after:?} (is Redis overloaded or the network down?)")]
    Timeout {
        /// The operation; its outcome is unknown.
        op: &'static str,
        /// The limit that ran out ([`ClientBuilder::op_timeout`](crate::ClientBuilder::op_timeout)).
        after: Duration,
    },

    /// Someone else wrote a key of another type where a lease key lives, or
    /// values leasehold does not write (a script failed on them).
    #[error("{}", foreign(key, found))]
    ForeignKey {
        /// The key, when Redis named it (empty otherwise).
        key: String,
        /// What is there: a Redis type (`string`, `list`, …) or a description.
        found: String,
    },

    /// The name is in use by the other kind (a lease vs. a semaphore): the two
    /// would not exclude each other.
    #[error(
        "the name is in use as a {kind}: a lease and a semaphore of one name would not exclude each other; use another name, or the same kind everywhere"
    )]
    NameInUse {
        /// What the name is in use as: `lease` or `semaphore`.
        kind: &'static str,
    },

    /// Redis answered something the protocol does not allow.
    #[error(
        "unexpected reply from Redis to {op}: {detail} (a key under the prefix may hold data leasehold did not write, or this is not Redis 6.2 or later)"
    )]
    Protocol {
        /// The operation.
        op: &'static str,
        /// What was unexpected.
        detail: String,
    },

    /// A lease name that cannot be used.
    #[error("bad lease name {name:?}: {reason}")]
    BadName {
        /// The name (cut at 64 characters).
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },

    /// A configuration value that breaks a rule.
    #[error("bad {what} {value}: {rule}")]
    BadConfig {
        /// The setting (`TTL`, `grace`, `key prefix`, `period`, …).
        what: &'static str,
        /// The value given, as text.
        value: String,
        /// The rule it breaks, and what would do instead.
        rule: String,
    },

    /// `acquire_timeout` elapsed without the lease.
    #[error("lease {name:?} was not acquired within {after:?}")]
    AcquireTimeout {
        /// The lease (or semaphore).
        name: String,
        /// The limit given to `acquire_timeout`.
        after: Duration,
    },

    /// The token cache's daily fetch budget is spent and nothing valid is cached.
    #[error(
        "token cache {name:?}: the budget of {limit} fetches per day is spent and no valid value is cached; it resets at {reset}"
    )]
    BudgetExhausted {
        /// The cache's name.
        name: String,
        /// The fetches allowed per day.
        limit: u64,
        /// When the budget resets (RFC 3339, UTC, to the second).
        reset: String,
    },

    /// The token cache's fetch failed (here or in the process that refreshed).
    #[error("token cache {name:?}: fetching a new value failed: {message}")]
    FetchFailed {
        /// The cache's name.
        name: String,
        /// The fetch's error message (the fetch's author must keep the value
        /// out of it), and when it is a recent failure served from Redis,
        /// when the next fetch may run.
        message: String,
    },

    /// A quota take got no answer in time: it may or may not have counted.
    #[error(
        "quota take on {key:?} got no answer within {after:?} (last: {last}): it may or may not have counted; a retry with request id {request} within {} counts it at most once",
        humantime::format_duration(*remember)
    )]
    QuotaUnknown {
        /// The quota key.
        key: String,
        /// The quota's timeout ([`QuotaBuilder::timeout`](crate::QuotaBuilder::timeout)).
        after: Duration,
        /// The last thing that went wrong.
        last: String,
        /// The request id: retry with it
        /// ([`Quota::take_with_id`](crate::Quota::take_with_id)) to count at most once.
        request: String,
        /// How long Redis remembers the request id.
        remember: Duration,
    },

    /// An operation that needs the lease was called after it was lost.
    #[error("lease {name:?} is no longer held by us")]
    NotHolder {
        /// The lease.
        name: String,
    },
}

impl Error {
    /// True when the error means Redis could not be reached or answered too
    /// late (unreachable, timed out, no quorum, not replicated, a failover in
    /// progress, a quota take of unknown outcome): trying again later may
    /// succeed. False for everything a retry cannot mend (bad settings,
    /// refusals, foreign data).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unreachable { .. }
            | Error::Timeout { .. }
            | Error::NoQuorum { .. }
            | Error::NotReplicated { .. }
            | Error::QuotaUnknown { .. } => true,
            Error::Redis { source, .. } => {
                matches!(fault(source), Fault::Unreachable | Fault::Transient)
            }
            _ => false,
        }
    }

    pub(crate) fn redis(op: &'static str, source: redis::RedisError) -> Error {
        match fault(&source) {
            Fault::Foreign { key, found } => Error::ForeignKey { key, found },
            Fault::Kind(kind) => Error::NameInUse { kind },
            Fault::NoPerm => Error::Refused {
                op,
                message: source.to_string(),
            },
            Fault::WrongType => Error::ForeignKey {
                key: String::new(),
                found: "a value of a type leasehold did not write".into(),
            },
            Fault::BadData(what) => Error::ForeignKey {
                key: String::new(),
                found: format!("a value leasehold did not write (Redis: {what})"),
            },
            _ => Error::Redis { op, source },
        }
    }
}

/// What a Redis error means to leasehold. Decided here only: nothing else in
/// the crate matches Redis's error text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// No answer: an I/O error, a connection dropped or refused, a timeout.
    Unreachable,
    /// A failover or resharding in progress (READONLY, LOADING, MASTERDOWN,
    /// TRYAGAIN, CLUSTERDOWN, a sentinel without a master yet): transient.
    Transient,
    /// Credentials refused (WRONGPASS, NOAUTH).
    Auth,
    /// The ACL refused a command, key or channel (NOPERM).
    NoPerm,
    /// The database number was refused.
    BadDatabase,
    /// The address answered, but not as a Redis Sentinel.
    NotSentinel,
    /// Redis does not know the script (restart, failover, SCRIPT FLUSH).
    NoScript,
    /// A key of a type leasehold did not write (from our scripts).
    Foreign { key: String, found: String },
    /// The name is in use by the other kind (from our scripts).
    Kind(&'static str),
    /// WRONGTYPE: a command met a key of another type.
    WrongType,
    /// One of our scripts failed on a value leasehold did not write.
    BadData(&'static str),
    /// Anything else the server answered.
    Other,
}

pub(crate) fn fault(e: &redis::RedisError) -> Fault {
    let text = e.to_string();
    let has = |m: &str| text.contains(m);
    // Before I/O: the cluster client reports refused credentials as an I/O
    // error of its initial connections.
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || ["AuthenticationFailed", "WRONGPASS", "NOAUTH"]
            .iter()
            .any(|m| has(m))
    {
        return Fault::Auth;
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        return Fault::Unreachable;
    }
    if e.code() == Some("NOSCRIPT") {
        return Fault::NoScript;
    }
    if e.code() == Some("LEASEHOLD_FOREIGN") || has("LEASEHOLD_FOREIGN") {
        let detail = e.detail().map(str::to_string).unwrap_or_else(|| {
            text.split("LEASEHOLD_FOREIGN")
                .nth(1)
                .unwrap_or_default()
                .trim_start_matches(['"', ':', ' '])
                .to_string()
        });
        let mut parts = detail.split_whitespace();
        let key = parts.next().unwrap_or_default().to_string();
        let found = parts.next().unwrap_or("unknown").to_string();
        return Fault::Foreign { key, found };
    }
    if let Some((_, other)) = text.split_once("LEASEHOLD_KIND") {
        let sem = other.trim_start_matches([':', ' ', '"']).starts_with("sem");
        return Fault::Kind(if sem { "semaphore" } else { "lease" });
    }
    if has("NOPERM") {
        return Fault::NoPerm;
    }
    if [
        "READONLY",
        "LOADING",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "BUSY",
        "MasterNameNotFoundBySentinel",
        "NoValidReplicasFoundBySentinel",
    ]
    .iter()
    .any(|m| has(m))
    {
        return Fault::Transient;
    }
    if has("WRONGTYPE") {
        return Fault::WrongType;
    }
    if has("switch database") || has("DB index") {
        return Fault::BadDatabase;
    }
    if has("sentinel node") {
        return Fault::NotSentinel;
    }
    // A script of ours failed on what it read: a value of a key under the
    // prefix that leasehold did not write.
    if has("user_script")
        && let Some(what) = DATA_ERRORS.iter().find(|m| has(m))
    {
        return Fault::BadData(what);
    }
    Fault::Other
}

/// Script errors that mean "the data is not what leasehold writes".
const DATA_ERRORS: &[&str] = &[
    "value is not an integer",
    "value is not a valid float",
    "attempt to perform arithmetic",
    "attempt to compare",
    "attempt to concatenate",
    "attempt to index",
    "bad argument",
    "is out of range",
];

fn foreign(key: &str, found: &str) -> String {
    if key.is_empty() {
        format!(
            "one of the lease's keys holds {found}: choose another lease name or key prefix, or delete the lease's keys"
        )
    } else if found == "unknown" {
        format!(
            "key {key}, or one beside it, holds data not written by leasehold: choose another lease name or key prefix, or delete the lease's keys"
        )
    } else {
        format!(
            "key {key} already exists with type {found}, not written by leasehold: choose another lease name or key prefix, or delete the key"
        )
    }
}

/// What to do about a refusal by the ACL.
fn acl_hint(message: &str) -> &'static str {
    if message.contains("NOPERM") {
        " (grant the ACL rule in the README's Security section)"
    } else {
        ""
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
