//! Which Redis deployment a URL names, and hiding its password.
//!
//! - `redis://[user:pass@]host:port[/db]`, `rediss://…` — one server;
//! - `redis+sentinel://[user:pass@]host1:port1,host2:port2,…/MASTER[/db]` —
//!   the master named MASTER, found through those sentinels (the password is
//!   the master's; sentinels are asked without one);
//! - `redis+cluster://[user:pass@]host1:port1,host2:port2,…` — a Redis Cluster
//!   reached through those seed nodes.
//!
//! Several `redis://` URLs given together form a quorum (Redlock).

use crate::error::{Error, Result};

/// A parsed target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// One server (`redis://`, `rediss://`, `unix://`): the URL as given.
    Single(String),
    /// A master found through Sentinel.
    Sentinel {
        /// The sentinels' URLs (asked without a password).
        sentinels: Vec<String>,
        /// The master's name.
        master: String,
        /// The master's user, if any.
        user: Option<String>,
        /// The master's password, if any (never shown).
        password: Option<String>,
        /// The database number.
        db: i64,
    },
    /// A Cluster, reached through these seed nodes' URLs.
    Cluster(Vec<String>),
}

/// Hides the password of a Redis URL, for logs and errors — also of one that
/// does not parse.
///
/// Everything before the *last* `@` is the user information (a password may
/// hold `@`, `/` or `:` when it was not percent-encoded; the URL parser then
/// fails, and the error must not show it either). Only a plain user name
/// before the first `:` stays visible.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => (Some(scheme), rest),
        _ => (None, url),
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let shown = match userinfo.split_once(':') {
        Some((user, _)) if user.bytes().all(is_plain_user_byte) => format!("{user}:***"),
        _ => "***".to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{shown}@{host}"),
        None => format!("{shown}@{host}"),
    }
}

fn is_scheme(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

fn is_plain_user_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~+=".contains(&b)
}

/// The secrets a URL may carry (its password, as written and percent-decoded),
/// so that text from elsewhere (a parser's error) can be cleaned of them.
fn secrets(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let Some((userinfo, _)) = rest.rsplit_once('@') else {
        return Vec::new();
    };
    let pw = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    let mut out = vec![userinfo.to_string(), pw.to_string()];
    out.push(String::from_utf8_lossy(&percent_decode(pw)).into_owned());
    out.retain(|s| !s.is_empty());
    // Longest first, so that a part never leaves the rest of a longer one.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

/// `text` (an error from a parser or client given `url`) with the URL shown
/// redacted and every form of its password replaced by `***`.
pub(crate) fn scrub(text: &str, url: &str) -> String {
    let mut text = text.replace(url, &redact_url(url));
    for s in secrets(url) {
        text = text.replace(&s, "***");
    }
    text
}

/// Decodes `%XX` escapes; anything else (a lone `%`) stays as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn bad(url: &str, reason: impl Into<String>) -> Error {
    Error::BadUrl {
        url: redact_url(url),
        reason: scrub(&reason.into(), url),
    }
}

/// What to say when the user information holds a character that ends it in
/// a URL (`/`, `?`, `#`): the parser would cut the password there.
const ENCODE_HINT: &str = "the user name or password holds a character that must be percent-encoded in a URL (/ as %2F, ? as %3F, # as %23, % as %25, a space as %20), or leave the password out and set LEASEHOLD_REDIS_PASSWORD";

/// Refuses user information that a URL cannot carry unencoded.
fn check_userinfo(url: &str) -> Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    if let Some((userinfo, _)) = rest.rsplit_once('@')
        && userinfo
            .bytes()
            .any(|b| b"/?#".contains(&b) || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(bad(url, ENCODE_HINT));
    }
    Ok(())
}

/// Splits `[user:pass@]h1:p1,h2:p2` into credentials (percent-decoded, as
/// in `redis://` URLs) and hosts.
fn creds_and_hosts(
    url: &str,
    authority: &str,
) -> Result<(Option<String>, Option<String>, Vec<String>)> {
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let decode = |s: &str| -> Result<String> {
        String::from_utf8(percent_decode(s))
            .map_err(|_| bad(url, "the user name or password is not UTF-8 once decoded"))
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pw)) => (
                (!user.is_empty()).then(|| decode(user)).transpose()?,
                Some(decode(pw)?),
            ),
            None => (None, Some(decode(u)?)),
        },
        None => (None, None),
    };
    let hosts: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            if h.contains(':') {
                h.to_string()
            } else {
                format!("{h}:6379")
            }
        })
        .collect();
    if hosts.is_empty() {
        return Err(bad(url, "no host:port given"));
    }
    for h in &hosts {
        let port = h.rsplit(':').next().unwrap_or("");
        if port.parse::<u16>().is_err() {
            return Err(bad(url, format!("bad port in {h:?}")));
        }
    }
    Ok((user, password, hosts))
}

/// `authority/path` of a Sentinel or Cluster URL: the authority runs to the
/// first `/` after the user information.
fn split_authority(rest: &str) -> (&str, &str) {
    let start = rest.rfind('@').map_or(0, |i| i + 1);
    match rest[start..].find('/') {
        Some(i) => (&rest[..start + i], &rest[start + i + 1..]),
        None => (rest, ""),
    }
}

fn node_url(scheme: &str, user: &Option<String>, password: &Option<String>, host: &str) -> String {
    match (user, password) {
        (Some(u), Some(p)) => format!("{scheme}://{}:{}@{host}", encode(u), encode(p)),
        (None, Some(p)) => format!("{scheme}://:{}@{host}", encode(p)),
        _ => format!("{scheme}://{host}"),
    }
}

/// Percent-encodes everything but unreserved characters, for user information.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Parses one URL.
///
/// # Errors
/// [`Error::BadUrl`], which never shows the password (nor a part of it).
pub fn parse(url: &str) -> Result<Target> {
    let Some((scheme, rest)) = url.split_once("://").filter(|(s, _)| is_scheme(s)) else {
        return Err(bad(
            url,
            "missing scheme (redis://, rediss://, redis+sentinel:// or redis+cluster://)",
        ));
    };
    check_userinfo(url)?;
    match scheme {
        "redis" | "rediss" | "unix" | "redis+unix" => Ok(Target::Single(url.to_string())),
        "rediss+sentinel" => Err(bad(
            url,
            "TLS through Sentinel is not supported yet: use redis+sentinel:// on a trusted network, or rediss:// to the master",
        )),
        "redis+sentinel" => {
            let (authority, path) = split_authority(rest);
            let (user, password, sentinels) = creds_and_hosts(url, authority)?;
            let mut parts = path.split('/').filter(|p| !p.is_empty());
            let master = parts
                .next()
                .ok_or_else(|| bad(url, "name the master after the sentinels: redis+sentinel://h1:26379,h2:26379/mymaster"))?
                .to_string();
            let db = match parts.next() {
                Some(d) => d
                    .parse()
                    .map_err(|_| bad(url, format!("bad database number {d:?}")))?,
                None => 0,
            };
            let sentinels = sentinels.iter().map(|h| format!("redis://{h}")).collect();
            Ok(Target::Sentinel {
                sentinels,
                master,
                user,
                password,
                db,
            })
        }
        "redis+cluster" | "rediss+cluster" => {
            let (authority, _) = split_authority(rest);
            let (user, password, hosts) = creds_and_hosts(url, authority)?;
            let node_scheme = if scheme.starts_with("rediss") {
                "rediss"
            } else {
                "redis"
            };
            Ok(Target::Cluster(
                hosts
                    .iter()
                    .map(|h| node_url(node_scheme, &user, &password, h))
                    .collect(),
            ))
        }
        other => Err(bad(
            url,
            format!(
                "unknown scheme {other:?} (use redis://, rediss://, redis+sentinel:// or redis+cluster://)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("redis://user:s3cret@h:6379/0"),
            "redis://user:***@h:6379/0"
        );
        assert_eq!(redact_url("redis://:s3cret@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("rediss://s3cret@h/"), "rediss://***@h/");
        assert_eq!(
            redact_url("redis+sentinel://:pw@a:1,b:2/m"),
            "redis+sentinel://:***@a:1,b:2/m"
        );
        // Passwords that were not percent-encoded: nothing of them shows.
        for (url, secret) in [
            ("redis://:s3cr/et@host", "s3cr"),
            ("redis+cluster://:s3cr/et@host", "s3cr"),
            ("redis+sentinel://:s3cr/et@h:1/m", "s3cr"),
            ("redis://:p@ss:w/rd%x@host", "ss:w"),
            ("user:pw12@h:1", "pw12"),
            ("x:pw12://u@h", "pw12"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} -> {shown}");
            let e = parse(url).map(|_| ()).expect_err(url).to_string();
            assert!(!e.contains(secret), "{url} -> {e}");
        }
        assert_eq!(redact_url("redis://:a/b@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(scrub("x :p%2Fw y p/w", "redis://:p%2Fw@h"), "x *** y ***");
    }

    #[test]
    fn credentials_are_percent_decoded_and_reencoded() {
        assert_eq!(
            parse("redis+sentinel://u%40x:p%2Fw@a:1/m").ok(),
            Some(Target::Sentinel {
                sentinels: vec!["redis://a:1".into()],
                master: "m".into(),
                user: Some("u@x".into()),
                password: Some("p/w".into()),
                db: 0,
            })
        );
        assert_eq!(
            parse("redis+cluster://:p%2Fw@a:1").ok(),
            Some(Target::Cluster(vec!["redis://:p%2Fw@a:1".into()]))
        );
        let e = parse("redis://:p/w@a:1").expect_err("unencoded /");
        assert!(e.to_string().contains("%2F"), "{e}");
    }

    #[test]
    fn kinds() {
        assert_eq!(
            parse("redis://h:1").ok(),
            Some(Target::Single("redis://h:1".into()))
        );
        assert_eq!(
            parse("redis+sentinel://:pw@a:1,b:2/mymaster/3").ok(),
            Some(Target::Sentinel {
                sentinels: vec!["redis://a:1".into(), "redis://b:2".into()],
                master: "mymaster".into(),
                user: None,
                password: Some("pw".into()),
                db: 3,
            })
        );
        assert_eq!(
            parse("redis+cluster://u:p@a:1,b").ok(),
            Some(Target::Cluster(vec![
                "redis://u:p@a:1".into(),
                "redis://u:p@b:6379".into()
            ]))
        );
        for bad in [
            "http://h",
            "h:1",
            "redis+sentinel://a:1",
            "redis+cluster://a:x",
            "redis+cluster://",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
