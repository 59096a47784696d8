//! Key schema. Every key and channel of one lease carries the `{name}` hash tag,
//! so that on Redis Cluster they all live in one slot and one script can touch them.
//!
//! | key                         | type   | TTL        | holds                                   |
//! |-----------------------------|--------|------------|-----------------------------------------|
//! | `<prefix>{<name>}:lease`    | hash   | none       | the name record: kind, holder, value, exp, ttl, token, run, maxttl, qu, obs, w (`scripts/prelude.lua`) |
//! | `<prefix>{<name>}:queue`    | zset   | longest wait | waiter id → arrival (µs), first come first served |
//! | `<prefix>{<name>}:qinfo`    | hash   | longest wait | waiter id → "lapse_ms ttl_ms slots inbox value" |
//! | `<prefix>{<name>}:events`   | channel| —          | "granted T HEAD CLAIM NEXT", "released T \[HEAD\]", "acquired T", "proclaimed T" |
//! | `<prefix>{<name>}:slots`    | zset   | longest slot | semaphore: holder id → expiry (Redis ms) |
//! | `<prefix>{<name>}:slotinfo` | hash   | longest slot | semaphore: holder id → "token value"    |
//! | `<prefix>{<name>}:run`      | hash   | none (pruned) | `leasehold run`'s note per holder id ("contain=pidns"), for `status` |
//! | `<prefix>epoch`             | string | none       | "run_id base_ms maxttl_ms": the server leasehold writes to, since when, longest TTL (on Cluster one per hash slot: `<prefix>{e<i>}:epoch`) |

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::error::{Error, Result};

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "leasehold:";
/// Longest lease name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// The keys and channel of one lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// `<prefix>{<name>}:lease`: the name record (holder, value, expiry, token…).
    pub lease: String,
    /// `<prefix>{<name>}:queue`: waiters, first come first served.
    pub queue: String,
    /// `<prefix>{<name>}:qinfo`: each waiter's lapse time, TTL and value.
    pub qinfo: String,
    /// `<prefix>{<name>}:slots`: a semaphore's holders and their expiries.
    pub slots: String,
    /// `<prefix>{<name>}:slotinfo`: a semaphore holder's token and value.
    pub slotinfo: String,
    /// `<prefix>{<name>}:events`: the channel of releases, grants, proclaims.
    pub events: String,
    /// `<prefix>{<name>}:run`: `leasehold run`'s note per holder (how its
    /// job is contained), read by `leasehold status`.
    pub notes: String,
    /// `<prefix>epoch`: which server leasehold writes to, and since when
    /// (on Cluster, one marker per hash slot).
    pub epoch: String,
}

impl Keys {
    /// Builds the keys of `name` under `prefix`; both must already be valid.
    pub fn new(prefix: &str, name: &str) -> Keys {
        Keys {
            lease: format!("{prefix}{{{name}}}:lease"),
            queue: format!("{prefix}{{{name}}}:queue"),
            qinfo: format!("{prefix}{{{name}}}:qinfo"),
            slots: format!("{prefix}{{{name}}}:slots"),
            slotinfo: format!("{prefix}{{{name}}}:slotinfo"),
            events: format!("{prefix}{{{name}}}:events"),
            notes: format!("{prefix}{{{name}}}:run"),
            epoch: format!("{prefix}epoch"),
        }
    }
}

/// Server markers on Cluster, one per hash slot: a hash tag that lands in
/// each hash slot, so that the marker shares the hash slot of the lease it
/// guards (a script may touch one hash slot only).
static HASH_SLOT_TAGS: LazyLock<HashMap<redis::cluster_routing::Slot, String>> =
    LazyLock::new(|| {
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

/// The server marker for the hash slot of `lease_key` on Cluster:
/// `<prefix>{eN}:epoch`, `eN` a tag in that hash slot.
pub(crate) fn cluster_epoch(prefix: &str, lease_key: &str) -> Option<String> {
    let hash_slot = redis::cluster_routing::Slot::for_key(lease_key);
    HASH_SLOT_TAGS
        .get(&hash_slot)
        .map(|tag| format!("{prefix}{{{tag}}}:epoch"))
}

/// A quota counter's key: `<prefix>{quota:<key>}:<suffix>`.
pub(crate) fn quota(prefix: &str, key: &str, suffix: &str) -> String {
    format!("{prefix}{{quota:{key}}}:{suffix}")
}

/// A token cache key: `<prefix>{cache#<name>}:<suffix>`; the refresher lease
/// `cache#<name>` shares the hash tag (and no user name can: `#`).
pub(crate) fn cache(prefix: &str, name: &str, suffix: &str) -> String {
    format!("{prefix}{{cache#{name}}}:{suffix}")
}

/// Checks a lease name: 1 to 200 bytes of `A-Z a-z 0-9 - _ . : / @ + =`.
///
/// Braces would change the hash tag, and spaces, control bytes or glob
/// characters would make names ambiguous in logs and key patterns (ACL rules).
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| Error::BadName {
        name: if name.len() > 64 {
            format!("{}…", name.chars().take(64).collect::<String>())
        } else {
            name.to_string()
        },
        reason,
    };
    if name.is_empty() {
        return Err(bad("a lease name cannot be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("a lease name is at most 200 bytes"));
    }
    if !name.bytes().all(is_name_byte) {
        return Err(bad(
            "use only letters, digits and - _ . : / @ + = (no spaces, braces or glob characters)",
        ));
    }
    Ok(())
}

/// The mark of leasehold's own names (the token cache's refresher lease and
/// fetch budget: `cache#<name>`): `#` is not allowed in user names, so no
/// lease, semaphore or quota key of a user can collide with them.
pub(crate) const RESERVED: char = '#';

/// Checks a name as the backend sees it: a user name, or one of leasehold's
/// own (`<kind>#<user name>`), which only the library builds.
pub(crate) fn validate_key_name(name: &str) -> Result<()> {
    match name.split_once(RESERVED) {
        Some(("cache", rest)) => validate_name(rest),
        _ => validate_name(name),
    }
}

/// Checks a key prefix: 1 to 64 bytes of the name characters, ending in a
/// separator (`:` usually; any of `- _ . : / @ + =`).
///
/// Keys are `<prefix>{<name>}:lease` and `<prefix>epoch`: an empty prefix
/// gives bare `{name}:queue` and `epoch` keys, and one without a separator
/// (`leasehold`) makes `leaseholdepoch`; either may land on another
/// application's keys. No separator is added silently: an instance that
/// added one would not exclude an older one that did not.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let bad = |rule: &str| Error::BadConfig {
        what: "key prefix",
        value: format!("{prefix:?}"),
        rule: rule.into(),
    };
    if prefix.is_empty() {
        return Err(bad(
            "cannot be empty: leasehold's keys would mix with other applications' (use e.g. \"leasehold:\", the default)",
        ));
    }
    if prefix.len() > 64 || !prefix.bytes().all(is_name_byte) {
        return Err(bad(
            "use at most 64 letters, digits and - _ . : / @ + = (braces would break the hash tag)",
        ));
    }
    if prefix.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad(&format!(
            "must end with a separator such as ':', or keys run into it ({prefix}epoch); use \"{prefix}:\""
        )));
    }
    Ok(())
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.:/@+=".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let k = Keys::new(DEFAULT_PREFIX, "report");
        assert_eq!(k.lease, "leasehold:{report}:lease");
        assert_eq!(k.queue, "leasehold:{report}:queue");
        assert_eq!(k.events, "leasehold:{report}:events");
    }

    #[test]
    fn names() {
        assert!(validate_name("nightly-report.v2:eu/1").is_ok());
        for bad in ["", "a b", "a{b}", "x*", "\u{0}", "é"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(201)).is_err());
        assert!(validate_name(&"a".repeat(200)).is_ok());
        assert!(validate_prefix("app{x}:").is_err());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("leasehold").is_err());
        assert!(validate_prefix("leasehold:").is_ok());
        assert!(validate_prefix("app/v2_").is_ok());
    }
}
