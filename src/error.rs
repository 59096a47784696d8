//! Errors, one enum for the library. Every message says what to do next.

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
    BadUrl { url: String, reason: String },

    /// No Redis answered at the address.
    #[error("Redis at {url} is unreachable: {source} (is redis-server running there?)")]
    Unreachable {
        url: String,
        #[source]
        source: redis::RedisError,
    },

    /// Redis refused our credentials.
    #[error(
        "Redis at {url} refused authentication: {source} (check the user and password in the URL or LEASEHOLD_REDIS_PASSWORD)"
    )]
    Auth {
        url: String,
        #[source]
        source: redis::RedisError,
    },

    /// A command failed or timed out after the connection was up.
    #[error("Redis {op} failed: {source}")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },

    /// Fewer quorum nodes answered than a majority.
    #[error(
        "quorum {op} failed: {answered} of {total} Redis servers answered, {needed} needed (last error: {last}); bring servers back or check the network"
    )]
    NoQuorum {
        op: &'static str,
        answered: usize,
        needed: usize,
        total: usize,
        last: String,
    },

    /// `WAIT` did not see the write on enough replicas in time.
    #[error(
        "{op} was not confirmed by {want} replica(s) in time: a failover could lose it (check the replicas, or lower --min-replicas)"
    )]
    NotReplicated { op: &'static str, want: u32 },

    /// Redis refused a command (an ACL without the rights leasehold needs),
    /// or the connection's set-up.
    #[error("Redis refused {op}: {message}{}", acl_hint(message))]
    Refused { op: &'static str, message: String },

    /// A request did not complete in time.
    #[error("Redis {op} timed out after {after:?} (is Redis overloaded or the network down?)")]
    Timeout { op: &'static str, after: Duration },

    /// Someone else wrote a key of another type where a lease key lives, or
    /// values leasehold does not write (a script failed on them).
    #[error("{}", foreign(key, found))]
    ForeignKey { key: String, found: String },

    /// The name is in use by the other kind (a lease vs. a semaphore): the two
    /// would not exclude each other.
    #[error(
        "the name is in use as a {kind}: a lease and a semaphore of one name would not exclude each other; use another name, or the same kind everywhere"
    )]
    NameInUse { kind: &'static str },

    /// Redis answered something the protocol does not allow.
    #[error(
        "unexpected reply from Redis to {op}: {detail} (a key under the prefix may hold data leasehold did not write, or this is not Redis 6.2 or later)"
    )]
    Protocol { op: &'static str, detail: String },

    /// A lease name that cannot be used.
    #[error("bad lease name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },

    /// A configuration value that breaks a rule.
    #[error("bad {what} {value}: {rule}")]
    BadConfig {
        what: &'static str,
        value: String,
        rule: String,
    },

    /// `acquire_timeout` elapsed without the lease.
    #[error("lease {name:?} was not acquired within {after:?}")]
    AcquireTimeout { name: String, after: Duration },

    /// The token cache's daily fetch budget is spent and nothing valid is cached.
    #[error(
        "token cache {name:?}: the budget of {limit} fetches per day is spent and no valid value is cached; it resets at {reset}"
    )]
    BudgetExhausted {
        name: String,
        limit: u64,
        reset: String,
    },

    /// The token cache's fetch failed (here or in the process that refreshed).
    #[error("token cache {name:?}: fetching a new value failed: {message}")]
    FetchFailed { name: String, message: String },

    /// A quota take got no answer in time: it may or may not have counted.
    #[error(
        "quota take on {key:?} got no answer within {after:?} (last: {last}): it may or may not have counted; a retry with request id {request} within {} counts it at most once",
        humantime::format_duration(*remember)
    )]
    QuotaUnknown {
        key: String,
        after: Duration,
        last: String,
        request: String,
        remember: Duration,
    },

    /// An operation that needs the lease was called after it was lost.
    #[error("lease {name:?} is no longer held by us")]
    NotHolder { name: String },
}

impl Error {
    /// True when the error means Redis could not be reached or answered too late,
    /// i.e. trying again later may succeed.
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
