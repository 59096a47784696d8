//! The two identities a lease hands out: who holds it ([`HolderId`]) and which
//! acquisition this is ([`FencingToken`]).
//!
//! The holder id is what Redis compares in every renewal, release and
//! proclaim: only the guard that acquired can extend or give back its
//! acquisition. The fencing token is what *your* resources compare: a
//! lease alone cannot stop a paused former holder from writing after its
//! lease passed on; a resource that rejects tokens lower than the highest it
//! has seen can.

use std::fmt;

/// A number issued with every successful acquisition of one lease name,
/// strictly greater than every token issued before for that name.
///
/// Pass it to the resources the holder writes to and have them reject writes
/// with a token lower than the highest they have seen: that is what keeps a
/// paused or partitioned former holder from doing damage (see `docs/design.md`).
///
/// The number itself is public: store it, send it, compare it. Tokens of a
/// single Redis (or a Sentinel group, or a Cluster) are at least the server's
/// clock in microseconds, so they also increase across a Redis that restarts
/// empty; a quorum's are the largest of a majority's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

impl From<FencingToken> for u64 {
    fn from(t: FencingToken) -> u64 {
        t.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one acquisition: readable host and pid, plus 128 random bits
/// from the OS so that no two acquisitions anywhere share an id.
///
/// Format: `<host>/<pid>/<32 hex digits>`. The id belongs to the guard that
/// acquired, not to the process or thread (redis-py#416's lesson).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HolderId(String);

impl HolderId {
    /// A fresh id for this host and process. Every acquisition makes its own;
    /// call this only to speak the protocol directly.
    pub fn generate() -> HolderId {
        let mut bytes = [0u8; 16];
        // The OS RNG failing is not something a caller can act on; fall back to
        // time and address entropy rather than panic, and keep the id unique.
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            bytes = (nanos ^ (&bytes as *const _ as u128)).to_le_bytes();
        }
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        HolderId(format!("{}/{}/{}", hostname(), std::process::id(), hex))
    }

    /// Wraps an id read back from Redis or from `LEASEHOLD_HOLDER` (not
    /// checked: ids from Redis may have been written by anyone).
    pub fn from_raw(s: impl Into<String>) -> HolderId {
        HolderId(s.into())
    }

    /// The random part: 32 hex digits, unique across hosts and processes.
    pub fn random_part(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The whole id, as stored in Redis.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part, as written by the holder.
    pub fn host(&self) -> &str {
        self.0.split('/').next().unwrap_or("")
    }

    /// The pid part, if the id has one.
    pub fn pid(&self) -> Option<u32> {
        self.0.split('/').nth(1).and_then(|p| p.parse().ok())
    }

    /// "host-b pid 4121", for people.
    pub fn readable(&self) -> String {
        match self.pid() {
            Some(pid) => format!("{} pid {}", self.host(), pid),
            None => self.0.clone(),
        }
    }
}

impl fmt::Display for HolderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn hostname() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let raw = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown-host".into());
        // '/' separates the id's parts.
        raw.replace('/', "_")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_readable() {
        let a = HolderId::generate();
        let b = HolderId::generate();
        assert_ne!(a, b);
        assert_eq!(a.pid(), Some(std::process::id()));
        assert!(a.readable().contains("pid"));
        assert_eq!(a.as_str().rsplit('/').next().map(str::len), Some(32));
    }
}
