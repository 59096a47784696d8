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
pub enum Target {
    Single(String),
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        user: Option<String>,
        password: Option<String>,
        db: i64,
    },
    Cluster(Vec<String>),
}

/// Hides the password of a Redis URL, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://***@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

fn bad(url: &str, reason: impl Into<String>) -> Error {
    Error::BadUrl {
        url: redact_url(url),
        reason: reason.into(),
    }
}

/// Splits `[user:pass@]h1:p1,h2:p2` into credentials and hosts.
fn creds_and_hosts(
    url: &str,
    authority: &str,
) -> Result<(Option<String>, Option<String>, Vec<String>)> {
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pw)) => (
                (!user.is_empty()).then(|| user.to_string()),
                Some(pw.to_string()),
            ),
            None => (None, Some(u.to_string())),
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

fn node_url(scheme: &str, user: &Option<String>, password: &Option<String>, host: &str) -> String {
    match (user, password) {
        (Some(u), Some(p)) => format!("{scheme}://{u}:{p}@{host}"),
        (None, Some(p)) => format!("{scheme}://:{p}@{host}"),
        _ => format!("{scheme}://{host}"),
    }
}

/// Parses one URL.
pub fn parse(url: &str) -> Result<Target> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad(
            url,
            "missing scheme (expected redis://, rediss://, redis+sentinel:// or redis+cluster://)",
        ));
    };
    match scheme {
        "redis" | "rediss" | "unix" | "redis+unix" => Ok(Target::Single(url.to_string())),
        "rediss+sentinel" => Err(bad(
            url,
            "TLS through Sentinel is not supported yet: use redis+sentinel:// on a trusted network, or rediss:// to the master",
        )),
        "redis+sentinel" => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
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
            let authority = rest.split('/').next().unwrap_or(rest);
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
                "unknown scheme {other:?} (expected redis://, rediss://, redis+sentinel:// or redis+cluster://)"
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
